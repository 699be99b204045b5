"""Train-from-scratch estimator with the usual low-fidelity proxies.

It lives in the run layer, not beside the other estimators: each evaluation is a real
training run (:func:`dnas.run.train.run_train`: its own directory, checkpoints, resume),
and an estimator that launches runs sits above what runs them.

Each architecture is trained by dnas' own retraining code (:func:`dnas.run.train.run_train`,
real training) at reduced cost: fewer epochs (or a step cap), a data subset, a smaller
network (fewer channels, fewer cells per stage) - the proxies NAS papers use to rank
architectures cheaply (e.g. Zoph et al., "Learning Transferable Architectures", CVPR 2018
train candidates for 20 epochs; Zhou et al., "EcoNAS", CVPR 2020 study channel, resolution,
epoch and sample-size reductions). Input resolution is not offered: the training code
reads images at their stored size.

Not a pure function: it runs on the host, so a search over it runs its seeds one after the
other (:func:`dnas.run.multitrial.run_multitrial` does this). Every architecture trains in its
own folder under ``workdir``; a finished one is read back instead of retrained, so a
resumed search sees the same metrics and costs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

import ml_collections

from dnas.core.errors import DnasError
from dnas.core.io import atomic_write_json
from dnas.estimate import ESTIMATORS, Estimator
from dnas.run.train import run_train, train_defaults
from dnas.space.base import SearchSpace
from dnas.space.spaces import NB201Space

METRICS = ("val_acc", "val_loss", "test_acc", "test_loss", "params", "macs", "train_s")


def train(
    space: SearchSpace,
    workdir: str = "",
    dataset: str = "digits",
    data_dir: str = "",
    epochs: int = 1,
    max_steps: int = 0,
    max_train_examples: int = 256,
    max_test_examples: int = 256,
    valid_examples: int = 64,
    init_channels: int = 4,
    layers: int = 1,
    batch_size: int = 32,
    lr: float = 0.05,
    seed: int = 0,
) -> Estimator:
    """An estimator that trains every architecture from scratch (NB201 cells).

    Args:
      space: ``NB201Space()``: its vectors are turned into NB201 ``arch_str`` genotypes.
      workdir: folder for the per-architecture training runs (the multitrial driver sets
        ``<run dir>/trained``).
      dataset, data_dir: what to train on (``dnas.data.datasets``; the embedded ``digits`` by default).
      epochs, max_steps: training length proxy (``max_steps`` > 0 caps the steps).
      max_train_examples, max_test_examples: data-subset proxy (0 = all).
      valid_examples: training examples held out as the validation split whose accuracy
        is the search signal (``val_acc``); the test split is only reported.
      init_channels, layers: network-size proxy (stem channels, cells per stage).
      batch_size, lr, seed: training settings (SGD, cosine, as ``dnas train``).
    Returns:
      an :class:`Estimator` (``pure=False``) whose metrics are ``val_acc`` (%, on the held-out
      validation split: search on this), ``val_loss``, ``test_acc`` (%, the test split:
      report it for the final architecture only), ``test_loss``, ``params``, ``macs`` and
      ``train_s``; the cost is ``train_s``,
      the measured wall time of the first training of that architecture.
    """
    if not isinstance(space, NB201Space) or not space.shared:
        raise DnasError("the train estimator builds NB201 cells; use space='nb201' (shared=True)")
    if not workdir:
        raise DnasError("the train estimator needs a workdir for its training runs")
    root = Path(workdir)

    if not 0 < valid_examples < (max_train_examples or 10**9):
        raise DnasError(f"the train estimator needs 0 < valid_examples < max_train_examples, got {valid_examples} and {max_train_examples}")

    describe = space.arch_str

    def config_for(arch_str: str) -> ml_collections.ConfigDict:
        c = train_defaults()
        c.genotype, c.dataset, c.data_dir = arch_str, dataset, data_dir
        c.epochs, c.max_steps, c.batch_size, c.lr, c.seed = epochs, max_steps, batch_size, lr, seed
        c.max_train_examples, c.max_test_examples, c.valid_examples = max_train_examples, max_test_examples, valid_examples
        c.init_channels, c.layers = init_channels, layers
        # The proxies train briefly: no regularisers meant for 600-epoch runs.
        c.auxiliary, c.drop_path_prob, c.cutout = False, 0.0, 0
        c.log_every_steps, c.checkpoint_every_steps = 10_000, 10_000
        return c

    def train_one(arch_str: str) -> dict[str, float]:
        folder = root / hashlib.sha1(arch_str.encode()).hexdigest()[:16]
        done = folder / "estimate.json"
        if done.exists():  # trained before (this search or a resumed one): same numbers
            return json.loads(done.read_text())
        if folder.exists():  # a training killed midway: start it again from scratch
            shutil.rmtree(folder)
        t = time.perf_counter()
        r = run_train(config_for(arch_str), folder, log=lambda m: None)
        out = {"val_acc": 100.0 * float(r["val_acc"]), "val_loss": float(r["val_loss"]),
               "test_acc": 100.0 * float(r["test_acc"]), "test_loss": float(r["test_loss"]), "params": float(r.get("params", 0)),
               "macs": float(r.get("macs", 0)), "train_s": time.perf_counter() - t}
        atomic_write_json(done, out, indent=None)
        return out

    def evaluate(archs, key) -> tuple[dict[str, np.ndarray], np.ndarray]:
        del key  # the training seed is a config value, so results are cacheable
        rows = [train_one(describe(a)) for a in np.asarray(archs)]
        metrics = {k: np.array([r[k] for r in rows], np.float32) for k in METRICS}
        return metrics, metrics["train_s"]

    return Estimator(evaluate, METRICS, False, 1.0, describe)


ESTIMATORS.add("train", train)
