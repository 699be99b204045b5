"""The built-in cost models (:data:`dnas.hardware.cost_model.COST_MODELS`).

============  ===================================================  ==========================
name          prices                                               kwargs
============  ===================================================  ==========================
lut           ``latency_ms``: Σ probs × table entries of a         ``table`` (path or
              :class:`~dnas.space.keys.KeyedSpace` (dnas JSON,     :class:`LatencyTable`),
              ProxylessNAS / once-for-all YAML)                    ``resolution``
fbnet_lut     ``latency_ms``: HW-NAS-Bench's FBNet per-layer       ``table`` (CSV path or
              deltas (any space of one label per layer over its    :class:`FBNetLayerTable`),
              ops) plus the device's all-``k3_e1`` total           ``device``
predictor     ``latency_ms`` (or ``metric``): a ridge predictor    ``predictor`` (JSON path
              (:mod:`dnas.hardware.predictor`), as its per-        or object), ``metric``
              candidate weights (it is linear in the one-hot
              encoding, so probabilities price exactly)
gcn           ``latency_ms`` (or ``metric``): a fitted GCN or      ``predictor`` (JSON path
              few-shot transfer predictor (``dnas predictor fit    or object), ``metric``
              --model gcn --save F``), evaluated at the mean
              one-hot encoding (differentiable, not additive)
counts        ``macs_m``, ``params_m``: multiply-adds and          ``resolution``; without
              parameters in millions, counted from traced          keys ``C``,
              programs (:mod:`dnas.hardware.counts`) per key       ``num_classes``,
              of a keyed space, or per candidate on the supernet   ``in_channels``, ``check``
accelerator   ``latency_ms``, ``energy_mj``, ``area_mm2``,         ``resolution``, ``batch``,
              ``cycles``, ``edp`` on a systolic-array accelerator  ``C``, ``num_classes``,
              (:mod:`dnas.hardware.codesign`); of a joint          ``in_channels``,
              network + hardware space, its hardware labels        ``hardware``, ``check``
============  ===================================================  ==========================

``lut``, ``fbnet_lut``, ``predictor`` and ``counts`` are :class:`~dnas.hardware.cost_model.AdditiveCost`: per-candidate tables, so
the expected cost of a distribution is exact and a discrete architecture costs what its
one-hot distribution costs. ``accelerator`` is additive over the network's layers for a
fixed accelerator and evaluates the accelerator at its mean encoding.

:func:`legacy_cost_model` maps the older ``config.latency.table`` path onto them
(``.json``/``.yaml`` -> ``lut``, ``.csv`` -> ``fbnet_lut``), so configs written before the
cost models keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError
from dnas.hardware.codesign import AcceleratorCost, accelerator_cost
from dnas.hardware.cost_model import AdditiveCost, CostModel, no_hw, register_cost_model
from dnas.hardware.counts import count_terms, supernet_count_terms
from dnas.hardware.loaders import FBNetLayerTable, load_fbnet_csv, load_yaml_lut
from dnas.hardware.lut import LatencyTable
from dnas.hardware.penalties import LatencyTerm, lut_term
from dnas.hardware.predictor import LatencyPredictor
from dnas.hardware.predictors.export import Basis, ExportedPredictor, basis
from dnas.space.base import SearchSpace
from dnas.space.keys import KeyedSpace
from dnas.space.spaces.hardware import Accelerator

_TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


def load_table(path: str, device: str = "") -> LatencyTable | FBNetLayerTable:
    """A latency table by file type: ``.json`` (dnas schema), ``.yaml``/``.yml``
    (ProxylessNAS / once-for-all), ``.csv`` (HW-NAS-Bench FBNet, ``device`` column)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return LatencyTable.load(path)
    if suffix in (".yaml", ".yml"):
        return load_yaml_lut(path)
    if suffix == ".csv":
        tables = load_fbnet_csv(path)
        if device not in tables:
            raise DnasError(f"config.latency.device must name a device of {path} ({', '.join(sorted(tables))}), got {device!r}")
        return tables[device]
    raise DnasError(f"latency table {path!r}: expected a .json, .yaml or .csv latency table")


def legacy_cost_model(table: str, device: str = "", resolution: int = 224) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of the cost model an older ``config.latency.table`` path meant."""
    suffix = Path(table).suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        return "lut", {"table": table, "resolution": int(resolution)}
    if suffix == ".csv":
        return "fbnet_lut", {"table": table, "device": device}
    raise DnasError(f"config.latency.table {table!r}: expected a .json, .yaml or .csv latency table "
                    "(or name a cost model with config.latency.cost_model)")


@register_cost_model("lut")
def lut(space: SearchSpace, table: str | LatencyTable, resolution: int = 224) -> AdditiveCost:
    """A latency lookup table of a keyed space: ``latency_ms = Σ_label Σ_i p_i · Σ_positions
    table[key(label, i, position)] + Σ table[fixed keys]``.

    Args:
      space: a :class:`~dnas.space.keys.KeyedSpace` (``proxylessnas``).
      table: a dnas JSON table (``dnas lut build``), a ProxylessNAS / once-for-all YAML
        file, or a :class:`LatencyTable`.
      resolution: the input size the table was measured at (its keys' shapes).
    """
    if isinstance(table, (str, Path)):
        if Path(table).suffix.lower() not in (".json", ".yaml", ".yml"):
            raise DnasError(f"cost model 'lut' reads a dnas .json or ProxylessNAS .yaml table, got {str(table)!r} "
                            "(HW-NAS-Bench's FBNet .csv: cost_model='fbnet_lut')")
        table = load_table(str(table))
    if table.unit not in _TO_MS:
        raise DnasError(f"latency table unit {table.unit!r} is not one of {', '.join(_TO_MS)}")
    term = lut_term(space, table, int(resolution))
    scale = _TO_MS[table.unit]
    return AdditiveCost({"latency_ms": term if scale == 1.0 else LatencyTerm(term.lat * scale, term.fixed * scale, term.labels, term.num_candidates)})


@register_cost_model("fbnet_lut")
def fbnet_lut(space: SearchSpace, table: str | FBNetLayerTable, device: str = "") -> AdditiveCost:
    """HW-NAS-Bench's FBNet per-layer table: ``latency_ms = total(all k3_e1) + Σ_layer Σ_i
    p_i · delta[layer, op_i]`` (a space with one label per layer whose candidates are any
    subset of the table's ops, priced by name, e.g. ``fbnet`` or ``fbnet`` with
    ``space_kwargs.ops``).

    Args:
      table: ``fbnet_layer_lut_hwnasbench.csv`` or a loaded :class:`FBNetLayerTable`.
      device: the CSV's device column (raspi4, pixel3, eyeriss, fpga).
    """
    if isinstance(table, (str, Path)):
        tables = load_fbnet_csv(table)
        if device not in tables:
            raise DnasError(f"cost model 'fbnet_lut': device must name a device of {table} ({', '.join(sorted(tables))}), got {device!r}")
        table = tables[device]
    return AdditiveCost({"latency_ms": table.latency_term(space)})


@register_cost_model("predictor")
def _predictor_file(path: str | Path, model: str, how: str) -> str | Path:
    """``path`` unless it is empty: an unset file names itself ('.') only confusingly."""
    if not str(path).strip():
        raise DnasError(f"the {model!r} cost model needs a fitted predictor file: set its cost_model_kwargs.predictor=F "
                        f"(e.g. --config.estimator_kwargs.cost_model_kwargs.predictor=F), F written by {how}")
    return path


def predictor(space: SearchSpace, predictor: str | LatencyPredictor, metric: str = "latency_ms") -> AdditiveCost:
    """A fitted ridge latency predictor (:func:`dnas.hardware.predictor.fit_latency_predictor`)
    over the space's vectors. Its one-hot and value-count features are linear in the one-hot
    encoding, so it is a per-candidate table and prices probabilities exactly; a transfer
    predictor (``source`` features: other devices' latencies) is not, and is refused.

    Args:
      predictor: a :meth:`LatencyPredictor.save` JSON file or the predictor itself.
      metric: the name of what it predicts (``latency_ms``; ``energy_mj`` for an energy fit).
    """
    if isinstance(predictor, (str, Path)):
        predictor = LatencyPredictor.load(_predictor_file(predictor, "predictor", "dnas latency fit ... --save F"))
    return AdditiveCost({metric: predictor.latency_term(space)})


class GraphPredictorCost(CostModel):
    """A fitted graph predictor (:class:`ExportedPredictor`) as a cost model: the one-hot or
    probability matrix is mapped linearly to the graph's node features and op counts
    (:class:`Basis`), then through the GCN. Exact for discrete architectures; for
    probabilities it is the prediction at the mean encoding, not the expectation (the
    model is not linear), differentiable and jittable like the LUT term.

    Args:
      space: the space the predictor was fitted on.
      exported: the predictor.
      metric: the name of what it predicts.
    """

    def __init__(self, space: SearchSpace, exported: ExportedPredictor, metric: str = "latency_ms"):
        exported.check(space)
        super().__init__(space.labels, [int(k) for k in space.num_candidates], (metric,))
        self.exported = exported
        self.basis: Basis = basis(space)

    def price(self, probs: Any, hw: Any = None) -> dict[str, Any]:
        no_hw(self, hw)
        return {self.metrics[0]: self.exported.price(self.basis, probs)}


@register_cost_model("gcn")
def gcn(space: SearchSpace, predictor: str | ExportedPredictor, metric: str = "latency_ms") -> GraphPredictorCost:
    """A GCN latency (or any metric) predictor saved by ``dnas predictor fit --model gcn
    --save F`` (:class:`GraphPredictorCost`).

    Args:
      predictor: the saved JSON file or an :class:`ExportedPredictor`.
      metric: the name of what it predicts (``latency_ms``; ``energy_mj``, ...).
    """
    if isinstance(predictor, (str, Path)):
        predictor = ExportedPredictor.load(_predictor_file(predictor, "gcn", "dnas predictor fit --model gcn ... --save F"))
    return GraphPredictorCost(space, predictor, metric)


@register_cost_model("counts")
def counts(space: SearchSpace, resolution: int = 224, C: int = 16, num_classes: int = 10, in_channels: int = 3,
           check: int = 2) -> AdditiveCost:
    """Multiply-adds and parameters (``macs_m``, ``params_m``, millions) per candidate.

    A :class:`~dnas.space.keys.KeyedSpace` is counted key by key at ``resolution`` (the
    paper-size network its keys describe; ProxylessNAS' ``expected_flops`` in its ``flops``
    mode). Any other space is counted on its supernet (``C``, ``num_classes``,
    ``in_channels``, ``resolution``) at concrete architectures: the all-first-candidate one
    and each single change of it (``1 + Σ (k - 1)`` abstract traces), which is exact when
    the cost is a sum over labels; ``check`` random architectures are counted whole and a
    mismatch is refused (a space whose labels interact, e.g. input choices that switch
    edges off, has no per-candidate table).
    """
    if isinstance(space, KeyedSpace):
        macs, params = count_terms(space, int(resolution))
    else:
        macs, params = supernet_count_terms(space, C=int(C), num_classes=int(num_classes), in_channels=int(in_channels),
                                            resolution=int(resolution), check=int(check))
    return AdditiveCost({"macs_m": macs, "params_m": params})


@register_cost_model("accelerator")
def accelerator(space: SearchSpace, resolution: int = 32, batch: int = 1, C: int = 16, num_classes: int = 10, in_channels: int = 3,
                hardware: Accelerator | dict[str, Any] | None = None, check: int = 2) -> AcceleratorCost:
    """Latency, energy, area, cycles and EDP on a SCALE-Sim-style systolic array
    (:func:`dnas.hardware.codesign.accelerator_cost`, whose docstring has the arguments): a
    network space priced on ``hardware`` (or on ``hw`` passed to ``cost``), or a joint
    network + :class:`~dnas.space.spaces.hardware.SystolicSpace` space priced from one vector."""
    return accelerator_cost(space, resolution=resolution, batch=batch, C=C, num_classes=num_classes, in_channels=in_channels,
                            hardware=hardware, check=check)


accelerator.joint = True  # prices a joint space's hardware labels itself (build_cost_model passes the joint space)
