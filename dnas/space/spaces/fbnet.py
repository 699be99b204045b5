"""The FBNet layer-wise space (Wu et al., CVPR 2019) as HW-NAS-Bench defines it (Li et al.,
ICLR 2021, ``hw_nas_bench_api/fbnet_models/model_infer.py``): its supernet, derived
network and genotype kind.

22 searched layers (stages of ``(1, 4, 4, 4, 4, 4, 1)`` layers, widths
``(16, 24, 32, 64, 112, 184, 352)``), each one of 9 ops: ``k{3,5}_e{1,3,6}`` inverted
residual blocks (1x1 expand -> ReLU -> kxk depthwise -> ReLU -> 1x1 project, the residual
where shapes agree), ``k{3,5}_e1_g2`` (grouped 1x1 convolutions, 2 groups, channel shuffle
after the expansion) and ``skip`` (identity, or 1x1 conv-BN-ReLU where the shape changes).
Stem 3x3 conv (16), head 1x1 conv, pooling, classifier. ``setting="cifar"`` (stem stride 1,
stage strides ``(1, 1, 2, 2, 1, 2, 1)``, head 1504) is the setting of the per-layer table
``fbnet_layer_lut_hwnasbench.csv``; ``"imagenet"`` is the paper's (stem stride 2,
``(1, 2, 2, 2, 1, 2, 1)``, head 1984). Op names are the table's, so
:meth:`dnas.hardware.FBNetLayerTable.latency_term` prices this space directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.genotype import SCHEMA, register_genotype
from dnas.space.mixed import init_alpha, layer_groups, mixed_layers, scan_layers
from dnas.space.ops import OPS, Identity, register_op
from dnas.space.ops.layers import Conv2d, batch_norm
from dnas.space.base import Choice, SearchSpace, register_space
from dnas.space.spaces.proxylessnas import make_divisible
from dnas.core.types import ArchInput, NetOutput, PRNGKey

FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
"""The 9 candidates in HW-NAS-Bench's ``op_idx`` order (the per-layer table's)."""
PAPER = "Wu et al. 2019, FBNet (HW-NAS-Bench's definition)"
SETTINGS = {"cifar": (1, (1, 1, 2, 2, 1, 2, 1), 1504), "imagenet": (2, (1, 2, 2, 2, 1, 2, 1), 1984)}
N_LAYERS, WIDTHS = (1, 4, 4, 4, 4, 4, 1), (16, 24, 32, 64, 112, 184, 352)


class FBNetBlock(nnx.Module):
    """1x1 (grouped) expand -> BN -> ReLU -> [shuffle] -> kxk depthwise (stride) -> BN -> ReLU
    -> 1x1 (grouped) project -> BN, plus the input where stride is 1 and channels agree."""

    def __init__(self, c_in: int, c_out: int, k: int, e: int, groups: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        mid = c_in * e
        self.groups = groups
        self.c1, self.b1 = Conv2d(c_in, mid, 1, groups=groups, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        self.c2, self.b2 = Conv2d(mid, mid, k, stride, k // 2, groups=mid, rngs=rngs), batch_norm(mid, affine, rngs=rngs)
        self.c3, self.b3 = Conv2d(mid, c_out, 1, groups=groups, rngs=rngs), batch_norm(c_out, affine, rngs=rngs)
        self.residual = stride == 1 and c_in == c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.b1(self.c1(x)))
        if self.groups > 1:  # ShuffleNet's channel shuffle: [.., g, C/g] -> [.., C/g, g]
            b, h, w, c = y.shape
            y = y.reshape(b, h, w, self.groups, c // self.groups).swapaxes(-1, -2).reshape(b, h, w, c)
        y = jax.nn.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return x + y if self.residual else y


class FBNetSkip(nnx.Module):
    """Identity, or 1x1 conv (stride) -> BN -> ReLU where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, affine: bool, rngs: nnx.Rngs):
        self.conv = Conv2d(c_in, c_out, 1, stride, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def _register(name: str) -> None:
    if name in OPS:
        return
    if name == "skip":
        register_op(name, parametric=False, paper=PAPER)(
            lambda c_in, c_out, stride, affine, rngs: Identity() if stride == 1 and c_in == c_out
            else FBNetSkip(c_in, c_out, stride, affine=affine, rngs=rngs)
        )
        return
    k, e = int(name[1]), int(name.split("_e")[1][0])
    g = 2 if name.endswith("_g2") else 1
    register_op(name, parametric=True, paper=PAPER)(
        lambda c_in, c_out, stride, affine, rngs: FBNetBlock(c_in, c_out, k, e, g, stride, affine=affine, rngs=rngs)
    )


for _name in FBNET_OPS:
    _register(_name)


def _layers(setting: str, scale: float = 1.0) -> list[tuple[str, int, int, int]]:
    """(label, c_in, c_out, stride) of the 22 layers."""
    w = (lambda c: c) if scale == 1.0 else (lambda c: make_divisible(c * scale))
    _, strides, _ = SETTINGS[setting]
    out, c, i = [], w(16), 0
    for n, width, s in zip(N_LAYERS, WIDTHS, strides):
        for j in range(n):
            out.append((f"layer{i:02d}/op", c, w(width), s if j == 0 else 1))
            c, i = w(width), i + 1
    return out


@register_genotype("fbnet")
@dataclasses.dataclass(frozen=True)
class FBNetGenotype:
    """The op of each of the 22 layers and the setting (``cifar`` or ``imagenet``)."""

    ops: tuple[str, ...]
    setting: str = "cifar"
    space = "fbnet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.setting not in SETTINGS:
            raise DnasError(f"FBNet setting {self.setting!r} is not one of {', '.join(SETTINGS)}")
        if len(self.ops) != sum(N_LAYERS) or any(o not in FBNET_OPS for o in self.ops):
            raise DnasError(f"an FBNet genotype is {sum(N_LAYERS)} ops among {', '.join(FBNET_OPS)}; got {len(self.ops)}")

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "FBNetGenotype":
        return cls(tuple(obj["ops"]), obj.get("setting", "cifar"))

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "fbnet", "ops": list(self.ops), "setting": self.setting}

    def dot_graphs(self) -> dict[str, str]:
        """The layer chain."""
        edges = "\n".join(f'  "{i}" -> "{i + 1}" [label="{op}"];' for i, op in enumerate(self.ops))
        return {"chain": f'digraph "fbnet" {{\n  rankdir=LR;\n{edges}\n}}\n'}

    def __str__(self) -> str:
        return "fbnet:" + ",".join(self.ops)


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """22 labels ``layer{00..21}/op``, 9 candidates each by default (9^22 ≈ 9.8e20 architectures).

    Args:
      layers: unused by the geometry (FBNet's depth is fixed at 22; ``skip`` shortens it);
        accepted because every space is built with ``config.layers``.
      setting: ``cifar`` (HW-NAS-Bench's table) or ``imagenet`` (the paper's strides).
      ops: the candidates of every layer, a subset of :data:`FBNET_OPS` in any order
        (default: all 9). A smaller set is a smaller supernet (a smoke run's step program
        holds every candidate of every layer); the per-layer table prices any subset.
    """

    layerwise = True  # one label per layer of a chain (SearchSpace.layerwise)

    def __init__(self, layers: int = 22, setting: str = "cifar", ops: Sequence[str] = FBNET_OPS):
        if setting not in SETTINGS:
            raise DnasError(f"fbnet setting {setting!r} is not one of {', '.join(SETTINGS)}")
        ops = tuple(str(o) for o in ops)
        bad = [o for o in ops if o not in FBNET_OPS]
        if bad or not ops or len(set(ops)) != len(ops):
            what = f"unknown {bad[0]!r}" if bad else "none" if not ops else "a duplicate"
            raise DnasError(f"fbnet ops must be distinct names among {', '.join(FBNET_OPS)}; got {what} (config.space_kwargs.ops)")
        self.setting, self.ops = setting, ops
        super().__init__([Choice(label, ops) for label, *_ in _layers(setting)])

    def derive(self, alpha: Mapping[str, jax.Array]) -> FBNetGenotype:
        """Argmax op per layer (FBNet samples the final net from θ; argmax is its mode)."""
        return FBNetGenotype(tuple(self.ops[int(np.argmax(np.asarray(alpha[l])))] for l in self.labels), self.setting)

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> "FBNetNet":
        return FBNetNet(None, self.setting, C, num_classes, in_channels, self, rngs=rngs)

    @staticmethod
    def network(genotype: FBNetGenotype, *, C: int, layers: int, num_classes: int, in_channels: int, rngs: nnx.Rngs,
                **options: Any) -> "FBNetNet":
        """The derived network; ``C`` is the stem width (16 in the paper; widths scale by C/16)."""
        return FBNetNet(genotype.ops, genotype.setting, C, num_classes, in_channels, None, rngs=rngs)


class FBNetNet(nnx.Module):
    """Stem conv-BN-ReLU, 22 layers (mixed or chosen), head conv-BN-ReLU, pool, classifier."""

    def __init__(self, ops: Sequence[str] | None, setting: str, C: int, num_classes: int, in_channels: int,
                 space: FBNetSpace | None, *, rngs: nnx.Rngs):
        stem_stride, _, head = SETTINGS[setting]
        scale = C / 16
        layers = _layers(setting, scale)
        if space is not None:
            self.alpha = init_alpha(space, rngs.params())
        self.stem = Conv2d(in_channels, layers[0][1], 3, stem_stride, 1, rngs=rngs)
        self.stem_bn = batch_norm(layers[0][1], True, rngs=rngs)
        self.labels = tuple(label if space is not None else None for label, *_ in layers)
        # Runs of same-shaped searched layers are built as one stacked draw (mixed_layers)
        # and run as one scan each (scan_layers): 12 layer programs instead of 22. () runs
        # every layer on its own (the derived network).
        self.groups = tuple(layer_groups([l[1:] for l in layers])) if space is not None else ()
        if space is not None:
            self.layers = nnx.List([op for a, b in self.groups for op in mixed_layers(
                [l[0] for l in layers[a:b]], space.ops, *layers[a][1:], affine=True, pool_bn=False, rngs=rngs)])
        else:
            self.layers = nnx.List([OPS[op].builder(ci, co, s, True, rngs) for (_, ci, co, s), op in zip(layers, ops)])
        c_head = head if scale == 1.0 else make_divisible(head * scale)
        self.head_conv, self.head_bn = Conv2d(layers[-1][2], c_head, 1, rngs=rngs), batch_norm(c_head, True, rngs=rngs)
        self.fc = nnx.Linear(c_head, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None,
                 drop_prob: float | jax.Array = 0.0) -> NetOutput:
        """``f32[B, H, W, C_in] -> NetOutput(logits f32[B, classes])``."""
        h = jax.nn.relu(self.stem_bn(self.stem(x)))
        if self.groups:
            for a, b in self.groups:
                h = scan_layers([self.layers[i] for i in range(a, b)], self.labels[a:b], h, arch)
        else:
            for label, layer in zip(self.labels, self.layers):
                h = layer(h) if label is None else layer(h, arch[label])
        h = jax.nn.relu(self.head_bn(self.head_conv(h)))
        return NetOutput(self.fc(jnp.mean(h, axis=(1, 2))))
