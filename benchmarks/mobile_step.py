"""Compile and step time, peak RSS of a mobile-space search (FBNet, ProxylessNAS) or DARTS
at the same batch, built exactly as ``dnas search`` builds it.

    python benchmarks/mobile_step.py [--space fbnet|proxylessnas|darts] [--steps 3]
        [--set KEY=VALUE ...] [--synthetic-hw N] [--json OUT]

``--space`` picks the experiment config (``experiments/<space>/config.py:smoke``; ``darts``:
``experiments/darts/config.py:smoke``); ``--set`` overrides config keys as ``--config.KEY``
does (e.g. ``--set batch_size=64``). ``--synthetic-hw 224`` replaces the config's data by
random ``N x N x 3`` images (ProxylessNAS' 224x224 input; dnas has no ImageNet-folder loader
in this checkout, so the step, not a pipeline, is measured). For a before/after of a library change, run it from
both checkouts.

Each space runs in a fresh subprocess (so peak RSS is its own). Phases: ``build_s`` (data,
supernet initialisation: one jitted init program, optimizers, the latency table),
``lower_s`` (trace + lowering of the search step), ``compile_s`` (XLA), then ``--steps``
steps (``step_s_first`` includes dispatch warm-up; ``step_ms_median`` of the rest).
``hlo_lines``: size of the lowered step (StableHLO text lines), the quantity compile time
tracks. ``cpu_s``: process CPU time of the whole run (robust on a shared machine, where
wall times stretch with the load). Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # dnas from this checkout, installed or not

CONFIGS = {"fbnet": "experiments/fbnet/config.py:smoke", "proxylessnas": "experiments/proxylessnas/config.py:smoke",
           "darts": "experiments/darts/config.py:smoke"}


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(a: argparse.Namespace) -> dict:
    """Runs in the subprocess: build, lower, compile, step; returns the measurements."""
    import jax

    import dnas.run.search as run_search
    from dnas.data.datasets import synthetic
    from dnas.run.config import load_config
    from dnas.run.parallel import shard_batch
    from dnas.run.search import build_search, search_batches

    t0, c0 = time.perf_counter(), time.process_time()
    space = a.space[0]
    config = load_config(str(ROOT / CONFIGS[space]), [f"--config.{kv}" for kv in a.set])
    if a.synthetic_hw:
        n = max(2 * int(config.batch_size), int(config.max_train_examples or 0))
        # build_search reads the dataset through this module-level name; the benchmark swaps in
        # random images of the requested size (values do not change step time).
        run_search.get_dataset = lambda name, data_dir, **_: synthetic(n_train=n, n_test=int(config.batch_size), hw=a.synthetic_hw)
    setup = build_search(config)
    t1 = time.perf_counter()
    batches = search_batches(setup, 0)
    batch = shard_batch(setup.mesh, next(batches))
    lowered = setup.train_step.lower(setup.state, *batch)
    t2 = time.perf_counter()
    hlo_lines = lowered.as_text().count("\n")
    compiled = lowered.compile()
    t3 = time.perf_counter()
    state, times = setup.state, []
    for i in range(a.steps):
        start = time.perf_counter()
        # Past the config's last step (a smoke has 2) the first batch again: values do not change step time.
        state, metrics = compiled(state, *(batch if i == 0 else shard_batch(setup.mesh, next(batches, None) or batch)))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return {"space": space, "backend": jax.default_backend(), "batch": int(config.batch_size),
            "init_channels": int(config.init_channels), "dataset": config.dataset,
            "image_hw": list(setup.data.image_shape[:2]), "build_s": round(t1 - t0, 2), "lower_s": round(t2 - t1, 2),
            "compile_s": round(t3 - t2, 2), "hlo_lines": hlo_lines, "step_s_first": round(times[0], 3) if times else None,
            "step_ms_median": round(1000 * statistics.median(times[1:]), 1) if len(times) > 1 else None,
            "peak_rss_mb": round(_peak_rss_mb()), "cpu_s": round(time.process_time() - c0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", action="append", choices=sorted(CONFIGS), help="repeatable; default: fbnet and proxylessnas")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    ap.add_argument("--synthetic-hw", type=int, default=0, help="random N x N x 3 images instead of the config's data")
    ap.add_argument("--json", default="")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    results = {}
    for space in a.space or ["fbnet", "proxylessnas"]:
        cmd = [sys.executable, __file__, "--worker", "--space", space, "--steps", str(a.steps)]
        for kv in a.set:
            cmd += ["--set", kv]
        if a.synthetic_hw:
            cmd += ["--synthetic-hw", str(a.synthetic_hw)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        lines = p.stdout.strip().splitlines()
        if p.returncode or not lines:
            results[space] = {"error": (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"rc {p.returncode}"]}
        else:
            results[space] = json.loads(lines[-1])
        if a.json:
            Path(a.json).write_text(json.dumps(results) + "\n")
        print(space, results[space], file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
