"""Contract tests over every registered op, plus the layer primitives they share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.ops import OPS, build_op
from dnas.space.ops.layers import BatchNorm, avg_pool, conv2d, depthwise_impl, depthwise_pointwise, max_pool

C = 8


def _channels(name):
    return 64 if name == "resnext_g32" else C  # width c_out//2 must divide by 32


def _apply(name, stride, x, key=0):
    c = x.shape[-1]
    op = build_op(name, c, c, stride, affine=True, rngs=nnx.Rngs(key))
    g, params, rest = nnx.split(op, nnx.Param, ...)

    def f(params, x):
        m = nnx.merge(g, params, rest, copy=True)
        return m(x)

    return f, params


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
def test_op_contract(name, stride):
    c = _channels(name)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, c))
    f, params = _apply(name, stride, x)
    y = jax.jit(f)(params, x)
    assert y.shape == (2, 8 // stride, 8 // stride, c)
    grads_p, grads_x = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2), argnums=(0, 1)))(params, x)
    for leaf in jax.tree_util.tree_leaves((grads_p, grads_x)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    spec = OPS[name]
    n_params = sum(np.size(l) for l in jax.tree_util.tree_leaves(params))
    if spec.is_zero:
        assert not np.any(np.asarray(y)) and not np.any(np.asarray(grads_x))
        return
    # The output depends on the input (a zero op would pass every check above).
    assert float(jnp.abs(grads_x).max()) > 0
    if name == "skip_connect" and stride == 1:
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    if spec.parametric:
        assert n_params > 0
        # Declared parametric: its weights shape the output (some kernel gradient is non-zero).
        assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads_p))
    elif stride == 1:
        assert n_params == 0, f"{name} is declared parameter-free but has {n_params} parameters at stride 1"


def test_unknown_op_lists_known():
    with pytest.raises(DnasError, match="unknown op 'sep_conv_9x9'.*sep_conv_3x3"):
        build_op("sep_conv_9x9", 4, 4, 1, affine=False, rngs=nnx.Rngs(0))


def test_duplicate_registration_fails():
    from dnas.space.ops import register_op

    with pytest.raises(DnasError, match="already registered"):
        register_op("none", parametric=False)(lambda *a: None)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 1, 2)])
def test_depthwise_lowerings_agree(k, stride, dilation):
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 6))
    w = jax.random.normal(jax.random.key(2), (k, k, 1, 6))
    pad = dilation * (k - 1) // 2
    outs = {}
    for impl in ("conv", "shift"):
        with depthwise_impl(impl):
            outs[impl] = conv2d(x, w, stride, pad, dilation, groups=6)
            g = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, stride, pad, dilation, groups=6))), argnums=(0, 1))(x, w)
            outs[impl + "_grad"] = g
    np.testing.assert_allclose(outs["conv"], outs["shift"], rtol=1e-5, atol=1e-5)
    for a, b in zip(outs["conv_grad"], outs["shift_grad"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 2, 2)])
def test_depthwise_shift_vjp_second_order_and_vmap(k, stride, dilation):
    """The hand-written VJP of the shifted depthwise is itself differentiable (second-order
    DARTS differentiates through a weight gradient) and batches under vmap (EdgeBatch)."""
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 6))
    w = jax.random.normal(jax.random.key(2), (3, k, k, 1, 6))
    pad = dilation * (k - 1) // 2

    def inner(w, x):
        return jnp.sum(jnp.sin(conv2d(x, w, stride, pad, dilation, groups=6)) ** 2)

    def outer(w):  # a function of the gradient, as the unrolled DARTS objective is
        gx, gw = jax.grad(inner, argnums=(1, 0))(w, x)
        return jnp.sum(jnp.cos(gx)) + jnp.sum(gw**2)

    res = {}
    for impl in ("conv", "shift"):
        with depthwise_impl(impl):
            res[impl] = (jax.grad(outer)(w[0]), jax.vmap(jax.grad(inner))(w, jnp.broadcast_to(x, (3,) + x.shape)))
    for a, b in zip(res["shift"], res["conv"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("k,stride,pad,h", [(3, 1, 1, 8), (3, 2, 1, 8), (3, 2, 1, 7), (5, 3, 0, 9), (2, 2, 0, 8), (3, 1, 0, 6)])
def test_pool_lowerings_agree(k, stride, pad, h):
    """Shifted-slice pools (custom VJP) equal XLA's reduce_window, values and gradients,
    including ties (the first maximum of a window takes the gradient)."""
    x = jnp.round(jax.random.normal(jax.random.key(0), (2, h, h, 3)) * 2)  # many exact ties
    for pool in (max_pool, avg_pool):
        def f(x):
            y = pool(x, k, stride, pad)
            return jnp.sum(y * jnp.arange(1, y.size + 1, dtype=y.dtype).reshape(y.shape))

        res = {}
        for impl in ("conv", "shift"):
            with depthwise_impl(impl):
                res[impl] = (pool(x, k, stride, pad), jax.grad(f)(x))
        for a, b in zip(res["shift"], res["conv"]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5, err_msg=pool.__name__)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 2, 2)])
def test_depthwise_pointwise_lowerings_agree(k, stride, dilation):
    """The fused (product-kernel) dense conv equals depthwise-then-pointwise, values and grads."""
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 6))
    dw = jax.random.normal(jax.random.key(2), (k, k, 1, 6))
    pw = jax.random.normal(jax.random.key(3), (1, 1, 6, 5))
    pad = dilation * (k - 1) // 2

    def f(x, dw, pw):
        return jnp.sum(jnp.sin(depthwise_pointwise(x, dw, pw, stride, pad, dilation)))

    res = {}
    for impl in ("conv", "shift", "fused"):
        with depthwise_impl(impl):
            res[impl] = (f(x, dw, pw), jax.grad(f, argnums=(0, 1, 2))(x, dw, pw))
    for impl in ("shift", "fused"):
        np.testing.assert_allclose(res[impl][0], res["conv"][0], rtol=1e-4, atol=1e-4)
        for a, b in zip(res[impl][1], res["conv"][1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_as_dot_matches_conv():
    x = jax.random.normal(jax.random.key(4), (2, 7, 7, 6))
    w = jax.random.normal(jax.random.key(5), (1, 1, 6, 4))
    with depthwise_impl("conv"):
        ref = [conv2d(x, w, s) for s in (1, 2)]
    with depthwise_impl("shift"):
        got = [conv2d(x, w, s) for s in (1, 2)]
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups,stride", [(2, 1), (2, 2), (3, 1)])
def test_grouped_pointwise_conv_as_batched_dot_matches_conv(groups, stride):
    """FBNet's grouped 1x1 convolutions: the batched-dot lowering equals XLA's
    feature_group_count convolution in value and in both gradients."""
    x = jax.random.normal(jax.random.key(6), (2, 5, 5, 6))
    w = jax.random.normal(jax.random.key(7), (1, 1, 6 // groups, 12))
    t = jax.random.normal(jax.random.key(8), (2, 5 // stride + (5 % stride > 0), 5 // stride + (5 % stride > 0), 12))

    def loss(x, w):
        return jnp.sum(conv2d(x, w, stride, groups=groups) * t)

    with depthwise_impl("conv"):
        ref = jax.value_and_grad(loss, argnums=(0, 1))(x, w)
    with depthwise_impl("shift"):
        got = jax.value_and_grad(loss, argnums=(0, 1))(x, w)
        jaxpr = str(jax.make_jaxpr(lambda x, w: conv2d(x, w, stride, groups=groups))(x, w))
    assert "conv_general_dilated" not in jaxpr
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-4)
    for a, b in zip(got[1], ref[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("h,k,stride,pad,dilation", [(9, 3, 1, 1, 1), (8, 3, 2, 1, 1), (10, 5, 1, 2, 1), (11, 3, 1, 2, 2), (12, 5, 2, 4, 2), (16, 3, 2, 0, 1), (7, 7, 2, 3, 1)])
def test_conv_canonical_gradients_equal_jax_rules(h, k, stride, pad, dilation):
    """conv2d's hand-written convolution gradients (canonical NHWC/HWIO convolutions, fast
    on XLA CPU inside conditionals and loops) equal JAX's own transpose rules exactly, to
    second order (reverse over reverse, GraSP) and forward over reverse (Hessian-vector
    products of the collapse diagnostics); and the backward has no permuted convolution."""
    from dnas.space.ops.layers import _conv_nhwc

    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(9), (2, h, h + 1, 3), jnp.float64)
        w = jax.random.normal(jax.random.key(10), (k, k, 3, 4), jnp.float64)

        def ref(x, w):
            return jax.lax.conv_general_dilated(
                x, w, (stride,) * 2, ((pad, pad),) * 2, rhs_dilation=(dilation,) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        mine = lambda x, w: _conv_nhwc(x, w, (stride,) * 2, (pad, pad), dilation)  # noqa: E731
        ct = jax.random.normal(jax.random.key(11), ref(x, w).shape, jnp.float64)
        for a, b in zip(jax.vjp(ref, x, w)[1](ct), jax.vjp(mine, x, w)[1](ct)):
            np.testing.assert_array_equal(a, b)
        second = lambda f: jax.grad(lambda x, w: jnp.sum(jax.grad(lambda w: jnp.sum(f(x, w) ** 2))(w) ** 2), (0, 1))(x, w)  # noqa: E731
        for a, b in zip(second(ref), second(mine)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
        hvp = lambda f: jax.jvp(jax.grad(lambda w: jnp.sum(f(x, w) ** 3)), (w,), (jnp.ones_like(w),))[1]  # noqa: E731
        np.testing.assert_allclose(hvp(mine), hvp(ref), rtol=1e-12, atol=1e-9)
        jaxpr = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv2d(x, w, stride, pad, dilation) * 1.0), (0, 1)))(x, w)
    from jax.extend.core import jaxprs_in_params

    def convs(j):
        for e in j.eqns:
            if e.primitive.name == "conv_general_dilated":
                yield e.params["dimension_numbers"]
            for sub in jaxprs_in_params(e.params):
                yield from convs(sub)

    dims = list(convs(jaxpr.jaxpr))
    assert len(dims) == 3 and len(set(map(str, dims))) == 1, dims  # forward, input and kernel gradients, one layout


def test_batchnorm_matches_pytorch_semantics():
    x = jax.random.normal(jax.random.key(3), (4, 3, 3, 2)) * 3 + 1
    bn = BatchNorm(2, affine=False)
    y = bn(x)
    xs = np.asarray(x).reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.mean.get_value(), 0.1 * xs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.var.get_value(), 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-5)  # unbiased, as torch
    bn.use_running_average = True
    np.testing.assert_allclose(bn(x), (x - bn.mean.get_value()) / np.sqrt(bn.var.get_value() + 1e-5), rtol=1e-5)


def test_avg_pool_excludes_padding():
    x = jnp.ones((1, 4, 4, 1))
    np.testing.assert_allclose(avg_pool(x, 3, 1, 1, count_include_pad=False), 1.0)
    assert float(avg_pool(x, 3, 1, 1, count_include_pad=True)[0, 0, 0, 0]) == pytest.approx(4 / 9)
