"""Mixed operations and the architecture-parameter variable type.

:class:`Alpha` is its own ``nnx.Variable`` type (not a ``nnx.Param`` subclass, so
``wrt=nnx.Param`` and optimizers over ``nnx.Param`` never pick it up). A supernet owns one
``Alpha`` per *label* (in ``self.alpha``), so every mixed op that uses the same label reads
the same logits: label sharing is a dictionary key, not a pointer between modules.

:class:`MixedOp` takes, per call, either mixing weights ``f32[k]`` (DARTS/SNAS/GDAS/FBNet
after relaxation: the weighted sum of its candidates, zero ops skipped) or an index
``int32[]`` (one-shot evaluation: only that candidate runs, via ``lax.switch``, so one
compiled function serves every discrete architecture).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.errors import DnasError
from dnas.ops import OPS
from dnas.ops.layers import batch_norm
from dnas.space import SearchSpace
from dnas.types import PRNGKey


class Alpha(nnx.Variable):
    """Architecture logits of one label, ``f32[n_candidates]``."""


def init_alpha(space: SearchSpace, key: PRNGKey, scale: float = 1e-3) -> nnx.Dict:
    """One :class:`Alpha` per label, ``scale * N(0, 1)`` as in DARTS (``1e-3 * randn``)."""
    return nnx.Dict(
        {
            c.label: Alpha(scale * jax.random.normal(jax.random.fold_in(key, i), (c.n,), jnp.float32))
            for i, c in enumerate(space.choices)
        }
    )


class _WithBN(nnx.Module):
    """``op`` followed by an affine-free BatchNorm (DARTS' BN after pools in search)."""

    def __init__(self, op: nnx.Module, c: int, rngs: nnx.Rngs):
        self.op, self.bn = op, batch_norm(c, affine=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.op(x))


class MixedOp(nnx.Module):
    """All candidates of one labelled choice on one edge.

    Args:
      label: the choice's label (used in error messages; α is looked up by the caller).
      candidates: registered op names.
      c_in, c_out, stride: the edge's shape.
      affine: BatchNorm scale/shift inside the ops (DARTS search: False).
      pool_bn: add an affine-free BN after ops declaring ``search_bn`` (DARTS: True,
        NAS-Bench-201: False).
      rngs: NNX RNG streams.
    """

    def __init__(
        self,
        label: str,
        candidates: Sequence[str],
        c_in: int,
        c_out: int,
        stride: int,
        *,
        affine: bool = False,
        pool_bn: bool = True,
        rngs: nnx.Rngs,
    ):
        self.label = label
        self.candidates = tuple(candidates)
        specs = [OPS[n] for n in self.candidates]
        ops = []
        for spec in specs:
            op = spec.builder(c_in, c_out, stride, affine, rngs)
            ops.append(_WithBN(op, c_out, rngs) if (pool_bn and spec.search_bn) else op)
        self.ops = nnx.List(ops)
        self.is_zero = tuple(s.is_zero for s in specs)

    def __call__(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """Mix (``a`` float ``[k]``) or switch (``a`` integer scalar)."""
        a = jnp.asarray(a)
        k = len(self.candidates)
        if jnp.issubdtype(a.dtype, jnp.integer):
            if a.shape != ():
                raise DnasError(f"index for {self.label!r} must be a scalar, got shape {a.shape}")
            branches = [(lambda ops, x, i=i: ops[i](x)) for i in range(k)]
            return nnx.switch(jnp.clip(a, 0, k - 1), branches, self.ops, x)
        if a.shape != (k,):
            raise DnasError(
                f"mixing weights for {self.label!r} have shape {a.shape}, expected ({k},) for candidates {self.candidates}"
            )
        out = None
        for i, op in enumerate(self.ops):
            if self.is_zero[i]:
                continue  # w * 0 contributes nothing; skip the compute and its gradient
            term = a[i] * op(x)
            out = term if out is None else out + term
        if out is None:
            out = self.ops[0](x)  # every candidate is a zero op
        return out
