"""Predictor-based search: fit a performance predictor on the architectures evaluated so
far, rank many unseen candidates with it, evaluate the best-ranked ones, repeat.

Wen, Liu, Chen, Li, Bender & Kindermans, "Neural Predictor for Neural Architecture
Search", ECCV 2020 (train on T architectures, rank N >> T, evaluate the top K), with an
ensemble of MLPs on the one-hot encoding and candidates that include mutations of the
best architectures so far (the acquisition optimiser of White, Neiswanger & Savani,
"BANANAS", AAAI 2021: uniform candidates alone rarely contain a near-optimal one). The predictor is pluggable: any :data:`PREDICTORS` entry
``(n_inputs, **kw) -> (fit, predict)`` with ``fit(key, x f32[H, d], y f32[H], w f32[H])
-> params`` and ``predict(params, x f32[N, d]) -> f32[N]``, pure and jittable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.search.strategies.evolution import mutate
from dnas.search.strategies.random_search import sample_batch
from dnas.core.types import PRNGKey

Predictor = tuple[Callable[..., Any], Callable[[Any, jax.Array], jax.Array]]
PREDICTORS: Registry[Callable[..., Predictor]] = Registry("predictor")


def mlp_ensemble(n_inputs: int, members: int = 5, hidden: int = 32, steps: int = 200, learning_rate: float = 1e-2, weight_decay: float = 1e-4) -> Predictor:
    """An ensemble of ``members`` 2-hidden-layer ReLU MLPs, each from its own init, fitted
    full-batch with AdamW on standardised targets; the prediction is the ensemble mean.

    Returns:
      ``(fit, predict)`` as described in the module docstring.
    """

    def init_one(key: PRNGKey) -> list[tuple[jax.Array, jax.Array]]:
        sizes = (n_inputs, hidden, hidden, 1)
        keys = jax.random.split(key, len(sizes) - 1)
        return [(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply_one(params, x: jax.Array) -> jax.Array:
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return (x @ w + b)[:, 0]

    opt = optax.adamw(learning_rate, weight_decay=weight_decay)

    def fit(key: PRNGKey, x: jax.Array, y: jax.Array, w: jax.Array):
        # Standardise with the weighted (= evaluated) targets so one learning rate fits any metric scale.
        n = jnp.maximum(w.sum(), 1.0)
        mu = (w * y).sum() / n
        sd = jnp.sqrt((w * (y - mu) ** 2).sum() / n) + 1e-6
        yz = jnp.where(w > 0, (y - mu) / sd, 0.0)

        def fit_one(k):
            params = init_one(k)

            def step(carry, _):
                p, s = carry
                g = jax.grad(lambda p: (w * (apply_one(p, x) - yz) ** 2).sum() / n)(p)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[0][0]

        return jax.vmap(fit_one)(jax.random.split(key, members)), mu, sd

    def predict(fitted, x: jax.Array) -> jax.Array:
        params, mu, sd = fitted
        return jax.vmap(apply_one, in_axes=(0, None))(params, x).mean(0) * sd + mu

    return fit, predict


PREDICTORS.add("mlp_ensemble", mlp_ensemble)


class PredictorState(NamedTuple):
    """Every evaluated architecture: ``archs int32[H, n]``, ``fitness f32[H]``, ``count``."""

    archs: jax.Array
    fitness: jax.Array
    count: jax.Array


def one_hot(space: SearchSpace, archs: jax.Array) -> jax.Array:
    """``int32[P, n]`` -> the concatenated one-hot encoding ``f32[P, sum(k_i)]``."""
    return jnp.concatenate([jax.nn.one_hot(archs[:, i], int(k)) for i, k in enumerate(space.num_candidates)], axis=1)


def predictor_search(
    space: SearchSpace,
    initial: int = 20,
    batch: int = 5,
    candidates: int = 500,
    mutants: float = 0.5,
    parents: int = 10,
    history: int = 256,
    predictor: str = "mlp_ensemble",
    predictor_kwargs: dict | None = None,
) -> Strategy:
    """Predictor-guided search (Wen et al. 2020; BANANAS' MLP ensemble).

    Args:
      space: the search space (candidates come from ``space.sample``).
      initial: T, random architectures evaluated before the first fit.
      batch: K, top-ranked architectures evaluated per round (P).
      candidates: N, candidates ranked per round (already evaluated ones skipped).
      mutants: the fraction of candidates that are ``space.mutate`` of the ``parents``
        best evaluated architectures (the rest uniform).
      parents: how many of the best evaluated architectures are mutated.
      history: most evaluated architectures kept for fitting (the oldest are dropped).
      predictor: a :data:`PREDICTORS` name.
      predictor_kwargs: its keyword arguments.
    Returns:
      a :class:`Strategy` over :class:`PredictorState`; fitness ``f32[P]``.
    """
    if not 0.0 <= mutants <= 1.0 or parents < 1:
        raise DnasError(f"predictor search needs mutants in [0, 1] and parents >= 1, got {mutants} and {parents}")
    if not 1 <= batch <= candidates:
        raise DnasError(f"predictor search needs 1 <= batch <= candidates, got batch={batch}, candidates={candidates}")
    if history < max(initial, batch):
        raise DnasError(f"predictor history ({history}) must hold at least the initial ({initial}) and one batch ({batch})")
    fit, predict = PREDICTORS[predictor](int(np.sum(space.num_candidates)), **(predictor_kwargs or {}))
    n = len(space)

    def init(key: PRNGKey) -> PredictorState:
        del key
        return PredictorState(jnp.zeros((history, n), jnp.int32), jnp.zeros((history,)), jnp.zeros((), jnp.int32))

    def ranked(state: PredictorState, key: PRNGKey) -> jax.Array:
        k_fit, k_cand = jax.random.split(key)
        weight = (jnp.arange(history) < state.count).astype(jnp.float32)
        fitted = fit(k_fit, one_hot(space, state.archs), state.fitness, weight)
        k_uni, k_mut = jax.random.split(k_cand)
        n_mut = int(round(mutants * candidates))
        top = jax.lax.top_k(jnp.where(weight > 0, state.fitness, -jnp.inf), min(parents, history))[1]
        mutated = jax.vmap(lambda k, v: mutate(space, k, v))(jax.random.split(k_mut, n_mut), state.archs[top[jnp.arange(n_mut) % jnp.clip(state.count, 1, top.shape[0])]])
        cand = jnp.concatenate([sample_batch(space, k_uni, candidates - n_mut), mutated])
        score = predict(fitted, one_hot(space, cand))
        seen = jnp.any(jnp.all(cand[:, None, :] == state.archs[None], -1) & (weight[None] > 0), axis=1)
        same = jnp.all(cand[:, None, :] == cand[None], -1)
        seen |= jnp.any(jnp.tril(same, -1), axis=1)  # a repeat of an earlier candidate: rank it once
        return cand[jax.lax.top_k(jnp.where(seen, -jnp.inf, score), batch)[1]]

    def ask(state: PredictorState, key: PRNGKey) -> tuple[jax.Array, PredictorState]:
        k_rand, k_rank = jax.random.split(key)
        archs = jax.lax.cond(state.count >= initial, lambda: ranked(state, k_rank), lambda: sample_batch(space, k_rand, batch))
        return archs, state

    def tell(state: PredictorState, archs: jax.Array, fitness: jax.Array) -> PredictorState:
        slots = (state.count + jnp.arange(archs.shape[0])) % history
        return PredictorState(state.archs.at[slots].set(archs.astype(jnp.int32)), state.fitness.at[slots].set(fitness.astype(jnp.float32)), state.count + archs.shape[0])

    return Strategy(init, ask, tell)


STRATEGIES.add("predictor", predictor_search)
