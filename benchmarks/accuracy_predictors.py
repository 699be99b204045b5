"""Accuracy predictors on NAS-Bench-201: Kendall τ on held-out cells after T training cells.

Target ``cifar10_val_12ep`` (the benchmark's 12-epoch validation accuracy, what a
multi-trial search observes). For T = 20, 50, 100, 200 random cells (seeded with
``np.random.default_rng(seed)``, as ``dnas predictor fit``), each model of
:mod:`dnas.hardware.predictors` is fitted and scored on the other 15,625 − T cells by
Kendall τ-b against the same column and against ``cifar10_test_200ep`` (the truth a
search is judged by).

    nice -n 5 python benchmarks/accuracy_predictors.py [--csv PATH] [--seeds 10] [--json out.json]

Prints a Markdown table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import csv
import json
import time

import jax
import numpy as np
from scipy.stats import kendalltau

from dnas.data.datasets import shared_data
from dnas.hardware.predictors import MODELS, encode, flops_params
from dnas.space.spaces.nb201 import NB201Space

MODEL_ORDER = ("gcn", "mlp", "ridge", "xgboost", "flops", "params")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=shared_data("nb201", "nb201_table.csv"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--sizes", default="20,50,100,200")
    ap.add_argument("--models", default=",".join(MODEL_ORDER))
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    space = NB201Space()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    vecs = np.stack([space.arch_str_to_vec(r["arch_str"]) for r in rows])
    val = np.array([float(r["cifar10_val_12ep"]) for r in rows])
    test = np.array([float(r["cifar10_test_200ep"]) for r in rows])
    x = encode(space, vecs, **flops_params(space, vecs, C=16, num_classes=10, in_channels=3, resolution=32))
    sizes = [int(s) for s in args.sizes.split(",")]
    models = [m for m in args.models.split(",") if m]
    res: dict[str, dict[str, dict[int, list[float]]]] = {"val": {}, "test": {}}
    fit_s: dict[str, list[float]] = {}
    t0 = time.time()
    for T in sizes:
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(len(val))
            tr, te = order[:T], order[T:]
            for m in models:
                t = time.perf_counter()
                model = MODELS[m]().fit(x.take(tr), val[tr], jax.random.key(seed))
                fit_s.setdefault(m, []).append(time.perf_counter() - t)
                p = model.predict(x.take(te))
                res["val"].setdefault(m, {}).setdefault(T, []).append(float(kendalltau(p, val[te])[0]))
                res["test"].setdefault(m, {}).setdefault(T, []).append(float(kendalltau(p, test[te])[0]))
        print(f"T={T}: " + ", ".join(f"{m} {np.mean(res['val'][m][T]):.3f}" for m in models) + f" ({time.time() - t0:.0f} s)", flush=True)
    for truth, label in (("val", "cifar10_val_12ep (the fitted column)"), ("test", "cifar10_test_200ep")):
        print(f"\n### Kendall τ vs {label}, mean ± std over {args.seeds} seeds\n")
        print("| model | " + " | ".join(f"T = {T}" for T in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for m in models:
            print(f"| {m} | " + " | ".join(f"{np.mean(res[truth][m][T]):.3f} ±{np.std(res[truth][m][T]):.3f}" for T in sizes) + " |")
    print("\nfit seconds (median): " + ", ".join(f"{k} {np.median(v):.2f}" for k, v in fit_s.items()))
    out = {"seeds": args.seeds, "sizes": sizes, "kendall": res,
           "mean": {truth: {m: {T: float(np.mean(v[T])) for T in sizes} for m, v in r.items()} for truth, r in res.items()},
           "fit_s_median": {k: float(np.median(v)) for k, v in fit_s.items()}, "wall_s": time.time() - t0}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
