"""Input pipeline throughput against what a search step consumes (issue 30).

Usage:
  python benchmarks/input_pipeline.py [--jpegs 2000] [--workers 4] [--prefetch 4] [--skip-steps]
      [--cache-dir DIR] [--json OUT]

Measures, on this machine:
  - ``cifar10_images_per_s``: the grain loader (``config.pipeline.loader="grain"``) reading a
    DARTS search's batches (weight + α split, 2 x 64 images per step) from the CIFAR-10
    pickles (the shared subset when present, else synthetic arrays of CIFAR's shape);
    ``cifar10_memory_images_per_s`` the in-loop reads for comparison.
  - ``jpeg_images_per_s``: the grain loader decoding a folder of ``--jpegs`` generated JPEGs
    (ImageNet-like sizes 300-500 x 250-400 px, smooth content plus noise) with the training
    transform (random-resized crop to 224 x 224, flip), batch 32.
  - ``darts_step_images_per_s``: the DARTS search step at the paper's settings (C=16, 8
    cells, batch 64, 32 x 32, first order), ``2 x 64`` images per step / median step time.
  - ``proxylessnas_step_images_per_s``: the ProxylessNAS search step at 224 x 224 (binary
    gates, two sampled paths, batch 16) at the smoke width (C=8, one block per stage): a
    narrower network than the paper's consumes images faster, so it is the harder target for
    the pipeline.
Each step is built by ``dnas.run.search.build_search`` from a real config in a fresh
subprocess (timed after compiling; ``--cache-dir`` keeps XLA's cache between runs).
The pipeline is not the bottleneck when its images/s exceed the step's; the JSON's
``*_headroom`` are those ratios. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dnas from this checkout, installed or not

import numpy as np  # noqa: E402


def make_jpegs(root: Path, n: int, classes: int = 10, seed: int = 0) -> None:
    """``n`` JPEGs in ``root/{train,val}/<class>/`` (val: 1 per class), ImageNet-like sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 12, (400, 500, 3))  # one tile, cut at random offsets (drawing per image was most of the time)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            c = i % classes
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            w, h = int(rng.integers(300, 500)), int(rng.integers(250, 400))
            yy, xx = np.mgrid[0:h, 0:w]
            base = (np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 25.0 * c)], -1) + np.roll(noise, int(rng.integers(0, 400)), 0)[:h, :w])
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(d / f"{i}.jpg", quality=90)


def search_streams(d, batch: int, seed: int = 0):
    """The weight and α streams of a DARTS search over ``d``'s training split."""
    import jax

    from dnas.data.datasets import StepIndices, search_split
    from dnas.data.pipeline import Stream

    w_idx, a_idx = search_split(len(d.train_y))
    key = jax.random.key(seed)
    return [Stream(d.train_x, d.train_y, StepIndices(jax.random.fold_in(key, 1), len(w_idx), batch), w_idx),
            Stream(d.train_x, d.train_y, StepIndices(jax.random.fold_in(key, 2), len(a_idx), batch), a_idx)]


def pipeline_rate(streams, batch: int, steps: int, loader: str, workers: int, prefetch: int) -> float:
    """Images per second the loader delivers (after its first batch)."""
    from dnas.data.pipeline import step_batches

    it = step_batches(streams, slice(0, batch), 0, steps + 1, loader=loader, seed=0, workers=workers, prefetch=prefetch)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += sum(len(x) for x in b[0::2])
    rate = n / (time.perf_counter() - t0)
    it.close()
    return rate


def step_worker(which: str, folder: str, cache_dir: str, steps: int) -> dict:
    """In a subprocess: one search step of ``which`` built from its config, timed."""
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from dnas.data.datasets import shared_data
    from dnas.run.config import load_config
    from dnas.run.parallel import host_rows, shard_batch
    from dnas.run.search import build_search, search_batches

    root = Path(__file__).resolve().parents[1]
    if which == "darts":
        cifar = shared_data("images", "cifar10_subset")
        data = [f"--config.dataset=cifar10", f"--config.data_dir={cifar}"] if cifar else ["--config.dataset=synthetic"]
        c = load_config(str(root / "experiments/darts/config.py"), data + ["--config.init_channels=16", "--config.layers=8", "--config.batch_size=64"])
    else:
        c = load_config(str(root / "experiments/proxylessnas/config.py"), [
            "--config.dataset=folder", f"--config.data_dir={folder}", "--config.pipeline.image_size=224",
            "--config.layers=1", "--config.init_channels=8", "--config.batch_size=16"])
    c.order, c.devices, c.max_steps = 1, 1, steps + 1
    t0 = time.perf_counter()
    setup = build_search(c)
    batch = shard_batch(setup.mesh, next(search_batches(setup, 0)))
    state = setup.state
    compiled = setup.train_step.lower(state, *batch).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, *batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, _ = compiled(state, *batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    assert host_rows(c.batch_size) == slice(0, c.batch_size)
    return {"step_s": step_s, "images_per_s": 2 * c.batch_size / step_s, "build_and_compile_s": compile_s, "batch": c.batch_size,
            "image": list(setup.data.image_shape), "C": c.init_channels, "layers": c.layers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jpegs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="timed search steps per model (after one untimed)")
    ap.add_argument("--skip-steps", action="store_true", help="measure the pipeline only")
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/dnas/jax"))
    ap.add_argument("--json", default="")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--folder", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(step_worker(a.worker, a.folder, a.cache_dir, a.steps)))
        return

    from dnas.data.datasets import get_dataset, shared_data, synthetic

    out: dict = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "workers": a.workers, "prefetch": a.prefetch}
    cifar = shared_data("images", "cifar10_subset")
    d = get_dataset("cifar10", cifar) if cifar else synthetic(5000, 100, hw=32)
    out["cifar10_source"] = "cifar10 pickles (shared subset)" if cifar else "synthetic arrays"
    streams = search_streams(d, 64)
    out["cifar10_images_per_s"] = pipeline_rate(streams, 64, 300, "grain", a.workers, a.prefetch)
    out["cifar10_memory_images_per_s"] = pipeline_rate(streams, 64, 300, "memory", a.workers, a.prefetch)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_jpegs(Path(tmp), a.jpegs)
        out["jpeg_generate_s"] = time.perf_counter() - t0
        f = get_dataset("folder", tmp, image_size=224, workers=a.workers)
        jstreams = search_streams(f, 32)[:1]
        steps = max(4, min(a.jpegs // 32 - 1, 40))
        out["jpeg_images_per_s"] = pipeline_rate(jstreams, 32, steps, "grain", a.workers, a.prefetch)
        out["jpeg_memory_images_per_s"] = pipeline_rate(jstreams, 32, min(steps, 10), "memory", a.workers, a.prefetch)
        if not a.skip_steps:
            for which in ("darts", "proxylessnas"):
                r = subprocess.run([sys.executable, __file__, "--worker", which, "--folder", tmp, "--cache-dir", a.cache_dir,
                                    "--steps", str(a.steps)], capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"{which} step failed:\n{r.stderr[-3000:]}")
                res = json.loads(r.stdout.strip().splitlines()[-1])
                out[f"{which}_step"] = res
                out[f"{which}_step_images_per_s"] = res["images_per_s"]
    if not a.skip_steps:
        out["darts_headroom"] = out["cifar10_images_per_s"] / out["darts_step_images_per_s"]
        out["proxylessnas_headroom"] = out["jpeg_images_per_s"] / out["proxylessnas_step_images_per_s"]
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
