"""Architectures as inputs of a predictor: the DAG (for graph networks) and flat features.

One :class:`Encoded` batch carries every view a model may read, so all predictors share
the contract ``fit(x: Encoded, y, key) / predict(x: Encoded)``:

- ``adj f32[P, V, V]`` (``adj[p, dst, src] = 1`` for an edge src -> dst) and ``nodes
  f32[P, V, F]`` node features, for the graph networks;
- ``vecs int32[P, n]`` the space's vector encoding (one-hot and count features of ridge,
  the MLP and the trees derive from it);
- ``extra``: per-architecture scalars (``flops``, ``params``, ...) and ``sources f64[P, S]``,
  other devices' latencies of the same architectures, for transfer.

Graphs have a fixed size per space, so a batch is dense (no padding, no segment sums).

NAS-Bench-201 follows BRP-NAS (Dudziak et al., NeurIPS 2020) and HELP (Lee et al., NeurIPS
2021): 8 nodes, the cell input, one node per edge operation (the cell's 6 edges, in the
space's label order), the cell output; an op node on edge i -> j reads every op node that
ends at node i (or the input when i = 0); the output reads the op nodes ending at node 3.
Node features are one-hots over (input, output, the five ops). Any other space is encoded
as an op sequence (:func:`sequence_graph`): a chain input -> position 1 -> ... -> output,
each position's node a one-hot of its chosen value plus a one-hot of the position, which
is exact for layer-wise spaces (ProxylessNAS, FBNet) and a simplification for DARTS cells.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dnas.core.errors import DnasError
from dnas.hardware.counts import supernet_count_terms
from dnas.hardware.predictor import count_features, one_hot_features, value_ids
from dnas.space.base import SearchSpace
from dnas.space.spaces.nb201 import EDGES as NB201_EDGES
from dnas.space.spaces.nb201 import NB201Space


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A batch of P architectures in every view a predictor reads (see the module docstring).

    Args:
      vecs: ``int32[P, n]`` the space's vectors.
      adj: ``f32[P, V, V]`` adjacency, ``adj[p, dst, src]``.
      nodes: ``f32[P, V, F]`` node features.
      onehot: ``f64[P, sum(k)]`` per-(position, candidate) indicators.
      count: ``f64[P, C]`` occurrences of each distinct candidate value.
      extra: name -> ``f64[P]`` or ``f64[P, S]`` (``flops``, ``params``, ``sources``).
    """

    vecs: np.ndarray
    adj: np.ndarray
    nodes: np.ndarray
    onehot: np.ndarray
    count: np.ndarray
    extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vecs.shape[0])

    def take(self, rows: np.ndarray) -> "Encoded":
        """The architectures at ``rows`` (an index array or boolean mask)."""
        return Encoded(self.vecs[rows], self.adj[rows], self.nodes[rows], self.onehot[rows], self.count[rows],
                       {k: np.asarray(v)[rows] for k, v in self.extra.items()})

    def with_extra(self, **extra: np.ndarray) -> "Encoded":
        """The same batch with more per-architecture features (each ``f64[P]`` or ``f64[P, S]``)."""
        for k, v in extra.items():
            if np.shape(v)[0] != len(self):
                raise DnasError(f"feature {k!r} has {np.shape(v)[0]} rows for {len(self)} architectures")
        return dataclasses.replace(self, extra={**self.extra, **{k: np.asarray(v, np.float64) for k, v in extra.items()}})


def nb201_graph(vecs: np.ndarray, num_ops: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The BRP-NAS graph of NAS-Bench-201 cells (module docstring).

    Args:
      vecs: ``int[P, 6]`` cell vectors (``NB201Space`` micro encoding; edge order ``EDGES``).
      num_ops: candidate ops per edge.

    Returns:
      ``adj f32[P, 8, 8]`` (``adj[p, dst, src]``) and ``nodes f32[P, 8, 2 + num_ops]``.
    """
    vecs = np.asarray(vecs)
    if vecs.ndim != 2 or vecs.shape[1] != len(NB201_EDGES):
        raise DnasError(f"NB201 cells are int[P, {len(NB201_EDGES)}]; got shape {vecs.shape}")
    V, out = len(NB201_EDGES) + 2, len(NB201_EDGES) + 1
    a = np.zeros((V, V), np.float32)
    for k, (j, i) in enumerate(NB201_EDGES):  # op node k + 1 sits on edge i -> j
        srcs = [0] if i == 0 else [1 + m for m, (jj, _) in enumerate(NB201_EDGES) if jj == i]
        a[1 + k, srcs] = 1.0
    a[out, [1 + m for m, (jj, _) in enumerate(NB201_EDGES) if jj == max(j for j, _ in NB201_EDGES)]] = 1.0
    nodes = np.zeros((len(vecs), V, 2 + num_ops), np.float32)
    nodes[:, 0, 0] = 1.0
    nodes[:, out, 1] = 1.0
    nodes[np.arange(len(vecs))[:, None], 1 + np.arange(vecs.shape[1])[None], 2 + vecs] = 1.0
    return np.broadcast_to(a, (len(vecs), V, V)).copy(), nodes


def sequence_graph(vecs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any space as an op-sequence chain: input -> position 1 -> ... -> position n -> output.

    Args:
      vecs: ``int[P, n]`` the space's vectors.
      ids: ``int[n, K]`` value id of each (position, candidate) (:func:`value_ids`).

    Returns:
      ``adj f32[P, n + 2, n + 2]`` and ``nodes f32[P, n + 2, 2 + C + n]``: (input, output,
      C value one-hots, n position one-hots).
    """
    vecs = np.asarray(vecs)
    P, n = vecs.shape
    C = int(ids.max()) + 1
    V = n + 2
    a = np.zeros((V, V), np.float32)
    a[np.arange(1, V), np.arange(0, V - 1)] = 1.0
    nodes = np.zeros((P, V, 2 + C + n), np.float32)
    nodes[:, 0, 0] = 1.0
    nodes[:, V - 1, 1] = 1.0
    chosen = ids[np.arange(n)[None], vecs]  # [P, n] value ids
    rows = np.arange(P)[:, None]
    nodes[rows, 1 + np.arange(n)[None], 2 + chosen] = 1.0
    nodes[:, 1 + np.arange(n), 2 + C + np.arange(n)] = 1.0
    return np.broadcast_to(a, (P, V, V)).copy(), nodes


GraphFn = Callable[[SearchSpace, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _nb201(space: SearchSpace, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not getattr(space, "shared", True):  # the macro space has one cell per position: a sequence of cells
        return sequence_graph(vecs, value_ids([c.candidates for c in space.choices])[0])
    return nb201_graph(vecs, int(space.num_candidates[0]))


# space class -> its DAG encoding; spaces not listed are op sequences.
GRAPHS: dict[type, GraphFn] = {NB201Space: _nb201}


def encode(space: SearchSpace, vecs: np.ndarray, **extra: Any) -> Encoded:
    """Every view of architectures ``vecs int[P, n]`` of ``space`` (see :class:`Encoded`).

    Args:
      space: the space the vectors belong to.
      vecs: ``int[P, n]``.
      **extra: per-architecture features, each ``f[P]`` or ``f[P, S]``.

    Returns:
      The :class:`Encoded` batch.
    """
    vecs = np.asarray(vecs, np.int32)
    if vecs.ndim != 2 or vecs.shape[1] != len(space.labels):
        raise DnasError(f"architectures of this space are int[P, {len(space.labels)}]; got shape {vecs.shape}")
    ids = value_ids([c.candidates for c in space.choices])[0]
    graph = GRAPHS.get(type(space))
    adj, nodes = graph(space, vecs) if graph is not None else sequence_graph(vecs, ids)
    enc = Encoded(vecs, adj, nodes, one_hot_features(vecs, space.num_candidates), count_features(vecs, ids))
    return enc.with_extra(**extra) if extra else enc


def flops_params(space: SearchSpace, vecs: np.ndarray, *, C: int, num_classes: int, in_channels: int, resolution: int) -> dict[str, np.ndarray]:
    """``{"flops": f64[P], "params": f64[P]}``: millions of multiply-accumulates and
    parameters of each architecture's network, from the space's supernet
    (:func:`dnas.hardware.counts.supernet_count_terms`; exact for spaces whose counts are
    sums over labels, NB201 and DARTS). Pass them to :func:`encode` for the ``flops`` /
    ``params`` models.

    Args:
      space: the space; vecs: ``int[P, n]``; the rest: the network (NB201's benchmark:
        C=16, 10 classes, 3 input channels, 32x32 inputs).
    """
    macs, params = supernet_count_terms(space, C=C, num_classes=num_classes, in_channels=in_channels, resolution=resolution)
    vecs = np.asarray(vecs)
    total = lambda term: np.asarray(term.lat, np.float64)[np.arange(vecs.shape[1])[None], vecs].sum(1) + float(term.fixed)  # noqa: E731
    return {"flops": total(macs), "params": total(params)}
