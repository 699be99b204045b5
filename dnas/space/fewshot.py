"""Few-shot supernets: a space split by the candidate of some labels into ``K`` parts.

Few-shot NAS (Zhao, Wang, Chen, Jin, Kaul, Rao & Tian, "Few-shot Neural Architecture
Search", ICML 2021) splits the one-shot supernet by the operation of one or more edges
into ``K`` sub-supernets (NB201, one edge: ``K = 5``), each starting from the trained
one-shot weights and then trained on its own part of the space only; an architecture is
evaluated with the sub-supernet whose part holds it. Fewer architectures share each weight,
so the co-adaptation that distorts one-shot rankings is smaller.

Here the ``K`` sub-supernets are the one supernet's pytrees stacked along a leading axis of
size ``K``: training maps the one-shot step over that axis (``lax.map``, one compiled
program), evaluation indexes it with :meth:`FewShotSplit.route` of the architecture
(one compiled program for every architecture). Sub-supernet ``k`` keeps its part in its
own α: the split labels' logits are :data:`~dnas.space.relax.MASKED` except at the candidate ``k`` fixes, and the
sampling relaxations (``uniform``, FairNAS' paths) never draw a masked candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace
from dnas.space.relax import MASKED


class FewShotSplit(NamedTuple):
    """Which labels split a space, and how architectures map to sub-supernets.

    Attributes:
      labels: the split labels (e.g. ``("cell/edge_1_0",)``).
      positions: their positions in the space's architecture vector.
      sizes: their candidate counts; ``K = prod(sizes)`` sub-supernets, sub-supernet ``k``
        fixing label ``j`` to the ``j``-th mixed-radix digit of ``k`` (last label fastest).
    """

    labels: tuple[str, ...]
    positions: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def k(self) -> int:
        """The number of sub-supernets."""
        return int(np.prod(self.sizes)) if self.sizes else 1

    def route(self, vecs: jax.Array | np.ndarray) -> jax.Array:
        """The sub-supernet of each architecture: ``int32[...]`` for ``vecs`` ``int32[..., n]``
        (jittable)."""
        vecs = jnp.asarray(vecs, jnp.int32)
        k = jnp.zeros(vecs.shape[:-1], jnp.int32)
        for pos, size in zip(self.positions, self.sizes):
            k = k * size + vecs[..., pos]
        return k

    def fixed(self, k: int) -> dict[str, int]:
        """``{label: candidate}`` that sub-supernet ``k`` fixes."""
        if not 0 <= k < self.k:
            raise DnasError(f"sub-supernet index must be in [0, {self.k}), got {k}")
        out = {}
        for label, size in reversed(list(zip(self.labels, self.sizes))):
            k, out[label] = divmod(k, size)
        return {l: out[l] for l in self.labels}

    def masked_alpha(self, alpha: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``{label: f32[K, n_label]}``: ``alpha`` (``{label: f32[n_label]}``) repeated for
        every sub-supernet, the split labels :data:`~dnas.space.relax.MASKED` except at the candidate it fixes."""
        out = {l: np.repeat(np.asarray(v, np.float32)[None], self.k, axis=0) for l, v in alpha.items()}
        for k in range(self.k):
            for label, c in self.fixed(k).items():
                row = np.full(out[label].shape[1], MASKED, np.float32)
                row[c] = out[label][k, c]
                out[label][k] = row
        return out


def make_split(space: SearchSpace, labels: Sequence[str]) -> FewShotSplit:
    """The split of ``space`` by ``labels`` (each a label of the space, at most once).

    Raises:
      DnasError: an unknown or repeated label, or none at all.
    """
    labels = tuple(str(l) for l in labels)
    if not labels:
        raise DnasError("a few-shot split needs at least one label to split by, e.g. fewshot.split=['cell/edge_1_0']")
    if len(set(labels)) != len(labels):
        raise DnasError(f"fewshot.split names a label twice: {list(labels)}")
    known = list(space.labels)
    bad = [l for l in labels if l not in known]
    if bad:
        raise DnasError(f"fewshot.split: {bad[0]!r} is not a label of the space; it has: {', '.join(known)}")
    if any(len(g) > 1 for g in space.groups):
        raise DnasError("fewshot.split needs a space whose labels are independent decisions (this space ties labels into groups)")
    pos = tuple(known.index(l) for l in labels)
    return FewShotSplit(labels, pos, tuple(int(space.num_candidates[p]) for p in pos))
