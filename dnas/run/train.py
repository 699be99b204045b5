"""Train a derived architecture from scratch: the second phase of every NAS paper.

DARTS' CIFAR recipe (``train.py``): SGD momentum 0.9, lr 0.025 cosine to 0 over the
epochs (stepped per epoch), weight decay 3e-4, grad-norm clip 5, cutout 16, drop-path
probability ramped linearly from 0 to ``drop_path_prob``, auxiliary head weighted 0.4.
The genotype decides the network (its space's ``network()``): a DARTS cell builds DARTS'
CIFAR network, an NB201 cell the NB201 network. Checkpointed (periodically, at the end, and
on SIGINT/SIGTERM) and resumable like the search; the test split is evaluated at the end
of every epoch (``epoch_test_acc`` / ``epoch_test_loss`` on the ``"event": "epoch"`` lines).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from dnas.core.checkpoint import Checkpointer, resume
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write_json
from dnas.data.datasets import DATASET_SHAPES, StepIndices, input_shape, augment, get_dataset, normalize, steps_per_epoch
from dnas.data.pipeline import Stream, step_batches
from dnas.estimate.inherit import check_init_from, inherit
from dnas.estimate.supernet import load_supernet
from dnas.hardware.counts import count_params, model_macs
from dnas.run.config import RUN_KINDS, RunKind, check_common, pipeline_defaults
from dnas.core.imports import import_files
from dnas.run.driver import SignalFlag, StepLoop, evaluate_split, run_in_workdir
from dnas.run.metrics import MetricWriter
from dnas.run.parallel import host_rows, make_mesh, replicate, shard_batch
from dnas.core.losses import cross_entropy
from dnas.search.bilevel import darts_weight_optimizer
from dnas.search.state import build_jitted, step_compiler_options
from dnas.space import genotype as G
from dnas.space.base import SPACES
from dnas.space.nets import build_eval_network


@struct.dataclass
class TrainState:
    """Weights, BatchNorm statistics, optimizer state, step and PRNG key."""

    step: jax.Array
    weights: nnx.State
    stats: nnx.State
    opt: optax.OptState
    rng: jax.Array


def train_defaults() -> ml_collections.ConfigDict:
    """Every key a retraining config may have, at DARTS' CIFAR-10 evaluation values."""
    c = ml_collections.ConfigDict()
    c.kind = "train"
    c.imports = []
    c.genotype = "DARTS_V2"
    c.dataset = "cifar10"  # digits | mnist | fashion_mnist | cifar10 | synthetic | folder (ImageNet layout at data_dir)
    c.data_dir = ""
    c.pipeline = pipeline_defaults()  # how batches are read: loader memory | grain, workers, prefetch, folder image_size
    c.max_train_examples = 0
    c.max_test_examples = 0
    c.downsample = 1  # >1: images average-pooled by this factor (a lower-resolution proxy)
    c.init_channels = 36
    c.layers = 20
    c.auxiliary = True
    c.auxiliary_weight = 0.4
    c.drop_path_prob = 0.2
    c.cutout = 16
    c.epochs = 600
    c.batch_size = 96
    c.lr = 0.025
    c.momentum = 0.9
    c.weight_decay = 3e-4
    c.grad_clip = 5.0
    c.max_steps = 0
    c.seed = 0
    c.devices = 0
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.tensorboard = False
    c.valid_examples = 0  # >0: hold out this many training examples as a validation split (epoch_val_acc, result val_acc)
    c.init_from = ""  # a search run directory: start from its supernet's weights (dnas.estimate.inherit), "" = from scratch
    return c


def train_image_shape(c: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
    """(H, W, C) of the images a train config's network sees (its dataset after
    ``downsample``), known without loading the data; None for a dataset of unknown shape
    or a ``downsample`` that is not a positive integer (validation says what is wrong)."""
    d = c.downsample
    if c.dataset not in DATASET_SHAPES or isinstance(d, bool) or not isinstance(d, int) or d < 1:
        return None
    return input_shape(c.dataset, d)[0]


def check_train(c: ml_collections.ConfigDict) -> None:
    """Validates a retraining config (the genotype must resolve)."""
    check_common(c)
    if isinstance(c.valid_examples, bool) or int(c.valid_examples) < 0:
        raise DnasError(f"config.valid_examples must be a non-negative integer, got {c.valid_examples!r}")
    if not isinstance(c.auxiliary, bool):
        raise DnasError(f"config.auxiliary must be True or False, got {c.auxiliary!r}")
    geno = G.get(c.genotype)
    shape = train_image_shape(c)
    # The genotype's network must be able to run on these images (e.g. DARTS' auxiliary head
    # needs a 2x2 map), so that nothing is written for a run that cannot train.
    if shape is not None:
        SPACES[geno.space].check_network(geno, image_shape=shape, C=int(c.init_channels), layers=int(c.layers), dataset=c.dataset,
                                         auxiliary=c.auxiliary)
    if c.init_from:
        check_init_from(c.init_from, c)


def run_train(config: ml_collections.ConfigDict | None, workdir: str | Path, *, log: Callable[[str], None] = print) -> dict[str, float]:
    """Trains ``config.genotype`` and returns ``{"test_acc", "test_loss", "val_acc", ...}``
    (also in ``workdir/result.json``).

    SIGINT/SIGTERM write a checkpoint and raise :class:`dnas.run.driver.Interrupted`;
    running the same command again resumes.
    """
    return run_in_workdir(config, workdir, _train, log=log)


def _has_checkpoint(workdir: Path) -> bool:
    """Whether ``workdir/checkpoints`` holds a finished step (orbax names them by step)."""
    ck = workdir / "checkpoints"
    return ck.is_dir() and any(p.is_dir() and p.name.isdigit() for p in ck.iterdir())


def _train(config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], stop: SignalFlag) -> dict[str, float]:
    import_files(config.imports)
    geno = G.get(config.genotype)
    p = config.pipeline
    data = get_dataset(config.dataset, config.data_dir or None, image_size=p.image_size, workers=p.workers)
    data = data.subset(config.max_train_examples or None, config.max_test_examples or None).downsample(config.downsample)
    train_x, train_y, val_x, val_y = _holdout(data.train_x, data.train_y, config.valid_examples, config.seed)
    h, w, c = data.image_shape
    spe = steps_per_epoch(len(train_y), config.batch_size)
    total = config.max_steps or config.epochs * spe
    k_model, k_state, data_key = jax.random.split(jax.random.key(config.seed), 3)

    def ctor(r):
        return build_eval_network(geno, config.dataset, config.init_channels, config.layers, data.num_classes, config.auxiliary, c, rngs=r)

    net = build_jitted(ctor, k_model)
    if config.init_from and not _has_checkpoint(workdir):
        # Once-for-All's subnet extraction: start from the search run's supernet weights for
        # this genotype (a resumed run restores its own checkpoint instead, so skip the load).
        sup = load_supernet(config.init_from)
        inherit(sup.space, sup.state_for(geno), geno, net)
        log(f"train: weights inherited from the supernet of {config.init_from}")
    n_params = count_params(net)
    macs = model_macs(net, (1, h, w, c))
    log(
        f"train: {geno} ({geno.space} network, C={config.init_channels}, layers={config.layers}: {n_params / 1e6:.3f} M params, "
        f"{macs / 1e6:.1f} M MACs per image) on {config.dataset} ({len(train_y)} train / {len(val_y)} validation / {len(data.test_y)} test), "
        f"{total} steps ({spe}/epoch)"
    )
    net.train()
    graphdef, weights, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    # DARTS' evaluation recipe: the search's weight optimizer, cosine to 0 per epoch (train.py).
    opt = darts_weight_optimizer(config.lr, 0.0, config.epochs, spe, config.momentum, config.weight_decay, config.grad_clip)
    mesh = make_mesh(config.devices)
    state = replicate(mesh, TrainState(jnp.zeros((), jnp.int32), weights, stats, opt.init(weights), k_state))
    mean, std = data.mean, data.std
    pad = max(1, h // 8)
    epochs = config.epochs
    aug = dict(pad=pad, flip=data.flip, fill=data.pad_fill, cutout=config.cutout)

    def train_step(state: TrainState, x, y):
        key = jax.random.fold_in(state.rng, state.step)
        x = normalize(x, mean, std)
        if not data.augment_on_host:  # images decoded from files were cropped and flipped there
            x = augment(jax.random.fold_in(key, 0), x, **aug)
        epoch = state.step // spe
        drop = config.drop_path_prob * epoch / epochs

        def loss_fn(weights):
            m = nnx.merge(graphdef, weights, state.stats, copy=True)
            out = m(x, key=jax.random.fold_in(key, 1), drop_prob=drop)
            loss = cross_entropy(out.logits, y)
            if out.aux_logits is not None:
                loss = loss + config.auxiliary_weight * cross_entropy(out.aux_logits, y)
            return loss, (nnx.state(m, nnx.BatchStat), out.logits)

        (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.weights)
        updates, opt_state = opt.update(grads, state.opt, state.weights)
        metrics = {"train_loss": loss, "train_acc": jnp.mean(jnp.argmax(logits, -1) == y)}
        return state.replace(step=state.step + 1, weights=optax.apply_updates(state.weights, updates), stats=stats, opt=opt_state), metrics

    net.eval()
    eval_graphdef = nnx.graphdef(net)

    def eval_step(state: TrainState, x, y, valid):
        m = nnx.merge(eval_graphdef, state.weights, state.stats, copy=True)
        logits = m(normalize(x, mean, std)).logits
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum((jnp.argmax(logits, -1) == y) * valid), jnp.sum(losses * valid)

    opts = step_compiler_options()
    train_jit, eval_jit = jax.jit(train_step, donate_argnums=(0,), compiler_options=opts), jax.jit(eval_step, compiler_options=opts)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    metrics = MetricWriter(workdir / "metrics.jsonl", tensorboard_dir=workdir / "tensorboard" if config.tensorboard else None)
    state = resume(ckpt, state, (metrics,), log)
    loop = StepLoop(workdir, "train", ckpt, stop, total, spe, config, hint="lower config.lr")
    stream = Stream(train_x, train_y, StepIndices(data_key, len(train_y), config.batch_size))
    batches = step_batches([stream], host_rows(config.batch_size), int(state.step), total, loader=p.loader, seed=config.seed,
                           workers=p.workers, prefetch=p.prefetch)
    try:
        for step in loop.steps(int(state.step)):
            batch = shard_batch(mesh, next(batches))
            state, tick = loop.step(train_jit, state, batch, "the training step")
            done, m = tick.done, tick.metrics
            if tick.logging:
                metrics.write({"step": done, **m})
                loop.say(done, f"loss {m['train_loss']:.3f} acc {m['train_acc']:.3f}")
            if tick.epoch_end:
                # The validation split (held out of training) is the signal a search may read;
                # the test split is reported, never selected on.
                record: dict[str, Any] = {"step": done, "event": "epoch", "epoch": tick.epoch}
                if len(val_y):
                    ev = evaluate_split(eval_jit, state, mesh, val_x, val_y, 256)
                    record.update(epoch_val_acc=ev["acc"], epoch_val_loss=ev["loss"])
                ev = evaluate_split(eval_jit, state, mesh, data.test_x, data.test_y, 256)
                record.update(epoch_test_acc=ev["acc"], epoch_test_loss=ev["loss"])
                metrics.write(record)
                shown = f"val_acc {record['epoch_val_acc']:.3f} " if "epoch_val_acc" in record else ""
                loop.say(done, f"epoch {tick.epoch}: {shown}test_acc {ev['acc']:.3f} test_loss {ev['loss']:.3f}", line=True)
            loop.end_step(tick, state)
    finally:
        batches.close()  # grain's reading threads
        loop.close()
    ev = evaluate_split(eval_jit, state, mesh, data.test_x, data.test_y, 256)
    result: dict[str, Any] = {"test_acc": ev["acc"], "test_loss": ev["loss"], "test_examples": len(data.test_y), "steps": total,
                              "params": n_params, "macs": macs}
    if len(val_y):
        vev = evaluate_split(eval_jit, state, mesh, val_x, val_y, 256)
        result.update(val_acc=vev["acc"], val_loss=vev["loss"], val_examples=len(val_y))
    atomic_write_json(workdir / "result.json", result)
    metrics.write({"step": total, "event": "test", **result})
    metrics.close()
    return result


def _holdout(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, val_x, val_y)``: ``n`` training examples (a fixed random choice
    by ``seed``) held out as the validation split; ``n = 0`` holds out nothing."""
    n = int(n)
    if n <= 0:
        return x, y, x[:0], y[:0]
    if n >= len(y):
        raise DnasError(f"config.valid_examples={n} leaves no training examples (the training split has {len(y)}); lower it")
    perm = np.random.default_rng(seed).permutation(len(y))
    val, tr = np.sort(perm[:n]), np.sort(perm[n:])
    return x[tr], y[tr], x[val], y[val]


RUN_KINDS.add("train", RunKind(train_defaults, check_train, lambda config, workdir, log: run_train(config, workdir, log=log), "train"))
