"""NAS-Bench-201 operations (Dong & Yang, "NAS-Bench-201", ICLR 2020).

``none``, ``skip_connect`` and ``avg_pool_3x3`` are shared with DARTS (same definitions; the
benchmark adds no BatchNorm after pools, which NB201 spaces express by building mixed ops
with ``pool_bn=False``). The convolutions are ReLU -> Conv -> BN.
"""

from __future__ import annotations

from dnas.space.ops import register_op
from dnas.space.ops.darts import ReLUConvBN

PAPER = "Dong & Yang 2020, NAS-Bench-201"


@register_op("nor_conv_1x1", parametric=True, paper=PAPER)
def _nor_conv_1x1(c_in, c_out, stride, affine, rngs):
    return ReLUConvBN(c_in, c_out, 1, stride, 0, affine=affine, rngs=rngs)


@register_op("nor_conv_3x3", parametric=True, paper=PAPER)
def _nor_conv_3x3(c_in, c_out, stride, affine, rngs):
    return ReLUConvBN(c_in, c_out, 3, stride, 1, affine=affine, rngs=rngs)
