"""Relaxations: architecture logits α -> per-label mixing weights.

A relaxation is a pure function ``(key, logits f32[k], step) -> weights f32[k]``;
temperatures are schedules of ``step`` (any optax schedule or a float). Registered:

- ``softmax``: DARTS (Liu et al. 2019), ``softmax(α / T)``.
- ``gumbel``: Gumbel-softmax (Jang et al. 2017) as in SNAS (Xie et al. 2019) and FBNet
  (Wu et al. 2019); ``hard=True`` gives a one-hot forward with the soft gradient
  (straight-through), as in GDAS (Dong & Yang 2019).
- ``dirichlet``: DrNAS (Chen et al. 2021), a reparameterised Dirichlet sample with
  concentration ``softplus(α)``.
- ``binary_gate``: ProxylessNAS (Cai et al. 2019), one path sampled from ``softmax(α)``;
  forward one-hot, gradient through the probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from dnas.registry import Registry
from dnas.types import PRNGKey

Relaxation = Callable[[PRNGKey, jax.Array, jax.Array], jax.Array]
Schedule = float | Callable[[jax.Array], jax.Array]

RELAXATIONS: Registry[Callable[..., Relaxation]] = Registry("relaxation")


def _at(s: Schedule, step: jax.Array) -> jax.Array:
    return s(step) if callable(s) else jnp.asarray(s, jnp.float32)


def _straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    return hard + soft - jax.lax.stop_gradient(soft)


@RELAXATIONS.decorator("softmax", lambda f: f)
def softmax(temperature: Schedule = 1.0) -> Relaxation:
    """DARTS: ``softmax(α / T)``; the key is unused."""
    return lambda key, logits, step: jax.nn.softmax(logits / _at(temperature, step))


@RELAXATIONS.decorator("gumbel", lambda f: f)
def gumbel(tau: Schedule = optax.exponential_decay(5.0, 1, 0.956), hard: bool = False) -> Relaxation:
    """Gumbel-softmax with temperature ``tau(step)``; ``hard`` is straight-through one-hot.

    The default anneals 5.0 x 0.956^step, FBNet's schedule (per epoch there: pass your own
    schedule in the unit you step in).
    """

    def relax(key, logits, step):
        g = jax.random.gumbel(key, logits.shape, logits.dtype)
        soft = jax.nn.softmax((logits + g) / _at(tau, step))
        if not hard:
            return soft
        return _straight_through(jax.nn.one_hot(jnp.argmax(soft), logits.shape[-1], dtype=soft.dtype), soft)

    return relax


@RELAXATIONS.decorator("dirichlet", lambda f: f)
def dirichlet() -> Relaxation:
    """DrNAS: a Dirichlet(softplus(α)) sample, differentiable by implicit reparameterisation."""
    return lambda key, logits, step: jax.random.dirichlet(key, jax.nn.softplus(logits) + 1e-6)


@RELAXATIONS.decorator("binary_gate", lambda f: f)
def binary_gate() -> Relaxation:
    """ProxylessNAS: sample one path ~ softmax(α); one-hot forward, softmax gradient."""

    def relax(key, logits, step):
        probs = jax.nn.softmax(logits)
        idx = jax.random.categorical(key, logits)
        return _straight_through(jax.nn.one_hot(idx, logits.shape[-1], dtype=probs.dtype), probs)

    return relax


def make_relaxation(name: str, **kwargs) -> Relaxation:
    """Builds the registered relaxation ``name`` (unknown names list the known ones)."""
    return RELAXATIONS[name](**kwargs)


def relax_all(relax: Relaxation, key: PRNGKey, alpha: Mapping[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    """Applies ``relax`` to every label's logits with an independent key per label."""
    return {label: relax(jax.random.fold_in(key, i), a, step) for i, (label, a) in enumerate(sorted(alpha.items()))}
