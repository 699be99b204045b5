"""Type aliases and small containers shared across dnas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Union

import jax

PRNGKey = jax.Array
"""A JAX PRNG key (``jax.random.key`` or legacy ``uint32[2]``)."""

Arch = Mapping[str, int]
"""A discrete architecture for people: label -> candidate index."""

ArchVec = jax.Array
"""A discrete architecture for jit: ``int32[n_choices]`` in the space's label order."""


class Sampled(NamedTuple):
    """Sampled paths of one choice: only these candidates run (``lax.switch``).

    The mixed op outputs ``sum_j weight[index[j]] * op_{index[j]}(x)``. ``weight`` is a
    straight-through vector (value 1 on the sampled candidates, gradient of the sampling
    probabilities), so α gets a gradient although only the sampled ops are computed
    (GDAS, ProxylessNAS); SPOS passes a constant one-hot.

    Attributes:
      index: ``int32[m]`` the sampled candidates (m = 1 for GDAS/SPOS, 2 for
        ProxylessNAS' two-path binary gates).
      weight: ``f32[k]`` the per-candidate scale.
    """

    index: jax.Array
    weight: jax.Array


ArchWeights = Union[jax.Array, Sampled]
"""What a relaxation gives per label: mixing weights ``f32[k]``, or :class:`Sampled`."""

ArchInput = Mapping[str, Any]
"""What a supernet's forward takes per label: mixing weights ``f32[k]``, an ``int32[]``
index (one-shot evaluation) or :class:`Sampled` paths."""

Batch = tuple[jax.Array, jax.Array]
"""``(images f32[B, H, W, C], labels int32[B])``, channels last."""

Metrics = dict[str, Any]


class NetOutput(NamedTuple):
    """What every dnas network returns (search supernets and derived networks alike).

    The one calling convention is ``net(x, arch=None, *, key=None, drop_prob=0.0) ->
    NetOutput``: ``x`` is ``f32[B, H, W, C]``; ``arch`` (supernets only) maps every label to
    mixing weights, an index or :class:`Sampled` paths; ``key`` and ``drop_prob`` drive
    drop-path where a network has it (ignored otherwise).

    Attributes:
      logits: ``f32[B, num_classes]``.
      aux_logits: ``f32[B, num_classes]`` from an auxiliary head (DARTS' CIFAR network in
        training), else None.
    """

    logits: jax.Array
    aux_logits: jax.Array | None = None
