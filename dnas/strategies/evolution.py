"""Regularized (aging) evolution.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture
Search", AAAI 2019, Algorithm 1: a population of ``population`` architectures; each cycle
samples ``sample_size`` members uniformly (with replacement, as the paper and
NAS-Bench-201's ``R_EA.py``), mutates the best of the sample, adds the child and removes
the *oldest* member (aging), not the worst.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dnas.errors import DnasError
from dnas.space import SearchSpace
from dnas.strategies import STRATEGIES, Strategy
from dnas.strategies.random_search import sample_batch
from dnas.types import PRNGKey


class EvolutionState(NamedTuple):
    """Population as a ring buffer: ``archs int32[S, n]``, ``fitness f32[S]``, ``count``
    (architectures told so far; slot ``count % S`` holds the oldest member)."""

    archs: jax.Array
    fitness: jax.Array
    count: jax.Array


def regularized_evolution(
    space: SearchSpace, population: int = 10, sample_size: int = 3, batch: int = 1, crossover_prob: float = 0.0
) -> Strategy:
    """Aging evolution (Real et al. 2019), mutation by ``space.mutate``.

    Args:
      space: the search space.
      population: S, members kept (10 in NAS-Bench-201's benchmark).
      sample_size: tournament size (3 in NAS-Bench-201's benchmark).
      batch: children per ``ask`` (P); the first S told architectures are random.
      crossover_prob: probability that a child is ``space.crossover`` of two tournament
        winners before its mutation (0 = the paper's mutation-only algorithm).
    Returns:
      a :class:`Strategy` over :class:`EvolutionState`; fitness ``f32[P]``.
    """
    if population < 1 or sample_size < 1:
        raise DnasError(f"evolution needs population >= 1 and sample_size >= 1, got {population} and {sample_size}")
    if not 1 <= batch <= population:
        raise DnasError(f"evolution's batch must lie in [1, population={population}] (a told batch replaces its oldest members), got {batch}")
    if not 0.0 <= crossover_prob <= 1.0:
        raise DnasError(f"crossover_prob must lie in [0, 1], got {crossover_prob}")
    n = len(space)

    def init(key: PRNGKey) -> EvolutionState:
        del key
        return EvolutionState(jnp.zeros((population, n), jnp.int32), jnp.full((population,), -jnp.inf), jnp.zeros((), jnp.int32))

    def tournament(state: EvolutionState, key: PRNGKey) -> jax.Array:
        idx = jax.random.randint(key, (sample_size,), 0, population)
        return state.archs[idx[jnp.argmax(state.fitness[idx])]]

    def child(state: EvolutionState, key: PRNGKey) -> jax.Array:
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        parent = tournament(state, k1)
        if crossover_prob > 0:
            mixed = space.crossover(k3, parent, tournament(state, k2))
            parent = jnp.where(jax.random.bernoulli(k4, crossover_prob), mixed, parent)
        return space.mutate(k5, parent)

    def ask(state: EvolutionState, key: PRNGKey) -> tuple[jax.Array, EvolutionState]:
        k_rand, k_child = jax.random.split(key)
        # Until the population is full, members are random (Algorithm 1's first loop).
        # cond, not where: only one branch runs, so the other's random draws are not wasted work.
        archs = jax.lax.cond(
            state.count >= population,
            lambda: jax.vmap(lambda k: child(state, k))(jax.random.split(k_child, batch)),
            lambda: sample_batch(space, k_rand, batch),
        )
        return archs, state

    def tell(state: EvolutionState, archs: jax.Array, fitness: jax.Array) -> EvolutionState:
        slots = (state.count + jnp.arange(archs.shape[0])) % population  # the oldest members die
        return EvolutionState(
            state.archs.at[slots].set(archs.astype(jnp.int32)),
            state.fitness.at[slots].set(fitness.astype(jnp.float32)),
            state.count + archs.shape[0],
        )

    return Strategy(init, ask, tell)


STRATEGIES.add("rea", regularized_evolution)
