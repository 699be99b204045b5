"""Estimators combined by a predictor trained on architectures of known accuracy.

White, Zela, Ru, Liu & Hutter ("How Powerful are Performance Predictors in Neural
Architecture Search?", NeurIPS 2021; NASLib's ``OmniSeminasPredictor`` / ``omni`` family)
found that a model-based predictor whose features are cheap estimates (one-shot accuracy,
zero-cost proxies) beside the architecture encoding beats every family alone. The
``combined`` estimator is that: ``T`` architectures drawn with a fixed seed get their true
accuracy from a NAS-Bench-201 table (what ``T`` trainings would measure), every feature
estimator scores them, and gradient-boosted trees (default) or ridge regression
(:func:`fit_feature_groups`) map the features to accuracy.

It never uses the accuracy of an architecture it is asked to rank: only the ``T`` training
rows are read from the table, and a queried architecture that is one of them is predicted by
the model refitted without it (and without every other queried training row).

Config::

    estimator = "combined"
    estimator_kwargs = {"features": [{"name": "oneshot", "kwargs": {"run_dir": "runs/fs"}},
                                     {"name": "zero_cost", "kwargs": {"proxies": "synflow,jacob_cov,naswot"}},
                                     {"name": "hardware", "kwargs": {"resolution": 32}}],
                        "train_archs": 100, "table": "", "accuracy": "cifar10_test_200ep"}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator, build_estimator
from dnas.estimate.nb201_table import table_path, table_values
from dnas.hardware.predictor import fit_ridge
from dnas.hardware.predictors.models import trees_regressor
from dnas.space.base import SearchSpace
from dnas.space.spaces import NB201Space


def encoding(space: SearchSpace, vecs: np.ndarray) -> np.ndarray:
    """The one-hot encoding of architectures ``int32[P, n]``: ``f64[P, Σ candidates]``."""
    vecs = np.asarray(vecs, np.int64)
    cols = [np.eye(int(k))[vecs[:, i]] for i, k in enumerate(space.num_candidates)]
    return np.concatenate(cols, axis=1)


MODELS = ("trees", "ridge")
MISSING = -1e29  # feature values at or below this are a proxy's "no score" (the zero_cost estimator's -1e30)


def _clean(g: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Missing values (non-finite, or the -1e30 a proxy gives a cell it cannot score) set to
    the training rows' finite minimum of their column, so one such cell cannot dominate."""
    g = np.asarray(g, np.float64)
    return np.where(np.isfinite(g) & (g > MISSING), g, low)


def fit_feature_groups(groups: Sequence[np.ndarray], y: np.ndarray, model: str = "trees", seed: int = 0) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """The combined estimator's model, fitted on feature groups of ``T`` training cells.

    ``trees``: gradient-boosted regression trees over all groups' columns
    (:func:`dnas.hardware.predictors.models.trees_regressor`, the project's tree defaults),
    the model family White et al. (NeurIPS 2021) found best once zero-cost features are
    added (NASLib's ``omni`` predictors). ``ridge``: ridge regression over the standardised
    groups, one penalty per group, chosen by exact leave-one-out error
    (:func:`dnas.hardware.predictor.fit_ridge`). Either way a missing value (non-finite or
    at most ``MISSING``) becomes its column's training minimum.

    Args:
      groups: ``f64[T, d_g]`` per group, the training rows' features.
      y: ``f64[T]`` their accuracies.
      model: ``trees`` or ``ridge``.
      seed: the trees' row subsampling.
    Returns:
      ``predict(groups) -> f64[P]`` for new rows given as the same groups ``f64[P, d_g]``.
    """
    if model not in MODELS:
        raise DnasError(f"combined estimator model {model!r} is unknown; use one of {', '.join(MODELS)}")
    raw = [np.asarray(g, np.float64) for g in groups]
    low = [np.array([c[np.isfinite(c) & (c > MISSING)].min(initial=0.0) for c in g.T]) for g in raw]
    groups = [_clean(g, lo) for g, lo in zip(raw, low)]
    y = np.asarray(y, np.float64)
    if model == "trees":
        trees = trees_regressor(seed).fit(np.concatenate(groups, axis=1), y)
        return lambda gs: np.asarray(trees.predict(np.concatenate([_clean(g, lo) for g, lo in zip(gs, low)], axis=1)), np.float64)
    scale = [(g.mean(0), np.where(g.std(0) > 1e-12, g.std(0), 1.0)) for g in groups]
    ridge = fit_ridge([(g - m) / s for g, (m, s) in zip(groups, scale)], y)
    return lambda gs: ridge.predict(np.concatenate([(_clean(g, lo) - m) / s for g, lo, (m, s) in zip(gs, low, scale)], axis=1))


def combined(space: SearchSpace, features: Sequence[Mapping[str, Any]] = (), train_archs: int = 100, table: str = "",
             accuracy: str = "cifar10_test_200ep", use_encoding: bool = True, model: str = "trees", seed: int = 0) -> Estimator:
    """A ridge predictor over feature estimators' metrics and the cell encoding.

    Args:
      space: an NB201 cell space with the benchmark's ops (the table gives the training targets).
      features: estimators whose metrics are features, each ``{"name": registered name,
        "kwargs": {...}}`` (e.g. ``oneshot``, ``zero_cost``); every metric they return is used.
      train_archs: ``T``, the architectures with known accuracy the predictor is fitted on.
      table: the NB201 table CSV ('' = the shared one).
      accuracy: the table column that is the target.
      use_encoding: add the one-hot encoding as a feature group.
      model: ``trees`` (gradient-boosted trees; needs xgboost) or ``ridge``
        (:func:`fit_feature_groups`).
      seed: draws the ``T`` training architectures (and seeds the trees).
    Returns:
      an :class:`Estimator` with the metric ``combined_acc`` (predicted accuracy) and the cost
      of its feature estimators (the ``T`` trainings are paid once, not per query).
    """
    if not isinstance(space, NB201Space) or tuple(space.ops) != tuple(NB201Space().ops):
        raise DnasError("the combined estimator is fitted on a NAS-Bench-201 table: search space='nb201' with its default ops")
    if not features and not use_encoding:
        raise DnasError("the combined estimator needs features: name feature estimators or keep use_encoding=True")
    if model not in MODELS:
        raise DnasError(f"combined estimator model {model!r} is unknown; use one of {', '.join(MODELS)}")
    if int(train_archs) < 3:
        raise DnasError(f"the combined estimator needs train_archs >= 3 architectures of known accuracy, got {train_archs}")
    parts = []
    for f in features:
        if not isinstance(f, Mapping) or "name" not in f:
            raise DnasError(f"each combined feature is {{'name': estimator, 'kwargs': {{...}}}}, got {f!r}")
        if f["name"] in ("combined", "nb201_table"):
            raise DnasError(f"{f['name']!r} cannot be a feature of the combined estimator (it would read the target)")
        parts.append(build_estimator(str(f["name"]), space, dict(f.get("kwargs") or {})))
    path = table_path(table)
    train = space.distinct_samples(int(train_archs), jax.random.key(seed))
    y_train = table_values(path, train, accuracy)  # the only accuracies this estimator reads
    key = jax.random.key(seed + 1)

    def groups(vecs: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        feats, cost = [], np.zeros(len(vecs))
        for est in parts:
            metrics, c = est.evaluate(jnp.asarray(vecs), key)
            feats.append(np.stack([np.asarray(metrics[m], np.float64) for m in est.metrics], axis=1))
            cost = cost + np.asarray(c, np.float64)
        return feats + ([encoding(space, vecs)] if use_encoding else []), cost

    g_train, _ = groups(train)
    codes = {v.tobytes(): i for i, v in enumerate(train.astype(np.int32))}

    def fit(keep: np.ndarray) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
        return fit_feature_groups([g[keep] for g in g_train], y_train[keep], model, seed)

    full = fit(np.ones(len(train), bool))

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        del key  # a function of the architectures and the seed
        vecs = np.asarray(archs, np.int32)
        gs, cost = groups(vecs)
        seen = [codes.get(v.tobytes()) for v in vecs]
        keep = np.ones(len(train), bool)
        keep[[i for i in seen if i is not None]] = False
        if keep.sum() < 3:
            raise DnasError("the combined estimator was asked about nearly all of its training architectures; raise train_archs")
        predict = full if keep.all() else fit(keep)  # a queried training row never informs its own score
        return {"combined_acc": jnp.asarray(predict(gs), jnp.float32)}, jnp.asarray(cost, jnp.float32)

    return Estimator(evaluate, ("combined_acc",), False, 1e-3, lambda v: space.arch_str(np.asarray(v)))


ESTIMATORS.add("combined", combined)
