"""The NAS-Bench-201 space and networks (Dong & Yang, ICLR 2020).

A cell has 4 nodes and 6 edges (node j sums ``op(node i)`` over i < j), each a choice over
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``: 5^6 = 15,625 cells.
The macro skeleton: 3x3 stem conv (C=16) + BN, N cells, a residual reduction block, N
cells at 2C, a reduction block, N cells at 4C, BN-ReLU, global pool, linear (N=5).

Micro search (``shared=True``, the benchmark's setting) labels ``cell/edge_{j}_{i}``; macro
search labels ``cell{k}/edge_{j}_{i}`` per searched cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.genotype import NB201_OPS, NB201Genotype, NB201MacroGenotype
from dnas.space.mixed import MixedOp, init_alpha
from dnas.space.ops import ReLUConvBN, build_op, check_ops
from dnas.space.ops.layers import Conv2d, avg_pool, batch_norm
from dnas.space.relax import DERIVE_WEIGHTS, derive_weights
from dnas.space.base import Choice, SearchSpace, register_space
from dnas.core.types import ArchInput, NetOutput, PRNGKey

NODES = 4
EDGES = tuple((j, i) for j in range(1, NODES) for i in range(j))


@register_space("nb201")
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space.

    Args:
      layers: cells per stage N (5 in the benchmark).
      ops: candidate ops (the benchmark's five by default).
      shared: one cell for the whole network (True) or one per cell (False).
      partial_channels: PC-DARTS' ``K`` on every edge (:class:`~dnas.space.mixed.MixedOp`); DrNAS
        searches NB201 with it (its ``--k``). 1 = every channel.
      derive_weights: what derivation reads from α (:data:`dnas.space.relax.DERIVE_WEIGHTS`);
        on NB201 every map is monotone, so the argmax per edge is the same for all, but the
        name is recorded with the run.
    """

    def __init__(
        self, layers: int = 5, ops: Sequence[str] = NB201_OPS, shared: bool = True, partial_channels: int = 1,
        derive_weights: str = "softmax",
    ):
        if int(partial_channels) < 1:
            raise DnasError(f"partial_channels must be >= 1, got {partial_channels}")
        if derive_weights not in DERIVE_WEIGHTS:
            raise DnasError(f"unknown derive_weights {derive_weights!r}; choose one of {', '.join(DERIVE_WEIGHTS)}")
        self.partial_channels, self.derive_weights = int(partial_channels), derive_weights
        self.N, self.ops, self.shared = int(layers), check_ops(ops, "the NB201 space"), shared
        super().__init__([Choice(f"{p}/edge_{j}_{i}", self.ops) for p in self.prefixes() for j, i in EDGES])

    def mutation_weights(self) -> np.ndarray:
        """The benchmark's mutation (``R_EA.py``'s ``mutate_arch_func``): a node uniformly,
        then one of its incoming edges uniformly (node j has j), then another op. As integer
        weights per edge, ``lcm(1..3) / j`` = 6, 3, 3, 2, 2, 2 (probabilities 1/3, 1/6, 1/6,
        1/9, 1/9, 1/9), not 1/6 each. With one cell per position (macro) every cell is
        equally likely first."""
        per_node = math.lcm(*range(1, NODES))
        return np.array([per_node // j for _ in self.prefixes() for j, _ in EDGES], np.int64)

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> "NB201SearchNetwork":
        """The NB201 supernet over this space."""
        return NB201SearchNetwork(self, C=C, num_classes=num_classes, in_channels=in_channels, rngs=rngs)

    @staticmethod
    def network(
        genotype: NB201Genotype | NB201MacroGenotype, *, C: int, layers: int, num_classes: int, in_channels: int, rngs: nnx.Rngs, **options
    ) -> "NB201Network":
        """The NB201 network of a cell (or one cell per position); ``options`` are unused."""
        return NB201Network(genotype, C=C, N=layers, num_classes=num_classes, in_channels=in_channels, rngs=rngs)

    def prefixes(self) -> list[str]:
        """``["cell"]`` (micro) or ``["cell0", ..., "cell{3N-1}"]`` (macro)."""
        return ["cell"] if self.shared else [f"cell{k}" for k in range(3 * self.N)]

    def derive(self, alpha: Mapping[str, jax.Array]) -> NB201Genotype | NB201MacroGenotype:
        """Argmax per edge of the space's ``derive_weights`` of α (``none`` included, as the
        benchmark's DARTS baseline does)."""
        cells = []
        for p in self.prefixes():
            nodes = []
            for j in range(1, NODES):
                w = [np.asarray(derive_weights(self.derive_weights, alpha[f"{p}/edge_{j}_{i}"])) for i in range(j)]
                nodes.append(tuple((self.ops[int(np.argmax(w[i]))], i) for i in range(j)))
            cells.append(NB201Genotype(tuple(nodes)))
        return cells[0] if self.shared else NB201MacroGenotype(tuple(cells))

    def genotype_to_vec(self, genotype: NB201Genotype) -> np.ndarray:
        """An NB201 genotype as the space's vector (micro space only)."""
        if not self.shared:
            raise DnasError("genotype_to_vec takes one cell; use a micro (shared) NB201 space")
        return self.encode({f"cell/edge_{j}_{i}": op for j, node in enumerate(genotype.nodes, start=1) for op, i in node})

    def vec_to_genotype(self, vec: Any) -> NB201Genotype:
        """The cell of vector ``vec`` (``int[6]``, micro space only)."""
        if not self.shared:
            raise DnasError("vec_to_genotype reads one cell; use a micro (shared) NB201 space")
        v = np.asarray(vec)
        return NB201Genotype(tuple(tuple((self.ops[int(v[self.index(f"cell/edge_{j}_{i}")])], i) for i in range(j)) for j in range(1, NODES)))

    def arch_str(self, vec: Any) -> str:
        """The benchmark's ``arch_str`` of vector ``vec`` (the codec's one direction)."""
        return self.vec_to_genotype(vec).arch_str()

    def arch_str_to_vec(self, arch_str: str) -> np.ndarray:
        """The vector of a benchmark ``arch_str`` (validated by :meth:`NB201Genotype.from_arch_str`)."""
        return self.genotype_to_vec(NB201Genotype.from_arch_str(arch_str, ops=self.ops))


class ResNetBasicBlock(nnx.Module):
    """NB201's reduction block: ReLUConvBN(3x3, s2) -> ReLUConvBN(3x3) + (avgpool2 -> 1x1 conv)."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=True, rngs=rngs)
        self.b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True, rngs=rngs)
        self.down = Conv2d(c_in, c_out, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.b(self.a(x)) + self.down(avg_pool(x, 2, 2, 0))


class _NB201Skeleton(nnx.Module):
    """Stem, 3 stages of cells with reduction blocks, BN-ReLU, pool, classifier."""

    def _build(self, C: int, N: int, num_classes: int, in_channels: int, make_cell, rngs: nnx.Rngs) -> None:
        self.stem_conv = Conv2d(in_channels, C, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(C, affine=True, rngs=rngs)
        layers, c_prev, k = [], C, 0
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResNetBasicBlock(c_prev, c, rngs=rngs))
            for _ in range(N):
                layers.append(make_cell(k, c))
                k += 1
            c_prev = c
        self.layers = nnx.List(layers)
        self.last_bn = batch_norm(c_prev, affine=True, rngs=rngs)
        self.classifier = nnx.Linear(c_prev, num_classes, rngs=rngs)

    def _head(self, x: jax.Array) -> jax.Array:
        return self.classifier(jnp.mean(jax.nn.relu(self.last_bn(x)), axis=(1, 2)))


class NB201SearchCell(nnx.Module):
    """A cell whose 6 edges are MixedOps (affine-free BN, no BN after pools)."""

    def __init__(self, space: NB201Space, prefix: str, c: int, *, rngs: nnx.Rngs):
        self.labels = tuple(f"{prefix}/edge_{j}_{i}" for j, i in EDGES)
        self.edges = nnx.List(
            [MixedOp(l, space.ops, c, c, 1, pool_bn=False, partial_channels=space.partial_channels, rngs=rngs) for l in self.labels]
        )

    def __call__(self, x: jax.Array, arch: ArchInput) -> jax.Array:
        nodes, e = [x], 0
        for j in range(1, NODES):
            acc = None
            for i in range(j):
                y = self.edges[e](nodes[i], arch[self.labels[e]])
                acc = y if acc is None else acc + y
                e += 1
            nodes.append(acc)
        return nodes[-1]


class NB201SearchNetwork(_NB201Skeleton):
    """The NB201 supernet (AutoDL ``TinyNetworkDarts``), α owned per label.

    Call ``net(x f32[B,H,W,C_in], arch) -> NetOutput``; ``arch`` maps labels to mixing
    weights, indices or sampled paths.
    """

    def __init__(self, space: NB201Space, C: int = 16, num_classes: int = 10, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.space = space
        self.alpha = init_alpha(space, rngs.params())
        self._build(
            C, space.N, num_classes, in_channels, lambda k, c: NB201SearchCell(space, space.prefixes()[0 if space.shared else k], c, rngs=rngs), rngs
        )

    def __call__(self, x: jax.Array, arch: ArchInput, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        if arch is None:
            raise DnasError("the NB201 supernet needs an architecture input (label -> weights, index or sampled paths)")
        h = self.stem_bn(self.stem_conv(x))
        for layer in self.layers:
            h = layer(h, arch) if isinstance(layer, NB201SearchCell) else layer(h)
        return NetOutput(self._head(h))


class NB201InferCell(nnx.Module):
    """A fixed NB201 cell (affine BN)."""

    def __init__(self, genotype: NB201Genotype, c: int, *, rngs: nnx.Rngs):
        self.wiring = tuple(tuple(i for _, i in node) for node in genotype.nodes)
        self.ops = nnx.List([build_op(op, c, c, 1, affine=True, rngs=rngs) for node in genotype.nodes for op, _ in node])

    def __call__(self, x: jax.Array) -> jax.Array:
        nodes, e = [x], 0
        for inputs in self.wiring:
            acc = None
            for i in inputs:
                y = self.ops[e](nodes[i])
                acc = y if acc is None else acc + y
                e += 1
            nodes.append(acc)
        return nodes[-1]


class NB201Network(_NB201Skeleton):
    """The NB201 network for a fixed cell (AutoDL ``TinyNetwork``): ``net(x) -> NetOutput``.

    A :class:`NB201MacroGenotype` gives each cell position its own cell (``3N`` cells).
    """

    def __init__(
        self, genotype: NB201Genotype | NB201MacroGenotype, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3, *, rngs: nnx.Rngs
    ):
        if isinstance(genotype, NB201MacroGenotype):
            if len(genotype.cells) != 3 * N:
                raise DnasError(f"the NB201 macro genotype has {len(genotype.cells)} cells; a network with N={N} needs {3 * N}")
            cell_of = lambda k: genotype.cells[k]  # noqa: E731
        elif isinstance(genotype, NB201Genotype):
            cell_of = lambda k: genotype  # noqa: E731
        else:
            raise DnasError(f"an NB201 network needs an NB201 genotype, got {type(genotype).__name__}")
        self._build(C, N, num_classes, in_channels, lambda k, c: NB201InferCell(cell_of(k), c, rngs=rngs), rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        if arch is not None:
            raise DnasError("a derived NB201 network takes no architecture input; its genotype is fixed")
        h = self.stem_bn(self.stem_conv(x))
        for layer in self.layers:
            h = layer(h)
        return NetOutput(self._head(h))
