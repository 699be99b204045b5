"""DARTS evaluation networks built from a genotype (Liu et al., ICLR 2019, ``model.py``).

- CIFAR: 3x3 stem (3C), ``layers`` cells (reductions at 1/3, 2/3), auxiliary head after
  cell ``2*layers//3``, drop-path on non-identity edges, global pool, linear. Paper: C=36,
  20 cells (DARTS_V2: 3.3M params).
- ImageNet (mobile setting): three-conv stem taking 224x224 to 28x28, C=48, 14 cells,
  7x7 pool (DARTS_V2: 4.7M params, 574M multiply-adds).

Call ``net(x, *, key=None, drop_prob=0.0) -> NetOutput(logits, aux_logits | None)``
(:class:`dnas.core.types.NetOutput`, the convention of every dnas network). ``drop_prob``
may be a traced scalar (a schedule does not recompile); drop-path needs ``key``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.genotype import CellGenotype, DartsGenotype, MacroGenotype
from dnas.space.ops import FactorizedReduce, Identity, ReLUConvBN, build_op
from dnas.space.ops.layers import Conv2d, avg_pool, batch_norm
from dnas.core.types import ArchInput, NetOutput, PRNGKey


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Indices of reduction cells: ``layers // 3`` and ``2 * layers // 3`` (DARTS' rule, also
    for tiny test networks: 1 layer -> cell 0 reduces, 2 layers -> both reduce)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def drop_path(x: jax.Array, drop_prob: jax.Array, key: PRNGKey) -> jax.Array:
    """Zeroes whole examples with probability ``drop_prob``, rescaling the rest (DARTS)."""
    keep = 1.0 - drop_prob
    mask = jax.random.bernoulli(key, keep, (x.shape[0], 1, 1, 1)).astype(x.dtype)
    return x * mask / keep


class EvalCell(nnx.Module):
    """A fixed cell: ``per_node`` (op, input) edges per node summed (two in DARTS), chosen
    states concatenated."""

    def __init__(self, cell: CellGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, *, rngs: nnx.Rngs):
        self.pre0 = FactorizedReduce(c_pp, c, affine=True, rngs=rngs) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=True, rngs=rngs)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=True, rngs=rngs)
        self.inputs = tuple(i for _, i in cell.edges)
        self.per_node = cell.per_node
        self.concat = cell.concat
        self.ops = nnx.List(
            [build_op(op, c, c, 2 if reduction and i < 2 else 1, affine=True, rngs=rngs) for op, i in cell.edges]
        )
        self.droppable = tuple(not isinstance(op, Identity) for op in self.ops)
        self.multiplier = len(cell.concat)

    def __call__(self, s0: jax.Array, s1: jax.Array, drop_prob: jax.Array, key: PRNGKey | None) -> jax.Array:
        states = [self.pre0(s0), self.pre1(s1)]
        for n in range(len(self.inputs) // self.per_node):
            acc = None
            for e in range(n * self.per_node, (n + 1) * self.per_node):
                h = self.ops[e](states[self.inputs[e]])
                if key is not None and self.droppable[e]:
                    h = drop_path(h, drop_prob, jax.random.fold_in(key, e))
                acc = h if acc is None else acc + h
            states.append(acc)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


AUX_MIN_SIDE = 2
"""The smallest map side the auxiliary head takes: its last conv is 2x2 without padding."""


def aux_pool(side: int) -> tuple[int, int]:
    """Window and stride of the auxiliary head's average pool on a map of ``side`` pixels:
    the pool leaves 2x2, which the head's 2x2 conv takes to 1x1.

    DARTS (``model.py``) hard-codes 5x5 stride 3 for ``AuxiliaryHeadCIFAR`` ("assuming input
    size 8x8": CIFAR's 32x32 after two reductions) and 5x5 stride 2 for
    ``AuxiliaryHeadImageNet`` (its 7x7 map). Stride ``max(side // 2 - 1, 1)`` and window
    ``side - stride`` give exactly those two and 2 outputs on every side >= 2 (identity on
    2x2), so 8x8 digits (a 2x2 map) and 28x28 MNIST (7x7) get the same head design.
    """
    if side < AUX_MIN_SIDE:
        raise DnasError(f"DARTS' auxiliary head needs a map of at least {AUX_MIN_SIDE}x{AUX_MIN_SIDE}, got {side}x{side}")
    stride = max(side // 2 - 1, 1)
    return side - stride, stride


def aux_head_side(image_hw: tuple[int, int], layers: int, dataset: str = "cifar10") -> tuple[int, int]:
    """Height and width of the map the auxiliary head sees: the output of cell
    ``2 * layers // 3`` for ``image_hw`` inputs (after the ImageNet stem's three stride-2
    convs for ``dataset="imagenet"``), every stride-2 step giving ``ceil(n / 2)`` as the
    3x3/pad-1 convs and pools and :class:`FactorizedReduce` do."""
    aux_cell = 2 * layers // 3
    halvings = (3 if dataset == "imagenet" else 0) + sum(1 for r in reduction_layers(layers) if r <= aux_cell)
    h, w = image_hw
    for _ in range(halvings):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def aux_head_problem(image_hw: tuple[int, int], layers: int, dataset: str = "cifar10") -> str | None:
    """Why DARTS' auxiliary head cannot run on ``image_hw`` images with ``layers`` cells
    (one clause, for an error or a note), or None when it can."""
    h, w = aux_head_side(image_hw, layers, dataset)
    if min(h, w) >= AUX_MIN_SIDE:
        return None
    return (
        f"the auxiliary head after cell {2 * layers // 3} would see a {h}x{w} map of the {image_hw[0]}x{image_hw[1]} "
        f"images, smaller than the {AUX_MIN_SIDE}x{AUX_MIN_SIDE} its last conv needs"
    )


class AuxHeadCIFAR(nnx.Module):
    """DARTS' auxiliary head: ReLU, average pool to 2x2 (:func:`aux_pool`: DARTS' 5x5 stride
    3 on an 8x8 map), 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU, linear.

    The pool is chosen from the map it is called on (shapes are static under jit), so one
    head serves 32x32 CIFAR (8x8 map), 28x28 MNIST (7x7) and 8x8 digits (2x2); a map under
    2x2 raises :class:`DnasError` (:func:`aux_head_problem` refuses it in a config first).
    """

    def __init__(self, c: int, num_classes: int, *, rngs: nnx.Rngs):
        self.c1, self.b1 = Conv2d(c, 128, 1, rngs=rngs), batch_norm(128, True, rngs=rngs)
        self.c2, self.b2 = Conv2d(128, 768, 2, rngs=rngs), batch_norm(768, True, rngs=rngs)
        self.fc = nnx.Linear(768, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # The shorter side decides: both sides pool to >= 2, so the 2x2 conv always fits.
        k, stride = aux_pool(min(x.shape[1], x.shape[2]))
        x = avg_pool(jax.nn.relu(x), k, stride, 0)
        x = jax.nn.relu(self.b1(self.c1(x)))
        x = jax.nn.relu(self.b2(self.c2(x)))
        return self.fc(jnp.mean(x, axis=(1, 2)))


def AuxHeadImageNet(c: int, num_classes: int, *, rngs: nnx.Rngs) -> AuxHeadCIFAR:
    """Auxiliary head of the ImageNet network: on its 7x7 map :func:`aux_pool` gives DARTS'
    5x5 stride 2 (``model.py`` says "assuming input size 14x14", but the head follows the
    second reduction cell, whose output is 7x7 at 224x224)."""
    return AuxHeadCIFAR(c, num_classes, rngs=rngs)


class _DartsEval(nnx.Module):
    def _cells(self, genotype, C: int, layers: int, c_pp: int, c_p: int, reduction_prev: bool, num_classes: int, auxiliary: bool, aux_head, rngs: nnx.Rngs) -> None:
        if not isinstance(genotype, (DartsGenotype, MacroGenotype)):
            raise DnasError(f"a DARTS network needs a DARTS genotype, got {type(genotype).__name__}")
        reductions = reduction_layers(layers)
        cells, c_curr, self.aux_index, c_aux = [], C, None, None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = EvalCell(genotype.cell(i, reduction), c_pp, c_p, c_curr, reduction, reduction_prev, rngs=rngs)
            cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == 2 * layers // 3:
                self.aux_index, c_aux = i, c_p
        self.cells = nnx.List(cells)
        self.aux = aux_head(c_aux, num_classes, rngs=rngs) if auxiliary and c_aux is not None else None
        self.classifier = nnx.Linear(c_p, num_classes, rngs=rngs)

    def _run(self, s0, s1, drop_prob, key):
        aux = None
        for i, cell in enumerate(self.cells):
            k = None if key is None else jax.random.fold_in(key, i)
            s0, s1 = s1, cell(s0, s1, drop_prob, k)
            if self.aux is not None and i == self.aux_index:
                aux = self.aux(s1)
        return NetOutput(self.classifier(jnp.mean(s1, axis=(1, 2))), aux)


class DartsCIFARNetwork(_DartsEval):
    """DARTS ``NetworkCIFAR``.

    Args:
      genotype: a :class:`DartsGenotype` (or :class:`MacroGenotype` with ``layers`` cells).
      C: initial channels (36 in the paper); layers: cells (20); auxiliary: build the head.
      num_classes, in_channels: data shape.
    """

    def __init__(self, genotype: DartsGenotype | MacroGenotype, C: int = 36, layers: int = 20, num_classes: int = 10, auxiliary: bool = True, in_channels: int = 3, *, rngs: nnx.Rngs):
        c_stem = 3 * C
        self.stem_conv, self.stem_bn = Conv2d(in_channels, c_stem, 3, 1, 1, rngs=rngs), batch_norm(c_stem, True, rngs=rngs)
        self._cells(genotype, C, layers, c_stem, c_stem, False, num_classes, auxiliary, AuxHeadCIFAR, rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        _no_arch(arch)
        s = self.stem_bn(self.stem_conv(x))
        return self._run(s, s, jnp.asarray(drop_prob, x.dtype), key)


class DartsImageNetNetwork(_DartsEval):
    """DARTS ``NetworkImageNet`` (C=48, 14 cells; stem: 224 -> 56 -> 28)."""

    def __init__(self, genotype: DartsGenotype | MacroGenotype, C: int = 48, layers: int = 14, num_classes: int = 1000, auxiliary: bool = True, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.s0_c1, self.s0_b1 = Conv2d(in_channels, C // 2, 3, 2, 1, rngs=rngs), batch_norm(C // 2, True, rngs=rngs)
        self.s0_c2, self.s0_b2 = Conv2d(C // 2, C, 3, 2, 1, rngs=rngs), batch_norm(C, True, rngs=rngs)
        self.s1_c, self.s1_b = Conv2d(C, C, 3, 2, 1, rngs=rngs), batch_norm(C, True, rngs=rngs)
        self._cells(genotype, C, layers, C, C, True, num_classes, auxiliary, AuxHeadImageNet, rngs)

    def __call__(self, x: jax.Array, arch: ArchInput | None = None, *, key: PRNGKey | None = None, drop_prob: float | jax.Array = 0.0) -> NetOutput:
        _no_arch(arch)
        s0 = self.s0_b2(self.s0_c2(jax.nn.relu(self.s0_b1(self.s0_c1(x)))))
        s1 = self.s1_b(self.s1_c(jax.nn.relu(s0)))
        return self._run(s0, s1, jnp.asarray(drop_prob, x.dtype), key)


def _no_arch(arch: ArchInput | None) -> None:
    if arch is not None:
        raise DnasError("a derived DARTS network takes no architecture input; its genotype is fixed")
