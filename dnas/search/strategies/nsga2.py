"""NSGA-II: elitist multi-objective evolution by non-dominated sorting and crowding.

Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist Multiobjective Genetic Algorithm:
NSGA-II", IEEE TEVC 2002. Every objective is maximised (negate a latency). Parents are
picked by binary tournament on (rank, crowding distance); children are
``space.crossover`` + ``space.mutate``; the next population is the best ``population`` of
parents + children by (rank ascending, crowding descending).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.search.strategies.evolution import mutate
from dnas.search.strategies.random_search import sample_batch
from dnas.core.types import PRNGKey


def dominates(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a f32[..., m]`` Pareto-dominates ``b`` (maximisation): >= everywhere, > somewhere."""
    return jnp.all(a >= b, -1) & jnp.any(a > b, -1)


def non_dominated_rank(objs: jax.Array, valid: jax.Array) -> jax.Array:
    """Front index per point (0 = Pareto front) of ``objs f32[K, m]``; invalid points get K.

    Peels fronts one at a time: a point joins the current front when no unassigned valid
    point dominates it (Deb et al. 2002, Sec. III-A, in O(K^2) memory, jittable).
    """
    K = objs.shape[0]
    dom = dominates(objs[:, None], objs[None]) & valid[:, None] & valid[None]  # dom[i, j]: i dominates j

    def body(c):
        level, rank = c
        free = rank == K
        beaten = jnp.any(dom & free[:, None], axis=0)
        front = free & ~beaten & valid
        return level + 1, jnp.where(front, level, rank)

    def cond(c):
        level, rank = c
        return jnp.any((rank == K) & valid) & (level < K)

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), jnp.full((K,), K, jnp.int32)))[1]


def crowding_distance(objs: jax.Array, rank: jax.Array) -> jax.Array:
    """Crowding distance within each front (Deb et al. 2002, Sec. III-B); boundary points inf."""
    K, m = objs.shape
    dist = jnp.zeros(K)
    for j in range(m):
        o = objs[:, j]
        order = jnp.lexsort((o, rank))
        so, sr = o[order], rank[order]
        lo = jax.ops.segment_min(o, rank, num_segments=K + 1)[sr]
        hi = jax.ops.segment_max(o, rank, num_segments=K + 1)[sr]
        prev_same = jnp.concatenate([jnp.array([False]), sr[1:] == sr[:-1]])
        next_same = jnp.concatenate([sr[:-1] == sr[1:], jnp.array([False])])
        gap = (jnp.roll(so, -1) - jnp.roll(so, 1)) / jnp.maximum(hi - lo, 1e-12)
        d = jnp.where(prev_same & next_same, gap, jnp.inf)
        dist = dist.at[order].add(d)
    return dist


class NSGA2State(NamedTuple):
    """Population ``archs int32[S, n]``, ``objs f32[S, m]``, ``valid bool[S]``, its ``rank``
    and ``crowd`` (for parent tournaments) and ``count`` (architectures told)."""

    archs: jax.Array
    objs: jax.Array
    valid: jax.Array
    rank: jax.Array
    crowd: jax.Array
    count: jax.Array


def nsga2(space: SearchSpace, num_objectives: int = 2, population: int = 20, batch: int = 20, crossover_prob: float = 0.9) -> Strategy:
    """NSGA-II (Deb et al. 2002) over the space's vectors.

    Args:
      space: the search space.
      num_objectives: m, columns of the told fitness ``f32[P, m]`` (all maximised).
      population: S, the elite kept.
      batch: children per ``ask`` (P; S = P is the paper's generational scheme).
      crossover_prob: probability a child is a crossover of two tournament winners.
    Returns:
      a :class:`Strategy` over :class:`NSGA2State`; the first S told architectures are random.
    """
    if population < 2 or batch < 1 or num_objectives < 1:
        raise DnasError(f"nsga2 needs population >= 2, batch >= 1, num_objectives >= 1; got {population}, {batch}, {num_objectives}")
    n, m, S = len(space), num_objectives, population

    def init(key: PRNGKey) -> NSGA2State:
        del key
        return NSGA2State(
            jnp.zeros((S, n), jnp.int32), jnp.zeros((S, m)), jnp.zeros((S,), bool), jnp.full((S,), S, jnp.int32), jnp.zeros((S,)), jnp.zeros((), jnp.int32)
        )

    def pick(state: NSGA2State, key: PRNGKey) -> jax.Array:
        i, j = jax.random.randint(key, (2,), 0, S)
        better_i = (state.rank[i] < state.rank[j]) | ((state.rank[i] == state.rank[j]) & (state.crowd[i] >= state.crowd[j]))
        return state.archs[jnp.where(better_i, i, j)]

    def child(state: NSGA2State, key: PRNGKey) -> jax.Array:
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        a = pick(state, k1)
        mixed = space.crossover(k3, a, pick(state, k2))
        return mutate(space, k5, jnp.where(jax.random.bernoulli(k4, crossover_prob), mixed, a))

    def ask(state: NSGA2State, key: PRNGKey) -> tuple[jax.Array, NSGA2State]:
        k_rand, k_child = jax.random.split(key)
        archs = jax.lax.cond(
            state.count >= S, lambda: jax.vmap(lambda k: child(state, k))(jax.random.split(k_child, batch)), lambda: sample_batch(space, k_rand, batch)
        )
        return archs, state

    def tell(state: NSGA2State, archs: jax.Array, fitness: jax.Array) -> NSGA2State:
        objs = jnp.concatenate([state.objs, fitness.astype(jnp.float32).reshape(archs.shape[0], m)])
        valid = jnp.concatenate([state.valid, jnp.ones((archs.shape[0],), bool)])
        allx = jnp.concatenate([state.archs, archs.astype(jnp.int32)])
        objs = jnp.where(valid[:, None], objs, 0.0)  # empty slots: keep inf/nan out of the crowding sums
        rank = non_dominated_rank(objs, valid)
        crowd = crowding_distance(objs, rank)
        keep = jnp.lexsort((-crowd, rank))[:S]
        sel_rank = non_dominated_rank(objs[keep], valid[keep])  # ranks within the survivors, for tournaments
        return NSGA2State(allx[keep], objs[keep], valid[keep], sel_rank, crowding_distance(objs[keep], sel_rank), state.count + archs.shape[0])

    return Strategy(init, ask, tell)


STRATEGIES.add("nsga2", nsga2)
