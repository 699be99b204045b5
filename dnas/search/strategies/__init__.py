"""Discrete search strategies: pure, optax-shaped ``(init, ask, tell)`` over int vectors.

A strategy never knows how an architecture is scored (DESIGN.md, "The discrete side"):

    strategy = STRATEGIES["rea"](space, population=10, sample_size=3)
    state = strategy.init(key)
    archs, state = strategy.ask(state, k1)        # int32[P, n]
    state = strategy.tell(state, archs, fitness)  # f32[P] (f32[P, m] for NSGA-II)

All three functions are pure and jittable, so a search over a pure estimator (a benchmark
table) runs many seeds as one ``jax.vmap``-ped ``jax.jit`` program. Larger fitness is
better. The batch size ``P`` is fixed when the strategy is built (``batch=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from dnas.core.registry import Registry
from dnas.core.types import PRNGKey


class Strategy(NamedTuple):
    """An optax-shaped discrete search strategy (state is any pytree).

    Attributes:
      init: ``(key) -> state``.
      ask: ``(state, key) -> (archs int32[P, n], state)``: the next architectures to score.
      tell: ``(state, archs int32[P, n], fitness f32[P] | f32[P, m]) -> state``.
    """

    init: Callable[[PRNGKey], Any]
    ask: Callable[[Any, PRNGKey], tuple[jax.Array, Any]]
    tell: Callable[[Any, jax.Array, jax.Array], Any]


STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")
"""Name -> factory ``(space, **kwargs) -> Strategy``."""

# Importing the modules registers the strategies (each file is one strategy).
from dnas.search.strategies import evolution, grid, nsga2, predictor, random_search, reinforce, sequential  # noqa: E402,F401

__all__ = ["STRATEGIES", "Strategy"]
