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
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from dnas.core.errors import DnasError
from dnas.core.imports import import_file, import_files
from dnas.core.io import read_json
from dnas.core.registry import Registry
from dnas.data.datasets import DATASET_SHAPES, check_dataset, shared_data
from dnas.data.pipeline import check_loader
from dnas.search.methods import ARCH_PENALTIES
from dnas.space.base import SPACES
from dnas.space.relax import RELAXATIONS


@dataclasses.dataclass(frozen=True)
class RunKind:
    """A kind of run (``config.kind``): its schema, its checks and its driver.

    Attributes:
      defaults: every key the kind's configs may have, with default values.
      check: extra validation beyond the schema's keys (raise DnasError).
      run: ``(config, workdir, log) -> result`` the driver.

    Each driver module registers its own kind (``dnas.run.search``, ``dnas.run.train``,
    ``dnas.run.multitrial``); this module is the schema machinery and names no driver.
      command: the ``dnas`` subcommand that runs it (``search`` or ``train``).
    """

    defaults: Callable[[], ml_collections.ConfigDict]
    check: Callable[[ml_collections.ConfigDict], None]
    run: Callable[..., Any]
    command: str = "search"


RUN_KINDS: Registry[RunKind] = Registry("run kind")


def pipeline_defaults() -> ml_collections.ConfigDict:
    """``config.pipeline``: how a search or retraining run reads its batches
    (:mod:`dnas.data.pipeline`); the defaults read in the step loop, as runs always did."""
    return ml_collections.ConfigDict({
        "loader": "memory",  # "memory": each batch read when the step needs it; "grain": read ahead by worker threads
        "workers": 4,  # grain: reading threads; also the threads decoding a folder's evaluation batches
        "prefetch": 2,  # grain: batches kept ready ahead of the step
        "image_size": 224,  # dataset="folder": side of the square crops decoded from its images
        "min_scale": 0.08,  # dataset="folder": smallest random-resized crop, as a fraction of the image's area
    })


def check_pipeline(c: ml_collections.ConfigDict) -> None:
    """Refuses ``config.pipeline`` values that cannot work (one line naming the fix)."""
    p = c.pipeline
    check_loader(p.loader)
    for k in ("workers", "prefetch"):
        if int(p[k]) < 1:
            raise DnasError(f"config.pipeline.{k} must be >= 1, got {p[k]}")
    if int(p.image_size) < 8:
        raise DnasError(f"config.pipeline.image_size must be at least 8 pixels, got {p.image_size}")
    if not 0.0 < float(p.min_scale) <= 1.0:
        raise DnasError(f"config.pipeline.min_scale must lie in (0, 1], got {p.min_scale}")
    if c.dataset == "folder" and int(c.downsample) != 1:
        raise DnasError("config.downsample applies to in-memory datasets; for dataset 'folder' set config.pipeline.image_size instead")


def check_common(c: ml_collections.ConfigDict) -> None:
    """The checks every run kind that trains a network shares: positive sizes and
    intervals, the TensorBoard extra, the resolution proxy, the dataset and its folder."""
    for k in ("epochs", "batch_size", "layers", "init_channels"):
        if int(c[k]) <= 0:
            raise DnasError(f"config.{k} must be positive, got {c[k]}")
    for k in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if int(c[k]) <= 0:
            raise DnasError(f"config.{k} must be positive, got {c[k]}")
    if c.tensorboard:
        if importlib.util.find_spec("tensorboardX") is None:
            raise DnasError("config.tensorboard=True needs tensorboardX: pip install tensorboardX (or pip install 'dnas[tensorboard]')")
    if isinstance(c.downsample, bool) or int(c.downsample) < 1:
        raise DnasError(f"config.downsample must be a positive integer (1 = full resolution), got {c.downsample!r}")
    shape = DATASET_SHAPES.get(c.dataset, ((0, 0, 0), 0))[0]
    if int(c.downsample) > 1 and shape[0] and (shape[0] % int(c.downsample) or shape[1] % int(c.downsample)):
        raise DnasError(f"config.downsample={c.downsample} does not divide {c.dataset}'s {shape[0]}x{shape[1]} images")
    check_pipeline(c)
    check_dataset(c.dataset, c.data_dir or None)


def kwargs_of(d: Any) -> dict[str, Any]:
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
    _check_types(config, schema)
    import_files(config.get("imports", []))
    kind.check(config)
    return config


INT_MAX = 2**31 - 1
"""The largest count a config may hold: steps, epochs and seeds live in int32 on the device."""


def _shown(value: Any) -> str:
    """A value for a one-line message (a ConfigDict's repr is multi-line YAML), cut short."""
    text = json.dumps(value.to_dict()) if isinstance(value, ml_collections.ConfigDict) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _structured(name: str, default: Any) -> bool:
    """Whether a group has a fixed set of keys (``latency``), unlike a part's free kwargs."""
    return isinstance(default, ml_collections.ConfigDict) and len(default) > 0 and not name.endswith("_kwargs")


def _check_types(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "config.") -> None:
    """Each value has its default's type (inside fixed groups such as ``latency`` too);
    numbers are finite and not negative (no schema default is, and none means anything when
    negative; ``seed`` may be); integers are at most :data:`INT_MAX`.

    Why here: a saved ``config.json`` (or a config file) reaches the kind's checks without
    the typed parsing of overrides, so ``"epochs": "abc"`` raised ValueError, and
    ``--config.epochs=100000000000000000000000`` or ``--config.w_lr=nan`` ran.
    """
    for k in schema.keys():
        d = schema[k]
        if k not in config:
            raise DnasError(f"{prefix}{k} is missing; start from the defaults of the run kind")
        v = config[k]
        if d is None or isinstance(d, (ml_collections.ConfigDict, dict)):
            if isinstance(d, (ml_collections.ConfigDict, dict)) and not isinstance(v, (ml_collections.ConfigDict, dict)):
                raise DnasError(f"{prefix}{k} must be a group of NAME=VALUE settings, got {_shown(v)}")
            if _structured(k, d):
                _check_types(v, d, f"{prefix}{k}.")
            continue
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise DnasError(f"{prefix}{k} must be True or False, got {_shown(v)}")
        elif isinstance(d, (int, float)):
            kind = "an integer" if isinstance(d, int) else "a number"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(d, int) and not isinstance(v, int)):
                raise DnasError(f"{prefix}{k} must be {kind}, got {_shown(v)}")
            if not math.isfinite(v):
                raise DnasError(f"{prefix}{k} must be a finite number, got {_shown(v)}")
            low = -INT_MAX - 1 if k == "seed" else 0
            if v < low:
                raise DnasError(f"{prefix}{k} must not be negative, got {_shown(v)}")
            if isinstance(d, int) and v > INT_MAX:  # a float (a budget of 1e12 s: no limit) need only be finite
                raise DnasError(f"{prefix}{k} is absurdly large ({_shown(v)}); it must be at most {INT_MAX}")
        elif isinstance(d, str):
            if not isinstance(v, str):
                raise DnasError(f"{prefix}{k} must be text, got {_shown(v)}")
        elif isinstance(d, (list, tuple)):
            if not isinstance(v, (list, tuple)):
                raise DnasError(f"{prefix}{k} must be a list, got {_shown(v)}")
            if (k == "imports" or (d and all(isinstance(x, str) for x in d))) and not all(isinstance(x, str) for x in v):
                raise DnasError(f"{prefix}{k} must be a list of text, got {_shown(v)}")


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
        if not sub and _structured(head, schema.get(head)):
            raise DnasError(f"config.{head} is a group; set its entries with --config.{head}.NAME=VALUE "
                            f"({', '.join(schema[head].keys())})")
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
        if isinstance(old, ml_collections.ConfigDict) and not isinstance(value, dict):
            raise DnasError(f"--config.{key} is a group of NAME=VALUE settings; write --config.{key}.NAME=VALUE (or {{}} to reset it)")
        try:
            with target.unlocked():
                target[name] = value
        except (TypeError, ValueError) as e:  # ml_collections refuses a value of another type
            raise DnasError(f"--config.{key}={text}: {str(e).splitlines()[0]}") from None
    return config


def _kwarg_default(config: ml_collections.ConfigDict, group: str, name: str) -> Any:
    """The default of argument ``name`` of the part a ``<part>_kwargs`` group configures
    (its factory's signature), so a new kwargs override is typed like it; None if unknown."""
    part = group[: -len("_kwargs")] if group.endswith("_kwargs") else None
    if part is None or part not in config:
        return None
    try:
        if part == "space":
            fn = SPACES[config.space].__init__
        elif part == "relax":
            fn = RELAXATIONS[config.relax]
        elif part == "alpha_grad":
            return {"entropy_weight": 1e-4, "baseline_decay": 0.99, "aggregate": 1}.get(name)
        elif part == "arch_penalty" and config.arch_penalty:
            fn = ARCH_PENALTIES[config.arch_penalty]
        else:
            return None
    except DnasError:
        return None
    p = inspect.signature(fn).parameters.get(name)
    default = None if p is None or p.default is inspect.Parameter.empty else p.default
    return list(default) if isinstance(default, tuple) else default




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
               "downsample": 1, "w_decay_norm_and_bias": True},
    "train": {"imports": [], "tensorboard": False, "init_from": "", "downsample": 1},
}
# config.pipeline (issue 30): runs from before it read their batches in the step loop.
for _kind_name in ("search", "train"):
    _ADDED_KEYS[_kind_name]["pipeline"] = {"loader": "memory", "workers": 4, "prefetch": 2, "image_size": 224, "min_scale": 0.08}
# config.latency (issue 19): runs from before it had no latency term.
_ADDED_KEYS["search"]["latency"] = {"table": "", "device": "", "resolution": 224, "penalty": "", "penalty_kwargs": {},
                                    "target_ms": 0.0, "estimate": "auto", "derive_tolerance": 0.05}
# config.summary (joint spaces, codesign): runs from before it wrote no summary.json of a
# derived pair on a plain space; these values keep it so (they read back, as issue 31 found
# they did not once the key existed).
_ADDED_KEYS["search"]["summary"] = {"table": "", "accuracy": "cifar10_test_200ep", "objectives": [], "hv_reference": [],
                                    "hv_ideal": [], "limits": {}}
# Issue 32's supernet-training choices: runs from before them trained one supernet by the
# path their plan drew, evaluated with running statistics.
_ADDED_KEYS["search"].update({"fair_sampling": False, "eval_bn": "running", "fewshot": {"split": [], "init_from": ""},
                              "sandwich": {"enabled": False, "random_paths": 2, "distill": False}, "val_every_epochs": 1,
                              "eval_val_batches": 8})  # dnas eval's --val-batches default before session 18
# Space keys that lived at the top level before config.space_kwargs.
_MOVED_TO_SPACE_KWARGS = {"darts": ("nodes", "ops", "shared", "cell_impl", "remat"), "nb201": ("ops", "shared")}


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    kind = raw.get("kind", "search")
    for k, v in _ADDED_KEYS.get(kind, {}).items():
        raw.setdefault(k, v)
    # Keys added to a fixed group (latency.cost_model, ...) after runs were written: their
    # defaults are what those runs did (each new key's default turns its feature off).
    schema = RUN_KINDS[kind].defaults() if isinstance(kind, str) and kind in RUN_KINDS else {}
    for k, d in schema.items():
        if _structured(k, d) and isinstance(raw.get(k), dict):
            for name, value in d.to_dict().items():
                raw[k].setdefault(name, value)
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
    kind = raw.get("kind", "search")
    if not isinstance(kind, str) or kind not in RUN_KINDS:
        raise DnasError(f"config.kind must name a run kind ({', '.join(RUN_KINDS.names())}), got {_shown(kind)}")
    try:
        config = ml_collections.ConfigDict(_migrate(raw))
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # e.g. a key with a '.' in it
        raise DnasError(f"config.json holds what a config cannot: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from None
    return validate(config)


def read_config(path: str | Path) -> ml_collections.ConfigDict:
    """A run's saved ``config.json`` (:func:`from_json`), errors naming the file: missing,
    not UTF-8, not JSON or not a valid config is one DnasError line."""
    raw = read_json(path, "saved config")
    try:
        return from_json(json.dumps(raw))
    except DnasError as e:
        raise DnasError(f"saved config {str(path)!r}: {e}") from None


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
