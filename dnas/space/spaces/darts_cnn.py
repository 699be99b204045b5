"""The DARTS CNN search space and search network (Liu et al., ICLR 2019).

A cell has two inputs (the outputs of the previous two cells), ``nodes`` intermediate
nodes and one edge from every earlier state to every node (14 edges for 4 nodes); each
edge is a labelled choice over ``ops``. Reduction cells sit at 1/3 and 2/3 depth.

- Micro search (``shared=True``, the paper): labels ``normal/edge_{node}_{input}`` and
  ``reduce/edge_{node}_{input}``, so α is shared by all cells of a type; the space has
  k^(2·14) configurations.
- Macro search (``shared=False``): labels ``cell{i}/edge_{node}_{input}``, one α per cell;
  k^(14·layers) configurations.

Nodes are numbered as states: inputs 0 and 1, intermediate nodes 2..nodes+1.
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
from dnas.space.genotype import CellGenotype, DartsGenotype, MacroGenotype
from dnas.space.mixed import EdgeBatch, EdgeScan, MixedOp, init_alpha
from dnas.space.ops import FactorizedReduce, ReLUConvBN, check_ops
from dnas.space.ops.layers import Conv2d, batch_norm
from dnas.space.relax import DERIVE_WEIGHTS, derive_weights
from dnas.space.base import Choice, SearchSpace, register_space
from dnas.space.nets.darts import DartsCIFARNetwork, DartsImageNetNetwork, aux_head_problem, reduction_layers
from dnas.core.types import ArchInput, ArchVec, NetOutput, PRNGKey, Sampled

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
CELL_IMPLS = ("batch", "scan", "unrolled")


def beta_label(prefix: str, node: int) -> str:
    """The label of PC-DARTS' edge-normalisation parameters of ``node`` (``f32[node]``)."""
    return f"{prefix}/beta_node_{node}"



@register_space("darts")
class DartsSpace(SearchSpace):
    """The DARTS cell space.

    Args:
      layers: cells in the network (only matters for macro labels and reduction positions).
      nodes: intermediate nodes per cell (4 in DARTS).
      ops: candidate op names on every edge.
      shared: micro (True, α per cell type) or macro (False, α per cell).
      keep: inputs kept per node when deriving a discrete cell (2 in DARTS).
      cell_impl: how the supernet runs a cell's edges: ``"scan"``, ``"batch"`` or
        ``"unrolled"`` (:class:`DartsSearchCell`; same function, different speed).
      remat: with ``cell_impl="scan"``, recompute edge forwards in the backward pass.
      partial_channels: PC-DARTS' ``K`` (Xu et al., ICLR 2020): 1/K of the channels go
        through each mixed op, the rest bypass it, then a channel shuffle
        (:class:`~dnas.space.mixed.MixedOp`). 1 = DARTS.
      edge_norm: PC-DARTS' edge normalisation: architecture parameters β per node
        (labels ``<prefix>/beta_node_<n>``, ``f32[n]``, owned by the supernet next to α
        but not choices of the space); the relaxed β (PC-DARTS: ``softmax``) scales each
        input edge of the node, and derivation ranks edges by ``β_i · max_op w_i``.
      derive_weights: what derivation reads from α (:data:`dnas.space.relax.DERIVE_WEIGHTS`):
        ``"softmax"`` (DARTS), ``"dirichlet_mean"`` (DrNAS), ``"sigmoid"`` (Fair DARTS).
    """

    def __init__(
        self, layers: int = 8, nodes: int = 4, ops: Sequence[str] = DARTS_OPS, shared: bool = True, keep: int = 2,
        cell_impl: str = "scan", remat: bool = True, partial_channels: int = 1, edge_norm: bool = False,
        derive_weights: str = "softmax",
    ):
        if cell_impl not in CELL_IMPLS:
            raise DnasError(f"unknown cell_impl {cell_impl!r}; choose one of {CELL_IMPLS}")
        if int(partial_channels) < 1:
            raise DnasError(f"partial_channels must be >= 1, got {partial_channels}")
        if derive_weights not in DERIVE_WEIGHTS:
            raise DnasError(f"unknown derive_weights {derive_weights!r}; choose one of {', '.join(DERIVE_WEIGHTS)}")
        self.partial_channels, self.edge_norm, self.derive_weights = int(partial_channels), bool(edge_norm), derive_weights
        if not 1 <= keep <= 2 and nodes >= 1:
            # Node 2 (the first) has two possible inputs, so at most two can be kept.
            raise DnasError(f"keep must be 1 or 2 (the first node has two inputs), got {keep}")
        self.layers, self.steps, self.ops, self.shared, self.keep = layers, nodes, check_ops(ops, "the DARTS space"), shared, keep
        self.cell_impl, self.remat = cell_impl, remat
        steps = nodes
        self.reductions = reduction_layers(layers)
        self.none_index = self.ops.index("none") if "none" in self.ops else None
        choices, groups = [], []
        for prefix in self.prefixes():
            for node in range(2, steps + 2):
                labels = [f"{prefix}/edge_{node}_{i}" for i in range(node)]
                choices += [Choice(l, self.ops) for l in labels]
                groups.append(labels)
        super().__init__(choices, groups)

    def prefixes(self) -> list[str]:
        """Label prefixes: ``["normal", "reduce"]`` (micro) or ``["cell0", ...]`` (macro)."""
        if self.shared:
            return ["normal", "reduce"] if self.reductions else ["normal"]
        return [f"cell{i}" for i in range(self.layers)]

    def beta_labels(self) -> dict[str, int]:
        """PC-DARTS' edge-normalisation parameters, label -> size (``{}`` without
        ``edge_norm``): one ``f32[n]`` per node ``n`` of every prefix."""
        if not self.edge_norm:
            return {}
        return {beta_label(p, n): n for p in self.prefixes() for n in range(2, self.steps + 2)}

    def cell_prefix(self, index: int) -> str:
        """The label prefix used by cell ``index``."""
        if self.shared:
            return "reduce" if index in self.reductions else "normal"
        return f"cell{index}"

    # A discrete DARTS architecture keeps ``keep`` non-none inputs per node.
    def _valid_per_node(self) -> list[int]:
        non_none = len(self.ops) - (self.none_index is not None)
        return [math.comb(node, self.keep) * non_none**self.keep for node in range(2, self.steps + 2)]

    def size(self) -> int:
        """Valid discrete cells (``keep`` inputs per node): ≈1e18 for the paper's micro space."""
        if self.none_index is None:
            return self.num_configurations()
        return math.prod(self._valid_per_node()) ** len(self.prefixes())

    def is_valid(self, vec: ArchVec | np.ndarray) -> bool:
        if not super().is_valid(vec):
            return False
        if self.none_index is None:
            return True
        vec = np.asarray(vec)
        return all(int(np.sum(vec[list(g)] != self.none_index)) == self.keep for g in self.groups)

    def sample(self, key: PRNGKey) -> ArchVec:
        """Per node: ``keep`` distinct inputs with uniformly drawn non-none ops; others none."""
        if self.none_index is None:
            return super().sample(key)
        non_none = jnp.asarray([i for i in range(len(self.ops)) if i != self.none_index], jnp.int32)
        out = jnp.full((len(self.labels),), self.none_index, jnp.int32)
        for gi, group in enumerate(self.groups):
            k_in, k_op = jax.random.split(jax.random.fold_in(key, gi))
            picked = jax.random.choice(k_in, len(group), (self.keep,), replace=False)
            ops = non_none[jax.random.randint(k_op, (self.keep,), 0, non_none.shape[0])]
            out = out.at[jnp.asarray(group, jnp.int32)[picked]].set(ops)
        return out

    # ----- derivation --------------------------------------------------------------------
    def _derive_cell(self, prefix: str, weights: Mapping[str, np.ndarray], alpha: Mapping[str, jax.Array]) -> CellGenotype:
        edges = []
        for node in range(2, self.steps + 2):
            w = np.stack([np.asarray(weights[f"{prefix}/edge_{node}_{i}"]) for i in range(node)])
            if self.edge_norm:
                # PC-DARTS' _parse: every op weight of edge i times softmax(β_node)[i], so an
                # edge's strength is β_i · max_op w_i (the op choice is unchanged).
                beta = np.asarray(jax.nn.softmax(jnp.asarray(alpha[beta_label(prefix, node)], jnp.float32)))
                w = w * beta[:, None]
            masked = w.copy()
            if self.none_index is not None:
                masked[:, self.none_index] = -np.inf
            strength = masked.max(axis=1)
            # Stable sort keeps the lower input first on ties, as DARTS' sorted() does.
            best = sorted(range(node), key=lambda i: -strength[i])[: self.keep]
            edges += [(self.ops[int(np.argmax(masked[i]))], i) for i in best]
        return CellGenotype(tuple(edges), tuple(range(2, self.steps + 2)), self.keep)

    def derive(self, alpha: Mapping[str, jax.Array]) -> DartsGenotype | MacroGenotype:
        """The DARTS rule: per node keep the ``keep`` inputs with the strongest non-none op,
        each with its argmax non-none op, on the space's ``derive_weights`` of α
        (``softmax(α)`` for DARTS; DrNAS' Dirichlet mean; Fair DARTS' ``σ(α)``), with
        edges scaled by ``softmax(β)`` under ``edge_norm`` (PC-DARTS).

        Fair DARTS' own parser (``threshold_sparse``) also drops a kept edge whose best
        ``σ`` is below 0.85; a DARTS cell here has exactly ``keep`` inputs per node, so the
        edge is kept (the Fair DARTS experiment config says so).

        Args:
          alpha: label -> logits ``f32[len(ops)]`` for every label of the space (and the
            β labels of :meth:`beta_labels` with ``edge_norm``).
        """
        missing = [l for l in [*self.labels, *self.beta_labels()] if l not in alpha]
        if missing:
            raise DnasError(f"α lacks labels {missing[:3]}...; derive needs α for the whole space")
        weights = {l: np.asarray(derive_weights(self.derive_weights, alpha[l])) for l in self.labels}
        if self.shared:
            normal = self._derive_cell("normal", weights, alpha)
            reduce = self._derive_cell("reduce", weights, alpha) if self.reductions else normal
            return DartsGenotype(normal, reduce)
        return MacroGenotype(tuple(self._derive_cell(p, weights, alpha) for p in self.prefixes()))

    def genotype_to_vec(self, genotype: DartsGenotype | MacroGenotype) -> np.ndarray:
        """A genotype as a discrete vector (absent edges = ``none``), for one-shot evaluation."""
        if self.none_index is None:
            raise DnasError("genotype_to_vec needs 'none' among the ops to express absent edges")
        arch = {l: self.none_index for l in self.labels}
        done: set[str] = set()
        for idx in range(self.layers):
            prefix = self.cell_prefix(idx)
            if prefix in done:  # micro: every cell of a type is the same decision
                continue
            done.add(prefix)
            cell = genotype.cell(idx, idx in self.reductions)
            if cell.steps != self.steps:
                raise DnasError(f"genotype cell has {cell.steps} nodes, the space {self.steps}")
            seen: set[str] = set()
            for e, (op, inp) in enumerate(cell.edges):
                if op not in self.ops:
                    raise DnasError(f"genotype op {op!r} is not a candidate of this space ({self.ops})")
                label = f"{prefix}/edge_{2 + e // cell.per_node}_{inp}"
                if label in seen:
                    # One mixed op per (node, input) pair: two ops on one pair (ENAS, NASNet,
                    # AmoebaNet cells) cannot be expressed, and dropping one would be silent.
                    raise DnasError(
                        f"genotype cell {idx} has two ops from state {inp} into node {2 + e // cell.per_node}; "
                        "the DARTS space has one op per (node, input) edge, so this cell is not in it"
                    )
                seen.add(label)
                arch[label] = self.ops.index(op)
        return self.encode(arch)

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> "DartsSearchNetwork":
        """The DARTS search network over this space (``cell_impl``, ``remat`` from the space)."""
        return DartsSearchNetwork(self, C=C, num_classes=num_classes, in_channels=in_channels, impl=self.cell_impl, remat=self.remat, rngs=rngs)

    @staticmethod
    def network(
        genotype: DartsGenotype | MacroGenotype, *, C: int, layers: int, num_classes: int, in_channels: int, rngs: nnx.Rngs,
        dataset: str = "cifar10", auxiliary: bool = True, **options,
    ) -> nnx.Module:
        """DARTS' evaluation network: ``NetworkImageNet`` for ``dataset="imagenet"``, else
        ``NetworkCIFAR`` (auxiliary head when ``auxiliary``)."""
        cls = DartsImageNetNetwork if dataset == "imagenet" else DartsCIFARNetwork
        return cls(genotype, C, layers, num_classes, auxiliary, in_channels, rngs=rngs)

    @staticmethod
    def check_network(
        genotype: DartsGenotype | MacroGenotype, *, image_shape: tuple[int, int, int], C: int, layers: int,
        dataset: str = "cifar10", auxiliary: bool = True, **options: Any,
    ) -> None:
        """Refuses an auxiliary head whose map would be under 2x2 (the cells themselves run
        on any size: their stride-2 steps stop at 1x1)."""
        problem = aux_head_problem(image_shape[:2], layers, dataset) if auxiliary else None
        if problem:
            raise DnasError(f"{problem}; set --config.auxiliary=false")


class DartsSearchCell(nnx.Module):
    """One DARTS search cell: preprocess both inputs, a mixed op per edge, concat nodes.

    ``impl`` chooses how the 14 edges (4 nodes) execute; all compute the same function
    (tested) and differ only in speed, memory and compile time:

    - ``"scan"`` (default): same-shaped edges run as one ``lax.scan``
      (:class:`~dnas.space.mixed.EdgeScan`): the smallest program, and on CPU the fastest step
      measured so far (``benchmarks/RESULTS.md``).
    - ``"batch"``: the edges leaving each node run as one :class:`~dnas.space.mixed.EdgeBatch`
      (a ``vmap`` over stacked mixed ops reading the same input): ``steps + 1`` groups
      per cell of 4, 4, 3, 2, 1 edges. Bigger kernels; on XLA CPU the per-edge second
      convolutions become grouped convolutions, which makes it slower there.
    - ``"unrolled"``: one :class:`~dnas.space.mixed.MixedOp` per edge, the paper's literal
      formulation (largest program).
    """

    def __init__(
        self,
        space: DartsSpace,
        prefix: str,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        *,
        impl: str = "scan",
        remat: bool = True,
        rngs: nnx.Rngs,
    ):
        if impl not in CELL_IMPLS:
            raise DnasError(f"unknown cell impl {impl!r}; choose one of {CELL_IMPLS}")
        self.pre0 = (
            FactorizedReduce(c_pp, c, affine=False, rngs=rngs) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False, rngs=rngs)
        )
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False, rngs=rngs)
        self.steps, self.reduction, self.impl = space.steps, reduction, impl
        edges = [(n, i) for n in range(2, space.steps + 2) for i in range(n)]  # destination order
        self.edges_order = tuple(edges)
        self.labels = tuple(f"{prefix}/edge_{n}_{i}" for n, i in edges)
        self.beta = tuple(beta_label(prefix, n) for n in range(2, space.steps + 2)) if space.edge_norm else ()
        pc = space.partial_channels
        if impl == "batch":
            # Group by source: source i feeds nodes max(2, i+1) .. steps+1.
            self.group_dsts = tuple(tuple(range(max(2, i + 1), space.steps + 2)) for i in range(space.steps + 1))
            self.groups = nnx.List(
                [
                    EdgeBatch([f"{prefix}/edge_{n}_{i}" for n in dsts], space.ops, c, 2 if reduction and i < 2 else 1, partial_channels=pc, rngs=rngs)
                    for i, dsts in enumerate(self.group_dsts)
                ]
            )
        elif impl == "unrolled":
            self.edges = nnx.List(
                [MixedOp(l, space.ops, c, c, 2 if reduction and i < 2 else 1, partial_channels=pc, rngs=rngs) for l, (n, i) in zip(self.labels, edges)]
            )
        elif not reduction:
            # Inputs and nodes share one buffer: slots 0,1 = inputs, 2.. = nodes.
            self.groups = nnx.List([EdgeScan(self.labels, [i for _, i in edges], [n for n, _ in edges], space.ops, c, 1, remat=remat, partial_channels=pc, rngs=rngs)])
        else:
            a = [(l, n, i) for l, (n, i) in zip(self.labels, edges) if i < 2]
            b = [(l, n, i) for l, (n, i) in zip(self.labels, edges) if i >= 2]
            scans = [EdgeScan([l for l, _, _ in a], [i for _, _, i in a], [n - 2 for _, n, _ in a], space.ops, c, 2, remat=remat, partial_channels=pc, rngs=rngs)]
            if b:  # a one-node cell has no edges between intermediate nodes
                scans.append(EdgeScan([l for l, _, _ in b], [i - 2 for _, _, i in b], [n - 2 for _, n, _ in b], space.ops, c, 1, remat=remat, partial_channels=pc, rngs=rngs))
            self.groups = nnx.List(scans)

    def _edge_scales(self, arch: ArchInput) -> dict[tuple[int, int], jax.Array] | None:
        """Edge (node, input) -> its β weight, or None (no edge normalisation, or a
        discrete architecture: derived cells have no β)."""
        if not self.beta or any(b not in arch for b in self.beta):
            return None
        first = arch[self.labels[0]]
        if not isinstance(first, Sampled) and jnp.issubdtype(jnp.asarray(first).dtype, jnp.integer):
            return None
        out = {}
        for n, label in zip(range(2, self.steps + 2), self.beta):
            w = arch[label]
            w = w.weight if isinstance(w, Sampled) else jnp.asarray(w)
            if w.shape != (n,):
                raise DnasError(f"edge weights {label!r} have shape {w.shape}, expected ({n},)")
            for i in range(n):
                out[(n, i)] = w[i]
        return out

    def __call__(self, s0: jax.Array, s1: jax.Array, arch: ArchInput) -> jax.Array:
        h0, h1 = self.pre0(s0), self.pre1(s1)
        scales = self._edge_scales(arch)
        scale = (lambda n, i, y: y) if scales is None else (lambda n, i, y: scales[(n, i)].astype(y.dtype) * y)
        if self.impl == "batch":
            states: list[jax.Array] = [h0, h1]
            nodes: list[jax.Array | None] = [None] * self.steps
            for i, (group, dsts) in enumerate(zip(self.groups, self.group_dsts)):
                if i >= 2:
                    states.append(nodes[i - 2])  # type: ignore[arg-type]
                ys = group(states[i], arch)
                for k, n in enumerate(dsts):
                    y = scale(n, i, ys[k])
                    nodes[n - 2] = y if nodes[n - 2] is None else nodes[n - 2] + y
            return jnp.concatenate(nodes, axis=-1)  # type: ignore[arg-type]
        if self.impl == "unrolled":
            states, e = [h0, h1], 0
            for n in range(2, self.steps + 2):
                acc = None
                for i, h in enumerate(states):
                    y = scale(n, i, self.edges[e](h, arch[self.labels[e]]))
                    acc = y if acc is None else acc + y
                    e += 1
                states.append(acc)
            return jnp.concatenate(states[2:], axis=-1)
        per_edge = None if scales is None else jnp.stack([scales[ni] for ni in self.edges_order])
        if not self.reduction:
            buf = jnp.concatenate([jnp.stack([h0, h1]), jnp.zeros((self.steps,) + h0.shape, h0.dtype)])
            nodes = self.groups[0](buf, arch, edge_scale=per_edge)[2:]
        else:
            # The two scans hold the edges from the inputs (i < 2) and between nodes, in order.
            first = [k for k, (_, i) in enumerate(self.edges_order) if i < 2]
            rest = [k for k, (_, i) in enumerate(self.edges_order) if i >= 2]
            out_shape = (h0.shape[0], -(-h0.shape[1] // 2), -(-h0.shape[2] // 2), h0.shape[3])
            nodes = jnp.zeros((self.steps,) + out_shape, h0.dtype)
            nodes = self.groups[0](nodes, arch, source=jnp.stack([h0, h1]), edge_scale=None if per_edge is None else per_edge[jnp.asarray(first)])
            if len(self.groups) > 1:
                nodes = self.groups[1](nodes, arch, edge_scale=None if per_edge is None else per_edge[jnp.asarray(rest)])
        return jnp.concatenate(list(nodes), axis=-1)


class DartsSearchNetwork(nnx.Module):
    """The DARTS search network (``model_search.Network``), NHWC, α owned per label.

    Args:
      space: a :class:`DartsSpace` (fixes layers, nodes, ops and micro/macro labels).
      C: initial channels (16 in the paper).
      num_classes: classifier outputs.
      in_channels: image channels (3 for CIFAR, 1 for MNIST/digits).
      stem_multiplier: stem width = ``stem_multiplier * C``.
      impl: how a cell runs its edges, ``"batch"``, ``"scan"`` or ``"unrolled"`` (see
        :class:`DartsSearchCell`).
      remat: with ``impl="scan"``, recompute edge forwards in the backward pass (see
        :class:`~dnas.space.mixed.EdgeScan`; faster and half the memory on CPU).
      rngs: NNX RNG streams; ``rngs.params`` also draws the initial α (``1e-3 * N(0,1)``).

    Call ``net(x f32[B,H,W,in_channels], arch) -> NetOutput`` (logits ``f32[B, num_classes]``)
    where ``arch`` maps every label to mixing weights ``f32[k]``, an index ``int32[]`` or
    :class:`~dnas.core.types.Sampled` paths.
    """

    def __init__(
        self,
        space: DartsSpace,
        C: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        *,
        impl: str = "scan",
        remat: bool = True,
        rngs: nnx.Rngs,
    ):
        self.space = space
        self.alpha = init_alpha(space, rngs.params(), extra=space.beta_labels())
        c_curr = stem_multiplier * C
        self.stem_conv = Conv2d(in_channels, c_curr, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(c_curr, affine=True, rngs=rngs)
        c_pp, c_p, c_curr = c_curr, c_curr, C
        cells, reduction_prev = [], False
        for i in range(space.layers):
            reduction = i in space.reductions
            if reduction:
                c_curr *= 2
            cells.append(
                DartsSearchCell(space, space.cell_prefix(i), c_pp, c_p, c_curr, reduction, reduction_prev, impl=impl, remat=remat, rngs=rngs)
            )
            reduction_prev = reduction
            c_pp, c_p = c_p, space.steps * c_curr
        self.cells = nnx.List(cells)
        self.classifier = nnx.Linear(c_p, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, arch: ArchInput, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        if x.ndim != 4:
            raise DnasError(f"input must be NHWC f32[B, H, W, C], got shape {x.shape}")
        if arch is None:
            raise DnasError("the DARTS supernet needs an architecture input (label -> weights, index or sampled paths)")
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, arch)
        return NetOutput(self.classifier(jnp.mean(s1, axis=(1, 2))))
