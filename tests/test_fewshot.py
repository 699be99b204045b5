"""Supernet training that ranks (issue 32): few-shot routing, FairNAS' fair paths, the
combined estimator's blindness to the accuracies it is asked about, and the few-shot
experiment's smoke search read back by ``dnas eval`` with one compilation."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.estimate.oneshot import make_evaluate
from dnas.search.fewshot import stack, sub
from dnas.search.plans import StepMaths, fair_paths, fair_weights
from dnas.search.state import SearchState, split_model
from dnas.space.fewshot import make_split
from dnas.space.relax import MASKED, uniform
from dnas.space.spaces import NB201Space


def test_routing_picks_the_sub_supernet_that_fixes_the_split_ops():
    """``route`` is the inverse of ``fixed``, masks allow exactly the fixed op, the uniform
    sampler obeys them, and the evaluator of a stacked few-shot state gives each cell the
    accuracy of the one supernet holding its sub-supernet's weights (one program each)."""
    space = NB201Space(layers=1)
    split = make_split(space, ["cell/edge_2_1", "cell/edge_1_0"])
    assert split.k == 25
    for k in range(split.k):
        fixed = split.fixed(k)
        vec = np.zeros(len(space.labels), np.int32)
        for l, c in fixed.items():
            vec[space.labels.index(l)] = c
        assert int(split.route(vec)) == k
    masked = split.masked_alpha({l: np.zeros(5) for l in space.labels})
    for k in (0, 7, 24):
        fixed = split.fixed(k)
        for l in space.labels:
            ok = masked[l][k] > MASKED / 2
            assert ok.tolist() == ([i == fixed[l] for i in range(5)] if l in fixed else [True] * 5)
    draws = {int(uniform()(jax.random.key(i), jnp.asarray(masked["cell/edge_2_1"][7]), 0).index[0]) for i in range(20)}
    assert draws == {split.fixed(7)["cell/edge_2_1"]}

    one_edge = make_split(space, ["cell/edge_3_2"])
    net = space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    _, alpha, weights, stats = split_model(net)
    # Sub-supernet k: the weights scaled by 1 + k/2 (different predictions per part).
    w_k = [jax.tree_util.tree_map(lambda w: w * (1 + 0.5 * k), weights) for k in range(one_edge.k)]
    stacked_w = jax.tree_util.tree_map(lambda *ws: jnp.stack(ws), *w_k)
    ks = jax.random.split(jax.random.key(3), 2)
    val_x, val_y = jax.random.normal(ks[0], (1, 6, 8, 8, 3)), jax.random.randint(ks[1], (1, 6), 0, 3)
    recal = jnp.zeros((0, 6, 8, 8, 3))
    vecs = jnp.stack([space.sample(jax.random.key(i)) for i in range(6)])
    routed = jax.jit(make_evaluate(space, net, batch_stats=True, split=one_edge))
    acc, loss = routed(stack(alpha, one_edge.k), stacked_w, stack(stats, one_edge.k), vecs, recal, val_x, val_y)
    single = jax.jit(make_evaluate(space, net, batch_stats=True))
    for i, v in enumerate(vecs):
        k = int(one_edge.route(v))
        _, l1 = single(alpha, w_k[k], stats, v[None], recal, val_x, val_y)
        _, l_other = single(alpha, w_k[(k + 1) % one_edge.k], stats, v[None], recal, val_x, val_y)
        np.testing.assert_allclose(loss[i], l1[0], rtol=1e-5)
        assert abs(float(loss[i]) - float(l_other[0])) > 1e-6  # another part's weights would show


def test_fair_sampling_trains_every_op_of_every_edge_once_per_step():
    """FairNAS: the fair plan's M paths together visit each candidate of each label exactly
    once per step (gradients summed), and a masked label stays on its allowed op."""
    labels = ["a/e0", "a/e1", "b/e2"]
    for step in range(4):
        paths = fair_paths(jax.random.key(step), {l: jnp.zeros(5) for l in labels})
        for l in labels:
            assert sorted(np.asarray(paths[l]).tolist()) == [0, 1, 2, 3, 4]
    masked = {"a/e0": jnp.asarray([MASKED, MASKED, 0.0, MASKED, MASKED]), "a/e1": jnp.zeros(5)}
    p = fair_paths(jax.random.key(9), masked)
    assert np.asarray(p["a/e0"]).tolist() == [2] * 5 and sorted(np.asarray(p["a/e1"]).tolist()) == [0, 1, 2, 3, 4]

    # The plan itself: a stand-in network whose weight gradient is the one-hot of the op
    # each label ran; the summed gradient is then the visit count per candidate.
    def grads(objective, weights, alpha, stats, batch, key, step, penalty, arch):
        g = {l: jax.nn.one_hot(arch[l].index[0], 5) for l in weights}
        return g, None, (stats, jnp.zeros((2, 3)), jnp.zeros(()), jnp.zeros(()))

    seen = {}

    def apply_weights(state, w_grads, stats):
        seen["g"] = w_grads
        return state

    m = StepMaths(None, None, apply_weights, None, grads)
    state = SearchState(jnp.zeros((), jnp.int32), nnx.State({"alpha": {l: jnp.zeros(5) for l in labels}}),
                        {l: jnp.zeros(5) for l in labels}, {}, None, None, jax.random.key(0))
    plan = fair_weights(m)
    for step in range(3):
        keys = {"weight": jax.random.key(step)}
        r = plan.passes[0].compute(state.replace(step=jnp.asarray(step)), {"train": (jnp.zeros((2, 1)), jnp.zeros(2, jnp.int32))}, keys)
        plan.passes[0].post((state, {}), r)
        for l in labels:
            assert np.asarray(seen["g"][l]).tolist() == [1.0] * 5


@pytest.mark.parametrize("model", ["trees", "ridge"])
def test_combined_estimator_never_sees_the_accuracy_of_an_architecture_it_ranks(tmp_path, require_shared, model):
    """The predictions for queried cells do not change when the table's accuracies of those
    cells change (queried training cells included: they are refitted without); they do
    change when a training cell's accuracy changes (the test can fail)."""
    from dnas.estimate import build_estimator

    src = require_shared("nb201", "nb201_table.csv")
    space = NB201Space()
    est = build_estimator("combined", space, {"train_archs": 12, "table": src, "seed": 0, "model": model})
    train = space.distinct_samples(12, jax.random.key(0))
    others = space.distinct_samples(40, jax.random.key(5))
    others = np.asarray([v for v in others if not any((v == t).all() for t in train)][:8])
    queried = np.concatenate([others, train[:2]])
    before = np.asarray(est.evaluate(jnp.asarray(queried), jax.random.key(0))[0]["combined_acc"])

    def rewrite(cells, name):
        names = {space.arch_str(v) for v in cells}
        with open(src, newline="") as f:
            rows = list(csv.reader(f))
        col = rows[0].index("cifar10_test_200ep")
        for r in rows[1:]:
            if r[1] in names:
                r[col] = "1.0"
        out = tmp_path / name
        with open(out, "w", newline="") as f:
            csv.writer(f).writerows(rows)
        return str(out)

    hidden = build_estimator("combined", space, {"train_archs": 12, "table": rewrite(queried, "q.csv"), "seed": 0, "model": model})
    np.testing.assert_allclose(np.asarray(hidden.evaluate(jnp.asarray(queried), jax.random.key(0))[0]["combined_acc"]), before, rtol=1e-6)
    leaked = build_estimator("combined", space, {"train_archs": 12, "table": rewrite(train[5:], "t.csv"), "seed": 0, "model": model})
    assert not np.allclose(np.asarray(leaked.evaluate(jnp.asarray(queried), jax.random.key(0))[0]["combined_acc"]), before)


@pytest.mark.slow
def test_fewshot_smoke_search_then_dnas_eval_compiles_once(tmp_path, capsys):
    """The few-shot experiment's smoke search trains K stacked sub-supernets; ``dnas eval``
    routes cells to them with one compilation, in the BN mode the run recommends, on its
    whole held-out split by default."""
    from dnas.cli.main import main
    from dnas.run.config import load_config
    from dnas.run.search import run_search

    run = tmp_path / "f"
    # 3 epochs of 2 steps (128 weight-split images, batch 64), the whole split validated every second one.
    c = load_config("experiments/fewshot_nb201/config.py:smoke",
                    ["--config.max_steps=6", "--config.epochs=3", "--config.batch_size=64", "--config.val_every_epochs=2"])
    run_search(c, run, log=lambda m: None)
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "epoch"]
    assert [("epoch_val_acc" in r) for r in epochs] == [False, True, True]
    from dnas.report.show import diagnostic_lines

    rows = [l.split() for l in diagnostic_lines(epochs)[2:]]
    assert [r[1] for r in rows][:1] == ["-"] and all(r[1] != "nan" for r in rows)  # a skipped epoch shows "-"
    capsys.readouterr()
    assert main(["eval", str(run), "--archs", "12", "--chunk", "8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["compiles"] == 1 and out["archs"] == 12 and out["bn"] == "batch"
    assert out["val_examples"] == 128  # config.eval_val_batches=0: the whole held-out half of the 256 images


def test_a_derived_network_inherits_the_sub_supernet_its_genotype_routes_to():
    """``dnas train --init-from`` a few-shot run: the weights come from the genotype's own
    sub-supernet (the stack's leading axis), not sub-supernet 0's."""
    from dnas.estimate.supernet import Supernet
    from dnas.space.fewshot import make_split
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space(layers=1)
    split = make_split(space, [space.labels[0]])
    weights = {"w": jnp.arange(split.k, dtype=jnp.float32)[:, None] * jnp.ones((split.k, 3))}
    stats = {"s": -jnp.arange(split.k, dtype=jnp.float32)}
    sup = Supernet(space, None, None, weights, stats, {"space": "nb201"}, 0, split)
    for op in range(split.k):
        vec = np.zeros(len(space.labels), np.int32)
        vec[0] = op
        w, s = sup.state_for(space.vec_to_genotype(vec))
        k = int(split.route(vec))
        assert np.all(np.asarray(w["w"]) == k) and float(s["s"]) == -k
    assert Supernet(space, None, None, weights, stats, {}, 0, None).state_for(None) == (weights, stats)


@pytest.mark.parametrize("model", ["trees", "ridge"])
def test_combined_model_treats_a_proxys_missing_score_as_its_columns_minimum(model):
    """A proxy's "no score" (-1e30, NaN) is its column's training minimum: the fit and the
    predictions equal those with the minimum written in, and stay finite."""
    from dnas.estimate.combined import fit_feature_groups

    rng = np.random.default_rng(0)
    x, enc = rng.normal(size=(30, 2)), rng.normal(size=(30, 3))
    y = x @ np.array([1.0, -2.0]) + enc[:, 0]
    holes = x.copy()
    holes[3, 0], holes[7, 1] = -1e30, np.nan
    filled = holes.copy()
    filled[3, 0], filled[7, 1] = np.delete(x[:, 0], 3).min(), np.delete(x[:, 1], 7).min()
    new = rng.normal(size=(5, 2))
    new[0, 0] = -1e30
    new_filled = new.copy()
    new_filled[0, 0] = filled[:, 0].min()
    a = fit_feature_groups([holes, enc], y, model)([new, enc[:5]])
    b = fit_feature_groups([filled, enc], y, model)([new_filled, enc[:5]])
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-9)
    with pytest.raises(DnasError, match="unknown"):
        fit_feature_groups([x], y, "forest")
