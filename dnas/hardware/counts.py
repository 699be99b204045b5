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
import numpy as np
from flax import nnx

from dnas.space.ops.layers import depthwise_impl

# jax.extend.core is the supported home (jax.core's copy is deprecated); _subjaxprs walks
# the params itself on older JAX (pyproject allows >=0.6), which lacks it.
try:
    from jax.extend.core import jaxprs_in_params as _jaxprs_in_params
except ImportError:
    _jaxprs_in_params = None


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
