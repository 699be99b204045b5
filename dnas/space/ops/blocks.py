"""Block families usable as candidates in any space.

- ResNet bottleneck (He et al. 2016): 1x1 reduce -> 3x3 (stride) -> 1x1 expand, x4 expansion.
- ResNeXt grouped bottleneck (Xie et al. 2017): the 3x3 is a grouped conv of ``cardinality``.
- MobileNet depthwise-separable (Howard et al. 2017): dw kxk -> BN -> ReLU -> pw -> BN -> ReLU.
- MobileNetV2 inverted residual / MBConv (Sandler et al. 2018): 1x1 expand (x e) -> ReLU6 ->
  dw kxk (stride) -> ReLU6 -> 1x1 project (linear bottleneck); residual when shapes allow.

Registered names: ``resnet_bottleneck``, ``resnext_g{4,8,32}``, ``dwsep_{3,5}x{3,5}``,
``mbconv_k{3,5,7}_e{1,3,6}``. :func:`register_mbconv` / :func:`register_resnext` add others.
"""

from __future__ import annotations

import jax
from flax import nnx

from dnas.space.ops import OPS, register_op
from dnas.space.ops.layers import Conv2d, batch_norm


class _Projection(nnx.Module):
    """Residual path: identity, or 1x1 strided conv + BN when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool, rngs: nnx.Rngs):
        if stride == 1 and c_in == c_out:
            self.conv, self.bn = None, None
        else:
            self.conv = Conv2d(c_in, c_out, 1, stride, rngs=rngs)
            self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x if self.conv is None else self.bn(self.conv(x))


class Bottleneck(nnx.Module):
    """ResNet/ResNeXt bottleneck: ``mid = c_out // 4`` (ResNet) or ``c_out // 2`` (ResNeXt)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, mid: int, *, affine: bool, rngs: nnx.Rngs):
        if mid % groups:
            raise ValueError(f"bottleneck width {mid} is not divisible by cardinality {groups}; use more channels")
        self.c1, self.b1 = Conv2d(c_in, mid, 1, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        self.c2, self.b2 = Conv2d(mid, mid, 3, stride, 1, groups=groups, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        self.c3, self.b3 = Conv2d(mid, c_out, 1, rngs=rngs), batch_norm(c_out, affine, rngs=rngs)
        self.proj = _Projection(c_in, c_out, stride, affine, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.b1(self.c1(x)))
        y = jax.nn.relu(self.b2(self.c2(y)))
        return jax.nn.relu(self.b3(self.c3(y)) + self.proj(x))


class DepthwiseSeparable(nnx.Module):
    """MobileNetV1 block: dw kxk (stride) -> BN -> ReLU -> pw 1x1 -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        self.dw, self.b1 = Conv2d(c_in, c_in, k, stride, k // 2, groups=c_in, rngs=rngs), batch_norm(c_in, affine, rngs=rngs)
        self.pw, self.b2 = Conv2d(c_in, c_out, 1, rngs=rngs), batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.b2(self.pw(jax.nn.relu(self.b1(self.dw(x))))))


class InvertedResidual(nnx.Module):
    """MobileNetV2 MBConv(k, e); the residual is added only when stride 1 and c_in == c_out."""

    def __init__(self, c_in: int, c_out: int, k: int, expansion: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        mid = c_in * expansion
        if expansion != 1:
            self.expand, self.b0 = Conv2d(c_in, mid, 1, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        else:
            self.expand, self.b0 = None, None
        self.dw, self.b1 = Conv2d(mid, mid, k, stride, k // 2, groups=mid, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        self.project, self.b2 = Conv2d(mid, c_out, 1, rngs=rngs), batch_norm(c_out, affine, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else jax.nn.relu6(self.b0(self.expand(x)))
        y = jax.nn.relu6(self.b1(self.dw(y)))
        y = self.b2(self.project(y))
        return x + y if self.residual else y


register_op("resnet_bottleneck", parametric=True, paper="He et al. 2016, ResNet")(
    lambda c_in, c_out, stride, affine, rngs: Bottleneck(c_in, c_out, stride, 1, max(c_out // 4, 1), affine=affine, rngs=rngs)
)


def register_resnext(cardinality: int) -> str:
    """Registers ``resnext_g{cardinality}`` (width ``c_out // 2``) and returns its name."""
    name = f"resnext_g{cardinality}"
    if name not in OPS:
        register_op(name, parametric=True, paper="Xie et al. 2017, ResNeXt")(
            lambda c_in, c_out, stride, affine, rngs: Bottleneck(
                c_in, c_out, stride, cardinality, max(c_out // 2, cardinality), affine=affine, rngs=rngs
            )
        )
    return name


def register_mbconv(kernel: int, expansion: int) -> str:
    """Registers ``mbconv_k{kernel}_e{expansion}`` and returns its name."""
    name = f"mbconv_k{kernel}_e{expansion}"
    if name not in OPS:
        register_op(name, parametric=True, paper="Sandler et al. 2018, MobileNetV2")(
            lambda c_in, c_out, stride, affine, rngs: InvertedResidual(
                c_in, c_out, kernel, expansion, stride, affine=affine, rngs=rngs
            )
        )
    return name


def _register_dwsep(k: int) -> None:
    register_op(f"dwsep_{k}x{k}", parametric=True, paper="Howard et al. 2017, MobileNet")(
        lambda c_in, c_out, stride, affine, rngs: DepthwiseSeparable(c_in, c_out, k, stride, affine=affine, rngs=rngs)
    )


for _g in (4, 8, 32):
    register_resnext(_g)
for _k in (3, 5, 7):
    for _e in (1, 3, 6):
        register_mbconv(_k, _e)
for _k in (3, 5):
    _register_dwsep(_k)
