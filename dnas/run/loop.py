"""The search driver behind ``dnas search``: data, supernet, jitted step, checkpoints,
metrics and resume. Library users can call :func:`build_search` and own the loop.

Run directory::

  config.json      the validated config
  metrics.jsonl    per logged step (losses, accuracies, α entropy, lrs, step time, images/s)
                   and one ``"event": "epoch"`` line per epoch with the accuracy and loss of
                   the supernet on the whole validation split (``epoch_val_acc``,
                   ``epoch_val_loss``) and the collapse diagnostics (:mod:`dnas.search.diagnostics`:
                   ``param_free_ops`` per cell of the derived genotype,
                   ``epoch_alpha_entropy``, and ``hessian_eigenvalue`` when
                   ``config.hessian_iters > 0``); an ``"event": "early_stop"`` line when
                   DARTS-ES (``config.early_stop``) ends the search
  alpha.jsonl      softmax(α) per label after every epoch (for ``dnas show`` plots); extra
                   architecture parameters (PC-DARTS' β) under ``"beta"``, and the raw
                   logits under ``"logits"`` when ``config.early_stop`` (the rollback reads them)
  genotype.json    the derived architecture after every epoch and at the end
  checkpoints/     orbax checkpoints (periodic, at the end, and on SIGINT/SIGTERM)
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from dnas.space import genotype as G
from dnas.search.bilevel import SearchStep, cross_entropy, darts_alpha_optimizer, darts_weight_optimizer, make_search_step
from dnas.run.checkpoint import Checkpointer, resume
from dnas.search.diagnostics import alpha_entropy, darts_es, param_free_ops, top_hessian_eigenvalue
from dnas.search.methods import delayed, make_arch_penalty
from dnas.run.config import _kwargs, differing_keys, from_json, to_json
from dnas.data.datasets import Dataset, augment, batch_indices, get_dataset, normalize, search_split, steps_per_epoch
from dnas.core.errors import DnasError
from dnas.search.latency import add_penalties, build_latency, derive_alpha, epoch_latency_metrics
from dnas.run.metrics import MetricWriter, Progress
from dnas.space.ops.layers import depthwise_impl
from dnas.run.parallel import make_mesh, replicate, shard_batch
from dnas.search.plans import with_reward_baseline
from dnas.space.relax import make_relaxation, relax_all
from dnas.space.base import SearchSpace
from dnas.space.base import build_space as _build_space
from dnas.search.state import (
    SearchState,
    alpha_dict,
    build_jitted,
    compile_then_trim,
    init_search_state,
    release_free_memory,
    step_compiler_options,
)


class Interrupted(Exception):
    """Raised after a checkpoint was written in response to SIGINT/SIGTERM."""


class SignalFlag:
    """Records SIGINT/SIGTERM instead of raising, from construction until :meth:`restore`,
    so that a run stops at a point where it can checkpoint (never inside XLA's compiler).

    Install it right after the run directory is prepared: a signal during the build or the
    compile then stops the run before its first step (:meth:`check_not_started`).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def check_not_started(self, workdir: Path, command: str) -> None:
        """Raises :class:`Interrupted` if a signal came before the first step."""
        if self.signal is not None:
            raise Interrupted(f"stopped by signal {self.signal} before the first step (nothing to checkpoint; the run starts afresh)")

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for s, h in self._old.items():
            signal.signal(s, h)


class NonFiniteLoss(DnasError):
    """A loss turned NaN or infinite: the run stopped without checkpointing that state."""


@dataclasses.dataclass
class SearchSetup:
    """Everything :func:`run_search` builds from a config (usable on its own)."""

    config: ml_collections.ConfigDict
    data: Dataset
    w_idx: np.ndarray
    a_idx: np.ndarray
    space: SearchSpace
    graphdef: nnx.GraphDef
    state: SearchState
    step: SearchStep
    train_step: Callable[..., tuple[SearchState, dict[str, jax.Array]]]
    steps_per_epoch: int
    total_steps: int
    data_key: jax.Array
    mesh: Any
    eval_step: Callable[..., tuple[jax.Array, jax.Array]]
    hessian_step: Callable[..., jax.Array] | None = None
    latency: Any = None  # dnas.search.latency.LatencySetup of config.latency (None: no table)


def build_space(config: ml_collections.ConfigDict) -> SearchSpace:
    """The registered search space a config names (``config.space`` + ``space_kwargs``)."""

    return _build_space(config.space, config.layers, _kwargs(config.space_kwargs))


def build_search(config: ml_collections.ConfigDict) -> SearchSetup:
    """Data, supernet, optimizers, state and the jitted step for a search config."""
    data = get_dataset(config.dataset, config.data_dir or None)
    if config.max_train_examples:
        data = data.subset(n_train=config.max_train_examples)
    data = data.downsample(config.downsample)
    w_idx, a_idx = search_split(len(data.train_y), config.train_portion)
    spe = steps_per_epoch(min(len(w_idx), len(a_idx)), config.batch_size)
    total = config.max_steps or config.epochs * spe
    key = jax.random.key(config.seed)
    k_model, k_state, data_key = jax.random.split(key, 3)
    space = build_space(config)
    h, w, c = data.image_shape
    net = build_jitted(lambda r: space.supernet(C=config.init_channels, num_classes=data.num_classes, in_channels=c, rngs=r), k_model)
    w_opt = darts_weight_optimizer(
        config.w_lr, config.w_lr_min, config.epochs, spe, config.w_momentum, config.w_weight_decay, config.grad_clip,
        nesterov=config.w_nesterov,
    )
    a_opt = darts_alpha_optimizer(config.a_lr, config.a_b1, config.a_b2, config.a_weight_decay)
    if config.a_warmup_epochs:
        a_opt = delayed(a_opt, config.a_warmup_epochs * spe)  # PC-DARTS: α frozen while the weights warm up
    reinforce_kwargs = _kwargs(config.alpha_grad_kwargs)
    if config.alpha_grad == "reinforce":
        aggregate = int(reinforce_kwargs.pop("aggregate", 1))
        if aggregate > 1:  # ENAS: one controller step per `aggregate` sampled children
            a_opt = optax.MultiSteps(a_opt, every_k_schedule=aggregate).gradient_transformation()
        a_opt = with_reward_baseline(a_opt)
    graphdef, state = init_search_state(net, w_opt, a_opt, key=k_state)
    relax = make_relaxation(config.relax, _kwargs(config.relax_kwargs), epochs=config.epochs)
    latency = build_latency(config, space, relax)
    step = make_search_step(
        graphdef,
        w_opt,
        a_opt,
        order=config.order,
        hypergradient=config.hypergradient,
        relax=relax,
        arch_penalty=add_penalties(make_arch_penalty(config.arch_penalty, _kwargs(config.arch_penalty_kwargs)), latency and latency.penalty),
        fuse_passes=config.fuse_passes,
        update_alpha=config.update_alpha,
        steps_per_epoch=spe,
        alpha_grad=config.alpha_grad,
        alpha_grad_kwargs=reinforce_kwargs,
    )
    mesh = make_mesh(config.devices)
    state = replicate(mesh, state)
    mean, std, do_aug = data.mean, data.std, config.augment
    pad = max(1, h // 8) if do_aug else 0
    aug = dict(pad=pad, flip=data.flip, fill=data.pad_fill)

    def train_step(state, xw, yw, xa, ya):
        k = jax.random.fold_in(data_key, state.step)
        xw, xa = normalize(xw, mean, std), normalize(xa, mean, std)
        if do_aug:
            xw = augment(jax.random.fold_in(k, 0), xw, **aug)
            xa = augment(jax.random.fold_in(k, 1), xa, **aug)
        return step(state, (xw, yw), (xa, ya))

    def eval_step(state, x, y, valid):
        # The supernet as the α pass sees it (training-mode BatchNorm on batch statistics,
        # as DARTS' search-time BN; running statistics are left untouched).
        logits_by_label = dict(nnx.to_pure_dict(state.alpha)["alpha"])
        arch = relax_all(relax, jax.random.fold_in(state.rng, 2**30 + state.step), logits_by_label, state.step // spe)
        model = nnx.merge(graphdef, state.alpha, state.weights, state.stats, copy=True)
        logits = model(normalize(x, mean, std), arch).logits
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum((jnp.argmax(logits, -1) == y) * valid), jnp.sum(losses * valid)

    def hessian_step(state, x, y):
        # RobustDARTS' diagnostic: the top eigenvalue of ∇²_α L_val at the current weights,
        # on one fixed validation batch, with one fixed relaxation sample (a stochastic
        # relaxation must not change under the power iteration).
        key = jax.random.fold_in(state.rng, 2**30 + 1)
        xn = normalize(x, mean, std)

        def val_loss(alpha):
            arch = relax_all(relax, key, dict(nnx.to_pure_dict(alpha)["alpha"]), state.step // spe)
            model = nnx.merge(graphdef, alpha, state.weights, state.stats, copy=True)
            return cross_entropy(model(xn, arch).logits, y)

        # Forward-over-reverse needs ops with JVP rules: the XLA lowerings of depthwise
        # convolutions and pools, not dnas' custom-VJP shifted-slice ones (CPU default).
        with depthwise_impl("conv"):
            return top_hessian_eigenvalue(val_loss, state.alpha, key=jax.random.fold_in(key, state.step), iters=config.hessian_iters)

    jitted = jax.jit(train_step, donate_argnums=(0,), compiler_options=step_compiler_options())
    eval_jit = jax.jit(eval_step, compiler_options=step_compiler_options())
    hess_jit = jax.jit(hessian_step) if config.hessian_iters else None
    return SearchSetup(config, data, w_idx, a_idx, space, graphdef, state, step, jitted, spe, total, data_key, mesh, eval_jit, hess_jit, latency=latency)


def evaluate_split(
    eval_step: Callable[..., tuple[jax.Array, jax.Array]], state: Any, mesh: Any, x: np.ndarray, y: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Accuracy and mean loss of ``eval_step(state, x, y, valid) -> (correct, loss_sum)``
    over every example of ``(x, y)``, in batches of ``batch_size`` (the last one padded
    and masked, so each batch has one shape and the step compiles once)."""
    n_dev = mesh.devices.size
    bs = max(n_dev, (min(batch_size, len(y)) // n_dev) * n_dev)
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y), bs):
        xb, yb = x[i : i + bs], y[i : i + bs]
        valid = np.ones(bs, np.float32)
        if len(yb) < bs:
            valid[len(yb) :] = 0
            xb = np.concatenate([xb, np.zeros((bs - len(yb),) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros(bs - len(yb), yb.dtype)])
        cnt, ls = eval_step(state, *shard_batch(mesh, (xb, yb, valid), global_batch=True))
        correct, loss_sum = correct + int(cnt), loss_sum + float(ls)
    return {"acc": correct / max(len(y), 1), "loss": loss_sum / max(len(y), 1)}


def _batches(setup: SearchSetup, step: int) -> tuple[np.ndarray, ...]:
    bs = setup.config.batch_size
    kw, ka = jax.random.fold_in(setup.data_key, 10_000_001), jax.random.fold_in(setup.data_key, 10_000_002)
    iw = setup.w_idx[batch_indices(kw, len(setup.w_idx), bs, step)]
    ia = setup.a_idx[batch_indices(ka, len(setup.a_idx), bs, step)]
    d = setup.data
    return d.train_x[iw], d.train_y[iw], d.train_x[ia], d.train_y[ia]


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def prepare_workdir(workdir: str | Path, config: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    """Creates or reopens a run directory; returns the config to run with.

    A new directory gets ``config.json``. An existing run resumes with its own config; a
    different config for it is refused (nothing in it is touched).
    """
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if saved.exists():
        old = from_json(saved.read_text())
        if config is not None and to_json(config) != to_json(old):
            diff = differing_keys(config, old)
            shown = ", ".join(f"{k} (saved {_get(old, k)!r}, given {_get(config, k)!r})" for k in diff[:3])
            raise DnasError(
                f"{str(workdir)!r} holds a run with a different config: {shown}; resume it without --config, "
                "or use a new --workdir"
            )
        return old
    if config is None:
        raise DnasError(f"{str(workdir)!r} holds no run; pass --config (or omit --workdir for the default search)")
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_name("config.json.tmp")
    tmp.write_text(to_json(config) + "\n")
    tmp.replace(saved)
    return config


class WorkdirLock:
    """An exclusive lock on a run directory for the life of one run (``<workdir>/.lock``,
    ``fcntl.flock``, released by the OS if the process dies).

    Why: two processes in one directory (a resumed command started while the first still
    runs, or still writes its last checkpoint after SIGTERM) interleave checkpoints and
    metrics; the second is refused with one line instead.
    """

    def __init__(self, workdir: str | Path):
        import fcntl

        self.path = Path(workdir) / ".lock"
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise DnasError(f"{str(workdir)!r} is in use by a running dnas process (pid {holder}); wait for it to end, or use another --workdir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Drops the lock (closing the descriptor releases the flock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_run(
    workdir: str | Path, prepare: Callable[[], Any], *, must_exist: bool = False
) -> tuple[Any, WorkdirLock]:
    """Locks ``workdir`` and then runs ``prepare()`` (which writes or checks its config):
    ``(prepare's result, the lock)``; release the lock when the run ends.

    Why in this order: two processes started at once on a new directory would otherwise
    both find no ``config.json`` and both write one before either takes the lock. The
    directory is created first only so that the lock file has a place; ``must_exist``
    runs ``prepare`` unlocked when the directory holds no config (it can only refuse).
    """
    workdir = Path(workdir)
    if must_exist and not (workdir / "config.json").exists():
        prepare()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir)
    try:
        return prepare(), lock
    except BaseException:
        lock.release()
        raise


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    head, _, sub = dotted.partition(".")
    value = config.get(head)
    return value.get(sub) if sub and value is not None else value


def run_search(config: ml_collections.ConfigDict | None, workdir: str | Path, *, log: Callable[[str], None] = print) -> G.Genotype:
    """Runs (or resumes) a search in ``workdir``; returns the final genotype.

    SIGINT/SIGTERM write a checkpoint and raise :class:`Interrupted`; running the same
    command again continues exactly where it stopped (bit-identical α and weights). A loss
    that turns NaN or infinite stops the run with :class:`NonFiniteLoss` naming the step;
    that state is not checkpointed, so the newest checkpoint is the last finite one.
    """
    workdir = Path(workdir)
    config, lock = open_run(workdir, lambda: prepare_workdir(workdir, config), must_exist=config is None)
    stop = SignalFlag()
    try:
        return _search(config, workdir, log, stop)
    finally:
        stop.restore()
        lock.release()


def _search(config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], stop: SignalFlag) -> G.Genotype:
    setup = build_search(config)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    tb = workdir / "tensorboard" if config.tensorboard else None
    metrics, alphas = MetricWriter(workdir / "metrics.jsonl", tensorboard_dir=tb), MetricWriter(workdir / "alpha.jsonl", tensorboard_dir=tb)
    state = setup.state
    state = resume(ckpt, state, (metrics, alphas), log)
    start = int(state.step)
    method = f"{config.relax} relaxation, " + (("REINFORCE α" if config.alpha_grad == "reinforce" else f"order {config.order}") if config.update_alpha else "weights only")
    log(
        f"search: {config.space} space ({setup.space.size():.3e} architectures), {method}, {config.dataset} "
        f"{len(setup.w_idx)}+{len(setup.a_idx)} examples, {setup.total_steps} steps "
        f"({setup.steps_per_epoch}/epoch), {setup.mesh.devices.size} device(s)"
    )

    history = [r for r in metrics.read() if r.get("event") in ("epoch", "early_stop")]
    if any(r.get("event") == "early_stop" for r in history):
        metrics.close()
        alphas.close()
        ckpt.close()
        log(f"search: this run stopped early (DARTS-ES); its genotype is {str(workdir / 'genotype.json')!r}")
        return G.load(workdir / "genotype.json")
    eigenvalues = [float(r["hessian_eigenvalue"]) for r in history if "hessian_eigenvalue" in r]
    logits_by_epoch = {int(r["epoch"]): r["logits"] for r in alphas.read() if "logits" in r}

    stop.check_not_started(workdir, "search")
    progress = Progress(setup.total_steps, start)
    d = setup.data
    choice_labels = set(setup.space.labels)
    try:
        t_last, n_last = time.perf_counter(), start
        train_step = setup.train_step
        for step in range(start, setup.total_steps):
            batch = shard_batch(setup.mesh, _batches(setup, step), global_batch=True)
            if step == start:  # every batch has the same shapes and shardings
                with progress.compiling("the search step"):
                    train_step = compile_then_trim(setup.train_step, state, *batch)
                stop.check_not_started(workdir, "search")
                t_last = time.perf_counter()
            state, m = train_step(state, *batch)
            if step == start:
                release_free_memory()  # what the first step freed, otherwise resident all run
            done = step + 1
            epoch_end = done % setup.steps_per_epoch == 0 or done == setup.total_steps
            logging = done % config.log_every_steps == 0 or epoch_end
            saving = done % config.checkpoint_every_steps == 0 or done == setup.total_steps or stop.signal is not None
            if logging or saving:
                m = jax.device_get(m)
                bad = [k for k in ("train_loss", "val_loss") if k in m and not np.isfinite(m[k])]
                if bad or (saving and not bool(all_finite(state))):
                    what = f"{bad[0]} is {m[bad[0]]}" if bad else "the state holds NaN or infinite values"
                    raise NonFiniteLoss(
                        f"{what} at step {done}; stopped without saving that state (the newest checkpoint in "
                        f"{str(workdir / 'checkpoints')!r} is the last finite one). Lower the learning rates or check the data"
                    )
            if logging:
                dt = (time.perf_counter() - t_last) / max(done - n_last, 1)
                t_last, n_last = time.perf_counter(), done
                record = {"step": done, "epoch": (done - 1) // setup.steps_per_epoch + 1, **m, "step_time_s": dt,
                          "images_per_s": 2 * config.batch_size / dt}
                metrics.write(record)
                shown = f"loss {m['train_loss']:.3f}" + (f" val_acc {m['val_acc']:.3f}" if "val_acc" in m else "")
                progress.update(done, shown + f" α-entropy {m['alpha_entropy']:.3f}")
            if epoch_end:
                a = alpha_dict(jax.device_get(state.alpha))
                geno = setup.space.derive(derive_alpha(setup.latency, a))
                _save_genotype(workdir / "genotype.json", geno)
                epoch = (done - 1) // setup.steps_per_epoch + 1
                soft = lambda v: np.asarray(jax.nn.softmax(jnp.asarray(v))).tolist()  # noqa: E731
                record = {"step": done, "epoch": epoch, "softmax": {l: soft(v) for l, v in a.items() if l in choice_labels}}
                if len(a) > len(choice_labels):  # PC-DARTS' β: not op choices, kept apart for the α plots
                    record["beta"] = {l: soft(v) for l, v in a.items() if l not in choice_labels}
                if config.early_stop:
                    record["logits"] = {l: np.asarray(v).tolist() for l, v in a.items()}
                    logits_by_epoch[epoch] = record["logits"]
                alphas.write(record)
                ev = evaluate_split(setup.eval_step, state, setup.mesh, d.train_x[setup.a_idx], d.train_y[setup.a_idx], config.batch_size)
                diag: dict[str, Any] = {"param_free_ops": param_free_ops(geno), "epoch_alpha_entropy": alpha_entropy(a, setup.space.labels)}
                if setup.hessian_step is not None:
                    # One fixed validation batch (the first of the α split), so epochs compare.
                    hb = setup.a_idx[: config.batch_size]
                    diag["hessian_eigenvalue"] = float(setup.hessian_step(state, *shard_batch(setup.mesh, (d.train_x[hb], d.train_y[hb]), global_batch=True)))
                    eigenvalues.append(diag["hessian_eigenvalue"])
                metrics.write({"step": done, "event": "epoch", "epoch": epoch, "epoch_val_acc": ev["acc"],
                               "epoch_val_loss": ev["loss"], "genotype": str(geno), **diag, **epoch_latency_metrics(setup.latency, a)})
                shown = f" λ_max {diag['hessian_eigenvalue']:.4g}" if "hessian_eigenvalue" in diag else ""
                progress.update(done, f"epoch {epoch}: val_acc {ev['acc']:.3f} (whole validation split) val_loss {ev['loss']:.3f}{shown}", force_line=True)
                t_last = time.perf_counter()  # the evaluation is not a step
                back = darts_es(eigenvalues) if config.early_stop else None
                if back is not None and (back + 1) in logits_by_epoch:
                    # DARTS-ES: the eigenvalue's local average rose by the threshold; the
                    # result is the architecture of the epoch before the rise.
                    geno = setup.space.derive(logits_by_epoch[back + 1])
                    _save_genotype(workdir / "genotype.json", geno)
                    metrics.write({"step": done, "event": "early_stop", "epoch": epoch, "stop_epoch": back + 1, "genotype": str(geno)})
                    ckpt.save(done, state)
                    progress.update(done, f"DARTS-ES: stopped after epoch {epoch}; the genotype of epoch {back + 1}: {geno}", force_line=True)
                    return geno
            if saving:
                ckpt.save(done, state)
            if stop.signal is not None:
                raise Interrupted(f"stopped by signal {stop.signal} at step {done}; checkpoint written")
    finally:
        progress.close()
        ckpt.close()
        metrics.close()
        alphas.close()
    geno = setup.space.derive(derive_alpha(setup.latency, alpha_dict(jax.device_get(state.alpha))))
    _save_genotype(workdir / "genotype.json", geno)
    return geno


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (``bool[]``)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _save_genotype(path: Path, geno: Any) -> None:
    G.save(geno, path)
