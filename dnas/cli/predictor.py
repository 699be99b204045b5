"""``dnas predictor fit``: fit any predictor on N rows of a CSV column, rank the rest.

    dnas predictor fit --space nb201 --csv FILE --arch-column arch_str \\
        --target-column cifar10_val_12ep --train 100 --model gcn --seed 0
    dnas predictor fit --space nb201 --csv FILE --arch-column arch_str \\
        --target-column lat_ms_pixel2 --train 10 --model gcn \\
        --transfer-from FILE2 --transfer-columns lat_ms_1080ti_1,lat_ms_pixel3,... --seed 0

fits the model (:data:`dnas.hardware.predictors.MODELS`: ``gcn``, ``mlp``, ``ridge``,
``ridge_ensemble`` (transfer only), ``xgboost``, ``flops``, ``params``) on N random rows (``np.random.default_rng(seed)``'s
permutation, its first N) and prints a short summary, then one JSON line last with
``spearman``, ``kendall``, ``mape`` and ``median_ape`` (percent), ``within_10pct`` (a
fraction) and ``fit_s`` on every other row. ``--save F`` (gcn) writes the fitted predictor
(:class:`dnas.hardware.predictors.export.ExportedPredictor`), which the ``gcn`` cost model
loads to price architectures in a search.

With ``--transfer-from`` the other devices' values of the architectures (joined on the
decoded architecture) are the source targets: ``gcn`` is pretrained on all rows of the
transfer file and adapted with the N target rows
(:class:`dnas.hardware.predictors.transfer.TransferPredictor`); ``ridge``, ``mlp`` and
``xgboost`` take them as features. The GCN reads only the graph: the 12-device
leave-one-out in benchmarks/LATENCY.md found that steadier than also reading the
measured source values. The fit reads the target column's N training values
only; the other rows are read to score it. ``dnas latency fit`` is this command with
``--latency-column`` for ``--target-column`` (:mod:`dnas.cli.latency`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import read_csv as read_text_csv
from dnas.hardware.predictor import latency_metrics
from dnas.hardware.predictors import MODELS, Encoded, encode, flops_params
from dnas.hardware.predictors.export import ExportedPredictor
from dnas.hardware.predictors.transfer import TransferPredictor
from dnas.space.base import SearchSpace
from dnas.space.spaces.nb201 import NB201Space

MODEL_NAMES = ("gcn", "mlp", "ridge", "ridge_ensemble", "xgboost", "flops", "params")


def _nb201() -> tuple[SearchSpace, Callable[[str], np.ndarray], dict[str, Any]]:
    space = NB201Space()
    # The benchmark's network: C = 16, 5 cells per stage, 32x32 CIFAR inputs.
    return space, space.arch_str_to_vec, {"C": 16, "num_classes": 10, "in_channels": 3, "resolution": 32}


# space name -> () -> (space, readable architecture -> int32[n], the network's settings for FLOPs/params)
ARCH_READERS: dict[str, Callable[[], tuple[SearchSpace, Callable[[str], np.ndarray], dict[str, Any]]]] = {"nb201": _nb201}


def read_csv(path: str, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV file; a missing or non-UTF-8 file, a missing column or a
    short row is one DnasError line (:func:`dnas.core.io.read_csv`)."""
    header, raw = read_text_csv(path, "CSV")
    missing = [c for c in columns if c not in header]
    if missing:
        shown = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
        raise DnasError(f"{path}: no column {missing[0]!r}; columns: {shown}")
    short = [i for i, r in enumerate(raw) if len(r) < len(header)]
    if short:
        raise DnasError(f"{path}: row {short[0] + 1} has {len(raw[short[0]])} fields, the header has {len(header)}")
    if not raw:
        raise DnasError(f"{path}: no data rows")
    rows = [dict(zip(header, r)) for r in raw]
    return {c: [r[c] for r in rows] for c in columns}


def unique_rows(vecs: np.ndarray, values: np.ndarray, names: Sequence[str], path: str, column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(vecs, values, names)`` with each architecture once: a repeat with the same value(s)
    is dropped (one warning line on stderr), a repeat with a different value is refused.

    Why: a row listed twice would sit in both the fitting and the held-out rows (an
    optimistic rank correlation), and two different values for one architecture are a table
    error that no predictor can fit; average repeated measurements before fitting.

    Args:
      vecs: ``int[P, n]`` decoded architectures (equal architectures spelt differently match).
      values: ``f[P]`` or ``f[P, K]`` their values.
      names: ``P`` readable architectures, for the messages.
      path, column: named in the messages.
    """
    first: dict[bytes, int] = {}
    keep = []
    for i, v in enumerate(vecs):
        j = first.setdefault(v.tobytes(), i)
        if j == i:
            keep.append(i)
        elif not np.array_equal(values[i], values[j]):
            raise DnasError(
                f"{path}: rows {j + 1} and {i + 1} of {column!r} are the same architecture {names[i]!r} with different values "
                f"({values[j]} and {values[i]}); keep one row per architecture (e.g. their mean)"
            )
    if len(keep) < len(vecs):
        print(f"dnas: warning: {path}: {len(vecs) - len(keep)} repeated rows with identical values are used once", file=sys.stderr)
    return vecs[keep], values[keep], [names[i] for i in keep]


def floats(values: Sequence[str], path: str, column: str) -> np.ndarray:
    """``f64[P]`` of a CSV column; a non-number is one DnasError line naming its row."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
        if not np.isfinite(out[i]):
            raise DnasError(f"{path}: row {i + 1} of {column!r} is {v!r}, not a finite number")
    return out


def vectors(values: Sequence[str], parse: Callable[[str], np.ndarray], path: str, column: str) -> np.ndarray:
    """``int32[P, n]`` architectures of a CSV column; an unreadable one names its row."""
    vecs = []
    for i, v in enumerate(values):
        try:
            vecs.append(parse(v))
        except DnasError as e:
            raise DnasError(f"{path}: row {i + 1} of {column!r}: {e}") from None
    return np.stack(vecs).astype(np.int32)


def build_model(name: str, seed: int, source: tuple[Encoded, np.ndarray] | None, log: bool, features: str | None = None) -> Any:
    """The model ``name``: for ``gcn`` with ``source`` (the source architectures and their
    ``f[P, S]`` values) the few-shot :class:`TransferPredictor` (pretrained with ``seed``);
    for ``ridge`` the comma-separated ``features`` (default ``onehot,count``)."""
    if name not in MODEL_NAMES:
        raise DnasError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if features and name != "ridge":
        raise DnasError(f"--features applies to the ridge model, not {name}")
    if name == "gcn" and source is not None:
        return TransferPredictor(source[0], source[1], log=log, pretrain_key=jax.random.key(seed))
    if name == "ridge" and features:
        return MODELS["ridge"](features=tuple(f.strip() for f in features.split(",") if f.strip()))
    return MODELS[name]()


def fit_and_score(model: Any, x: Encoded, y_train: np.ndarray, train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                  key: jax.Array) -> tuple[np.ndarray, dict[str, float]]:
    """Fits ``model`` on rows ``train`` of ``x`` with their targets ``y_train`` (the only
    target values it sees), predicts rows ``test`` and scores them against ``y_test``.

    Returns:
      ``f64[len(test)]`` predictions and :func:`latency_metrics` plus ``fit_s``.
    """
    t0 = time.perf_counter()
    model.fit(x.take(train), y_train, key)
    fit_s = time.perf_counter() - t0
    pred = model.predict(x.take(test))
    return pred, {**latency_metrics(pred, y_test), "fit_s": fit_s}


def run_fit(args: argparse.Namespace, target_column: str, default_model: str, log_transfer: bool) -> int:
    """``dnas predictor fit`` / ``dnas latency fit`` (module docstring); returns the exit code."""
    if args.space not in ARCH_READERS:
        raise DnasError(f"unknown space {args.space!r}; known: {', '.join(sorted(ARCH_READERS))}")
    name = args.model or default_model
    if name not in MODEL_NAMES:
        raise DnasError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    save = getattr(args, "save", None)
    if save and name != "gcn":
        raise DnasError(f"--save writes gcn predictors (the gcn cost model reads them); got --model {name}")
    space, parse, settings = ARCH_READERS[args.space]()
    cols = read_csv(args.csv, [args.arch_column, target_column])
    vecs = vectors(cols[args.arch_column], parse, args.csv, args.arch_column)
    target = floats(cols[target_column], args.csv, target_column)
    vecs, target, arch_names = unique_rows(vecs, target, cols[args.arch_column], args.csv, target_column)
    P = len(vecs)
    if not 3 <= args.train <= P - 2:
        raise DnasError(f"--train must be between 3 and {P - 2} (the table has {P} rows; the rest are for evaluation), got {args.train}")
    # An explicit seeded generator: the same --seed picks the same rows on every machine.
    order = np.random.default_rng(args.seed).permutation(P)
    train, test = order[: args.train], order[args.train :]

    extra: dict[str, np.ndarray] = {}
    source = names = None
    if args.transfer_from or args.transfer_columns:
        if not (args.transfer_from and args.transfer_columns):
            raise DnasError("--transfer-from and --transfer-columns go together: the file of other devices' values and its columns")
        names = [c.strip() for c in args.transfer_columns.split(",") if c.strip()]
        if target_column in names:
            raise DnasError(f"--transfer-columns include the target column {target_column!r}; transfer only from other devices")
        if len(set(names)) != len(names):
            raise DnasError("--transfer-columns lists a column twice")
        tcols = read_csv(args.transfer_from, [args.arch_column, *names])
        tvecs = vectors(tcols[args.arch_column], parse, args.transfer_from, args.arch_column)
        tval = np.stack([floats(tcols[c], args.transfer_from, c) for c in names], axis=1)
        tvecs, tval, _ = unique_rows(tvecs, tval, tcols[args.arch_column], args.transfer_from, ",".join(names))
        # Join on the decoded vector, not the string, so equal architectures spelt differently match.
        index = {v.tobytes(): i for i, v in enumerate(tvecs)}
        rows = [index.get(v.tobytes(), -1) for v in vecs]
        lost = [i for i, r in enumerate(rows) if r < 0]
        if lost:
            raise DnasError(f"{len(lost)} architectures of {args.csv} are not in {args.transfer_from} "
                            f"(first: {arch_names[lost[0]]!r}); transfer needs their source values")
        extra["sources"] = tval[rows]
        source = (encode(space, tvecs), tval)
        if log_transfer and name == "gcn" and (np.any(tval <= 0) or np.any(target[train] <= 0)):
            raise DnasError("gcn transfer of latencies fits logs: source and target values must be positive")
    if name in ("flops", "params"):
        extra.update(flops_params(space, vecs, **settings))
    x = encode(space, vecs, **extra)
    model = build_model(name, args.seed, source, log_transfer, args.features)
    _, metrics = fit_and_score(model, x, target[train], train, test, target[test], jax.random.key(args.seed))
    if save:
        ExportedPredictor.of(model, space).save(save)
    how = f"transfer from {len(names)} columns of {args.transfer_from}" if names else "from scratch"
    print(f"{name} fitted on {args.train} of {P} architectures ({target_column}), {how}, in {metrics['fit_s']:.1f} s")
    print(f"held-out: spearman {metrics['spearman']:.4f}, kendall {metrics['kendall']:.4f}, MAPE {metrics['mape']:.2f} % "
          f"(median {metrics['median_ape']:.2f} %), within 10 % {metrics['within_10pct']:.3f}")
    summary: dict[str, Any] = {"space": args.space, "target": target_column, "model": name, "train": int(args.train), "test": int(len(test)),
                               "seed": args.seed}
    if name == "ridge":
        summary["features"] = list(model.features) + (["source"] if names else [])
    if names:
        summary["transfer_columns"] = names
    if save:
        summary["saved"] = save
    if name == "gcn" and source is not None and log_transfer:
        # The correction's leave-one-out RMSE of log values on the N samples: a search can
        # keep a margin, limit * exp(-loo_log_rmse) (benchmarks/LATENCY.md, constrained search).
        summary["loo_log_rmse"] = float(model.ridge.loo_rmse)
    print(json.dumps({**summary, **metrics}))
    return 0


def cmd_predictor_fit(args: argparse.Namespace) -> int:
    """Runs ``dnas predictor fit``."""
    return run_fit(args, args.target_column, "gcn", log_transfer=args.log_transfer)


def add_fit_arguments(p: argparse.ArgumentParser, *, target_flag: str, default_model: str) -> None:
    """The arguments ``predictor fit`` and ``latency fit`` share (``target_flag`` names the
    target column's option)."""
    p.add_argument("--space", required=True, help=f"search space of the architectures: {', '.join(sorted(ARCH_READERS))}")
    p.add_argument("--csv", required=True, help="CSV of measured architectures")
    p.add_argument("--arch-column", required=True, help="column holding the space's readable architecture (NB201: arch_str)")
    p.add_argument(target_flag, required=True, help="column of the target values")
    p.add_argument("--train", type=int, required=True, help="number of random rows to fit on; all others are evaluated")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help=f"predictor (default {default_model})")
    p.add_argument("--transfer-from", help="CSV of other devices' values of the architectures (same architecture column)")
    p.add_argument("--transfer-columns", help="comma-separated source columns of --transfer-from (not the target)")
    p.add_argument("--features", default=None, help="ridge only: onehot and/or count (default onehot,count)")
    p.add_argument("--seed", type=int, default=0, help="picks the training rows and seeds the model")
    p.add_argument("--save", default=None, help="gcn only: write the fitted predictor as JSON (the gcn cost model reads it)")


def add_predictor_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``predictor`` (with ``fit``) to the main CLI's subparsers."""
    pred = subparsers.add_parser("predictor", help="performance predictors (accuracy, latency, ...): fit on N rows, rank the rest")
    sub = pred.add_subparsers(dest="predictor_command", required=True)
    fit = sub.add_parser("fit", help="fit a predictor on N rows of a CSV column, report rank correlation on the rest")
    add_fit_arguments(fit, target_flag="--target-column", default_model="gcn")
    fit.add_argument("--log-transfer", action="store_true", help="gcn transfer: fit logs of the (positive) values, as for latencies")
    fit.set_defaults(fn=cmd_predictor_fit)
    return pred
