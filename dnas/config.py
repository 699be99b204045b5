"""Configs: ``get_config(arg)`` files returning ``ml_collections.ConfigDict``, validated.

An experiment file (``experiments/<paper>/config.py``) starts from :func:`search_defaults`
or :func:`train_defaults` and overrides values; :func:`load_config` imports it, applies
``--config.key=value`` overrides (typed from the default), and :func:`validate` names any
unknown or missing key. ``path:arg`` passes ``arg`` (e.g. ``smoke``) to ``get_config``.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from dnas.bilevel import HYPERGRADIENTS
from dnas.errors import DnasError
from dnas.spaces.darts_cnn import CELL_IMPLS, DARTS_OPS


def search_defaults() -> ml_collections.ConfigDict:
    """Every key a search config may have, at DARTS' CIFAR-10 values (Liu et al. 2019)."""
    c = ml_collections.ConfigDict()
    c.kind = "search"
    c.dataset = "cifar10"  # digits | mnist | fashion_mnist | cifar10 | synthetic
    c.data_dir = ""
    c.max_train_examples = 0  # 0 = all; >0 = a data-subset proxy
    c.space = "darts"  # darts | nb201
    c.shared = True  # micro (one cell per type) vs macro (one per cell)
    c.ops = list(DARTS_OPS)
    c.init_channels = 16
    c.layers = 8  # DARTS: cells; NB201: cells per stage (N)
    c.nodes = 4  # DARTS intermediate nodes per cell
    c.cell_impl = "scan"  # DARTS edges: "scan" (lax.scan), "batch" (vmap per source node) or "unrolled"
    c.remat = True  # scan cells: recompute edge forwards in backward (faster and half the memory on CPU)
    c.epochs = 50
    c.batch_size = 64
    c.train_portion = 0.5
    c.max_steps = 0  # 0 = epochs * steps_per_epoch (smoke runs cap this)
    c.augment = True  # random crop + flip, as DARTS' search
    c.w_lr = 0.025
    c.w_lr_min = 0.001
    c.w_momentum = 0.9
    c.w_weight_decay = 3e-4
    c.grad_clip = 5.0
    c.a_lr = 3e-4
    c.a_b1 = 0.5
    c.a_b2 = 0.999
    c.a_weight_decay = 1e-3
    c.order = 1
    c.hypergradient = "finite_difference"  # order 2: DARTS' Eq. 8, "forward_difference" (one pass fewer) or "exact"
    c.fuse_passes = True  # the step's passes as one lax.scan: faster compile, same maths
    c.relax = "softmax"
    c.seed = 2
    c.devices = 0  # 0 = all local devices (data parallel); n = the first n
    c.log_every_steps = 10
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 2
    return c


def train_defaults() -> ml_collections.ConfigDict:
    """Every key a retraining config may have, at DARTS' CIFAR-10 evaluation values."""
    c = ml_collections.ConfigDict()
    c.kind = "train"
    c.genotype = "DARTS_V2"
    c.dataset = "cifar10"
    c.data_dir = ""
    c.max_train_examples = 0
    c.max_test_examples = 0
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
    return c


def _schema(kind: str) -> ml_collections.ConfigDict:
    if kind == "search":
        return search_defaults()
    if kind == "train":
        return train_defaults()
    raise DnasError(f"config kind must be 'search' or 'train', got {kind!r}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys and basic values against the schema; raises one clear DnasError."""
    kind = config.get("kind", "search")
    schema = _schema(kind)
    unknown = [k for k in config.keys() if k not in schema]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(schema.keys()), n=1)
        raise DnasError(f"unknown config key {k!r}" + (f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(schema.keys())}"))
    missing = [k for k in schema.keys() if k not in config]
    if missing:
        raise DnasError(f"config lacks key {missing[0]!r}; start from dnas.config.{kind}_defaults()")
    for k in ("epochs", "batch_size", "layers", "init_channels"):
        if int(config[k]) <= 0:
            raise DnasError(f"config.{k} must be positive, got {config[k]}")
    if kind == "search":
        if config.order not in (1, 2):
            raise DnasError(f"config.order must be 1 or 2, got {config.order}")
        if config.hypergradient not in HYPERGRADIENTS:
            raise DnasError(f"config.hypergradient must be one of {HYPERGRADIENTS}, got {config.hypergradient!r}")
        if not isinstance(config.fuse_passes, bool):
            raise DnasError(f"config.fuse_passes must be True or False, got {config.fuse_passes!r}")
        if config.space not in ("darts", "nb201"):
            raise DnasError(f"config.space must be 'darts' or 'nb201', got {config.space!r}")
        if config.cell_impl not in CELL_IMPLS:
            raise DnasError(f"config.cell_impl must be one of {CELL_IMPLS}, got {config.cell_impl!r}")
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
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``--config.key=value`` strings, typed from the current value."""
    for item in overrides:
        body = item[len("--config.") :] if item.startswith("--config.") else item
        if "=" not in body:
            raise DnasError(f"override {item!r} must look like --config.key=value")
        key, text = body.split("=", 1)
        if key not in config:
            schema = _schema(config.get("kind", "search"))
            close = difflib.get_close_matches(key, list(schema.keys()), n=1)
            raise DnasError(f"unknown config key {key!r} in override" + (f"; did you mean {close[0]!r}?" if close else ""))
        try:
            value = _parse_value(text, config[key])
        except ValueError:
            raise DnasError(f"--config.{key}: cannot read {text!r} as {type(config[key]).__name__}") from None
        with config.unlocked():
            config[key] = value
    return config


def load_config(spec: str | None, overrides: Sequence[str] = (), kind: str = "search") -> ml_collections.ConfigDict:
    """Loads ``path[:arg]`` (or the defaults of ``kind`` when ``spec`` is None), applies
    overrides, validates."""
    if spec is None:
        config = _schema(kind)
    else:
        path, _, arg = spec.partition(":")
        file = Path(path)
        if not file.is_file():
            raise DnasError(f"config file {path!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"dnas_config_{file.parent.name}", file)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - the user's file: report, do not crash
            raise DnasError(f"config file {path!r} failed to load: {type(e).__name__}: {e}") from None
        if not hasattr(module, "get_config"):
            raise DnasError(f"config file {path!r} has no get_config(arg) function")
        config = module.get_config(arg or None)
    config = apply_overrides(config, overrides)
    return validate(config)


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as sorted JSON (stored in the run directory)."""
    return json.dumps(config.to_dict(), indent=1, sort_keys=True)


# Keys added to a schema after runs were already written with it, and the value that
# reproduces what those runs did: a saved run must resume exactly as it started.
_ADDED_KEYS: dict[str, dict[str, Any]] = {
    # order=2 was always the exact hypergradient before; steps ran their passes unfused
    "search": {"hypergradient": "exact", "fuse_passes": False},
}


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`to_json` (validated).

    A config saved before a key existed gets the value that reproduces its old behaviour
    (e.g. ``hypergradient="exact"``), so older run directories still resume.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DnasError(f"config.json is not valid JSON: {e}") from None
    if isinstance(raw, dict):
        for k, v in _ADDED_KEYS.get(raw.get("kind", "search"), {}).items():
            raw.setdefault(k, v)
    return validate(ml_collections.ConfigDict(raw))


def default_search_config() -> ml_collections.ConfigDict:
    """What ``dnas search`` runs with no config: DARTS (first order) on the embedded 8x8
    digits, a small supernet (C=8, 3 cells), a few minutes on 2 CPU cores."""
    c = search_defaults()
    c.dataset = "digits"
    c.init_channels = 8
    c.layers = 3
    c.epochs = 10
    c.batch_size = 48
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
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    p = root.joinpath(*parts)
    return str(p) if p.exists() else ""
