"""Model cost: parameter counts and multiply-accumulates (MACs).

MACs are counted from the traced program, not from per-op formulas: every
``conv_general_dilated`` contributes ``B·Ho·Wo·Cout·(Cin/groups)·kh·kw`` and every
``dot_general`` the product of its batch, free and contracted sizes. Counting what JAX
actually runs means a new op needs no FLOPs formula and cannot get one wrong. Depthwise
convolutions are traced in their ``conv`` lowering so they are counted as convolutions
(the shifted-sum CPU lowering does the same multiply-adds).

Control flow: a ``scan`` body counts once per iteration (its ``length``); of a
``cond``/``switch`` only one branch runs, so it counts its most expensive branch (an upper
bound). For a supernet evaluated at one architecture, pass the architecture as concrete
indices (``model_macs(net, shape, arch=...)``): mixed ops then call the chosen op directly
and the count is that architecture's exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.hardware.lut import LatencyTable, LutEntry
from dnas.hardware.penalties import LatencyTerm, latency_term, lut_term
from dnas.space.base import SearchSpace
from dnas.space.keys import KeyedSpace
from dnas.space.ops.layers import depthwise_impl

# jax.extend.core is the supported home (jax.core's copy is deprecated); _subjaxprs walks
# the params itself on older JAX (pyproject allows >=0.6), which lacks it.
try:
    from jax.extend.core import jaxprs_in_params as _jaxprs_in_params
except ImportError:
    _jaxprs_in_params = None
try:
    from jax.extend.core import Literal as _Literal
except ImportError:  # older JAX
    from jax.core import Literal as _Literal


def count_params(module: nnx.Module, exclude: tuple[str, ...] = ("aux",)) -> int:
    """Number of trainable scalars (``nnx.Param``), skipping paths containing ``exclude``.

    DARTS reports sizes without the auxiliary head (``count_parameters_in_MB``), hence the
    default.
    """
    state = nnx.state(module, nnx.Param)
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        if any(e in names for e in exclude):
            continue
        total += int(np.prod(np.shape(leaf)))
    return total


def _eqn_macs(eqn: Any) -> int:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
        out = eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        rhs_spec = dn.rhs_spec  # (out_feature, in_feature, spatial...)
        kernel_spatial = math.prod(rhs.shape[d] for d in rhs_spec[2:])
        cin_per_group = rhs.shape[rhs_spec[1]]
        out_spec = dn.out_spec
        out_elems = math.prod(out.shape)  # B * Ho * Wo * Cout
        del lhs, out_spec
        return out_elems * cin_per_group * kernel_spatial // max(1, eqn.params.get("batch_group_count", 1))
    if name == "dot_general":
        out = eqn.outvars[0].aval
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        return math.prod(out.shape) * math.prod(lhs.shape[d] for d in lc)
    return 0


def _jaxpr_macs(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _eqn_macs(eqn)
        subs = [_jaxpr_macs(sub) for sub in _subjaxprs(eqn.params)]
        if not subs:
            continue
        if eqn.primitive.name == "cond":  # one branch runs
            total += max(subs)
        elif eqn.primitive.name == "scan":  # the body runs `length` times
            total += int(eqn.params["length"]) * sum(subs)
        else:
            total += sum(subs)
    return total


def _subjaxprs(params: dict[str, Any]):
    if _jaxprs_in_params is not None:
        yield from _jaxprs_in_params(params)
        return
    for v in params.values():
        vals = v if isinstance(v, (list, tuple)) else (v,)
        for x in vals:
            if hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr
            elif hasattr(x, "eqns"):
                yield x


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
    """Multiply-accumulates of one call ``fn(*args)`` (abstract trace; nothing is computed)."""
    with depthwise_impl("conv"):
        closed = jax.make_jaxpr(fn)(*args)
    return _jaxpr_macs(closed.jaxpr)


def model_macs(module: nnx.Module, input_shape: tuple[int, ...], **call_kwargs: Any) -> int:
    """MACs of ``module(x)`` in eval mode for ``x`` of ``input_shape`` (e.g. ``(1, 32, 32, 3)``).

    Outputs that are not the main logits (an auxiliary head's) are still traced; build the
    network without them to exclude their cost.
    """
    graphdef, state = nnx.split(module)

    def run(state, x):
        m = nnx.merge(graphdef, state)
        m.eval()
        return m(x, **call_kwargs)

    abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), v.dtype), state)
    return count_macs(run, abstract, jax.ShapeDtypeStruct(input_shape, np.float32))


def count_terms(space: SearchSpace, resolution: int = 224) -> tuple[LatencyTerm, LatencyTerm]:
    """Per-candidate MACs and parameters (millions) of a :class:`~dnas.space.keys.KeyedSpace`,
    as two additive :class:`LatencyTerm` (the ``counts`` cost model).

    Each key's module (``space.lut_module``) is counted once on an abstract trace; a
    network's count is then the sum over its positions, which is exact for a layer-wise
    space (a block's cost depends only on its op and position; tested against counting
    whole networks).
    """
    if not isinstance(space, KeyedSpace):
        raise DnasError(f"space {getattr(space, 'space_name', type(space).__name__)!r} has no per-op keys "
                        "(it is not a dnas.space.keys.KeyedSpace); per-candidate MAC / parameter counts need them (proxylessnas)")
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
    as_table = lambda e, unit: LatencyTable(e, "count", "dnas.hardware.counts", "float32", 1, "dnas.hardware.counts", unit)  # noqa: E731
    return lut_term(space, as_table(macs, "MMAC"), resolution), lut_term(space, as_table(params, "Mparam"), resolution)


def _arch_counts(graphdef: Any, abs_params: Any, abs_rest: Any, x: jax.ShapeDtypeStruct, arch: dict[str, int]) -> tuple[int, int]:
    """MACs and parameters of a supernet run at concrete indices: mixed ops then call their
    chosen op directly, so the program holds that architecture's ops only, and its
    parameters are the ``nnx.Param`` leaves the program reads."""

    def run(p, r, x):
        m = nnx.merge(graphdef, p, r)
        m.eval()
        return m(x, arch)

    with depthwise_impl("conv"):
        closed = jax.make_jaxpr(run)(abs_params, abs_rest, x)
    leaves = jax.tree.leaves(abs_params)
    read = {v for e in closed.jaxpr.eqns for v in e.invars if not isinstance(v, _Literal)}
    read |= {v for v in closed.jaxpr.outvars if not isinstance(v, _Literal)}
    params = sum(math.prod(leaf.shape) for leaf, v in zip(leaves, closed.jaxpr.invars[: len(leaves)]) if v in read)
    return _jaxpr_macs(closed.jaxpr), int(params)


def supernet_count_terms(space: SearchSpace, *, C: int, num_classes: int, in_channels: int, resolution: int,
                         check: int = 2, seed: int = 0) -> tuple[LatencyTerm, LatencyTerm]:
    """Per-candidate MACs and parameters (millions) of any space, from its supernet.

    Counts the all-first-candidate architecture and each single change of it (``1 + Σ (k -
    1)`` abstract traces, nothing computed): candidate i of a label costs the change it
    makes. Exact when the cost is a sum over labels (cell spaces whose edges each choose an
    op: DARTS, NAS-Bench-201); ``check`` random architectures are counted whole and a
    mismatch raises DnasError (labels that interact have no per-candidate table).
    """
    net = nnx.eval_shape(lambda: space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    shape = lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype)  # noqa: E731
    abs_params, abs_rest = jax.tree.map(shape, params), jax.tree.map(shape, rest)
    x = jax.ShapeDtypeStruct((1, resolution, resolution, in_channels), jnp.float32)
    count = lambda vec: np.asarray(_arch_counts(graphdef, abs_params, abs_rest, x, {l: int(v) for l, v in zip(space.labels, vec)}), np.float64)  # noqa: E731
    base_vec = np.zeros(len(space.labels), np.int32)
    base = count(base_vec)
    delta: dict[str, np.ndarray] = {}
    for i, l in enumerate(space.labels):
        rows = [np.zeros(2)]
        for c in range(1, int(space.num_candidates[i])):
            vec = base_vec.copy()
            vec[i] = c
            rows.append(count(vec) - base)
        delta[l] = np.stack(rows)
    rng = np.random.default_rng(seed)
    for _ in range(int(check)):
        vec = np.array([rng.integers(k) for k in space.num_candidates], np.int32)
        whole, summed = count(vec), base + sum(delta[l][v] for l, v in zip(space.labels, vec))
        if not np.allclose(whole, summed, rtol=1e-9, atol=0.5):
            raise DnasError(f"space {getattr(space, 'space_name', type(space).__name__)!r}: MACs/parameters are not a sum over "
                            f"its labels (architecture {vec.tolist()}: {whole.tolist()} counted, {summed.tolist()} summed)")
    term = lambda j: latency_term(space, {l: d[:, j] / 1e6 for l, d in delta.items()}, float(base[j]) / 1e6)  # noqa: E731
    return term(0), term(1)
