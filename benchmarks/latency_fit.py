"""Spearman of latency predictors on the NAS-Bench-201 table's own latency columns.

For each target device (HELP's meta-test devices) and N measured architectures, fits on
N random rows and ranks the other 15,625 - N, averaged over seeds:

- ``additive``: the per-(edge, op) least-squares model from scratch (``onehot``);
- ``additive+count``: the same with a per-op prior (``onehot,count``), still additive;
- ``transfer``: few-shot, with the latencies on HELP's meta-training devices present in
  the table (1080ti_1/32/256, pixel3, samsung_a50) as features, alone (``sources only``:
  the target as a linear mix of the known devices) or next to the additive features.

    python benchmarks/latency_fit.py [--csv PATH] [--seeds 10] [--json out.json]

Prints a Markdown table (benchmarks/LATENCY.md holds the numbers and HELP's).
"""

from __future__ import annotations

import argparse
import csv
import json
import time

import numpy as np

from dnas.data.datasets import shared_data
from dnas.space.genotype import NB201Genotype
from dnas.hardware.predictor import fit_latency_predictor, latency_metrics
from dnas.space.spaces.nb201 import NB201Space

TARGETS = ("titan_rtx_256", "gold_6226", "pixel2", "raspi4", "eyeriss", "fpga")
SOURCES = ("1080ti_1", "1080ti_32", "1080ti_256", "pixel3", "samsung_a50")
# HELP (Lee et al., NeurIPS 2021), Table 3: Spearman with 10 samples of the target device.
HELP_10 = {"titan_rtx_256": 0.987, "gold_6226": 0.989, "pixel2": 0.802, "raspi4": 0.890, "eyeriss": 0.940, "fpga": 0.985}
MODELS = {
    "additive": ("onehot",),
    "additive+count": ("onehot", "count"),
    "transfer (sources only)": ("source",),
    "transfer": ("onehot", "count", "source"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=shared_data("nb201", "nb201_table.csv"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--sizes", default="10,20,100")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    space = NB201Space()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    vecs = np.stack([space.genotype_to_vec(NB201Genotype.from_arch_str(r["arch_str"])) for r in rows])
    lat = {d: np.array([float(r[f"lat_ms_{d}"]) for r in rows]) for d in TARGETS + SOURCES}
    sources = np.stack([lat[d] for d in SOURCES], axis=1)
    cands = [c.candidates for c in space.choices]
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict[str, dict[int, float]]] = {}
    spread: dict[str, dict[str, dict[int, float]]] = {}  # std over seeds
    t0 = time.time()
    for model, feats in MODELS.items():
        for d in TARGETS:
            for n in sizes:
                rho = []
                for seed in range(args.seeds):
                    order = np.random.default_rng(seed).permutation(len(vecs))
                    tr, te = order[:n], order[n:]
                    src = sources if "source" in feats else None
                    p = fit_latency_predictor(vecs[tr], lat[d][tr], space.num_candidates, candidates=cands, sources=None if src is None else src[tr], features=feats)
                    pred = p.predict(vecs[te], None if src is None else src[te])
                    rho.append(latency_metrics(pred, lat[d][te])["spearman"])
                results.setdefault(model, {}).setdefault(d, {})[n] = float(np.mean(rho))
                spread.setdefault(model, {}).setdefault(d, {})[n] = float(np.std(rho))
    print(f"# {args.seeds} seeds, {time.time() - t0:.0f} s")
    print("| model | N | " + " | ".join(TARGETS) + " | mean |")
    print("|---|---|" + "---|" * (len(TARGETS) + 1))
    print("| HELP (published) | 10 | " + " | ".join(f"{HELP_10[d]:.3f}" for d in TARGETS) + f" | {np.mean(list(HELP_10.values())):.3f} |")
    for model in MODELS:
        for n in sizes:
            vals = [results[model][d][n] for d in TARGETS]
            sds = [spread[model][d][n] for d in TARGETS]
            print(f"| {model} | {n} | " + " | ".join(f"{v:.3f} ±{s:.3f}" for v, s in zip(vals, sds)) + f" | {np.mean(vals):.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": args.seeds, "sources": SOURCES, "results": results, "std": spread, "help_10": HELP_10}, f, indent=1)


if __name__ == "__main__":
    main()
