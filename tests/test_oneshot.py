"""One-shot evaluation: compiled once for many architectures, equal to evaluating each
subnet on its own, BatchNorm recalibration as defined; supernet training by sampled
paths (SPOS/RSPS) and by an ENAS controller; ``dnas eval``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.estimate.oneshot import OneShotEvaluator, make_evaluate
from dnas.space.spaces import NB201Space
from dnas.search.state import split_model


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


def _derived(space, weights, stats, geno, recal_x):
    """The derived network of ``geno`` with the supernet's weights and statistics
    (dnas.estimate.inherit), its statistics recalibrated by hand on ``recal_x`` when it is
    not empty: zeroed, one training-mode pass per batch, divided by ``1 - 0.9^R``."""
    from dnas.estimate.inherit import inherit

    derived = inherit(space, (weights, stats), geno, NB201Space.network(geno, C=4, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1)))
    if len(recal_x):
        nnx.update(derived, jax.tree_util.tree_map(jnp.zeros_like, nnx.state(derived, nnx.BatchStat)))
        derived.train()
        for x in recal_x:
            derived(x)
        nnx.update(derived, jax.tree_util.tree_map(lambda v: v / (1 - 0.9 ** len(recal_x)), nnx.state(derived, nnx.BatchStat)))
    derived.eval()
    return derived


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
    # Only the sampled path's statistics change: the candidates not chosen keep the supernet's.
    from dnas.estimate.oneshot import recalibrated_stats

    new = nnx.to_pure_dict(recalibrated_stats(g_train, alpha, weights, stats, arch, recal_x, 1 - 0.9**3))
    old = nnx.to_pure_dict(stats)
    for stage in (0, 2, 4):
        for e, label in enumerate(space.labels):
            for o, op in old["layers"][stage]["edges"][e]["ops"].items():
                same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(op),
                                                                jax.tree_util.tree_leaves(new["layers"][stage]["edges"][e]["ops"][o])))
                assert same == (int(o) != arch[label]), (stage, label, o)
    assert not np.array_equal(old["stem_bn"]["mean"], new["stem_bn"]["mean"])  # shared layers are on every path


def test_batch_statistics_mode_normalises_each_validation_batch_by_its_own():
    """``batch_stats=True``: each validation batch goes through the subnet in training-mode
    BatchNorm (its own mean and variance), the supernet's statistics are not read."""
    space, net, alpha, weights, stats, val_x, val_y, recal_x = _setup()
    vec = np.asarray(space.sample(jax.random.key(4)))
    evaluate = jax.jit(make_evaluate(space, net, batch_stats=True))
    acc, loss = evaluate(alpha, weights, stats, jnp.asarray(vec[None]), recal_x[:0], val_x, val_y)
    other = jax.tree_util.tree_map(lambda v: v * 3.0 + 1.0, stats)  # any running statistics give the same
    np.testing.assert_allclose(evaluate(alpha, weights, other, jnp.asarray(vec[None]), recal_x[:0], val_x, val_y)[1], loss, rtol=1e-6)
    net.train()
    arch = {l: int(i) for l, i in zip(space.labels, vec)}
    logits = jnp.concatenate([nnx.merge(nnx.graphdef(net), alpha, weights, stats, copy=True)(x, arch).logits for x in val_x])
    y = val_y.reshape(-1)
    np.testing.assert_allclose(float(loss[0]), float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])), rtol=1e-4)
    running = jax.jit(make_evaluate(space, net))(alpha, weights, stats, jnp.asarray(vec[None]), recal_x[:0], val_x, val_y)[1]
    assert abs(float(running[0]) - float(loss[0])) > 1e-4
    with pytest.raises(DnasError, match="exclude each other"):
        make_evaluate(space, net, recalibrate=2, batch_stats=True)


@pytest.fixture(scope="module")
def rsps_run(tmp_path_factory):
    """The RSPS experiment's smoke run (4 steps): a supernet trained by sampled paths, α
    untouched; trained once for the tests that evaluate it."""
    from dnas.run.config import load_config
    from dnas.run.search import run_search

    run = tmp_path_factory.mktemp("rsps") / "s"
    c = load_config("experiments/rsps_nb201/config.py:smoke", ["--config.max_steps=4"])
    run_search(c, run, log=lambda m: None)
    return run


def test_rsps_smoke_supernet_then_oneshot_estimator_and_dnas_eval(rsps_run, tmp_path, capsys):
    """The RSPS experiment's smoke run trains a supernet by sampled paths (α untouched);
    the oneshot estimator and ``dnas eval`` read its checkpoint (one compile for any N)."""
    import json

    from dnas.cli.main import main
    from dnas.estimate import ESTIMATORS

    lines = [json.loads(l) for l in (rsps_run / "metrics.jsonl").read_text().splitlines() if "train_loss" in l]
    assert lines and "val_loss" not in lines[0]  # weights only
    space = NB201Space(layers=1)
    est = ESTIMATORS["oneshot"](space, run_dir=str(rsps_run), recalibrate=1, val_batches=2)
    vecs = jax.numpy.stack([space.sample(jax.random.key(i)) for i in range(3)])
    metrics, cost = est.evaluate(vecs, jax.random.key(0))
    assert metrics["oneshot_acc"].shape == (3,) and np.all((0 <= metrics["oneshot_acc"]) & (metrics["oneshot_acc"] <= 1))
    assert np.all(np.asarray(cost) == 1.0)

    args = ["eval", str(rsps_run), "--archs", "40", "--bn-recalib", "1", "--val-batches", "2", "--chunk", "16",
            "--out", str(tmp_path / "e.csv")]
    capsys.readouterr()
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["archs"] == 40 and out["compiles"] == 1 and out["archs_per_s"] > 0  # 3 chunks, one compile
    assert "kendall_tau" not in out  # no table, no rank correlation
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert len(rows) == 41 and len(set(r.split(",")[0] for r in rows[1:])) == 40  # distinct cells
    assert main(["eval", str(tmp_path / "nothing"), "--archs", "3"]) == 2
    assert "holds no config.json" in capsys.readouterr().err


def test_dnas_eval_rank_quality_is_that_of_its_csv_against_the_table(rsps_run, tmp_path, capsys, require_shared):
    """``dnas eval --table``: the rank correlations and the best cell's true accuracy it
    prints are those of the one-shot accuracies it writes against the benchmark's column,
    recomputed here from the CSV and the table file read directly (scipy, by arch_str)."""
    import csv
    import json

    from scipy.stats import kendalltau, spearmanr

    from dnas.cli.main import main

    table = require_shared("nb201", "nb201_table.csv", why="dnas eval's rank correlation is taken against the benchmark's accuracies")
    with open(table, newline="") as f:
        truth_of = {r["arch_str"]: float(r["cifar10_test_200ep"]) for r in csv.DictReader(f)}
    capsys.readouterr()
    assert main(["eval", str(rsps_run), "--archs", "40", "--bn-recalib", "1", "--val-batches", "2", "--chunk", "16",
                 "--table", table, "--out", str(tmp_path / "e.csv")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and out["metric"] == "cifar10_test_200ep"
    acc = np.array([float(r["oneshot_acc"]) for r in rows])
    truth = np.array([truth_of[r["arch"]] for r in rows])
    np.testing.assert_allclose([float(r["cifar10_test_200ep"]) for r in rows], truth, atol=1e-4)
    assert len(set(acc.tolist())) > 1  # the one-shot accuracies rank something
    assert out["kendall_tau"] == pytest.approx(kendalltau(acc, truth)[0], abs=1e-9)
    assert out["spearman"] == pytest.approx(spearmanr(acc, truth)[0], abs=1e-9)
    assert out["true_acc_of_best"] == pytest.approx(truth[np.argmax(acc)]) and out["true_best"] == pytest.approx(truth.max())


def test_rank_quality_by_hand():
    from dnas.core.stats import rank_quality

    truth = np.arange(20, dtype=float)
    q = rank_quality(truth.copy(), truth)
    assert q["kendall_tau"] == 1.0 and q["spearman"] == 1.0 and q["top10pct_precision"] == 1.0
    q = rank_quality(-truth, truth)
    assert q["kendall_tau"] == -1.0 and q["top10pct_precision"] == 0.0 and q["true_acc_of_best"] == 0.0


def _step_setup(relax, **kw):
    import optax

    from dnas.search.bilevel import make_search_step
    from dnas.search.state import init_search_state

    space = NB201Space(layers=1)
    net = space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    a_opt = kw.pop("a_opt", optax.sgd(1.0))
    graphdef, state = init_search_state(net, optax.sgd(0.1), a_opt, key=jax.random.key(7))
    step = make_search_step(graphdef, optax.sgd(0.1), a_opt, relax=relax, **kw)
    k = jax.random.split(jax.random.key(2), 4)
    train = (jax.random.normal(k[0], (4, 8, 8, 3)), jax.random.randint(k[1], (4,), 0, 3))
    val = (jax.random.normal(k[2], (4, 8, 8, 3)), jax.random.randint(k[3], (4,), 0, 3))
    return space, graphdef, state, step, train, val


def _step_keys(state):
    key_a, key_w, _ = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    return key_a, key_w


def test_spos_step_touches_only_the_sampled_ops_weights():
    """Plain SGD (no momentum, no decay): a weights-only step with a uniformly sampled path
    changes the parameters of the sampled candidate on each edge and of no other."""
    from dnas.space.relax import relax_all, uniform
    from dnas.search.state import alpha_dict

    relax = uniform()
    space, _, state, step, train, val = _step_setup(relax, update_alpha=False)
    new, _ = step(state, train, val)
    sampled = relax_all(relax, _step_keys(state)[1], alpha_dict(state.alpha), 0)
    old_w, new_w = nnx.to_pure_dict(state.weights), nnx.to_pure_dict(new.weights)
    changed_any = 0
    for stage in (0, 2, 4):
        for e, label in enumerate(space.labels):  # edges in label order
            ops = old_w["layers"][stage]["edges"][e]["ops"]
            for o in ops:
                changed = not np.array_equal(ops[o]["conv"]["kernel"], new_w["layers"][stage]["edges"][e]["ops"][o]["conv"]["kernel"])
                if changed:
                    assert int(o) == int(sampled[label].index[0]), (stage, label, o)
                changed_any += changed
    assert changed_any > 0
    np.testing.assert_array_equal(np.asarray(jax.tree_util.tree_leaves(state.alpha)[0]), np.asarray(jax.tree_util.tree_leaves(new.alpha)[0]))


def test_enas_reinforce_step_is_the_policy_gradient_of_the_sampled_path():
    """ENAS' α update by hand: reward = accuracy of the path sampled with the α key on the
    val batch (training-mode BatchNorm), baseline b = (1 - decay) R from 0, and with SGD(1)
    α moves by (R - b) ∇ log π(a) = (R - b)(onehot(a) - π) per label."""
    import optax

    from dnas.search.plans import with_reward_baseline
    from dnas.space.relax import policy, relax_all
    from dnas.search.state import alpha_dict

    relax = policy()
    space, graphdef, state, step, train, val = _step_setup(
        relax, a_opt=with_reward_baseline(optax.sgd(1.0)), alpha_grad="reinforce",
        alpha_grad_kwargs={"entropy_weight": 0.0, "baseline_decay": 0.5},
    )
    # A non-uniform policy, so the update is not symmetric.
    state = state.replace(alpha=jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.key(9), a.shape), state.alpha))
    new, metrics = step(state, train, val)
    alpha0 = alpha_dict(state.alpha)
    arch = relax_all(relax, _step_keys(state)[0], alpha0, 0)
    index = {l: int(a.index[0]) for l, a in arch.items()}
    model = nnx.merge(graphdef, state.alpha, state.weights, state.stats, copy=True)
    reward = float(jnp.mean(jnp.argmax(model(val[0], index).logits, -1) == val[1]))
    np.testing.assert_allclose(float(metrics["val_acc"]), reward, atol=1e-6)
    baseline = 0.5 * reward
    np.testing.assert_allclose(float(new.a_opt.baseline), baseline, atol=1e-6)
    alpha1 = alpha_dict(new.alpha)
    for label, lg in alpha0.items():
        expect = lg + (reward - baseline) * (jax.nn.one_hot(index[label], lg.shape[-1]) - jax.nn.softmax(lg))
        np.testing.assert_allclose(np.asarray(alpha1[label]), np.asarray(expect), atol=1e-5)
    if reward > 0:
        assert any(not np.allclose(alpha1[l], alpha0[l]) for l in alpha0)


def test_enas_smoke_searches_and_resumes_bit_identically(tmp_path, capsys):
    """ENAS' smoke config runs (REINFORCE α, sampled paths); a run resumed from its middle
    checkpoint ends in the same state (α, weights, the controller's Adam, aggregation and
    reward baseline) as the uninterrupted one."""
    import shutil

    from dnas.core.checkpoint import Checkpointer
    from dnas.run.config import load_config
    from dnas.run.search import build_search, run_search

    c = load_config("experiments/enas/config.py:smoke", [])
    run_search(c, tmp_path / "full", log=lambda m: None)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "6")
    run_search(c, tmp_path / "cut", log=lambda m: None)
    like = build_search(c).state
    states = []
    for run in ("full", "cut"):
        ck = Checkpointer(tmp_path / run / "checkpoints")
        assert ck.latest_step() == 6
        states.append(ck.restore(6, like))
        ck.close()
    assert float(states[0].a_opt.baseline) != 0.0  # the baseline moved and was saved
    for a, b in zip(jax.tree_util.tree_leaves(states[0]), jax.tree_util.tree_leaves(states[1])):
        if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    from dnas.search.state import alpha_dict

    moved = [float(np.abs(np.asarray(v) - np.asarray(alpha_dict(like.alpha)[k])).max()) for k, v in alpha_dict(states[0].alpha).items()]
    assert max(moved) > 0
    # ENAS' final selection: architectures drawn from the controller, ranked one-shot.
    import json

    from dnas.cli.main import main

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "full"), "--archs", "12", "--sample", "policy", "--val-batches", "1", "--chunk", "12"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["archs"] == 12 and out["compiles"] == 1 and out["best"].startswith("|")


def test_policy_sampling_follows_the_logits():
    from dnas.cli.eval import sample_policy

    space = NB201Space(layers=1)
    alpha = {l: jnp.array([0.0, 0.0, 0.0, 8.0, 0.0]) for l in space.labels}  # nor_conv_3x3 almost surely
    vecs = sample_policy(space, alpha, jax.nn.log_softmax, 200, jax.random.key(0))
    assert vecs.shape == (200, len(space.labels)) and (vecs == 3).mean() > 0.98


def test_spos_smoke_supernet_then_evolution_over_it(tmp_path):
    """SPOS on the layer-wise mobile space: the supernet by uniform single paths, then
    regularised evolution over it (oneshot accuracy, MACs counted, a hard FLOPs limit)."""
    import json

    from dnas.run.config import load_config
    from dnas.run.search import run_search
    from dnas.run.multitrial import run_multitrial

    c = load_config("experiments/spos/config.py:smoke", ["--config.max_steps=2"])
    run_search(c, tmp_path / "s", log=lambda m: None)
    e = load_config("experiments/spos/config.py:evolution_smoke",
                    [f"--config.estimator_kwargs.base_kwargs.run_dir={tmp_path / 's'}", "--config.budget_s=12"])
    summary = run_multitrial(e, tmp_path / "e", log=lambda m: None)
    assert summary["evals_mean"] == 12 and 0.0 <= summary["test_acc_mean"] <= 1.0
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["strategy"] == "rea"


def test_reinforce_config_is_checked_before_anything_is_written():
    from dnas.run.config import load_config
    from dnas.core.errors import DnasError

    with pytest.raises(DnasError, match="relax='policy'"):
        load_config("experiments/enas/config.py:smoke", ["--config.relax=softmax", "--config.relax_kwargs={}"])
    with pytest.raises(DnasError, match="reinforce accepts"):
        load_config("experiments/enas/config.py:smoke", ["--config.alpha_grad_kwargs.entropy=0.1"])
    with pytest.raises(DnasError, match="order=1"):
        load_config("experiments/enas/config.py:smoke", ["--config.order=2"])


def test_a_second_process_on_a_running_workdir_is_refused(tmp_path):
    """The run-directory lock: held, a second run is refused with one line (pid named);
    released, the directory is usable again."""
    import subprocess
    import sys

    from dnas.core.errors import DnasError
    from dnas.run.driver import WorkdirLock

    lock = WorkdirLock(tmp_path)
    code = ("import sys; from dnas.run.driver import WorkdirLock; from dnas.core.errors import DnasError\n"
            "try:\n    WorkdirLock(sys.argv[1])\nexcept DnasError as e:\n    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3 and "in use by a running dnas process" in r.stdout and str(__import__("os").getpid()) in r.stdout
    lock.release()
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    held = WorkdirLock(tmp_path)  # flock is per open file: a second open in the same process conflicts too
    with pytest.raises(DnasError, match="in use"):
        WorkdirLock(tmp_path)
    held.release()
    # The lock comes before the config: a run starting on a new directory another process
    # has just locked is refused without writing its config.json there.
    from dnas.run.search import search_defaults
    from dnas.run.search import run_search

    fresh = tmp_path / "new"
    fresh.mkdir()
    held = WorkdirLock(fresh)
    with pytest.raises(DnasError, match="in use"):
        run_search(search_defaults(), fresh)
    assert not (fresh / "config.json").exists()
    held.release()
    with pytest.raises(DnasError, match="holds no run"):
        run_search(None, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_evaluator_equals_the_derived_network_with_inherited_weights():
    """What the one-shot evaluator reports for a cell is what the derived (discrete)
    network, built with the supernet's weights (dnas.estimate.inherit) and the same statistics,
    computes on the same batches: with the running statistics, and with statistics
    recalibrated on the same batches in training mode."""
    from dnas.space.genotype import NB201Genotype

    space, net, alpha, weights, stats, val_x, val_y, recal_x = _setup(recal=2)
    nnx.update(net, stats)
    ev0 = OneShotEvaluator(space, net, alpha, weights, stats, np.asarray(val_x), np.asarray(val_y), np.asarray(recal_x[:0]), chunk=2)
    ev2 = OneShotEvaluator(space, net, alpha, weights, stats, np.asarray(val_x), np.asarray(val_y), np.asarray(recal_x), chunk=2)
    cells = ["|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
             "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|"]
    for cell in cells:
        geno = NB201Genotype.parse(cell)
        vec = space.genotype_to_vec(geno)[None]
        for ev, recal in ((ev0, 0), (ev2, 2)):
            out = ev.evaluate(vec)
            derived = _derived(space, weights, stats, geno, recal_x[:recal])  # the same recalibration by hand
            logits = jnp.concatenate([derived(x).logits for x in val_x])
            y = val_y.reshape(-1)
            np.testing.assert_allclose(out["acc"][0], float(jnp.mean(jnp.argmax(logits, -1) == y)), atol=1e-6)
            np.testing.assert_allclose(out["loss"][0], float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])), rtol=1e-4)
    vec = space.genotype_to_vec(NB201Genotype.parse(cells[0]))[None]
    assert abs(float(ev0.evaluate(vec)["loss"][0]) - float(ev2.evaluate(vec)["loss"][0])) > 1e-4  # the two settings differ


def test_recalibration_resets_a_batchnorm_that_reads_an_all_zero_node():
    """Node 1's only incoming edge is ``none``, so node 1 is exactly zero and the 3x3 conv of
    edge 1 -> 2 sees only zeros: its BatchNorm runs, and its recalibrated statistics are
    exactly zero (mean 0, variance 0), as in the derived network recalibrated on the same
    batches. They must not be mistaken for "did not run" and replaced by the supernet's."""
    from dnas.estimate.oneshot import recalibrated_stats
    from dnas.space.genotype import NB201Genotype
    from dnas.space.spaces.nb201 import EDGES

    space, net, alpha, weights, stats, val_x, val_y, recal_x = _setup(recal=2)
    cell = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|"
    geno = NB201Genotype.parse(cell)
    vec = space.genotype_to_vec(geno)
    conv = space.ops.index("nor_conv_3x3")
    assert vec[space.labels.index("cell/edge_1_0")] == space.ops.index("none") and vec[space.labels.index("cell/edge_2_1")] == conv
    # The statistics themselves, with traced indices (lax.switch, as the evaluator runs them).
    net.train()
    g_train = nnx.graphdef(net)
    recal = jax.jit(lambda v: recalibrated_stats(g_train, alpha, weights, stats, space.to_inputs(v), recal_x, 1 - 0.9**2))
    new = nnx.to_pure_dict(recal(jnp.asarray(vec)))
    old = nnx.to_pure_dict(stats)
    e = EDGES.index((2, 1))
    for stage in (0, 2, 4):
        bn, bn_old = new["layers"][stage]["edges"][e]["ops"][conv]["bn"], old["layers"][stage]["edges"][e]["ops"][conv]["bn"]
        assert np.any(np.asarray(bn_old["mean"]) != 0)  # the supernet's statistics would differ
        np.testing.assert_array_equal(np.asarray(bn["mean"]), 0.0, err_msg=f"stage {stage}: kept the supernet's mean")
        np.testing.assert_array_equal(np.asarray(bn["var"]), 0.0, err_msg=f"stage {stage}: kept the supernet's variance")
    # What the evaluator reports equals the derived network recalibrated on the same batches.
    ev = OneShotEvaluator(space, net, alpha, weights, stats, np.asarray(val_x), np.asarray(val_y), np.asarray(recal_x), chunk=1)
    out = ev.evaluate(vec[None])
    derived = _derived(space, weights, stats, geno, recal_x)
    logits = jnp.concatenate([derived(x).logits for x in val_x])
    y = val_y.reshape(-1)
    np.testing.assert_allclose(out["loss"][0], float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])), rtol=1e-4)
    np.testing.assert_allclose(out["acc"][0], float(jnp.mean(jnp.argmax(logits, -1) == y)), atol=1e-6)
