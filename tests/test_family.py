"""The DARTS family (issue 20): each method's own maths, the collapse diagnostics, and each
method's smoke config running a search end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dnas.search.diagnostics import darts_es, hvp, param_free_ops, top_hessian_eigenvalue
from dnas.core.errors import DnasError
from dnas.search.methods import METHODS, apply_method, delayed, dirichlet_kl_uniform, make_arch_penalty
from dnas.space.mixed import Alpha, MixedOp, channel_shuffle
from dnas.space.ops.layers import max_pool
from dnas.space.relax import make_relaxation
from dnas.space.spaces import DartsSearchNetwork, DartsSpace
from dnas.core.types import Sampled

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
FAMILY = ("gdas", "snas", "pc_darts", "drnas", "fair_darts")


# ----- diagnostics -------------------------------------------------------------------------


def test_power_iteration_finds_the_top_eigenvalue_of_a_known_quadratic():
    """f(x) = ½ xᵀAx has Hessian A: the top eigenvalue of a random symmetric A (dense
    eigendecomposition), also when the largest-magnitude eigenvalue is negative."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for eigs in ([3.0, 1.0, 0.5, -0.2, -1.0, 0.1], [0.4, -5.0, -2.0, 0.1, 0.2, -0.3]):
        a = jnp.asarray(q @ np.diag(eigs) @ q.T, jnp.float32)
        # A pytree argument (two leaves), as α is.
        f = lambda p: 0.5 * jnp.concatenate([p["u"], p["v"]]) @ a @ jnp.concatenate([p["u"], p["v"]])  # noqa: E731
        params = {"u": jnp.ones(2), "v": jnp.zeros(4)}
        lam = jax.jit(lambda p: top_hessian_eigenvalue(f, p, key=jax.random.key(1), iters=200))(params)
        assert float(lam) == pytest.approx(max(eigs), abs=1e-3)


def test_hvp_equals_finite_differences_of_the_gradient():
    f = lambda p: jnp.sum(jnp.sin(p["a"]) * p["b"] ** 2) + jnp.sum(p["a"] ** 3)  # noqa: E731
    p = {"a": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array([1.5, 0.2, -0.4])}
    v = {"a": jnp.array([0.2, 0.1, -0.3]), "b": jnp.array([-0.5, 0.4, 0.1])}
    eps = 1e-3
    g = jax.grad(f)
    plus = g(jax.tree_util.tree_map(lambda x, d: x + eps * d, p, v))
    minus = g(jax.tree_util.tree_map(lambda x, d: x - eps * d, p, v))
    fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * eps), plus, minus)
    exact = hvp(f, p, v)
    for k in p:
        np.testing.assert_allclose(np.asarray(exact[k]), np.asarray(fd[k]), rtol=2e-3, atol=2e-4)


def test_hessian_eigenvalue_of_a_mixing_objective_matches_dense_eigendecomposition():
    """A tiny 'space' (3 edges x 4 ops, softmax mixing of fixed op outputs, cross-entropy):
    power iteration on exact HVPs equals the top eigenvalue of the dense Hessian."""
    outs = jax.random.normal(jax.random.key(0), (3, 4, 8, 5))  # edge, op, batch, class
    y = jnp.arange(8) % 5

    def loss(alpha):
        logits = sum(jnp.einsum("o,obc->bc", jax.nn.softmax(alpha[f"e{e}"]), outs[e]) for e in range(3))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    alpha = {f"e{e}": jax.random.normal(jax.random.key(e + 1), (4,)) for e in range(3)}
    flat, unravel = jax.flatten_util.ravel_pytree(alpha)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda z: loss(unravel(z)))(flat)))
    lam = top_hessian_eigenvalue(loss, alpha, key=jax.random.key(3), iters=300)
    assert float(lam) == pytest.approx(dense.max(), rel=1e-3, abs=1e-5)


def test_darts_es_triggers_on_a_rising_eigenvalue_series_and_not_on_a_flat_one():
    flat = [1.0] * 30
    assert all(darts_es(flat[: e + 1]) is None for e in range(30))
    # Flat until epoch 14, then rising 30 % per epoch: local averages of 5 lag 2 epochs.
    rising = [1.0] * 15 + [1.3**k for k in range(1, 15)]
    hits = [e for e in range(len(rising)) if darts_es(rising[: e + 1]) is not None]
    e = hits[0]
    la = lambda j: np.mean(rising[max(0, j - 4) : j + 1])  # noqa: E731
    assert la(e) / la(e - 4) > 1.3 and la(e - 1) / la(e - 5) <= 1.3  # the first epoch over the threshold
    assert darts_es(rising[: e + 1]) == e - 2 - 4  # the architecture from before the rise
    assert darts_es([1.0] * 8 + [100.0]) is None  # before es_start_epoch nothing stops


def test_param_free_ops_counts_by_op_metadata():
    from dnas.space import genotype as G

    geno = G.get("DARTS_V2")
    counts = param_free_ops(geno)
    # DARTS_V2: two skip connections in the normal cell; four max pools and four skips in the reduction cell.
    assert counts == {"normal": 2, "reduce": 8}
    assert param_free_ops(G.get("|skip_connect~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")) == {"cell": 6}


# ----- relaxations, penalties, optimizers ------------------------------------------------


def test_drnas_kl_regulariser_by_hand():
    # Dir(2, 1) is Beta(2, 1) with density 2x: KL to the uniform = ∫ 2x log(2x) dx = log 2 - 1/2.
    assert float(dirichlet_kl_uniform(jnp.array([2.0, 1.0]))) == pytest.approx(math.log(2) - 0.5, rel=1e-5)
    assert float(dirichlet_kl_uniform(jnp.ones(5))) == pytest.approx(0.0, abs=1e-5)
    # The penalty: scale · Σ over labels with β = elu(α) + 1; α = 1 -> β = 2, α = 0 -> β = 1.
    pen = make_arch_penalty("dirichlet_kl", {"scale": 0.5})
    logits = {"normal/edge_2_0": jnp.array([1.0, 0.0]), "normal/edge_2_1": jnp.array([0.0, 0.0]), "normal/beta_node_2": jnp.array([5.0, -5.0])}
    assert float(pen(logits, {}, jnp.int32(0))) == pytest.approx(0.5 * (math.log(2) - 0.5), rel=1e-5)


def test_fair_darts_zero_one_loss_by_hand():
    pen = make_arch_penalty("zero_one", {"weight": 10.0})
    # σ(0) = 0.5, σ(log 3) = 0.75, σ(-log 3) = 0.25: squared distances 0, 1/16, 1/16.
    logits = {"a": jnp.array([0.0, math.log(3)]), "b": jnp.array([-math.log(3), 0.0])}
    assert float(pen(logits, {}, jnp.int32(0))) == pytest.approx(-10.0 * (2 / 16) / 4, rel=1e-6)
    assert float(make_relaxation("sigmoid")(None, jnp.array([math.log(3)]), 0)[0]) == pytest.approx(0.75)
    with pytest.raises(DnasError, match="accepts: weight"):
        make_arch_penalty("zero_one", {"scale": 1.0})


def test_delayed_alpha_optimizer_freezes_then_moves():
    opt = delayed(optax.adam(0.1), 3)
    p = jnp.ones(2)
    s = opt.init(p)
    for i in range(5):
        u, s = opt.update(jnp.array([1.0, -1.0]), s, p)
        moved = bool(jnp.any(u != 0))
        assert moved == (i >= 3)
        if i == 3:  # Adam's first real step: its moments start here (lr · sign)
            np.testing.assert_allclose(np.asarray(u), [-0.1, 0.1], rtol=1e-4)


def test_method_names_are_one_set_with_experiment_configs():
    from dnas.run.config import load_config

    for name in FAMILY:
        assert name in METHODS.names()
        c = load_config(f"experiments/{name}/config.py:smoke")
        for k, v in METHODS[name].items():
            got = c[k].to_dict() if hasattr(c[k], "to_dict") else c[k]
            if k == "space_kwargs":
                assert all(got[s] == x for s, x in v.items()), (name, k)
            elif k != "a_warmup_epochs":  # the smoke shortens the warm-up
                assert got == v, (name, k)


# ----- PC-DARTS ----------------------------------------------------------------------------


def test_channel_shuffle_by_hand():
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)
    # groups of 4 x 2 channels: [0 1 | 2 3 | 4 5 | 6 7] -> [0 2 4 6 1 3 5 7]
    np.testing.assert_array_equal(np.asarray(channel_shuffle(x, 4)).ravel(), [0, 2, 4, 6, 1, 3, 5, 7])
    np.testing.assert_array_equal(np.asarray(channel_shuffle(x, 1)), np.asarray(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channels_pass_one_kth_through_the_ops_and_shuffle(stride):
    k, c = 4, 8
    op = MixedOp("e", ("skip_connect", "max_pool_3x3", "sep_conv_3x3"), c, c, stride, pool_bn=False, partial_channels=k, rngs=nnx.Rngs(0))
    conv = op.ops[2]
    kernels = [l for l in jax.tree_util.tree_leaves(nnx.state(conv, nnx.Param)) if l.ndim == 4]
    assert kernels and all(kk.shape[-1] == c // k for kk in kernels)  # ops are built at C/K channels
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, c))
    w = jnp.array([0.2, 0.3, 0.5])
    xa, rest = x[..., : c // k], x[..., c // k :]
    mixed = sum(w[i] * op.ops[i](xa) for i in range(3))
    if stride == 2:
        rest = max_pool(rest, 2, 2, 0)
    want = channel_shuffle(jnp.concatenate([mixed, rest], -1), k)
    np.testing.assert_allclose(np.asarray(op(x, w)), np.asarray(want), rtol=1e-5, atol=1e-6)
    # Index and sampled paths go through the same split.
    np.testing.assert_allclose(np.asarray(op(x, jnp.int32(2))), np.asarray(channel_shuffle(jnp.concatenate([op.ops[2](xa), rest], -1), k)), rtol=1e-5, atol=1e-6)
    with pytest.raises(DnasError, match="partial_channels=3"):
        MixedOp("e", OPS4, 8, 8, 1, partial_channels=3, rngs=nnx.Rngs(0))


def _net(**kw):
    space = DartsSpace(layers=3, nodes=2, ops=OPS4, **kw)
    return space, DartsSearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))


def _weights(space, key, net=None):
    alpha = nnx.to_pure_dict(nnx.state(net, Alpha))["alpha"] if net is not None else {}
    out = {l: jax.nn.softmax(jax.random.normal(jax.random.fold_in(key, i), (len(space.ops),))) for i, l in enumerate(space.labels)}
    out.update({l: jax.nn.softmax(3 * v) for l, v in alpha.items() if "beta" in l})
    return out


def test_pc_darts_with_k1_equals_darts_and_edge_norm_is_the_same_in_every_cell_impl():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    space, darts = _net()
    _, k1 = _net(partial_channels=1)
    arch = _weights(space, jax.random.key(1))
    np.testing.assert_allclose(np.asarray(k1(x, arch).logits), np.asarray(darts(x, arch).logits), rtol=1e-6, atol=1e-6)
    # β: the relaxed per-node weights scale each input edge; scan, batch and unrolled agree,
    # and a non-uniform β changes the output.
    outs = {}
    for impl in ("scan", "batch", "unrolled"):
        space_b, net = _net(edge_norm=True, cell_impl=impl, partial_channels=2)
        arch_b = _weights(space_b, jax.random.key(1), net)
        for l, v in nnx.to_pure_dict(nnx.state(net, Alpha))["alpha"].items():
            if "beta" in l:
                arch_b[l] = jax.nn.softmax(jnp.arange(v.shape[0], dtype=jnp.float32))
        outs[impl] = np.asarray(net(x, arch_b).logits)
        assert sorted(space_b.beta_labels()) == ["normal/beta_node_2", "normal/beta_node_3", "reduce/beta_node_2", "reduce/beta_node_3"]
    np.testing.assert_allclose(outs["batch"], outs["scan"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs["unrolled"], outs["scan"], rtol=1e-5, atol=1e-6)
    arch_u = {**arch_b, **{l: jnp.ones_like(v) for l, v in arch_b.items() if "beta" in l}}
    assert not np.allclose(np.asarray(net(x, arch_u).logits), outs["unrolled"], atol=1e-5)


def test_beta_enters_the_derivation():
    space = DartsSpace(layers=3, nodes=2, ops=OPS4, edge_norm=True)
    alpha = {l: jnp.zeros(4) for l in space.labels}
    alpha.update({l: jnp.zeros(n) for l, n in space.beta_labels().items()})
    # Node 3's op weights: input 2 weakest, inputs 0 and 1 strongest.
    alpha["normal/edge_3_0"] = jnp.array([0.0, 0.0, 0.0, 3.0])
    alpha["normal/edge_3_1"] = jnp.array([0.0, 0.0, 2.5, 0.0])
    alpha["normal/edge_3_2"] = jnp.array([0.0, 2.0, 0.0, 0.0])
    assert [i for _, i in space.derive(alpha).normal.edges[2:]] == [0, 1]
    # β strongly prefers inputs 1 and 2 of node 3: edge strength β_i · max w_i flips it.
    alpha["normal/beta_node_3"] = jnp.array([-4.0, 2.0, 2.0])
    assert space.derive(alpha).normal.edges[2:] == (("skip_connect", 1), ("max_pool_3x3", 2))
    with pytest.raises(DnasError, match="α lacks labels"):
        space.derive({l: alpha[l] for l in space.labels})


def test_drnas_derives_from_the_dirichlet_mean():
    """Edges ranked by the Dirichlet mean (elu(α)+1 normalised) differ from softmax's
    ranking here, and the drnas space follows the mean."""
    mean = DartsSpace(layers=3, nodes=1, ops=OPS4, keep=1, derive_weights="dirichlet_mean")
    soft = DartsSpace(layers=3, nodes=1, ops=OPS4, keep=1)
    alpha = {l: jnp.zeros(4) for l in soft.labels}
    alpha["normal/edge_2_0"] = jnp.array([0.0, 0.0, 0.0, 2.0])  # sep_conv: mean 3/6, softmax e²/(3+e²) = 0.71
    alpha["normal/edge_2_1"] = jnp.array([-1.5, -1.5, -1.5, 0.0])  # sep_conv: mean = softmax = 0.60
    m = lambda a: (jax.nn.elu(a) + 1) / jnp.sum(jax.nn.elu(a) + 1)  # noqa: E731
    assert float(m(alpha["normal/edge_2_0"])[3]) < float(m(alpha["normal/edge_2_1"])[3])
    assert float(jax.nn.softmax(alpha["normal/edge_2_0"])[3]) > float(jax.nn.softmax(alpha["normal/edge_2_1"])[3])
    assert mean.derive(alpha).normal.edges == (("sep_conv_3x3", 1),)
    assert soft.derive(alpha).normal.edges == (("sep_conv_3x3", 0),)


def test_gdas_forward_is_the_sampled_op_scaled_and_its_alpha_gradient_the_soft_ones():
    op = MixedOp("e", OPS4, 4, 4, 1, pool_bn=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    relax = make_relaxation("gdas", {"tau_max": 2.0, "tau_min": 1.0}, epochs=3)
    logits = jnp.array([0.1, -0.3, 0.8, 0.2])
    s = relax(jax.random.key(5), logits, jnp.int32(0))
    assert isinstance(s, Sampled)
    i = int(s.index[0])
    np.testing.assert_allclose(np.asarray(op(x, s)), np.asarray(s.weight[i] * op.ops[i](x)), rtol=1e-6)
    # α-gradient (GDAS' estimator): ⟨∂L/∂y, op_i(x)⟩ times the soft Gumbel sample's
    # gradient ∂p_i/∂α, for the sampled op i alone.
    graphdef, state = nnx.split(op)
    run = lambda a: nnx.merge(graphdef, state, copy=True)(x, a)  # noqa: E731 - BatchNorm state stays outside grad
    g_sampled = jax.grad(lambda l: jnp.sum(run(relax(jax.random.key(5), l, jnp.int32(0))) ** 2))(logits)
    y_i = run(jnp.int32(i))
    dp_i = jax.grad(lambda l: relax(jax.random.key(5), l, jnp.int32(0)).weight[i])(logits)
    np.testing.assert_allclose(np.asarray(g_sampled), np.asarray(jnp.vdot(2 * y_i, y_i) * dp_i), rtol=1e-4, atol=1e-5)
    assert np.any(np.asarray(g_sampled) != 0)


# ----- smoke searches ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", FAMILY)
def test_method_smoke_search_runs_and_logs_diagnostics(tmp_path, method, monkeypatch):
    """Each method's smoke config searches a few steps (on embedded digits, 2 epochs) and
    ends with the genotype its α derives; the epoch lines carry the diagnostics. The GDAS
    run also logs the Hessian eigenvalue and, with DARTS-ES forced to fire after epoch 2,
    ends with the genotype of the epoch the rule names (read back from alpha.jsonl)."""
    import dnas.run.search
    from dnas.space import genotype as G
    from dnas.run.config import load_config
    from dnas.run.search import build_space, run_search

    # Tiny programs (3 ops, one node per DARTS cell): compile time dominates on CPU.
    ops = "none,skip_connect,nor_conv_1x1" if method == "drnas" else "max_pool_3x3,skip_connect,sep_conv_3x3"
    over = ["--config.dataset=digits", "--config.data_dir=", "--config.max_train_examples=64", "--config.max_steps=4",
            "--config.batch_size=16", "--config.augment=false", f"--config.space_kwargs.ops={ops}"]
    if method != "drnas":
        over.append("--config.space_kwargs.nodes=1")
    if method == "gdas":
        over += ["--config.hessian_iters=2", "--config.early_stop=true"]
        monkeypatch.setattr(dnas.run.search, "darts_es", lambda evs: 0 if len(evs) == 2 else None)
    config = load_config(f"experiments/{method}/config.py:smoke", over)
    geno = run_search(config, tmp_path / "w", log=lambda s: None)
    assert G.load(tmp_path / "w" / "genotype.json") == geno
    lines = [json.loads(l) for l in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    epochs = [l for l in lines if l.get("event") == "epoch"]
    space = build_space(config)
    alphas = [json.loads(l) for l in (tmp_path / "w" / "alpha.jsonl").read_text().splitlines()]
    assert set(alphas[-1]["softmax"]) == set(space.labels)
    assert len(epochs) == 2 and all("param_free_ops" in e for e in epochs)
    # The logged α entropy is the mean over the op choices (not PC-DARTS' β) of the entropy
    # in nats of the softmax that alpha.jsonl records for the same epoch, by hand here. Both
    # read the same float32 softmax values, so they agree to float64 rounding; the tolerance
    # is that tight because 4 smoke steps move α little (the entropy is a few 1e-6 below log k).
    softmax_of = {a["epoch"]: a["softmax"] for a in alphas}
    for e in epochs:
        probs = [np.asarray(softmax_of[e["epoch"]][l], np.float64) for l in space.labels]
        hand = np.mean([-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)) for p in probs])
        assert e["epoch_alpha_entropy"] == pytest.approx(hand, rel=0, abs=1e-9), e["epoch"]
    if method == "gdas":
        assert all(np.isfinite(e["hessian_eigenvalue"]) for e in epochs)
        stop = [l for l in lines if l.get("event") == "early_stop"]
        assert stop and stop[0]["stop_epoch"] == 1
        assert geno == space.derive(alphas[0]["logits"])
        # Re-running the stopped run does not search on.
        assert run_search(None, tmp_path / "w", log=lambda s: None) == geno
    if method == "pc_darts":
        assert set(alphas[-1]["beta"]) == set(space.beta_labels())
