"""Type aliases shared across dnas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

PRNGKey = jax.Array
"""A JAX PRNG key (``jax.random.key`` or legacy ``uint32[2]``)."""

Arch = Mapping[str, int]
"""A discrete architecture for people: label -> candidate index."""

ArchVec = jax.Array
"""A discrete architecture for jit: ``int32[n_choices]`` in the space's label order."""

ArchInput = Mapping[str, jax.Array]
"""What a supernet's forward takes per label: ``f32[k]`` mixing weights or an ``int32[]`` index."""

Batch = tuple[jax.Array, jax.Array]
"""``(images f32[B, H, W, C], labels int32[B])``, channels last."""

Metrics = dict[str, Any]
