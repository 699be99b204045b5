"""The mobile spaces: ProxylessNAS (published nets rebuild with their params, MACs, depth
and Pixel 1 latency) and FBNet (HW-NAS-Bench's table prices the space)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.space import genotype as G
from dnas.hardware.counts import count_params, model_macs
from dnas.core.errors import DnasError
from dnas.hardware import load_fbnet_csv, load_yaml_lut, lut_term, table_latency
from dnas.space.spaces.fbnet import FBNET_OPS, FBNetGenotype, FBNetSpace
from dnas.space.spaces.proxylessnas import ProxylessSpace, published
from dnas.search.state import build_jitted
from dnas.core.types import Sampled


@pytest.fixture
def luts(require_shared):
    """``../shared/data/luts``: the published configs and latency tables (a failure in CI when absent)."""
    return Path(require_shared("luts", why="the published ProxylessNAS configs and the Pixel 1 / HW-NAS-Bench latency tables are the reference"))


# mit-han-lab/proxylessnas logs/imagenet_{mobile,gpu,cpu}_log.txt: "Total training params", "Total FLOPs" (MACs).
PUBLISHED = {"mobile": (4.08e6, 320.4e6, 1.0), "gpu": (7.12e6, 465.3e6, 1.35), "cpu": (4.36e6, 439.2e6, 1.12)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_proxyless_nets_rebuild(name, luts):
    cfg = json.loads((luts / f"proxyless_{name}.config.json").read_text())
    g = published(name)
    # Block count straight from the config: every block but the fixed first is searched;
    # ZeroLayer blocks do not run.
    assert len(g.ops) == len(cfg["blocks"]) - 1
    assert g.depth == sum(b["mobile_inverted_conv"]["name"] != "ZeroLayer" for b in cfg["blocks"])
    params, macs, width_mult = PUBLISHED[name]
    net = nnx.eval_shape(lambda: ProxylessSpace.network(g, C=g.stem, layers=0, num_classes=1000, in_channels=3, rngs=nnx.Rngs(0)))
    assert abs(count_params(net) - params) / params < 0.002
    assert abs(model_macs(net, (1, 224, 224, 3)) - macs) / macs < 0.002
    # The published geometry is the space's at ProxylessNAS' width multiplier, except that
    # the released mobile net widened stage 1 from 24 to 32 channels.
    space = ProxylessSpace(width_mult=width_mult)
    expected = space.genotype(g.ops)
    if name == "mobile":
        assert g.widths[0] == 32 and expected.widths[0] == 24 and g.widths[1:] == expected.widths[1:]
    else:
        assert expected == g
    assert G.from_json(json.loads(json.dumps(g.to_json()))) == g


def test_pixel1_table_prices_the_mobile_net_block_by_block(luts):
    """The space's latency term on the Pixel 1 table equals a sum over the published
    config's own layers, keyed by hand from its channels and strides (78 ms in the paper).
    The table covers the search space, whose stage 1 is 24 wide; the released net's is 32."""
    table = load_yaml_lut(luts / "proxylessnas_mobile_pixel1.yaml")
    cfg = json.loads((luts / "proxyless_mobile.config.json").read_text())
    hw, total = 112, table.mean("Conv-input:224x224x3-output:112x112x32")
    for i, b in enumerate(cfg["blocks"]):
        m = b["mobile_inverted_conv"]
        if m["name"] == "ZeroLayer":
            continue
        c_in, c_out = (24 if c == 32 and i > 0 else c for c in (m["in_channels"], m["out_channels"]))
        ho = hw // m["stride"]
        total += table.mean(f"expanded_conv-input:{hw}x{hw}x{c_in}-output:{ho}x{ho}x{c_out}"
                            f"-expand:{m['expand_ratio']}-kernel:{m['kernel_size']}-stride:{m['stride']}-idskip:{int(b['shortcut'] is not None)}")
        hw = ho
    total += table.mean("Conv_1-input:7x7x320-output:7x7x1280") + table.mean("Logits-input:7x7x1280-output:1000")
    space = ProxylessSpace()
    term = lut_term(space, table)
    got = float(table_latency(term, space.genotype_to_vec(published("mobile"))))
    assert got == pytest.approx(total, rel=1e-5)
    assert 70 < got < 90


def test_proxyless_space_structure_and_errors():
    space = ProxylessSpace()
    assert len(space) == 21
    zero_able = [l for l in space.labels if "zero" in space.choice(l).candidates]
    # Blocks 2-4 of the five four-block stages have the identity shortcut.
    assert len(zero_able) == 15 and all(space.choice(l).n == 7 for l in zero_able)
    with pytest.raises(DnasError, match="cannot be zero"):
        space.genotype(["zero"] + ["mb_k3_e3"] * 20)
    with pytest.raises(DnasError, match="ops must be among"):
        ProxylessSpace(ops=["sep_conv_3x3"])
    shallow = ProxylessSpace(layers=2)
    assert len(shallow) == 11


def test_proxyless_supernet_runs_indices_and_sampled_paths():
    space = ProxylessSpace(width_stages=(24, 40), n_cell_stages=(2, 1), stride_stages=(2, 2))
    net = build_jitted(lambda r: space.supernet(C=8, num_classes=10, in_channels=1, rngs=r), jax.random.key(0))
    graphdef, state = nnx.split(net)
    run = jax.jit(lambda st, x, a: nnx.merge(graphdef, st)(x, a).logits)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    idx = {l: jnp.int32(2) for l in space.labels}
    one = {l: Sampled(jnp.array([2], jnp.int32), jnp.ones(space.choice(l).n)) for l in space.labels}
    np.testing.assert_allclose(run(state, x, one), run(state, x, idx), rtol=1e-5, atol=1e-5)
    # Two sampled paths (ProxylessNAS' binary gates): both run, the shortcut is added once.
    two = {l: Sampled(jnp.array([2, 2], jnp.int32), jnp.ones(space.choice(l).n)) for l in space.labels}
    out = np.asarray(run(state, x, two))
    assert out.shape == (2, 10) and np.isfinite(out).all()


def test_fbnet_table_prices_the_space(luts):
    tables = load_fbnet_csv(luts / "fbnet_layer_lut_hwnasbench.csv")
    space = FBNetSpace()
    assert len(space) == 22 and all(space.choice(l).candidates == FBNET_OPS for l in space.labels)
    vecs = np.stack([np.asarray(space.sample(jax.random.key(i))) for i in range(5)])
    for dev, t in tables.items():
        np.testing.assert_allclose(np.asarray(table_latency(t.latency_term(space), vecs)), t.latency(vecs), rtol=1e-5)


def test_fbnet_table_prices_a_subset_of_ops_by_name(luts):
    """A space searching some of FBNet's ops (any order: the smoke's) is priced with the full
    table's numbers; an op the table lacks, or a bad ops list, is one DnasError line."""
    from dnas.space.base import Choice, SearchSpace

    t = load_fbnet_csv(luts / "fbnet_layer_lut_hwnasbench.csv")["raspi4"]
    sub = ("skip", "k5_e6", "k3_e1")
    space = FBNetSpace(ops=sub)
    assert all(space.choice(l).candidates == sub for l in space.labels)
    vecs = np.stack([np.asarray(space.sample(jax.random.key(i))) for i in range(4)])
    full = np.vectorize(lambda v: FBNET_OPS.index(sub[v]))(vecs)  # the same nets as full-table indices
    np.testing.assert_allclose(np.asarray(table_latency(t.latency_term(space), vecs)), t.latency(full), rtol=1e-5)
    assert space.derive({l: jnp.eye(3)[i % 3] for i, l in enumerate(space.labels)}).ops[:3] == sub
    other = SearchSpace([Choice(l, ("k3_e1", "k7_e6")) for l in space.labels])
    with pytest.raises(DnasError, match="offers 'k7_e6', which the FBNet table \\(raspi4\\) has no latency for"):
        t.latency_term(other)
    for bad, what in ((["k7_e6"], "unknown 'k7_e6'"), ([], "none"), (["skip", "skip"], "a duplicate")):
        with pytest.raises(DnasError, match=f"fbnet ops must be distinct .* got {what}"):
            FBNetSpace(ops=bad)


def test_fbnet_derived_network_and_genotype():
    space = FBNetSpace()
    alpha = {l: jnp.eye(9)[i % 9] for i, l in enumerate(space.labels)}
    g = space.derive(alpha)
    assert g.ops[:9] == FBNET_OPS and G.from_json(g.to_json()) == g
    # CIFAR setting, C=16: HW-NAS-Bench's network. All-k3_e1 and all-skip bound the size.
    sizes = [count_params(nnx.eval_shape(lambda o=o: FBNetSpace.network(FBNetGenotype((o,) * 22), C=16, layers=22, num_classes=100,
                                                                          in_channels=3, rngs=nnx.Rngs(0)))) for o in ("skip", "k3_e1", "k5_e6")]
    assert sizes[0] < sizes[1] < sizes[2]
    with pytest.raises(DnasError, match="22 ops"):
        FBNetGenotype(("k3_e1",) * 21)


@pytest.mark.parametrize("spec", ["proxylessnas/config.py", "proxylessnas/config.py:smoke", "proxylessnas/config.py:target_smoke",
                                  "fbnet/config.py", "fbnet/config.py:smoke"])
def test_experiment_configs_validate_with_their_tables(spec, luts, require_shared):
    from dnas.run.config import load_config

    root = Path(__file__).resolve().parents[1] / "experiments"
    overrides = ["--config.latency.target_ms=60"] if "target" in spec else []
    if ":" not in spec:  # the full configs name CIFAR-10, which needs its folder
        cifar = require_shared("images", "cifar10_subset", "cifar-10-batches-py", why="the full configs name CIFAR-10, which needs its folder")
        overrides.append(f"--config.data_dir={cifar}")
    c = load_config(str(root / spec), overrides)
    assert c.latency.table and c.latency.penalty


def test_hardware_estimator_gives_latency_macs_params_for_constraints(luts):
    """Discrete-search metrics: per-block MACs/params sum to the whole derived network's
    count, the latency is the table's, and the hard objective rejects by them."""
    from dnas.estimate import ESTIMATORS
    from dnas.search.objectives import OBJECTIVES

    space = ProxylessSpace(layers=2)
    est = ESTIMATORS["hardware"](space, table=str(luts / "proxylessnas_mobile_pixel1.yaml"), resolution=224)
    assert est.pure and est.metrics == ("latency_ms", "macs_m", "params_m")
    archs = jnp.stack([space.sample(jax.random.key(i)) for i in range(3)])
    m, cost = jax.jit(est.evaluate)(archs, jax.random.key(0))
    assert cost.shape == (3,)
    for i in range(2):
        g = space.genotype([space.choices[j].candidates[v] for j, v in enumerate(np.asarray(archs[i]))])
        net = nnx.eval_shape(lambda g=g: ProxylessSpace.network(g, C=g.stem, layers=0, num_classes=1000, in_channels=3, rngs=nnx.Rngs(0)))
        assert float(m["macs_m"][i]) == pytest.approx(model_macs(net, (1, 224, 224, 3)) / 1e6, rel=1e-5)
        assert float(m["params_m"][i]) == pytest.approx(count_params(net) / 1e6, rel=1e-5)
    limit = float(jnp.median(m["latency_ms"]))
    fit = OBJECTIVES["hard"](metric="macs_m", limits={"latency_ms": limit}, penalty=-1.0)(m)
    np.testing.assert_array_equal(np.asarray(fit) == -1.0, np.asarray(m["latency_ms"]) > limit)


def test_scanned_layer_groups_equal_the_unrolled_layers():
    """Same-shaped blocks run as one scan (``scan_layers``): the output, the gradients of the
    weights and α and the BatchNorm statistics equal block-by-block execution, for mixing
    weights and sampled paths (indices take the same switch; a 3-block stage, 2 candidates)."""
    space = ProxylessSpace(layers=3, ops=("mb_k3_e3", "mb_k5_e3"), width_stages=(8, 8), n_cell_stages=(1, 3), stride_stages=(2, 1))
    net = build_jitted(lambda r: space.supernet(C=8, num_classes=3, in_channels=3, rngs=r), jax.random.key(0))
    assert net.groups == ((1, 2), (2, 5))  # stage 2's 3 blocks: one scan
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    k = [space.choice(l).n for l in space.labels]
    archs = {
        "weights": {l: jax.nn.softmax(jax.random.normal(jax.random.key(i), (n,))) for i, (l, n) in enumerate(zip(space.labels, k))},
        "sampled": {l: Sampled(jnp.asarray([i % n, (i + 1) % n]), jax.nn.softmax(jnp.arange(n, dtype=jnp.float32)))
                    for i, (l, n) in enumerate(zip(space.labels, k))},
    }
    graphdef, state = nnx.split(net)
    twin = nnx.merge(graphdef, state, copy=True)
    twin.groups = ()  # the same module, every block on its own
    graph_unrolled = nnx.graphdef(twin)

    def run(gd):
        def loss(st, arch):
            model = nnx.merge(gd, st, copy=True)
            out = model(x, arch).logits
            return jnp.sum(out ** 2), (out, nnx.state(model, nnx.BatchStat))
        return jax.jit(jax.grad(loss, has_aux=True))

    scanned, unrolled = run(graphdef), run(graph_unrolled)
    for name, arch in archs.items():
        (g1, (o1, s1)), (g2, (o2, s2)) = scanned(state, arch), unrolled(state, arch)
        for a, b in zip(jax.tree_util.tree_leaves((o1, s1, g1)), jax.tree_util.tree_leaves((o2, s2, g2))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=name)
