"""Runs the NB201 family comparison and tabulates it (``experiments/nb201_family/config.py``).

    python experiments/nb201_family/report.py run RUNS --methods darts,gdas --seeds 0,1,2
    python experiments/nb201_family/report.py table RUNS --table nb201_table.csv [--json OUT]

``run`` searches each method with each seed into ``RUNS/<method>_<seed>`` (a finished run
is skipped, a stopped one resumes) and records its wall time in ``RUNS/times.json``.
``table`` looks each derived cell up in the NAS-Bench-201 table (200-epoch CIFAR-10 test
accuracy) and prints, per method: seeds, mean ± std accuracy, mean search time, the
parameter-free ops in the derived cells (of 6 edges), the top Hessian eigenvalue at the
first and last epoch, and how many runs derived a cell of only parameter-free ops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "experiments/nb201_family/config.py"


def run(a: argparse.Namespace) -> None:
    out = Path(a.runs)
    out.mkdir(parents=True, exist_ok=True)
    times_path = out / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for m in a.methods.split(","):
        for s in a.seeds.split(","):
            name = f"{m}_{s}"
            if (out / name / "genotype.json").exists() and name in times:
                continue
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "dnas.cli", "search", "--config", f"{CONFIG}:{m}", f"--config.seed={s}",
                                "--workdir", str(out / name)], cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: failed: {r.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            times_path.write_text(json.dumps(times, indent=1) + "\n")
            print(f"{name}: {times[name]:.0f} s, {json.loads((out / name / 'genotype.json').read_text()).get('arch_str')}", flush=True)


def table(a: argparse.Namespace) -> dict:
    import numpy as np

    from dnas.estimate.nb201_table import table_values
    from dnas.space.genotype import NB201Genotype
    from dnas.space.spaces import NB201Space

    space = NB201Space()
    out = Path(a.runs)
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
    rows: dict[str, dict] = {}
    for d in sorted(p for p in out.iterdir() if (p / "genotype.json").exists()):
        method, seed = d.name.rsplit("_", 1)
        arch = json.loads((d / "genotype.json").read_text())["arch_str"]
        vec = space.genotype_to_vec(NB201Genotype.from_arch_str(arch))
        acc = float(table_values(a.table, vec[None], "cifar10_test_200ep")[0])
        epochs = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if '"event": "epoch"' in l]
        eig = [e["hessian_eigenvalue"] for e in epochs if "hessian_eigenvalue" in e]
        free = epochs[-1]["param_free_ops"]["cell"] if epochs else None
        r = rows.setdefault(method, {"seeds": [], "acc": [], "time_s": [], "param_free_ops": [], "eig_first": [], "eig_last": [], "cells": []})
        r["seeds"].append(int(seed))
        r["acc"].append(acc)
        r["time_s"].append(times.get(d.name, float("nan")))
        r["param_free_ops"].append(free)
        r["eig_first"].append(eig[0] if eig else float("nan"))
        r["eig_last"].append(eig[-1] if eig else float("nan"))
        r["cells"].append(arch)
    summary = {}
    print("| method | seeds | CIFAR-10 test acc (%) | search time (s) | param-free ops (of 6) | λ_max first → last epoch |")
    print("|---|---|---|---|---|---|")
    for m, r in rows.items():
        acc = np.asarray(r["acc"])
        s = {"seeds": r["seeds"], "acc_mean": round(float(acc.mean()), 2), "acc_std": round(float(acc.std()), 2),
             "time_s_mean": round(float(np.nanmean(r["time_s"])), 0) if not np.all(np.isnan(r["time_s"])) else float("nan"), "param_free_ops": r["param_free_ops"],
             "eig_first_mean": float(np.nanmean(r["eig_first"])) if not np.all(np.isnan(r["eig_first"])) else None,
             "eig_last_mean": float(np.nanmean(r["eig_last"])) if not np.all(np.isnan(r["eig_last"])) else None, "cells": r["cells"]}
        summary[m] = s
        eig = f"{s['eig_first_mean']:.3g} → {s['eig_last_mean']:.3g}" if s["eig_first_mean"] is not None else "–"
        print(f"| {m} | {len(acc)} | {s['acc_mean']:.2f} ± {s['acc_std']:.2f} | {s['time_s_mean']:.0f} | {r['param_free_ops']} | {eig} |")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("runs")
    r.add_argument("--methods", default="darts,darts2,gdas,snas,pc_darts,drnas,fair_darts,enas")
    r.add_argument("--seeds", default="0,1,2")
    t = sub.add_parser("table")
    t.add_argument("runs")
    t.add_argument("--table", required=True)
    t.add_argument("--json", default="")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else table(a)


if __name__ == "__main__":
    main()
