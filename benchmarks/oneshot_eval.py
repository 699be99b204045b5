"""One-shot evaluation throughput: one compiled evaluator vs a re-jit per architecture.

    python benchmarks/oneshot_eval.py [--run RUN_DIR] [--archs 1000] [--rejit 5]
        [--channels 16 --layers 5 --batch-size 64 --val-batches 4 --recalibrate 0]

(a) :class:`dnas.estimate.oneshot.OneShotEvaluator` evaluates ``--archs`` distinct NB201 cells with
one compilation (index mode: every mixed op a ``lax.switch``, architectures through
``lax.map`` in chunks of ``--chunk``); (b) a fresh ``jax.jit`` per architecture with the
cell baked in as Python ints (the supernet then calls the chosen ops directly: the
smallest program per cell, what evaluating each subnet as its own model costs), timed on
``--rejit`` cells and extrapolated. Both run the same supernet weights on the same
``--val-batches`` batches (random images unless ``--run`` gives a trained supernet, whose
held-out split is used; throughput does not depend on the values). Checks that both give
the same accuracies on the re-jitted cells. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402


def _evaluator(a: argparse.Namespace):
    from dnas.estimate.oneshot import OneShotEvaluator
    from dnas.space.spaces import NB201Space
    from dnas.search.state import build_jitted, split_model

    if a.run:
        return OneShotEvaluator.from_run(a.run, recalibrate=a.recalibrate, val_batches=a.val_batches, chunk=a.chunk)
    space = NB201Space(layers=a.layers)
    net = build_jitted(lambda r: space.supernet(C=a.channels, num_classes=10, in_channels=3, rngs=r), jax.random.key(0))
    _, alpha, weights, stats = split_model(net)
    k = jax.random.split(jax.random.key(1), 3)
    shape = (a.batch_size, 32, 32, 3)
    val_x = np.asarray(jax.random.normal(k[0], (a.val_batches, *shape)))
    val_y = np.asarray(jax.random.randint(k[1], (a.val_batches, a.batch_size), 0, 10))
    recal_x = np.asarray(jax.random.normal(k[2], (a.recalibrate, *shape)))
    return OneShotEvaluator(space, net, alpha, weights, stats, val_x, val_y, recal_x, chunk=a.chunk)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="", help="a trained supernet's run directory (default: a fresh NB201 supernet)")
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--rejit", type=int, default=5, help="cells timed with a re-jit each (extrapolated to --archs)")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--recalibrate", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    ev = _evaluator(a)
    vecs = ev.space.distinct_samples(a.archs, jax.random.key(a.seed))
    t0 = time.perf_counter()
    ev.evaluate(vecs[: ev.chunk])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = ev.accuracy(vecs)
    one_s = time.perf_counter() - t0

    # Re-jit per architecture: the same evaluation with the cell as Python ints.
    ev.model.train()
    g_train = nnx.graphdef(ev.model)
    ev.model.eval()
    graphs = (g_train, nnx.graphdef(ev.model))
    ev.model.train()
    rejit_times, rejit_acc = [], []
    for v in vecs[: a.rejit]:
        arch = {l: int(i) for l, i in zip(ev.space.labels, v)}

        def one(alpha, weights, stats, recal_x, val_x, val_y, arch=arch):
            return _fixed(ev, graphs, arch, alpha, weights, stats, recal_x, val_x, val_y)

        t0 = time.perf_counter()
        out = jax.jit(one)(ev.alpha, ev.weights, ev.stats, ev.recal_x, ev.val_x, ev.val_y)
        rejit_acc.append(float(jax.block_until_ready(out)))
        rejit_times.append(time.perf_counter() - t0)
    per_arch = float(np.mean(rejit_times))
    np.testing.assert_allclose(np.asarray(rejit_acc), acc[: a.rejit], atol=1e-6)
    total_one = compile_s + one_s
    print(json.dumps({
        "archs": int(len(vecs)), "compiles": ev.compiles, "space": f"nb201 C={a.channels} N={a.layers}" if not a.run else a.run,
        "val_examples": int(ev.val_y.size), "recalibrate": len(ev.recal_x), "chunk": ev.chunk,
        "one_compile": {"compile_s": round(compile_s, 2), "eval_s": round(one_s, 2), "archs_per_s": round(len(vecs) / total_one, 2)},
        "rejit_per_arch": {"archs_timed": a.rejit, "s_per_arch": round(per_arch, 2), "archs_per_s": round(1 / per_arch, 3)},
        "speedup": round(per_arch * len(vecs) / total_one, 1), "backend": jax.default_backend(),
    }), flush=True)


def _fixed(ev, graphs, arch, alpha, weights, stats, recal_x, val_x, val_y):
    """The accuracy of one cell given as Python ints (no switch: only its ops are traced)."""
    g_train, g_eval = graphs
    if len(ev.recal_x):
        from dnas.estimate.oneshot import recalibrated_stats

        stats = recalibrated_stats(g_train, alpha, weights, stats, arch, recal_x, 1.0 - 0.9 ** len(ev.recal_x))

    def batch(hits, xy):
        x, y = xy
        logits = nnx.merge(g_eval, alpha, weights, stats, copy=True)(x, arch).logits
        return hits + jnp.sum(jnp.argmax(logits, -1) == y), None

    hits, _ = jax.lax.scan(batch, jnp.zeros((), jnp.int32), (val_x, val_y))
    return hits / val_y.size


if __name__ == "__main__":
    main()
