"""The DARTS operations (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019).

Defined as in the reference implementation (quark0/darts ``operations.py``), NHWC.
Also the extra ops used by the published NASNet-A / AmoebaNet-A cells (``sep_conv_7x7``,
``conv_7x1_1x7``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.space.ops import register_op
from dnas.space.ops.layers import Conv2d, avg_pool, batch_norm, depthwise_pointwise, max_pool

PAPER = "Liu et al. 2019, DARTS"


class Identity(nnx.Module):
    """``x -> x``. Drop-path in derived networks skips identity edges, as DARTS does."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class Zero(nnx.Module):
    """The ``none`` op: zeros of the output shape (strided, ``c_out`` channels)."""

    def __init__(self, c_out: int, stride: int):
        self.c_out, self.stride = c_out, stride

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.zeros(x.shape[:-1] + (self.c_out,), x.dtype)


class ReLUConvBN(nnx.Module):
    """ReLU -> Conv(k, stride, pad, dilation) -> BN."""

    def __init__(
        self, c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int = 1, *, affine: bool, rngs: nnx.Rngs
    ):
        self.conv = Conv2d(c_in, c_out, k, stride, pad, dilation, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(jax.nn.relu(x)))


class DilConv(nnx.Module):
    """ReLU -> depthwise Conv(k, stride, pad, dilation) -> pointwise Conv -> BN."""

    def __init__(
        self, c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, *, affine: bool, rngs: nnx.Rngs
    ):
        self.dw = Conv2d(c_in, c_in, k, stride, pad, dilation, groups=c_in, rngs=rngs)
        self.pw = Conv2d(c_in, c_out, 1, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        dw = self.dw
        y = depthwise_pointwise(jax.nn.relu(x), dw.kernel.get_value(), self.pw.kernel.get_value(), dw.stride, dw.padding, dw.dilation)
        return self.bn(y)


class SepConv(nnx.Module):
    """Two stacked DilConv(dilation=1): the first carries the stride and keeps ``c_in``."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, *, affine: bool, rngs: nnx.Rngs):
        self.op1 = DilConv(c_in, c_in, k, stride, pad, 1, affine=affine, rngs=rngs)
        self.op2 = DilConv(c_in, c_out, k, 1, pad, 1, affine=affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.op2(self.op1(x))


class FactorizedReduce(nnx.Module):
    """ReLU -> two 1x1 stride-2 convs on x and x shifted by one pixel -> concat -> BN.

    With ``stride=1`` (NAS-Bench-201's channel-changing skip) it is ReLU -> 1x1 conv -> BN.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 2, *, affine: bool, rngs: nnx.Rngs):
        if stride == 2:
            if c_out % 2:
                raise ValueError(f"FactorizedReduce needs an even c_out, got {c_out}")
            self.convs = nnx.List([Conv2d(c_in, c_out // 2, 1, 2, rngs=rngs), Conv2d(c_in, c_out - c_out // 2, 1, 2, rngs=rngs)])
        elif stride == 1:
            self.convs = nnx.List([Conv2d(c_in, c_out, 1, 1, rngs=rngs)])
        else:
            raise ValueError(f"FactorizedReduce supports stride 1 or 2, got {stride}")
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(x)
        if len(self.convs) == 1:
            return self.bn(self.convs[0](x))
        # The shifted path sees odd pixels; pad back so odd sizes keep ceil(H/2) outputs.
        shifted = jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.bn(jnp.concatenate([self.convs[0](x), self.convs[1](shifted)], axis=-1))


class Pool(nnx.Module):
    """3x3 max/avg pool (avg excludes padding); a 1x1 ReLUConvBN first if channels change."""

    def __init__(self, kind: str, c_in: int, c_out: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        self.kind, self.stride = kind, stride
        self.pre = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=affine, rngs=rngs) if c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pre is not None:
            x = self.pre(x)
        if self.kind == "max":
            return max_pool(x, 3, self.stride, 1)
        return avg_pool(x, 3, self.stride, 1, count_include_pad=False)


class Conv7x1_1x7(nnx.Module):
    """ReLU -> Conv(1x7) -> Conv(7x1) -> BN (NASNet/AmoebaNet op)."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        self.a = Conv2d(c_in, c_in, (1, 7), (1, stride), (0, 3), rngs=rngs)
        self.b = Conv2d(c_in, c_out, (7, 1), (stride, 1), (3, 0), rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.b(self.a(jax.nn.relu(x))))


@register_op("none", parametric=False, is_zero=True, paper=PAPER)
def _none(c_in, c_out, stride, affine, rngs):
    return Zero(c_out, stride)


@register_op("skip_connect", parametric=False, paper=PAPER)
def _skip(c_in, c_out, stride, affine, rngs):
    if stride == 1 and c_in == c_out:
        return Identity()
    return FactorizedReduce(c_in, c_out, stride, affine=affine, rngs=rngs)


@register_op("max_pool_3x3", parametric=False, search_bn=True, paper=PAPER)
def _max_pool(c_in, c_out, stride, affine, rngs):
    return Pool("max", c_in, c_out, stride, affine=affine, rngs=rngs)


@register_op("avg_pool_3x3", parametric=False, search_bn=True, paper=PAPER)
def _avg_pool(c_in, c_out, stride, affine, rngs):
    return Pool("avg", c_in, c_out, stride, affine=affine, rngs=rngs)


def _register_sep(k: int) -> None:
    @register_op(f"sep_conv_{k}x{k}", parametric=True, paper=PAPER)
    def _sep(c_in, c_out, stride, affine, rngs):
        return SepConv(c_in, c_out, k, stride, k // 2, affine=affine, rngs=rngs)


def _register_dil(k: int) -> None:
    @register_op(f"dil_conv_{k}x{k}", parametric=True, paper=PAPER)
    def _dil(c_in, c_out, stride, affine, rngs):
        return DilConv(c_in, c_out, k, stride, k - 1, 2, affine=affine, rngs=rngs)


for _k in (3, 5, 7):
    _register_sep(_k)
for _k in (3, 5):
    _register_dil(_k)


@register_op("conv_7x1_1x7", parametric=True, paper="Zoph et al. 2018, NASNet")
def _conv7(c_in, c_out, stride, affine, rngs):
    return Conv7x1_1x7(c_in, c_out, stride, affine=affine, rngs=rngs)
