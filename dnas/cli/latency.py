"""``dnas latency``: fit a latency predictor on measured architectures and report how it
ranks the rest; ``dnas lut``: build a latency table on this JAX device and check it.

    dnas latency fit --space nb201 --csv FILE --arch-column arch_str \\
        --latency-column lat_ms_pixel2 --train 10 \\
        [--transfer-from FILE --transfer-columns lat_ms_1080ti_1,lat_ms_pixel3] --seed 0

fits on N random rows (seeded) and prints one JSON line last with ``spearman``,
``kendall``, ``mape`` and ``median_ape`` (percent), ``within_10pct`` (fraction) and
``fit_s`` on all other rows. It is ``dnas predictor fit`` (:mod:`dnas.cli.predictor`, the
same code) on a latency column, with ``--model`` defaulting to :data:`DEFAULT_LATENCY_MODEL`
(:data:`DEFAULT_TRANSFER_MODEL` with ``--transfer-from``) and the GCN's few-shot transfer
fitting logs of latencies. With ``--transfer-from`` the
other devices' latencies of each architecture are features or pretraining targets
(:mod:`dnas.hardware.predictors.transfer`). The main ``dnas`` command mounts this with
:func:`add_latency_parser`; :func:`main_latency` runs it alone.

    dnas lut build --space proxylessnas --out lut.json [--resolution 224 --batch-size 1 --warmup 2 --repeats 7 --statistic min]
    dnas lut check lut.json --archs 20 [--warmup 2 --repeats 7 --seed 0]

``build`` measures every candidate op at every position (and the fixed parts) on the
device JAX runs on; ``check`` measures sampled whole networks end to end and prints one
JSON line last with ``spearman``, ``kendall``, ``mape`` (percent), ``within_10pct`` and
``ratio`` (mean measured / table sum), and ``noise`` / ``noisy``: whether the timings'
two halves agree (:func:`dnas.hardware.measure.noise_check`; a warning line when they do
not). :func:`add_lut_parser` mounts them; :func:`main_lut`
runs them alone (:mod:`dnas.hardware.measure`).
"""

from __future__ import annotations

import argparse
import json
import sys

from dnas.cli.predictor import add_fit_arguments, run_fit
from dnas.core.errors import DnasError
import dnas.space.spaces  # noqa: F401 - registers the built-in spaces
from dnas.hardware.lut import LatencyTable
from dnas.hardware.measure import CLOCKS, STATISTICS, build_lut, resolve_clock, check_lut, table_settings

DEFAULT_LATENCY_MODEL = "ridge"
"""``dnas latency fit``'s model from scratch (one-hot + per-op counts, the best from-scratch
ridge in benchmarks/LATENCY.md)."""
DEFAULT_TRANSFER_MODEL = "ridge_ensemble"
"""``dnas latency fit``'s model with ``--transfer-from``: the most robust in the
leave-one-device-out table of benchmarks/LATENCY.md (best worst device: pixel2 0.851 vs
ridge's 0.823; mean 0.964 vs 0.962)."""


def cmd_latency_fit(args: argparse.Namespace) -> int:
    """Runs ``dnas latency fit``: ``dnas predictor fit`` on a latency column (logs for transfer)."""
    default = DEFAULT_TRANSFER_MODEL if args.transfer_from else DEFAULT_LATENCY_MODEL
    return run_fit(args, args.latency_column, default, log_transfer=True)


def add_latency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``latency`` (with ``fit``) to the main CLI's subparsers; the chosen command's
    handler is ``args.fn(args) -> int``, like the other ``dnas`` commands."""
    latency = subparsers.add_parser("latency", help="latency predictors: fit on measured architectures, rank the rest")
    sub = latency.add_subparsers(dest="latency_command", required=True)
    fit = sub.add_parser("fit", help="fit a latency predictor on N measured rows, report rank correlation on the rest")
    add_fit_arguments(fit, target_flag="--latency-column", default_model=f"{DEFAULT_LATENCY_MODEL}; {DEFAULT_TRANSFER_MODEL} with --transfer-from")
    fit.set_defaults(fn=cmd_latency_fit)
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
                      inner=args.inner, statistic=args.statistic, max_repeats=args.max_repeats, clock=args.clock, space_kwargs=_space_kwargs(args.space_kwargs), seed=args.seed, log=log)
    table.save(args.out)
    total = sum(e.mean for e in table.entries.values())
    print(json.dumps({"out": args.out, "entries": len(table), "device": table.device, "backend": table.backend,
                      "batch_size": table.batch_size, "sum_of_entries_ms": round(total, 4), "statistic": args.statistic,
                      "clock": table_settings(table)["clock"],
                      "noise": table_settings(table)["noise"]}))
    return 0


def cmd_lut_check(args: argparse.Namespace) -> int:
    """Runs ``dnas lut check``: K sampled networks measured end to end vs the table's sums."""
    table = LatencyTable.load(args.table)
    if args.archs < 3:
        raise DnasError(f"--archs must be at least 3 (rank correlations need them), got {args.archs}")
    settings = table_settings(table) if args.space is None or args.resolution is None or not args.inner or not args.statistic or not args.clock else {}
    space = args.space or settings["space"]
    resolution = args.resolution or int(settings["resolution"])
    kwargs = _space_kwargs(args.space_kwargs) if args.space_kwargs else settings.get("space_kwargs", {})
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    inner = args.inner or int(settings.get("inner", 10))
    statistic = args.statistic or settings.get("statistic", "min")
    clock = resolve_clock(args.clock or settings.get("clock", "wall"))
    out = check_lut(table, space, resolution=resolution, archs=args.archs, warmup=args.warmup, repeats=args.repeats, inner=inner,
                    statistic=statistic, max_repeats=args.max_repeats, clock=clock, space_kwargs=kwargs, seed=args.seed, log=log)
    print(f"{args.archs} {space} networks at {resolution}x{resolution} on {table.device}: spearman {out['spearman']:.3f}, "
          f"MAPE {out['mape']:.1f} % (median {out['median_ape']:.1f} %), within 10 % {out['within_10pct']:.2f}, measured / table sum {out['ratio']:.3f}")
    noise = out["noise"]
    if noise["noisy"] is None:
        print(f"timings: not checked for noise ({noise['why']})")
    else:
        print(f"timings ({noise['repeats']} rounds): split-half spearman {noise['split_half_spearman']:.3f} (reliability {noise['reliability']:.3f}), halves differ by {noise['half_diff_pct']:.1f} % (median): "
              + ("TOO NOISY to trust, rerun on a quieter machine" if noise["noisy"] else "steady enough"))
    print(json.dumps({"table": args.table, "space": space, "archs": args.archs, "device": table.device, "statistic": statistic, "clock": clock,
                      **{k: (round(v, 4) if isinstance(v, float) else v if isinstance(v, dict) else [round(x, 4) for x in v])
                         for k, v in out.items()}, "noisy": noise["noisy"]}))
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
    b.add_argument("--repeats", type=int, default=7, help="timed rounds over all entries (interleaved)")
    b.add_argument("--max-repeats", type=int, default=21, help="more rounds, two at a time, while the timings are noisy")
    b.add_argument("--clock", choices=("auto", *CLOCKS), default="auto",
                   help="wall time, or this process's cpu time (steadier under load; work, not latency); auto: cpu on the CPU backend")
    b.add_argument("--statistic", choices=tuple(STATISTICS), default="min", help="summary of an entry's repeats (min: robust to load)")
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
    c.add_argument("--repeats", type=int, default=7, help="timed rounds over all networks (interleaved)")
    c.add_argument("--max-repeats", type=int, default=21, help="more rounds, two at a time, while the timings are noisy")
    c.add_argument("--clock", choices=("auto", *CLOCKS), default=None, help="wall or cpu (default: the table's)")
    c.add_argument("--statistic", choices=tuple(STATISTICS), default=None, help="summary of a network's repeats (default: the table's)")
    c.add_argument("--inner", type=int, default=0, help="forwards per timed call (default: the table's)")
    c.add_argument("--seed", type=int, default=0, help="picks the sampled networks")
    c.set_defaults(fn=cmd_lut_check)
    return lut


