"""A layer-wise chain space, written as a user would add one: space, supernet, derived
network and genotype kind in this one file (registered on import), nothing edited elsewhere.

Each of ``layers`` positions picks one op (FBNet / ProxylessNAS style, Wu et al. 2019;
Cai et al. 2019, without their per-stage widths): a stem conv, the chosen ops (the middle
position downsamples by 2, twice the width), global pooling and a classifier. ``skip`` at
a stride-1 position removes the layer, so depth is searched too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.space.genotype import SCHEMA, register_genotype
from dnas.space.mixed import MixedOp, init_alpha
from dnas.space.ops import build_op, check_ops
from dnas.space.ops.layers import Conv2d, batch_norm
from dnas.space.base import Choice, SearchSpace, register_space
from dnas.core.types import ArchInput, NetOutput, PRNGKey

OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3")


@register_genotype("layerwise")
@dataclasses.dataclass(frozen=True)
class LayerwiseGenotype:
    """The chosen op of every position, in order."""

    ops: tuple[str, ...]
    space = "layerwise"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "LayerwiseGenotype":
        return cls(tuple(check_ops(obj["ops"], "the layerwise genotype")))

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "layerwise", "ops": list(self.ops)}

    def dot_graphs(self) -> dict[str, str]:
        """One chain: input -> op_0 -> ... -> output."""
        edges = "\n".join(f'  "{i}" -> "{i + 1}" [label="{op}"];' for i, op in enumerate(self.ops))
        return {"chain": f'digraph "chain" {{\n  rankdir=LR;\n{edges}\n}}\n'}

    def __str__(self) -> str:
        return "layerwise:" + ",".join(self.ops)


def _positions(layers: int) -> list[tuple[int, int]]:
    """(stride, width multiplier) per position: the middle one downsamples and doubles."""
    return [(2, 2) if i == layers // 2 else (1, 2 if i > layers // 2 else 1) for i in range(layers)]


@register_space("layerwise")
class LayerwiseSpace(SearchSpace):
    """``layers`` positions, each a choice over ``ops`` (label ``layer{i}/op``)."""

    def __init__(self, layers: int = 4, ops: Sequence[str] = OPS):
        self.layers, self.ops = int(layers), check_ops(ops, "the layerwise space")
        super().__init__([Choice(f"layer{i}/op", self.ops) for i in range(self.layers)])

    def derive(self, alpha: Mapping[str, jax.Array]) -> LayerwiseGenotype:
        """Argmax op per position."""
        return LayerwiseGenotype(tuple(self.ops[int(np.argmax(np.asarray(alpha[l])))] for l in self.labels))

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> "LayerwiseNet":
        return LayerwiseNet(C, num_classes, in_channels, [(l, self.ops) for l in self.labels], self, rngs=rngs)

    @staticmethod
    def network(genotype: LayerwiseGenotype, *, C: int, layers: int, num_classes: int, in_channels: int, rngs: nnx.Rngs, **options) -> "LayerwiseNet":
        return LayerwiseNet(C, num_classes, in_channels, [(None, (op,)) for op in genotype.ops], None, rngs=rngs)


class LayerwiseNet(nnx.Module):
    """Stem, one op per position (mixed where the position has a label), pool, linear."""

    def __init__(self, C: int, num_classes: int, in_channels: int, positions: list, space: LayerwiseSpace | None, *, rngs: nnx.Rngs):
        if space is not None:
            self.alpha = init_alpha(space, rngs.params())
        self.stem, self.bn = Conv2d(in_channels, C, 3, 1, 1, rngs=rngs), batch_norm(C, True, rngs=rngs)
        self.labels = tuple(label for label, _ in positions)
        layers, c = [], C
        for (label, ops), (stride, mult) in zip(positions, _positions(len(positions))):
            c_out = C * mult
            if label is None:
                layers.append(build_op(ops[0], c, c_out, stride, affine=True, rngs=rngs))
            else:
                layers.append(MixedOp(label, ops, c, c_out, stride, affine=False, pool_bn=True, rngs=rngs))
            c = c_out
        self.layers = nnx.List(layers)
        self.head = nnx.Linear(c, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        h = self.bn(self.stem(x))
        for label, layer in zip(self.labels, self.layers):
            h = layer(h) if label is None else layer(h, arch[label])
        return NetOutput(self.head(jnp.mean(jax.nn.relu(h), axis=(1, 2))))
