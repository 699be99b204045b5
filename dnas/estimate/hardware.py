"""Hardware cost as estimator metrics, so discrete search can constrain it (issue 19, part 5).

``hardware`` adds, to the metrics of a ``base`` estimator (or alone):

- ``latency_ms``: the architecture's table latency (a LUT for the space, as
  ``config.latency.table``: dnas JSON, ProxylessNAS YAML, FBNet CSV + ``device``);
- ``macs_m`` and ``params_m``: multiply-adds and parameters (millions) of the derived
  network, for spaces with per-position table keys (``proxylessnas``): each key's module is
  counted once (``dnas.hardware.counts`` on an abstract trace), and a network's cost is the sum over
  its blocks, which is exact for a layer-wise space (a block's cost depends only on its op
  and position; tested against counting whole networks).

All three are gathers over per-candidate arrays, so the estimator stays pure and a
table-backed search still runs its seeds as one vmapped program. The objectives of
:mod:`dnas.search.objectives` then constrain them by name: ``hard`` with
``limits={"latency_ms": 80}`` (reject), ``mnasnet`` / ``tunas`` (soft), ``weighted``,
or ``multi`` with ``"-latency_ms"`` (a Pareto front).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.hardware.counts import count_macs, count_params
from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator
from dnas.hardware.lut import LatencyTable, LutEntry
from dnas.hardware.penalties import LatencyTerm, table_latency
from dnas.search.latency import load_table, space_latency_term
from dnas.space.base import SearchSpace


def cost_terms(space: SearchSpace, resolution: int = 224) -> tuple[LatencyTerm, LatencyTerm]:
    """Per-candidate MACs and parameters (millions) of a space with table keys, as two
    additive :class:`LatencyTerm` (``table_latency`` then sums an architecture's cost)."""
    if not callable(getattr(space, "lut_keys", None)) or not callable(getattr(space, "lut_module", None)):
        raise DnasError(f"space {getattr(space, 'space_name', type(space).__name__)!r} has no per-position keys; "
                        "macs_m / params_m need one (proxylessnas)")
    keys, fixed = space.lut_keys(resolution)
    unique = dict.fromkeys([k for pos in keys.values() for c in pos for k in c if k is not None] + list(fixed))
    macs, params = {}, {}
    for k in unique:
        module = nnx.eval_shape(lambda k=k: space.lut_module(k, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(module)

        def run(st, x, graphdef=graphdef):
            m = nnx.merge(graphdef, st)
            m.eval()
            return m(x)

        abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)
        macs[k] = LutEntry(count_macs(run, abstract, jax.ShapeDtypeStruct((1, *k.input_shape), jnp.float32)) / 1e6)
        params[k] = LutEntry(count_params(module) / 1e6)
    as_table = lambda e, unit: LatencyTable(e, "count", "dnas.hardware.counts", "float32", 1, "dnas.estimate.hardware", unit)  # noqa: E731
    return space.latency_term(as_table(macs, "MMAC"), resolution), space.latency_term(as_table(params, "Mparam"), resolution)


def hardware(space: SearchSpace, base: str = "", base_kwargs: Mapping[str, Any] | None = None, table: str = "", device: str = "",
             resolution: int = 224, counts: bool = True, cost_s: float = 1.0) -> Estimator:
    """An estimator adding ``latency_ms`` (with ``table``) and ``macs_m`` / ``params_m``
    (with ``counts``) to the metrics of the registered estimator ``base``.

    Args:
      space: the search space.
      base: a registered estimator whose metrics and cost are kept ("" = none).
      base_kwargs: its keyword arguments.
      table: a latency table for the space ("" = no ``latency_ms``).
      device: the FBNet CSV's device.
      resolution: input size of the counted / tabulated network.
      counts: add ``macs_m`` and ``params_m``.
      cost_s: the charged cost of one query without a ``base``.
    """
    terms: dict[str, LatencyTerm] = {}
    if table:
        terms["latency_ms"] = space_latency_term(space, load_table(table, device), int(resolution))
    if counts:
        terms["macs_m"], terms["params_m"] = cost_terms(space, int(resolution))
    if not terms and not base:
        raise DnasError("the hardware estimator needs a table, counts=True or a base estimator")
    inner = ESTIMATORS[base](space, **dict(base_kwargs or {})) if base else None
    clash = [m for m in terms if inner is not None and m in inner.metrics]
    if clash:
        raise DnasError(f"the base estimator {base!r} already gives {clash[0]!r}")

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        archs = jnp.asarray(archs, jnp.int32)
        metrics, cost = ({}, jnp.full(archs.shape[:1], cost_s, jnp.float32)) if inner is None else inner.evaluate(archs, key)
        return {**metrics, **{m: table_latency(t, archs) for m, t in terms.items()}}, cost

    names = (inner.metrics if inner is not None else ()) + tuple(terms)
    describe = inner.describe if inner is not None else (lambda v: str(space.names(v)))
    return Estimator(evaluate, names, inner.pure if inner is not None else True, inner.min_cost if inner is not None else cost_s, describe)


ESTIMATORS.add("hardware", hardware)
