"""Leave-one-device-out latency prediction on the NAS-Bench-201 table's 13 devices.

For each held-out device: pretrain on the other 12 devices' latencies of all 15,625 cells,
adapt with 10 random cells of the held-out device, rank the other 15,615 (Spearman);
10 seeds (``np.random.default_rng(seed)`` picks the rows, as ``dnas predictor fit``).
Models (:mod:`dnas.hardware.predictors`):

- ``gcn``: :class:`TransferPredictor` (GCN pretrained on the 12 devices, prior + ridge
  correction with leave-one-out penalties) reading only the graph, so it ranks cells
  never measured anywhere (``dnas predictor fit --model gcn --transfer-from``);
- ``gcn + measured sources``: the same, also reading the cells' measured latencies on
  the 12 devices (prior and correction features);
- ``ridge``, ``mlp``, ``xgboost``: the 12 measured source latencies as features next to
  one-hot and count features;
- ``ridge_ensemble``: the geometric mean of ``ridge`` and a log-space ridge on the log
  source latencies alone.

From scratch (no other device): ``ridge``, ``mlp``, ``xgboost``, ``gcn``, ``flops``,
``params`` fitted on 100 random cells.

The GCN is pretrained once per held-out device (key 0) and shared by the seeds, so its
seed-to-seed spread is that of the 10 samples and the adaptation, not of the pretraining.

    nice -n 5 python benchmarks/latency_transfer.py [--csv PATH] [--seeds 10] [--scratch-seeds 10] [--json out.json]
        [--models ridge,ridge_ensemble]   # only these transfer models (no GCN pretraining unless a gcn is named)

Prints one Markdown table per setting, then one JSON line last.
"""

from __future__ import annotations

import argparse
import csv
import json
import time

import jax
import numpy as np
from scipy.stats import spearmanr

from dnas.data.datasets import shared_data
from dnas.hardware.predictors import MODELS, encode, flops_params
from dnas.hardware.predictors.transfer import TransferPredictor
from dnas.space.spaces.nb201 import NB201Space

DEVICES = ("raspi4", "pixel3", "eyeriss", "fpga", "1080ti_1", "1080ti_32", "1080ti_256", "gold_6226", "titan_rtx_1",
           "titan_rtx_32", "titan_rtx_256", "pixel2", "samsung_a50")
TRANSFER = ("gcn", "gcn + measured sources", "ridge", "ridge_ensemble", "mlp", "xgboost")
SCRATCH = ("ridge", "mlp", "xgboost", "gcn", "flops", "params")


def table(title: str, res: dict[str, dict[str, list[float]]], models: tuple[str, ...], devices: tuple[str, ...]) -> str:
    """Markdown: one row per device, one column per model, mean ± std over seeds; then the
    mean over devices and the worst device."""
    lines = [f"### {title}", "", "| device | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for d in devices:
        lines.append(f"| {d} | " + " | ".join(f"{np.mean(res[m][d]):.3f} ±{np.std(res[m][d]):.3f}" for m in models) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean([np.mean(res[m][d]) for d in devices]):.3f}**" for m in models) + " |")
    lines.append("| worst device | " + " | ".join(f"{min(np.mean(res[m][d]) for d in devices):.3f}" for m in models) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=shared_data("nb201", "nb201_table.csv"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--scratch-seeds", type=int, default=10)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--scratch-n", type=int, default=100)
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--pretrain-steps", type=int, default=None, help="default: GCNPredictor's")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--models", default=",".join(TRANSFER), help="transfer models to run (comma-separated)")
    args = ap.parse_args()
    space = NB201Space()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    vecs = np.stack([space.arch_str_to_vec(r["arch_str"]) for r in rows])
    lat = np.array([[float(r[f"lat_ms_{d}"]) for d in DEVICES] for r in rows])
    devices = [d for d in args.devices.split(",") if d]
    models = tuple(m for m in TRANSFER if m in args.models.split(","))
    t0 = time.time()
    base = encode(space, vecs, **flops_params(space, vecs, C=16, num_classes=10, in_channels=3, resolution=32))
    transfer = {m: {} for m in TRANSFER}
    scratch = {m: {} for m in SCRATCH}
    fit_s: dict[str, list[float]] = {}

    def score(res, name, dev, model, x, y, tr, te, key):
        t = time.perf_counter()
        model.fit(x.take(tr), y[tr], key)
        fit_s.setdefault(name, []).append(time.perf_counter() - t)
        res[name].setdefault(dev, []).append(float(spearmanr(model.predict(x.take(te)), y[te])[0]))

    for di, dev in enumerate(DEVICES):
        if dev not in devices:
            continue
        y = lat[:, di]
        src = np.delete(lat, di, axis=1)
        x = base.with_extra(sources=src)
        if any(m.startswith("gcn") for m in models):
            t = time.perf_counter()
            gcn = {} if args.pretrain_steps is None else {"pretrain_steps": args.pretrain_steps}
            tp = TransferPredictor(base, src, log=True, use_measured=True, gcn=gcn).pretrain(jax.random.key(0))
            fit_s.setdefault("gcn pretrain", []).append(time.perf_counter() - t)
            graph_only = TransferPredictor(base, src, log=True, use_measured=False)
            graph_only.gcn = tp.gcn  # the same pretrained network
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(len(y))
            tr, te = order[: args.shots], order[args.shots :]
            key = jax.random.key(seed)
            if "gcn + measured sources" in models:
                score(transfer, "gcn + measured sources", dev, tp, x, y, tr, te, key)
            if "gcn" in models:
                score(transfer, "gcn", dev, graph_only, base, y, tr, te, key)
            for m in ("ridge", "ridge_ensemble", "mlp", "xgboost"):
                if m in models:
                    score(transfer, m, dev, MODELS[m](), x, y, tr, te, key)
        for seed in range(args.scratch_seeds):
            order = np.random.default_rng(seed).permutation(len(y))
            tr, te = order[: args.scratch_n], order[args.scratch_n :]
            for m in SCRATCH:
                score(scratch, m, dev, MODELS[m](), base, y, tr, te, jax.random.key(seed))
        done_scratch = " | scratch " + ", ".join(f"{m} {np.mean(scratch[m][dev]):.3f}" for m in SCRATCH) if args.scratch_seeds else ""
        print(f"{dev}: " + ", ".join(f"{m} {np.mean(transfer[m][dev]):.3f}" for m in models) + done_scratch + f" ({time.time() - t0:.0f} s)", flush=True)

    done = tuple(d for d in DEVICES if d in devices)
    print(table(f"Few-shot transfer: {args.shots} samples of the held-out device, pretrained on the other 12 (Spearman, {args.seeds} seeds)", transfer, models, done))
    if args.scratch_seeds:
        print()
        print(table(f"From scratch: {args.scratch_n} samples (Spearman, {args.scratch_seeds} seeds)", scratch, SCRATCH, done))
    print()
    print("fit seconds (median): " + ", ".join(f"{k} {np.median(v):.2f}" for k, v in fit_s.items()))
    out = {"devices": list(done), "seeds": args.seeds, "scratch_seeds": args.scratch_seeds, "shots": args.shots, "scratch_n": args.scratch_n,
           "transfer": transfer, "scratch": scratch,
           "transfer_mean": {m: float(np.mean([np.mean(transfer[m][d]) for d in done])) for m in models},
           "scratch_mean": {m: float(np.mean([np.mean(scratch[m][d]) for d in done])) for m in SCRATCH} if args.scratch_seeds else {},
           "fit_s_median": {k: float(np.median(v)) for k, v in fit_s.items()}, "wall_s": time.time() - t0}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
