"""The statistics every part of dnas reports: rank agreement and Pareto fronts.

One implementation of each, used by one-shot evaluation, zero-cost scoring, predictors,
multi-trial summaries and plots (NASLib and the NAS-Bench papers report Kendall τ,
Spearman ρ and top-k precision of an estimator against ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from dnas.core.errors import DnasError


def rank_quality(pred: np.ndarray, truth: np.ndarray, top: float = 0.1) -> dict[str, float]:
    """How well ``pred`` ranks like ``truth`` (larger is better in both).

    Non-finite predictions rank last (a proxy that overflowed for one architecture must
    not drop it from the comparison).

    Args:
      pred: ``f[N]`` scores of an estimator.
      truth: ``f[N]`` ground truth (e.g. a benchmark's test accuracy).
      top: the fraction defining the top set for precision (0.1: top 10 %).
    Returns:
      ``kendall_tau`` (τ-b), ``spearman`` (ρ), ``top10pct_precision`` (the share of the
      predicted top set that is in the true top set; the key keeps its name for other
      ``top``), ``top1_in_true_top10pct``, ``true_acc_of_best`` (truth of the predicted
      best) and ``true_best``.
    Raises:
      DnasError: when the lengths differ or fewer than 2 points are given.
    """
    pred = np.asarray(pred, np.float64).reshape(-1)
    truth = np.asarray(truth, np.float64).reshape(-1)
    if pred.shape != truth.shape or pred.size < 2:
        raise DnasError(f"rank_quality needs two equally long arrays of at least 2 values, got {pred.size} and {truth.size}")
    finite = np.isfinite(pred)
    worst = pred[finite].min() - 1.0 if finite.any() else 0.0
    pred = np.where(finite, pred, worst)
    k = max(1, int(round(len(pred) * top)))
    top_pred, top_true = set(np.argsort(-pred, kind="stable")[:k].tolist()), set(np.argsort(-truth, kind="stable")[:k].tolist())
    best = int(np.argmax(pred))
    return {
        "kendall_tau": float(stats.kendalltau(pred, truth)[0]),
        "spearman": float(stats.spearmanr(pred, truth)[0]),
        "top10pct_precision": len(top_pred & top_true) / k,
        "top1_in_true_top10pct": bool(best in top_true),
        "true_acc_of_best": float(truth[best]),
        "true_best": float(truth.max()),
    }


def pareto_mask(objs: np.ndarray, maximize: bool | Sequence[bool] = True) -> np.ndarray:
    """``bool[K]``: the points of ``objs f[K, m]`` that no other point dominates.

    A point dominates another when it is at least as good in every objective and better
    in one. Equal points do not dominate each other (all are kept); a point with a
    non-finite objective is never on the front. Two objectives take one sort and a sweep
    (O(K log K): fronts over every evaluation of a 500-run search stay cheap); more take
    the pairwise comparison in blocks.

    Args:
      objs: ``f[K, m]`` objective values (``f[K]`` is one objective).
      maximize: per objective (or for all) whether larger is better.
    """
    o = np.asarray(objs, np.float64)
    o = o.reshape(o.shape[0] if o.ndim else 1, -1) if o.ndim != 2 else o.copy()
    k, m = o.shape
    sign = np.where(np.broadcast_to(np.asarray(maximize, bool), (m,)), 1.0, -1.0)
    o = o * sign  # now every objective is maximised
    ok = np.isfinite(o).all(1)
    mask = np.zeros(k, bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return mask
    p = o[idx]
    if m == 1:
        mask[idx] = p[:, 0] == p[:, 0].max()
    elif m == 2:
        order = np.lexsort((-p[:, 1], -p[:, 0]))  # first objective descending, then second
        best_prev = -np.inf
        i = 0
        while i < len(order):
            j = i
            while j < len(order) and p[order[j], 0] == p[order[i], 0]:
                j += 1
            group = order[i:j]
            b_top = p[group[0], 1]  # the group's best second objective (sorted descending)
            if b_top > best_prev:
                keep = group[p[group, 1] == b_top]
                mask[idx[keep]] = True
            best_prev = max(best_prev, b_top)
            i = j
    else:
        dominated = np.zeros(len(p), bool)
        for s in range(0, len(p), 1024):
            blk = p[s : s + 1024]
            ge = (p[:, None] >= blk[None]).all(-1) & (p[:, None] > blk[None]).any(-1)  # ge[i, j]: i dominates j
            dominated[s : s + 1024] = ge.any(0)
        mask[idx] = ~dominated
    return mask


def pareto_front(acc: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, maximising accuracy and minimising latency.

    Of several equal points only the first (lowest index) is returned, so the front has
    one index per distinct point; a point with a NaN or infinite value is never on it.

    Args:
      acc: ``[N]`` accuracies.
      lat: ``[N]`` latencies, same length.
    Returns:
      ``int64[K]`` indices sorted by increasing latency (accuracy increases strictly along it).
    """
    acc = np.asarray(acc, float).reshape(-1)
    lat = np.asarray(lat, float).reshape(-1)
    if acc.shape != lat.shape:
        raise DnasError(f"pareto_front: {acc.size} accuracies but {lat.size} latencies; pass one of each per point")
    on = np.flatnonzero(pareto_mask(np.stack([acc, lat], 1), maximize=(True, False)))
    _, first = np.unique(np.stack([acc[on], lat[on]], 1), axis=0, return_index=True)
    on = on[np.sort(first)]
    return on[np.argsort(lat[on], kind="stable")].astype(np.int64)


def hypervolume(points: np.ndarray, reference: Sequence[float], ideal: Sequence[float]) -> float:
    """The normalised hypervolume of ``points f[N, m]`` (every objective maximised).

    Each objective is mapped to ``[0, 1]`` by ``(ideal - f) / (ideal - reference)`` and the
    volume the points dominate in the box ``[0, 1]^m`` is measured with pymoo's exact
    indicator (Blank & Deb, "pymoo: Multi-objective Optimization in Python", IEEE Access
    2020; the S-metric of Zitzler & Thiele, PPSN 1998). 1 means the ideal point was found;
    points no better than the reference in some objective dominate nothing. Comparable
    across runs that share ``reference`` and ``ideal``.

    Raises:
      DnasError: ``reference``/``ideal`` not one value per objective, or pymoo missing.
    """
    try:
        from pymoo.indicators.hv import HV  # optional and heavy (numba): only multi-objective reports import it
    except ImportError:
        raise DnasError("the hypervolume needs pymoo: pip install 'dnas[codesign]'") from None
    pts = np.asarray(points, np.float64).reshape(-1, np.shape(reference)[0] if np.ndim(reference) else 1)
    ref, best = np.asarray(reference, np.float64), np.asarray(ideal, np.float64)
    if ref.shape != best.shape or ref.shape != pts.shape[1:]:
        raise DnasError(f"the hypervolume needs one reference and one ideal value per objective ({pts.shape[1]}), got {ref.tolist()} and {best.tolist()}")
    span = np.where(best - ref > 0, best - ref, 1.0)
    f = (best - pts) / span
    f = f[np.all(f < 1.0, axis=1)]
    return float(HV(ref_point=np.ones(ref.shape[0]))(f)) if len(f) else 0.0
