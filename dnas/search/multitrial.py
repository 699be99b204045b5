"""Discrete search under a budget: the parts a multi-trial config names, built, and the
one budgeted search loop over them.

A strategy asks for architectures, an estimator scores them, an objective turns metrics
into fitness, and every query is charged at the estimator's cost until the budget is spent
(NAS-Bench-201's rule: the first query that would exceed it ends the run unpaid).
:func:`make_search` runs many seeds of that loop as one jitted program over a pure
estimator; :func:`budget_plan` and :func:`paid_mask` are the same rule for a host-side
loop (:func:`dnas.run.multitrial.run_host`), so both charge identically.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS, Estimator, for_space
from dnas.estimate.nb201_table import load_table, table_path
from dnas.search.objectives import OBJECTIVES, Objective
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.space.base import SearchSpace, build_space
from dnas.space.spaces import NB201Space


def _make(kind: str, name: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``; an argument it does not take is a one-line DnasError."""
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
    space = build_space(config.space, None, config.space_kwargs.to_dict())
    est_kw = config.estimator_kwargs.to_dict()
    if config.estimator == "nb201_table":
        est_kw.setdefault("table", config.table)
    if config.estimator == "train" and not est_kw.get("workdir") and workdir is not None:
        est_kw["workdir"] = str(Path(workdir) / "trained")
    estimator = _make("estimator", config.estimator, for_space(ESTIMATORS[config.estimator], space), space, **est_kw)
    objective = _make("objective", config.objective, OBJECTIVES[config.objective], **config.objective_kwargs.to_dict())
    fake = {k: jax.ShapeDtypeStruct((2,), jnp.float32) for k in estimator.metrics}
    shape = jax.eval_shape(objective, fake).shape
    m = shape[1] if len(shape) == 2 else 0
    for k in (config.report_metric, config.valid_metric):
        if k in estimator.metrics or (k == config.report_metric and reported_from_table(space, config)):
            continue
        hint = " (or, on NB201, set config.table: the report metric is then read from it for the chosen cells only)" if k == config.report_metric else ""
        raise DnasError(f"metric {k!r} is not one the estimator gives: {', '.join(estimator.metrics)}{hint}")
    st_kw = config.strategy_kwargs.to_dict()
    if "num_objectives" in inspect.signature(STRATEGIES[config.strategy]).parameters:
        st_kw.setdefault("num_objectives", max(m, 1))
    elif m:
        multi = [n for n in STRATEGIES if "num_objectives" in inspect.signature(STRATEGIES[n]).parameters]
        raise DnasError(f"objective {config.objective!r} gives {m} objectives; only {', '.join(multi)} take several")
    return Built(space, _make("strategy", config.strategy, STRATEGIES[config.strategy], space, **st_kw), estimator, objective, m)


def reported_from_table(space: SearchSpace, config: ml_collections.ConfigDict) -> bool:
    """Whether the chosen cells' ``report_metric`` comes from the NAS-Bench-201 table.

    A search whose estimator is not the table (one-shot, zero-cost, combined...) still
    reports the benchmark accuracy of the cell each run chooses, as NAS-Bench-201's
    weight-sharing baselines do; the table is read after the search and only for the chosen
    cells, so no strategy ever sees it. True when ``config.estimator`` is not the table, the
    space is the benchmark's cell and ``config.table`` (or ``$DNAS_NB201_TABLE``) names a
    table with that column; a bad table or column is one DnasError line.
    """
    if config.estimator == "nb201_table" or not isinstance(space, NB201Space) or tuple(space.ops) != tuple(NB201Space().ops):
        return False
    try:
        path = table_path(config.table)
    except DnasError:
        return False
    names = load_table(path, os.path.getmtime(path))[0]
    if config.report_metric not in names:
        raise DnasError(f"config.report_metric {config.report_metric!r} is neither an estimator metric nor a table column; columns: {', '.join(names)}")
    return True


class History(NamedTuple):
    """One run's evaluations: ``archs int32[E, n]``, ``fitness f32[E] | f32[E, m]``,
    ``cost f32[E]``; the first ``count`` entries were paid for within the budget."""

    archs: jax.Array
    fitness: jax.Array
    cost: jax.Array
    count: jax.Array


def budget_plan(b: Built, budget: float, max_evals: int) -> tuple[int, int, int, int]:
    """``(P, n, max_steps, E)``: architectures per ask, vector length, the most steps a run
    can take within ``budget`` (or ``max_evals``) at the estimator's least cost, and the
    history length ``max_steps * P``."""
    state0 = jax.eval_shape(b.strategy.init, jax.random.key(0))
    P, n = jax.eval_shape(b.strategy.ask, state0, jax.random.key(0))[0].shape
    max_steps = math.ceil((max_evals or budget / max(b.estimator.min_cost, 1e-9) + 1) / P)
    return P, n, max_steps, max_steps * P


def paid_mask(xp: Any, spent: Any, cost: Any, count: Any, budget: float, max_evals: int) -> Any:
    """Which of one step's ``P`` queries are paid for: in order, while the budget (and the
    evaluation cap) last; the first unpaid one ends the run. ``xp`` is ``jnp`` or ``np``;
    ``spent``/``count`` are per run (``[R]``) or scalars, ``cost`` is ``[..., P]``."""
    P = cost.shape[-1]
    paid = xp.expand_dims(spent, -1) + xp.cumsum(cost, axis=-1) <= budget
    if max_evals:
        paid = paid & (xp.expand_dims(count, -1) + xp.arange(P) < max_evals)
    return xp.cumprod(paid, axis=-1).astype(bool)


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
    P, n, max_steps, E = budget_plan(b, budget, max_evals)

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
            paid = paid_mask(jnp, spent, cost, h.count, budget, max_evals) & ~done[:, None]
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


def metrics_of(b: Built, archs: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of a built run's estimator for ``archs int32[K, n]``: ``{name: f32[K]}``.

    Re-evaluates rather than reads the run's chunks, which store architectures only; meant
    for pure estimators (benchmark tables, analytic costs), whose answer is the record.
    """
    metrics, _ = jax.jit(b.estimator.evaluate)(jnp.asarray(archs), jax.random.key(0))
    return {k: np.asarray(v) for k, v in metrics.items()}
