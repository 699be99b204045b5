"""``dnas zero-cost``: score random architectures with zero-cost proxies, rank-correlate with a table.

    dnas zero-cost --space nb201 --dataset cifar10 --data-dir DIR --archs 1000 \\
        --table nb201_table.csv --proxies all        # or e.g. synflow,naswot

draws ``--archs`` distinct random architectures (seeded), scores them on one training
batch with one compiled function (:class:`dnas.estimate.zero_cost.score.ZeroCostScorer`) and, with
an NB201 table, prints each proxy's Spearman ρ and Kendall τ against the table's
``cifar10_test_200ep``. The last stdout line is JSON: ``{"archs": N, "compiles": ...,
"archs_per_s": ..., "proxies": {"synflow": {"spearman": ..., "kendall": ...}, ...}}``.
``--out FILE`` writes every architecture's scores (JSON lines). The main ``dnas`` command
mounts this with :func:`add_zero_cost_parser`; :func:`main_zero_cost` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.stats import rank_quality
from dnas.data.datasets import sample_batch
from dnas.estimate.nb201_table import nb201_table
from dnas.estimate.zero_cost.proxies import VOTE, check_names, finite_or_worst, vote
from dnas.estimate.zero_cost.score import ZeroCostScorer
from dnas.space.base import build_space


def _correlations(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman ρ and Kendall τ-b of ``scores`` against ``truth`` (non-finite scores rank last)."""
    q = rank_quality(scores, truth)
    return {"spearman": q["spearman"], "kendall": q["kendall_tau"]}








def run_zero_cost(args: argparse.Namespace) -> dict:
    """Runs the command; returns the summary printed as the last line."""
    names = check_names(args.proxies)
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
    scorer = ZeroCostScorer(space, base, C=args.channels, num_classes=classes, in_channels=x.shape[-1], batch_shape=x.shape, fused=not args.per_proxy)
    t0 = time.perf_counter()
    first = scorer.score(archs[:1], (x, y), k_score)  # compile + one architecture
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
    if args.out:
        with open(args.out, "w") as f:
            for i, v in enumerate(archs):
                row = {"arch": v.tolist(), **{n: float(scores[n][i]) for n in names}}
                if truth is not None:
                    row[args.metric] = float(truth[i])
                f.write(json.dumps(row) + "\n")
    return summary


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
    p.add_argument("--per-proxy", action="store_true", help="one compiled program per proxy instead of one for all (faster on CPU in total)")
    p.add_argument("--out", default="", help="write per-architecture scores here (JSON lines)")
    p.set_defaults(fn=lambda a: print(json.dumps(run_zero_cost(a))) or 0)

