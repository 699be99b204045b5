"""``dnas zero-cost``: score random architectures with zero-cost proxies, rank-correlate with a table.

    dnas zero-cost --space nb201 --dataset cifar10 --data-dir DIR --archs 1000 \\
        --table nb201_table.csv --proxies all        # or e.g. synflow,naswot

draws ``--archs`` distinct random architectures (seeded), scores them on one training
batch with one compiled function (:class:`dnas.estimate.zero_cost.score.ZeroCostScorer`) and, with
an NB201 table, prints each proxy's Spearman ρ and Kendall τ against the table's
``cifar10_test_200ep``. The last stdout line is JSON: ``{"archs": N, "compiles": ...,
"archs_per_s": ..., "proxies": {"synflow": {"spearman": ..., "kendall": ...}, ...}}``.
The architectures are split over every device (``--devices``) and, under ``dnas launch
--processes N -- zero-cost ...``, over every process; process 0 alone prints and writes
``--out``; the scores are the same on 1 device, N devices and N processes.
A short table (one row per proxy) comes before it unless ``--json``; the compile is said on
stderr. ``--out FILE`` (checked before the work, written atomically) writes every architecture's scores (JSON lines). The main ``dnas`` command
mounts this with :func:`add_zero_cost_parser`; :func:`main_zero_cost` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnas.cli.common import print_summary
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write, check_output_file
from dnas.core.stats import rank_quality
from dnas.data.datasets import sample_batch
from dnas.estimate.nb201_table import nb201_table
from dnas.estimate.zero_cost.proxies import VOTE, check_names, finite_or_worst, vote
from dnas.estimate.zero_cost.score import ZeroCostScorer
from dnas.run.parallel import is_primary, make_mesh, maybe_initialize_distributed
from dnas.space.base import build_space


def _correlations(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman ρ and Kendall τ-b of ``scores`` against ``truth`` (non-finite scores rank last)."""
    q = rank_quality(scores, truth)
    return {"spearman": q["spearman"], "kendall": q["kendall_tau"]}








def run_zero_cost(args: argparse.Namespace) -> dict:
    """Runs the command; returns the summary printed as the last line."""
    names = check_names(args.proxies)
    for flag, v in (("--archs", args.archs), ("--batch-size", args.batch_size), ("--layers", args.layers), ("--channels", args.channels)):
        if v < 1:
            raise DnasError(f"{flag} must be >= 1, got {v}")
    if args.out:
        check_output_file(args.out, "--out")  # before the work: its scores are never lost to a bad path
    maybe_initialize_distributed()
    mesh = make_mesh(args.devices)
    space = build_space(args.space, args.layers, {})
    key = jax.random.key(args.seed)
    k_arch, k_batch, k_score = jax.random.split(key, 3)
    truth = None
    if args.table:
        table = nb201_table(space, args.table)
        if args.metric not in table.metrics:
            raise DnasError(f"--metric {args.metric!r} is not a table column; columns: {', '.join(table.metrics)}")
    archs = space.distinct_samples(args.archs, k_arch)
    x, y, classes = sample_batch(args.dataset, args.data_dir, args.batch_size, k_batch)
    base = tuple(n for n in names if n != "vote")
    if "vote" in names:
        base = tuple(dict.fromkeys(base + VOTE))
    scorer = ZeroCostScorer(space, base, C=args.channels, num_classes=classes, in_channels=x.shape[-1], batch_shape=x.shape, fused=not args.per_proxy,
                            mesh=mesh)
    say(f"compiling the proxies ({', '.join(base)}) for {len(archs)} architectures of {args.space} on {mesh.devices.size} device(s) "
        "(once; tens of seconds on CPU)...")
    t0 = time.perf_counter()
    first = scorer.score(archs[:1], (x, y), k_score)  # compile + one architecture
    say(f"compiled in {time.perf_counter() - t0:.1f} s; scoring the other {len(archs) - 1}...")
    t1 = time.perf_counter()
    rest = scorer.score(archs[1:], (x, y), k_score) if len(archs) > 1 else {n: np.zeros(0) for n in base}
    t2 = time.perf_counter()
    scores = {n: np.concatenate([first[n], rest[n]]) for n in base}
    if "vote" in names:
        scores["vote"] = vote(scores)
    scores = {n: scores[n] for n in names}
    summary: dict = {
        "archs": int(len(archs)), "compiles": scorer.compiles,
        "archs_per_s": float((len(archs) - 1) / (t2 - t1)) if len(archs) > 1 else None,
        "compile_and_first_s": round(t1 - t0, 2), "batch": int(args.batch_size), "seed": int(args.seed),
        "C": int(args.channels), "layers": int(args.layers),
    }
    if args.table:
        truth = np.asarray(table.evaluate(jnp.asarray(archs), k_score)[0][args.metric])
        summary["metric"] = args.metric
        summary["proxies"] = {n: _correlations(s, truth) for n, s in scores.items()}
    else:
        summary["proxies"] = {n: {"mean": float(np.mean(finite_or_worst(s)))} for n, s in scores.items()}
    if args.out and is_primary():  # every process holds every score; one writes them
        lines = []
        for i, v in enumerate(archs):
            row = {"arch": v.tolist(), **{n: float(scores[n][i]) for n in names}}
            if truth is not None:
                row[args.metric] = float(truth[i])
            lines.append(json.dumps(row) + "\n")
        atomic_write(args.out, "".join(lines))
    return summary


def say(text: str) -> None:
    """A progress line on stderr (stdout keeps the table and the JSON line); process 0's only."""
    if is_primary():
        print(text, file=sys.stderr, flush=True)


def summary_table(summary: dict) -> list[str]:
    """The human table of a zero-cost summary: one row per proxy."""
    lines = [f"{summary['archs']} architectures, {summary['compiles']} compile(s), "
             f"{summary['archs_per_s'] or 0:.1f} architectures/s after {summary['compile_and_first_s']} s compile"]
    cols = sorted({k for v in summary["proxies"].values() for k in v})
    lines.append("  " + "proxy".ljust(14) + "".join(c.rjust(10) for c in cols))
    for name, v in summary["proxies"].items():
        lines.append("  " + name.ljust(14) + "".join(f"{v.get(c, float('nan')):10.4f}" for c in cols))
    return lines


def cmd_zero_cost(args: argparse.Namespace) -> int:
    """Runs ``dnas zero-cost``: a short table (unless ``--json``), then the JSON line last."""
    summary = run_zero_cost(args)
    if is_primary():  # the others computed the same summary
        print_summary(summary, summary_table, args.json)
    return 0


def add_zero_cost_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``zero-cost`` to the ``dnas`` command's subparsers (the lead wires it in ``dnas.cli.main``)."""
    p = sub.add_parser("zero-cost", help="score random architectures with zero-cost proxies (rank correlation with an NB201 table)")
    p.add_argument("--space", default="nb201", help="registered search space")
    p.add_argument("--layers", type=int, default=5, help="the space's depth (NB201: cells per stage N)")
    p.add_argument("--channels", type=int, default=16, help="the network's initial channels C")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--archs", type=int, default=1000, help="distinct random architectures to score")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--proxies", default="all", help="'all' or a comma-separated list, e.g. synflow,naswot,vote")
    p.add_argument("--table", default="", help="nb201_table.csv: report Spearman/Kendall against --metric")
    p.add_argument("--metric", default="cifar10_test_200ep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=0, help="devices that split the architectures (0: all, of every process)")
    p.add_argument("--per-proxy", action="store_true", help="one compiled program per proxy instead of one for all (faster on CPU in total)")
    p.add_argument("--out", default="", help="write per-architecture scores here (JSON lines)")
    p.add_argument("--json", action="store_true", help="print only the JSON summary line (no table)")
    p.set_defaults(fn=cmd_zero_cost)

