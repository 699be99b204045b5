"""Zero-cost proxies as an estimator (Abdelfattah et al. 2021; Mellor et al. 2021).

``ESTIMATORS["zero_cost"](space, proxies="naswot", ...)`` scores architectures with
:class:`dnas.estimate.zero_cost.score.ZeroCostScorer` on one fixed training batch: a strategy
searching over it is NASWOT's zero-shot search (score N cells, keep the best). It runs
host-side (``pure=False``: a Python loop over one compiled function), so the multitrial
driver uses its step loop.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.data.datasets import get_dataset, normalize, sample_batch
from dnas.estimate import ESTIMATORS, Estimator
from dnas.estimate.hypernet import Smash
from dnas.estimate.zero_cost.proxies import check_names
from dnas.estimate.zero_cost.score import ZeroCostScorer
from dnas.space.base import SearchSpace


def zero_cost(
    space: SearchSpace,
    proxies: str = "naswot",
    dataset: str = "cifar10",
    data_dir: str = "",
    batch_size: int = 64,
    C: int = 16,
    seed: int = 0,
) -> Estimator:
    """Zero-cost proxy scores as metrics.

    Args:
      space: any registered space whose supernet takes per-label indices.
      proxies: comma-separated registered proxy names (``vote`` is not per-architecture).
      dataset, data_dir: where the scoring batch comes from (``dnas.data.datasets``).
      batch_size: the batch every architecture sees (NASWOT: 128; zero-cost-nas: 64).
      C: the network's initial channels.
      seed: the batch's and the weights' seed: an architecture's score is a function of
        (architecture, seed), the same whichever strategy asks and whenever.
    Returns:
      an :class:`Estimator` with one metric per proxy (``f32[P]``; NaN/-inf, e.g. NASWOT's
      singular kernel of a cell without a path, set to -1e30) and cost the measured seconds
      of scoring per architecture. The key is unused. synflow is reported as
      ``log10_synflow``: its values on NB201 reach 1e49, past float32's range, and a
      strategy needs only the order.
    """
    names = check_names(proxies)
    if "vote" in names:
        raise DnasError("the zero_cost estimator scores one architecture at a time; 'vote' ranks a set (use dnas zero-cost)")
    k_batch, k_score = jax.random.split(jax.random.key(seed))
    x, y, classes = sample_batch(dataset, data_dir or None, batch_size, k_batch)
    scorer = ZeroCostScorer(space, names, C=C, num_classes=classes, in_channels=x.shape[-1], batch_shape=x.shape)

    metric = {n: ("log10_synflow" if n == "synflow" else n) for n in names}

    def safe(name: str, v: np.ndarray) -> np.ndarray:
        v = np.log10(np.maximum(v, 1e-300)) if name == "synflow" else np.asarray(v, np.float64)
        return np.where(np.isfinite(v), v, -1e30)  # the same value whatever else is in the batch

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        del key  # the scores are a function of (architecture, seed)
        t = time.perf_counter()
        s = scorer.score(np.asarray(archs), (x, y), k_score)
        per = (time.perf_counter() - t) / max(len(archs), 1)
        return {metric[n]: jnp.asarray(safe(n, s[n]), jnp.float32) for n in names}, jnp.full((len(archs),), per, jnp.float32)

    return Estimator(evaluate, tuple(metric.values()), False, 1e-3, lambda vec: str(space.names(np.asarray(vec))))


ESTIMATORS.add("zero_cost", zero_cost)


def smash(
    space: SearchSpace, dataset: str = "cifar10", data_dir: str = "", steps: int = 500, batch_size: int = 64, C: int = 8, val: int = 500, seed: int = 0
) -> Estimator:
    """A SMASH hypernetwork as an estimator (Brock et al. 2018; :mod:`dnas.estimate.hypernet`).

    Building it trains the hypernetwork for ``steps`` batches of ``batch_size`` training
    images, one random cell per batch; ``evaluate`` then gives each cell's accuracy and
    negative loss on the last ``val`` training images (held out of its training) with generated weights.

    Returns:
      an :class:`Estimator` with metrics ``smash_acc`` and ``smash_neg_loss`` (``f32[P]``);
      cost the measured seconds per architecture. The key is unused.
    """
    if steps < 1 or val < 1:
        raise DnasError(f"smash needs steps >= 1 and val >= 1, got {steps} and {val}")
    ds = get_dataset(dataset, data_dir or None)
    if val >= len(ds.train_y):
        raise DnasError(f"smash holds out val={val} training images for ranking, but {dataset} has {len(ds.train_y)}; lower val")
    k_init, k_train = jax.random.split(jax.random.key(seed))
    # The hypernetwork trains on all but the last ``val`` training images and ranks cells on
    # those: a search signal never reads the test split (reported for the final choice only).
    xs = np.asarray(normalize(jnp.asarray(ds.train_x), ds.mean, ds.std))
    ys = ds.train_y.astype(np.int32)
    sm = Smash(space, C=C, num_classes=ds.num_classes, in_channels=ds.train_x.shape[-1], key=k_init)
    sm.train(xs[:-val], ys[:-val], steps=steps, batch_size=batch_size, key=k_train)
    xv, yv = xs[-val:], ys[-val:]

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        del key
        t = time.perf_counter()
        acc, loss = sm.rank(np.asarray(archs), xv, yv)
        per = (time.perf_counter() - t) / max(len(archs), 1)
        return {"smash_acc": jnp.asarray(acc), "smash_neg_loss": jnp.asarray(-loss)}, jnp.full((len(archs),), per, jnp.float32)

    return Estimator(evaluate, ("smash_acc", "smash_neg_loss"), False, 1e-3, lambda vec: str(space.names(np.asarray(vec))))


ESTIMATORS.add("smash", smash)
