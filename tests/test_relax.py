"""Relaxations: the contract every registered one keeps, temperature schedules with a
floor, and sampled paths that run only the chosen ops yet give α its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.mixed import EdgeScan, MixedOp
from dnas.space.relax import RELAXATIONS, exponential_temperature, linear_temperature, make_relaxation
from dnas.core.types import Sampled

LOGITS = jnp.array([0.5, -1.0, 2.0, 0.0])


@pytest.mark.parametrize("name", RELAXATIONS.names())
def test_relaxation_contract(name):
    """Weights sum to one and are non-negative, or sampled indices are valid and distinct
    with straight-through weights of value 1 on the candidates the forward uses (0 on
    candidates run only for the gradient); jittable; same key, same output; α gets a
    finite gradient (zero for SPOS' uniform, which ignores α, and ENAS' policy, whose α
    learns by REINFORCE)."""
    relax = make_relaxation(name, epochs=10)
    out = jax.jit(relax)(jax.random.key(0), LOGITS, jnp.int32(3))
    again = relax(jax.random.key(0), LOGITS, jnp.int32(3))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(again)))
    if isinstance(out, Sampled):
        idx = np.asarray(out.index)
        assert out.index.dtype == jnp.int32 and idx.ndim == 1 and len(set(idx.tolist())) == len(idx)
        assert np.all((0 <= idx) & (idx < 4)) and out.weight.shape == (4,)
        w = np.asarray(out.weight)[idx]
        assert np.all((np.abs(w - 1) < 1e-6) | (np.abs(w) < 1e-6)) and np.any(np.abs(w - 1) < 1e-6)
        value = lambda l: jnp.sum(relax(jax.random.key(0), l, jnp.int32(3)).weight * jnp.arange(4.0))  # noqa: E731
    elif name == "sigmoid":  # Fair DARTS: independent weights in (0, 1), no sum constraint
        np.testing.assert_allclose(np.asarray(out), 1 / (1 + np.exp(-np.asarray(LOGITS))), rtol=1e-6)
        value = lambda l: jnp.sum(relax(jax.random.key(0), l, jnp.int32(3)) * jnp.arange(4.0))  # noqa: E731
    else:
        assert out.shape == (4,) and np.all(np.asarray(out) >= -1e-6)
        np.testing.assert_allclose(float(jnp.sum(out)), 1.0, rtol=1e-5)
        value = lambda l: jnp.sum(relax(jax.random.key(0), l, jnp.int32(3)) * jnp.arange(4.0))  # noqa: E731
    g = np.asarray(jax.grad(value)(LOGITS))
    assert np.all(np.isfinite(g))
    assert np.any(g != 0) == (name not in ("uniform", "policy"))


def test_temperatures_are_per_epoch_schedules_with_a_floor():
    exp = exponential_temperature(5.0, 0.956, 0.1)
    assert float(exp(jnp.int32(0))) == pytest.approx(5.0)
    assert float(exp(jnp.int32(10))) == pytest.approx(5.0 * 0.956**10, rel=1e-5)
    assert float(exp(jnp.int32(10_000))) == pytest.approx(0.1)  # per-step decay reached 0 and NaN
    lin = linear_temperature(10.0, 0.1, 250)  # GDAS: 10 -> 0.1 over 250 epochs
    assert float(lin(jnp.int32(0))) == pytest.approx(10.0)
    assert float(lin(jnp.int32(249))) == pytest.approx(0.1, abs=1e-5)
    assert float(lin(jnp.int32(500))) == pytest.approx(0.1)
    # A gradient through the floored Gumbel-softmax stays finite at large epochs.
    relax = make_relaxation("gumbel")
    g = jax.grad(lambda l: jnp.sum(relax(jax.random.key(1), l, jnp.int32(100_000)) * jnp.arange(4.0)))(LOGITS * 30)
    assert np.all(np.isfinite(np.asarray(g)))


def test_make_relaxation_names_bad_arguments():
    with pytest.raises(DnasError, match="takes no argument 'temp'"):
        make_relaxation("gumbel", {"temp": 1.0})
    with pytest.raises(DnasError, match="unknown relaxation 'gumble'"):
        make_relaxation("gumble")
    assert make_relaxation("gdas", {"tau_max": 5.0}, epochs=3) is not None


OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def test_sampled_paths_equal_straight_through_mixing_in_value_and_alpha_gradient():
    """Running only the sampled ops scaled by the straight-through weight is the mixed op
    with those weights (every op computed): same output, same α-gradient."""
    g, st = nnx.split(MixedOp("e", OPS, 4, 4, 1, pool_bn=False, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    target = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    for name, kw in (("gdas", {}), ("binary_gate", {"paths": 2})):
        relax = make_relaxation(name, kw, epochs=5)

        def loss(logits, sampled):
            s = relax(jax.random.key(2), logits, jnp.int32(1))
            a = s if sampled else s.weight * jnp.zeros(4).at[s.index].set(1.0)
            return jnp.sum(nnx.merge(g, st, copy=True)(x, a) * target)

        v_s, g_s = jax.value_and_grad(loss)(LOGITS, True)
        v_m, g_m = jax.value_and_grad(loss)(LOGITS, False)
        np.testing.assert_allclose(v_s, v_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g_s, g_m, rtol=1e-4, atol=1e-5)
        assert np.any(np.asarray(g_s) != 0)


def test_sampled_mixed_op_runs_only_the_sampled_ops():
    """The program of a sampled edge holds the candidates as switch branches (one runs),
    not as a sum of every candidate."""
    op = MixedOp("e", OPS, 4, 4, 1, pool_bn=False, rngs=nnx.Rngs(0))
    g, st = nnx.split(op)
    x = jnp.ones((2, 6, 6, 4))
    f = lambda st, a: nnx.merge(g, st)(x, a)  # noqa: E731
    sampled = str(jax.make_jaxpr(f)(st, Sampled(jnp.array([3], jnp.int32), jnp.eye(4)[3])))
    mixed = str(jax.make_jaxpr(f)(st, jnp.eye(4)[3]))
    assert "cond" in sampled and "cond" not in mixed


def test_edge_scan_with_sampled_paths_equals_edges_one_by_one():
    labels = ["c/e0", "c/e1", "c/e2"]
    scan = EdgeScan(labels, [0, 1, 2], [2, 2, 3], OPS, 4, 1, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 2, 5, 5, 4))
    relax = make_relaxation("gdas", epochs=4)
    arch = {l: relax(jax.random.key(i), LOGITS + i, jnp.int32(0)) for i, l in enumerate(labels)}
    got = scan(x, arch)
    g, st = nnx.split(scan.op)
    want = x
    for e, l in enumerate(labels):
        op = nnx.merge(g, jax.tree_util.tree_map(lambda v: v[e], st))
        want = want.at[[2, 2, 3][e]].add(op(want[[0, 1, 2][e]], arch[l]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_binary_gate_two_paths_forward_is_the_active_path_and_gradient_is_the_papers():
    """ProxylessNAS' two-path mode: the forward is the active drawn candidate alone; the
    α-gradient is Σ_j ∂L/∂g_j p'_j (δ_ij - p'_i) over the two drawn candidates, p' their
    renormalised probabilities (zero for candidates not drawn)."""
    relax = make_relaxation("binary_gate", {"paths": 2})
    logits = jnp.array([0.3, -0.2, 1.1, 0.4, -0.7])
    c = jnp.array([1.5, -2.0, 0.7, 3.0, -1.0])  # each candidate's output; L = Σ_j g_j c_j
    for seed in range(6):
        key = jax.random.key(seed)
        s = relax(key, logits, jnp.int32(0))
        drawn = [int(i) for i in np.asarray(s.index)]
        assert len(set(drawn)) == 2
        w = np.asarray(s.weight)
        active = int(np.argmax(w))
        assert active in drawn and abs(w[active] - 1.0) < 1e-6 and np.sum(np.abs(w) > 1e-6) == 1
        value, grad = jax.value_and_grad(lambda a: jnp.sum(relax(key, a, jnp.int32(0)).weight[s.index] * c[s.index]))(logits)
        assert float(value) == pytest.approx(float(c[active]), rel=1e-5)
        p = jax.nn.softmax(logits[jnp.asarray(drawn)])
        hand = np.zeros(5)
        for a, i in enumerate(drawn):
            hand[i] = sum(float(c[j]) * float(p[b]) * ((a == b) - float(p[a])) for b, j in enumerate(drawn))
        np.testing.assert_allclose(np.asarray(grad), hand, rtol=1e-5, atol=1e-7)
