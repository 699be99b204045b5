"""``dnas eval``: one-shot accuracies of many architectures with a trained supernet.

::
    dnas eval RUN_DIR --archs 1000 [--bn-recalib 4 | --bn-batch] [--table nb201_table.csv] [--out archs.csv]

Without ``--bn-batch``, ``--bn-running`` or ``--bn-recalib`` the BatchNorm mode is the run's
``config.eval_bn`` (what its method recommends; ``running`` for runs written before it).
Without ``--val-batches`` each architecture is scored on the run's ``config.eval_val_batches``
held-out batches (0, the default of new runs: the whole held-out split; runs written before
it: 8).
A few-shot run (``config.fewshot``) evaluates each architecture with its sub-supernet.

Samples ``--archs`` distinct architectures of the run's space (``--sample policy``: drawn
from the search's α instead, repeats allowed; ENAS picks its final cell so, the best of
100 controller samples), evaluates them with the
supernet of the run's newest checkpoint (:class:`dnas.estimate.oneshot.OneShotEvaluator`: one
compilation for all of them; the supernet may have been trained by SPOS, RSPS, ENAS or any
differentiable search), and prints a short table (unless ``--json``) and one JSON line last::
    {"archs": N, "compiles": 1, "archs_per_s": ..., "seconds": ..., "recalibrate": K,
     "best": "<arch>", "best_oneshot_acc": ...,
     "kendall_tau": ..., "spearman": ..., "top10pct_precision": ..., "true_acc_of_best": ...}

The architectures are split over every device (``--devices``; :class:`dnas.core.sharding.RowSharded`)
and, under ``dnas launch --processes N -- eval ...`` or a cluster's launcher, over every
process: each evaluates its share, all get every score, process 0 alone prints and writes
``--out``. The scores are the same on 1 device, N devices and N processes.

The last four when ``--table`` (a NAS-Bench-201 table; the run's space must be the
benchmark's cell) is given: rank correlation of the one-shot accuracy with the table's
``--metric`` column, the share of the one-shot top 10 % that is in the true top 10 %, and
the table accuracy of the one-shot best cell; ``kendall_tau_by_loss`` and
``spearman_by_loss`` rank by the negative one-shot loss instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dnas.cli.common import print_summary
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write, check_output_file
from dnas.core.stats import rank_quality
from dnas.space.base import SearchSpace
from dnas.estimate.nb201_table import load_table, table_path, table_values
from dnas.space.genotype import NB201_OPS
from dnas.space.spaces import NB201Space
from dnas.estimate.oneshot import OneShotEvaluator
from dnas.estimate.supernet import read_run_config
from dnas.run.config import kwargs_of, read_config
from dnas.run.search import parse_eval_bn
from dnas.run.parallel import is_primary, make_mesh, maybe_initialize_distributed
from dnas.space.relax import make_relaxation
from dnas.search.state import alpha_dict




def sample_policy(space: SearchSpace, alpha: dict[str, jax.Array], log_policy, n: int, key: jax.Array) -> np.ndarray:
    """``n`` architectures drawn from a search's policy, ``int32[n, len(space)]``: each label
    from ``log_policy(α_label)`` (ENAS' controller; ``log_softmax`` for the DARTS family),
    independently, repeats allowed (ENAS' final selection samples its controller so).
    """
    if any(len(g) > 1 for g in space.groups):
        raise DnasError("--sample policy draws every label on its own, but this space ties labels into groups; use --sample uniform")
    logp = [log_policy(jnp.asarray(alpha[l], jnp.float32)) for l in space.labels]
    keys = jax.random.split(key, len(logp))
    cols = [np.asarray(jax.random.categorical(k, lp, shape=(n,))) for k, lp in zip(keys, logp)]
    return np.stack(cols, axis=1).astype(np.int32)




def table_truth(space: SearchSpace, vecs: np.ndarray, table: str, metric: str) -> np.ndarray:
    """The NAS-Bench-201 table's ``metric`` for each architecture of an NB201-cell space."""
    if not isinstance(space, NB201Space) or not space.shared or tuple(space.ops) != tuple(NB201_OPS):
        raise DnasError("--table is a NAS-Bench-201 table: the run must search the benchmark's cell (space='nb201', its default ops, shared)")
    return table_values(table_path(table), vecs, metric)


def run_eval(args: argparse.Namespace) -> dict:
    """Runs ``dnas eval``; returns the summary it prints last."""
    run = Path(args.run)
    if args.archs < 1:
        raise DnasError(f"--archs must be >= 1, got {args.archs}")
    if sum([args.bn_batch, args.bn_running, args.bn_recalib is not None]) > 1:
        raise DnasError("--bn-batch, --bn-running and --bn-recalib exclude each other: pick one BatchNorm mode")
    if (args.bn_recalib is not None and args.bn_recalib < 0) or (args.val_batches is not None and args.val_batches < 0):
        raise DnasError("--bn-recalib must be >= 0 and --val-batches >= 0 (0: the whole held-out split)")
    if args.chunk < 1:
        raise DnasError(f"--chunk must be >= 1 (architectures per device per compiled call), got {args.chunk}")
    if args.batch_size < 0:
        raise DnasError(f"--batch-size must be >= 0 (0: the run's), got {args.batch_size}")
    if args.out:
        check_output_file(args.out, "--out")  # before the work: its results are never lost to a bad path
    if args.table:
        if args.archs < 2:
            raise DnasError("--table compares rankings: it needs --archs >= 2")
        path = table_path(args.table)
        load_table(path, os.path.getmtime(path))  # a bad table is refused before the supernet loads (the read is cached)
    # The run's recommendations, read after every argument check so a bad argument is named
    # first: the BN mode (config.eval_bn; runs written before it: running) and the held-out
    # batches (config.eval_val_batches; runs written before it: 8).
    recommended = read_run_config(run)
    if not (args.bn_batch or args.bn_running or args.bn_recalib is not None):
        mode, k = parse_eval_bn(recommended.get("eval_bn", "running"))
        args.bn_batch, args.bn_recalib = mode == "batch", k
    if args.val_batches is None:
        args.val_batches = int(recommended.get("eval_val_batches", 8))
    args.bn_recalib = args.bn_recalib or 0
    maybe_initialize_distributed()
    ev = OneShotEvaluator.from_run(run, recalibrate=args.bn_recalib, val_batches=args.val_batches, batch_size=args.batch_size,
                                   seed=args.seed, chunk=args.chunk, batch_stats=args.bn_batch, mesh=make_mesh(args.devices))
    if args.sample == "policy":
        config = read_config(run / "config.json")
        relax = make_relaxation(config.relax, kwargs_of(config.relax_kwargs), epochs=config.epochs)
        vecs = sample_policy(ev.space, alpha_dict(ev.alpha), getattr(relax, "log_policy", jax.nn.log_softmax), args.archs,
                             jax.random.key(args.seed))
    else:
        vecs = ev.space.distinct_samples(args.archs, jax.random.key(args.seed))
    truth = table_truth(ev.space, vecs, args.table, args.metric) if args.table else None
    if is_primary():
        n_dev = ev.mesh.devices.size
        print(f"evaluating {len(vecs)} architectures with the supernet of {str(run)!r} on {n_dev} device(s) "
              f"(compiling once, then {args.chunk} per device per call)...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = ev.evaluate(vecs)
    secs = time.perf_counter() - t0
    acc = out["acc"]
    names = [_readable(ev.space, v) for v in vecs]
    best = int(np.argmax(acc))
    summary = {"archs": int(len(vecs)), "compiles": ev.compiles, "archs_per_s": len(vecs) / secs, "seconds": secs,
               "recalibrate": args.bn_recalib, "bn": "batch" if args.bn_batch else ("recalibrated" if args.bn_recalib else "running"),
               "val_examples": int(ev.val_y.size), "best": names[best],
               "best_oneshot_acc": float(acc[best]), "oneshot_acc_mean": float(acc.mean())}
    if truth is not None:
        summary.update(rank_quality(acc, truth), metric=args.metric)
        # The loss separates cells that tie on accuracy over a few hundred images.
        by_loss = rank_quality(-out["loss"], truth)
        summary.update(kendall_tau_by_loss=by_loss["kendall_tau"], spearman_by_loss=by_loss["spearman"])
    if args.out and is_primary():  # every process holds every score; one writes them
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["arch", "oneshot_acc", "oneshot_loss"] + ([args.metric] if truth is not None else []))
        for i, name in enumerate(names):
            w.writerow([name, f"{acc[i]:.6f}", f"{out['loss'][i]:.6f}"] + ([f"{truth[i]:.4f}"] if truth is not None else []))
        atomic_write(args.out, buf.getvalue())
    return summary


def _readable(space: SearchSpace, vec: np.ndarray) -> str:
    """The benchmark's ``arch_str`` for an NB201 cell, else ``{label: choice}`` as JSON."""
    if isinstance(space, NB201Space) and space.shared:
        return space.arch_str(vec)
    return json.dumps({k: str(v) for k, v in space.names(vec).items()})


def summary_table(summary: dict) -> list[str]:
    """The short human table of a ``dnas eval`` summary (the JSON line follows it)."""
    lines = [f"{summary['archs']} architectures in {summary['seconds']:.1f} s ({summary['archs_per_s']:.1f}/s, "
             f"{summary['compiles']} compile(s)), BatchNorm {summary['bn']}, {summary['val_examples']} validation examples",
             f"  best one-shot accuracy  {summary['best_oneshot_acc']:.4f}  {summary['best']}",
             f"  mean one-shot accuracy  {summary['oneshot_acc_mean']:.4f}"]
    if "kendall_tau" in summary:
        lines.append(f"  against {summary['metric']}: Kendall τ {summary['kendall_tau']:.3f}, Spearman {summary['spearman']:.3f} "
                     f"(by loss {summary['kendall_tau_by_loss']:.3f}, {summary['spearman_by_loss']:.3f})")
    return lines


def cmd_eval(args: argparse.Namespace) -> int:
    """``dnas eval``: a short table (unless ``--json``), then the summary as the last line."""
    summary = run_eval(args)
    if is_primary():  # the others computed the same summary; process 0 speaks for the run
        print_summary(summary, summary_table, args.json)
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``dnas eval`` to the ``dnas`` command's subparsers."""
    p = sub.add_parser("eval", help="one-shot accuracies of sampled architectures with a search run's supernet (compiled once)",
                       description="Samples architectures of a search run's space and evaluates them with its supernet's "
                                   "shared weights; prints one JSON line last.")
    p.add_argument("run", help="a dnas search run directory with a checkpoint (SPOS, RSPS, ENAS or any search)")
    p.add_argument("--archs", type=int, default=100, help="architectures to sample and evaluate")
    p.add_argument("--sample", default="uniform", choices=("uniform", "policy"),
                   help="uniform: distinct architectures drawn uniformly; policy: drawn from the search's α (ENAS' final "
                        "selection: sample the controller, keep the best by one-shot accuracy)")
    p.add_argument("--bn-recalib", type=int, default=None, metavar="K", help="re-estimate each subnet's BatchNorm statistics on K train batches first")
    p.add_argument("--bn-batch", action="store_true",
                   help="normalise each validation batch with its own statistics (NAS-Bench-201's track_running_stats=False)")
    p.add_argument("--bn-running", action="store_true", help="use the supernet's running statistics")
    p.add_argument("--val-batches", type=int, default=None,
                   help="validation batches from the run's held-out split (default: the run's config.eval_val_batches; 0: the whole split)")
    p.add_argument("--batch-size", type=int, default=0, help="examples per batch (0: the run's)")
    p.add_argument("--table", default="", help="NAS-Bench-201 table CSV: rank correlation with its accuracies")
    p.add_argument("--metric", default="cifar10_test_200ep", help="the table column to compare with")
    p.add_argument("--chunk", type=int, default=32, help="architectures per device per compiled call")
    p.add_argument("--devices", type=int, default=0, help="devices that split the architectures (0: all, of every process)")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures and the batches")
    p.add_argument("--out", default="", help="also write every architecture's accuracies to this CSV")
    p.add_argument("--json", action="store_true", help="print only the JSON summary line (no table)")
    p.set_defaults(fn=cmd_eval)
