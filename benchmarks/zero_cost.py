"""Zero-cost scoring throughput: one compiled supernet vs a re-jit per architecture.

    python benchmarks/zero_cost.py --data-dir ../shared/data/images/cifar10_subset \\
        --archs 1000 --rejit 3 --proxies synflow,naswot [--channels 16 --layers 5 --batch-size 64]

For each proxy: (a) :class:`dnas.estimate.zero_cost.score.ZeroCostScorer` scores ``--archs``
distinct random NB201 cells with one compilation (index mode, ``lax.switch``);
(b) a fresh ``jax.jit`` per architecture with the cell baked in as Python ints (what a
per-model framework does: the supernet then calls the chosen ops directly, the smallest
program per cell), timed on ``--rejit`` cells and extrapolated to ``--archs``. Both draw
the same weights for a cell. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnas.space.spaces.nb201 import NB201Space
from dnas.core.stats import rank_quality
from dnas.data.datasets import sample_batch
from dnas.estimate.zero_cost.score import ZeroCostScorer


def _pool(path: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Architectures and columns of a ``dnas zero-cost --out`` file."""
    rows = [json.loads(line) for line in open(path)]
    cols = {k: np.asarray([r[k] for r in rows], np.float64) for k in rows[0] if k != "arch"}
    return np.asarray([r["arch"] for r in rows], np.int32), cols


def naswot_search(path: str, table: str, runs: int, seed: int, proxy: str = "naswot") -> dict:
    """NASWOT's search (Mellor et al. 2021, Alg. 1): score N random cells, keep the best.

    Each run draws N cells without replacement from the scored pool in ``path`` (a
    resampling of one pool of independently drawn cells: runs at N = pool size coincide).
    Also Abdelfattah et al. 2021's warm-up of regularised evolution: the initial
    population is the pool's top cells by synflow (each still charged one query), against
    random initial members; fitness the table's 12-epoch validation accuracy.
    """
    from dnas.estimate.nb201_table import nb201_table
    from dnas.search.strategies import STRATEGIES

    archs, cols = _pool(path)
    acc = cols["cifar10_test_200ep"]
    rng = np.random.default_rng(seed)
    out: dict = {"pool": len(archs), "runs": runs, "rows": {}}
    for n in (10, 100, 1000):
        if n > len(archs):
            continue
        picks = [rng.choice(len(archs), n, replace=False) for _ in range(runs)]
        best = np.asarray([acc[p_[np.argmax(cols[proxy][p_])]] for p_ in picks])
        out["rows"][f"{proxy}_N{n}"] = {"test_acc_mean": round(float(best.mean()), 2), "test_acc_std": round(float(best.std()), 2),
                                        "distinct_runs": len({tuple(sorted(p_)) for p_ in picks})}
    space = NB201Space()
    est = nb201_table(space, table)
    rea = STRATEGIES["rea"](space, population=10, sample_size=3)
    warm = archs[np.argsort(-cols["synflow"])[:10]] if "synflow" in cols else None
    budget = 100

    def search(key, start):
        state = rea.init(key)
        hist_fit, hist_acc = [], []
        if start is not None:
            m, _ = est.evaluate(start, key)
            state = rea.tell(state, start, m["cifar10_val_12ep"])
            hist_fit.append(m["cifar10_val_12ep"])
            hist_acc.append(m["cifar10_test_200ep"])
        for t in range(budget - (0 if start is None else len(start))):
            a, state = rea.ask(state, jax.random.fold_in(key, t))
            m, _ = est.evaluate(a, key)
            state = rea.tell(state, a, m["cifar10_val_12ep"])
            hist_fit.append(m["cifar10_val_12ep"])
            hist_acc.append(m["cifar10_test_200ep"])
        fit, ac = jnp.concatenate(hist_fit), jnp.concatenate(hist_acc)
        return ac[jnp.argmax(fit)]

    for label, start in (("rea_random_init", None), ("rea_synflow_warmup", warm)):
        if label.endswith("warmup") and warm is None:
            continue
        run = jax.jit(jax.vmap(lambda k: search(k, None if start is None else jnp.asarray(start))))
        got = np.asarray(run(jax.random.split(jax.random.key(seed), runs)))
        out["rows"][f"{label}_{budget}q"] = {"test_acc_mean": round(float(got.mean()), 2), "test_acc_std": round(float(got.std()), 2)}
    return out


def smash_kendall(a: argparse.Namespace) -> dict:
    """Trains the SMASH hypernetwork (:mod:`dnas.estimate.hypernet`) on random cells, ranks
    ``--archs`` random cells by validation accuracy with generated weights, and
    correlates with the table's 200-epoch test accuracy."""
    from dnas.data.datasets import get_dataset, normalize
    from dnas.estimate.nb201_table import nb201_table
    from dnas.estimate.hypernet import Smash

    space = NB201Space(layers=a.layers)
    ds = get_dataset("cifar10", a.data_dir)
    xtr = np.asarray(normalize(jnp.asarray(ds.train_x), ds.mean, ds.std))
    xva = np.asarray(normalize(jnp.asarray(ds.test_x[: a.val]), ds.mean, ds.std))
    k_init, k_train, k_arch = jax.random.split(jax.random.key(a.seed), 3)
    sm = Smash(space, C=a.channels, num_classes=10, in_channels=3, key=k_init)
    t = time.perf_counter()
    losses = sm.train(xtr, ds.train_y.astype(np.int32), steps=a.smash_steps, batch_size=a.batch_size, key=k_train)
    t_train = time.perf_counter() - t
    archs = space.distinct_samples(a.archs, k_arch)
    t = time.perf_counter()
    acc, loss = sm.rank(archs, xva, ds.test_y[: a.val].astype(np.int32))
    t_rank = time.perf_counter() - t
    truth = np.asarray(nb201_table(NB201Space(), a.table).evaluate(jnp.asarray(archs), k_arch)[0]["cifar10_test_200ep"])
    return {
        "smash": {"steps": a.smash_steps, "batch": a.batch_size, "C": a.channels, "layers": a.layers, "val_images": a.val,
                  "train_s": round(t_train, 1), "rank_s": round(t_rank, 1), "traces": sm.traces,
                  "loss_first_last": [round(float(np.mean(losses[:20])), 3), round(float(np.mean(losses[-20:])), 3)],
                  "by_accuracy": rank_quality(acc, truth), "by_neg_loss": rank_quality(-loss, truth), "archs": a.archs}
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search", default="", help="a dnas zero-cost --out file: NASWOT search rows and evolution warm-up instead")
    p.add_argument("--table", default="")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--data-dir", default="")
    p.add_argument("--archs", type=int, default=1000)
    p.add_argument("--rejit", type=int, default=3)
    p.add_argument("--proxies", default="synflow,naswot")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smash-steps", type=int, default=0, help="train the SMASH hypernetwork this many steps and report its Kendall τ instead")
    p.add_argument("--val", type=int, default=500, help="SMASH: validation images per architecture")
    a = p.parse_args()
    if a.smash_steps:
        print(json.dumps(smash_kendall(a)))
        return
    if a.search:
        print(json.dumps(naswot_search(a.search, a.table, a.runs, a.seed)))
        return
    space = NB201Space(layers=a.layers)
    k_arch, k_batch, k_score = jax.random.split(jax.random.key(a.seed), 3)
    archs = space.distinct_samples(a.archs, k_arch)
    x, y, classes = sample_batch("cifar10", a.data_dir, a.batch_size, k_batch)
    out = {"archs": a.archs, "C": a.channels, "layers": a.layers, "batch": a.batch_size, "backend": jax.default_backend(), "proxies": {}}
    for name in a.proxies.split(","):
        scorer = ZeroCostScorer(space, (name,), C=a.channels, num_classes=classes, in_channels=3, batch_shape=x.shape)
        t0 = time.perf_counter()
        first = scorer.score(archs[:1], (x, y), k_score)[name]
        t1 = time.perf_counter()
        rest = scorer.score(archs[1:], (x, y), k_score)[name]
        t2 = time.perf_counter()
        compiles = scorer.compiles  # before the re-jits, whose traces also count there
        rejit, same = [], []
        with jax.enable_x64(True):
            xj, yj = jnp.asarray(x), jnp.asarray(y)
            for v in archs[1 : 1 + a.rejit]:
                vec = np.asarray(v)  # concrete: the cell is baked into this trace
                t = time.perf_counter()
                got = float(jax.jit(lambda x, y, k, vec=vec: scorer._score_one(vec, x, y, k))(xj, yj, k_score)[name])
                rejit.append(time.perf_counter() - t)
                same.append(bool(np.isclose(got, rest[len(rejit) - 1], rtol=1e-4)))
        one_total = (t2 - t0)
        rejit_total = float(np.mean(rejit)) * a.archs
        out["proxies"][name] = {
            "compiles": compiles,
            "compile_and_first_s": round(t1 - t0, 2),
            "archs_per_s": round((a.archs - 1) / (t2 - t1), 3),
            "total_s": round(one_total, 1),
            "rejit_s_per_arch": round(float(np.mean(rejit)), 2),
            "rejit_archs_per_s": round(1.0 / float(np.mean(rejit)), 4),
            "rejit_total_s_extrapolated": round(rejit_total, 1),
            "speedup_end_to_end": round(rejit_total / one_total, 1),
            "rejit_matches_switch": all(same),
            "first_score": float(first[0]),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
