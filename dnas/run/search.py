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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from dnas.core.checkpoint import Checkpointer, resume
from dnas.estimate.supernet import read_run_config
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write_json
from dnas.core.stats import hypervolume
from dnas.estimate.nb201_table import table_path, table_row
from dnas.hardware.cost_model import build_cost_model
from dnas.data.datasets import Dataset, StepIndices, augment, get_dataset, normalize, search_split, steps_per_epoch
from dnas.data.pipeline import Stream, step_batches
from dnas.run.config import RUN_KINDS, RunKind, apply_smoke, check_common, kwargs_of, pipeline_defaults
from dnas.run.driver import SignalFlag, StepLoop, evaluate_split, run_in_workdir
from dnas.run.metrics import MetricWriter
from dnas.run.parallel import collectives_in_conditionals_ok, host_rows, is_primary, make_mesh, replicate, shard_batch
from dnas.core.losses import cross_entropy
from dnas.search.bilevel import HYPERGRADIENTS, SearchStep, darts_alpha_optimizer, darts_weight_optimizer, make_search_step
from dnas.search.fewshot import first_alpha, fewshot_step, stack_state, sub
from dnas.search.diagnostics import alpha_entropy, darts_es, param_free_ops, top_hessian_eigenvalue
from dnas.search.latency import add_penalties, build_latency, check_latency, derive_alpha, derive_hardware, epoch_latency_metrics, latency_defaults
from dnas.search.methods import apply_method, delayed, make_arch_penalty
from dnas.search.plans import with_reward_baseline
from dnas.search.state import SearchState, alpha_dict, build_jitted, init_search_state, step_compiler_options
from dnas.space import genotype as G
from dnas.space.base import JointSpace, SearchSpace
from dnas.space.base import build_space as _build_space
from dnas.space.fewshot import FewShotSplit, make_split
from dnas.space.genotype import NB201_OPS
from dnas.space.spaces.nb201 import NB201Space
from dnas.space.ops.layers import depthwise_impl
from dnas.space.relax import make_relaxation, relax_all








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
    fewshot: FewShotSplit | None = None  # config.fewshot.split: the state holds K stacked sub-supernets


def build_space(config: ml_collections.ConfigDict) -> SearchSpace:
    """The registered search space a config names (``config.space`` + ``space_kwargs``)."""

    return _build_space(config.space, config.layers, kwargs_of(config.space_kwargs))


def _sandwich_options(config: ml_collections.ConfigDict, space: SearchSpace, data: Dataset) -> dict[str, Any]:
    sizes = candidate_sizes(space, C=config.init_channels, num_classes=data.num_classes, image_shape=data.image_shape)
    return {"sizes": {l: jnp.asarray(v, jnp.float32) for l, v in sizes.items()}, "n_random": int(config.sandwich.random_paths),
            "distill": bool(config.sandwich.distill)}


def build_search(config: ml_collections.ConfigDict) -> SearchSetup:
    """Data, supernet, optimizers, state and the jitted step for a search config."""
    p = config.pipeline
    data = get_dataset(config.dataset, config.data_dir or None, image_size=p.image_size, workers=p.workers)
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
        nesterov=config.w_nesterov, decay_norm_and_bias=config.w_decay_norm_and_bias,
    )
    a_opt = darts_alpha_optimizer(config.a_lr, config.a_b1, config.a_b2, config.a_weight_decay)
    if config.a_warmup_epochs:
        a_opt = delayed(a_opt, config.a_warmup_epochs * spe)  # PC-DARTS: α frozen while the weights warm up
    reinforce_kwargs = kwargs_of(config.alpha_grad_kwargs)
    if config.alpha_grad == "reinforce":
        aggregate = int(reinforce_kwargs.pop("aggregate", 1))
        if aggregate > 1:  # ENAS: one controller step per `aggregate` sampled children
            a_opt = optax.MultiSteps(a_opt, every_k_schedule=aggregate).gradient_transformation()
        a_opt = with_reward_baseline(a_opt)
    graphdef, state = init_search_state(net, w_opt, a_opt, key=k_state)
    relax = make_relaxation(config.relax, kwargs_of(config.relax_kwargs), epochs=config.epochs)
    latency = build_latency(config, space, relax, steps_per_epoch=spe)
    step = make_search_step(
        graphdef,
        w_opt,
        a_opt,
        order=config.order,
        hypergradient=config.hypergradient,
        relax=relax,
        arch_penalty=add_penalties(make_arch_penalty(config.arch_penalty, kwargs_of(config.arch_penalty_kwargs)), latency and latency.penalty),
        fuse_passes=config.fuse_passes and collectives_in_conditionals_ok(),  # same maths either way
        update_alpha=config.update_alpha,
        steps_per_epoch=spe,
        alpha_grad=config.alpha_grad,
        alpha_grad_kwargs=reinforce_kwargs,
        fair=config.fair_sampling,
        sandwich=_sandwich_options(config, space, data) if config.sandwich.enabled else None,
    )
    split = make_split(space, list(config.fewshot.split)) if len(config.fewshot.split) else None
    run_step: Callable[..., Any] = step
    if split is not None:
        start = _init_from(config.fewshot.init_from, state) if config.fewshot.init_from else {}
        state = stack_state(state, split, **start)
        run_step = fewshot_step(step, split.k)
    mesh = make_mesh(config.devices)
    state = replicate(mesh, state)
    # Images decoded from files were cropped and flipped where they were decoded.
    mean, std, do_aug = data.mean, data.std, config.augment and not data.augment_on_host
    pad = max(1, h // 8) if do_aug else 0
    aug = dict(pad=pad, flip=data.flip, fill=data.pad_fill)

    def train_step(state, xw, yw, xa, ya):
        k = jax.random.fold_in(data_key, state.step)
        xw, xa = normalize(xw, mean, std), normalize(xa, mean, std)
        if do_aug:
            xw = augment(jax.random.fold_in(k, 0), xw, **aug)
            xa = augment(jax.random.fold_in(k, 1), xa, **aug)
        return run_step(state, (xw, yw), (xa, ya))

    def eval_step(state, x, y, valid):
        if split is not None:  # the mean over the sub-supernets
            hits, losses = jax.lax.map(lambda i: one_eval(sub_state(state, i), x, y, valid), jnp.arange(split.k))
            return jnp.mean(hits), jnp.mean(losses)
        return one_eval(state, x, y, valid)

    def sub_state(state, i):
        return state.replace(alpha=sub(state.alpha, i), weights=sub(state.weights, i), stats=sub(state.stats, i))

    def one_eval(state, x, y, valid):
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
    return SearchSetup(config, data, w_idx, a_idx, space, graphdef, state, step, jitted, spe, total, data_key, mesh, eval_jit, hess_jit,
                       latency=latency, fewshot=split)


def _init_from(run_dir: str, state: SearchState) -> dict[str, Any]:
    """The weights and BatchNorm statistics of the one-shot supernet trained in ``run_dir``
    (newest checkpoint), in the structure of ``state``'s: the few-shot supernets start from
    them (Zhao et al. 2021, Sec. 3: "transfer learning" from the trained one-shot supernet)."""
    read_run_config(run_dir, what="a dnas search (one-shot supernet)")
    ck = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        step = ck.latest_step()
        if step is None:
            raise DnasError(f"fewshot.init_from {run_dir!r} has no checkpoint yet; train the one-shot supernet there first")
        got = ck.restore_fields(step, {"weights": state.weights, "stats": state.stats})
    finally:
        ck.close()
    return {"weights": jax.tree_util.tree_map(jnp.asarray, got["weights"]), "stats": jax.tree_util.tree_map(jnp.asarray, got["stats"])}




def search_batches(setup: SearchSetup, start: int) -> Iterator[tuple[np.ndarray, ...]]:
    """This process' rows of the global ``(x_w, y_w, x_α, y_α)`` batches of steps ``start ..
    total - 1`` (``config.pipeline``, :func:`dnas.data.pipeline.step_batches`): the global
    indices are a pure function of ``(key, step)``, the same on every process, and each
    reads only its own rows (:func:`host_rows`)."""
    c, d = setup.config, setup.data
    bs = c.batch_size
    kw, ka = jax.random.fold_in(setup.data_key, 10_000_001), jax.random.fold_in(setup.data_key, 10_000_002)
    streams = [Stream(d.train_x, d.train_y, StepIndices(kw, len(setup.w_idx), bs), setup.w_idx),
               Stream(d.train_x, d.train_y, StepIndices(ka, len(setup.a_idx), bs), setup.a_idx)]
    p = c.pipeline
    return step_batches(streams, host_rows(bs), start, setup.total_steps, loader=p.loader, seed=c.seed, workers=p.workers, prefetch=p.prefetch)












def _save_genotype(geno: G.Genotype, workdir: Path) -> None:
    """``genotype.json``, written by process 0 alone (every process derives the same one)."""
    if is_primary():
        G.save(geno, workdir / "genotype.json")


def search_defaults() -> ml_collections.ConfigDict:
    """Every key a differentiable-search config may have, at DARTS' CIFAR-10 values
    (Liu et al. 2019)."""
    c = ml_collections.ConfigDict()
    c.kind = "search"
    c.imports = []  # Python files imported first (registrations); load_config adds the config file
    c.dataset = "cifar10"  # digits | mnist | fashion_mnist | cifar10 | synthetic | folder (ImageNet layout at data_dir)
    c.data_dir = ""
    c.pipeline = pipeline_defaults()  # how batches are read: loader memory | grain, workers, prefetch, folder image_size
    c.max_train_examples = 0  # 0 = all; >0 = a data-subset proxy
    c.downsample = 1  # >1: images average-pooled by this factor (a lower-resolution proxy)
    c.space = "darts"  # a registered space (dnas list spaces)
    c.space_kwargs = ml_collections.ConfigDict()  # its constructor's arguments (empty: its defaults)
    c.init_channels = 16
    c.layers = 8  # DARTS: cells; NB201: cells per stage (N)
    c.epochs = 50
    c.batch_size = 64
    c.train_portion = 0.5
    c.val_every_epochs = 1  # the whole-validation-split evaluation every k-th epoch and the last (a third of a weight-only step's time at 1)
    c.max_steps = 0  # 0 = epochs * steps_per_epoch (smoke runs cap this)
    c.augment = True  # random crop (+ flip where the dataset allows), as DARTS' search
    c.w_lr = 0.025
    c.w_lr_min = 0.001
    c.w_momentum = 0.9
    c.w_nesterov = False
    c.w_weight_decay = 3e-4
    c.w_decay_norm_and_bias = True  # False: no L2 on BatchNorm scales and biases (OFA; How to Train Your Super-Net)
    c.grad_clip = 5.0
    c.a_lr = 3e-4
    c.a_b1 = 0.5
    c.a_b2 = 0.999
    c.a_weight_decay = 1e-3
    c.order = 1
    c.hypergradient = "finite_difference"  # order 2: DARTS' Eq. 8, "forward_difference" (one pass fewer) or "exact"
    c.fuse_passes = True  # the step's passes as one lax.scan: faster compile, same maths
    c.update_alpha = True  # False: weights only (supernet training by sampled paths, e.g. relax="uniform")
    c.relax = "softmax"  # a registered relaxation (dnas list relaxations)
    c.relax_kwargs = ml_collections.ConfigDict()
    c.alpha_grad = "relaxation"  # or "reinforce": ENAS' policy gradient on α (relax="policy")
    c.alpha_grad_kwargs = ml_collections.ConfigDict()  # reinforce: entropy_weight, baseline_decay, aggregate
    c.arch_penalty = ""  # a registered α-loss term (dnas.search.methods.ARCH_PENALTIES: dirichlet_kl, zero_one); "" = none
    c.arch_penalty_kwargs = ml_collections.ConfigDict()
    c.a_warmup_epochs = 0  # α frozen for this many epochs (PC-DARTS: 15)
    c.hessian_iters = 0  # >0: per epoch, the top eigenvalue of the val-loss Hessian w.r.t. α by this many power iterations
    c.early_stop = False  # DARTS-ES (RobustDARTS): stop when the eigenvalue's local average rises by 1.3x; needs hessian_iters
    c.seed = 2
    c.devices = 0  # 0 = all local devices (data parallel); n = the first n
    c.log_every_steps = 10
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 2
    c.tensorboard = False  # also write TensorBoard event files to <workdir>/tensorboard (pip install tensorboardX)
    c.fair_sampling = False  # FairNAS (with update_alpha=False): every candidate of every label trained once per step
    # The sandwich rule (US-Nets / BigNAS, with update_alpha=False, layer-wise spaces): per step the
    # largest path (most multiply-adds per label), the smallest and random_paths uniform ones,
    # gradients summed; distill: in-place distillation, every path but the largest learns
    # from the largest's predictions
    c.sandwich = ml_collections.ConfigDict({"enabled": False, "random_paths": 2, "distill": False})
    # Few-shot supernets (Zhao et al. 2021): split by the candidates of these labels into
    # K = prod(candidates) sub-supernets, started from the one-shot run in init_from ("": fresh)
    c.fewshot = ml_collections.ConfigDict({"split": [], "init_from": ""})
    c.eval_bn = "running"  # BatchNorm mode dnas eval uses by default: running | batch | recalibrate:K
    c.eval_val_batches = 0  # held-out batches dnas eval scores each architecture on by default (0: the whole held-out split)
    c.latency = latency_defaults()  # the latency term (dnas.search.latency): off while latency.table is ""
    # What summary.json reports on the derived architecture (written when the run ends, for a
    # joint network + hardware space or when objectives are named): its cost-model metrics,
    # its accuracy in a benchmark table (NB201), and with objectives its hypervolume.
    c.summary = ml_collections.ConfigDict({
        "table": "",  # an NB201 table CSV: the derived cell's accuracy ('' = none)
        "accuracy": "cifar10_test_200ep",  # the table's column reported as "accuracy"
        "objectives": [],  # e.g. ["accuracy", "-latency_ms", "-energy_mj", "-area_mm2"]: the hypervolume's axes
        "hv_reference": [],  # worst point, one value per objective (maximised)
        "hv_ideal": [],  # best point
        "limits": {},  # hard limits on the derived pair, e.g. {"area_mm2": 3.0}: the derived accelerator is the most likely design within them
    })
    return c


def default_search_config() -> ml_collections.ConfigDict:
    """What ``dnas search`` runs with no config: first-order DARTS on the embedded 8x8
    digits, a small supernet (C=8, 3 cells: one normal, two reduction), 150 steps, one to
    two minutes on 2 CPU cores.

    The α learning rate is 0.05 (the paper's 3e-4 is for 50 CIFAR epochs of 390 steps)
    without α weight decay: the weights fit digits within a few epochs, after which the
    α-gradient is small, and at 3e-4 α would not move visibly in 150 steps (softmax(α)
    stayed in 0.122-0.128 everywhere). No augmentation: 8x8 digits have nothing to crop.
    """
    c = search_defaults()
    c.dataset = "digits"
    c.init_channels = 8
    c.layers = 3
    c.epochs = 10
    c.batch_size = 48
    c.a_lr = 0.05
    c.a_weight_decay = 0.0
    c.augment = False
    c.log_every_steps = 5
    c.checkpoint_every_steps = 50
    return c


def check_search(c: ml_collections.ConfigDict) -> None:
    """Validates a search config's values and named parts (builds the space and the
    relaxation, which is cheap, so their kwargs are checked too)."""
    check_common(c)
    if c.order not in (1, 2):
        raise DnasError(f"config.order must be 1 or 2, got {c.order}")
    if c.hypergradient not in HYPERGRADIENTS:
        raise DnasError(f"config.hypergradient must be one of {HYPERGRADIENTS}, got {c.hypergradient!r}")
    for k in ("fuse_passes", "update_alpha", "augment", "w_nesterov", "w_decay_norm_and_bias"):
        if not isinstance(c[k], bool):
            raise DnasError(f"config.{k} must be True or False, got {c[k]!r}")
    if not 0.0 < float(c.train_portion) < 1.0:
        raise DnasError(f"config.train_portion must be in (0, 1), got {c.train_portion}")
    if isinstance(c.val_every_epochs, bool) or not isinstance(c.val_every_epochs, int) or c.val_every_epochs < 1:
        raise DnasError(f"config.val_every_epochs must be an integer >= 1 (1: every epoch), got {c.val_every_epochs!r}")
    space = _build_space(c.space, c.layers, kwargs_of(c.space_kwargs))
    check_latency(c, space)
    _check_summary(c, space)
    relax = make_relaxation(c.relax, kwargs_of(c.relax_kwargs), epochs=c.epochs)
    _check_alpha_grad(c, relax)
    make_arch_penalty(c.arch_penalty, kwargs_of(c.arch_penalty_kwargs))
    for k in ("a_warmup_epochs", "hessian_iters"):
        if isinstance(c[k], bool) or int(c[k]) < 0:
            raise DnasError(f"config.{k} must be a non-negative integer, got {c[k]!r}")
    if not isinstance(c.early_stop, bool):
        raise DnasError(f"config.early_stop must be True or False, got {c.early_stop!r}")
    if c.early_stop and int(c.hessian_iters) <= 0:
        raise DnasError("config.early_stop (DARTS-ES) reads the Hessian eigenvalue: set config.hessian_iters > 0 (e.g. 20)")
    _check_oneshot_options(c, space)


def _check_oneshot_options(c: ml_collections.ConfigDict, space: SearchSpace) -> None:
    if not isinstance(c.fair_sampling, bool):
        raise DnasError(f"config.fair_sampling must be True or False, got {c.fair_sampling!r}")
    if c.fair_sampling and c.update_alpha:
        raise DnasError("config.fair_sampling (FairNAS) trains the supernet's weights only: set config.update_alpha=False")
    parse_eval_bn(c.eval_bn)
    if isinstance(c.eval_val_batches, bool) or not isinstance(c.eval_val_batches, int) or c.eval_val_batches < 0:
        raise DnasError(f"config.eval_val_batches must be an integer >= 0 (0: the whole held-out split), got {c.eval_val_batches!r}")
    _check_sandwich(c, space)
    if len(c.fewshot.split):
        make_split(space, list(c.fewshot.split))
        if c.update_alpha:
            raise DnasError("config.fewshot splits a one-shot supernet trained by sampled paths: set config.update_alpha=False (e.g. method spos)")
        if c.hessian_iters or c.early_stop or c.latency.table:
            raise DnasError("config.fewshot runs no Hessian diagnostics, DARTS-ES or latency term; set hessian_iters=0, early_stop=False, latency.table=''")
    elif c.fewshot.init_from:
        raise DnasError("config.fewshot.init_from starts few-shot sub-supernets: name the labels to split by in config.fewshot.split")


def _check_sandwich(c: ml_collections.ConfigDict, space: SearchSpace) -> None:
    sw = c.sandwich
    for k in ("enabled", "distill"):
        if not isinstance(sw[k], bool):
            raise DnasError(f"config.sandwich.{k} must be True or False, got {sw[k]!r}")
    if isinstance(sw.random_paths, bool) or not isinstance(sw.random_paths, int) or sw.random_paths < 0:
        raise DnasError(f"config.sandwich.random_paths must be an integer >= 0 (BigNAS: 2), got {sw.random_paths!r}")
    if sw.distill and not sw.enabled:
        raise DnasError("config.sandwich.distill (in-place distillation) learns from the sandwich's largest path: set config.sandwich.enabled=True")
    if not sw.enabled:
        return
    if not space.layerwise:
        raise DnasError(f"config.sandwich needs a layer-wise space, where the largest and smallest networks are the per-label "
                        f"largest and smallest candidates (proxylessnas, fbnet); {c.space!r} is a cell space: set config.sandwich.enabled=False")
    if c.update_alpha:
        raise DnasError("config.sandwich trains the supernet's weights only: set config.update_alpha=False (e.g. method spos)")
    if c.fair_sampling:
        raise DnasError("config.sandwich and config.fair_sampling each choose the step's paths: enable one of them")


def candidate_sizes(space: SearchSpace, *, C: int, num_classes: int, image_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """``label -> f64[k]``: each candidate's multiply-adds (millions) at its position, what
    the sandwich rule's "largest" and "smallest" mean (the ``counts`` cost model: key by key
    for a keyed space, on the supernet otherwise; zero and identity candidates count 0).

    Args:
      space: a layer-wise space.
      C, num_classes: the supernet's stem width and classes.
      image_shape: ``(H, W, channels)`` of the training images.
    """
    h, _, c = image_shape
    model = build_cost_model("counts", space, {"resolution": int(h), "C": int(C), "num_classes": int(num_classes), "in_channels": int(c)})
    return model.additive("macs_m").per_label()


def parse_eval_bn(value: str) -> tuple[str, int]:
    """``config.eval_bn`` as ``(mode, recalibration batches)``: ``running``, ``batch`` or
    ``recalibrate:K`` (K >= 1).

    Raises:
      DnasError: any other value.
    """
    v = str(value)
    if v in ("running", "batch"):
        return v, 0
    if v.startswith("recalibrate:") and v.split(":", 1)[1].isdigit() and int(v.split(":", 1)[1]) >= 1:
        return "recalibrate", int(v.split(":", 1)[1])
    raise DnasError(f"config.eval_bn must be 'running', 'batch' or 'recalibrate:K' (K >= 1), got {value!r}")


def _check_summary(c: ml_collections.ConfigDict, space: SearchSpace) -> None:
    s = c.summary
    if s.table:
        if not isinstance(space.net_space if isinstance(space, JointSpace) else space, NB201Space):
            raise DnasError("config.summary.table reads an NB201 table: it needs space='nb201' (the derived cell is looked up)")
        table_path(s.table)
    objs = list(s.objectives)
    if objs:
        for k in (s.hv_reference, s.hv_ideal):
            if len(k) and len(k) != len(objs):
                raise DnasError(f"config.summary.hv_reference and hv_ideal need one value per objective ({len(objs)})")
        if not (len(s.hv_reference) and len(s.hv_ideal)):
            raise DnasError("config.summary.objectives needs hv_reference and hv_ideal (one run's single point has no range of its own)")


def final_report(setup: "SearchSetup", config: ml_collections.ConfigDict, alpha: dict[str, Any], geno: Any) -> dict[str, Any]:
    """What ``summary.json`` says about the derived architecture: the genotype, on a joint
    space the derived accelerator (the argmax of its α, or the most likely design within
    ``config.summary.limits``: :func:`dnas.search.latency.derive_hardware`), the cost model's metrics of the
    pair, the accuracy from ``config.summary.table``, and with ``config.summary.objectives``
    the one-point Pareto front and its normalised hypervolume
    (:func:`dnas.core.stats.hypervolume`), comparable with a multi-trial run's under the
    same reference and ideal points."""
    space, s = setup.space, config.summary
    derived = derive_alpha(setup.latency, alpha)
    vec = np.array([int(np.argmax(np.asarray(derived[l]))) for l in space.labels], np.int32)
    point: dict[str, Any] = {"arch": str(geno)}
    if isinstance(space, JointSpace):
        if setup.latency is None and s.limits:
            raise DnasError("config.summary.limits price the derived pair: set config.latency.cost_model (e.g. 'accelerator')")
        n = space.num_network
        vec[n:] = derive_hardware(space, setup.latency.cost, derived, vec[:n], dict(s.limits)) if s.limits else vec[n:]
        point["hardware"] = {l.split("/", 1)[-1]: (v.item() if isinstance(v, np.generic) else v) for l, v in space.hw_space.names(vec[n:]).items()}
    if setup.latency is not None:
        point.update({k: float(v) for k, v in setup.latency.cost.cost(vec).items()})
    if s.table:
        row = table_row(s.table, geno.arch_str())
        point["accuracy"] = float(row[s.accuracy])
        point.update({k.lstrip("-"): float(row[k.lstrip("-")]) for k in s.objectives if k.lstrip("-") in row})
    out: dict[str, Any] = {"genotype": str(geno), "pareto": [point]}
    if len(s.objectives):
        missing = [k.lstrip("-") for k in s.objectives if k.lstrip("-") not in point]
        if missing:
            raise DnasError(f"config.summary.objectives names {missing[0]!r}, which the run does not report; it has {', '.join(k for k in point if k not in ('arch', 'hardware'))}")
        objs = np.array([[-point[k[1:]] if k.startswith("-") else point[k] for k in s.objectives]])
        point["objectives"] = objs[0].tolist()
        out.update({"hypervolume": hypervolume(objs, list(s.hv_reference), list(s.hv_ideal)), "hv_reference": list(s.hv_reference),
                    "hv_ideal": list(s.hv_ideal), "objectives": list(s.objectives)})
    return out


def _write_final(setup: "SearchSetup", config: ml_collections.ConfigDict, workdir: Path, alpha: dict[str, Any], geno: Any, log: Callable[[str], None]) -> None:
    if not (isinstance(setup.space, JointSpace) or config.summary.table or len(config.summary.objectives)):
        return
    report = final_report(setup, config, alpha, geno)
    atomic_write_json(workdir / "summary.json", report)
    pt = report["pareto"][0]
    if "hardware" in pt:
        atomic_write_json(workdir / "hardware.json", pt["hardware"])
        log("search: derived accelerator " + " ".join(f"{k}={v}" for k, v in pt["hardware"].items()))
    shown = {k: v for k, v in pt.items() if isinstance(v, float)}
    log("search: derived pair " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
        + (f"; hypervolume {report['hypervolume']:.4f}" if "hypervolume" in report else "") + f" (summary.json)")


_REINFORCE_KWARGS = {"entropy_weight": float, "baseline_decay": float, "aggregate": int}


def _check_alpha_grad(c: ml_collections.ConfigDict, relax: Any) -> None:
    if c.alpha_grad not in ("relaxation", "reinforce"):
        raise DnasError(f"config.alpha_grad must be 'relaxation' or 'reinforce' (ENAS), got {c.alpha_grad!r}")
    kw = kwargs_of(c.alpha_grad_kwargs)
    if c.alpha_grad == "relaxation":
        if kw:
            raise DnasError(f"config.alpha_grad_kwargs {sorted(kw)} are reinforce settings; set config.alpha_grad='reinforce' or drop them")
        return
    bad = [k for k in kw if k not in _REINFORCE_KWARGS]
    if bad:
        raise DnasError(f"config.alpha_grad_kwargs has no {bad[0]!r}; reinforce accepts: {', '.join(_REINFORCE_KWARGS)}")
    if c.order != 1:
        raise DnasError("config.alpha_grad='reinforce' (ENAS) is a first-order policy gradient; set config.order=1")
    if not getattr(relax, "log_policy", None):
        raise DnasError(f"config.alpha_grad='reinforce' samples paths from a policy; config.relax={c.relax!r} has none: use relax='policy'")
    if not 0.0 <= float(kw.get("baseline_decay", 0.99)) < 1.0:
        raise DnasError(f"config.alpha_grad_kwargs.baseline_decay must lie in [0, 1), got {kw['baseline_decay']}")
    if int(kw.get("aggregate", 1)) < 1:
        raise DnasError(f"config.alpha_grad_kwargs.aggregate must be >= 1, got {kw['aggregate']}")

def method_config(name: str, *, epochs: int, nb201: bool = False, smoke: bool = False) -> ml_collections.ConfigDict:
    """A search config running method ``name`` for ``epochs`` epochs with collapse
    diagnostics (20 Hessian power iterations per epoch) on the DARTS space, or with
    ``nb201`` on the NAS-Bench-201 space at the benchmark's weight settings (wd 5e-4,
    Nesterov); ``smoke`` is the CPU variant every experiment has (3 DARTS cells including a
    normal one with 2 nodes, or one NB201 cell per stage; no Hessian)."""
    c = search_defaults()
    apply_method(c, name)
    c.epochs = epochs
    c.hessian_iters = 20
    if nb201:
        c.space, c.layers = "nb201", 5
        c.space_kwargs.ops = list(NB201_OPS)
        c.w_weight_decay, c.w_nesterov = 5e-4, True
    if smoke:
        apply_smoke(c, init_channels=4, layers=1 if nb201 else 3)
        c.hessian_iters = 0
        if not nb201:
            c.space_kwargs.nodes = 2
    return c


def run_search(config: ml_collections.ConfigDict | None, workdir: str | Path, *, log: Callable[[str], None] = print) -> G.Genotype:
    """Runs (or resumes) a search in ``workdir``; returns the final genotype.

    SIGINT/SIGTERM write a checkpoint and raise :class:`dnas.run.driver.Interrupted`; running
    the same command again continues exactly where it stopped (bit-identical α and
    weights). A loss that turns NaN or infinite stops the run with
    :class:`dnas.run.driver.NonFiniteLoss` naming the step; that state is not checkpointed.
    """
    return run_in_workdir(config, workdir, _search, log=log, multiprocess=True)


def _search(config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], stop: SignalFlag) -> G.Genotype:
    setup = build_search(config)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    tb = workdir / "tensorboard" if config.tensorboard else None
    metrics, alphas = MetricWriter(workdir / "metrics.jsonl", tensorboard_dir=tb), MetricWriter(workdir / "alpha.jsonl", tensorboard_dir=tb)
    state = resume(ckpt, setup.state, (metrics, alphas), log)
    method = f"{config.relax} relaxation, " + (("REINFORCE α" if config.alpha_grad == "reinforce" else f"order {config.order}") if config.update_alpha else "weights only")
    log(
        f"search: {config.space} space ({setup.space.size():.3e} architectures), {method}, {config.dataset} "
        f"{len(setup.w_idx)}+{len(setup.a_idx)} examples, {setup.total_steps} steps "
        f"({setup.steps_per_epoch}/epoch), {setup.mesh.devices.size} device(s)"
    )

    # Up to the restored step only: in a multi-process run the others may read before
    # process 0 has truncated, and all must take the same DARTS-ES decisions.
    if config.fuse_passes and not collectives_in_conditionals_ok():
        log("search: the step's passes run one after another (not fused): XLA:CPU cannot order collectives inside a fused step across processes")
    history = [r for r in metrics.read() if r.get("event") in ("epoch", "early_stop") and r.get("step", 0) <= int(state.step)]
    if any(r.get("event") == "early_stop" for r in history):
        metrics.close()
        alphas.close()
        ckpt.close()
        log(f"search: this run stopped early (DARTS-ES); its genotype is {str(workdir / 'genotype.json')!r}")
        return G.load(workdir / "genotype.json")
    eigenvalues = [float(r["hessian_eigenvalue"]) for r in history if "hessian_eigenvalue" in r]
    logits_by_epoch = {int(r["epoch"]): r["logits"] for r in alphas.read() if "logits" in r and r["step"] <= int(state.step)}

    loop = StepLoop(workdir, "search", ckpt, stop, setup.total_steps, setup.steps_per_epoch, config,
                    loss_keys=("train_loss", "val_loss"), hint="lower the learning rates or check the data")
    d = setup.data
    choice_labels = set(setup.space.labels)
    batches = search_batches(setup, int(state.step))
    try:
        for step in loop.steps(int(state.step)):
            batch = shard_batch(setup.mesh, next(batches))
            state, tick = loop.step(setup.train_step, state, batch, "the search step")
            done, m = tick.done, tick.metrics
            if tick.logging:
                dt = loop.seconds_per_step(done)
                metrics.write({"step": done, "epoch": tick.epoch, **m, "step_time_s": dt, "images_per_s": 2 * config.batch_size / dt})
                shown = f"loss {m['train_loss']:.3f}" + (f" val_acc {m['val_acc']:.3f}" if "val_acc" in m else "")
                loop.say(done, shown + f" α-entropy {m['alpha_entropy']:.3f}")
            if tick.epoch_end:
                epoch = tick.epoch
                a = alpha_dict(jax.device_get(state.alpha))
                a = first_alpha(a) if setup.fewshot else a
                geno = setup.space.derive(derive_alpha(setup.latency, a))
                _save_genotype(geno, workdir)
                soft = lambda v: np.asarray(jax.nn.softmax(jnp.asarray(v))).tolist()  # noqa: E731
                record = {"step": done, "epoch": epoch, "softmax": {l: soft(v) for l, v in a.items() if l in choice_labels}}
                if len(a) > len(choice_labels):  # PC-DARTS' β: not op choices, kept apart for the α plots
                    record["beta"] = {l: soft(v) for l, v in a.items() if l not in choice_labels}
                if config.early_stop:
                    record["logits"] = {l: np.asarray(v).tolist() for l, v in a.items()}
                    logits_by_epoch[epoch] = record["logits"]
                alphas.write(record)
                # Skipped epochs log no epoch_val_acc: the split's forward passes cost a third
                # of a weight-only epoch (RSPS, SPOS), and readers take the key as optional.
                validate = epoch % int(config.val_every_epochs) == 0 or done >= setup.total_steps
                ev = (evaluate_split(setup.eval_step, state, setup.mesh, d.train_x[setup.a_idx], d.train_y[setup.a_idx], config.batch_size)
                      if validate else None)
                diag: dict[str, Any] = {"param_free_ops": param_free_ops(geno), "epoch_alpha_entropy": alpha_entropy(a, setup.space.labels)}
                if setup.hessian_step is not None:
                    # One fixed validation batch (the first of the α split), so epochs compare.
                    hb = setup.a_idx[: config.batch_size]
                    diag["hessian_eigenvalue"] = float(setup.hessian_step(state, *shard_batch(setup.mesh, (d.train_x[hb], d.train_y[hb]), global_batch=True)))
                    eigenvalues.append(diag["hessian_eigenvalue"])
                val = {"epoch_val_acc": ev["acc"], "epoch_val_loss": ev["loss"]} if ev else {}
                metrics.write({"step": done, "event": "epoch", "epoch": epoch, **val, "genotype": str(geno), **diag,
                               **epoch_latency_metrics(setup.latency, a)})
                shown = f" λ_max {diag['hessian_eigenvalue']:.4g}" if "hessian_eigenvalue" in diag else ""
                if ev:
                    loop.say(done, f"epoch {epoch}: val_acc {ev['acc']:.3f} (whole validation split) val_loss {ev['loss']:.3f}{shown}", line=True)
                elif shown:
                    loop.say(done, f"epoch {epoch}:{shown}", line=True)
                loop.reset_clock()  # the evaluation is not a step
                back = darts_es(eigenvalues) if config.early_stop else None
                if back is not None and (back + 1) in logits_by_epoch:
                    # DARTS-ES: the eigenvalue's local average rose by the threshold; the
                    # result is the architecture of the epoch before the rise.
                    geno = setup.space.derive(logits_by_epoch[back + 1])
                    _save_genotype(geno, workdir)
                    metrics.write({"step": done, "event": "early_stop", "epoch": epoch, "stop_epoch": back + 1, "genotype": str(geno)})
                    loop.save(done, state)
                    loop.say(done, f"DARTS-ES: stopped after epoch {epoch}; the genotype of epoch {back + 1}: {geno}", line=True)
                    return geno
            loop.end_step(tick, state)
    finally:
        batches.close()  # grain's reading threads
        loop.close()
        metrics.close()
        alphas.close()
    final_alpha = alpha_dict(jax.device_get(state.alpha))
    final_alpha = first_alpha(final_alpha) if setup.fewshot else final_alpha
    geno = setup.space.derive(derive_alpha(setup.latency, final_alpha))
    _save_genotype(geno, workdir)
    if is_primary():  # process 0 alone writes the run's files
        _write_final(setup, config, workdir, final_alpha, geno, log)
    return geno


RUN_KINDS.add("search", RunKind(search_defaults, check_search, lambda config, workdir, log: run_search(config, workdir, log=log), "search"))
