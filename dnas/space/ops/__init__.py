"""The op registry: every candidate operation a mixed op can hold.

An op is registered with a builder ``(c_in, c_out, stride, affine, rngs) -> nnx.Module``
whose module maps ``f32[B, H, W, c_in]`` to ``f32[B, ceil(H/stride), ceil(W/stride), c_out]``,
and declared metadata (never sniffed from the name):

- ``parametric``: the op has trainable weights at stride 1 (used by analyses of
  parameter-free-op collapse, e.g. DARTS' skip-connection domination);
- ``is_zero``: the op outputs zeros; mixed ops skip computing it;
- ``search_bn``: DARTS adds an affine-free BatchNorm after it in the search network
  (pools only).

Example (a new op in a few lines, nothing else to touch)::

    @register_op("conv_3x3", parametric=True)
    def conv_3x3(c_in, c_out, stride, affine, rngs):
        return ReLUConvBN(c_in, c_out, 3, stride, 1, affine=affine, rngs=rngs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.registry import Registry

OpBuilder = Callable[[int, int, int, bool, nnx.Rngs], nnx.Module]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A registered op: its builder and declared metadata (see module docstring)."""

    name: str
    builder: OpBuilder
    parametric: bool
    is_zero: bool = False
    search_bn: bool = False
    paper: str = ""


OPS: Registry[OpSpec] = Registry("op")


def register_op(
    name: str, *, parametric: bool, is_zero: bool = False, search_bn: bool = False, paper: str = ""
) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator registering an op builder under ``name`` with its metadata."""
    return OPS.decorator(
        name,
        lambda fn: OpSpec(name, fn, parametric=parametric, is_zero=is_zero, search_bn=search_bn, paper=paper),
    )


def check_ops(names: Sequence[str], where: str = "the space") -> tuple[str, ...]:
    """Refuses op names that are not registered (one line naming the first and the known
    ones), so a bad op list fails when the config is validated, not mid-build."""
    names = tuple(names)
    for n in names:
        if n not in OPS:
            import difflib

            close = difflib.get_close_matches(str(n), OPS.names(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DnasError(f"unknown op {n!r} in {where}; {hint}known ops: {', '.join(OPS.names())} (dnas list ops)")
    if not names:
        raise DnasError(f"{where} lists no ops")
    return names


def build_op(name: str, c_in: int, c_out: int, stride: int, *, affine: bool, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the registered op ``name``; unknown names raise DnasError listing the known ones."""
    return OPS[name].builder(c_in, c_out, stride, affine, rngs)


# Importing the op families registers them.
from dnas.space.ops import blocks as _blocks  # noqa: E402,F401
from dnas.space.ops import darts as _darts  # noqa: E402,F401
from dnas.space.ops import nb201 as _nb201  # noqa: E402,F401
from dnas.space.ops.darts import FactorizedReduce, Identity, ReLUConvBN, Zero  # noqa: E402

__all__ = ["OPS", "OpSpec", "register_op", "build_op", "check_ops", "Identity", "Zero", "ReLUConvBN", "FactorizedReduce"]
