"""Regularized (aging) evolution.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture
Search", AAAI 2019, Algorithm 1: a population of ``population`` architectures; each cycle
samples ``sample_size`` members uniformly (with replacement, as the paper and
NAS-Bench-201's ``R_EA.py``), mutates the best of the sample, adds the child and removes
the *oldest* member (aging), not the worst. Mutation: :func:`mutate` (``space.mutate``): one
group drawn by the space's ``mutation_weights`` (uniform by default; on NAS-Bench-201 a node,
then one of its incoming edges, as the benchmark's ``R_EA.py``), resampled to a new value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace, mutation_table
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.search.strategies.random_search import sample_batch
from dnas.core.types import PRNGKey


def fast_mutation(space: SearchSpace) -> bool:
    """True when :func:`mutate_with_bits` draws ``space.mutate``'s distribution: every
    group is one label, the space keeps the base mutation (its own
    :meth:`~dnas.space.base.SearchSpace.mutation_weights` included), and some label with
    more than one candidate has a positive weight."""
    if type(space).mutate is not SearchSpace.mutate or not all(len(g) == 1 for g in space.groups):
        return False
    weights = np.asarray(space.mutation_weights())
    changeable = space.num_candidates[[g[0] for g in space.groups]] > 1
    return weights.shape == changeable.shape and bool((weights[changeable] > 0).any())


def mutate_with_bits(space: SearchSpace, bits: jax.Array, vec: jax.Array) -> jax.Array:
    """One label (among those with > 1 candidate, drawn by the space's
    :meth:`~dnas.space.base.SearchSpace.mutation_weights`) changed to a uniformly drawn
    *other* candidate, from two ``uint32`` draws (modulo bias < table size / 2^32).
    Loop-free, whereas the base ``space.mutate`` resamples until the value differs: under
    ``vmap`` a while-loop that made REA on NAS-Bench-201 2x slower. Only for
    :func:`fast_mutation` spaces."""
    # Weighted by repetition, so one draw modulo the table size picks a label exactly; with
    # uniform weights the table is the changeable labels in order (the draw of before).
    table = np.array([space.groups[g][0] for g in mutation_table(space, changeable_only=True)], np.int32)
    k = jnp.asarray(space.num_candidates, jnp.uint32)
    i = jnp.asarray(table)[(bits[0] % len(table)).astype(jnp.int32)]
    shift = 1 + bits[1] % (k[i] - 1)  # never 0: the value changes
    vec = jnp.asarray(vec, jnp.int32)
    return vec.at[i].set(((vec[i].astype(jnp.uint32) + shift) % k[i]).astype(jnp.int32))


def mutate(space: SearchSpace, key: PRNGKey, vec: jax.Array) -> jax.Array:
    """``space.mutate``'s distribution, loop-free for :func:`fast_mutation` spaces."""
    if fast_mutation(space):
        return mutate_with_bits(space, jax.random.bits(key, (2,)), vec)
    return space.mutate(key, vec)


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
        return mutate(space, k5, parent)

    def ask(state: EvolutionState, key: PRNGKey) -> tuple[jax.Array, EvolutionState]:
        k_rand, k_child = jax.random.split(key)
        if crossover_prob == 0 and fast_mutation(space):
            # One draw for all tournaments and mutations of the batch: each random call costs
            # a threefry pass, and this loop body runs once per evaluation of every run.
            bits = jax.random.bits(k_child, (batch, sample_size + 2))
            idx = (bits[:, :sample_size] % population).astype(jnp.int32)
            parents = state.archs[jnp.take_along_axis(idx, jnp.argmax(state.fitness[idx], axis=1)[:, None], 1)[:, 0]]
            children = jax.vmap(lambda b, v: mutate_with_bits(space, b, v))(bits[:, sample_size:], parents)
        else:
            children = jax.vmap(lambda k: child(state, k))(jax.random.split(k_child, batch))
        # Until the population is full, members are random (Algorithm 1's first loop).
        return jnp.where(state.count >= population, children, sample_batch(space, k_rand, batch)), state

    def tell(state: EvolutionState, archs: jax.Array, fitness: jax.Array) -> EvolutionState:
        slots = (state.count + jnp.arange(archs.shape[0])) % population  # the oldest members die
        return EvolutionState(
            state.archs.at[slots].set(archs.astype(jnp.int32)),
            state.fitness.at[slots].set(fitness.astype(jnp.float32)),
            state.count + archs.shape[0],
        )

    return Strategy(init, ask, tell)


STRATEGIES.add("rea", regularized_evolution)
