"""What a multi-trial run writes once its searches are done: ``summary.json``'s numbers,
``metrics.jsonl`` (every evaluation of the first ``log_runs`` runs) and, for several
objectives, the Pareto front of run 0 (``pareto.json``, ``pareto.png``; Deb et al. 2002's
non-dominated set)."""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dnas.core.io import atomic_write
from dnas.core.stats import hypervolume, pareto_mask
from dnas.estimate.nb201_table import table_path, table_values
from dnas.search.multitrial import Built, History
from dnas.space.base import JointSpace


def summarize(b: Built, config: ml_collections.ConfigDict, h: History, M: dict[str, np.ndarray], workdir: Path, write: bool = True) -> dict[str, Any]:
    """Summary of the runs; ``M[name]`` is every evaluation's metric, ``[R, E]``.

    ``write``: also write ``metrics.jsonl`` (and ``pareto.json``/``pareto.png``) into
    ``workdir``; False for every process of a multi-process run but the first.
    """
    R = h.archs.shape[0]
    first = h.fitness[..., 0] if b.m else h.fitness
    score = np.where(np.arange(h.archs.shape[1])[None] < h.count[:, None], first, -np.inf)
    best = np.argmax(score, axis=1)
    chosen = h.archs[np.arange(R), best]
    valid = M[config.valid_metric][np.arange(R), best]
    from_table = config.report_metric not in M  # checked by build: read for the chosen cells only
    test = table_values(table_path(config.table), chosen, config.report_metric) if from_table else M[config.report_metric][np.arange(R), best]
    strs = [b.estimator.describe(a) for a in chosen]
    (top, n_top), = collections.Counter(strs).most_common(1)  # ties: the earliest run's choice, so reruns agree
    summary = {
        "runs": int(R),
        "strategy": config.strategy,
        "test_metric": config.report_metric,
        "test_acc_mean": float(test.mean()),
        "test_acc_std": float(test.std()),
        "test_from_table": bool(from_table),
        "valid_metric": config.valid_metric,
        "valid_acc_mean": float(valid.mean()),
        "valid_acc_std": float(valid.std()),
        "evals_mean": float(h.count.mean()),
        "budget_s": float(config.budget_s),
        "most_chosen": top,
        "most_chosen_runs": int(n_top),
    }
    if write:
        _write_jsonl(b, config, h, M, workdir)
    if b.m:
        pts = _write_pareto(b, config, h, M, workdir, write)
        hv, ref, ideal = hypervolumes(config, h)
        summary.update({"pareto_size": len(pts), "hypervolume": float(hv.mean()), "hypervolume_mean": float(hv.mean()),
                        "hypervolume_std": float(hv.std()), "hypervolume_runs": hv.tolist(), "hv_reference": ref, "hv_ideal": ideal,
                        "pareto": pts})
    return summary


def _write_jsonl(b: Built, config: ml_collections.ConfigDict, h: History, M: dict[str, np.ndarray], workdir: Path) -> None:
    lines = []
    for r in range(min(config.log_runs, h.archs.shape[0])):
        n = int(h.count[r])
        archs = h.archs[r, :n]
        metrics = {k: v[r, :n] for k, v in M.items()}
        cum = np.cumsum(h.cost[r, :n].astype(np.float64))
        for e in range(n):
            rec = {"run": r, "eval": e, "arch": archs[e].tolist(), "arch_str": b.estimator.describe(archs[e])}
            rec.update({k: float(v[e]) for k, v in metrics.items()})
            rec["fitness"] = h.fitness[r, e].tolist()
            rec["cost_s"], rec["cum_cost_s"] = float(h.cost[r, e]), float(cum[e])
            lines.append(json.dumps(rec))
    atomic_write(workdir / "metrics.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())




def _objective_names(config: ml_collections.ConfigDict, m: int) -> list[str]:
    """The objectives' metric names as configured (``-latency_ms`` for a minimised one)."""
    return list(config.objective_kwargs.to_dict().get("metrics", [f"objective {i}" for i in range(m)]))


def _feasible(config: ml_collections.ConfigDict, objs: np.ndarray) -> np.ndarray:
    """``bool[...]``: rows the objective did not reject (a ``multi`` objective with hard
    ``limits`` gives a rejected architecture ``penalty`` in every column)."""
    kw = config.objective_kwargs.to_dict()
    if not kw.get("limits"):
        return np.ones(objs.shape[:-1], bool)
    return ~np.all(objs == np.float32(kw.get("penalty", -1e6)), axis=-1)


def hypervolumes(config: ml_collections.ConfigDict, h: History) -> tuple[np.ndarray, list[float], list[float]]:
    """The normalised hypervolume (:func:`dnas.core.stats.hypervolume`) of each run's
    evaluated feasible points, ``f64[R]``, with the reference and ideal points used
    (objective space, all maximised): ``config.hv_reference`` / ``config.hv_ideal``, or
    when unset the worst and best values over every run's feasible evaluations
    (comparable within this run directory only)."""
    R, m = h.fitness.shape[0], h.fitness.shape[-1]
    seen = (np.arange(h.fitness.shape[1])[None] < h.count[:, None]) & _feasible(config, h.fitness)
    pts = h.fitness[seen].astype(np.float64)
    ref = list(config.hv_reference) if len(config.hv_reference) else (pts.min(0) if len(pts) else np.zeros(m)).tolist()
    ideal = list(config.hv_ideal) if len(config.hv_ideal) else (pts.max(0) if len(pts) else np.ones(m)).tolist()
    return np.array([hypervolume(h.fitness[r][seen[r]], ref, ideal) for r in range(R)]), ref, ideal


def _write_pareto(b: Built, config: ml_collections.ConfigDict, h: History, M: dict[str, np.ndarray], workdir: Path, write: bool = True) -> list[dict[str, Any]]:
    """The front of run 0's evaluated architectures -> ``pareto.json`` and ``pareto.png``;
    returns the front as ``[{arch, hardware (joint spaces), accuracy, <objective metrics>,
    objectives}]``, best first objective first."""
    n = int(h.count[0])
    archs, objs = h.archs[0, :n], h.fitness[0, :n]
    _, idx = np.unique(archs, axis=0, return_index=True)
    idx = np.sort(idx)
    idx = idx[_feasible(config, objs[idx])]
    archs, objs = archs[idx], objs[idx]
    front = pareto_mask(objs) if len(objs) else np.zeros(0, bool)
    order = np.argsort(-objs[front, 0])
    metrics = {k: v[0, :n][idx][front][order] for k, v in M.items()}
    names = _objective_names(config, objs.shape[1])
    joint = isinstance(b.space, JointSpace)
    pts = []
    for i, (a, o) in enumerate(zip(archs[front][order], objs[front][order])):
        pt: dict[str, Any] = {"arch": b.estimator.describe(a).split(" @ ")[0] if joint else b.estimator.describe(a), "vector": a.tolist()}
        if joint:
            pt["hardware"] = {l.split("/", 1)[-1]: _plain(v) for l, v in b.space.hw_space.names(a[b.space.num_network :]).items()}
        if config.report_metric in metrics:
            pt["accuracy"] = float(metrics[config.report_metric][i])
        pt.update({k.lstrip("-"): float(metrics[k.lstrip("-")][i]) for k in names if k.lstrip("-") in metrics})
        pt["objectives"] = o.tolist()
        pts.append(pt)
    if not write:
        return pts
    atomic_write(workdir / "pareto.json", (json.dumps({"objective_kwargs": config.objective_kwargs.to_dict(), "front": pts}, indent=1) + "\n").encode())
    _plot_front(config, objs, front, order, pts, names, n, joint, workdir)
    return pts


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _plot_front(config: ml_collections.ConfigDict, objs: np.ndarray, front: np.ndarray, order: np.ndarray, pts: list[dict[str, Any]],
                names: list[str], n: int, joint: bool, workdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5) if joint else (5, 4))
    x = 1 if objs.shape[1] > 1 else 0
    sx = -1.0 if names[x].startswith("-") else 1.0  # plot a minimised metric as itself, not negated
    ax.scatter(sx * objs[:, x], objs[:, 0], s=8, c="0.7", label="evaluated")
    f = objs[front][order]
    ax.plot(sx * f[:, x], f[:, 0], "o", c="C3", ms=4, label="Pareto front" + (" (all objectives)" if objs.shape[1] > 2 else ""))
    if joint:  # name the accelerator of a few front points: the codesign answer is the pair
        for p, (xv, yv) in list(zip(pts, zip(sx * f[:, x], f[:, 0])))[:: max(1, len(pts) // 6)]:
            hw = p.get("hardware", {})
            label = f"{hw.get('rows', '?')}x{hw.get('cols', '?')} {hw.get('dataflow', '')}".strip()
            ax.annotate(label, (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
    xs = sx * objs[:, x]
    if len(xs) and xs.min() > 0 and xs.max() / xs.min() > 100:  # latencies spanning decades: a log axis keeps the fast end readable
        ax.set_xscale("log")
    ax.set_xlabel(names[x].lstrip("-"))
    ax.set_ylabel(names[0])
    ax.legend(fontsize=8)
    ax.set_title(f"{config.strategy}: run 0 of {int(config.runs)}, {n} evaluations")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(workdir / "pareto.png", buf.getvalue())
