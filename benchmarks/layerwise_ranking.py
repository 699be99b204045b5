"""One-shot ranking on the layer-wise ProxylessNAS space (issue 32): SPOS, the sandwich
rule and the sandwich with in-place distillation, each against architectures trained from
scratch.

Steps (configs in ``experiments/layerwise_ranking/config.py``, one compiled step each):

1. train the three supernets (``spos``, ``sandwich``, ``sandwich_kd``) at the same number
   of path-steps, on the weight half of the training images;
2. draw ``--archs`` distinct architectures with ``--arch-seed`` and score each with every
   supernet's shared weights on ``--val-batches`` batches of the held-out half (BatchNorm
   on batch statistics, ``config.eval_bn``, and recalibrated on 4 training batches);
3. train each architecture from scratch (``truth`` config: fresh weights from its own seed,
   its own data order; only its path runs, so the supernet program in index mode *is* the
   stand-alone network and one compilation serves every architecture), then its test
   accuracy on the test split with its running BatchNorm statistics;
4. Kendall τ, Spearman ρ and top-25 % precision of each score against the from-scratch
   accuracy, with MACs, parameters (``counts`` cost model at the training resolution) and
   optionally a zero-cost proxy as baselines; CPU seconds of every phase (this process).

Usage::

  taskset -c 1 python benchmarks/layerwise_ranking.py --data-dir ../shared/data/images/cifar10_subset \
      --out benchmarks/layerwise_ranking.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dnas.core.imports import import_file
from dnas.core.stats import rank_quality
from dnas.data.datasets import StepIndices, normalize
from dnas.data.pipeline import Stream, read_batch
from dnas.estimate import build_estimator
from dnas.estimate.oneshot import make_evaluate
from dnas.hardware.cost_model import build_cost_model
from dnas.run.parallel import host_rows
from dnas.run.search import build_search, check_search, search_batches
from dnas.search.state import split_model
from dnas.space.relax import MASKED

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "layerwise_ranking" / "config.py"


def load(variant: str, data_dir: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """The experiment config of ``variant`` pointed at ``data_dir``, with ``overrides``."""
    c = import_file(CONFIG).get_config(variant)
    c.data_dir = data_dir
    for k, v in overrides.items():
        c[k] = v
    check_search(c)
    return c


def train_supernet(c: ml_collections.ConfigDict) -> tuple[Any, Any, float]:
    """Trains one supernet for ``c.max_steps`` steps; returns (setup, state, CPU seconds)."""
    t = time.process_time()
    setup = build_search(c)
    state = setup.state
    for batch in search_batches(setup, 0):
        state, metrics = setup.train_step(state, *batch)
    jax.block_until_ready(state.weights)
    print(f"  {c.max_steps} steps, last train_acc {float(metrics['train_acc']):.3f}", file=sys.stderr, flush=True)
    return setup, state, time.process_time() - t


def batches(x: np.ndarray, y: np.ndarray, idx: np.ndarray, n: int, bs: int, key: jax.Array, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """``n`` batches of ``idx`` drawn with ``key``, normalised: ``f32[n, bs, H, W, C]``, ``int32[n, bs]``."""
    rows = StepIndices(key, len(idx), bs)
    take = np.stack([idx[rows(i)] for i in range(n)]) if n else np.zeros((0, bs), np.int64)
    xs = np.asarray(normalize(jnp.asarray(x[take.reshape(-1)]), mean, std)).reshape(take.shape + x.shape[1:])
    return xs, np.asarray(y[take], np.int32)


def one_shot_scores(setup: Any, state: Any, vecs: np.ndarray, val: tuple, recal_x: np.ndarray, modes: list[str]) -> dict[str, np.ndarray]:
    """One-shot accuracy and loss of ``vecs`` per BatchNorm mode in ``modes``: ``batch``
    (batch statistics) and ``recal4`` (recalibrated on the batches of ``recal_x``)."""
    model = nnx.merge(setup.graphdef, state.alpha, state.weights, state.stats)
    out = {}
    table = {"batch": ({"batch_stats": True}, recal_x[:0]), "recal4": ({"recalibrate": len(recal_x)}, recal_x)}
    for name in modes:
        kw, rx = table[name]
        fn = jax.jit(make_evaluate(setup.space, model, **kw))
        acc, loss = fn(state.alpha, state.weights, state.stats, jnp.asarray(vecs), jnp.asarray(rx), jnp.asarray(val[0]), jnp.asarray(val[1]))
        out[f"oneshot_acc_{name}"], out[f"neg_loss_{name}"] = np.asarray(acc), -np.asarray(loss)
    return out


def masked_alpha(space: Any, alpha: Any, vec: np.ndarray) -> Any:
    """α that lets the uniform sampler draw only ``vec`` (every other candidate :data:`MASKED`)."""
    pure = nnx.to_pure_dict(alpha)
    for i, l in enumerate(space.labels):
        k = int(space.num_candidates[i])
        pure["alpha"][l] = jnp.where(jnp.arange(k) == int(vec[i]), 0.0, MASKED).astype(jnp.float32)
    new = jax.tree_util.tree_map(lambda v: v, alpha)
    nnx.replace_by_pure_dict(new, pure)
    return new


def train_from_scratch(c: ml_collections.ConfigDict, vecs: np.ndarray, seeds: list[int], test: tuple) -> tuple[np.ndarray, float]:
    """Test accuracy of every architecture trained alone for ``c.max_steps`` steps, each with
    fresh weights and data order from its own seed; one compiled step and one compiled
    evaluation for all. Returns (accuracy f64[N], CPU seconds)."""
    t = time.process_time()
    setup = build_search(c)
    space, d = setup.space, setup.data
    h, w, ch = d.image_shape
    n_classes = d.num_classes

    @jax.jit
    def fresh(key):
        net = space.supernet(C=c.init_channels, num_classes=n_classes, in_channels=ch, rngs=nnx.Rngs(params=key))
        _, _, weights, stats = split_model(net)
        return weights, stats

    state0 = setup.state  # never passed to the (donating) step: every architecture starts from copies of it
    copy = lambda tree: jax.tree_util.tree_map(lambda v: v.copy(), tree)  # noqa: E731
    evaluate = None
    accs = []
    bs = c.batch_size
    for vec, seed in zip(vecs, seeds):
        key = jax.random.key(seed)
        weights, stats = fresh(jax.random.fold_in(key, 1))
        state = copy(state0).replace(weights=weights, stats=stats, alpha=masked_alpha(space, state0.alpha, vec),
                                     rng=jax.random.fold_in(key, 2))
        streams = [Stream(d.train_x, d.train_y, StepIndices(jax.random.fold_in(key, 3), len(setup.w_idx), bs), setup.w_idx)] * 2
        for step in range(c.max_steps):
            state, _ = setup.train_step(state, *read_batch(streams, step, host_rows(bs)))
        if evaluate is None:
            model = nnx.merge(setup.graphdef, state.alpha, state.weights, state.stats)
            evaluate = jax.jit(make_evaluate(space, model))
        acc, _ = evaluate(state.alpha, state.weights, state.stats, jnp.asarray(vec[None]), jnp.zeros((0, *test[0].shape[1:])),
                          jnp.asarray(test[0]), jnp.asarray(test[1]))
        accs.append(float(acc[0]))
        print(f"  truth {len(accs)}/{len(vecs)}: {accs[-1]:.3f}", file=sys.stderr, flush=True)
    return np.asarray(accs), time.process_time() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="a cifar-10-batches-py folder (or its parent)")
    ap.add_argument("--archs", type=int, default=24)
    ap.add_argument("--arch-seed", type=int, default=0)
    ap.add_argument("--val-batches", type=int, default=8, help="held-out batches for the one-shot accuracy")
    ap.add_argument("--supernet-steps", type=int, default=0, help="SPOS steps (0: the config's); the sandwich gets a quarter")
    ap.add_argument("--truth-steps", type=int, default=0, help="from-scratch steps per architecture (0: the config's)")
    ap.add_argument("--zero-cost", default="", help="also score by this zero-cost proxy (e.g. naswot); '' = none")
    ap.add_argument("--bn", default="batch", help="comma-separated BatchNorm modes of the one-shot scores: batch, recal4")
    ap.add_argument("--smoke", action="store_true", help="the configs' smoke sizes (seconds of training)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    sfx = ",smoke" if args.smoke else ""
    over = lambda steps, paths=1: {"max_steps": max(1, steps // paths)} if steps else {}  # noqa: E731
    if set(args.bn.split(",")) - {"batch", "recal4"}:
        ap.error(f"--bn takes batch and/or recal4, got {args.bn!r}")
    results: dict[str, Any] = {"archs": args.archs, "arch_seed": args.arch_seed, "cpu_s": {}}
    scores: dict[str, np.ndarray] = {}
    vecs = val = recal = None
    for variant, paths in (("spos", 1), ("sandwich", 4), ("sandwich_kd", 4)):
        c = load(variant + sfx, args.data_dir, over(args.supernet_steps, paths))
        print(f"supernet {variant}...", file=sys.stderr, flush=True)
        setup, state, cpu = train_supernet(c)
        results["cpu_s"][variant] = cpu
        results.setdefault("config", {})[variant] = {"steps": int(c.max_steps), "paths_per_step": paths}
        d = setup.data
        if vecs is None:
            vecs = setup.space.distinct_samples(args.archs, jax.random.key(args.arch_seed))
            key = jax.random.key(1000 + args.arch_seed)
            val = batches(d.train_x, d.train_y, setup.a_idx, args.val_batches, c.batch_size, jax.random.fold_in(key, 1), d.mean, d.std)
            recal = batches(d.train_x, d.train_y, setup.w_idx, 4, c.batch_size, jax.random.fold_in(key, 2), d.mean, d.std)[0]
        t = time.process_time()
        for name, v in one_shot_scores(setup, state, vecs, val, recal, args.bn.split(",")).items():
            scores[f"{variant}/{name}"] = v
        results["cpu_s"][f"{variant}_eval"] = time.process_time() - t
    c = load("truth" + sfx, args.data_dir, over(args.truth_steps))
    d_test = setup.data
    n_test = (len(d_test.test_y) // c.batch_size) * c.batch_size
    tx = np.asarray(normalize(jnp.asarray(d_test.test_x[:n_test]), d_test.mean, d_test.std)).reshape((-1, c.batch_size) + d_test.image_shape)
    test = (tx, np.asarray(d_test.test_y[:n_test], np.int32).reshape(-1, c.batch_size))
    print(f"training {len(vecs)} architectures from scratch ({c.max_steps} steps each)...", file=sys.stderr, flush=True)
    truth, cpu = train_from_scratch(c, vecs, [10_000 + i for i in range(len(vecs))], test)
    results["cpu_s"]["truth"] = cpu
    results["config"]["truth"] = {"steps": int(c.max_steps), "test_images": int(n_test)}
    h = d_test.image_shape
    cost = build_cost_model("counts", setup.space, {"resolution": h[0], "C": c.init_channels, "num_classes": d_test.num_classes, "in_channels": h[2]})
    onehot = np.zeros((len(vecs), len(setup.space.labels), int(max(setup.space.num_candidates))), np.float32)
    for i, v in enumerate(vecs):
        onehot[i, np.arange(len(v)), v] = 1.0
    priced = cost.price(jnp.asarray(onehot))
    scores["macs"], scores["params"] = np.asarray(priced["macs_m"]), np.asarray(priced["params_m"])
    if args.zero_cost:
        t = time.process_time()
        est = build_estimator("zero_cost", setup.space, {"proxies": args.zero_cost, "data_dir": args.data_dir, "C": c.init_channels})
        zc, _ = est.evaluate(jnp.asarray(vecs), jax.random.key(0))
        scores.update({f"zero_cost/{k}": np.asarray(v) for k, v in zc.items()})
        results["cpu_s"]["zero_cost"] = time.process_time() - t
    results["ranking"] = {}
    for name, s in scores.items():
        q = rank_quality(s, truth, top=0.25)
        results["ranking"][name] = {"kendall_tau": q["kendall_tau"], "spearman": q["spearman"], "top25pct_precision": q["top10pct_precision"],
                                    "true_acc_of_best": q["true_acc_of_best"]}
    results["truth"] = {"mean": float(truth.mean()), "min": float(truth.min()), "max": float(truth.max()), "std": float(truth.std())}
    results["per_arch"] = [{"arch": setup.space.names(v), "truth": float(truth[i]), **{k: float(s[i]) for k, s in scores.items()}}
                           for i, v in enumerate(vecs)]
    results["cpu_min_training"] = (sum(v for k, v in results["cpu_s"].items() if k in ("spos", "sandwich", "sandwich_kd", "truth"))) / 60
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    for name, r in results["ranking"].items():
        print(f"{name:28s} tau {r['kendall_tau']:+.3f}  rho {r['spearman']:+.3f}  top25% {r['top25pct_precision']:.2f}")
    print(json.dumps(results["cpu_s"]), results["truth"])
    return results


if __name__ == "__main__":
    main()
