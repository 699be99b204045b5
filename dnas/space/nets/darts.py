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


class AuxHeadCIFAR(nnx.Module):
    """Auxiliary head for 8x8 inputs: ReLU, 5x5 avgpool/3, 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU, linear."""

    def __init__(self, c: int, num_classes: int, stride: int = 3, *, rngs: nnx.Rngs):
        self.stride = stride
        self.c1, self.b1 = Conv2d(c, 128, 1, rngs=rngs), batch_norm(128, True, rngs=rngs)
        self.c2, self.b2 = Conv2d(128, 768, 2, rngs=rngs), batch_norm(768, True, rngs=rngs)
        self.fc = nnx.Linear(768, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = avg_pool(jax.nn.relu(x), 5, self.stride, 0)
        x = jax.nn.relu(self.b1(self.c1(x)))
        x = jax.nn.relu(self.b2(self.c2(x)))
        return self.fc(jnp.mean(x, axis=(1, 2)))


def AuxHeadImageNet(c: int, num_classes: int, *, rngs: nnx.Rngs) -> AuxHeadCIFAR:
    """Auxiliary head for 14x14 inputs (5x5 avgpool stride 2), as in DARTS ``model.py``."""
    return AuxHeadCIFAR(c, num_classes, stride=2, rngs=rngs)


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
