"""Hardware cost as estimator metrics, so discrete search can constrain it (issue 19, part 5).

``hardware`` adds, to the metrics of a ``base`` estimator (or alone), every metric of the
cost models it is given (:mod:`dnas.hardware.cost_model`), e.g.:

- ``latency_ms`` from a latency table (``cost_model="lut"`` / ``"fbnet_lut"``, or the older
  ``table`` path: dnas JSON, ProxylessNAS YAML, FBNet CSV + ``device``) or a fitted
  predictor (``"predictor"``);
- ``macs_m`` and ``params_m`` (millions) from the ``counts`` model (``counts=True``).

A cost model prices a batch ``int32[P, n]`` in one jittable call, so the estimator stays
pure and a table-backed search still runs its seeds as one vmapped program. The
objectives of :mod:`dnas.search.objectives` then constrain the metrics by name: ``hard``
with ``limits={"latency_ms": 80}`` (reject), ``mnasnet`` / ``tunas`` (soft), ``weighted``,
or ``multi`` with ``"-latency_ms"`` (a Pareto front).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator, build_estimator, hardware_names
from dnas.hardware.cost_model import CombinedCost, CostModel, build_cost_model
from dnas.hardware.cost_models import legacy_cost_model
from dnas.space.base import JointSpace, SearchSpace


def hardware(space: SearchSpace, base: str = "", base_kwargs: Mapping[str, Any] | None = None, table: str = "", device: str = "",
             resolution: int = 224, counts: bool = True, cost_s: float = 1.0, cost_model: str = "",
             cost_model_kwargs: Mapping[str, Any] | None = None, counts_kwargs: Mapping[str, Any] | None = None) -> Estimator:
    """An estimator adding cost-model metrics to the metrics of the registered estimator ``base``.

    Args:
      space: the search space.
      base: a registered estimator whose metrics and cost are kept ("" = none).
      base_kwargs: its keyword arguments.
      table: a latency table for the space, the older spelling of ``cost_model="lut"`` /
        ``"fbnet_lut"`` ("" = none).
      device: the FBNet CSV's device, with ``table``.
      resolution: input size of the tabulated and counted network.
      counts: add ``macs_m`` and ``params_m`` (the ``counts`` cost model at ``resolution``).
      counts_kwargs: further ``counts`` arguments (a space without per-op keys is counted
        on its supernet: ``C``, ``num_classes``, ``in_channels``).
      cost_s: the charged cost of one query without a ``base``.
      cost_model: a registered cost model ("" = none) whose metrics are added.
      cost_model_kwargs: its keyword arguments.
    """
    models: list[CostModel] = []
    if cost_model:
        models.append(build_cost_model(cost_model, space, cost_model_kwargs))
    if table:
        name, kwargs = legacy_cost_model(table, device, int(resolution))
        models.append(build_cost_model(name, space, kwargs))
    if counts:
        models.append(build_cost_model("counts", space, {"resolution": int(resolution), **dict(counts_kwargs or {})}))
    if not models and not base:
        raise DnasError("the hardware estimator needs a cost_model, a table, counts=True or a base estimator")
    model = CombinedCost(models) if models else None
    inner = build_estimator(base, space, base_kwargs) if base else None
    clash = [m for m in (model.metrics if model else ()) if inner is not None and m in inner.metrics]
    if clash:
        raise DnasError(f"the base estimator {base!r} already gives {clash[0]!r}")

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        archs = jnp.asarray(archs, jnp.int32)
        metrics, cost = ({}, jnp.full(archs.shape[:1], cost_s, jnp.float32)) if inner is None else inner.evaluate(archs, key)
        return {**metrics, **(model.cost(archs) if model else {})}, cost

    names = (inner.metrics if inner is not None else ()) + (model.metrics if model else ())
    if inner is not None:
        describe = inner.describe
    elif isinstance(space, JointSpace):
        describe = lambda v: f"{space.net_space.names(np.asarray(v)[: space.num_network])} @ {hardware_names(space, np.asarray(v)[space.num_network :])}"
    else:
        describe = lambda v: str(space.names(v))
    return Estimator(evaluate, names, inner.pure if inner is not None else True, inner.min_cost if inner is not None else cost_s, describe)


hardware.joint = True  # prices joint (network + accelerator) vectors itself; its base sees the network part
ESTIMATORS.add("hardware", hardware)
