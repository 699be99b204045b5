"""The edge-scan and edge-batch supernets equal the unrolled (paper-literal) formulation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.space.mixed import Alpha
from dnas.space.spaces import DartsSearchNetwork, DartsSpace

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def _copy_scan_into_unrolled(scan_net, flat_net):
    """Give the unrolled network exactly the scan network's parameters and α."""
    nnx.update(flat_net, nnx.state(scan_net, Alpha))
    for name in ("stem_conv", "stem_bn", "classifier"):
        nnx.update(getattr(flat_net, name), nnx.state(getattr(scan_net, name)))
    for sc, fc in zip(scan_net.cells, flat_net.cells):
        nnx.update(fc.pre0, nnx.state(sc.pre0))
        nnx.update(fc.pre1, nnx.state(sc.pre1))
        for seg in sc.groups:
            stacked = nnx.state(seg.op)
            for t, label in enumerate(seg.labels):
                edge = fc.edges[fc.labels.index(label)]
                nnx.update(edge, jax.tree_util.tree_map(lambda v: v[t], stacked))


@pytest.mark.parametrize("impl", ["scan", "batch"])
def test_grouped_edges_match_unrolled_forward_and_gradients(impl):
    space = DartsSpace(layers=3, nodes=3, ops=OPS)  # cells: normal, reduce, reduce
    scan_net = DartsSearchNetwork(space, C=4, num_classes=5, impl=impl, rngs=nnx.Rngs(0))
    flat_net = DartsSearchNetwork(space, C=4, num_classes=5, impl="unrolled", rngs=nnx.Rngs(1))
    _copy_scan_into_unrolled(scan_net, flat_net)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
    alpha = {l: jax.random.normal(jax.random.fold_in(jax.random.key(1), i), (len(OPS),)) for i, l in enumerate(space.labels)}

    def loss(net, alpha):
        arch = {l: jax.nn.softmax(a) for l, a in alpha.items()}
        return jnp.sum(jnp.sin(net(x, arch).logits))

    def value_and_grads(net):
        g, params, rest = nnx.split(net, nnx.Param, ...)
        f = lambda p, a: loss(nnx.merge(g, p, rest, copy=True), a)  # noqa: E731
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, alpha)

    (v_scan, (gp_scan, ga_scan)), (v_flat, (gp_flat, ga_flat)) = value_and_grads(scan_net), value_and_grads(flat_net)
    np.testing.assert_allclose(v_scan, v_flat, rtol=1e-5)
    for l in space.labels:
        np.testing.assert_allclose(ga_scan[l], ga_flat[l], rtol=1e-3, atol=1e-6)
    # Per-edge weight gradients land on the right edge.
    for ci, (sc, fc) in enumerate(zip(scan_net.cells, flat_net.cells)):
        gsc, gfc = gp_scan["cells"][ci], gp_flat["cells"][ci]
        for k, seg in enumerate(sc.groups):
            for t, label in enumerate(seg.labels):
                e = fc.labels.index(label)
                a = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda v: v[t], gsc["groups"][k]["op"]))
                b = jax.tree_util.tree_leaves(gfc["edges"][e])
                for u, v in zip(a, b):
                    np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("impl", ["scan", "batch"])
def test_grouped_edges_index_path_matches_unrolled(impl):
    space = DartsSpace(layers=3, nodes=2, ops=OPS)
    scan_net = DartsSearchNetwork(space, C=4, num_classes=5, impl=impl, rngs=nnx.Rngs(0))
    flat_net = DartsSearchNetwork(space, C=4, num_classes=5, impl="unrolled", rngs=nnx.Rngs(1))
    _copy_scan_into_unrolled(scan_net, flat_net)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    for i in range(3):
        arch = space.to_inputs(space.sample(jax.random.key(i)))
        np.testing.assert_allclose(scan_net(x, arch).logits, flat_net(x, arch).logits, rtol=1e-4, atol=1e-5)


def test_build_jitted_equals_eager_build():
    from dnas.search.state import build_jitted

    space = DartsSpace(layers=2, nodes=2, ops=OPS)
    key = jax.random.key(7)
    eager = DartsSearchNetwork(space, C=4, num_classes=5, rngs=nnx.Rngs(params=key))
    jitted = build_jitted(lambda r: DartsSearchNetwork(space, C=4, num_classes=5, rngs=r), key)
    a, b = nnx.state(eager), nnx.state(jitted)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)  # same bits; float rounding may differ


def test_cached_scan_body_respects_the_lowering_in_effect():
    """EdgeScan reuses one traced body per structure; a trace made under one depthwise
    lowering must not leak into a trace under another (MAC counting forces "conv")."""
    from dnas.space.ops.layers import depthwise_impl

    space = DartsSpace(layers=1, nodes=2, ops=OPS)
    net = DartsSearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    x = jnp.ones((2, 8, 8, 3))
    arch = {label: jnp.full((len(OPS),), 1.0 / len(OPS)) for label in space.labels}

    def prims(impl):
        with depthwise_impl(impl):
            jaxpr = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s, copy=True)(x, arch))(state)
        return str(jaxpr)

    shift, conv, shift_again = prims("shift"), prims("conv"), prims("shift")
    grouped = lambda txt: any(g != "1" for g in re.findall(r"feature_group_count=(\d+)", txt))  # noqa: E731
    assert grouped(conv) and "reduce_window" in conv
    assert not grouped(shift) and "reduce_window" not in shift
    assert shift_again == shift
