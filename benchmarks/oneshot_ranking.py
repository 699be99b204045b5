"""One-shot ranking on NAS-Bench-201 (issue 32): supernets, free baselines and the combined
estimator, all on the same cells, against the table's accuracy.

The ranked cells are ``NB201Space().distinct_samples(ARCHS, key(SEED))``, the cells
``dnas eval RUN --archs ARCHS --seed SEED`` draws, so a row here equals that command's. The
combined estimator's ``T`` training cells are drawn (``--train-seeds`` draws, numpy seeds
0, 1, ...) from a pool of ``--pool`` cells disjoint from them (``key(SEED + 1)``, minus every
ranked cell): it never sees the accuracy of a cell it ranks.

Rows:
- ``oneshot:NAME``: each ``--run NAME=RUN_DIR[:bn]`` supernet's one-shot accuracy (bn:
  ``batch`` (default), ``running`` or ``recalib4``), through :class:`OneShotEvaluator`;
- ``convs``, ``params_m``: counted (convolutions in the cell; the C=16, N=5 network's
  parameters from the ``counts`` cost model);
- ``zc:PROXY`` and ``zc:vote`` (Abdelfattah et al. 2021's majority of synflow, jacob_cov and
  snip) at ``--zc-channels``, ``--zc-layers``;
- ``combined:FEATURES@T/MODEL``: :func:`dnas.estimate.combined.fit_feature_groups` (the
  combined estimator's model: ``trees`` or ``ridge``) on ``T`` training cells, features
  named by ``--combos``; τ, ρ and precision are means over the training draws, with
  ``kendall_tau_std`` beside them.

Every feature is computed once for the ranked and the training cells and cached in
``--cache`` (JSON per feature), so new combinations cost seconds.

  python benchmarks/oneshot_ranking.py --run os=runs/os_cpu --run fs=runs/fs_cpu \\
      --combos "enc;os+zc+enc;fs+zc+params+enc" --train 20,50,100 --models trees,ridge --out ranking.json

Prints one JSON line last: per row ``kendall_tau``, ``spearman``, ``top10pct_precision``,
``true_acc_of_best`` and the feature's CPU seconds (process time of computing it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from dnas.core.stats import rank_quality
from dnas.data.datasets import shared_data
from dnas.estimate import build_estimator
from dnas.estimate.combined import encoding, fit_feature_groups
from dnas.estimate.nb201_table import table_path, table_values
from dnas.estimate.oneshot import OneShotEvaluator
from dnas.estimate.zero_cost.proxies import VOTE, vote
from dnas.space.spaces import NB201Space

CONVS = ("nor_conv_1x1", "nor_conv_3x3")


def cells(archs: int, train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ranked cells and a disjoint pool of ``train`` candidate training cells, ``int32[·, 6]``."""
    space = NB201Space()
    ranked = space.distinct_samples(archs, jax.random.key(seed))
    seen = {v.tobytes() for v in ranked.astype(np.int32)}
    pool = space.distinct_samples(train + archs, jax.random.key(seed + 1)).astype(np.int32)
    pool = np.stack([v for v in pool if v.tobytes() not in seen][:train])
    return ranked.astype(np.int32), pool


def cached(cache: Path, name: str, vecs: np.ndarray, compute) -> dict:
    """``compute(vecs) -> {metric: f64[len(vecs)]}``, cached per cell: a later call computes
    only the cells it has not seen. Returns the metrics of ``vecs`` in order and ``cpu_s``,
    the process time spent per cell (compiles included) times ``len(vecs)``."""
    f = cache / f"{name.replace(':', '_').replace('/', '_')}.json"
    d = json.loads(f.read_text()) if f.exists() else {"cells": [], "metrics": {}, "cpu_s": 0.0}
    index = {tuple(c): i for i, c in enumerate(d["cells"])}
    todo = np.array([v for v in vecs if tuple(int(x) for x in v) not in index], np.int32).reshape(-1, vecs.shape[1])
    if len(todo):
        t = time.process_time()
        out = {k: np.asarray(v, np.float64).tolist() for k, v in compute(todo).items()}
        d["cpu_s"] += time.process_time() - t
        d["cells"] += todo.tolist()
        for k, v in out.items():
            d["metrics"][k] = d["metrics"].get(k, []) + v
        index = {tuple(c): i for i, c in enumerate(d["cells"])}
        f.write_text(json.dumps(d))
    rows = [index[tuple(int(x) for x in v)] for v in vecs]
    res = {k: np.asarray(v)[rows] for k, v in d["metrics"].items()}
    res["cpu_s"] = d["cpu_s"] / len(d["cells"]) * len(vecs)
    return res


def oneshot_feature(run_dir: str, bn: str, vecs: np.ndarray, seed: int, val_batches: int = 8) -> dict:
    """One-shot accuracy and loss of ``vecs`` with the run's supernet (``val_batches`` held-out batches)."""
    recal = int(bn[len("recalib"):]) if bn.startswith("recalib") else 0
    ev = OneShotEvaluator.from_run(run_dir, recalibrate=recal, val_batches=val_batches, seed=seed, batch_stats=bn == "batch")
    out = ev.evaluate(vecs)
    return {"acc": out["acc"], "neg_loss": -np.asarray(out["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR[:batch|running|recalibK] (repeatable)")
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="20,50,100", help="T values of the combined estimator")
    ap.add_argument("--pool", type=int, default=300, help="cells the T training cells are drawn from")
    ap.add_argument("--train-seeds", type=int, default=3, help="draws of the T training cells")
    ap.add_argument("--models", default="trees,ridge", help="the combined estimator's models to report")
    ap.add_argument("--combos", default="enc", help="';'-separated '+'-joined feature groups: run names, zc, vote, params, convs, enc")
    ap.add_argument("--val-batches", type=int, default=8, help="held-out batches each supernet evaluates a cell on (dnas eval's default: 8)")
    ap.add_argument("--zc-channels", type=int, default=8)
    ap.add_argument("--zc-layers", type=int, default=1)
    ap.add_argument("--zc-data", default="", help="CIFAR-10 folder of the proxies' batch ('' = the shared subset)")
    ap.add_argument("--table", default="")
    ap.add_argument("--metric", default="cifar10_test_200ep")
    ap.add_argument("--cache", default="oneshot_ranking_cache")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    Ts = [int(t) for t in a.train.split(",") if t]
    ranked, pool = cells(a.archs, max(max(Ts, default=0), a.pool), a.seed)
    vecs = np.concatenate([ranked, pool])
    n = len(ranked)
    path = table_path(a.table)
    truth = table_values(path, vecs, a.metric)
    space = NB201Space()
    feats: dict[str, tuple[np.ndarray, float]] = {}  # group name -> (f64[len(vecs), d], cpu seconds)

    for spec in a.run:
        name, _, rest = spec.partition("=")
        run_dir, _, bn = rest.partition(":")
        bn = bn or "batch"
        print(f"one-shot {name}: {run_dir} ({bn})...", file=sys.stderr, flush=True)
        vb = "" if a.val_batches == 8 else f"_v{a.val_batches}"  # the caches of 8 batches predate the option
        d = cached(cache, f"os_{name}_{bn}_{a.seed}{vb}", vecs, lambda todo: oneshot_feature(run_dir, bn, todo, a.seed, a.val_batches))
        feats[name] = (np.stack([d["acc"], d["neg_loss"]], 1), d["cpu_s"])

    names = [space.ops[i] for i in range(len(space.ops))]
    conv_cols = [names.index(o) for o in CONVS]
    feats["convs"] = (np.isin(vecs, conv_cols).sum(1, keepdims=True).astype(np.float64), 0.0)
    feats["enc"] = (encoding(space, vecs), 0.0)
    print("params...", file=sys.stderr, flush=True)
    d = cached(cache, "params", vecs, lambda todo: {
        "params_m": build_estimator("hardware", NB201Space(layers=5), {"resolution": 32, "counts_kwargs": {"C": 16, "num_classes": 10}})
        .evaluate(todo, jax.random.key(0))[0]["params_m"]})
    feats["params"] = (np.asarray(d["params_m"])[:, None], d["cpu_s"])
    print(f"zero-cost proxies at C={a.zc_channels}, N={a.zc_layers}...", file=sys.stderr, flush=True)
    proxies = tuple(dict.fromkeys(VOTE + ("naswot",)))
    zc_space = NB201Space(layers=a.zc_layers)
    d = cached(cache, f"zc_C{a.zc_channels}_N{a.zc_layers}", vecs, lambda todo: dict(zip(
        proxies, (lambda m: [m["log10_synflow" if p == "synflow" else p] for p in proxies])(
            build_estimator("zero_cost", zc_space, {"proxies": ",".join(proxies), "C": a.zc_channels,
                                                     "data_dir": a.zc_data or shared_data("images", "cifar10_subset")}).evaluate(todo, jax.random.key(0))[0]))))
    zc = np.stack([d[p] for p in proxies], 1)
    feats["zc"] = (zc, d["cpu_s"])
    # The vote ranks a set: the ranked cells' vote is taken among them alone.
    v = np.concatenate([vote({p: np.asarray(d[p])[:n] for p in VOTE}), vote({p: np.asarray(d[p])[n:] for p in VOTE})])
    feats["vote"] = (v[:, None], d["cpu_s"])

    rows: dict[str, dict] = {}

    def row(key: str, pred: np.ndarray, cpu_s: float, **extra) -> None:
        q = rank_quality(pred, truth[:n])
        rows[key] = {k: round(float(q[k]), 4) for k in ("kendall_tau", "spearman", "top10pct_precision", "true_acc_of_best")}
        rows[key].update(cpu_s=round(cpu_s, 1), **extra)
        print(f"{key:40s} τ {q['kendall_tau']:.3f}  ρ {q['spearman']:.3f}  top10% {q['top10pct_precision']:.2f}", file=sys.stderr)

    for spec in a.run:
        name = spec.partition("=")[0]
        row(f"oneshot:{name}", feats[name][0][:n, 0], feats[name][1])
        row(f"oneshot:{name} (-loss)", feats[name][0][:n, 1], feats[name][1])
    row("convs", feats["convs"][0][:n, 0], 0.0)
    row("params_m", feats["params"][0][:n, 0], feats["params"][1])
    for i, p in enumerate(proxies):
        row(f"zc:{p}", zc[:n, i], feats["zc"][1])
    row("zc:vote", feats["vote"][0][:n, 0], feats["zc"][1])
    for combo in [c for c in a.combos.split(";") if c]:
        groups = combo.split("+")
        unknown = [g for g in groups if g not in feats]
        if unknown:
            sys.exit(f"--combos: unknown feature group(s) {unknown}; known: {sorted(feats)}")
        for T in Ts:
            for model in a.models.split(","):
                qs = []
                for s in range(a.train_seeds):
                    tr = n + np.random.default_rng(s).permutation(len(pool))[:T]
                    predict = fit_feature_groups([feats[g][0][tr] for g in groups], truth[tr], model, seed=s)
                    qs.append(rank_quality(predict([feats[g][0][:n] for g in groups]), truth[:n]))
                key = f"combined:{combo}@{T}/{model}"
                rows[key] = {k: round(float(np.mean([q[k] for q in qs])), 4) for k in ("kendall_tau", "spearman", "top10pct_precision", "true_acc_of_best")}
                rows[key].update(kendall_tau_std=round(float(np.std([q["kendall_tau"] for q in qs])), 4), train_archs=T, draws=len(qs),
                                 cpu_s=round(sum(feats[g][1] for g in groups), 1))
                print(f"{key:40s} τ {rows[key]['kendall_tau']:.3f} ± {rows[key]['kendall_tau_std']:.3f}  ρ {rows[key]['spearman']:.3f}  "
                      f"top10% {rows[key]['top10pct_precision']:.2f}", file=sys.stderr)
    result = {"archs": n, "seed": a.seed, "metric": a.metric, "train_pool": len(pool), "rows": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
