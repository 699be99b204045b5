"""The ProxylessNAS layer-wise mobile space (Cai, Zhu & Han, ICLR 2019), its supernet,
derived network, genotype kind and latency-table keys (a :class:`~dnas.space.keys.KeyedSpace`:
any per-op cost table prices it, :mod:`dnas.hardware.cost_models`).

Geometry (mit-han-lab/proxylessnas ``search/models/super_nets/super_proxyless.py`` and
``search/imagenet_arch_search.py``): a 3x3 stride-2 stem conv (32 channels), a fixed 3x3
MBConv1 block (16), six stages of width ``(24, 40, 80, 96, 192, 320)`` with
``(4, 4, 4, 4, 4, 1)`` blocks and first strides ``(2, 2, 2, 1, 2, 1)``, a 1x1 feature-mix
conv (1280), global pooling and a classifier; widths are ``make_divisible(w * width_mult, 8)``
(the published GPU net is ``width_mult=1.35``, the CPU net ``1.12``). Every block after the
first is a choice (label ``stage{s}/block{b}/op``) over MBConv kernel {3, 5, 7} x expansion
{3, 6}; a block whose input and output shapes agree has an identity shortcut and may also
be ``zero``, which removes it, so the depth is searched too.

The ops here are ProxylessNAS' ``MBInvertedConvLayer`` (no shortcut of their own): the
block adds the identity outside the mixed op, so a zero block is the identity and two
sampled paths (``binary_gate(paths=2)``) share one shortcut.

``C`` (``config.init_channels``) scales every width by ``C / stem`` (32 at width 1), so a
small proxy supernet keeps the paper's structure; the latency-table keys always describe
the paper-size network at ``resolution`` (what the table's device runs).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.io import read_json
from dnas.data.datasets import shared_data
from dnas.space.genotype import SCHEMA, register_genotype
from dnas.space.mixed import init_alpha, layer_groups, mixed_layers, scan_layers
from dnas.space.ops import OPS, register_op
from dnas.space.ops.blocks import InvertedResidual
from dnas.space.ops.darts import Zero
from dnas.space.ops.layers import Conv2d, batch_norm
from dnas.space.base import Choice, SearchSpace, register_space
from dnas.space.keys import KeyedSpace, LutKey, PositionKeys
from dnas.core.types import ArchInput, NetOutput, PRNGKey

PAPER = "Cai et al. 2019, ProxylessNAS (MBInvertedConvLayer, shortcut outside)"
MB_OPS = tuple(f"mb_k{k}_e{e}" for k in (3, 5, 7) for e in (3, 6))
"""ProxylessNAS' conv candidates, in its order (``3x3_MBConv3``, ``3x3_MBConv6``, ``5x5_MBConv3``, ...)."""
ZERO = "zero"


def _register_mb(k: int, e: int) -> None:
    name = f"mb_k{k}_e{e}"
    if name in OPS:
        return

    def build(c_in: int, c_out: int, stride: int, affine: bool, rngs: nnx.Rngs) -> InvertedResidual:
        op = InvertedResidual(c_in, c_out, k, e, stride, affine=affine, rngs=rngs)
        op.residual = False  # the block owns the shortcut (ProxylessNAS' MobileInvertedResidualBlock)
        return op

    register_op(name, parametric=True, paper=PAPER)(build)


for _k in (3, 5, 7):
    for _e in (1, 3, 6):
        _register_mb(_k, _e)
if ZERO not in OPS:
    register_op(ZERO, parametric=False, is_zero=True, paper="Cai et al. 2019, ProxylessNAS ZeroLayer")(
        lambda c_in, c_out, stride, affine, rngs: Zero(c_out, stride)
    )


def make_divisible(v: float, divisor: int = 8) -> int:
    """Rounds a width to a multiple of ``divisor``, never below 90 % of ``v`` (MobileNetV2's
    rule, as ProxylessNAS applies it)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _op_kernel_expand(op: str) -> tuple[int, int]:
    k, e = op[len("mb_k") :].split("_e")
    return int(k), int(e)


@dataclasses.dataclass(frozen=True)
class Block:
    """One searched position: its label, shapes, stride and whether it has the identity shortcut."""

    label: str
    c_in: int
    c_out: int
    stride: int

    @property
    def shortcut(self) -> bool:
        return self.stride == 1 and self.c_in == self.c_out


@register_genotype("proxylessnas")
@dataclasses.dataclass(frozen=True)
class ProxylessGenotype:
    """A ProxylessNAS network: the op of every searched block (``zero`` = skipped) and the
    geometry it lives in (channels of the stem, the fixed first block, each stage, the
    feature mix; blocks and first stride per stage)."""

    ops: tuple[str, ...]
    stem: int = 32
    first: int = 16
    widths: tuple[int, ...] = (24, 40, 80, 96, 192, 320)
    n_cells: tuple[int, ...] = (4, 4, 4, 4, 4, 1)
    strides: tuple[int, ...] = (2, 2, 2, 1, 2, 1)
    last: int = 1280
    space = "proxylessnas"

    def __post_init__(self) -> None:
        for f in ("ops", "widths", "n_cells", "strides"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if not (len(self.widths) == len(self.n_cells) == len(self.strides)):
            raise DnasError("a ProxylessNAS genotype needs one width, block count and stride per stage")
        blocks = self.blocks()
        if len(self.ops) != len(blocks):
            raise DnasError(f"a ProxylessNAS genotype of this geometry has {len(blocks)} searched blocks, got {len(self.ops)} ops")
        for b, op in zip(blocks, self.ops):
            if op not in MB_OPS + (ZERO,):
                raise DnasError(f"{b.label}: unknown op {op!r}; candidates: {', '.join(MB_OPS)}, zero")
            if op == ZERO and not b.shortcut:
                raise DnasError(f"{b.label} changes shape (stride {b.stride}, {b.c_in}->{b.c_out}); it cannot be zero")

    def blocks(self, scale: float = 1.0) -> list[Block]:
        """The searched blocks in order, channels scaled by ``scale`` (rounded to 8)."""
        w = (lambda c: c) if scale == 1.0 else (lambda c: make_divisible(c * scale))
        out, c = [], w(self.first)
        for s, (width, n, stride) in enumerate(zip(self.widths, self.n_cells, self.strides), start=1):
            for b in range(n):
                out.append(Block(f"stage{s}/block{b + 1}/op", c, w(width), stride if b == 0 else 1))
                c = w(width)
        return out

    @property
    def depth(self) -> int:
        """Blocks that run: the fixed first block plus every non-zero searched block."""
        return 1 + sum(op != ZERO for op in self.ops)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ProxylessGenotype":
        keys = ("stem", "first", "widths", "n_cells", "strides", "last")
        return cls(tuple(obj["ops"]), **{k: obj[k] for k in keys if k in obj})

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "proxylessnas", "ops": list(self.ops), "stem": self.stem, "first": self.first,
                "widths": list(self.widths), "n_cells": list(self.n_cells), "strides": list(self.strides), "last": self.last}

    @classmethod
    def from_net_config(cls, path: str | Path) -> "ProxylessGenotype":
        """Reads a published network config (``proxyless_{mobile,gpu,cpu}.config.json`` of
        mit-han-lab/proxylessnas): blocks with ``mobile_inverted_conv`` (or ``ZeroLayer``)
        and ``shortcut``; a block without a shortcut starts a stage."""
        try:
            cfg = read_json(path, "network config")  # not UTF-8 or not JSON: one line naming the file
            stem, last = cfg["first_conv"]["out_channels"], cfg["feature_mix_layer"]["out_channels"]
            first, *rest = cfg["blocks"]
            conv = first["mobile_inverted_conv"]
            if (conv["kernel_size"], conv["expand_ratio"], conv["stride"]) != (3, 1, 1):
                raise DnasError(f"{path}: the first block must be the fixed 3x3 MBConv1, got {conv}")
            ops, widths, n_cells, strides = [], [], [], []
            for blk in rest:
                m = blk["mobile_inverted_conv"]
                if blk.get("shortcut") is None:  # a new stage
                    widths.append(m["out_channels"])
                    strides.append(m["stride"])
                    n_cells.append(0)
                n_cells[-1] += 1
                ops.append(ZERO if m["name"] == "ZeroLayer" else f"mb_k{m['kernel_size']}_e{m['expand_ratio']}")
            return cls(tuple(ops), stem, conv["out_channels"], tuple(widths), tuple(n_cells), tuple(strides), last)
        except OSError as e:
            raise DnasError(f"cannot read ProxylessNAS net config {str(path)!r}: {e.strerror or e}") from None
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise DnasError(f"{str(path)!r} is not a ProxylessNAS net config ({type(e).__name__}: {e})") from None

    def dot_graphs(self) -> dict[str, str]:
        """The block chain (zero blocks drawn as dashed identity edges)."""
        lines = ['digraph "proxylessnas" {', "  rankdir=LR;", '  "stem" -> "b0" [label="mb_k3_e1"];']
        for i, (b, op) in enumerate(zip(self.blocks(), self.ops)):
            style = ' style="dashed"' if op == ZERO else ""
            lines.append(f'  "b{i}" -> "b{i + 1}" [label="{op} {b.c_out}/s{b.stride}"{style}];')
        return {"chain": "\n".join(lines + ["}"]) + "\n"}

    def __str__(self) -> str:
        return "proxylessnas:" + ",".join(self.ops)


def lut_key(b: Block, op: str, hw: int) -> LutKey | None:
    """The ProxylessNAS-table key of ``op`` at block ``b`` for an ``hw x hw`` input (None for zero)."""
    if op == ZERO:
        return None
    k, e = _op_kernel_expand(op)
    ho = -(-hw // b.stride)
    return LutKey("expanded_conv", (hw, hw, b.c_in), (ho, ho, b.c_out), e, k, b.stride, (("idskip", int(b.shortcut)),))


@register_space("proxylessnas")
class ProxylessSpace(SearchSpace, KeyedSpace):
    """The ProxylessNAS mobile space.

    Args:
      layers: searched blocks per stage at most (``config.layers``); the paper's stages
        have 4, so any value >= 4 keeps its depth and smaller values give a shallower proxy.
      width_mult: ProxylessNAS' width multiplier (1.0 mobile, 1.35 GPU, 1.12 CPU).
      width_stages, n_cell_stages, stride_stages: the stages (paper defaults).
      ops: the conv candidates (default: kernel {3,5,7} x expansion {3,6}).
    """

    layerwise = True  # one label per block of a chain (SearchSpace.layerwise)

    def __init__(self, layers: int = 4, width_mult: float = 1.0, width_stages: Sequence[int] = (24, 40, 80, 96, 192, 320),
                 n_cell_stages: Sequence[int] = (4, 4, 4, 4, 4, 1), stride_stages: Sequence[int] = (2, 2, 2, 1, 2, 1),
                 ops: Sequence[str] = MB_OPS):
        bad = [o for o in ops if o not in MB_OPS]
        if bad or not ops:
            raise DnasError(f"proxylessnas ops must be among {', '.join(MB_OPS)}; got {bad[:1] or 'none'}")
        if int(layers) < 1 or width_mult <= 0:
            raise DnasError(f"proxylessnas needs layers >= 1 and width_mult > 0, got {layers}, {width_mult}")
        self.ops = tuple(ops)
        n_cells = tuple(min(int(n), int(layers)) for n in n_cell_stages)
        last = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        geo = dict(stem=make_divisible(32 * width_mult), first=make_divisible(16 * width_mult),
                   widths=tuple(make_divisible(w * width_mult) for w in width_stages), n_cells=n_cells,
                   strides=tuple(int(s) for s in stride_stages), last=last)
        self.geometry = geo
        self.blocks = ProxylessGenotype(("mb_k3_e3",) * sum(n_cells), **geo).blocks()
        super().__init__([Choice(b.label, self.ops + ((ZERO,) if b.shortcut else ())) for b in self.blocks])

    def genotype(self, ops: Sequence[str]) -> ProxylessGenotype:
        """The genotype of one op name per searched block in this space's geometry."""
        return ProxylessGenotype(tuple(ops), **self.geometry)

    def derive(self, alpha: Mapping[str, jax.Array]) -> ProxylessGenotype:
        """The most likely op per block (ProxylessNAS' ``argmax`` of the path weights)."""
        return self.genotype([self.choice(l).candidates[int(np.argmax(np.asarray(alpha[l])))] for l in self.labels])

    def genotype_to_vec(self, genotype: ProxylessGenotype) -> np.ndarray:
        """``int32[n]`` of a genotype of this geometry."""
        return self.encode(dict(zip(self.labels, genotype.ops)))

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> "ProxylessNet":
        return ProxylessNet(self.genotype(["mb_k3_e3"] * len(self.labels)), C, num_classes, in_channels, self, rngs=rngs)

    @staticmethod
    def network(genotype: ProxylessGenotype, *, C: int, layers: int, num_classes: int, in_channels: int, rngs: nnx.Rngs,
                **options: Any) -> "ProxylessNet":
        """The derived network; ``C`` scales the genotype's widths by ``C / genotype.stem``."""
        return ProxylessNet(genotype, C, num_classes, in_channels, None, rngs=rngs)

    # ----- latency table --------------------------------------------------------------------
    def lut_keys(self, resolution: int = 224, num_classes: int = 1000) -> tuple[PositionKeys, list[LutKey]]:
        """The table keys of the paper-size network at ``resolution`` (:class:`KeyedSpace`).

        Returns:
          (label -> [one key per candidate] at its one position, fixed keys: stem ``Conv``,
          the first block, feature mix ``Conv_1`` and ``Logits``), in the ProxylessNAS format.
        """
        g = self.geometry
        hw = -(-resolution // 2)
        fixed = [LutKey("Conv", (resolution, resolution, 3), (hw, hw, g["stem"])),
                 lut_key(Block("first", g["stem"], g["first"], 1), "mb_k3_e1", hw)]
        keys = {}
        for b in self.blocks:
            keys[b.label] = [[lut_key(b, op, hw) for op in self.choice(b.label).candidates]]
            hw = -(-hw // b.stride)
        fixed += [LutKey("Conv_1", (hw, hw, g["widths"][-1]), (hw, hw, g["last"])), LutKey("Logits", (hw, hw, g["last"]), (num_classes,))]
        return keys, fixed

    def lut_module(self, key: LutKey, *, rngs: nnx.Rngs) -> nnx.Module:
        """The module a table key measures (``dnas lut build``): the stem ``Conv``, an
        ``expanded_conv`` block with its shortcut when ``idskip:1``, ``Conv_1`` or ``Logits``."""
        c_in, c_out = key.input_shape[-1], key.output_shape[-1]
        if key.op == "Conv":
            return ConvBNReLU6(c_in, c_out, 3, 2, rngs)
        if key.op == "Conv_1":
            return ConvBNReLU6(c_in, c_out, 1, 1, rngs)
        if key.op == "Logits":
            return _Head(c_in, c_out, rngs)
        if key.op == "expanded_conv":
            op = OPS[f"mb_k{key.kernel}_e{key.expand}"].builder(c_in, c_out, key.stride, True, rngs)
            return _KeyBlock(op, bool(dict(key.extra).get("idskip", 0)))
        raise DnasError(f"proxylessnas has no module for LUT op {key.op!r}")


class _Head(nnx.Module):
    """Global average pooling and the classifier (the table's ``Logits``)."""

    def __init__(self, c: int, num_classes: int, rngs: nnx.Rngs):
        self.fc = nnx.Linear(c, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(jnp.mean(x, axis=(1, 2)))


class ConvBNReLU6(nnx.Module):
    """Conv -> BN -> ReLU6 (the stem and the feature-mix layer)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, rngs: nnx.Rngs):
        self.conv, self.bn = Conv2d(c_in, c_out, k, stride, k // 2, rngs=rngs), batch_norm(c_out, True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu6(self.bn(self.conv(x)))


class MBBlock(nnx.Module):
    """``op(x) (+ x)``: one block, its op mixed (supernet) or chosen (derived)."""

    def __init__(self, op: nnx.Module, label: str | None, shortcut: bool):
        self.op, self.label, self.shortcut = op, label, shortcut

    def __call__(self, x: jax.Array, arch: ArchInput | None = None) -> jax.Array:
        y = self.op(x) if self.label is None else self.op(x, arch[self.label])
        return x + y if self.shortcut else y


class _KeyBlock(MBBlock):
    """A block as one table entry measures it (chosen op, shortcut per ``idskip``)."""

    def __init__(self, op: nnx.Module, shortcut: bool):
        super().__init__(op, None, shortcut)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x)


class ProxylessNet(nnx.Module):
    """Stem, the fixed MBConv1 block, the searched blocks, feature mix, pool, classifier.

    Args:
      genotype: ops and geometry (the supernet passes a placeholder genotype for the geometry).
      C: stem width of this instance; every width scales by ``C / genotype.stem``.
      num_classes, in_channels: data shape.
      space: the space (supernet: every block a :class:`MixedOp` over its label's
        candidates, α owned here) or None (derived: each block its chosen op, zero blocks dropped).
    """

    def __init__(self, genotype: ProxylessGenotype, C: int, num_classes: int, in_channels: int, space: ProxylessSpace | None,
                 *, rngs: nnx.Rngs):
        scale = C / genotype.stem
        w = (lambda c: c) if C == genotype.stem else (lambda c: make_divisible(c * scale))
        if space is not None:
            self.alpha = init_alpha(space, rngs.params())
        self.stem = ConvBNReLU6(in_channels, w(genotype.stem), 3, 2, rngs)
        blocks = [MBBlock(OPS["mb_k3_e1"].builder(w(genotype.stem), w(genotype.first), 1, True, rngs), None, False)]
        geo_blocks = genotype.blocks(1.0 if C == genotype.stem else scale)
        # Runs of same-shaped searched blocks (the 2nd-4th of a stage) are built as one stacked
        # draw (mixed_layers) and run as one scan each (scan_layers); the fixed first block
        # and a derived network run block by block.
        groups = layer_groups([(b.c_in, b.c_out, b.stride, space.choice(b.label).candidates) for b in geo_blocks]) if space else []
        for a, e in groups:
            g = geo_blocks[a]
            mixed = mixed_layers([b.label for b in geo_blocks[a:e]], space.choice(g.label).candidates, g.c_in, g.c_out, g.stride,
                                 affine=True, pool_bn=False, rngs=rngs)
            blocks += [MBBlock(m, b.label, b.shortcut) for m, b in zip(mixed, geo_blocks[a:e])]
        for b, op in zip(geo_blocks, genotype.ops):
            if space is None and op != ZERO:
                blocks.append(MBBlock(OPS[op].builder(b.c_in, b.c_out, b.stride, True, rngs), None, b.shortcut))
        self.blocks = nnx.List(blocks)
        self.groups = tuple((a + 1, e + 1) for a, e in groups)  # indices in self.blocks (0: the fixed block)
        c_last = geo_blocks[-1].c_out if geo_blocks else w(genotype.first)
        self.mix = ConvBNReLU6(c_last, w(genotype.last), 1, 1, rngs)
        self.head = _Head(w(genotype.last), num_classes, rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None,
                 drop_prob: float | jax.Array = 0.0) -> NetOutput:
        """``f32[B, H, W, in_channels] -> NetOutput(logits f32[B, num_classes])``; ``arch``: label ->
        mixing weights, index or sampled paths (supernet only)."""
        h = self.stem(x)
        if not self.groups:
            for blk in self.blocks:
                h = blk(h, arch)
            return NetOutput(self.head(self.mix(h)))
        h = self.blocks[0](h, arch)
        for a, b in self.groups:
            blks = [self.blocks[i] for i in range(a, b)]
            h = scan_layers([k.op for k in blks], [k.label for k in blks], h, arch, residual=blks[0].shortcut)
        return NetOutput(self.head(self.mix(h)))


def published(name: str, root: str | None = None) -> ProxylessGenotype:
    """The published ``proxyless_{mobile,gpu,cpu}`` network from its config JSON in ``root``
    (default: the shared data folder's ``luts``)."""
    folder = root or shared_data("luts")
    if not folder:
        raise DnasError("no folder with proxyless_*.config.json; pass root= (the files of mit-han-lab/proxylessnas)")
    return ProxylessGenotype.from_net_config(Path(folder) / f"proxyless_{name}.config.json")
