"""The search driver behind ``dnas search``: data, supernet, jitted step, checkpoints,
metrics and resume. Library users can call :func:`build_search` and own the loop.

Run directory::

  config.json      the validated config
  metrics.jsonl    per logged step (losses, accuracies, α entropy, lrs, step time, images/s)
                   and one ``"event": "epoch"`` line per epoch
  alpha.jsonl      softmax(α) per label after every epoch (for ``dnas show`` plots)
  genotype.json    the derived architecture after every epoch and at the end
  checkpoints/     orbax checkpoints (periodic, at the end, and on SIGINT/SIGTERM)
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dnas import genotype as G
from dnas.bilevel import SearchStep, darts_alpha_optimizer, darts_weight_optimizer, make_search_step
from dnas.checkpoint import Checkpointer, resume
from dnas.config import from_json, to_json
from dnas.datasets import Dataset, augment, batch_indices, get_dataset, normalize, search_split, steps_per_epoch
from dnas.errors import DnasError
from dnas.metrics import MetricWriter, Progress
from dnas.parallel import make_mesh, replicate, shard_batch
from dnas.relax import make_relaxation
from dnas.spaces import DartsSearchNetwork, DartsSpace, NB201SearchNetwork, NB201Space
from dnas.state import (
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


@dataclasses.dataclass
class SearchSetup:
    """Everything :func:`run_search` builds from a config (usable on its own)."""

    config: ml_collections.ConfigDict
    data: Dataset
    w_idx: np.ndarray
    a_idx: np.ndarray
    space: DartsSpace | NB201Space
    graphdef: nnx.GraphDef
    state: SearchState
    step: SearchStep
    train_step: Callable[..., tuple[SearchState, dict[str, jax.Array]]]
    steps_per_epoch: int
    total_steps: int
    data_key: jax.Array
    mesh: Any


def build_space(config: ml_collections.ConfigDict) -> DartsSpace | NB201Space:
    """The search space a config describes."""
    if config.space == "darts":
        return DartsSpace(layers=config.layers, steps=config.nodes, ops=tuple(config.ops), shared=config.shared)
    return NB201Space(N=config.layers, ops=tuple(config.ops), shared=config.shared)


def build_search(config: ml_collections.ConfigDict) -> SearchSetup:
    """Data, supernet, optimizers, state and the jitted step for a search config."""
    data = get_dataset(config.dataset, config.data_dir or None)
    if config.max_train_examples:
        data = data.subset(n_train=config.max_train_examples)
    w_idx, a_idx = search_split(len(data.train_y), config.train_portion)
    spe = steps_per_epoch(min(len(w_idx), len(a_idx)), config.batch_size)
    total = config.max_steps or config.epochs * spe
    key = jax.random.key(config.seed)
    k_model, k_state, data_key = jax.random.split(key, 3)
    space = build_space(config)
    h, w, c = data.image_shape
    if config.space == "darts":
        ctor = lambda r: DartsSearchNetwork(  # noqa: E731
            space, C=config.init_channels, num_classes=data.num_classes, in_channels=c, impl=config.cell_impl, remat=config.remat, rngs=r
        )
    else:
        ctor = lambda r: NB201SearchNetwork(space, C=config.init_channels, num_classes=data.num_classes, in_channels=c, rngs=r)  # noqa: E731
    net = build_jitted(ctor, k_model)
    w_opt = darts_weight_optimizer(
        config.w_lr, config.w_lr_min, config.epochs, spe, config.w_momentum, config.w_weight_decay, config.grad_clip
    )
    a_opt = darts_alpha_optimizer(config.a_lr, config.a_b1, config.a_b2, config.a_weight_decay)
    graphdef, state = init_search_state(net, w_opt, a_opt, key=k_state)
    step = make_search_step(
        graphdef,
        w_opt,
        a_opt,
        order=config.order,
        hypergradient=config.hypergradient,
        relax=make_relaxation(config.relax),
        fuse_passes=config.fuse_passes,
    )
    mesh = make_mesh(config.devices)
    state = replicate(mesh, state)
    mean, std, do_aug = data.mean, data.std, config.augment
    pad = max(1, h // 8) if do_aug else 0

    def train_step(state, xw, yw, xa, ya):
        k = jax.random.fold_in(data_key, state.step)
        xw, xa = normalize(xw, mean, std), normalize(xa, mean, std)
        if do_aug:
            xw = augment(jax.random.fold_in(k, 0), xw, pad=pad)
            xa = augment(jax.random.fold_in(k, 1), xa, pad=pad)
        return step(state, (xw, yw), (xa, ya))

    jitted = jax.jit(train_step, donate_argnums=(0,), compiler_options=step_compiler_options())
    return SearchSetup(config, data, w_idx, a_idx, space, graphdef, state, step, jitted, spe, total, data_key, mesh)


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
            raise DnasError(
                f"{str(workdir)!r} holds a run with a different config; resume it without --config, or use a new --workdir"
            )
        return old
    if config is None:
        raise DnasError(f"{str(workdir)!r} holds no run; pass --config (or omit --workdir for the default search)")
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_name("config.json.tmp")
    tmp.write_text(to_json(config) + "\n")
    tmp.replace(saved)
    return config


def run_search(config: ml_collections.ConfigDict | None, workdir: str | Path, *, log: Callable[[str], None] = print) -> G.Genotype:
    """Runs (or resumes) a search in ``workdir``; returns the final genotype.

    SIGINT/SIGTERM write a checkpoint and raise :class:`Interrupted`; running the same
    command again continues exactly where it stopped (bit-identical α and weights).
    """
    workdir = Path(workdir)
    config = prepare_workdir(workdir, config)
    setup = build_search(config)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    metrics, alphas = MetricWriter(workdir / "metrics.jsonl"), MetricWriter(workdir / "alpha.jsonl")
    state = setup.state
    state = resume(ckpt, state, (metrics, alphas), log)
    start = int(state.step)
    log(
        f"search: {config.space} space ({setup.space.size():.3e} architectures), {config.dataset} "
        f"{len(setup.w_idx)}+{len(setup.a_idx)} examples, {setup.total_steps} steps "
        f"({setup.steps_per_epoch}/epoch), {setup.mesh.devices.size} device(s)"
    )

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = Progress(setup.total_steps, start)
    try:
        t_last, n_last = time.perf_counter(), start
        train_step = setup.train_step
        for step in range(start, setup.total_steps):
            batch = shard_batch(setup.mesh, _batches(setup, step))
            if step == start:  # every batch has the same shapes and shardings
                train_step = compile_then_trim(setup.train_step, state, *batch)
            state, m = train_step(state, *batch)
            if step == start:
                release_free_memory()  # what the first step freed, otherwise resident all run
            done = step + 1
            epoch_end = done % setup.steps_per_epoch == 0 or done == setup.total_steps
            if done % config.log_every_steps == 0 or epoch_end:
                m = jax.device_get(m)
                dt = (time.perf_counter() - t_last) / max(done - n_last, 1)
                t_last, n_last = time.perf_counter(), done
                record = {"step": done, "epoch": (done - 1) // setup.steps_per_epoch + 1, **m, "step_time_s": dt,
                          "images_per_s": 2 * config.batch_size / dt}
                metrics.write(record)
                progress.update(done, f"loss {m['train_loss']:.3f} val_acc {m['val_acc']:.3f}")
            if epoch_end:
                a = alpha_dict(jax.device_get(state.alpha))
                geno = setup.space.derive(a)
                _save_genotype(workdir / "genotype.json", geno)
                epoch = (done - 1) // setup.steps_per_epoch + 1
                alphas.write({"step": done, "epoch": epoch, "softmax": {l: np.asarray(jax.nn.softmax(jnp.asarray(v))).tolist() for l, v in a.items()}})
                metrics.write({"step": done, "event": "epoch", "epoch": epoch, "genotype": str(geno)})
            if done % config.checkpoint_every_steps == 0 or done == setup.total_steps or stop["signal"] is not None:
                ckpt.save(done, state)
            if stop["signal"] is not None:
                raise Interrupted(f"stopped by signal {stop['signal']} at step {done}; checkpoint written, re-run to resume")
    finally:
        progress.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        ckpt.close()
    geno = setup.space.derive(alpha_dict(jax.device_get(state.alpha)))
    _save_genotype(workdir / "genotype.json", geno)
    return geno


def _save_genotype(path: Path, geno: Any) -> None:
    if isinstance(geno, list):  # NB201 macro: one cell per position
        _write_json_atomic(path, {"schema": G.SCHEMA, "kind": "nb201_macro", "cells": [g.arch_str() for g in geno]})
    else:
        G.save(geno, path)
