"""Multi-trial (discrete) search runs: a strategy, an estimator, an objective, a budget.

A run of kind ``"multitrial"`` repeats one search ``runs`` times with independent seeds:
ask -> evaluate -> tell, each query charged at the estimator's cost until the simulated
budget is spent. Over a pure estimator (a benchmark table) the runs are one jitted
program (:func:`make_search`: a ``while_loop`` over steps around a ``vmap`` over runs), in
chunks of ``runs_per_chunk`` each saved when done, so a killed run resumes
bit-identically: run ``r`` always uses ``fold_in(key(seed), r)`` and every chunk the same
padded program. Over a host-side estimator (real training) :func:`run_host` takes the same
steps one at a time and checkpoints after each.

Files in the run directory (all written to a temporary name and renamed):
``config.json``; ``chunks/runs_XXXXX.npz`` (finished chunks; ``run_XXXXX.partial.npz``
while a host-side run is under way); ``metrics.jsonl`` (one line per evaluated
architecture of the first ``log_runs`` runs: vector, readable form, metrics, fitness,
cumulative cost); ``summary.json``; for several objectives ``pareto.json`` and
``pareto.png`` (:mod:`dnas.report.multitrial`); a ``train`` estimator's runs in
``trained/``.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator
from dnas.search.objectives import OBJECTIVES, Objective
from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy


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
    from dnas.space.base import SPACES

    SPACES[config.space]  # unknown names list the known ones
    STRATEGIES[config.strategy], ESTIMATORS[config.estimator], OBJECTIVES[config.objective]  # unknown names list the known ones
    if not float(config.budget_s) > 0:
        raise DnasError(f"config.budget_s must be positive (simulated seconds), got {config.budget_s}")
    for k, lo in (("runs", 1), ("runs_per_chunk", 1), ("max_evals", 0), ("log_runs", 0)):
        if not isinstance(config[k], int) or config[k] < lo:
            raise DnasError(f"config.{k} must be an integer >= {lo}, got {config[k]!r}")
    return config


def _make(kind: str, name: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``; an argument it does not take is a one-line DnasError."""
    import inspect

    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params]
        if bad:
            known = [p for p in params if p != "space"]
            raise DnasError(f"{kind} {name!r} takes no argument {bad[0]!r} (config.{kind}_kwargs); it accepts: {', '.join(known)}")
    return factory(*args, **kwargs)


class Built(NamedTuple):
    """The parts a config names: space, strategy, estimator, objective, and ``m``
    (objectives per architecture; 0 = one scalar fitness)."""

    space: SearchSpace
    strategy: Strategy
    estimator: Estimator
    objective: Objective
    m: int


def build(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> Built:
    """Instantiates the registry entries a (checked) config names; a ``train`` estimator
    without its own ``workdir`` trains under ``<workdir>/trained``."""
    from dnas.space.base import SPACES

    space = SPACES[config.space](**config.space_kwargs.to_dict())
    est_kw = config.estimator_kwargs.to_dict()
    if config.estimator == "nb201_table":
        est_kw.setdefault("table", config.table)
    if config.estimator == "train" and not est_kw.get("workdir") and workdir is not None:
        est_kw["workdir"] = str(Path(workdir) / "trained")
    estimator = _make("estimator", config.estimator, ESTIMATORS[config.estimator], space, **est_kw)
    objective = _make("objective", config.objective, OBJECTIVES[config.objective], **config.objective_kwargs.to_dict())
    fake = {k: jax.ShapeDtypeStruct((2,), jnp.float32) for k in estimator.metrics}
    shape = jax.eval_shape(objective, fake).shape
    m = shape[1] if len(shape) == 2 else 0
    for k in (config.report_metric, config.valid_metric):
        if k not in estimator.metrics:
            raise DnasError(f"metric {k!r} is not one the estimator gives: {', '.join(estimator.metrics)}")
    st_kw = config.strategy_kwargs.to_dict()
    if config.strategy == "nsga2":
        st_kw.setdefault("num_objectives", max(m, 1))
    elif m:
        raise DnasError(f"objective {config.objective!r} gives {m} objectives; only nsga2 takes several")
    return Built(space, _make("strategy", config.strategy, STRATEGIES[config.strategy], space, **st_kw), estimator, objective, m)


class History(NamedTuple):
    """One run's evaluations: ``archs int32[E, n]``, ``fitness f32[E] | f32[E, m]``,
    ``cost f32[E]``; the first ``count`` entries were paid for within the budget."""

    archs: jax.Array
    fitness: jax.Array
    cost: jax.Array
    count: jax.Array


def make_search(b: Built, budget: float, max_evals: int) -> tuple[Callable[[jax.Array], History], int]:
    """``(search(keys) -> History, E)``: budgeted searches over a pure estimator, one per key.

    ``keys`` is ``key[R]``; the result has a leading run axis (``archs int32[R, E, n]``).
    Each step asks every run for P architectures, evaluates them and charges their costs
    in order; the first one that would exceed ``budget`` ends that run unpaid (as
    NAS-Bench-201's scripts stop). The step loop sits outside the ``vmap`` over runs, so
    its counter stays a scalar: history rows are written in place at one offset for all
    runs, instead of a batched while-loop selecting every buffer each step (3-5x slower).
    A finished run keeps stepping with the others, but nothing it does is counted.
    """
    state0 = jax.eval_shape(b.strategy.init, jax.random.key(0))
    P, n = jax.eval_shape(b.strategy.ask, state0, jax.random.key(0))[0].shape
    max_steps = math.ceil((max_evals or budget / max(b.estimator.min_cost, 1e-9) + 1) / P)
    E = max_steps * P

    def one_step(state, key, step):
        k_ask, k_eval = jax.random.split(jax.random.fold_in(key, step))
        archs, state = b.strategy.ask(state, k_ask)
        metrics, cost = b.estimator.evaluate(archs, k_eval)
        fit = b.objective(metrics).astype(jnp.float32)
        return b.strategy.tell(state, archs, fit), archs.astype(jnp.int32), fit, cost.astype(jnp.float32)

    def search(keys: jax.Array) -> History:
        R = keys.shape[0]
        k_init, k_loop = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        fshape = (R, E, b.m) if b.m else (R, E)
        hist = History(jnp.zeros((R, E, n), jnp.int32), jnp.zeros(fshape), jnp.zeros((R, E)), jnp.zeros((R,), jnp.int32))

        def body(c):
            step, state, h, spent, done = c
            state, archs, fit, cost = jax.vmap(one_step, in_axes=(0, 0, None))(state, k_loop, step)
            paid = (spent[:, None] + jnp.cumsum(cost, axis=1) <= budget) & ~done[:, None]
            if max_evals:
                paid &= h.count[:, None] + jnp.arange(P)[None] < max_evals
            paid = jnp.cumprod(paid, axis=1).astype(bool)  # the first unpaid one ends the run
            at = step * P
            h = History(
                jax.lax.dynamic_update_slice(h.archs, archs, (0, at, 0)),
                jax.lax.dynamic_update_slice(h.fitness, fit, (0, at) + (0,) * (fit.ndim - 2)),
                jax.lax.dynamic_update_slice(h.cost, cost, (0, at)),
                h.count + paid.sum(1, dtype=jnp.int32),
            )
            return step + 1, state, h, spent + jnp.where(paid, cost, 0.0).sum(1), done | ~paid.all(1)

        def cond(c):
            step, _, _, _, done = c
            return ~jnp.all(done) & (step < max_steps)

        init = (jnp.zeros((), jnp.int32), jax.vmap(b.strategy.init)(k_init), hist, jnp.zeros((R,)), jnp.zeros((R,), bool))
        return jax.lax.while_loop(cond, body, init)[2]

    return search, E


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling, then renames it over ``path`` (a crash
    leaves the old file or the new one, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_chunk(path: Path, h: History, seconds: float, metrics: dict[str, np.ndarray] | None = None, **extra: Any) -> None:
    buf = io.BytesIO()
    arrays = {f"metric:{k}": v for k, v in (metrics or {}).items()}
    np.savez(buf, archs=np.asarray(h.archs), fitness=np.asarray(h.fitness), cost=np.asarray(h.cost), count=np.asarray(h.count), seconds=seconds, **arrays, **extra)
    atomic_write(path, buf.getvalue())


def _load_chunk(path: Path) -> tuple[History, dict[str, np.ndarray], float]:
    with np.load(path) as z:
        metrics = {k[len("metric:") :]: z[k] for k in z.files if k.startswith("metric:")}
        return History(z["archs"], z["fitness"], z["cost"], z["count"]), metrics, float(z["seconds"])


def _prepare(workdir: Path, config: ml_collections.ConfigDict) -> None:
    text = json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n"
    saved = workdir / "config.json"
    if saved.exists():
        if saved.read_text() != text:
            raise DnasError(f"{str(workdir)!r} holds a run with a different config; resume it with the same config or use a new --workdir")
        return
    (workdir / "chunks").mkdir(parents=True, exist_ok=True)
    atomic_write(saved, text.encode())


def run_multitrial(config: ml_collections.ConfigDict, workdir: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) ``config.runs`` searches; returns the summary (also ``summary.json``).

    Args:
      config: a config from :func:`multitrial_defaults` (checked here).
      workdir: the run directory; finished chunks found there are not run again.
      log: where progress lines go.
    Returns:
      ``{"runs", "test_acc_mean", "test_acc_std", "valid_acc_mean", "valid_acc_std",
      "evals_mean", "wall_s", ...}``: the report/valid metric of each run's chosen
      architecture (its best fitness; the first objective for several).
    """
    t0 = time.perf_counter()
    check_multitrial(config)
    from dnas.run.loop import open_run

    workdir = Path(workdir)
    b = build(config, workdir)  # before touching the workdir: a bad table or name fails cleanly
    _, lock = open_run(workdir, lambda: _prepare(workdir, config))
    try:
        return _run_built(b, config, workdir, log, t0)
    finally:
        lock.release()


def _run_built(b: Built, config: ml_collections.ConfigDict, workdir: Path, log: Callable[[str], None], t0: float) -> dict[str, Any]:
    # A host-side estimator (real training) runs its seeds one by one, each saved when done.
    chunk = min(config.runs_per_chunk, config.runs) if b.estimator.pure else 1
    base = jax.random.key(config.seed)
    hists, stored, search_s, compiled, compile_s = [], [], 0.0, None, 0.0
    for start in range(0, config.runs, chunk):
        path = workdir / "chunks" / f"runs_{start:05d}.npz"
        if not path.exists() and not b.estimator.pure:
            ts = time.perf_counter()
            h, m = run_host(b, config, workdir, start, log)
            secs = time.perf_counter() - ts
            _save_chunk(path, h, secs, m)
            (workdir / "chunks" / f"run_{start:05d}.partial.npz").unlink(missing_ok=True)
            log(f"runs {start + 1}/{config.runs}: {int(h.count[0])} architectures trained in {secs:.1f} s")
        elif not path.exists():
            # Every chunk runs the full padded width: one program, and a run's result
            # never depends on which chunk it fell in.
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + chunk))
            if compiled is None:
                tc = time.perf_counter()
                search, _ = make_search(b, float(config.budget_s), config.max_evals)
                compiled = jax.jit(search).lower(keys).compile()
                compile_s = time.perf_counter() - tc
            ts = time.perf_counter()
            h = jax.tree_util.tree_map(np.asarray, compiled(keys))
            secs = time.perf_counter() - ts
            _save_chunk(path, h, secs)
            log(f"runs {min(start + chunk, config.runs)}/{config.runs}: chunk {secs:.2f} s")
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
    from dnas.report.multitrial import summarize

    summary = summarize(b, config, h, metrics, workdir)
    # wall_s: this call (a resumed run counts only its own part); search_s: every chunk's run time.
    summary.update(wall_s=time.perf_counter() - t0, compile_s=compile_s, search_s=search_s)
    atomic_write(workdir / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return summary


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
    P, n = jax.eval_shape(b.strategy.ask, state, k_init)[0].shape
    max_steps = math.ceil((max_evals or budget / max(b.estimator.min_cost, 1e-9) + 1) / P)
    E = max_steps * P
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
        paid = spent + np.cumsum(cost) <= budget
        if max_evals:
            paid &= count + np.arange(P) < max_evals
        paid = np.cumprod(paid).astype(bool)
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
        log(f"run {r}: step {step}, {count} architectures, {spent:.0f}/{budget:.0f} s")
    h = History(archs_h[None], fit_h[None], cost_h[None], np.array([count], np.int32))
    return h, {k: v[None] for k, v in met_h.items()}


def metrics_of(b: Built, archs: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of a built run's estimator for ``archs int32[K, n]``: ``{name: f32[K]}``.

    Re-evaluates rather than reads the run's chunks, which store architectures only; meant
    for pure estimators (benchmark tables, analytic costs), whose answer is the record.
    """
    metrics, _ = jax.jit(b.estimator.evaluate)(jnp.asarray(archs), jax.random.key(0))
    return {k: np.asarray(v) for k, v in metrics.items()}
