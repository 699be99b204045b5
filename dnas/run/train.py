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

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from dnas.space import genotype as G
from dnas.search.bilevel import cross_entropy
from dnas.run.checkpoint import Checkpointer, resume
from dnas.data.datasets import augment, batch_indices, get_dataset, normalize, steps_per_epoch
from dnas.run.config import import_files
from dnas.hardware.counts import count_params, model_macs
from dnas.run.metrics import MetricWriter, Progress
from dnas.space.nets import build_eval_network
from dnas.run.parallel import make_mesh, replicate, shard_batch
from dnas.search.state import build_jitted, compile_then_trim, release_free_memory, step_compiler_options

if TYPE_CHECKING:
    from dnas.run.loop import WorkdirLock


@struct.dataclass
class TrainState:
    """Weights, BatchNorm statistics, optimizer state, step and PRNG key."""

    step: jax.Array
    weights: nnx.State
    stats: nnx.State
    opt: optax.OptState
    rng: jax.Array


def run_train(config: ml_collections.ConfigDict, workdir: str | Path, *, log: Callable[[str], None] = print) -> dict[str, float]:
    """Trains ``config.genotype`` and returns ``{"test_acc", "test_loss", ...}`` (also in
    ``workdir/result.json``).

    SIGINT/SIGTERM write a checkpoint and raise :class:`dnas.run.loop.Interrupted`; running the
    same command again resumes.
    """
    from dnas.run.loop import Interrupted, SignalFlag, open_run, prepare_workdir

    workdir = Path(workdir)
    # What was there before this run: a new run that fails before its first step takes
    # back what it wrote, so the corrected command starts clean instead of being refused
    # as "a run with a different config" (a resumed run is never touched).
    existed = workdir.is_dir()
    before = set(workdir.iterdir()) if existed else set()
    new_run = not (workdir / "config.json").exists()
    config, lock = open_run(workdir, lambda: prepare_workdir(workdir, config), must_exist=config is None)
    stop = SignalFlag()
    started = [False]
    try:
        return _train(config, workdir, log, stop, started)
    except Exception as e:
        # An interrupt keeps the directory: its message tells the user to resume it.
        if new_run and not started[0] and not isinstance(e, Interrupted):
            _remove_new_entries(workdir, before, lock, remove_dir=not existed)
        raise
    finally:
        stop.restore()
        lock.release()


def _remove_new_entries(workdir: Path, before: set[Path], lock: WorkdirLock, remove_dir: bool) -> None:
    """Deletes what appeared in ``workdir`` since ``before``, then releases ``lock``, then
    removes ``workdir`` if this run created it and nothing else has appeared in it.

    The lock file goes while still held: a process that starts meanwhile is refused by the
    lock or makes a new lock file of its own, never loses one to this cleanup.
    """
    import shutil

    try:
        for p in set(workdir.iterdir()) - before:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        lock.release()
        if remove_dir and not any(workdir.iterdir()):
            workdir.rmdir()
    except OSError:
        pass  # the run's own error is what the user must see; a leftover file is only untidy


def _has_checkpoint(workdir: Path) -> bool:
    """Whether ``workdir/checkpoints`` holds a finished step (orbax names them by step)."""
    ck = workdir / "checkpoints"
    return ck.is_dir() and any(p.is_dir() and p.name.isdigit() for p in ck.iterdir())


def _train(config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], stop: Any, started: list[bool]) -> dict[str, float]:
    """The training loop of :func:`run_train`; sets ``started[0]`` once the first step ran."""
    from dnas.run.loop import Interrupted, NonFiniteLoss, all_finite, evaluate_split

    import_files(config.imports)
    geno = G.get(config.genotype)
    data = get_dataset(config.dataset, config.data_dir or None)
    data = data.subset(config.max_train_examples or None, config.max_test_examples or None).downsample(config.downsample)
    h, w, c = data.image_shape
    spe = steps_per_epoch(len(data.train_y), config.batch_size)
    total = config.max_steps or config.epochs * spe
    k_model, k_state, data_key = jax.random.split(jax.random.key(config.seed), 3)

    def ctor(r):
        return build_eval_network(geno, config.dataset, config.init_channels, config.layers, data.num_classes, config.auxiliary, c, rngs=r)

    net = build_jitted(ctor, k_model)
    if config.init_from and not _has_checkpoint(workdir):
        # Once-for-All's subnet extraction: start from the search run's supernet weights for
        # this genotype (a resumed run restores its own checkpoint instead, so skip the load).
        from dnas.estimate.inherit import inherit, load_run_supernet

        space, s_weights, s_stats = load_run_supernet(config.init_from)
        inherit(space, (s_weights, s_stats), geno, net)
        log(f"train: weights inherited from the supernet of {config.init_from}")
    n_params = count_params(net)
    macs = model_macs(net, (1, h, w, c))
    log(
        f"train: {geno} ({geno.space} network, C={config.init_channels}, layers={config.layers}: {n_params / 1e6:.3f} M params, "
        f"{macs / 1e6:.1f} M MACs per image) on {config.dataset} ({len(data.train_y)} train / {len(data.test_y)} test), "
        f"{total} steps ({spe}/epoch)"
    )
    net.train()
    graphdef, weights, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    cosine = optax.cosine_decay_schedule(config.lr, max(config.epochs, 1))
    opt = optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.add_decayed_weights(config.weight_decay),
        optax.inject_hyperparams(optax.sgd)(learning_rate=lambda s: cosine(s // spe), momentum=config.momentum),
    )
    mesh = make_mesh(config.devices)
    state = replicate(mesh, TrainState(jnp.zeros((), jnp.int32), weights, stats, opt.init(weights), k_state))
    mean, std = data.mean, data.std
    pad = max(1, h // 8)
    epochs = config.epochs
    aug = dict(pad=pad, flip=data.flip, fill=data.pad_fill, cutout=config.cutout)

    def train_step(state: TrainState, x, y):
        key = jax.random.fold_in(state.rng, state.step)
        x = augment(jax.random.fold_in(key, 0), normalize(x, mean, std), **aug)
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
    start = int(state.step)
    stop.check_not_started(workdir, "train")
    progress = Progress(total, start)
    try:
        for step in range(start, total):
            idx = batch_indices(data_key, len(data.train_y), config.batch_size, step)
            batch = shard_batch(mesh, (data.train_x[idx], data.train_y[idx]), global_batch=True)
            if step == start:  # every batch has the same shapes and shardings
                with progress.compiling("the training step"):
                    train_jit = compile_then_trim(train_jit, state, *batch)
                stop.check_not_started(workdir, "train")
            state, m = train_jit(state, *batch)
            started[0] = True
            if step == start:
                release_free_memory()
            done = step + 1
            epoch_end = done % spe == 0 or done == total
            saving = done % config.checkpoint_every_steps == 0 or done == total or stop.signal is not None
            logging = done % config.log_every_steps == 0 or epoch_end
            if logging or saving:
                m = jax.device_get(m)
                if not np.isfinite(m["train_loss"]) or (saving and not bool(all_finite(state))):
                    raise NonFiniteLoss(
                        f"train_loss is {m['train_loss']} at step {done}; stopped without saving that state (the newest "
                        f"checkpoint in {str(workdir / 'checkpoints')!r} is the last finite one). Lower config.lr"
                    )
            if logging:
                metrics.write({"step": done, **m})
                progress.update(done, f"loss {m['train_loss']:.3f} acc {m['train_acc']:.3f}")
            if epoch_end:
                ev = evaluate_split(eval_jit, state, mesh, data.test_x, data.test_y, 256)
                epoch = (done - 1) // spe + 1
                metrics.write({"step": done, "event": "epoch", "epoch": epoch, "epoch_test_acc": ev["acc"], "epoch_test_loss": ev["loss"]})
                progress.update(done, f"epoch {epoch}: test_acc {ev['acc']:.3f} test_loss {ev['loss']:.3f}", force_line=True)
            if saving:
                ckpt.save(done, state)
            if stop.signal is not None:
                raise Interrupted(f"stopped by signal {stop.signal} at step {done}; checkpoint written")
    finally:
        progress.close()
        ckpt.close()
    ev = evaluate_split(eval_jit, state, mesh, data.test_x, data.test_y, 256)
    n = len(data.test_y)
    result = {"test_acc": ev["acc"], "test_loss": ev["loss"], "test_examples": n, "steps": total, "params": n_params, "macs": macs}
    tmp = workdir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(workdir / "result.json")
    metrics.write({"step": total, "event": "test", **result})
    metrics.close()
    return result
