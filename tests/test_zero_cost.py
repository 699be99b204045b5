"""Zero-cost proxies against hand computations on a 2-layer network, and one compilation
for many architectures of the NB201 supernet."""

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
