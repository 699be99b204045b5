"""Hardware-aware NAS: latency lookup tables, loaders, expected latency, penalties, predictors.

- :mod:`dnas.hardware.lut`: the table schema (:class:`LutKey`, :class:`LatencyTable`), JSON, validation.
- :mod:`dnas.hardware.loaders`: ProxylessNAS / once-for-all YAML, HW-NAS-Bench's FBNet CSV.
- :mod:`dnas.hardware.penalties`: :class:`LatencyTerm`, expected and table latency, :data:`PENALTIES`.
- :mod:`dnas.hardware.predictor`: ridge predictors from measured architectures, few-shot transfer.
- :mod:`dnas.cli.latency`: ``dnas latency fit``.
"""

from dnas.hardware.loaders import FBNetLayerTable, load_fbnet_csv, load_yaml_lut
from dnas.hardware.lut import LatencyTable, LutEntry, LutKey
from dnas.hardware.penalties import (
    PENALTIES,
    LatencyTerm,
    expected_latency,
    latency_term,
    latency_term_from_table,
    make_penalty,
    straight_through_latency,
    table_latency,
)
from dnas.hardware.predictor import LatencyPredictor, fit_latency_predictor, latency_metrics

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
