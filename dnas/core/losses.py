"""The one classification loss every part of dnas trains and scores with."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over integer labels (PyTorch's ``F.cross_entropy``).

    Args:
      logits: ``f[B, classes]``; computed in float32 or wider (float64 stays float64, as
        synflow's overflow-free scoring needs).
      labels: ``int[B]``.
    Returns:
      the scalar mean loss.
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32)).mean()
