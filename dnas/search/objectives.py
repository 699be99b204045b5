"""Objectives: metrics of an estimator -> the fitness a strategy maximises.

``OBJECTIVES[name](**kwargs)`` returns ``fn(metrics dict[str, f32[P]]) -> f32[P]`` (or
``f32[P, m]`` for several objectives); all pure and jittable.

- ``accuracy``: one metric.
- ``hard``: the metric, or ``penalty`` when any ``limits`` entry is exceeded (rejection,
  as in constrained NAS such as HW-NAS-Bench's use; Li et al., ICLR 2021).
- ``mnasnet``: ``acc * (lat / T) ** w``, ``w = alpha`` if ``lat <= T`` else ``beta``
  (Tan et al., "MnasNet", CVPR 2019, Eq. 2; soft constraint alpha = beta = -0.07).
- ``tunas``: ``acc + beta * |lat / T - 1|`` with ``beta < 0`` (Bender et al., "Can
  Weight Sharing Outperform Random Architecture Search?", CVPR 2020, the absolute-value
  reward; -0.07 there for the accuracy as a fraction).
- ``weighted``: ``sum_i w_i * metric_i``.
- ``multi``: several metrics stacked, ``"-name"`` to minimise one (NSGA-II maximises);
  optional hard ``limits`` reject an architecture from the front.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from dnas.core.errors import DnasError
from dnas.core.registry import Registry

Objective = Callable[[Mapping[str, jax.Array]], jax.Array]
OBJECTIVES: Registry[Callable[..., Objective]] = Registry("objective")


def _get(metrics: Mapping[str, jax.Array], name: str) -> jax.Array:
    try:
        return metrics[name]
    except KeyError:
        raise DnasError(f"the objective needs metric {name!r}; the estimator gives {', '.join(sorted(metrics))}") from None


def accuracy(metric: str = "cifar10_val_12ep") -> Objective:
    """Fitness = ``metrics[metric]``, ``f32[P]``."""
    return lambda m: _get(m, metric)


def hard(metric: str = "cifar10_val_12ep", limits: Mapping[str, float] | None = None, penalty: float = -1.0) -> Objective:
    """Fitness = ``metrics[metric]`` where every ``metrics[k] <= limits[k]``, else ``penalty``.

    ``penalty`` is finite on purpose: REINFORCE's reward baseline and a predictor's
    regression need finite rewards; -1 ranks below any accuracy in [0, 100].
    """
    if not limits:
        raise DnasError("the hard objective needs limits, e.g. objective_kwargs={'limits': {'lat_ms_pixel3': 10.0}}")
    limits = dict(limits)

    def fn(m):
        ok = jnp.all(jnp.stack([_get(m, k) <= v for k, v in limits.items()]), axis=0)
        return jnp.where(ok, _get(m, metric), penalty)

    return fn


def mnasnet(metric: str = "cifar10_val_12ep", latency: str = "lat_ms_pixel3", target: float = 10.0, alpha: float = -0.07, beta: float = -0.07) -> Objective:
    """MnasNet's soft constraint ``acc * (lat / T) ** w`` (Tan et al. 2019, Eq. 2); w <= 0."""
    if alpha > 0 or beta > 0 or target <= 0:
        raise DnasError(f"mnasnet needs alpha, beta <= 0 (a slower model must score lower) and target > 0; got {alpha}, {beta}, {target}")

    def fn(m):
        ratio = _get(m, latency) / target
        return _get(m, metric) * ratio ** jnp.where(ratio <= 1.0, alpha, beta)

    return fn


def tunas(metric: str = "cifar10_val_12ep", latency: str = "lat_ms_pixel3", target: float = 10.0, beta: float = -0.07) -> Objective:
    """TuNAS' absolute reward ``acc + beta * |lat / T - 1|`` (Bender et al. 2020); beta < 0."""
    if beta > 0 or target <= 0:
        raise DnasError(f"tunas needs beta <= 0 (a penalty for missing the target) and target > 0; got beta={beta}, target={target}")
    return lambda m: _get(m, metric) + beta * jnp.abs(_get(m, latency) / target - 1.0)


def weighted(weights: Mapping[str, float] | None = None) -> Objective:
    """Fitness = ``sum_k weights[k] * metrics[k]``."""
    if not weights:
        raise DnasError("the weighted objective needs weights, e.g. {'cifar10_val_12ep': 1.0, 'lat_ms_pixel3': -0.5}")
    weights = dict(weights)
    return lambda m: sum(w * _get(m, k) for k, w in weights.items())


def multi(metrics: Sequence[str] = ("cifar10_val_12ep", "-lat_ms_pixel3"), limits: Mapping[str, float] | None = None,
          penalty: float = -1e6) -> Objective:
    """Several objectives ``f32[P, m]``, all to maximise; a leading ``-`` negates a metric.

    Args:
      metrics: the objectives, e.g. ``["cifar10_val_12ep", "-latency_ms", "-area_mm2"]``.
      limits: hard constraints ``{metric: upper bound}`` (an area or power budget): an
        architecture over any limit gets ``penalty`` in every objective, so it is dominated
        by every feasible one and never on the front (rejection, as :func:`hard`).
      penalty: the objectives of a rejected architecture; finite, so crowding distances
        and predictors stay finite.
    """
    if len(metrics) < 1:
        raise DnasError("the multi objective needs at least one metric")
    spec = [(k[1:], -1.0) if k.startswith("-") else (k, 1.0) for k in metrics]
    limits = dict(limits or {})

    def fn(m):
        objs = jnp.stack([s * _get(m, k) for k, s in spec], axis=-1)
        if not limits:
            return objs
        ok = jnp.all(jnp.stack([_get(m, k) <= v for k, v in limits.items()]), axis=0)
        return jnp.where(ok[..., None], objs, penalty)

    return fn


for _name, _fn in (("accuracy", accuracy), ("hard", hard), ("mnasnet", mnasnet), ("tunas", tunas), ("weighted", weighted), ("multi", multi)):
    OBJECTIVES.add(_name, _fn)
