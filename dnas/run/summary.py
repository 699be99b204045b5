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
from dnas.core.stats import pareto_mask
from dnas.search.multitrial import Built, History


def summarize(b: Built, config: ml_collections.ConfigDict, h: History, M: dict[str, np.ndarray], workdir: Path) -> dict[str, Any]:
    """Summary of the runs; ``M[name]`` is every evaluation's metric, ``[R, E]``."""
    R = h.archs.shape[0]
    first = h.fitness[..., 0] if b.m else h.fitness
    score = np.where(np.arange(h.archs.shape[1])[None] < h.count[:, None], first, -np.inf)
    best = np.argmax(score, axis=1)
    chosen = h.archs[np.arange(R), best]
    test, valid = M[config.report_metric][np.arange(R), best], M[config.valid_metric][np.arange(R), best]
    strs = [b.estimator.describe(a) for a in chosen]
    (top, n_top), = collections.Counter(strs).most_common(1)  # ties: the earliest run's choice, so reruns agree
    summary = {
        "runs": int(R),
        "strategy": config.strategy,
        "test_metric": config.report_metric,
        "test_acc_mean": float(test.mean()),
        "test_acc_std": float(test.std()),
        "valid_metric": config.valid_metric,
        "valid_acc_mean": float(valid.mean()),
        "valid_acc_std": float(valid.std()),
        "evals_mean": float(h.count.mean()),
        "budget_s": float(config.budget_s),
        "most_chosen": top,
        "most_chosen_runs": int(n_top),
    }
    _write_jsonl(b, config, h, M, workdir)
    if b.m:
        summary["pareto_size"] = _write_pareto(b, config, h, M, workdir)
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




def _write_pareto(b: Built, config: ml_collections.ConfigDict, h: History, M: dict[str, np.ndarray], workdir: Path) -> int:
    """The front of run 0's evaluated architectures -> ``pareto.json`` and ``pareto.png``."""
    n = int(h.count[0])
    archs, objs = h.archs[0, :n], h.fitness[0, :n]
    _, idx = np.unique(archs, axis=0, return_index=True)
    idx = np.sort(idx)
    archs, objs = archs[idx], objs[idx]
    front = pareto_mask(objs)
    order = np.argsort(-objs[front, 0])
    metrics = {k: v[0, :n][idx][front][order] for k, v in M.items()}
    pts = [
        {"arch": a.tolist(), "arch_str": b.estimator.describe(a), "objectives": o.tolist(), **{k: float(v[i]) for k, v in metrics.items()}}
        for i, (a, o) in enumerate(zip(archs[front][order], objs[front][order]))
    ]
    atomic_write(workdir / "pareto.json", (json.dumps({"objective_kwargs": config.objective_kwargs.to_dict(), "front": pts}, indent=1) + "\n").encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(config.objective_kwargs.to_dict().get("metrics", [f"objective {i}" for i in range(objs.shape[1])]))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(objs[:, 1], objs[:, 0], s=8, c="0.7", label="evaluated")
    f = objs[front][order]
    ax.plot(f[:, 1], f[:, 0], "o-", c="C3", ms=4, label="Pareto front")
    ax.set_xlabel(names[1] if len(names) > 1 else "objective 1")
    ax.set_ylabel(names[0])
    ax.legend()
    ax.set_title(f"{config.strategy}: run 0, {n} evaluations")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(workdir / "pareto.png", buf.getvalue())
    return int(front.sum())
