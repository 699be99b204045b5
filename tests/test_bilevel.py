"""The bi-level step: isolation of the two updates, exact second order, no recompiles."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dnas.search.bilevel import darts_alpha_optimizer, darts_weight_optimizer, make_search_step
from dnas.hardware.counts import _subjaxprs
from dnas.space.mixed import Alpha
from dnas.space.relax import gumbel
from dnas.space.spaces import DartsSearchNetwork, DartsSpace, NB201SearchNetwork, NB201Space
from dnas.search.state import alpha_dict, init_search_state

OPS3 = ("none", "skip_connect", "sep_conv_3x3")


def _setup(order=1, w_opt=None, layers=1, steps=2, ops=OPS3, C=2, impl="scan"):
    space = DartsSpace(layers=layers, nodes=steps, ops=ops)
    net = DartsSearchNetwork(space, C=C, num_classes=3, impl=impl, rngs=nnx.Rngs(0))
    w_opt = w_opt or darts_weight_optimizer(steps_per_epoch=10)
    a_opt = darts_alpha_optimizer()
    g, state = init_search_state(net, w_opt, a_opt, key=jax.random.key(0))
    step = make_search_step(g, w_opt, a_opt, order=order)
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 3))
    y = jnp.array([0, 1, 2, 0])
    xv = jax.random.normal(jax.random.key(2), (4, 6, 6, 3))
    return space, g, state, step, (x, y), (xv, y)


def _to_float64(tree):
    return jax.tree_util.tree_map(lambda v: v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def _same(a, b):
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("order", [1, 2])
def test_updates_touch_only_their_variables(order):
    _, _, state, step, train, val = _setup(order)
    after_w, _ = jax.jit(step.weight_update)(state, train)
    assert _same(after_w.alpha, state.alpha)
    assert not _same(after_w.weights, state.weights)
    after_a, _ = jax.jit(step.alpha_update)(state, train, val)
    assert _same(after_a.weights, state.weights)
    assert not _same(after_a.alpha, state.alpha)


def test_second_order_is_exact_hypergradient():
    # Plain SGD (no clip/momentum) with a large lr makes the second-order term visible.
    with jax.enable_x64(True):
        space = DartsSpace(layers=1, nodes=1, ops=OPS3)
        net = DartsSearchNetwork(space, C=2, num_classes=3, rngs=nnx.Rngs(0))
        w_opt = optax.sgd(0.5)
        g, state = init_search_state(net, w_opt, optax.sgd(1.0), key=jax.random.key(0))
        state = _to_float64(state)
        # Non-uniform α so the softmax is not at a symmetric point.
        state = state.replace(alpha=jax.tree_util.tree_map(lambda a: a + jnp.arange(a.shape[0], dtype=a.dtype) * 0.3, state.alpha))
        x = jax.random.normal(jax.random.key(1), (4, 5, 5, 3), jnp.float64)
        xv = jax.random.normal(jax.random.key(2), (4, 5, 5, 3), jnp.float64)
        y = jnp.array([0, 1, 2, 0])
        # Capture the α gradient by using an optimizer whose update is -grad.
        grads = {}
        for order, hyper in ((1, "exact"), (2, "exact"), ("fd", "finite_difference"), ("fwd", "forward_difference")):
            step = make_search_step(g, w_opt, optax.sgd(1.0), order=order if order in (1, 2) else 2, hypergradient=hyper)
            new, _ = step.alpha_update(state, (x, y), (xv, y))
            grads[order] = jax.tree_util.tree_map(lambda a, b: a - b, state.alpha, new.alpha)

        def objective(alpha):
            def loss(weights, alpha, batch):
                m = nnx.merge(g, alpha, weights, state.stats, copy=True)
                arch = {l: jax.nn.softmax(a) for l, a in alpha_dict(alpha).items()}
                return optax.softmax_cross_entropy_with_integer_labels(m(batch[0], arch).logits, batch[1]).mean()

            gw = jax.grad(loss)(state.weights, alpha, (x, y))
            unrolled = jax.tree_util.tree_map(lambda w, d: w - 0.5 * d, state.weights, gw)
            return loss(unrolled, alpha, (xv, y))

        direction = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(7), a.shape, a.dtype), state.alpha)
        eps = 1e-5
        plus = objective(jax.tree_util.tree_map(lambda a, d: a + eps * d, state.alpha, direction))
        minus = objective(jax.tree_util.tree_map(lambda a, d: a - eps * d, state.alpha, direction))
        fd = (plus - minus) / (2 * eps)
        dot = lambda t: sum(jnp.vdot(a, d) for a, d in zip(jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(direction)))  # noqa: E731
        assert float(dot(grads[2])) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
        assert abs(float(dot(grads[1])) - float(fd)) > 1e-4 * max(1.0, abs(float(fd)))
        # DARTS' finite-difference Hessian-vector product recovers the second-order term up
        # to its step (ε·v has norm 0.01, across ReLU kinks): here 99% of it.
        gap_first = abs(float(dot(grads[1])) - float(fd))
        assert abs(float(dot(grads["fd"])) - float(fd)) < 0.05 * gap_first
        # The one-sided difference has an O(ε) error instead of O(ε²): further off (here
        # it recovers 98% of the second-order term), and checked below to be closer to
        # the true value than first order by the same margin.
        gap_fwd = abs(float(dot(grads["fwd"])) - float(fd))
        assert gap_fwd < 0.05 * gap_first

        # And it is DARTS' Eq. 7-8 as written in their architect.py, for plain SGD (ξ = 0.5):
        # ∇α L_val(w') - ξ (∇α L_train(w+) - ∇α L_train(w-)) / 2R, w± = w ± R ∇w' L_val,
        # R = 0.01 / ||∇w' L_val||.
        def loss(weights, alpha, batch):
            m = nnx.merge(g, alpha, weights, state.stats, copy=True)
            arch = {l: jax.nn.softmax(a) for l, a in alpha_dict(alpha).items()}
            return optax.softmax_cross_entropy_with_integer_labels(m(batch[0], arch).logits, batch[1]).mean()

        gw = jax.grad(loss)(state.weights, state.alpha, (x, y))
        unrolled = jax.tree_util.tree_map(lambda w, d: w - 0.5 * d, state.weights, gw)
        d_alpha, d_w = jax.grad(loss, argnums=(1, 0))(unrolled, state.alpha, (xv, y))
        R = 0.01 / optax.tree.norm(d_w)
        w_plus = jax.tree_util.tree_map(lambda w, v: w + R * v, state.weights, d_w)
        w_minus = jax.tree_util.tree_map(lambda w, v: w - R * v, state.weights, d_w)
        g_plus = jax.grad(loss, argnums=1)(w_plus, state.alpha, (x, y))
        g_minus = jax.grad(loss, argnums=1)(w_minus, state.alpha, (x, y))
        darts = jax.tree_util.tree_map(lambda d, p, m: d - 0.5 * (p - m) / (2 * R), d_alpha, g_plus, g_minus)
        chex.assert_trees_all_close(grads["fd"], darts, rtol=1e-9, atol=1e-12)
        # One-sided, along v = -ξ ∇w' L_val (so at w-): ∇α L_train(w) in place of ∇α L_train(w+)
        # and R for 2R.
        g_here = jax.grad(loss, argnums=1)(state.weights, state.alpha, (x, y))
        one_sided = jax.tree_util.tree_map(lambda d, h, m: d - 0.5 * (h - m) / R, d_alpha, g_here, g_minus)
        chex.assert_trees_all_close(grads["fwd"], one_sided, rtol=1e-9, atol=1e-12)
        assert gap_fwd > abs(float(dot(grads["fd"])) - float(fd))  # and Eq. 8 is closer


def test_unknown_hypergradient_is_rejected():
    space = DartsSpace(layers=1, nodes=1, ops=OPS3)
    net = DartsSearchNetwork(space, C=2, num_classes=3, rngs=nnx.Rngs(0))
    g, _ = nnx.split(net)
    with pytest.raises(ValueError, match="hypergradient must be one of"):
        make_search_step(g, optax.sgd(0.1), optax.sgd(0.1), order=2, hypergradient="hessian")


def test_search_step_compiles_once():
    _, _, state, step, train, val = _setup(order=1)
    traced = chex.assert_max_traces(step.__call__, n=1)
    jitted = jax.jit(traced, donate_argnums=(0,))
    metrics = []
    for i in range(5):
        state, m = jitted(state, train, val)
        metrics.append(m)
    assert int(state.step) == 5
    assert all(np.isfinite(float(m["train_loss"])) for m in metrics)
    assert float(metrics[0]["w_lr"]) == pytest.approx(0.025)
    chex.clear_trace_counter()


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("order", [1, 2])
def test_passes_of_a_step_share_each_differentiated_edge_scan(order, fuse):
    """Every pass differentiates an edge scan with the same tangent pattern, so JAX builds
    its linearized and transposed forms once per step (trace time halves at paper size).
    The one cell here is a reduction cell with two edge scans (stride 2 and 1): however
    many passes the step has (2 in first order, 5 in second), its jaxpr holds one
    forward and one transposed program per scan. Fused, the passes are iterations of one
    loop, so the step calls each of them once, in first and second order alike."""
    _, g, state, _, train, val = _setup(order)
    w_opt, a_opt = darts_weight_optimizer(steps_per_epoch=10), darts_alpha_optimizer()
    step = make_search_step(g, w_opt, a_opt, order=order, fuse_passes=fuse)
    jaxpr = jax.make_jaxpr(step.__call__)(state, train, val)
    programs, calls = set(), 0

    def walk(j):
        nonlocal calls
        for eqn in j.eqns:
            if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"].startswith("run"):
                programs.add(id(eqn.params["jaxpr"]))
                calls += 1
            for sub in _subjaxprs(eqn.params):  # dnas.hardware.counts's walker, which also covers older JAX
                walk(sub)

    walk(jaxpr.jaxpr)
    passes = 1 if fuse else (2 if order == 1 else 5)
    assert calls == 4 * passes
    assert len(programs) == 4


def _comparable(state):
    return state.replace(rng=jax.random.key_data(state.rng))  # typed keys have no allclose


@pytest.mark.parametrize(
    "order,impl,hyper", [(1, "scan", None), (2, "scan", "finite_difference"), (2, "scan", "forward_difference"), (1, "batch", None)]
)
def test_fused_step_equals_the_passes_run_one_after_the_other(order, impl, hyper):
    """The fused step (passes as iterations of one loop, gradients gated per pass) is the
    unfused step: same α, weights, BN statistics, optimizer states and metrics. A
    penalty on the mixing weights (on in the α passes only) and a Gumbel relaxation
    (a key per pass) check that each iteration sees its own pass's objective and key.

    Second order runs in float64 and must agree to 1e-10: in float32 its finite
    difference divides rounding noise by 2ε, and Adam's first α steps (about ±lr
    whatever the gradient's size) turn a flipped sign of a near-zero α-gradient into a
    3e-4 jump, so fused and unfused float32 runs wander apart over steps (each from the
    float64 run too, by turns; benchmarks/RESULTS.md) without either being wrong."""
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
    x64 = order == 2
    with jax.enable_x64(x64):
        space, g, state, _, train, val = _setup(order, layers=3, ops=ops, impl=impl)
        if x64:
            state, train, val = (_to_float64(t) for t in (state, train, val))
        w_opt, a_opt = darts_weight_optimizer(steps_per_epoch=10), darts_alpha_optimizer()
        penalty = lambda logits, arch, step: 0.3 * sum(w[3] + w[4] for w in arch.values())  # noqa: E731
        kw = dict(order=order, relax=gumbel(tau=2.0), arch_penalty=penalty, hypergradient=hyper or "finite_difference")
        fused = jax.jit(make_search_step(g, w_opt, a_opt, fuse_passes=True, **kw).__call__)
        unfused = jax.jit(make_search_step(g, w_opt, a_opt, fuse_passes=False, **kw).__call__)
        s_f, s_u = state, state
        for _ in range(2):  # the second step starts from non-zero momentum and Adam moments
            (s_f, m_f), (s_u, m_u) = fused(s_f, train, val), unfused(s_u, train, val)
        tol = dict(rtol=1e-10, atol=1e-12) if x64 else dict(rtol=2e-5, atol=2e-6)
        chex.assert_trees_all_close(_comparable(s_f), _comparable(s_u), **tol)
        chex.assert_trees_all_close(m_f, m_u, **tol)
        assert jax.tree_util.tree_leaves(s_f.weights)[0].dtype == (jnp.float64 if x64 else jnp.float32)
        assert float(m_f["penalty"]) > 0
        assert not _same(s_f.alpha, state.alpha) and not _same(s_f.weights, state.weights) and not _same(s_f.stats, state.stats)


def test_fused_step_falls_back_when_batches_differ_in_shape():
    _, g, state, _, train, val = _setup(1)
    w_opt, a_opt = darts_weight_optimizer(steps_per_epoch=10), darts_alpha_optimizer()
    short_val = jax.tree_util.tree_map(lambda v: v[:2], val)
    fused = make_search_step(g, w_opt, a_opt, fuse_passes=True)(state, train, short_val)
    unfused = make_search_step(g, w_opt, a_opt, fuse_passes=False)(state, train, short_val)
    chex.assert_trees_all_close(_comparable(fused[0]), _comparable(unfused[0]), rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(fused[1], unfused[1], rtol=1e-6, atol=1e-7)


def test_index_path_compiles_once_across_architectures():
    space = NB201Space(layers=1)
    net = NB201SearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))
    net.eval()
    g, state = nnx.split(net)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def evaluate(state, vec):
        m = nnx.merge(g, state, copy=True)
        return m(x, space.to_inputs(vec)).logits

    outs = set()
    for i in range(8):
        vec = space.sample(jax.random.key(i))
        outs.add(np.asarray(evaluate(state, vec)).round(5).tobytes())
    assert len(outs) > 1  # different architectures really give different outputs
    chex.clear_trace_counter()


def test_cpu_step_options_keep_ynnpack_to_reductions_and_change_no_result(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the YNNPACK option is CPU-only")
    from dnas.search.state import _YNN_OPTION, _cpu_accepts, step_compiler_options

    opts = step_compiler_options()
    if not _cpu_accepts(_YNN_OPTION, "LIBRARY_FUSION_TYPE_REDUCE"):
        assert _YNN_OPTION not in opts
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    assert opts[_YNN_OPTION] == "LIBRARY_FUSION_TYPE_REDUCE"
    monkeypatch.setenv("XLA_FLAGS", f"--{_YNN_OPTION}=")  # the user's own setting wins
    assert _YNN_OPTION not in step_compiler_options()
    monkeypatch.undo()

    _, _, state, step, train, val = _setup(order=1)
    ours = jax.jit(step.__call__, compiler_options=opts).lower(state, train, val).compile()
    default = jax.jit(step.__call__, compiler_options={k: v for k, v in opts.items() if k != _YNN_OPTION})
    default = default.lower(state, train, val).compile()
    assert ours.as_text().count("__ynn_fusion") < default.as_text().count("__ynn_fusion")
    for a, b in zip(jax.tree_util.tree_leaves(ours(state, train, val)), jax.tree_util.tree_leaves(default(state, train, val))):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_weight_only_step_trains_weights_and_leaves_alpha():
    """SPOS/RSPS supernet training: the weights-only plan with uniformly sampled paths."""
    from dnas.space.relax import make_relaxation

    _, g, state, _, train, val = _setup(1, layers=3)
    w_opt, a_opt = darts_weight_optimizer(steps_per_epoch=10), darts_alpha_optimizer()
    step = make_search_step(g, w_opt, a_opt, relax=make_relaxation("uniform"), update_alpha=False)
    assert [p.name for p in step.plan.passes] == ["weights"]
    new, m = jax.jit(step.__call__)(state, train, val)
    assert _same(new.alpha, state.alpha) and not _same(new.weights, state.weights)
    assert set(m) >= {"train_loss", "train_acc", "w_lr"} and "val_loss" not in m
    assert int(new.step) == 1


def test_gdas_step_fused_equals_sequential_and_moves_alpha():
    """Sampled paths through the fused executor (the α pass and the weight pass each
    draw their own ops) equal the passes run one after the other."""
    from dnas.space.relax import make_relaxation

    _, g, state, _, train, val = _setup(1, layers=3, ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"))
    w_opt, a_opt = darts_weight_optimizer(steps_per_epoch=10), darts_alpha_optimizer()
    relax = make_relaxation("gdas", epochs=10)
    fused = jax.jit(make_search_step(g, w_opt, a_opt, relax=relax, fuse_passes=True).__call__)
    seq = jax.jit(make_search_step(g, w_opt, a_opt, relax=relax, fuse_passes=False).__call__)
    (s_f, m_f), (s_s, m_s) = fused(state, train, val), seq(state, train, val)
    chex.assert_trees_all_close(_comparable(s_f), _comparable(s_s), rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(m_f, m_s, rtol=2e-5, atol=2e-6)
    assert not _same(s_f.alpha, state.alpha)


def test_every_plan_names_known_batches_keys_and_metric_passes():
    from dnas.search.plans import PLANS

    _, g, _, step, _, _ = _setup(1)
    maths_plan = step.plan
    assert [p.name for p in maths_plan.passes] == ["alpha", "weights"]
    from dnas.space.relax import policy

    first = ("first_order", "weights_only", "fair_weights", "sandwich_weights", "reinforce")
    for name in PLANS.names():
        step = make_search_step(g, darts_weight_optimizer(), darts_alpha_optimizer(), order=2 if name not in first else 1,
                                hypergradient=name if name not in first else "finite_difference",
                                update_alpha=name not in ("weights_only", "fair_weights", "sandwich_weights"), fair=name == "fair_weights",
                                sandwich={"sizes": {}} if name == "sandwich_weights" else None,
                                alpha_grad="reinforce" if name == "reinforce" else "relaxation",
                                relax=policy() if name == "reinforce" else None)
        plan = step.plan
        assert all(p.batch in ("train", "val") and p.key in ("alpha", "weight", "unrolled") for p in plan.passes)
        assert plan.passes[-1].name == "weights" and plan.train_pass == len(plan.passes) - 1


def test_no_decay_on_norm_and_bias_exempts_exactly_those_leaves():
    """decay_norm_and_bias=False (OFA's no_decay_keys 'bn#bias'): with zero gradients the
    update is the L2 term alone, so it is zero on BN scales/biases and every bias, and
    ``lr·wd·w`` (momentum's first step) on kernels."""

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.lin = nnx.Linear(4, 2, rngs=rngs)

    params = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for decay_all in (True, False):
        opt = darts_weight_optimizer(lr=0.1, lr_min=0.1, weight_decay=0.5, decay_norm_and_bias=decay_all)
        upd, _ = opt.update(zeros, opt.init(params), params)
        for (path, u), w in zip(jax.tree_util.tree_leaves_with_path(upd), jax.tree.leaves(params), strict=True):
            decayed = decay_all or "kernel" in jax.tree_util.keystr(path)
            np.testing.assert_allclose(np.asarray(u), -0.05 * np.asarray(w) if decayed else 0.0, rtol=1e-6)
