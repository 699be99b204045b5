"""Hardware-aware NAS: latency lookup tables, loaders, expected latency, penalties, predictors.

- :mod:`dnas.latency.lut`: the table schema (:class:`LutKey`, :class:`LatencyTable`), JSON, validation.
- :mod:`dnas.latency.loaders`: ProxylessNAS / once-for-all YAML, HW-NAS-Bench's FBNet CSV.
- :mod:`dnas.latency.penalties`: :class:`LatencyTerm`, expected and table latency, :data:`PENALTIES`.
- :mod:`dnas.latency.predictor`: ridge predictors from measured architectures, few-shot transfer.
- :mod:`dnas.latency.cli`: ``dnas latency fit``.
"""

from dnas.latency.loaders import FBNetLayerTable, load_fbnet_csv, load_yaml_lut
from dnas.latency.lut import LatencyTable, LutEntry, LutKey
from dnas.latency.penalties import (
    PENALTIES,
    LatencyTerm,
    expected_latency,
    latency_term,
    latency_term_from_table,
    make_penalty,
    straight_through_latency,
    table_latency,
)
from dnas.latency.predictor import LatencyPredictor, fit_latency_predictor, latency_metrics

__all__ = [
    "PENALTIES",
    "FBNetLayerTable",
    "LatencyPredictor",
    "LatencyTable",
    "LatencyTerm",
    "LutEntry",
    "LutKey",
    "expected_latency",
    "fit_latency_predictor",
    "latency_metrics",
    "latency_term",
    "latency_term_from_table",
    "load_fbnet_csv",
    "load_yaml_lut",
    "make_penalty",
    "straight_through_latency",
    "table_latency",
]
