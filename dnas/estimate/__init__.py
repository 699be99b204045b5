"""Estimators: how good (and how costly) architectures are.

An estimator maps ``archs int32[P, n]`` and a key to ``(metrics dict[str, f32[P]],
cost f32[P])``, the cost being the seconds of training the evaluation stands for. It
never knows which strategy asks (DESIGN.md). ``ESTIMATORS[name](space, **kwargs)``
returns an :class:`Estimator`; a ``pure`` one (a table lookup) is jittable, so a search
over it runs many seeds as one vmapped program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from dnas.core.registry import Registry
from dnas.space.base import JointSpace, SearchSpace


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
"""Name -> factory ``(space, **kwargs) -> Estimator``. A factory that understands joint
(network + hardware) spaces itself sets ``joint = True`` on itself; any other is built on
the network part (:func:`for_space`)."""


def hardware_names(space: JointSpace, hw_vec: Any) -> str:
    """A hardware vector as ``rows=16 cols=32 dataflow=ws ...`` (labels without ``hw/``)."""
    return " ".join(f"{l.split('/', 1)[-1]}={v}" for l, v in space.hw_space.names(np.asarray(hw_vec)).items())


def network_part(inner: Estimator, space: JointSpace) -> Estimator:
    """``inner``, an estimator of ``space.net_space``, evaluating joint vectors by their
    network part: accuracy does not depend on the accelerator the network runs on."""
    n = space.num_network

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        return inner.evaluate(archs[..., :n], key)

    def describe(vec: Any) -> str:
        v = np.asarray(vec)
        return f"{inner.describe(v[:n])} @ {hardware_names(space, v[n:])}"

    return Estimator(evaluate, inner.metrics, inner.pure, inner.min_cost, describe)


def for_space(factory: Callable[..., Estimator], space: SearchSpace) -> Callable[..., Estimator]:
    """``factory`` adapted to ``space``: on a :class:`~dnas.space.base.JointSpace`, a factory
    without ``joint = True`` is built on the network space and wrapped by
    :func:`network_part`; otherwise ``factory`` itself."""
    if not isinstance(space, JointSpace) or getattr(factory, "joint", False):
        return factory

    @functools.wraps(factory)
    def build(_space: SearchSpace, **kwargs: Any) -> Estimator:
        return network_part(factory(space.net_space, **kwargs), space)

    return build


def build_estimator(name: str, space: SearchSpace, kwargs: Mapping[str, Any] | None = None) -> Estimator:
    """The registered estimator ``name`` for ``space`` (joint spaces: :func:`for_space`)."""
    return for_space(ESTIMATORS[name], space)(space, **dict(kwargs or {}))

from dnas.estimate import combined, hardware, nb201_table, oneshot, zero_cost  # noqa: E402,F401  (registers them)

__all__ = ["ESTIMATORS", "Estimator", "build_estimator", "for_space", "hardware_names", "network_part"]
