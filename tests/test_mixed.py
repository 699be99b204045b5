"""MixedOp: weighted mixing, index switching, label sharing, micro vs macro α."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.mixed import Alpha, MixedOp
from dnas.space.ops import build_op
from dnas.space.spaces import DartsSearchNetwork, DartsSpace, NB201SearchNetwork, NB201Space
from dnas.search.state import alpha_dict, split_model

OPS4 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def test_mix_equals_weighted_sum_and_index_equals_single_op():
    op = MixedOp("e", OPS4, 4, 4, 1, pool_bn=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    w = jnp.array([0.1, 0.2, 0.3, 0.4])
    ref = sum(w[i] * op.ops[i](x) for i in range(4))
    np.testing.assert_allclose(op(x, w), ref, rtol=1e-5, atol=1e-5)
    for i in range(4):
        np.testing.assert_allclose(op(x, jnp.int32(i)), op.ops[i](x), rtol=1e-5, atol=1e-6)
    with pytest.raises(DnasError, match="expected \\(4,\\)"):
        op(x, jnp.ones(3))


def test_switch_gradient_and_batch_stats_equal_the_chosen_op():
    """The index mode's rematerialised switch branch: the gradient (weights and input)
    and the updated BatchNorm statistics equal those of calling the chosen op itself."""
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    op = MixedOp("e", ops, 4, 4, 1, pool_bn=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    gd, params, rest = nnx.split(op, nnx.Param, ...)

    def loss(p, x, i, direct):
        m = nnx.merge(gd, p, rest, copy=True)
        y = m.ops[i](x) if direct else m(x, jnp.int32(i))
        return jnp.sum(jnp.sin(y)), nnx.state(m, nnx.BatchStat)

    before = jax.tree_util.tree_leaves(nnx.state(op, nnx.BatchStat))
    for i in range(len(ops)):
        (g_ref, st_ref) = jax.grad(loss, (0, 1), has_aux=True)(params, x, i, True)
        (g, st) = jax.jit(jax.grad(loss, (0, 1), has_aux=True), static_argnums=(2, 3))(params, x, i, False)
        for a, b in zip(jax.tree_util.tree_leaves(g + (st,)), jax.tree_util.tree_leaves(g_ref + (st_ref,))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        changed = sum(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(st), before))
        assert changed == (2 if ops[i].startswith("nor_conv") else 0)  # that op's BN mean and var, nothing else


def _tiny_darts(shared, layers=3):
    space = DartsSpace(layers=layers, nodes=2, ops=OPS4, shared=shared)
    return space, DartsSearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))


def test_label_sharing_micro_one_alpha_per_label():
    space, net = _tiny_darts(shared=True)
    alpha = alpha_dict(nnx.state(net, Alpha))
    assert set(alpha) == set(space.labels)
    # 3 cells (normal, reduce, reduce) but only two cell types' worth of α.
    assert len(alpha) == 2 * 5
    uses = [l for cell in net.cells for l in cell.labels]
    assert len(uses) == 3 * 5 and set(uses) == set(space.labels)


def test_shared_label_gradient_accumulates_over_cells():
    space, net = _tiny_darts(shared=True, layers=3)  # reductions at 1 and 2: two cells share "reduce/..."
    g, alpha, weights, stats = split_model(net)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))

    def loss(alpha):
        m = nnx.merge(g, alpha, weights, stats, copy=True)
        arch = {l: jax.nn.softmax(a) for l, a in alpha_dict(alpha).items()}
        return jnp.sum(m(x, arch).logits ** 2)

    grads = alpha_dict(jax.grad(loss)(alpha))
    assert all(np.any(np.asarray(v) != 0) for v in grads.values())

    # The shared label's gradient is the sum of what each reduction cell contributes: give
    # each cell its own copy of the mixing weights and add their gradients.
    def per_cell_loss(archs):
        m = nnx.merge(g, alpha, weights, stats, copy=True)
        s0 = s1 = m.stem_bn(m.stem_conv(x))
        for cell, arch in zip(m.cells, archs):
            s0, s1 = s1, cell(s0, s1, arch)
        return jnp.sum(m.classifier(jnp.mean(s1, axis=(1, 2))) ** 2)

    mixing = {l: jax.nn.softmax(a) for l, a in alpha_dict(alpha).items()}
    per_cell = jax.grad(per_cell_loss)([dict(mixing) for _ in net.cells])
    shared = jax.grad(lambda arch: jnp.sum(nnx.merge(g, alpha, weights, stats, copy=True)(x, arch).logits ** 2))(mixing)
    reduce_labels = [l for l in space.labels if l.startswith("reduce/")]
    for l in reduce_labels:
        assert float(jnp.abs(per_cell[1][l]).max()) > 0 and float(jnp.abs(per_cell[2][l]).max()) > 0
        np.testing.assert_allclose(shared[l], per_cell[1][l] + per_cell[2][l], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(per_cell[0][l], 0.0)  # the normal cell does not read reduce labels


def test_macro_has_separate_alpha_per_cell():
    space, net = _tiny_darts(shared=False)
    alpha = alpha_dict(nnx.state(net, Alpha))
    assert len(alpha) == 3 * 5
    assert {l.split("/")[0] for l in alpha} == {"cell0", "cell1", "cell2"}
    # Changing one cell's α changes only that cell's weights input.
    labels = [cell.labels for cell in net.cells]
    assert not set(labels[0]) & set(labels[1])


def test_index_path_equals_switching_ops_by_hand():
    space = NB201Space(layers=1)
    net = NB201SearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    vec = space.sample(jax.random.key(3))
    onehot = {l: jax.nn.one_hot(v, len(space.ops)) for l, v in space.to_inputs(vec).items()}
    np.testing.assert_allclose(net(x, space.to_inputs(vec)).logits, net(x, onehot).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["shift", "conv"])
def test_grad_gates_zero_exactly_the_closed_gradients(impl):
    """What the fused search step relies on: a closed ``weights`` gate zeroes every conv
    kernel gradient (depthwise in either lowering, 1x1 dots, dense and 1x7/7x1 convs), a
    closed ``alpha`` gate the mixing-weight gradient, and nothing else changes."""
    from dnas.space.ops.layers import GradGates, depthwise_impl, grad_gates

    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5", "nor_conv_3x3", "conv_7x1_1x7")
    op = MixedOp("e", ops, 4, 4, 1, rngs=nnx.Rngs(0))
    g, params, rest = nnx.split(op, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
    a = jax.nn.softmax(jax.random.normal(jax.random.key(1), (len(ops),)))
    target = jax.random.normal(jax.random.key(2), (2, 9, 9, 4))

    def loss(p, a, x, gates):
        with depthwise_impl(impl), grad_gates(gates):
            return jnp.sum(nnx.merge(g, p, rest, copy=True)(x, a) * target)

    ref = jax.jit(jax.grad(lambda p, a, x: loss(p, a, x, GradGates()), argnums=(0, 1, 2)))(params, a, x)
    gated = jax.jit(jax.grad(lambda p, a, x, gw, ga: loss(p, a, x, GradGates(gw, ga)), argnums=(0, 1, 2)))
    assert all(float(jnp.abs(v).max()) > 0 for v in jax.tree_util.tree_leaves(ref[0]))
    for gw in (True, False):
        for ga in (True, False):
            dp, da, dx = gated(params, a, x, jnp.asarray(gw), jnp.asarray(ga))
            np.testing.assert_allclose(dx, ref[2], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(da, ref[1] if ga else np.zeros_like(ref[1]), rtol=1e-5, atol=1e-6)
            for got, want in zip(jax.tree_util.tree_leaves(dp), jax.tree_util.tree_leaves(ref[0])):
                np.testing.assert_allclose(got, want if gw else np.zeros_like(want), rtol=1e-5, atol=1e-6)
