"""The one-shot estimator: validation accuracy of architectures with a trained supernet's
shared weights (:mod:`dnas.estimate.oneshot`), so a discrete strategy searches over the supernet:
evolution over it is SPOS' search (Guo et al., ECCV 2020), random search over it RSPS'
(Li & Talwalkar, UAI 2019).

Not a pure function (it runs a compiled evaluator per batch of architectures on the host).
Its cost is 1 per architecture, so a multi-trial ``budget_s`` counts queries: the training
is paid once, by the supernet, and a measured time would make resumed searches differ.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator
from dnas.space.base import SearchSpace


def oneshot(space: SearchSpace, run_dir: str = "", recalibrate: int = 0, val_batches: int = 8, seed: int = 0, batch_stats: bool = False) -> Estimator:
    """An estimator reading the supernet of the search run in ``run_dir``.

    Args:
      space: the space the strategy searches (must have the supernet's labels).
      run_dir: a ``dnas search`` run directory with a checkpoint.
      recalibrate: training batches for BatchNorm recalibration per architecture.
      batch_stats: normalise each validation batch with its own statistics instead.
      val_batches: validation batches (from the run's held-out α split).
      seed: draws those batches.
    """
    from dnas.estimate.oneshot import OneShotEvaluator

    if not run_dir:
        raise DnasError("the oneshot estimator needs estimator_kwargs.run_dir: a dnas search run directory with a trained supernet")
    ev = OneShotEvaluator.from_run(run_dir, recalibrate=recalibrate, val_batches=val_batches, seed=seed, batch_stats=batch_stats)
    if tuple(ev.space.labels) != tuple(space.labels):
        raise DnasError(f"the supernet in {run_dir!r} has other labels than the searched space; search the space it was trained on")

    def evaluate(archs, key):
        out = ev.evaluate(np.asarray(archs))
        return {"oneshot_acc": jnp.asarray(out["acc"]), "oneshot_loss": jnp.asarray(out["loss"])}, jnp.ones(len(out["acc"]))

    return Estimator(evaluate, ("oneshot_acc", "oneshot_loss"), False, 1.0, lambda v: str(space.names(np.asarray(v))))


ESTIMATORS.add("oneshot", oneshot)
