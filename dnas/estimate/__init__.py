"""Estimators: how good (and how costly) architectures are.

An estimator maps ``archs int32[P, n]`` and a key to ``(metrics dict[str, f32[P]],
cost f32[P])``, the cost being the seconds of training the evaluation stands for. It
never knows which strategy asks (DESIGN.md). ``ESTIMATORS[name](space, **kwargs)``
returns an :class:`Estimator`; a ``pure`` one (a table lookup) is jittable, so a search
over it runs many seeds as one vmapped program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from dnas.core.registry import Registry


class Estimator(NamedTuple):
    """Attributes:
      evaluate: ``(archs int32[P, n], key) -> (metrics dict[str, f32[P]], cost f32[P])``.
      metrics: the metric names ``evaluate`` returns.
      pure: True when ``evaluate`` is a pure JAX function (jit/vmap over it is allowed).
      min_cost: a lower bound of one evaluation's cost (sizes budget loops).
      describe: ``int32[n] -> str``, a readable architecture (e.g. the NB201 arch_str).
    """

    evaluate: Callable[[jax.Array, jax.Array], tuple[dict[str, jax.Array], jax.Array]]
    metrics: tuple[str, ...]
    pure: bool
    min_cost: float
    describe: Callable[[Any], str]


ESTIMATORS: Registry[Callable[..., Estimator]] = Registry("estimator")
"""Name -> factory ``(space, **kwargs) -> Estimator``."""

# The estimator modules register themselves (oneshot_estimator, not the evaluator module
# oneshot; zero_cost's estimator module, not the package, which does not register it).
from dnas.estimate import hardware, nb201_table, oneshot_estimator, train  # noqa: E402,F401
from dnas.estimate.zero_cost import estimator as _zero_cost_estimator  # noqa: E402,F401

__all__ = ["ESTIMATORS", "Estimator"]
