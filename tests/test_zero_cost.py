"""Zero-cost proxies against hand computations on a 2-layer network, one compilation for
many architectures of the NB201 supernet, and on every registered space the scorer's
values against the same proxies computed directly on the derived network."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.estimate.zero_cost.proxies import PROXIES, ProxyNet, check_names, vote
from dnas.estimate.zero_cost.score import code_kernel

B, D, H, K = 6, 5, 7, 3


def _mlp(w1_shape=(D, H)):
    """``relu(x W1) W2`` as a ProxyNet: gates on both layers' outputs, codes of the ReLU input."""

    def apply(p, x, g=None):
        g = gates if g is None else g
        pre = (x @ p["w1"]) * g["w1"]
        logits = (jax.nn.relu(pre) @ p["w2"]) * g["w2"]
        return logits, code_kernel(pre)

    def apply_linear(p, x):
        return jax.nn.relu(x @ p["w1"]) @ p["w2"]

    gates = {"w1": jnp.ones((B, H)), "w2": jnp.ones((B, K))}
    return ProxyNet(apply, apply_linear, gates, {"params": jnp.asarray(D * H + H * K), "flops": jnp.asarray(D * H + H * K)})


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        p = {"w1": jnp.asarray(rng.normal(size=(D, H))), "w2": jnp.asarray(rng.normal(size=(H, K)))}
        x, y = jnp.asarray(rng.normal(size=(B, D))), jnp.asarray(rng.integers(0, K, B), jnp.int32)
        yield _mlp(), p, (x, y)


def _hand_grads(w1, w2, x, y):
    """Backprop of the mean cross-entropy by hand: (dW1, dW2, pre, dpre, logits, dlogits)."""
    pre = x @ w1
    h = np.maximum(pre, 0)
    logits = h @ w2
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    dlogits = (prob - np.eye(K)[y]) / len(y)
    dpre = (dlogits @ w2.T) * (pre > 0)
    return x.T @ dpre, h.T @ dlogits, pre, dpre, logits, dlogits


def _score(name, net, p, batch):
    with jax.enable_x64(True):
        return float(PROXIES[name](net, p, batch, jax.random.key(0)))


def test_gradient_proxies_by_hand(problem):
    net, p, (x, y) = problem
    w1, w2, xn, yn = (np.asarray(a) for a in (p["w1"], p["w2"], x, y))
    dw1, dw2, pre, dpre, logits, dlogits = _hand_grads(w1, w2, xn, yn)
    np.testing.assert_allclose(_score("grad_norm", net, p, (x, y)), np.linalg.norm(dw1) + np.linalg.norm(dw2), rtol=1e-9)
    np.testing.assert_allclose(_score("snip", net, p, (x, y)), np.abs(w1 * dw1).sum() + np.abs(w2 * dw2).sum(), rtol=1e-9)
    # Fisher: per sample and channel, act * dL/dact (no spatial axes here), squared, batch mean, halved.
    hand = sum((0.5 * np.mean((a * g) ** 2, 0)).sum() for a, g in ((pre, dpre), (logits, dlogits)))
    np.testing.assert_allclose(_score("fisher", net, p, (x, y)), hand, rtol=1e-9)
    # GraSP: -θ ⊙ Hg, Hg by central differences of the hand gradient along g.
    eps = 1e-5
    plus = _hand_grads(w1 + eps * dw1, w2 + eps * dw2, xn, yn)
    minus = _hand_grads(w1 - eps * dw1, w2 - eps * dw2, xn, yn)
    hg1, hg2 = (plus[0] - minus[0]) / (2 * eps), (plus[1] - minus[1]) / (2 * eps)
    np.testing.assert_allclose(_score("grasp", net, p, (x, y)), -(w1 * hg1).sum() - (w2 * hg2).sum(), rtol=1e-6)


def test_synflow_by_hand(problem):
    net, p, batch = problem
    a1, a2 = np.abs(np.asarray(p["w1"])), np.abs(np.asarray(p["w2"]))
    # R = 1ᵀ|W1||W2|1 on an all-ones input (every unit positive, the ReLU is the identity):
    # dR/dW1[i,j] = (|W2| 1)_j, dR/dW2[j,k] = (1ᵀ|W1|)_j.
    hand = (a1 * a2.sum(1)[None, :]).sum() + (a2 * a1.sum(0)[:, None]).sum()
    np.testing.assert_allclose(_score("synflow", net, p, batch), hand, rtol=1e-12)


def test_naswot_and_jacob_cov_by_hand(problem):
    net, p, (x, y) = problem
    w1, w2, xn = np.asarray(p["w1"]), np.asarray(p["w2"]), np.asarray(x)
    c = (xn @ w1 > 0).astype(float)
    kern = c @ c.T + (1 - c) @ (1 - c).T
    np.testing.assert_allclose(np.asarray(net.apply(p, x)[1]), kern)
    np.testing.assert_allclose(_score("naswot", net, p, (x, y)), np.linalg.slogdet(kern)[1], rtol=1e-9)
    assert PROXIES["hook_logdet"] is PROXIES["naswot"]
    jac = (c * w2.sum(1)[None, :]) @ w1.T  # d(sum logits)/dx per sample
    lam = np.linalg.eigvalsh(np.corrcoef(jac))
    np.testing.assert_allclose(_score("jacob_cov", net, p, (x, y)), -np.sum(np.log(lam + 1e-5) + 1 / (lam + 1e-5)), rtol=1e-6)


def test_baselines_vote_and_names(problem):
    net, p, batch = problem
    assert _score("params", net, p, batch) == D * H + H * K
    s = {"synflow": np.array([3.0, 1.0, 2.0]), "jacob_cov": np.array([1.0, 3.0, 2.0]), "snip": np.array([3.0, 2.0, 1.0])}
    # pairwise majorities: 0>1 (2 of 3), 0>2 (2 of 3), 2 vs 1: synflow 2>1, jacob 2<3, snip 1<2 -> 1>2
    np.testing.assert_array_equal(vote(s), [2.0, 1.0, 0.0])
    assert "vote" in check_names("all") and "synflow" in check_names("all")
    with pytest.raises(DnasError, match="unknown zero-cost proxy 'synflw'"):
        check_names("synflw,naswot")


def test_one_compilation_for_many_nb201_cells():
    from dnas.hardware.counts import count_params
    from dnas.space.genotype import NB201Genotype
    from dnas.space.spaces.nb201 import NB201Network, NB201Space
    from dnas.estimate.zero_cost.score import ZeroCostScorer, cost_tables, lookup_cost

    space = NB201Space(layers=1)
    scorer = ZeroCostScorer(space, ("synflow", "naswot"), C=4, num_classes=10, in_channels=3, batch_shape=(8, 8, 8, 3))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)
    archs = np.array([[0, 0, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3], [1, 2, 3, 4, 1, 2], [4, 1, 0, 2, 3, 3]], np.int32)
    key = jax.random.key(0)
    s = scorer.score(archs, (x, y), key)
    again = scorer.score(archs[::-1], (x, y), key)
    assert scorer.compiles == 1
    # an architecture's weights come from its own key: the same scores in any position
    np.testing.assert_allclose(again["synflow"][::-1], s["synflow"], rtol=1e-12)
    # all-`none` cells output zeros, so no path joins input and logits: synflow is 0
    assert s["synflow"][0] == 0.0 and s["synflow"][1] > 0.0
    assert len(set(np.round(s["naswot"], 6))) == 4
    # params from the per-choice tables equal a directly built derived network's count
    tables = cost_tables(space, C=4, num_classes=10, in_channels=3, hw=(8, 8))
    vec = archs[3]
    geno = NB201Genotype.from_arch_str(
        "|" + "|+|".join("|".join(f"{space.ops[vec[space.index(f'cell/edge_{j}_{i}')]]}~{i}" for i in range(j)) for j in (1, 2, 3)) + "|"
    )
    from flax import nnx

    net = NB201Network(geno, C=4, N=1, num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
    assert float(lookup_cost(tables, jnp.asarray(vec))["params"]) == count_params(net)
    with pytest.raises(DnasError, match="archs must be int32"):
        scorer.score(archs[:, :3], (x, y), key)


def test_zero_cost_estimator_and_cli_errors(capsys):
    import dnas.estimate.zero_cost  # noqa: F401  (registers the estimator)
    from dnas.estimate import ESTIMATORS
    from dnas.space.spaces.nb201 import NB201Space
    from dnas.cli.main import main_zero_cost

    est = ESTIMATORS["zero_cost"](NB201Space(layers=1), proxies="naswot", dataset="synthetic", batch_size=8, C=4)
    archs = jnp.asarray([[3, 3, 3, 3, 3, 3], [1, 1, 1, 1, 1, 1]], jnp.int32)
    m, cost = est.evaluate(archs, jax.random.key(5))
    m2, _ = est.evaluate(archs[::-1], jax.random.key(6))
    assert m["naswot"].shape == (2,) and cost.shape == (2,) and np.all(np.asarray(cost) > 0)
    np.testing.assert_allclose(np.asarray(m2["naswot"])[::-1], np.asarray(m["naswot"]), rtol=1e-6)
    assert est.metrics == ("naswot",) and not est.pure
    assert main_zero_cost(["--proxies", "synflow,nope", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown zero-cost proxy 'nope'" in err[0]


def test_smash_hypernetwork_generates_the_ops_weights():
    from flax import nnx

    from dnas.estimate.hypernet import GENERATED, Smash, _cells
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space(layers=1)
    sm = Smash(space, C=4, num_classes=10, in_channels=3, key=jax.random.key(0))
    a, b = jnp.asarray([3, 3, 3, 3, 3, 3]), jnp.asarray([2, 3, 2, 2, 0, 3])
    ga, gb = sm.generated(a), sm.generated(b)
    net = nnx.merge(sm.gd_n, sm.p_n, sm.rest)
    for op in GENERATED:
        j = space.ops.index(op)
        for s, cell in enumerate(_cells(net)):  # one cell per stage at N=1
            for e, edge in enumerate(cell.edges):
                assert ga[op][s][e].shape == edge.ops[j].conv.kernel.shape
            assert not np.allclose(ga[op][s], gb[op][s])  # the weights depend on the architecture
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)
    acc, loss = sm.rank(np.stack([a, b, a]), x, y)
    assert sm.traces["eval"] == 1 and loss[0] == loss[2] and loss[0] != loss[1]


# ----- synflow outside the scorer --------------------------------------------------------


def test_synflow_is_float64_wherever_it_is_called():
    """Weights of 1e20 (finite in float32) make R pass float32's 3.4e38: synflow must still
    give the hand value when called in JAX's default 32-bit mode, eagerly or jitted."""
    assert not jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    big = {"w1": rng.normal(size=(D, H)).astype(np.float32) * np.float32(1e20), "w2": rng.normal(size=(H, K)).astype(np.float32) * np.float32(1e20)}
    a1, a2 = np.abs(big["w1"]).astype(np.float64), np.abs(big["w2"]).astype(np.float64)
    hand = (a1 * a2.sum(1)[None, :]).sum() + (a2 * a1.sum(0)[:, None]).sum()
    assert hand > 1e40
    net, params = _mlp(), {k: jnp.asarray(v) for k, v in big.items()}
    batch = (jnp.asarray(rng.normal(size=(B, D)), jnp.float32), jnp.zeros((B,), jnp.int32))
    eager = PROXIES["synflow"](net, params, batch, jax.random.key(0))
    jitted = jax.jit(lambda q: PROXIES["synflow"](net, q, batch, jax.random.key(0)))(params)
    for got in (eager, jitted):
        assert got.dtype == np.float64
        np.testing.assert_allclose(float(got), hand, rtol=1e-12)


# ----- every registered space: the scorer against the derived network ---------------------

ALL_PROXIES = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "naswot", "params", "flops")


@contextlib.contextmanager
def _taps(rec: dict):
    """The published hooks, by patching the functions a derived network calls: every
    ReLU/ReLU6 adds its input's code kernel to ``rec["codes"]`` (nas-without-training hooks
    every ReLU module), every convolution (``layers.conv2d``) and linear layer output is
    multiplied by the next gate of ``rec["gates"]`` (zero-cost-nas' fisher hooks every
    Conv2d/Linear output) and its ``(B, C)`` appended to ``rec["shapes"]``."""
    from flax import nnx

    from dnas.space.ops import layers

    relu, relu6, conv2d, linear = jax.nn.relu, jax.nn.relu6, layers.conv2d, nnx.Linear.__call__

    def codes(x):
        c = (x > 0).reshape(x.shape[0], -1).astype(jnp.float32)
        rec["codes"].append(c @ c.T + (1 - c) @ (1 - c).T)
        return x

    def tap(y):
        k = len(rec["shapes"])
        rec["shapes"].append((y.shape[0], y.shape[-1]))
        if rec["gates"] is not None:
            g = rec["gates"][k]
            y = y * g.reshape(g.shape[:1] + (1,) * (y.ndim - 2) + g.shape[1:]).astype(y.dtype)
        return y

    jax.nn.relu, jax.nn.relu6 = (lambda x: relu(codes(x))), (lambda x: relu6(codes(x)))
    layers.conv2d = lambda *a, **k: tap(conv2d(*a, **k))
    nnx.Linear.__call__ = lambda self, x: tap(linear(self, x))
    try:
        yield
    finally:
        jax.nn.relu, jax.nn.relu6, layers.conv2d, nnx.Linear.__call__ = relu, relu6, conv2d, linear


def _reference(derived, x_shape):
    """A ProxyNet of a derived network that shares nothing with the scorer's probes."""
    from flax import nnx

    from dnas.hardware.counts import count_params, model_macs
    from dnas.space.ops.layers import BatchNorm

    gd, params, rest = nnx.split(derived, lambda path, v: isinstance(v, nnx.Param) and path[-1] == "kernel", ...)
    rec = {"codes": [], "shapes": [], "gates": None}

    def apply(p, x, g=None):
        rec.update(codes=[], shapes=[], gates=g)
        with _taps(rec):
            logits = nnx.merge(gd, p, rest, copy=True)(x).logits
        return logits, sum(rec["codes"])

    lin = nnx.merge(gd, params, rest, copy=True)
    for _, m in nnx.iter_modules(lin):  # zero-cost-nas' copy without BN: mean 0, var 1, eps 0
        if isinstance(m, BatchNorm):
            m.use_running_average, m.eps = True, 0.0
    gd_lin = nnx.graphdef(lin)

    def apply_linear(p, x):
        absrest = jax.tree_util.tree_map(lambda a: jnp.abs(a).astype(x.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, rest)
        return nnx.merge(gd_lin, p, absrest, copy=True)(x).logits

    jax.eval_shape(lambda p: apply(p, jnp.zeros(x_shape, jnp.float32))[0], params)
    gates = [jnp.ones(s, jnp.float32) for s in rec["shapes"]]
    cost = {"params": float(count_params(derived)), "flops": float(model_macs(derived, (1, *x_shape[1:])))}
    return ProxyNet(apply, apply_linear, gates, cost), params


def _concrete_scores(space, archs, batch, key, *, C, classes, proxies):
    """Scores of the scorer's probed network built *eagerly* and called with concrete
    indices: mixed ops call their chosen op, so neither the supernet's initialiser nor a
    switch over the candidates is compiled (for a space too big to compile in index mode
    here). One supernet's weights serve every architecture; returns them too."""
    from flax import nnx

    from dnas.estimate.zero_cost.score import arch_keys, probe_net

    x, y = jnp.asarray(batch[0]), jnp.asarray(batch[1])
    out = {n: np.zeros(len(archs)) for n in proxies}
    with jax.enable_x64(True):
        supernet = space.supernet(C=C, num_classes=classes, in_channels=x.shape[-1], rngs=nnx.Rngs(params=arch_keys(key, jnp.zeros(1, jnp.int32))[0]))
        state = nnx.state(supernet, (nnx.Param, nnx.BatchStat))
        for a, vec in enumerate(archs):
            net, params = probe_net(nnx.clone(supernet), space, np.asarray(vec, np.int32), batch=x.shape[0], cost={"params": 0.0, "flops": 0.0})
            for n, v in jax.jit(lambda p: {n: PROXIES[n](net, p, (x, y), key) for n in proxies})(params).items():
                out[n][a] = float(v)
    return out, state


def _check_against_derived(space, archs, *, C, batch=4, hw=8, in_channels=3, classes=5, proxies=ALL_PROXIES, index=True):
    """Scores ``archs`` with the scorer (``index``: the supernet in index mode, one program
    for all; else :func:`_concrete_scores`) and each proxy directly on the derived network
    initialised with the scorer's weights (:func:`dnas.estimate.inherit.inherit`); they
    must agree. Returns the scorer's scores."""
    from flax import nnx

    from dnas.estimate.inherit import inherit
    from dnas.estimate.zero_cost.score import ZeroCostScorer, derived_network, genotype_of

    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, hw, hw, in_channels)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    key = jax.random.key(7)
    if index:
        scorer = ZeroCostScorer(space, proxies, C=C, num_classes=classes, in_channels=in_channels, batch_shape=x.shape)
        got = scorer.score(np.asarray(archs, np.int32), (x, y), key)
        assert scorer.compiles == 1
        weights = lambda vec: scorer.network_state(vec, key)  # noqa: E731
    else:
        got, state = _concrete_scores(space, archs, (x, y), key, C=C, classes=classes, proxies=proxies)
        weights = lambda vec: state  # noqa: E731
    for a, vec in enumerate(archs):
        geno = genotype_of(space, np.asarray(vec))
        derived = derived_network(space, geno, C=C, num_classes=classes, in_channels=in_channels, rngs=nnx.Rngs(0))
        inherit(space, weights(vec), geno, derived)
        ref, params = _reference(derived, x.shape)
        with jax.enable_x64(True):
            want = jax.jit(lambda p: {n: PROXIES[n](ref, p, (jnp.asarray(x), jnp.asarray(y)), key) for n in proxies})(params)
        for n in proxies:
            # Measured: float32 gradients agree to ~3e-6; codes, float64 synflow and costs exactly.
            tol = {"synflow": 1e-10, "naswot": 1e-12, "params": 0, "flops": 0}.get(n, 1e-4)
            np.testing.assert_allclose(got[n][a], float(want[n]), rtol=tol, err_msg=f"{n} of architecture {a} {space.names(np.asarray(vec))}")
    return got


@pytest.mark.slow  # ~1-1.5 min each on one CPU core, most of it XLA compiling
def test_nb201_scores_are_the_derived_networks():
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space(layers=1, ops=("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))  # one op per module class
    got = _check_against_derived(space, [[2, 1, 3, 2, 0, 3], [3, 2, 2, 1, 2, 0]], C=4)
    assert np.all(np.isfinite([got[n] for n in ALL_PROXIES])) and np.all(got["naswot"][0] != got["naswot"][1])


@pytest.mark.slow  # ~1-1.5 min each on one CPU core, most of it XLA compiling
def test_darts_scores_are_the_derived_networks(tiny_ops):
    """The scan cells (EdgeScan: probes with a leading edge axis), a normal cell and two
    reduction cells (FactorizedReduce preprocessing, skip_connect on strided edges),
    sep convs (DilConv's kernels read directly) and pools (whose search-only BN the
    derived network lacks)."""
    from dnas.space.spaces.darts_cnn import DartsSpace

    space = DartsSpace(layers=3, nodes=2, ops=tiny_ops)
    # Each last (reduction) cell has a pool: were every node a sum of train-mode BN outputs,
    # sum_batch(logits) would not depend on x and jacob_cov would compare rounding noise.
    a = space.encode({**{l: "sep_conv_3x3" for l in space.labels}, "normal/edge_3_2": "none", "reduce/edge_3_0": "none",
                      "reduce/edge_3_2": "max_pool_3x3"})
    b = space.encode({**{l: "max_pool_3x3" for l in space.labels}, "normal/edge_2_1": "skip_connect", "normal/edge_3_0": "none",
                      "reduce/edge_2_0": "skip_connect", "reduce/edge_3_1": "none", "reduce/edge_3_2": "sep_conv_3x3"})
    assert space.is_valid(a) and space.is_valid(b)
    got = _check_against_derived(space, [a, b], C=4)
    assert np.all(np.isfinite([got[n] for n in ALL_PROXIES]))


@pytest.mark.slow  # ~1-1.5 min each on one CPU core, most of it XLA compiling
def test_proxylessnas_scores_are_the_derived_networks():
    """MBConv's ReLU6 are NASWOT ReLUs too (MBConv1 has one, MBConv3 two), the head is
    ``fc``, and a zero block is dropped from the derived network."""
    from dnas.space.spaces.proxylessnas import ProxylessSpace

    # Two stages (24, 40), the second of two blocks: its second block keeps the shape and may be zero.
    space = ProxylessSpace(layers=2, ops=("mb_k3_e3",), width_stages=(24, 40), n_cell_stages=(1, 2), stride_stages=(2, 1))
    a = space.encode({l: "mb_k3_e3" for l in space.labels})
    b = space.encode({**{l: "mb_k3_e3" for l in space.labels}, space.labels[-1]: "zero"})
    got = _check_against_derived(space, [a, b], C=8)
    assert np.all(np.isfinite([got[n] for n in ALL_PROXIES]))


@pytest.mark.slow  # ~1-1.5 min each on one CPU core, most of it XLA compiling
def test_fbnet_probes_are_the_derived_networks():
    """FBNet's 22 layers of 9 candidates take minutes to compile in index mode on CPU, so
    this checks the probed network with concrete indices (chosen ops only; the switch
    machinery is the other spaces' tests'), on mostly-``skip`` architectures: FBNetSkip,
    the residual block, the grouped block with its channel shuffle, the stem and head
    ReLUs. ``params``/``flops`` come from the same derived-network tables as elsewhere."""
    from dnas.space.spaces.fbnet import FBNetSpace

    # The candidates the two architectures use (built eagerly, the 9-op supernet compiled
    # one program per op and shape: ~2/3 of this test's time).
    space = FBNetSpace(ops=("k3_e1_g2", "skip", "k3_e3", "k5_e6"))
    skip = {l: "skip" for l in space.labels}
    # One architecture with every module kind (two used to split them: each compiles the
    # probed and the reference network once more).
    a = space.encode({**skip, "layer00/op": "k3_e3", "layer01/op": "k3_e1_g2", "layer05/op": "k3_e1_g2", "layer06/op": "k5_e6"})
    proxies = tuple(n for n in ALL_PROXIES if n not in ("params", "flops"))
    # 16x16 inputs: at 8x8 the last stages are 1x1, BatchNorm normalises 4 values, and
    # float32 grasp moved by 3% between two compilations of one function (float64: agree).
    got = _check_against_derived(space, [a], C=4, hw=16, proxies=proxies, index=False)
    assert np.all(np.isfinite([got[n] for n in proxies]))


def test_probes_refuse_modules_they_do_not_know():
    """A ResNet bottleneck's last ReLU follows a sum, no probe site: NASWOT would miss it."""
    from dnas.estimate.zero_cost.score import ZeroCostScorer
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space(layers=1, ops=("none", "resnet_bottleneck"))
    kw = dict(C=4, num_classes=5, in_channels=3, batch_shape=(4, 8, 8, 3))
    with pytest.raises(DnasError, match=r"fisher, naswot cannot score space 'nb201'.*do not know its modules Bottleneck") as e:
        ZeroCostScorer(space, ("synflow", "naswot", "fisher"), **kw)
    assert "\n" not in str(e.value)
    ZeroCostScorer(space, ("synflow", "snip"), **kw)  # these read no probes


def test_pc_darts_is_scored_at_its_derived_width(tiny_ops):
    """PC-DARTS' supernet runs the candidates on C/K channels, its derived network on C: the
    scorer draws the full-width network (abstractly here: nothing is compiled)."""
    from flax import nnx

    from dnas.estimate.zero_cost.score import ZeroCostScorer
    from dnas.space.spaces.darts_cnn import DartsSpace

    def shapes(space):
        net = nnx.eval_shape(lambda: space.supernet(C=4, num_classes=5, in_channels=3, rngs=nnx.Rngs(0)))
        return jax.tree.map(jnp.shape, nnx.state(net, (nnx.Param, nnx.BatchStat)))

    pc = DartsSpace(layers=1, nodes=1, ops=tiny_ops, partial_channels=2)
    scorer = ZeroCostScorer(pc, ("naswot",), C=4, num_classes=5, in_channels=3, batch_shape=(4, 8, 8, 3))
    drawn = jax.tree.map(jnp.shape, jax.eval_shape(lambda: scorer.network_state(np.zeros(len(pc), np.int32), jax.random.key(0))))
    assert drawn == shapes(DartsSpace(layers=1, nodes=1, ops=tiny_ops)) != shapes(pc)
    assert pc.partial_channels == 2  # the caller's space is not changed
