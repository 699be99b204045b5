"""Benchmark one DARTS search step: compile time, median step time, peak RSS.

Usage:
  python benchmarks/search_step.py --C 8 --layers 5 --batch 32 --hw 32 [--method darts|gdas|spos|...] [--order 1|2]
      [--steps 10] [--repeats 1] [--compare-torch [PATH]] [--cache-dir DIR] [--json OUT]
      [--depthwise auto|conv|shift|fused] [--cell-impl scan|batch|unrolled] [--no-remat]
      [--opt-level N] [--no-trim] [--hypergradient finite_difference|forward_difference|exact]
      [--no-fuse] [--vs-first-order] [--torch-device auto|cpu|cuda]

XLA flags for the dnas runs come from the environment (``XLA_FLAGS=... python ...``).
``--method`` names a registered method (:data:`dnas.search.methods.METHODS`: its relaxation,
whether α is updated, its architecture penalty and its space options such as PC-DARTS'
partial channels; ``--order`` still sets the order, and α warm-up is not modelled); GDAS
runs one sampled op per edge.

Each measurement runs in a fresh subprocess (so peak RSS is that run's own). With
``--compare-torch`` the PyTorch peer (``../shared/bench/torch_darts_reference.py`` or PATH)
runs at the same config, alternating with dnas ``--repeats`` times; medians are reported.
Prints one JSON object:
  {"dnas": {"compile_s", "step_ms_median", "peak_rss_mb", ...},
   "torch": {"first_step_s", "step_ms_median", "peak_rss_mb", ...},
   "speedup_vs_torch": torch_median / dnas_median}
With ``--json OUT`` the object is also written to OUT after every repeat (a run cut short
keeps the repeats it finished).

``peak_rss_mb`` is the steady-state high-water mark after warm-up for both (the peer's
``steady_peak_rss_mb``); dnas also reports ``peak_rss_incl_compile_mb``. On a GPU both
also report ``gpu_peak_mem_mb`` (JAX's ``peak_bytes_in_use``, torch's
``max_memory_allocated``), and the peer runs on CUDA (``--torch-device auto``: the device
kind dnas ran on).

``--order 2 --vs-first-order`` also compiles the first-order step in the same process and
times the two alternately (one step each per round, so both see the same machine phase):
``dnas`` then holds ``first_order_step_ms_median`` and ``second_over_first`` (the ratio of
the medians). Peak RSS of such a run includes both programs, and its ``compile_s`` is the
second-order step's after the first-order one was built (traces of the edge scans are
shared), so take cold compile times from a run without the flag.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dnas from this checkout, installed or not
from dnas.search.bilevel import HYPERGRADIENTS  # noqa: E402
from dnas.search.methods import METHODS  # noqa: E402

DEFAULT_TORCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "torch_darts_reference.py"


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(a: argparse.Namespace) -> dict:
    """Runs in the subprocess: build, compile, time; returns the measurements."""
    import jax

    if a.cache_dir:
        jax.config.update("jax_compilation_cache_dir", a.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    import jax.numpy as jnp
    from flax import nnx

    from dnas.space.ops.layers import depthwise_impl
    from dnas.search.bilevel import darts_alpha_optimizer, darts_weight_optimizer, make_search_step
    from dnas.space.spaces import DartsSearchNetwork, DartsSpace
    from dnas.search.state import build_jitted, init_search_state, release_free_memory, step_compiler_options

    t_start = time.perf_counter()
    method = METHODS[a.method]
    # The method's space options (PC-DARTS: partial channels, edge normalisation) shape the supernet.
    space = DartsSpace(layers=a.layers, **method.get("space_kwargs", {}))
    net = build_jitted(lambda r: DartsSearchNetwork(space, C=a.C, num_classes=10, impl=a.cell_impl, remat=not a.no_remat, rngs=r), jax.random.key(0))
    w_opt, a_opt = darts_weight_optimizer(), darts_alpha_optimizer()
    alpha_grad = method.get("alpha_grad", "relaxation")
    if alpha_grad == "reinforce":  # ENAS: the controller's reward baseline lives in the α optimizer state
        from dnas.search.plans import with_reward_baseline

        a_opt = with_reward_baseline(a_opt)
    graphdef, state = init_search_state(net, w_opt, a_opt, key=jax.random.key(0))
    from dnas.space.relax import make_relaxation

    from dnas.search.methods import make_arch_penalty

    relax = make_relaxation(method["relax"], method["relax_kwargs"], epochs=50)
    step = make_search_step(graphdef, w_opt, a_opt, order=a.order, hypergradient=a.hypergradient, fuse_passes=not a.no_fuse,
                            relax=relax, update_alpha=method["update_alpha"], alpha_grad=alpha_grad,
                            alpha_grad_kwargs={k: v for k, v in method.get("alpha_grad_kwargs", {}).items() if k != "aggregate"},
                            arch_penalty=make_arch_penalty(method.get("arch_penalty", ""), method.get("arch_penalty_kwargs")))
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    train = (jax.random.normal(k1, (a.batch, a.hw, a.hw, 3)), jax.random.randint(k2, (a.batch,), 0, 10))
    val = (jax.random.normal(k3, (a.batch, a.hw, a.hw, 3)), jax.random.randint(k4, (a.batch,), 0, 10))
    build_s = time.perf_counter() - t_start

    opts = step_compiler_options(a.opt_level)

    def compile_step(step, state):
        """(compiled step, trace + lowering seconds)."""
        start = time.perf_counter()
        with depthwise_impl(a.depthwise):
            lowered = jax.jit(step.__call__, donate_argnums=(0,), compiler_options=opts).lower(state, train, val)
        trace_s = time.perf_counter() - start
        return lowered.compile(), trace_s

    first = None
    if a.vs_first_order:
        if a.order != 2:
            raise SystemExit("--vs-first-order compares a second-order step with the first-order one: pass --order 2")
        first_state = jax.tree_util.tree_map(jnp.copy, state)  # the timed step donates its own
        first_step = make_search_step(graphdef, w_opt, a_opt, order=1, fuse_passes=not a.no_fuse)
        first = compile_step(first_step, first_state)[0]
    t0 = time.perf_counter()
    compiled, trace_s = compile_step(step, state)
    compile_s = time.perf_counter() - t0
    if not a.no_trim:
        release_free_memory()  # as dnas' loops do between compiling and the first step (compile_then_trim)
    t0 = time.perf_counter()
    state, m = compiled(state, train, val)
    jax.block_until_ready(state)
    first_step_s = time.perf_counter() - t0
    for _ in range(max(a.warmup - 1, 0)):
        state, m = compiled(state, train, val)
    jax.block_until_ready(state)
    if not a.no_trim:
        release_free_memory()  # and after the first step, as they do
    peak_incl_compile = _status_mb("VmHWM")
    _reset_hwm()
    if first is not None:
        for _ in range(a.warmup):
            first_state, _ = first(first_state, train, val)
        jax.block_until_ready(first_state)
    times, first_times = [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        state, m = compiled(state, train, val)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
        if first is not None:
            t0 = time.perf_counter()
            first_state, _ = first(first_state, train, val)
            jax.block_until_ready(first_state)
            first_times.append(time.perf_counter() - t0)
    versus = {}
    if first_times:
        versus = {
            "first_order_step_ms_median": 1e3 * statistics.median(first_times),
            "first_order_step_ms_min": 1e3 * min(first_times),
            "second_over_first": statistics.median(times) / statistics.median(first_times),
        }
    return {
        "framework": "dnas",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "depthwise": a.depthwise,
        "cell_impl": a.cell_impl,
        "remat": not a.no_remat,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": opts,
        "malloc_trim": not a.no_trim,
        "build_s": build_s,
        "trace_s": trace_s,
        "compile_s": compile_s,
        "first_step_s": first_step_s,
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times),
        "n_timed": len(times),
        "peak_rss_mb": _status_mb("VmHWM"),
        "peak_rss_incl_compile_mb": peak_incl_compile,
        **_program_memory(compiled),
        **_device_memory(jax),
        "final_train_loss": float(m["train_loss"]),
        **versus,
    }


def _program_memory(compiled) -> dict:
    """XLA's buffer assignment of the compiled step: ``xla_temp_mb`` is the working memory
    the program needs beyond its arguments and outputs (activations kept for the backward
    pass, gradients, scratch), the same on any backend and free of the process' baseline
    (runtime, compiler, Python) that ``peak_rss_mb`` includes."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {}
    if m is None:
        return {}
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {"xla_temp_mb": mb(m.temp_size_in_bytes), "xla_argument_mb": mb(m.argument_size_in_bytes), "xla_output_mb": mb(m.output_size_in_bytes)}


def _device_memory(jax) -> dict:
    """Peak bytes in use on the first accelerator (empty on CPU, whose stats are the RSS)."""
    if jax.default_backend() == "cpu":
        return {}
    stats = jax.local_devices()[0].memory_stats() or {}
    return {"gpu_peak_mem_mb": stats["peak_bytes_in_use"] / 2**20} if "peak_bytes_in_use" in stats else {}


def _cpu() -> dict:
    """The CPU's model name and wide-vector ISA (the same "2-core x86-64" has differed
    between sessions, and XLA and PyTorch use AVX-512 / AMX differently)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    return {"cpu_model": model, "cpu_isa": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_tile"))}


def _run_json(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark subprocess failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, float):
            out[k] = statistics.median(r[k] for r in runs)
    out["runs"] = len(runs)
    # Per-run values too: on a shared machine one slow phase can move a median, and the
    # spread is what tells a reader how far to trust it.
    for k in ("step_ms_median", "compile_s", "first_step_s", "second_over_first"):
        if k in runs[0]:
            out[f"{k}_per_run"] = [r[k] for r in runs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--method", default="darts", choices=METHODS.names(), help="a registered search method (dnas.search.methods)")
    ap.add_argument("--order", type=int, default=1, choices=(1, 2))
    ap.add_argument("--hypergradient", default="finite_difference", choices=HYPERGRADIENTS, help="order 2 only")
    ap.add_argument("--vs-first-order", action="store_true", help="order 2: also time the first-order step, alternating, in the same process")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs per framework")
    ap.add_argument("--compare-torch", nargs="?", const=str(DEFAULT_TORCH), default=None, metavar="PATH")
    ap.add_argument("--torch-device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the PyTorch peer runs (auto: cuda when dnas ran on a GPU)")
    ap.add_argument("--depthwise", default="auto", choices=("auto", "conv", "shift", "fused"), help="depthwise lowering")
    ap.add_argument("--no-remat", action="store_true", help="store scan residuals instead of recomputing")
    ap.add_argument("--cell-impl", default="scan", choices=("scan", "batch", "unrolled"), help="how cells run their edges")
    ap.add_argument("--no-fuse", action="store_true", help="run the step's passes one after the other (fuse_passes=False)")
    ap.add_argument("--no-trim", action="store_true", help="skip malloc_trim after compiling (dnas' loops trim)")
    ap.add_argument("--opt-level", type=int, default=None, help="CPU xla_backend_optimization_level (default: dnas' choice)")
    ap.add_argument("--cache-dir", default="", help="persistent compilation cache (default: none, cold compile)")
    ap.add_argument("--json", default="", help="also write the result here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return

    me = [sys.executable, os.path.abspath(__file__), "--worker", "--C", str(a.C), "--layers", str(a.layers), "--batch", str(a.batch),
          "--hw", str(a.hw), "--method", a.method, "--order", str(a.order), "--hypergradient", a.hypergradient, "--steps", str(a.steps), "--warmup", str(a.warmup)]
    if a.cache_dir:
        me += ["--cache-dir", a.cache_dir]
    me += ["--depthwise", a.depthwise, "--cell-impl", a.cell_impl] + (["--no-remat"] if a.no_remat else [])
    me += ["--opt-level", str(a.opt_level)] if a.opt_level is not None else []
    me += ["--no-trim"] if a.no_trim else []
    me += ["--no-fuse"] if a.no_fuse else []
    me += ["--vs-first-order"] if a.vs_first_order else []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    dnas_runs, torch_runs = [], []
    if a.compare_torch and not Path(a.compare_torch).is_file():
        raise SystemExit(f"PyTorch peer script not found at {a.compare_torch}; pass --compare-torch PATH")

    def summary() -> dict:
        result: dict = {
            "config": {"C": a.C, "layers": a.layers, "batch": a.batch, "hw": a.hw, "method": a.method, "order": a.order,
                       "hypergradient": a.hypergradient if a.order == 2 else None, "fuse_passes": not a.no_fuse},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d"), **_cpu()},
            "dnas": _median_of(dnas_runs),
        }
        if torch_runs:
            t = _median_of(torch_runs)
            t["peak_rss_mb"] = t.get("steady_peak_rss_mb")
            result["torch"] = t
            result["speedup_vs_torch"] = t["step_ms_median"] / result["dnas"]["step_ms_median"]
        return result

    for _ in range(a.repeats):
        dnas_runs.append(_run_json(me, env))
        if a.compare_torch:
            device = a.torch_device if a.torch_device != "auto" else ("cuda" if dnas_runs[-1]["backend"] == "gpu" else "cpu")
            torch_runs.append(_run_json([sys.executable, a.compare_torch, "--C", str(a.C), "--layers", str(a.layers), "--batch", str(a.batch),
                                         "--hw", str(a.hw), "--steps", str(a.steps), "--warmup", str(a.warmup + 1), "--device", device]))
        if a.json:  # after every repeat, so a run cut short keeps what it measured
            Path(a.json).write_text(json.dumps(summary(), indent=1) + "\n")
    print(json.dumps(summary(), indent=1))

if __name__ == "__main__":
    main()
