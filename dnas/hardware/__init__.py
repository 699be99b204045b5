"""Hardware-aware NAS: cost models, latency lookup tables, loaders, penalties, predictors.

- :mod:`dnas.hardware.cost_model`: the :class:`CostModel` seam (``cost(probs_or_arch, hw)
  -> {metric: f32}``), :data:`COST_MODELS`, additive and combined models.
- :mod:`dnas.hardware.cost_models`: the built-ins ``lut``, ``fbnet_lut``, ``predictor``, ``counts``, ``accelerator``.
- :mod:`dnas.hardware.accelerator`: the analytical systolic-array model (SCALE-Sim cycles, bandwidth
  bound, Eyeriss-style energy, area) over GEMMs read from traced programs.
- :mod:`dnas.hardware.codesign`: the ``accelerator`` cost model of a network or joint network + hardware space.
- :mod:`dnas.hardware.lut`: the table schema (:class:`LutKey`, :class:`LatencyTable`), JSON, validation.
- :mod:`dnas.hardware.loaders`: ProxylessNAS / once-for-all YAML, HW-NAS-Bench's FBNet CSV.
- :mod:`dnas.hardware.penalties`: :class:`LatencyTerm` (per-candidate entries), expected and
  table latency, :data:`PENALTIES`.
- :mod:`dnas.hardware.predictor`: ridge predictors from measured architectures, few-shot transfer.
- :mod:`dnas.hardware.counts`: MACs and parameters counted from traced programs.
- :mod:`dnas.cli.latency`: ``dnas latency fit``.
"""

from dnas.hardware.accelerator import accelerator_metrics, conv_gemm, gemm_layers, layer_costs
from dnas.hardware.codesign import AcceleratorCost, accelerator_cost
from dnas.hardware.cost_model import (
    COST_MODELS,
    AdditiveCost,
    CombinedCost,
    CostModel,
    as_cost_model,
    build_cost_model,
    register_cost_model,
    straight_through_cost,
)
from dnas.hardware.loaders import FBNetLayerTable, load_fbnet_csv, load_yaml_lut
from dnas.hardware.lut import LatencyTable, LutEntry, LutKey
from dnas.hardware.penalties import (
    PENALTIES,
    LatencyTerm,
    expected_latency,
    latency_term,
    latency_term_from_table,
    lut_term,
    make_penalty,
    straight_through_latency,
    table_latency,
)
from dnas.hardware.predictor import LatencyPredictor, fit_latency_predictor, latency_metrics

__all__ = [
    "AcceleratorCost",
    "accelerator_cost",
    "accelerator_metrics",
    "conv_gemm",
    "gemm_layers",
    "layer_costs",
    "COST_MODELS",
    "PENALTIES",
    "AdditiveCost",
    "CombinedCost",
    "CostModel",
    "FBNetLayerTable",
    "LatencyPredictor",
    "LatencyTable",
    "LatencyTerm",
    "LutEntry",
    "LutKey",
    "as_cost_model",
    "build_cost_model",
    "expected_latency",
    "fit_latency_predictor",
    "latency_metrics",
    "latency_term",
    "latency_term_from_table",
    "load_fbnet_csv",
    "load_yaml_lut",
    "lut_term",
    "make_penalty",
    "register_cost_model",
    "straight_through_cost",
    "straight_through_latency",
    "table_latency",
]
