"""Multi-trial (discrete) search runs: a strategy, an estimator, an objective, a budget.

A run of kind ``"multitrial"`` repeats one search ``runs`` times with independent seeds:
ask -> evaluate -> tell, each query charged at the estimator's cost until the simulated
budget is spent. Over a pure estimator (a benchmark table) the runs are one jitted
program (:func:`make_search`: a ``while_loop`` over steps around a ``vmap`` over runs), in
chunks of ``runs_per_chunk`` each saved when done, so a killed run resumes
bit-identically: run ``r`` always uses ``fold_in(key(seed), r)`` and every chunk the same
padded program. Over a host-side estimator (real training) :func:`run_host` takes the same
steps one at a time and checkpoints after each.

A chunk's runs are split over every device (:class:`dnas.core.sharding.RowSharded`), of
every process when launched as several (``dnas launch``): each device runs its share of
the chunk's seeds with the same per-device program, so ``summary.json`` is the same on 1
device, N devices and N processes. Process 0 alone locks the directory and writes its
files; which chunks are done is its reading, shared with the others.

Files in the run directory (all written to a temporary name and renamed):
``config.json``; ``chunks/runs_XXXXX.npz`` (finished chunks; ``run_XXXXX.partial.npz``
while a host-side run is under way); ``metrics.jsonl`` (one line per evaluated
architecture of the first ``log_runs`` runs: vector, readable form, metrics, fitness,
cumulative cost); ``summary.json``; for several objectives ``pareto.json`` and
``pareto.png`` (:mod:`dnas.run.summary`); a ``train`` estimator's runs in
``trained/``.
"""

from __future__ import annotations

import difflib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import atomic_write
from dnas.core.sharding import RowSharded
from dnas.estimate import ESTIMATORS
from dnas.run.config import RUN_KINDS, RunKind
from dnas.search.objectives import OBJECTIVES
from dnas.search.multitrial import Built, History, budget_plan, build, make_search, metrics_of, paid_mask
from dnas.search.strategies import STRATEGIES
from dnas.run.summary import summarize
from dnas.run.driver import Interrupted, SignalFlag, run_files, run_in_workdir
from dnas.run.parallel import from_primary, is_primary, make_mesh
from dnas.space.base import SPACES


def multitrial_defaults() -> ml_collections.ConfigDict:
    """Every key a multi-trial config may have, at NAS-Bench-201's REA setting (Dong &
    Yang, ICLR 2020: 12,000 simulated seconds, population 10, sample 3, 500 runs)."""
    c = ml_collections.ConfigDict()
    c.kind = "multitrial"
    c.imports = []  # Python files imported first (registrations); load_config adds the config file
    c.space = "nb201"
    c.space_kwargs = ml_collections.ConfigDict()
    c.strategy = "rea"
    c.strategy_kwargs = ml_collections.ConfigDict({"population": 10, "sample_size": 3})
    c.estimator = "nb201_table"
    c.estimator_kwargs = ml_collections.ConfigDict()
    c.table = ""  # nb201_table.csv; '' = $DNAS_NB201_TABLE
    c.objective = "accuracy"
    c.objective_kwargs = ml_collections.ConfigDict({"metric": "cifar10_val_12ep"})
    c.report_metric = "cifar10_test_200ep"  # the final number of the chosen architecture
    c.valid_metric = "cifar10_val_12ep"
    c.budget_s = 12000.0  # simulated seconds of training, charged per query
    c.max_evals = 0  # 0 = as many as the budget can pay at the estimator's cheapest cost
    c.runs = 500
    c.runs_per_chunk = 100  # runs per compiled call; each finished chunk is saved
    c.log_runs = 1  # runs whose every evaluation goes to metrics.jsonl
    c.hv_reference = []  # several objectives: the hypervolume's worst point, one value per objective (maximised); [] = worst seen
    c.hv_ideal = []  # and its best point (normalises each objective to [0, 1]); [] = best seen
    c.seed = 0
    return c


def check_multitrial(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys and values of a multi-trial config; raises one-line DnasErrors."""
    schema = multitrial_defaults()
    for k in config.keys():
        if k not in schema:
            close = difflib.get_close_matches(k, list(schema.keys()), n=1)
            raise DnasError(f"unknown config key {k!r}" + (f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(schema.keys())}"))
    for k in schema.keys():
        if k not in config:
            raise DnasError(f"config lacks key {k!r}; start from dnas.run.multitrial.multitrial_defaults()")
    if config.kind != "multitrial":
        raise DnasError(f"config.kind must be 'multitrial' here, got {config.kind!r}")

    SPACES[config.space]  # unknown names list the known ones
    STRATEGIES[config.strategy], ESTIMATORS[config.estimator], OBJECTIVES[config.objective]  # unknown names list the known ones
    if not float(config.budget_s) > 0:
        raise DnasError(f"config.budget_s must be positive (simulated seconds), got {config.budget_s}")
    for k, lo in (("runs", 1), ("runs_per_chunk", 1), ("max_evals", 0), ("log_runs", 0)):
        if not isinstance(config[k], int) or config[k] < lo:
            raise DnasError(f"config.{k} must be an integer >= {lo}, got {config[k]!r}")
    return config














def _save_chunk(path: Path, h: History, seconds: float, metrics: dict[str, np.ndarray] | None = None, **extra: Any) -> None:
    buf = io.BytesIO()
    arrays = {f"metric:{k}": v for k, v in (metrics or {}).items()}
    np.savez(buf, archs=np.asarray(h.archs), fitness=np.asarray(h.fitness), cost=np.asarray(h.cost), count=np.asarray(h.count), seconds=seconds, **arrays, **extra)
    atomic_write(path, buf.getvalue())


def _load_chunk(path: Path) -> tuple[History, dict[str, np.ndarray], float]:
    with np.load(path) as z:
        metrics = {k[len("metric:") :]: z[k] for k in z.files if k.startswith("metric:")}
        return History(z["archs"], z["fitness"], z["cost"], z["count"]), metrics, float(z["seconds"])


def _prepare(workdir: Path, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    text = json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n"
    saved = workdir / "config.json"
    if saved.exists():
        if saved.read_text() != text:
            raise DnasError(f"{str(workdir)!r} holds a run with a different config; resume it with the same config or use a new --workdir")
        return config
    found = run_files(workdir)
    if found:  # a run whose config.json is gone: never start another over its files
        raise DnasError(f"{str(workdir)!r} holds a run's files ({', '.join(found)}) but no config.json; put its config.json back "
                        "to resume it, or use a new --workdir")
    (workdir / "chunks").mkdir(parents=True, exist_ok=True)
    atomic_write(saved, text.encode())
    return config


def run_multitrial(config: ml_collections.ConfigDict, workdir: str | Path, log: Callable[[str], None] = print, devices: int = 0) -> dict[str, Any]:
    """Runs (or resumes) ``config.runs`` searches; returns the summary (also ``summary.json``).

    Args:
      config: a config from :func:`multitrial_defaults` (checked here).
      workdir: the run directory; finished chunks found there are not run again.
      log: where progress lines go.
      devices: devices that split each chunk's runs (0: all, of every process); the
        results do not depend on it.
    Returns:
      ``{"runs", "test_acc_mean", "test_acc_std", "valid_acc_mean", "valid_acc_std",
      "evals_mean", "wall_s", ...}``: the report/valid metric of each run's chosen
      architecture (its best fitness; the first objective for several).
    """
    t0 = time.perf_counter()
    check_multitrial(config)
    workdir = Path(workdir)
    b = build(config, workdir)  # before touching the workdir: a bad table or name fails cleanly
    if jax.process_count() > 1 and not b.estimator.pure:
        raise DnasError(f"estimator {config.estimator!r} runs on the host, one architecture after another: a multi-trial run over it "
                        "runs in one process (start it without dnas launch); table and other pure estimators split their runs over processes")
    # Finished chunks stay whatever fails later: no clean-up of a new run's files.
    return run_in_workdir(config, workdir, lambda c, w, lg, stop: _run_built(b, config, w, lg, t0, stop, devices), log=log,
                          prepare=lambda w, c: _prepare(w, c), clean_early_failure=False, multiprocess=True)


def _stop_if_signalled(stop: SignalFlag | None) -> None:
    # Between chunks: every finished one is on disk (the command line's policy ends the
    # process at once instead, which is as safe: each file is written whole or not at all).
    if stop is not None and stop.signal is not None:
        raise Interrupted(f"stopped by signal {stop.signal}; every finished chunk is saved")


def _run_built(b: Built, config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], t0: float,
               stop: SignalFlag | None = None, devices: int = 0) -> dict[str, Any]:
    # A host-side estimator (real training) runs its seeds one by one, each saved when done.
    chunk = min(config.runs_per_chunk, config.runs) if b.estimator.pure else 1
    base = jax.random.key(config.seed)
    starts = list(range(0, config.runs, chunk))
    paths = [workdir / "chunks" / f"runs_{start:05d}.npz" for start in starts]
    done = from_primary(np.array([p.exists() for p in paths], bool))  # process 0 reads the directory for all
    writes = is_primary()
    hists, stored, search_s, sharded, compile_s = [], [], 0.0, None, 0.0
    if stop is not None:  # a signal ends the process at once; finished chunks are on disk, written whole
        stop.saved = "every finished chunk of runs is saved"
    for start, path, was_done in zip(starts, paths, done):
        _stop_if_signalled(stop)
        if not was_done and not b.estimator.pure:
            ts = time.perf_counter()
            h, m = run_host(b, config, workdir, start, log)
            secs = time.perf_counter() - ts
            _save_chunk(path, h, secs, m)
            (workdir / "chunks" / f"run_{start:05d}.partial.npz").unlink(missing_ok=True)
            log(f"runs {start + 1}/{config.runs}: {int(h.count[0])} architectures trained in {secs:.1f} s")
        elif not was_done:
            if sharded is None:
                sharded = _sharded_search(b, config, chunk, devices)
                log(f"compiling the {config.strategy} search ({chunk} runs per call over {sharded.mesh.devices.size} device(s), once)...")
                tc = time.perf_counter()
                sharded.compile(_key_rows(base, start, sharded.width))
                compile_s = time.perf_counter() - tc
                log(f"compiled in {compile_s:.1f} s")
            ts = time.perf_counter()
            # Every chunk runs the full padded width (one program; a run's result never
            # depends on the chunk it fell in), each device the same share of it.
            h = History(*sharded(_key_rows(base, start, sharded.width)))
            h = History(*(x[:chunk] for x in h))
            secs = time.perf_counter() - ts
            if writes:
                _save_chunk(path, h, secs)
            log(f"runs {min(start + chunk, config.runs)}/{config.runs}: chunk {secs:.2f} s")
            hists.append(h)
            stored.append({})
            search_s += secs
            continue
        h, m, secs = _load_chunk(path)
        hists.append(h)
        stored.append(m)
        search_s += secs
    h = History(*(np.concatenate(x)[: config.runs] for x in zip(*hists)))
    if b.estimator.pure:  # one lookup of every evaluation: the table is the record
        R, E, n = h.archs.shape
        metrics = {k: v.reshape(R, E) for k, v in metrics_of(b, h.archs.reshape(R * E, n)).items()}
    else:
        metrics = {k: np.concatenate([m[k] for m in stored])[: config.runs] for k in b.estimator.metrics}
    summary = summarize(b, config, h, metrics, workdir, write=writes)
    # wall_s: this call (a resumed run counts only its own part); search_s: every chunk's run time.
    summary.update(wall_s=time.perf_counter() - t0, compile_s=compile_s, search_s=search_s)
    if writes:
        atomic_write(workdir / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return summary


def _key_rows(base: jax.Array, start: int, width: int) -> np.ndarray:
    """The key data of runs ``start .. start + width``: run ``r`` always has ``fold_in(base, r)``."""
    return np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + width))))


def _sharded_search(b: Built, config: ml_collections.ConfigDict, chunk: int, devices: int = 0) -> RowSharded:
    """The budgeted search over a pure estimator, a chunk's runs split over ``devices`` (0: all)."""
    search, _ = make_search(b, float(config.budget_s), config.max_evals)
    mesh = make_mesh(devices)
    per_device = -(-chunk // mesh.devices.size)
    return RowSharded(lambda key_data: tuple(search(jax.random.wrap_key_data(key_data))), mesh, per_device)


def run_host(b: Built, config: ml_collections.ConfigDict, workdir: Path, r: int, log: Callable[[str], None] = print) -> tuple[History, dict[str, np.ndarray]]:
    """Run ``r`` of a search over a host-side estimator (e.g. real training), step by step.

    The same steps, keys and budget rule as :func:`make_search`, so over a pure estimator
    it reproduces that run exactly; after every step the strategy state and history go to
    ``chunks/run_XXXXX.partial.npz``, from which a killed run continues.
    Returns the run's :class:`History` (leading axis 1) and its metrics ``[1, E]``.
    """
    budget, max_evals = float(config.budget_s), config.max_evals
    k_init, k_loop = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), r))
    state = b.strategy.init(k_init)
    P, n, max_steps, E = budget_plan(b, budget, max_evals)
    archs_h, cost_h = np.zeros((E, n), np.int32), np.zeros((E,), np.float32)
    fit_h = np.zeros((E, b.m) if b.m else (E,), np.float32)
    met_h = {k: np.zeros((E,), np.float32) for k in b.estimator.metrics}
    step, spent, count, done = 0, np.float32(0.0), 0, False  # float32 sums: the budget rule as make_search's
    partial = workdir / "chunks" / f"run_{r:05d}.partial.npz"
    leaves, treedef = jax.tree_util.tree_flatten(state)
    if partial.exists():
        with np.load(partial) as z:
            state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(z[f"leaf{i}"]) for i in range(len(leaves))])
            archs_h, cost_h, fit_h = z["archs"][0], z["cost"][0], z["fitness"][0]
            met_h = {k: z[f"metric:{k}"][0] for k in b.estimator.metrics}
            step, spent, count, done = int(z["step"]), np.float32(z["spent"]), int(z["count"][0]), bool(z["done"])
        log(f"run {r}: resuming at step {step}")
    ask, tell = jax.jit(b.strategy.ask), jax.jit(b.strategy.tell)
    while not done and step < max_steps:
        k_ask, k_eval = jax.random.split(jax.random.fold_in(k_loop, step))
        archs, state = ask(state, k_ask)
        metrics, cost = b.estimator.evaluate(np.asarray(archs), k_eval)
        fit = np.asarray(b.objective({k: jnp.asarray(v) for k, v in metrics.items()}), np.float32)
        cost = np.asarray(cost, np.float32)
        paid = paid_mask(np, spent, cost, count, budget, max_evals)
        at = slice(step * P, step * P + P)
        archs_h[at], fit_h[at], cost_h[at] = np.asarray(archs), fit, cost
        for k in met_h:
            met_h[k][at] = np.asarray(metrics[k])
        count, spent, done = count + int(paid.sum()), np.float32(spent + np.where(paid, cost, np.float32(0)).sum(dtype=np.float32)), not paid.all()
        state = tell(state, archs, jnp.asarray(fit))
        step += 1
        h = History(archs_h[None], fit_h[None], cost_h[None], np.array([count], np.int32))
        state_leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state))}
        _save_chunk(partial, h, 0.0, {k: v[None] for k, v in met_h.items()}, step=step, spent=spent, done=done, **state_leaves)
        # max_evals is the cap users set to bound queries; a huge budget is "no budget"
        archs_done = f"{count}/{max_evals}" if max_evals else f"{count}"
        log(f"run {r}: step {step}, {archs_done} architectures, {spent:.0f}" + (f"/{budget:.0f} s" if budget < 1e8 else " s charged"))
    h = History(archs_h[None], fit_h[None], cost_h[None], np.array([count], np.int32))
    return h, {k: v[None] for k, v in met_h.items()}




RUN_KINDS.add("multitrial", RunKind(multitrial_defaults, check_multitrial, lambda config, workdir, log: run_multitrial(config, workdir, log=log), "search"))
