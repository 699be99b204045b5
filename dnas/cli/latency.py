"""``dnas latency``: fit a latency predictor on measured architectures and report how it
ranks the rest; ``dnas lut``: build a latency table on this JAX device and check it.

    dnas latency fit --space nb201 --csv FILE --arch-column arch_str \\
        --latency-column lat_ms_pixel2 --train 10 \\
        [--transfer-from FILE --transfer-columns lat_ms_1080ti_1,lat_ms_pixel3] --seed 0

fits on N random rows (seeded) and prints one JSON line last with ``spearman``,
``kendall``, ``mape`` and ``median_ape`` (percent) and ``within_10pct`` (fraction) on all other rows. With
``--transfer-from`` the other devices' latencies of each architecture are features
(few-shot transfer, :mod:`dnas.hardware.predictor`). The main ``dnas`` command mounts this
with :func:`add_latency_parser`; :func:`main_latency` runs it alone.

    dnas lut build --space proxylessnas --out lut.json [--resolution 224 --batch-size 1 --warmup 2 --repeats 5]
    dnas lut check lut.json --archs 20 [--warmup 2 --repeats 5 --seed 0]

``build`` measures every candidate op at every position (and the fixed parts) on the
device JAX runs on; ``check`` measures sampled whole networks end to end and prints one
JSON line last with ``spearman``, ``kendall``, ``mape`` (percent), ``within_10pct`` and
``ratio`` (mean measured / table sum). :func:`add_lut_parser` mounts them; :func:`main_lut`
runs them alone (:mod:`dnas.hardware.measure`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import read_csv
from dnas.space.base import SearchSpace
from dnas.space.spaces.nb201 import NB201Space
from dnas.hardware.predictor import fit_latency_predictor, latency_metrics
import dnas.space.spaces  # noqa: F401 - registers the built-in spaces
from dnas.hardware.lut import LatencyTable
from dnas.hardware.measure import build_lut, check_lut, table_settings


def _nb201() -> tuple[SearchSpace, Callable[[str], np.ndarray]]:
    space = NB201Space()
    return space, space.arch_str_to_vec


# space name -> () -> (space, readable architecture string -> int32[n] vector)
ARCH_READERS: dict[str, Callable[[], tuple[SearchSpace, Callable[[str], np.ndarray]]]] = {"nb201": _nb201}


def _read_csv(path: str, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV file; a missing file or column is one DnasError line."""
    header, raw = read_csv(path, "latency CSV")
    missing = [c for c in columns if c not in header]
    if missing:
        shown = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
        raise DnasError(f"{path}: no column {missing[0]!r}; columns: {shown}")
    short = [i for i, r in enumerate(raw) if len(r) < len(header)]
    if short:
        raise DnasError(f"{path}: row {short[0] + 1} has {len(raw[short[0]])} fields, the header has {len(header)}")
    rows = [dict(zip(header, r)) for r in raw]
    if not rows:
        raise DnasError(f"{path}: no data rows")
    return {c: [r[c] for r in rows] for c in columns}


def _floats(values: Sequence[str], path: str, column: str) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = math.nan
        if not math.isfinite(out[i]):
            raise DnasError(f"{path}: row {i + 1} of {column!r} is {v!r}, not a finite number")
    return out


def _vectors(values: Sequence[str], parse: Callable[[str], np.ndarray], path: str, column: str) -> np.ndarray:
    vecs = []
    for i, v in enumerate(values):
        try:
            vecs.append(parse(v))
        except DnasError as e:
            raise DnasError(f"{path}: row {i + 1} of {column!r}: {e}") from None
    return np.stack(vecs).astype(np.int32)


def unique_rows(vecs: np.ndarray, values: np.ndarray, names: Sequence[str], path: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vecs, values)`` with each architecture once: a repeat with the same value(s) is
    dropped (one warning line on stderr), a repeat with a different value is refused.

    Why: a row listed twice would sit in both the fitting and the held-out rows (an
    optimistic rank correlation), and two different latencies for one architecture are a
    table error that no predictor can fit; average repeated measurements before fitting.

    Args:
      vecs: ``int[P, n]`` decoded architectures (equal architectures spelt differently match).
      values: ``f[P]`` or ``f[P, K]`` their latencies.
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
                f"{path}: rows {j + 1} and {i + 1} of {column!r} are the same architecture {names[i]!r} with different latencies "
                f"({values[j]} and {values[i]}); keep one row per architecture (e.g. their mean)"
            )
    if len(keep) < len(vecs):
        print(f"dnas: warning: {path}: {len(vecs) - len(keep)} repeated rows with identical latencies are used once", file=sys.stderr)
    return vecs[keep], values[keep]


def cmd_latency_fit(args: argparse.Namespace) -> int:
    """Runs ``dnas latency fit`` (see the module docstring); returns the exit code."""
    if args.space not in ARCH_READERS:
        raise DnasError(f"unknown space {args.space!r} for latency fit; known: {', '.join(sorted(ARCH_READERS))}")
    space, parse = ARCH_READERS[args.space]()
    cols = _read_csv(args.csv, [args.arch_column, args.latency_column])
    vecs = _vectors(cols[args.arch_column], parse, args.csv, args.arch_column)
    latency = _floats(cols[args.latency_column], args.csv, args.latency_column)
    vecs, latency = unique_rows(vecs, latency, cols[args.arch_column], args.csv, args.arch_column)
    arch_names = [space.arch_str(v) for v in vecs] if hasattr(space, "arch_str") else [str(v.tolist()) for v in vecs]

    sources = None
    if args.transfer_from or args.transfer_columns:
        if not (args.transfer_from and args.transfer_columns):
            raise DnasError("--transfer-from and --transfer-columns go together: the file of other devices' latencies and its columns")
        names = [c.strip() for c in args.transfer_columns.split(",") if c.strip()]
        if args.latency_column in names:
            raise DnasError(f"--transfer-columns include the target column {args.latency_column!r}; transfer only from other devices")
        if len(set(names)) != len(names):
            raise DnasError("--transfer-columns lists a column twice")
        tcols = _read_csv(args.transfer_from, [args.arch_column, *names])
        tvecs = _vectors(tcols[args.arch_column], parse, args.transfer_from, args.arch_column)
        tlat = np.stack([_floats(tcols[c], args.transfer_from, c) for c in names], axis=1)
        tvecs, tlat = unique_rows(tvecs, tlat, tcols[args.arch_column], args.transfer_from, args.arch_column)
        # Join on the decoded vector, not the string, so equal architectures spelt differently match.
        index = {v.tobytes(): i for i, v in enumerate(tvecs)}
        rows = [index.get(v.tobytes(), -1) for v in vecs]
        lost = [i for i, r in enumerate(rows) if r < 0]
        if lost:
            raise DnasError(
                f"{len(lost)} architectures of {args.csv} are not in {args.transfer_from} "
                f"(first: {arch_names[lost[0]]!r}); transfer needs their source latencies"
            )
        sources = tlat[rows]

    P = len(vecs)
    if not 2 <= args.train <= P - 2:
        raise DnasError(f"--train must be between 2 and {P - 2} (the table has {P} rows; the rest are for evaluation)")
    # An explicit seeded generator: the same --seed picks the same rows on every machine.
    order = np.random.default_rng(args.seed).permutation(P)
    train, test = order[: args.train], order[args.train :]
    features = tuple(f.strip() for f in args.features.split(",") if f.strip()) + (("source",) if sources is not None else ())
    pred = fit_latency_predictor(
        vecs[train],
        latency[train],
        space.num_candidates,
        candidates=[c.candidates for c in space.choices],
        sources=None if sources is None else sources[train],
        features=features,
    )
    metrics = latency_metrics(pred.predict(vecs[test], None if sources is None else sources[test]), latency[test])
    print(f"fitted on {args.train} of {P} architectures ({args.latency_column}), features {', '.join(features)}, penalties {pred.model.penalties}")
    print(f"held-out: spearman {metrics['spearman']:.4f}, kendall {metrics['kendall']:.4f}, MAPE {metrics['mape']:.2f} % (median {metrics['median_ape']:.2f} %), within 10 % {metrics['within_10pct']:.3f}")
    summary = {"space": args.space, "target": args.latency_column, "train": int(args.train), "test": int(len(test)), "seed": args.seed, "features": list(features)}
    if sources is not None:
        summary["transfer_columns"] = names
    print(json.dumps({**summary, **metrics}))
    return 0


def _add_fit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help=f"search space of the architectures: {', '.join(sorted(ARCH_READERS))}")
    p.add_argument("--csv", required=True, help="CSV of measured architectures")
    p.add_argument("--arch-column", required=True, help="column holding the space's readable architecture (NB201: arch_str)")
    p.add_argument("--latency-column", required=True, help="column of the target device's latencies")
    p.add_argument("--train", type=int, required=True, help="number of random rows to fit on; all others are evaluated")
    p.add_argument("--transfer-from", help="CSV of other devices' latencies of the architectures (same architecture column)")
    p.add_argument("--transfer-columns", help="comma-separated source-device columns of --transfer-from (not the target)")
    p.add_argument("--features", default="onehot,count", help="architecture features: onehot (additive per position and op), count (per op)")
    p.add_argument("--seed", type=int, default=0, help="picks the training rows")
    p.set_defaults(fn=cmd_latency_fit)


def add_latency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``latency`` (with ``fit``) to the main CLI's subparsers; the chosen command's
    handler is ``args.fn(args) -> int``, like the other ``dnas`` commands."""
    latency = subparsers.add_parser("latency", help="latency predictors: fit on measured architectures, rank the rest")
    sub = latency.add_subparsers(dest="latency_command", required=True)
    _add_fit_arguments(sub.add_parser("fit", help="fit a latency predictor on N measured rows, report rank correlation on the rest"))
    return latency


def _space_kwargs(text: str) -> dict:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise DnasError(f"--space-kwargs must be a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise DnasError(f"--space-kwargs must be a JSON object, got {text!r}")
    return value


def cmd_lut_build(args: argparse.Namespace) -> int:
    """Runs ``dnas lut build``: measures the table and writes it atomically to ``--out``."""
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731 - progress on stderr, the summary on stdout
    table = build_lut(args.space, resolution=args.resolution, batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats,
                      inner=args.inner, space_kwargs=_space_kwargs(args.space_kwargs), seed=args.seed, log=log)
    table.save(args.out)
    total = sum(e.mean for e in table.entries.values())
    print(json.dumps({"out": args.out, "entries": len(table), "device": table.device, "backend": table.backend,
                      "batch_size": table.batch_size, "sum_of_entries_ms": round(total, 4)}))
    return 0


def cmd_lut_check(args: argparse.Namespace) -> int:
    """Runs ``dnas lut check``: K sampled networks measured end to end vs the table's sums."""
    table = LatencyTable.load(args.table)
    if args.archs < 3:
        raise DnasError(f"--archs must be at least 3 (rank correlations need them), got {args.archs}")
    settings = table_settings(table) if args.space is None or args.resolution is None or not args.inner else {}
    space = args.space or settings["space"]
    resolution = args.resolution or int(settings["resolution"])
    kwargs = _space_kwargs(args.space_kwargs) if args.space_kwargs else settings.get("space_kwargs", {})
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    inner = args.inner or int(settings.get("inner", 10))
    out = check_lut(table, space, resolution=resolution, archs=args.archs, warmup=args.warmup, repeats=args.repeats, inner=inner,
                    space_kwargs=kwargs, seed=args.seed, log=log)
    print(f"{args.archs} {space} networks at {resolution}x{resolution} on {table.device}: spearman {out['spearman']:.3f}, "
          f"MAPE {out['mape']:.1f} % (median {out['median_ape']:.1f} %), within 10 % {out['within_10pct']:.2f}, measured / table sum {out['ratio']:.3f}")
    print(json.dumps({"table": args.table, "space": space, "archs": args.archs, "device": table.device,
                      **{k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]) for k, v in out.items()}}))
    return 0


def add_lut_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``lut`` (with ``build`` and ``check``) to the main CLI's subparsers; handlers are
    ``args.fn(args) -> int``."""
    lut = subparsers.add_parser("lut", help="latency tables measured on this JAX device: build, check")
    sub = lut.add_subparsers(dest="lut_command", required=True)
    b = sub.add_parser("build", help="measure every candidate op at every position of a space")
    b.add_argument("--space", required=True, help="a space with table keys: proxylessnas")
    b.add_argument("--out", required=True, help="the table JSON to write")
    b.add_argument("--resolution", type=int, default=224, help="input height and width (224: the published tables')")
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--warmup", type=int, default=2, help="untimed calls per entry (after compiling)")
    b.add_argument("--repeats", type=int, default=5, help="timed calls per entry; the median is kept")
    b.add_argument("--inner", type=int, default=10, help="forwards per timed call, in one compiled loop (amortises dispatch)")
    b.add_argument("--space-kwargs", default="", help='the space\'s arguments as JSON, e.g. \'{"width_mult": 1.35}\'')
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_lut_build)
    c = sub.add_parser("check", help="measure sampled whole networks against the table's sums")
    c.add_argument("table", help="a table from dnas lut build")
    c.add_argument("--archs", type=int, default=20, help="number of sampled networks")
    c.add_argument("--space", help="default: the one the table was built for")
    c.add_argument("--resolution", type=int, help="default: the table's")
    c.add_argument("--space-kwargs", default="", help="default: the table's")
    c.add_argument("--warmup", type=int, default=2)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--inner", type=int, default=0, help="forwards per timed call (default: the table's)")
    c.add_argument("--seed", type=int, default=0, help="picks the sampled networks")
    c.set_defaults(fn=cmd_lut_check)
    return lut


