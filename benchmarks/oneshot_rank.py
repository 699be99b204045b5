"""Ranking quality of a trained supernet's one-shot accuracies against NAS-Bench-201.

Usage:
  python benchmarks/oneshot_rank.py --run RUN_DIR --table nb201_table.csv --archs 1000
      [--recalibrate 0,4] [--val-batches 8] [--seed 0] [--json OUT]

Samples ``--archs`` distinct cells, evaluates each with the supernet's shared weights
(:mod:`dnas.oneshot`: one compilation for all) with and without BatchNorm recalibration,
and prints one JSON object: per setting the Kendall τ and Spearman ρ against the table's
200-epoch CIFAR-10 test accuracy, top-1 and top-10 % precision (the share of the one-shot
top decile that is in the true top decile), the true accuracy of the one-shot best cell,
seconds and archs/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--recalibrate", default="0,4")
    ap.add_argument("--val-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from dnas.genotype import NB201Genotype
    from dnas.oneshot import OneShotEvaluator

    rows = list(csv.DictReader(open(a.table)))
    rng = np.random.default_rng(a.seed)
    pick = rng.choice(len(rows), size=min(a.archs, len(rows)), replace=False)
    out = {"run": a.run, "archs": int(len(pick)), "val_batches": a.val_batches, "settings": {}}
    for r in [int(x) for x in a.recalibrate.split(",")]:
        ev = OneShotEvaluator.from_run(a.run, recalibrate=r, val_batches=a.val_batches, seed=a.seed)
        vecs = np.stack([ev.space.genotype_to_vec(NB201Genotype.from_arch_str(rows[i]["arch_str"])) for i in pick])
        truth = np.array([float(rows[i]["cifar10_test_200ep"]) for i in pick])
        t0 = time.perf_counter()
        acc = ev.accuracy(vecs)
        secs = time.perf_counter() - t0
        k = max(1, len(pick) // 10)
        top_pred, top_true = set(np.argsort(-acc)[:k]), set(np.argsort(-truth)[:k])
        out["settings"][f"recalibrate_{r}"] = {
            "kendall": float(kendalltau(acc, truth)[0]), "spearman": float(spearmanr(acc, truth)[0]),
            "top10pct_precision": len(top_pred & top_true) / k, "top1_in_true_top10pct": bool(int(np.argmax(acc)) in top_true),
            "true_acc_of_oneshot_best": float(truth[int(np.argmax(acc))]), "best_true_acc": float(truth.max()),
            "oneshot_acc_mean": float(acc.mean()), "seconds": secs, "archs_per_s": len(pick) / secs, "compiles": ev.compiles,
        }
        print(json.dumps(out), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
