"""Configs: ``get_config(arg)`` files returning ``ml_collections.ConfigDict``, validated.

An experiment file (``experiments/<paper>/config.py``) starts from the defaults of a run
kind (:func:`search_defaults`, :func:`train_defaults`, or any kind registered in
:data:`RUN_KINDS`) and overrides values; :func:`load_config` imports it, applies
``--config.key=value`` overrides (typed from the default; ``--config.space_kwargs.nodes=2``
reaches into a kwargs dict), and :func:`validate` checks every key and every named part
(space, relaxation, hypergradient, dataset and its folder, kwargs) before anything is
written. ``path:arg`` passes ``arg`` (e.g. ``smoke``) to ``get_config``.

Parts are named by registry name plus a kwargs dict (big_vision's ``model_name`` +
``model``): ``config.space = "nb201"`` with ``config.space_kwargs = {"ops": [...]}``,
``config.relax = "gdas"`` with ``config.relax_kwargs = {"tau_max": 10.0}``. Empty kwargs
mean the part's own defaults.

``config.imports`` lists Python files imported before the run is built (the experiment file
itself is added by :func:`load_config`), so an op, relaxation or space registered in an
experiment file is there again when the run resumes, and in ``dnas show`` / ``dnas train``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from dnas.core.errors import DnasError
from dnas.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class RunKind:
    """A kind of run (``config.kind``): its schema, its checks and its driver.

    Attributes:
      defaults: every key the kind's configs may have, with default values.
      check: extra validation beyond the schema's keys (raise DnasError); imports a
        driver module lazily if it wants.
      run: ``(config, workdir, log) -> result`` the driver (imported on first use).
      command: the ``dnas`` subcommand that runs it (``search`` or ``train``).
    """

    defaults: Callable[[], ml_collections.ConfigDict]
    check: Callable[[ml_collections.ConfigDict], None]
    run: Callable[..., Any]
    command: str = "search"


RUN_KINDS: Registry[RunKind] = Registry("run kind")


def search_defaults() -> ml_collections.ConfigDict:
    """Every key a differentiable-search config may have, at DARTS' CIFAR-10 values
    (Liu et al. 2019)."""
    c = ml_collections.ConfigDict()
    c.kind = "search"
    c.imports = []  # Python files imported first (registrations); load_config adds the config file
    c.dataset = "cifar10"  # digits | mnist | fashion_mnist | cifar10 | synthetic
    c.data_dir = ""
    c.max_train_examples = 0  # 0 = all; >0 = a data-subset proxy
    c.downsample = 1  # >1: images average-pooled by this factor (a lower-resolution proxy)
    c.space = "darts"  # a registered space (dnas list spaces)
    c.space_kwargs = ml_collections.ConfigDict()  # its constructor's arguments (empty: its defaults)
    c.init_channels = 16
    c.layers = 8  # DARTS: cells; NB201: cells per stage (N)
    c.epochs = 50
    c.batch_size = 64
    c.train_portion = 0.5
    c.max_steps = 0  # 0 = epochs * steps_per_epoch (smoke runs cap this)
    c.augment = True  # random crop (+ flip where the dataset allows), as DARTS' search
    c.w_lr = 0.025
    c.w_lr_min = 0.001
    c.w_momentum = 0.9
    c.w_nesterov = False
    c.w_weight_decay = 3e-4
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
    c.latency = _latency_defaults()  # the latency term (dnas.search.latency): off while latency.table is ""
    return c


def _latency_defaults() -> ml_collections.ConfigDict:
    from dnas.search.latency import latency_defaults

    return latency_defaults()


def train_defaults() -> ml_collections.ConfigDict:
    """Every key a retraining config may have, at DARTS' CIFAR-10 evaluation values."""
    c = ml_collections.ConfigDict()
    c.kind = "train"
    c.imports = []
    c.genotype = "DARTS_V2"
    c.dataset = "cifar10"
    c.data_dir = ""
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
    c.init_from = ""  # a search run directory: start from its supernet's weights (dnas.estimate.inherit), "" = from scratch
    return c


def _check_common(c: ml_collections.ConfigDict) -> None:
    from dnas.data.datasets import check_dataset

    for k in ("epochs", "batch_size", "layers", "init_channels"):
        if int(c[k]) <= 0:
            raise DnasError(f"config.{k} must be positive, got {c[k]}")
    for k in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if int(c[k]) <= 0:
            raise DnasError(f"config.{k} must be positive, got {c[k]}")
    if c.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboardX") is None:
            raise DnasError("config.tensorboard=True needs tensorboardX: pip install tensorboardX (or pip install 'dnas[tensorboard]')")
    if isinstance(c.downsample, bool) or int(c.downsample) < 1:
        raise DnasError(f"config.downsample must be a positive integer (1 = full resolution), got {c.downsample!r}")
    from dnas.cli.main import DATASET_SHAPES

    shape = DATASET_SHAPES.get(c.dataset, ((0, 0, 0), 0))[0]
    if int(c.downsample) > 1 and shape[0] and (shape[0] % int(c.downsample) or shape[1] % int(c.downsample)):
        raise DnasError(f"config.downsample={c.downsample} does not divide {c.dataset}'s {shape[0]}x{shape[1]} images")
    check_dataset(c.dataset, c.data_dir or None)


def check_search(c: ml_collections.ConfigDict) -> None:
    """Validates a search config's values and named parts (builds the space and the
    relaxation, which is cheap, so their kwargs are checked too)."""
    from dnas.search.bilevel import HYPERGRADIENTS
    from dnas.space.relax import make_relaxation
    from dnas.space.base import build_space

    _check_common(c)
    if c.order not in (1, 2):
        raise DnasError(f"config.order must be 1 or 2, got {c.order}")
    if c.hypergradient not in HYPERGRADIENTS:
        raise DnasError(f"config.hypergradient must be one of {HYPERGRADIENTS}, got {c.hypergradient!r}")
    for k in ("fuse_passes", "update_alpha", "augment", "w_nesterov"):
        if not isinstance(c[k], bool):
            raise DnasError(f"config.{k} must be True or False, got {c[k]!r}")
    if not 0.0 < float(c.train_portion) < 1.0:
        raise DnasError(f"config.train_portion must be in (0, 1), got {c.train_portion}")
    space = build_space(c.space, c.layers, _kwargs(c.space_kwargs))
    from dnas.search.latency import check_latency

    check_latency(c, space)
    relax = make_relaxation(c.relax, _kwargs(c.relax_kwargs), epochs=c.epochs)
    _check_alpha_grad(c, relax)
    from dnas.search.methods import make_arch_penalty

    make_arch_penalty(c.arch_penalty, _kwargs(c.arch_penalty_kwargs))
    for k in ("a_warmup_epochs", "hessian_iters"):
        if isinstance(c[k], bool) or int(c[k]) < 0:
            raise DnasError(f"config.{k} must be a non-negative integer, got {c[k]!r}")
    if not isinstance(c.early_stop, bool):
        raise DnasError(f"config.early_stop must be True or False, got {c.early_stop!r}")
    if c.early_stop and int(c.hessian_iters) <= 0:
        raise DnasError("config.early_stop (DARTS-ES) reads the Hessian eigenvalue: set config.hessian_iters > 0 (e.g. 20)")


_REINFORCE_KWARGS = {"entropy_weight": float, "baseline_decay": float, "aggregate": int}


def _check_alpha_grad(c: ml_collections.ConfigDict, relax: Any) -> None:
    if c.alpha_grad not in ("relaxation", "reinforce"):
        raise DnasError(f"config.alpha_grad must be 'relaxation' or 'reinforce' (ENAS), got {c.alpha_grad!r}")
    kw = _kwargs(c.alpha_grad_kwargs)
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


def train_image_shape(c: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
    """(H, W, C) of the images a train config's network sees (its dataset after
    ``downsample``), known without loading the data; None for a dataset of unknown shape
    or a ``downsample`` that is not a positive integer (validation says what is wrong)."""
    from dnas.cli.main import DATASET_SHAPES

    d = c.downsample
    if c.dataset not in DATASET_SHAPES or isinstance(d, bool) or not isinstance(d, int) or d < 1:
        return None
    (h, w, ch), _ = DATASET_SHAPES[c.dataset]
    return h // d, w // d, ch


def check_train(c: ml_collections.ConfigDict) -> None:
    """Validates a retraining config: the genotype must resolve, and its space's network
    must be able to run on the config's images (``check_network``, e.g. DARTS' auxiliary
    head needs a 2x2 map), so that nothing is written for a run that cannot train."""
    from dnas.space import genotype as G
    from dnas.space.base import SPACES

    _check_common(c)
    if not isinstance(c.auxiliary, bool):
        raise DnasError(f"config.auxiliary must be True or False, got {c.auxiliary!r}")
    geno = G.get(c.genotype)
    shape = train_image_shape(c)
    check = getattr(SPACES[geno.space], "check_network", None)  # optional for spaces registered elsewhere
    if shape is not None and check is not None:
        check(geno, image_shape=shape, C=int(c.init_channels), layers=int(c.layers), dataset=c.dataset, auxiliary=c.auxiliary)
    if c.init_from:
        from dnas.estimate.inherit import check_init_from

        check_init_from(c.init_from, c)


def _run_search(config, workdir, log):
    from dnas.run.loop import run_search

    return run_search(config, workdir, log=log)


def _run_train(config, workdir, log):
    from dnas.run.train import run_train

    return run_train(config, workdir, log=log)


def _multitrial_defaults():
    from dnas.run.multitrial import multitrial_defaults

    return multitrial_defaults()


def _check_multitrial(config):
    from dnas.run.multitrial import check_multitrial

    check_multitrial(config)


def _run_multitrial(config, workdir, log):
    from dnas.run.multitrial import run_multitrial

    return run_multitrial(config, workdir, log=log)


RUN_KINDS.add("search", RunKind(search_defaults, check_search, _run_search, "search"))
RUN_KINDS.add("train", RunKind(train_defaults, check_train, _run_train, "train"))
RUN_KINDS.add("multitrial", RunKind(_multitrial_defaults, _check_multitrial, _run_multitrial, "search"))


def _kwargs(d: Any) -> dict[str, Any]:
    """A kwargs ConfigDict as a plain dict (lists, not tuples, stay as given)."""
    return d.to_dict() if isinstance(d, ml_collections.ConfigDict) else dict(d or {})


def _kind(config: Mapping[str, Any]) -> RunKind:
    return RUN_KINDS[config.get("kind", "search")]


# Names people reach for that are spelled differently here.
_ALIASES = {
    "learning_rate": "w_lr", "lr": "w_lr", "weight_lr": "w_lr", "arch_lr": "a_lr", "alpha_lr": "a_lr",
    "arch_learning_rate": "a_lr", "momentum": "w_momentum", "weight_decay": "w_weight_decay",
    "arch_weight_decay": "a_weight_decay", "channels": "init_channels", "C": "init_channels", "cells": "layers",
    "relaxation": "relax", "steps": "max_steps", "nodes": "space_kwargs.nodes", "ops": "space_kwargs.ops",
    "shared": "space_kwargs.shared", "cell_impl": "space_kwargs.cell_impl", "remat": "space_kwargs.remat",
    "data": "data_dir", "workers": "devices", "unrolled": "order",
}


def _suggest(key: str, schema: ml_collections.ConfigDict) -> str:
    keys = list(schema.keys())
    if key in _ALIASES and (_ALIASES[key].split(".")[0] in keys):
        return f"; did you mean {_ALIASES[key]!r}?"
    close = difflib.get_close_matches(key, keys, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(keys)}"


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys against the kind's schema and every value and named part; raises one
    clear DnasError."""
    kind = _kind(config)
    schema = kind.defaults()
    unknown = [k for k in config.keys() if k not in schema]
    if unknown:
        raise DnasError(f"unknown config key {unknown[0]!r}" + _suggest(unknown[0], schema))
    missing = [k for k in schema.keys() if k not in config]
    if missing:
        raise DnasError(f"config lacks key {missing[0]!r}; start from the defaults of kind {config.get('kind', 'search')!r}")
    import_files(config.get("imports", []))
    kind.check(config)
    return config


def _parse_value(text: str, old: Any) -> Any:
    if isinstance(old, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise DnasError(f"expected a boolean, got {text!r}")
    if isinstance(old, int):
        return int(text)
    if isinstance(old, float):
        return float(text)
    if isinstance(old, (list, tuple)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [v.strip() for v in text.split(",") if v.strip()]
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if old is None or isinstance(old, (dict, ml_collections.ConfigDict)):
        return _literal(text)
    return text


def _literal(text: str) -> Any:
    """A new kwargs value: a Python literal when it reads as one (``true``/``false`` too), a
    comma list, else text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [v.strip() for v in text.split(",")] if "," in text else text
    return list(value) if isinstance(value, tuple) else value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``--config.key=value`` strings, typed from the current value.

    ``--config.X_kwargs.name=value`` sets one argument of a named part; a name that is not
    there yet is read as a Python literal (``3``, ``0.5``, ``True``, ``[1, 2]``) or text.
    """
    schema = _kind(config).defaults()
    for item in overrides:
        body = item[len("--config.") :] if item.startswith("--config.") else item
        if "=" not in body:
            raise DnasError(f"override {item!r} must look like --config.key=value")
        key, text = body.split("=", 1)
        head, _, sub = key.partition(".")
        if head not in config:
            raise DnasError(f"unknown config key {head!r} in override" + _suggest(head, schema))
        target, name = (config, head) if not sub else (config[head], sub)
        if sub and not isinstance(target, ml_collections.ConfigDict):
            raise DnasError(f"--config.{head} is a value, not a group; write --config.{head}=VALUE")
        while sub and "." in name:  # a group inside a group (e.g. estimator_kwargs.base_kwargs.run_dir)
            inner, _, name = name.partition(".")
            if inner not in target or not isinstance(target[inner], ml_collections.ConfigDict):
                raise DnasError(f"--config.{key}: {inner!r} is not a group of config.{head}; nested keys must already be groups")
            target = target[inner]
        old = target[name] if name in target else _kwarg_default(config, head, name) if target is config[head] else None
        try:
            value = _parse_value(text, old)
        except ValueError:
            raise DnasError(f"--config.{key}: cannot read {text!r} as {type(old).__name__}") from None
        with target.unlocked():
            target[name] = value
    return config


def _kwarg_default(config: ml_collections.ConfigDict, group: str, name: str) -> Any:
    """The default of argument ``name`` of the part a ``<part>_kwargs`` group configures
    (its factory's signature), so a new kwargs override is typed like it; None if unknown."""
    import inspect

    part = group[: -len("_kwargs")] if group.endswith("_kwargs") else None
    if part is None or part not in config:
        return None
    try:
        if part == "space":
            from dnas.space.base import SPACES

            fn = SPACES[config.space].__init__
        elif part == "relax":
            from dnas.space.relax import RELAXATIONS

            fn = RELAXATIONS[config.relax]
        elif part == "alpha_grad":
            return {"entropy_weight": 1e-4, "baseline_decay": 0.99, "aggregate": 1}.get(name)
        elif part == "arch_penalty" and config.arch_penalty:
            from dnas.search.methods import ARCH_PENALTIES

            fn = ARCH_PENALTIES[config.arch_penalty]
        else:
            return None
    except DnasError:
        return None
    p = inspect.signature(fn).parameters.get(name)
    default = None if p is None or p.default is inspect.Parameter.empty else p.default
    return list(default) if isinstance(default, tuple) else default


_IMPORTED: dict[str, Any] = {}


def import_file(path: str | Path) -> Any:
    """Imports a Python file once per process (registrations in it happen once) and
    returns the module; a failing file gives one DnasError line."""
    file = Path(path).resolve()
    if str(file) in _IMPORTED:
        return _IMPORTED[str(file)]
    if not file.is_file():
        raise DnasError(f"config file {str(path)!r} does not exist")
    name = f"dnas_config_{file.parent.name}_{file.stem}_{len(_IMPORTED)}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # so dataclasses and pickles in it resolve their module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except DnasError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's file: report, do not crash
        del sys.modules[name]
        raise DnasError(f"config file {str(path)!r} failed to load: {type(e).__name__}: {e}") from None
    _IMPORTED[str(file)] = module
    return module


def import_files(paths: Sequence[str]) -> None:
    """Imports each of ``paths`` (:func:`import_file`). A file that no longer exists (a moved
    checkout) is reported on stderr and skipped: a run whose config file registered nothing
    still resumes, and one that did fails at the unknown name, after this line."""
    for p in paths or ():
        if not Path(p).is_file():
            print(f"dnas: warning: {p!r} (in config.imports) does not exist any more; its registrations are missing", file=sys.stderr)
            continue
        import_file(p)


def load_config(spec: str | None, overrides: Sequence[str] = (), kind: str = "search") -> ml_collections.ConfigDict:
    """Loads ``path[:arg]`` (or the defaults of ``kind`` when ``spec`` is None), applies
    overrides, validates."""
    if spec is None:
        config = RUN_KINDS[kind].defaults()
    else:
        path, _, arg = spec.partition(":")
        module = import_file(path)
        if not hasattr(module, "get_config"):
            raise DnasError(f"config file {path!r} has no get_config(arg) function")
        try:
            config = module.get_config(arg or None)
        except DnasError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. an unknown variant name
            raise DnasError(f"{path}:{arg} : {type(e).__name__}: {e}") from None
        if not isinstance(config, ml_collections.ConfigDict):
            raise DnasError(f"get_config in {path!r} must return an ml_collections.ConfigDict")
        own = str(Path(path).resolve())
        if "imports" in config and own not in config.imports:
            with config.unlocked():
                config.imports = [own, *config.imports]
    config = apply_overrides(config, overrides)
    return validate(config)


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as sorted JSON (stored in the run directory)."""
    return json.dumps(config.to_dict(), indent=1, sort_keys=True)


def differing_keys(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
    """Keys (``group.name`` inside kwargs) whose values differ between two configs."""
    da, db = json.loads(to_json(a)), json.loads(to_json(b))
    out = []
    for k in sorted(set(da) | set(db)):
        va, vb = da.get(k), db.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{k}.{s}" for s in sorted(set(va) | set(vb)) if va.get(s) != vb.get(s)]
        elif va != vb:
            out.append(k)
    return out


# Keys added to a schema after runs were already written with it, and the value that
# reproduces what those runs did: a saved run must resume exactly as it started.
_ADDED_KEYS: dict[str, dict[str, Any]] = {
    # order=2 was always the exact hypergradient before; steps ran their passes unfused
    "search": {"hypergradient": "exact", "fuse_passes": False, "update_alpha": True, "relax_kwargs": {}, "imports": [],
               "w_nesterov": False, "tensorboard": False, "arch_penalty": "", "arch_penalty_kwargs": {}, "a_warmup_epochs": 0,
               "hessian_iters": 0, "early_stop": False, "alpha_grad": "relaxation", "alpha_grad_kwargs": {},
               "downsample": 1},
    "train": {"imports": [], "tensorboard": False, "init_from": "", "downsample": 1},
}
# config.latency (issue 19): runs from before it had no latency term.
_ADDED_KEYS["search"]["latency"] = {"table": "", "device": "", "resolution": 224, "penalty": "", "penalty_kwargs": {},
                                    "target_ms": 0.0, "estimate": "auto", "derive_tolerance": 0.05}
# Space keys that lived at the top level before config.space_kwargs.
_MOVED_TO_SPACE_KWARGS = {"darts": ("nodes", "ops", "shared", "cell_impl", "remat"), "nb201": ("ops", "shared")}


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    kind = raw.get("kind", "search")
    for k, v in _ADDED_KEYS.get(kind, {}).items():
        raw.setdefault(k, v)
    if kind == "search" and "space_kwargs" not in raw:
        moved = _MOVED_TO_SPACE_KWARGS.get(raw.get("space", "darts"), ())
        raw["space_kwargs"] = {k: raw[k] for k in moved if k in raw}
        for k in ("nodes", "ops", "shared", "cell_impl", "remat"):
            raw.pop(k, None)
    return raw


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`to_json` (validated).

    A config saved before a key existed gets the value that reproduces its old behaviour
    (e.g. ``hypergradient="exact"``), so older run directories still resume.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DnasError(f"config.json is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise DnasError("config.json must hold a JSON object")
    return validate(ml_collections.ConfigDict(_migrate(raw)))


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


def apply_smoke(c: ml_collections.ConfigDict, **extra: Any) -> ml_collections.ConfigDict:
    """The CPU smoke variant shared by experiment configs: the real CIFAR-10 subset from
    ``../shared`` when present (else the embedded digits), 256 examples, a few steps."""
    c.data_dir = shared_data("images", "cifar10_subset")
    c.dataset = "cifar10" if c.data_dir else "digits"
    c.max_train_examples = 256
    c.batch_size = 16
    c.epochs = 2
    c.max_steps = 6
    c.log_every_steps = 2
    c.checkpoint_every_steps = 3
    for k, v in extra.items():
        c[k] = v
    return c


def shared_data(*parts: str) -> str:
    """``<repo>/../shared/data/<parts>`` when that folder exists (this project's test data),
    else ''. Experiment configs use it for smoke runs and fall back to embedded data."""
    root = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # parents[2]: the repo (this is dnas/run/config.py)
    p = root.joinpath(*parts)
    return str(p) if p.exists() else ""
