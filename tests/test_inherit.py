"""Inherited weights (dnas.estimate.inherit) and Net2Net widening (dnas.estimate.net2net).

Inheritance: the derived network with a supernet's weights computes the supernet's index-
mode function for that architecture, in eval mode (same running statistics) and in train
mode (same logits and the same updated running statistics). Net2WiderNet: the widened
network computes the same function; with noise it differs slightly.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.genotype import CellGenotype, DartsGenotype, NB201Genotype, NB201MacroGenotype
from dnas.estimate.inherit import inherit, inherited_state
from dnas.estimate.net2net import widen_conv_bn_conv, wider_mapping
from dnas.space.ops.layers import BatchNorm, Conv2d
from dnas.space.spaces import NB201Space
from dnas.space.spaces.darts_cnn import DartsSpace

X = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
CELL = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def _trained_like(net: nnx.Module, seed: int = 5) -> nnx.Module:
    """Non-trivial running statistics and BN scales/shifts, as a trained supernet has.

    Every array (weights, statistics, the unused α) is drawn afresh by NumPy (its own
    generator), also into an abstract module (``nnx.eval_shape``): nothing is compiled. Drawing them with
    ``jax.random`` eagerly compiled one program per distinct shape (FBNet: ~47 s CPU)."""
    rng = np.random.default_rng(seed)

    def draw(path, v):
        shape, name = tuple(v.shape), str(path[-1])
        if name == "var":
            x = 1.0 + 0.3 * rng.uniform(size=shape)
        elif name == "mean":
            x = 0.3 * rng.uniform(size=shape)
        elif name == "scale":
            x = 1.0 + 0.1 * rng.normal(size=shape)
        elif len(shape) >= 2:  # kernels: fan-in scaled, so that 22 layers stay finite
            x = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            x = 0.1 * rng.normal(size=shape)
        return jnp.asarray(x, v.dtype)

    nnx.update(net, jax.tree_util.tree_map_with_path(draw, nnx.state(net)))
    return net


def _assert_same_function(space, supernet, genotype, derived, arch, jit=False):
    """Eval-mode logits, train-mode logits and the train step's running statistics agree.
    ``jit``: both forwards compiled as one program each (a deep network's eager forward
    compiles one program per op and shape: FBNet's took ~35 s)."""
    weights, stats = nnx.state(supernet, nnx.Param), nnx.state(supernet, nnx.BatchStat)
    inherit(space, (weights, stats), genotype, derived)  # the checkpoint form: (weights, stats)
    # The indices are closed over as Python ints, so the supernet calls the chosen ops as
    # it does eagerly (no switch).
    run_derived, run_super = (lambda m, x: m(x).logits), (lambda m, x: m(x, arch).logits)
    if jit:
        run_derived, run_super = nnx.jit(run_derived), nnx.jit(run_super)
    supernet.eval(), derived.eval()
    np.testing.assert_allclose(run_derived(derived, X), run_super(supernet, X), atol=1e-5, rtol=1e-5)
    supernet.train(), derived.train()
    np.testing.assert_allclose(run_derived(derived, X), run_super(supernet, X), atol=1e-5, rtol=1e-5)
    # Both updated their BN statistics from this batch: the derived network's equal the
    # supernet's chosen ops' (read through the same map).
    want = nnx.to_flat_state(inherited_state(space, supernet, genotype, derived))
    got = dict(nnx.to_flat_state(nnx.state(derived, (nnx.Param, nnx.BatchStat))))
    for path, v in want:
        if path[-1] in ("mean", "var"):
            np.testing.assert_allclose(got[path].get_value(), v.get_value(), atol=1e-5, rtol=1e-5, err_msg=str(path))


def _index_arch(space, vec):
    return {l: int(i) for l, i in zip(space.labels, vec)}


def test_nb201_derived_network_with_inherited_weights_equals_supernet_in_index_mode():
    space = NB201Space(layers=1)
    sup = _trained_like(space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0)))
    geno = NB201Genotype.parse(CELL)
    net = NB201Space.network(geno, C=4, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1))
    before = net(X).logits
    _assert_same_function(space, sup, geno, net, _index_arch(space, space.genotype_to_vec(geno)))
    assert not np.allclose(before, net(X).logits)  # the weights did change


def test_nb201_macro_cells_inherit_their_own_edges():
    space = NB201Space(layers=1, shared=False)
    sup = _trained_like(space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0)))
    cells = [NB201Genotype.parse(CELL), NB201Genotype.parse("|skip_connect~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"),
             NB201Genotype.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|")]
    geno = NB201MacroGenotype(tuple(cells))
    arch = {f"cell{k}/edge_{j}_{i}": space.ops.index(op) for k, c in enumerate(cells) for j, node in enumerate(c.nodes, 1) for op, i in node}
    net = NB201Space.network(geno, C=4, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1))
    _assert_same_function(space, sup, geno, net, arch)


@pytest.mark.parametrize("impl", ["scan", "batch", "unrolled"])
def test_darts_derived_network_without_pools_equals_supernet(impl):
    # One cell (a reduction cell: DARTS puts reductions at layers//3 and 2*layers//3), two
    # nodes: the scan layout splits its edges into two stacked groups.
    space = DartsSpace(layers=1, nodes=2, cell_impl=impl)
    sup = _trained_like(space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0)))
    cell = CellGenotype((("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2), ("sep_conv_5x5", 0)), (2, 3))
    geno = DartsGenotype(cell, cell)
    net = DartsSpace.network(geno, C=4, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1), auxiliary=False)
    _assert_same_function(space, sup, geno, net, _index_arch(space, space.genotype_to_vec(geno)))


def test_darts_pool_edges_drop_the_search_bn():
    """DARTS' search network normalises a pool's output (affine-free BN), its evaluation
    network does not: the weights are still inherited, the function is not the same."""
    space = DartsSpace(layers=1, nodes=2, cell_impl="unrolled")
    sup = _trained_like(space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0)))
    cell = CellGenotype((("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 2), ("sep_conv_3x3", 0)), (2, 3))
    geno = DartsGenotype(cell, cell)
    net = inherit(space, sup, geno, DartsSpace.network(geno, C=4, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1), auxiliary=False))
    np.testing.assert_array_equal(net.classifier.kernel.get_value(), sup.classifier.kernel.get_value())
    np.testing.assert_array_equal(net.cells[0].ops[1].op1.dw.kernel.get_value(), sup.cells[0].edges[1].ops[4].op1.dw.kernel.get_value())
    sup.eval(), net.eval()
    assert not np.allclose(net(X).logits, sup(X, _index_arch(space, space.genotype_to_vec(geno))).logits, atol=1e-5)


def test_proxylessnas_zero_blocks_are_dropped_and_the_function_kept():
    from dnas.space.spaces.proxylessnas import ProxylessSpace

    # Two stages of two blocks: each second block has the identity shortcut, so may be zero.
    space = ProxylessSpace(layers=2, width_stages=(24, 24), n_cell_stages=(2, 2), stride_stages=(2, 1), ops=("mb_k3_e3", "mb_k5_e3"))
    sup = _trained_like(space.supernet(C=8, num_classes=3, in_channels=3, rngs=nnx.Rngs(0)))
    geno = space.genotype(["mb_k5_e3", "zero", "mb_k3_e3", "mb_k5_e3"])
    net = space.network(geno, C=8, layers=2, num_classes=3, in_channels=3, rngs=nnx.Rngs(1))
    assert len(net.blocks) == 1 + 3  # the fixed first block and the three non-zero ones
    _assert_same_function(space, sup, geno, net, _index_arch(space, space.genotype_to_vec(geno)))


@pytest.mark.slow
def test_fbnet_derived_network_with_inherited_weights_equals_supernet():
    """All 22 layers, the candidates in an order other than FBNET_OPS' (inherit maps by
    name). Both networks are built abstractly: the supernet's arrays are drawn by NumPy,
    the derived network's all come from inherit (one it missed would fail the forward).
    Built and run eagerly, the full 9-op supernet took ~3 CPU-minutes, all compiling."""
    from dnas.space.spaces.fbnet import FBNetGenotype, FBNetSpace

    space = FBNetSpace(ops=("k5_e3", "skip", "k3_e1", "k3_e1_g2", "k3_e6"))
    sup = _trained_like(nnx.eval_shape(lambda: space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))))
    geno = FBNetGenotype(tuple(("k3_e1", "k3_e6", "k5_e3", "k3_e1_g2", "skip")[i % 5] for i in range(22)))
    net = nnx.eval_shape(lambda: space.network(geno, C=4, layers=22, num_classes=3, in_channels=3, rngs=nnx.Rngs(1)))
    _assert_same_function(space, sup, geno, net, {l: space.ops.index(o) for l, o in zip(space.labels, geno.ops)}, jit=True)


def test_shape_mismatch_is_one_dnas_error_line():
    space = NB201Space(layers=1)
    sup = space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    geno = NB201Genotype.parse(CELL)
    wide = NB201Space.network(geno, C=8, layers=1, num_classes=3, in_channels=3, rngs=nnx.Rngs(1))
    with pytest.raises(DnasError, match="init_channels") as e:
        inherit(space, sup, geno, wide)
    assert "\n" not in str(e.value)
    deep = NB201Space.network(geno, C=4, layers=2, num_classes=3, in_channels=3, rngs=nnx.Rngs(1))
    with pytest.raises(DnasError, match="config.layers=1"):
        inherit(space, sup, geno, deep)


# ----- Net2Net ---------------------------------------------------------------------------------


def _conv_bn_relu_conv(c1, bn, c2, x):
    return c2(jax.nn.relu(bn(c1(x))))


def test_wider_mapping_keeps_the_first_units_and_draws_the_rest():
    g = np.asarray(wider_mapping(jax.random.key(0), 5, 12))
    assert g.shape == (12,) and list(g[:5]) == list(range(5)) and g[5:].min() >= 0 and g[5:].max() < 5
    with pytest.raises(DnasError):
        wider_mapping(jax.random.key(0), 5, 4)


def test_net2wider_preserves_the_function_of_conv_bn_relu_conv():
    r = nnx.Rngs(0)
    c1, bn, c2 = Conv2d(3, 4, 3, 1, 1, bias=True, rngs=r), BatchNorm(4), Conv2d(4, 5, 3, 1, 1, rngs=r)
    nnx.update(bn, {"mean": nnx.BatchStat(jnp.arange(4.0) * 0.1), "var": nnx.BatchStat(1.0 + jnp.arange(4.0)),
                    "scale": nnx.Param(jnp.array([1.0, -0.5, 2.0, 0.3])), "bias": nnx.Param(jnp.array([0.1, 0.2, -0.3, 0.0]))})
    w1, wbn, w2 = widen_conv_bn_conv(c1, bn, c2, 9, key=jax.random.key(1))
    assert w1.kernel.get_value().shape == (3, 3, 3, 9) and w1.bias.get_value().shape == (9,)
    assert wbn.mean.get_value().shape == (9,) and w2.kernel.get_value().shape == (3, 3, 9, 5)
    assert c1.kernel.get_value().shape == (3, 3, 3, 4)  # the originals are untouched
    for train in (False, True):  # running statistics, then batch statistics
        bn.use_running_average = wbn.use_running_average = not train
        np.testing.assert_allclose(_conv_bn_relu_conv(w1, wbn, w2, X), _conv_bn_relu_conv(c1, bn, c2, X), atol=1e-5)
    # The paper's symmetry-breaking noise: close, not equal.
    bn.use_running_average = True
    n1, nbn, n2 = widen_conv_bn_conv(c1, bn, c2, 9, key=jax.random.key(1), noise=0.01)
    nbn.use_running_average = True
    a, b = _conv_bn_relu_conv(n1, nbn, n2, X), _conv_bn_relu_conv(c1, bn, c2, X)
    diff = float(jnp.max(jnp.abs(a - b)))
    assert 1e-5 < diff < 0.1 * float(jnp.max(jnp.abs(b)))


def test_net2wider_on_param_dicts_with_a_dense_consumer():
    k = jax.random.split(jax.random.key(3), 3)
    p1 = {"kernel": jax.random.normal(k[0], (3, 6)), "bias": jax.random.normal(k[1], (6,))}
    p2 = {"kernel": jax.random.normal(k[2], (6, 2))}
    x = jax.random.normal(jax.random.key(4), (5, 3))
    f = lambda a, b: jax.nn.relu(x @ a["kernel"] + a["bias"]) @ b["kernel"]  # noqa: E731
    w1, none, w2 = widen_conv_bn_conv(p1, None, p2, 10, key=jax.random.key(0))
    assert none is None and w1["kernel"].shape == (3, 10) and w2["kernel"].shape == (10, 2)
    np.testing.assert_allclose(f(w1, w2), f(p1, p2), atol=1e-5)



def test_net2wider_on_flax_conv_batchnorm_and_linear():
    r = nnx.Rngs(0)
    c1, bn, c2 = nnx.Conv(3, 4, (3, 3), rngs=r), nnx.BatchNorm(4, use_running_average=True, rngs=r), nnx.Conv(4, 5, (3, 3), rngs=r)
    f = lambda a, b, c: c(jax.nn.relu(b(a(X))))  # noqa: E731
    w = widen_conv_bn_conv(c1, bn, c2, 7, key=jax.random.key(1))
    assert (w[0].out_features, w[1].num_features, w[2].in_features) == (7, 7, 7)
    np.testing.assert_allclose(f(*w), f(c1, bn, c2), atol=1e-5)

# ----- dnas train --init-from ---------------------------------------------------------------


def test_train_init_from_a_search_run(tmp_path, capsys):
    """A one-step NB201 search, then ``dnas train --init-from`` it: bad sources are one
    error line before anything is written; a good one inherits, and the run resumes."""
    import shutil

    from dnas.cli.main import main
    from dnas.run.config import apply_smoke
    from dnas.run.search import search_defaults
    from dnas.run.search import run_search

    c = search_defaults()
    c.space = "nb201"
    apply_smoke(c, init_channels=4, layers=1)
    c.max_steps, c.checkpoint_every_steps = 1, 1
    run = tmp_path / "search"
    run_search(c, run, log=lambda m: None)
    small = ["--config.max_steps=1", "--config.batch_size=8", "--config.max_train_examples=16", "--config.max_test_examples=16"]

    def train(*args):
        capsys.readouterr()
        rc = main(["train", "--genotype", CELL, *args])
        return rc, capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    shutil.copy(run / "config.json", tmp_path / "empty" / "config.json")
    data = [f"--config.dataset={c.dataset}", f"--config.data_dir={c.data_dir}"]  # "nothing" lends no dataset
    for source, extra, message in ((tmp_path / "nothing", data, "holds no config.json"), (tmp_path / "empty", [], "no checkpoint yet"),
                                   (run, ["--config.init_channels=8"], "--config.init_channels=4")):
        rc, err = train("--init-from", str(source), "--workdir", str(tmp_path / "t_bad"), *extra, *small)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "t_bad").exists()  # refused before anything was written
    # The run's width, depth and dataset come with --init-from: no size overrides needed.
    rc, err = train("--init-from", str(run), "--workdir", str(tmp_path / "t"), *small)
    assert rc == 0 and "weights inherited from the supernet of" in err, err
    assert json.loads((tmp_path / "t" / "config.json").read_text())["init_from"] == str(run.resolve())
    capsys.readouterr()
    assert main(["train", "--workdir", str(tmp_path / "t"), "--init-from", str(run)]) == 0  # resumes (nothing left to do)
    assert "weights inherited" not in capsys.readouterr().err  # the run's own checkpoint, not the supernet
