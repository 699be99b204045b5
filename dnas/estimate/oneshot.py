"""One-shot evaluation: the validation accuracy of many discrete architectures with one
supernet's shared weights, compiled once for all of them.

The supernet runs in index mode (``space.to_inputs(vec)``: one ``int32`` per label, so every
mixed op is a ``lax.switch`` and only the chosen op runs), and the architectures go through
``lax.map`` inside one jitted function (under ``vmap`` a switch would run every branch).
So any number of architectures, in chunks of a fixed size, costs one compilation. The
chunks are split over every device of a mesh (:class:`dnas.core.sharding.RowSharded`: each
device evaluates its own ``chunk`` architectures with the same program, processes included),
so 1 device, N devices and N processes give the same accuracies.

Three BatchNorm modes: the supernet's running statistics; batch statistics (every
validation batch normalised by its own, NAS-Bench-201's ``track_running_stats=False``);
and BatchNorm recalibration (Guo et al., "Single Path One-Shot NAS", ECCV 2020; Cai et al.,
"Once-for-All", ICLR 2020): the running statistics a supernet accumulates mix every
sampled path, so each subnet's are re-estimated before it is evaluated, from ``R`` training
batches in training mode, starting from zero and divided by ``1 - (1 - m)^R`` (the
running-average weights of ``R`` updates with momentum ``m``; what remains is an
exponentially weighted mean of the batches' statistics).

Library use::

    ev = OneShotEvaluator.from_run("runs/spos-nb201", recalibrate=4, val_batches=8)
    acc = ev.accuracy(vecs)        # int32[N, n] -> f32[N]

The same evaluator is the ``oneshot`` estimator of the discrete strategies
(:data:`dnas.estimate.ESTIMATORS`): evolution over it is SPOS' search.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from dnas.core.sharding import RowSharded
from dnas.estimate import ESTIMATORS, Estimator
from dnas.data.datasets import batch_indices, get_dataset, normalize, search_split
from dnas.estimate.supernet import load_supernet
from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace
from dnas.space.fewshot import FewShotSplit
from dnas.space.spaces import NB201Space


def make_evaluate(
    space: SearchSpace, model: nnx.Module, *, recalibrate: int = 0, momentum: float = 0.1, batch_stats: bool = False,
    split: FewShotSplit | None = None,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """The pure one-shot evaluation function of a supernet.

    Args:
      space: the supernet's space (labels and the vector order).
      model: the supernet (its graph structure; the values come as arguments).
      recalibrate: training batches per architecture to re-estimate BatchNorm statistics
        (0: use the supernet's running statistics).
      momentum: the BatchNorm momentum of the supernet's layers (dnas': 0.1).
      batch_stats: normalise every validation batch with its own statistics (BatchNorm in
        training mode, nothing kept), as NAS-Bench-201's weight-sharing baselines evaluate
        (``track_running_stats=False``, Dong & Yang, ICLR 2020); excludes ``recalibrate``.
      split: a few-shot run's split (Zhao et al., ICML 2021): ``alpha``, ``weights`` and
        ``stats`` are then stacked ``[K, ...]`` and each architecture is evaluated with the
        sub-supernet ``split.route(vec)`` (an index into the stack: still one program).

    Returns:
      ``evaluate(alpha, weights, stats, vecs int32[P, n], recal_x f32[R, B, H, W, C],
      val_x f32[K, B, H, W, C], val_y int32[K, B]) -> (acc f32[P], loss f32[P])``, inputs
      already normalised; jit it once.
    """
    if batch_stats and recalibrate:
        raise DnasError("batch statistics and BatchNorm recalibration exclude each other: pick one")
    model.train()
    g_train = nnx.graphdef(model)
    model.eval()
    g_eval = g_train if batch_stats else nnx.graphdef(model)
    model.train()
    correction = 1.0 - (1.0 - momentum) ** max(recalibrate, 1)

    def one(alpha, weights, stats, vec, recal_x, val_x, val_y):
        if split is not None:
            k = split.route(vec)
            alpha, weights, stats = (jax.tree_util.tree_map(lambda x: x[k], t) for t in (alpha, weights, stats))
        arch = space.to_inputs(vec)
        if recalibrate:
            stats = recalibrated_stats(g_train, alpha, weights, stats, arch, recal_x, correction)

        def batch(carry, xy):
            x, y = xy
            logits = nnx.merge(g_eval, alpha, weights, stats, copy=True)(x, arch).logits
            hits = jnp.sum(jnp.argmax(logits, -1) == y)
            loss = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
            return (carry[0] + hits, carry[1] + loss), None

        (hits, loss), _ = jax.lax.scan(batch, (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)), (val_x, val_y))
        n = val_y.size
        return hits / n, loss / n

    def evaluate(alpha, weights, stats, vecs, recal_x, val_x, val_y):
        return jax.lax.map(lambda v: one(alpha, weights, stats, v, recal_x, val_x, val_y), vecs)

    return evaluate


def recalibrated_stats(g_train: nnx.GraphDef, alpha: Any, weights: Any, stats: Any, arch: Any, recal_x: jax.Array, correction: float) -> Any:
    """BatchNorm statistics of the subnet ``arch`` re-estimated on ``recal_x f32[R, B, H, W, C]``.

    Every running statistic restarts from zero and follows ``R`` training-mode passes of
    the subnet, divided by ``correction = 1 - (1 - m)^R``. A BatchNorm the subnet does not
    run keeps the supernet's value: only the sampled path's statistics change.

    Which BatchNorms ran is read from the program, not from the values: a BatchNorm that
    ran on an exactly-zero input (a convolution reading an NB201 node whose incoming edges
    are all ``none``) has exactly zero statistics too, and must keep them, as the derived
    network recalibrated on the same batches does. The passes run under ``jax.jvp`` with a
    tangent of ones on the starting statistics: every update ``(1 - m) old + m batch``
    multiplies a statistic's tangent by ``1 - m`` (the batch statistics do not depend on the
    running ones), and a statistic no pass touches (a candidate the switch did not take, in
    index mode; a module the path skips) comes out with its tangent exactly 1. So the
    tangent is a per-element "ran" counter, ``(1 - m)^k`` after ``k`` updates; the
    activations carry no tangent, so it costs a few multiplies per BatchNorm.
    """

    def passes(start):
        def recal(st, x):
            m = nnx.merge(g_train, alpha, weights, st, copy=True)
            m(x, arch)
            return nnx.state(m, nnx.BatchStat), None

        return jax.lax.scan(recal, start, recal_x)[0]

    zero = jax.tree_util.tree_map(jnp.zeros_like, stats)
    ones = jax.tree_util.tree_map(jnp.ones_like, stats)
    new, untouched = jax.jvp(passes, (zero,), (ones,))
    # Elementwise, not per leaf: in stacked edge layouts (EdgeScan, EdgeBatch) one leaf
    # holds a candidate's BatchNorm on several edges, some of which chose it.
    return jax.tree_util.tree_map(lambda n, t, old: jnp.where(t != 1, n / correction, old), new, untouched, stats)


@dataclasses.dataclass
class OneShotEvaluator:
    """Evaluates architectures of a trained supernet on fixed validation batches.

    Attributes:
      space, model: the supernet's space and module; alpha, weights, stats its state.
      val_x, val_y: ``K`` validation batches (normalised), ``f32[K, B, H, W, C]``, ``int32[K, B]``.
      recal_x: ``R`` training batches for BatchNorm recalibration (``R = 0``: none).
      chunk: architectures per device per compiled call (a shorter last call is padded).
      batch_stats: normalise with each validation batch's own statistics instead.
      mesh: a 1-D mesh whose devices split the architectures (None: the default device).
      split: a few-shot run's split (its state stacked over the sub-supernets), or None.
    """

    space: SearchSpace
    model: nnx.Module
    alpha: Any
    weights: Any
    stats: Any
    val_x: np.ndarray
    val_y: np.ndarray
    recal_x: np.ndarray
    chunk: int = 32
    compiles: int = 0
    batch_stats: bool = False
    mesh: Mesh | None = None
    split: FewShotSplit | None = None

    def __post_init__(self) -> None:
        fn = make_evaluate(self.space, self.model, recalibrate=len(self.recal_x), batch_stats=self.batch_stats, split=self.split)

        def counted(vecs, shared):
            self.compiles += 1  # runs once per trace, i.e. per compilation
            alpha, weights, stats, recal_x, val_x, val_y = shared
            acc, loss = fn(alpha, weights, stats, vecs, recal_x, val_x, val_y)
            return {"acc": acc, "loss": loss}

        self._evaluate = RowSharded(counted, self.mesh, self.chunk)
        # Placed once: every call reuses the replicated supernet and batches.
        self._shared = self._evaluate.put_shared((self.alpha, self.weights, self.stats, self.recal_x, self.val_x, self.val_y))

    def evaluate(self, vecs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"acc": f32[N], "loss": f32[N]}`` for ``vecs`` ``int32[N, n]``."""
        vecs = np.asarray(vecs, np.int32)
        if vecs.ndim != 2 or vecs.shape[1] != len(self.space.labels):
            raise DnasError(f"architectures must be int32[N, {len(self.space.labels)}], got shape {vecs.shape}")
        return self._evaluate(vecs, self._shared)

    def accuracy(self, vecs: np.ndarray) -> np.ndarray:
        """Validation accuracy ``f32[N]`` of ``vecs``."""
        return self.evaluate(vecs)["acc"]

    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, recalibrate: int = 0, val_batches: int = 8, batch_size: int = 0, seed: int = 0, chunk: int = 32,
        batch_stats: bool = False, mesh: Mesh | None = None,
    ) -> "OneShotEvaluator":
        """The evaluator of a search run's newest checkpoint (a supernet trained by
        ``dnas search``, e.g. SPOS: ``relax="uniform"``, ``update_alpha=False``), its
        architectures split over ``mesh``'s devices (None: the default device).

        Validation batches come from the run's α split (held out from weight training),
        recalibration batches from its weight split; both drawn with ``seed``.
        ``val_batches=0``: as many as the held-out split fills (every example of it but the
        remainder of a batch), so no draw of a few hundred images decides a ranking.
        """
        sup = load_supernet(run_dir)
        config = sup.config
        data = get_dataset(config["dataset"], config.get("data_dir") or None)
        if config.get("max_train_examples"):
            data = data.subset(n_train=config["max_train_examples"])
        d = data.downsample(int(config.get("downsample", 1)))
        w_idx, a_idx = search_split(len(d.train_y), config["train_portion"])
        bs = batch_size or int(config["batch_size"])
        if val_batches < 0:
            raise DnasError(f"val_batches must be >= 0 (0: the whole held-out split), got {val_batches}")
        val_batches = val_batches or max(len(a_idx) // bs, 1)  # 0: every held-out example a whole batch can hold
        key = jax.random.key(seed)

        def draw(idx: np.ndarray, n: int, k: int) -> np.ndarray:
            rows = [idx[batch_indices(jax.random.fold_in(key, k), len(idx), bs, i)] for i in range(n)]
            return np.stack(rows) if rows else np.zeros((0, bs), np.int64)

        vi, ri = draw(a_idx, val_batches, 1), draw(w_idx, recalibrate, 2)
        norm = lambda x: np.asarray(normalize(jnp.asarray(x), d.mean, d.std))  # noqa: E731
        val_x = norm(d.train_x[vi.reshape(-1)]).reshape(vi.shape + d.image_shape)
        recal_x = norm(d.train_x[ri.reshape(-1)]).reshape(ri.shape + d.image_shape) if recalibrate else np.zeros((0, bs) + d.image_shape, np.float32)
        return cls(sup.space, sup.model(), sup.alpha, sup.weights, sup.stats, val_x, d.train_y[vi], recal_x, chunk, batch_stats=batch_stats, mesh=mesh,
                   split=sup.split)


def timed_accuracy(ev: OneShotEvaluator, vecs: np.ndarray) -> tuple[np.ndarray, float]:
    """``(accuracy f32[N], seconds)`` of :meth:`OneShotEvaluator.accuracy` (compile included)."""
    t0 = time.perf_counter()
    acc = ev.accuracy(vecs)
    return acc, time.perf_counter() - t0


def oneshot(space: SearchSpace, run_dir: str = "", recalibrate: int = 0, val_batches: int = 8, seed: int = 0, batch_stats: bool = False,
            chunk: int = 1) -> Estimator:
    """An estimator reading the supernet of the search run in ``run_dir``.

    Args:
      space: the space the strategy searches (must have the supernet's labels).
      run_dir: a ``dnas search`` run directory with a checkpoint.
      recalibrate: training batches for BatchNorm recalibration per architecture.
      batch_stats: normalise each validation batch with its own statistics instead.
      val_batches: validation batches (from the run's held-out α split; 0: all it fills).
      seed: draws those batches.
      chunk: architectures per compiled call. A call is padded to a whole chunk, and an
        evolutionary strategy asks for one architecture at a time (SPOS' search), so the
        default 1 wastes nothing; the calls run one after another either way.
    """
    if not run_dir:
        raise DnasError("the oneshot estimator needs estimator_kwargs.run_dir: a dnas search run directory with a trained supernet")
    if int(chunk) < 1:
        raise DnasError(f"the oneshot estimator's chunk must be >= 1, got {chunk}")
    ev = OneShotEvaluator.from_run(run_dir, recalibrate=recalibrate, val_batches=val_batches, seed=seed, batch_stats=batch_stats, chunk=int(chunk))
    if tuple(ev.space.labels) != tuple(space.labels):
        raise DnasError(f"the supernet in {run_dir!r} has other labels than the searched space; search the space it was trained on")

    def evaluate(archs, key):
        out = ev.evaluate(np.asarray(archs))
        return {"oneshot_acc": jnp.asarray(out["acc"]), "oneshot_loss": jnp.asarray(out["loss"])}, jnp.ones(len(out["acc"]))

    def describe(v: Any) -> str:  # the benchmark's arch_str for an NB201 cell, as the table estimator names it
        v = np.asarray(v)
        return space.arch_str(v) if isinstance(space, NB201Space) and space.shared else str(space.names(v))

    return Estimator(evaluate, ("oneshot_acc", "oneshot_loss"), False, 1.0, describe)


ESTIMATORS.add("oneshot", oneshot)
