"""One-shot evaluation: compiled once for many architectures, equal to evaluating each
subnet on its own, BatchNorm recalibration as defined."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.oneshot import OneShotEvaluator, make_evaluate
from dnas.spaces import NB201Space
from dnas.state import split_model


def _setup(recal=0):
    space = NB201Space(layers=1)
    net = space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    g, alpha, weights, stats = split_model(net)
    # Non-trivial running statistics, as a trained supernet has.
    stats = jax.tree_util.tree_map(lambda v: v + 0.3 * jax.random.uniform(jax.random.key(5), v.shape), stats)
    k = jax.random.split(jax.random.key(1), 3)
    val_x = jax.random.normal(k[0], (2, 4, 8, 8, 3))
    val_y = jax.random.randint(k[1], (2, 4), 0, 3)
    recal_x = jax.random.normal(k[2], (recal, 4, 8, 8, 3))
    return space, net, alpha, weights, stats, val_x, val_y, recal_x


def test_evaluator_compiles_once_for_many_architectures_and_matches_each_subnet():
    space, net, alpha, weights, stats, val_x, val_y, recal_x = _setup()
    ev = OneShotEvaluator(space, net, alpha, weights, stats, np.asarray(val_x), np.asarray(val_y), np.asarray(recal_x), chunk=4)
    vecs = np.stack([np.asarray(space.sample(jax.random.key(i))) for i in range(10)])
    out = ev.evaluate(vecs)
    assert ev.compiles == 1 and out["acc"].shape == (10,)
    ev.evaluate(vecs[:3])
    assert ev.compiles == 1  # a shorter request is padded to the same chunk: no recompile
    # Independent check: the subnet with the chosen ops called directly (concrete indices).
    net.eval()
    g_eval = nnx.graphdef(net)
    for v, acc, loss in zip(vecs[:3], out["acc"], out["loss"]):
        arch = {l: int(i) for l, i in zip(space.labels, v)}
        m = nnx.merge(g_eval, alpha, weights, stats, copy=True)
        logits = jnp.concatenate([m(x, arch).logits for x in val_x])
        y = val_y.reshape(-1)
        np.testing.assert_allclose(acc, float(jnp.mean(jnp.argmax(logits, -1) == y)), atol=1e-6)
        ref_loss = float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y]))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    assert len(set(np.round(out["loss"], 5))) > 1


def test_bn_recalibration_is_the_debiased_running_average_of_the_subnet_batches():
    space, net, alpha, weights, stats, val_x, val_y, recal_x = _setup(recal=3)
    vec = np.asarray(space.sample(jax.random.key(3)))
    evaluate = jax.jit(make_evaluate(space, net, recalibrate=3))
    acc, loss = evaluate(alpha, weights, stats, jnp.asarray(vec[None]), recal_x, val_x, val_y)
    # By hand: zeroed statistics, three training-mode passes, divided by 1 - 0.9^3.
    net.train()
    g_train = nnx.graphdef(net)
    arch = {l: int(i) for l, i in zip(space.labels, vec)}
    st = jax.tree_util.tree_map(jnp.zeros_like, stats)
    for x in recal_x:
        m = nnx.merge(g_train, alpha, weights, st, copy=True)
        m(x, arch)
        st = nnx.state(m, nnx.BatchStat)
    st = jax.tree_util.tree_map(lambda v: v / (1 - 0.9**3), st)
    net.eval()
    m = nnx.merge(nnx.graphdef(net), alpha, weights, st, copy=True)
    logits = jnp.concatenate([m(x, arch).logits for x in val_x])
    y = val_y.reshape(-1)
    np.testing.assert_allclose(float(loss[0]), float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])), rtol=1e-4)
    no_recal = jax.jit(make_evaluate(space, net))(alpha, weights, stats, jnp.asarray(vec[None]), recal_x[:0], val_x, val_y)[1]
    assert abs(float(no_recal[0]) - float(loss[0])) > 1e-4  # recalibration changed the statistics used


def test_spos_smoke_supernet_then_oneshot_estimator(tmp_path):
    """The SPOS experiment's smoke run trains a supernet by sampled paths (α untouched),
    and the oneshot estimator reads its checkpoint and scores cells."""
    import json

    from dnas.config import load_config
    from dnas.estimators import ESTIMATORS
    from dnas.loop import run_search

    c = load_config("experiments/spos_nb201/config.py:smoke", ["--config.max_steps=4"])
    run_search(c, tmp_path / "s", log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines() if "train_loss" in l]
    assert lines and "val_loss" not in lines[0]  # weights only
    space = NB201Space(layers=1)
    est = ESTIMATORS["oneshot"](space, run_dir=str(tmp_path / "s"), recalibrate=1, val_batches=2)
    vecs = jax.numpy.stack([space.sample(jax.random.key(i)) for i in range(3)])
    metrics, cost = est.evaluate(vecs, jax.random.key(0))
    assert metrics["oneshot_acc"].shape == (3,) and np.all((0 <= metrics["oneshot_acc"]) & (metrics["oneshot_acc"] <= 1))
    assert np.all(np.asarray(cost) == 1.0)
