"""The codesign accelerator model: SCALE-Sim's cycle counts, GEMMs from traced programs,
the hardware space, and the ``accelerator`` cost model on network and joint spaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.hardware.accelerator import accelerator_metrics, as_accelerator, conv_gemm, gemm_array, gemm_layers, layer_costs
from dnas.hardware.codesign import AcceleratorCost, supernet_gemm_tables
from dnas.hardware.counts import model_macs
from dnas.hardware.cost_model import build_cost_model
from dnas.space.base import HARDWARE_SPACES, JointSpace, SearchSpace, build_space
from dnas.space.ops.layers import Conv2d
from dnas.space.spaces.hardware import DATAFLOWS, SystolicSpace, make_accelerator

# SCALE-Sim 3.0.0's compute cycles ("Total Cycles" - "Stall Cycles", USER bandwidth 10,
# 64 KB SRAMs, no stalls) of two layers, measured with dnas.hardware.scalesim_ref:
# (IFMAP H, W, filter kh, kw, channels, filters, stride), (rows, cols) -> (os, ws, is).
SCALESIM_3_0_0 = {
    ((10, 10, 3, 3, 16, 16, 1), (8, 16)): (1327, 1691, 3311),
    ((10, 10, 3, 3, 16, 16, 1), (32, 4)): (1423, 2599, 6559),
    ((9, 9, 1, 1, 24, 40, 1), (8, 16)): (1517, 998, 1259),
    ((17, 17, 3, 3, 8, 12, 2), (32, 4)): (635, 1169, 3743),
}


_costs = jax.jit(layer_costs)  # one compiled program for every 1-layer test below (eager dispatch is slow)


def _layer_gemm(layer):
    h, w, kh, kw, cin, cout, s = layer
    return conv_gemm(1, h, w, cin, cout, kh, kw, stride=s)


def test_compute_cycles_equal_stored_scalesim_numbers():
    for (layer, (r, c)), expected in SCALESIM_3_0_0.items():
        g = gemm_array([_layer_gemm(layer)])
        for df, want in zip(DATAFLOWS, expected):
            got = _costs(g, make_accelerator(r, c, df, 64, 64, 64, 10))
            assert float(got.compute_cycles[0]) == want, (layer, r, c, df)
            assert float(got.cycles[0]) == want  # everything fits: no stall


def test_cycles_equal_live_scalesim():
    pytest.importorskip("scalesim")
    from dnas.hardware.scalesim_ref import scalesim_conv

    # a small conv, and a depthwise one (one SCALE-Sim layer per channel)
    for layer, groups in (((6, 6, 3, 3, 4, 8, 1), 1), ((6, 6, 3, 3, 4, 4, 1), 4)):
        h, w, kh, kw, cin, cout, s = layer
        g = gemm_array([conv_gemm(1, h, w, cin, cout, kh, kw, stride=s, groups=groups)])
        for df in DATAFLOWS:
            hw = dict(rows=4, cols=8, dataflow=df, ifmap_kb=16, filter_kb=16, ofmap_kb=16, dram_bw=8)
            ref = scalesim_conv(h, w, kh, kw, cin, cout, s, hw, groups=groups)
            got = _costs(g, make_accelerator(**hw))
            assert float(got.compute_cycles[0]) == ref["compute_cycles"], (layer, df)
            assert ref["stall_cycles"] == 0 and float(got.cycles[0]) == ref["cycles"]


def test_stalls_when_operands_spill():
    g = gemm_array([conv_gemm(1, 10, 10, 16, 16, 3, 3)])
    big = _costs(g, make_accelerator(8, 16, "os", 64, 64, 64, 4))
    small = _costs(g, make_accelerator(8, 16, "os", 1, 1, 1, 4))
    assert float(small.compute_cycles[0]) == float(big.compute_cycles[0])
    # 512-word active halves: the filter (K·M = 2304 words) is re-read per row fold (18432 reads),
    # the ifmap (Np·K = 9216) once, the ofmap written once (1024); all but the first 512 words
    # of each stream at 4 words/cycle, after the compute
    assert float(small.cycles[0]) == pytest.approx(1327 + (18432 - 512 + 9216 - 512 + 1024 - 512) / 4)
    assert float(small.energy_pj[0]) > float(big.energy_pj[0])


class _Net(nnx.Module):
    def __init__(self):
        self.conv = Conv2d(3, 8, 3, 2, 1, rngs=nnx.Rngs(0))
        self.dw = Conv2d(8, 8, 5, 1, 2, groups=8, rngs=nnx.Rngs(1))
        self.fc = nnx.Linear(8, 10, rngs=nnx.Rngs(2))

    def __call__(self, x):
        return self.fc(jnp.mean(self.dw(self.conv(x)), axis=(1, 2)))


def test_gemms_from_traced_program_equal_formulas():
    net = _Net()
    graphdef, state = nnx.split(net)
    abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)
    found = gemm_layers(lambda st, x: nnx.merge(graphdef, st)(x), abstract, jax.ShapeDtypeStruct((2, 12, 12, 3), jnp.float32))
    assert found == {
        conv_gemm(2, 12, 12, 3, 8, 3, 3, stride=2, padding=1): 1,  # (2·6·6, 27, 8, 1)
        conv_gemm(2, 6, 6, 8, 8, 5, 5, padding=2, groups=8): 1,  # depthwise: 8 GEMMs (72, 25, 1)
        (2, 8, 10, 1): 1,  # dense
    }
    assert conv_gemm(2, 12, 12, 3, 8, 3, 3, stride=2, padding=1) == (72, 27, 8, 1)
    assert conv_gemm(2, 6, 6, 8, 8, 5, 5, padding=2, groups=8) == (72, 25, 1, 8)


def _Joint(network, hardware):
    """The joint space of a network space and a hardware space (network labels first)."""
    return JointSpace(network, hardware, "systolic")


@pytest.fixture(scope="module")
def nb201_models():
    net = build_space("nb201", 1, {})
    hw = HARDWARE_SPACES["systolic"](rows=(8, 16), cols=(8, 32), ifmap_kb=(1, 16), filter_kb=(1, 16), ofmap_kb=(1, 16),
                                     dram_bw=(2, 8), clock_mhz=(200, 1000))
    joint = _Joint(net, hw)
    # the supernet's per-candidate layer tables, traced once for both models
    base, per = supernet_gemm_tables(net, C=4, num_classes=10, in_channels=3, resolution=32, batch=1, check=1)
    joint_model = AcceleratorCost(joint, base, per)
    assert build_cost_model("accelerator", joint, {"C": 4, "check": 0}).delta.shape == joint_model.delta.shape
    return net, hw, joint_model, AcceleratorCost(net, base, per)


def test_systolic_space_labels_and_params():
    hw = SystolicSpace()
    assert hw.labels == ("hw/rows", "hw/cols", "hw/dataflow", "hw/ifmap_kb", "hw/filter_kb", "hw/ofmap_kb", "hw/dram_bw", "hw/clock_mhz")
    acc = hw.accelerator({"hw/rows": 32, "hw/cols": 8, "hw/dataflow": "is", "hw/ifmap_kb": 64, "hw/filter_kb": 16,
                          "hw/ofmap_kb": 128, "hw/dram_bw": 4, "hw/clock_mhz": 700})
    assert (float(acc.rows), float(acc.cols), float(acc.ifmap_kb), float(acc.clock_mhz)) == (32, 8, 64, 700)
    np.testing.assert_array_equal(np.asarray(acc.dataflow), [0, 0, 1])
    assert HARDWARE_SPACES["systolic"] is SystolicSpace
    # a subset of dataflows maps onto (os, ws, is)
    only_ws = SystolicSpace(dataflow=("ws",))
    np.testing.assert_array_equal(np.asarray(only_ws.accelerator(np.zeros(8, np.int32)).dataflow), [0, 1, 0])


def test_joint_vector_costs_its_one_hot_and_the_plain_model(nb201_models):
    net, hw, joint_model, net_model = nb201_models
    joint_cost, plain_cost = jax.jit(joint_model.cost), jax.jit(net_model.cost)
    key = jax.random.key(0)
    for k in jax.random.split(key, 3):
        vec = np.asarray(_sample(joint_model, k))
        by_vec = joint_cost(vec)
        by_onehot = joint_cost(joint_model.one_hot(vec))
        acc = hw.accelerator(vec[len(net.labels):])
        plain = plain_cost(vec[: len(net.labels)], hw=acc)
        for m in ("latency_ms", "energy_mj", "area_mm2", "cycles", "edp"):
            assert float(by_vec[m]) == pytest.approx(float(by_onehot[m]), rel=1e-6)
            assert float(by_vec[m]) == pytest.approx(float(plain[m]), rel=1e-5)
        assert float(by_vec["latency_ms"]) > 0 and float(by_vec["area_mm2"]) > 0


def _sample(model, key):
    """A uniformly random architecture vector of a cost model's space."""
    return jax.random.randint(key, (len(model.labels),), 0, jnp.asarray(model.num_candidates))


def test_expected_cost_is_linear_in_network_probs(nb201_models):
    net, hw, _, net_model = nb201_models
    acc = make_accelerator(16, 16, "ws", 16, 16, 16, 8, 500)
    a, b = np.zeros(len(net.labels), np.int32), np.full(len(net.labels), 3, np.int32)
    mix = 0.25 * net_model.one_hot(a) + 0.75 * net_model.one_hot(b)
    cycles = jax.jit(lambda p: net_model.price(p, acc)["cycles"])
    want = 0.25 * float(cycles(net_model.one_hot(a))) + 0.75 * float(cycles(net_model.one_hot(b)))
    assert float(cycles(mix)) == pytest.approx(want, rel=1e-5)


def test_gradients_and_jit(nb201_models):
    net, hw, joint_model, _ = nb201_models
    n_net = len(net.labels)
    logits = jax.random.normal(jax.random.key(1), (len(joint_model.labels), joint_model.width))
    mask = jnp.asarray(joint_model.mask())

    def loss(lg):
        p = jax.nn.softmax(jnp.where(mask, lg, -jnp.inf), axis=-1)
        c = joint_model.cost(p)
        return c["latency_ms"] + c["energy_mj"] + c["area_mm2"]

    value, grad = jax.jit(jax.value_and_grad(loss))(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert float(jnp.abs(grad[:n_net]).sum()) > 0  # network α
    g_hw = np.abs(np.asarray(grad[n_net:]))
    for i, label in enumerate(hw.labels):  # every hardware knob moves the cost
        assert g_hw[i].sum() > 0, label
    batched = jax.jit(lambda p: joint_model.cost(p)["cycles"])(jnp.stack([jax.nn.softmax(logits, -1)] * 2))
    assert batched.shape == (2,)


def test_macs_equal_the_mac_counter(nb201_models):
    net, _, _, net_model = nb201_models
    supernet = nnx.eval_shape(lambda: net.supernet(C=4, num_classes=10, in_channels=3, rngs=nnx.Rngs(0)))
    acc = make_accelerator()
    vec = np.array([3, 2, 3, 4, 1, 3], np.int32)
    macs = jnp.sum(net_model.counts(net_model.one_hot(vec)) * layer_costs(net_model.gemms, acc).macs)
    assert float(macs) == model_macs(supernet, (1, 32, 32, 3), arch={l: int(v) for l, v in zip(net.labels, vec)})


def test_metrics_of_a_whole_network():
    g = gemm_array({conv_gemm(1, 8, 8, 16, 32, 3, 3, padding=1): 2, (1, 64, 10, 1): 1})
    m = jax.jit(accelerator_metrics)(g, as_accelerator({"rows": 16, "cols": 16, "dataflow": "os", "clock_mhz": 1000}))
    assert float(m["latency_ms"]) == pytest.approx(float(m["cycles"]) / 1e6)
    assert float(m["edp"]) == pytest.approx(float(m["energy_mj"]) * float(m["latency_ms"]))


def test_bad_input_is_one_clear_error(nb201_models):
    _, _, joint_model, net_model = nb201_models
    with pytest.raises(DnasError, match="unknown dataflow 'xs'"):
        make_accelerator(dataflow="xs")
    with pytest.raises(DnasError, match="rows must be a positive number"):
        as_accelerator({"rows": 0})
    with pytest.raises(DnasError, match="unknown accelerator parameter 'banks'"):
        as_accelerator({"banks": 2})
    with pytest.raises(DnasError, match="positive numbers"):
        SystolicSpace(ifmap_kb=(16, -1))
    with pytest.raises(DnasError, match="unknown dataflow"):
        SystolicSpace(dataflow=("os", "rs"))
    with pytest.raises(DnasError, match="entries"):
        joint_model.cost(np.zeros(3, np.int32))
    with pytest.raises(DnasError, match="takes no hw"):
        joint_model.cost(np.zeros(len(joint_model.labels), np.int32), hw={"rows": 8})
    with pytest.raises(DnasError, match="bad convolution"):
        conv_gemm(1, 8, 8, 6, 4, 3, 3, groups=4)
    with pytest.raises(DnasError, match="takes no argument 'rows'"):
        build_cost_model("accelerator", SystolicSpace(), {"rows": 8})
    with pytest.raises(DnasError, match="not a hardware space alone"):
        build_cost_model("accelerator", SystolicSpace(), {})
    assert isinstance(net_model, AcceleratorCost)


def test_proxylessnas_keyed_space_joint_and_macs():
    net = build_space("proxylessnas", 1, {"ops": ("mb_k3_e3", "mb_k5_e6")})
    joint = _Joint(net, SystolicSpace(rows=(8, 32), cols=(16,), dataflow=("ws", "os")))
    model = build_cost_model("accelerator", joint, {"resolution": 32})
    n = len(net.labels)
    vec = np.concatenate([np.arange(n) % np.asarray(net.num_candidates), [1, 0, 1, 2, 0, 3, 1, 2]]).astype(np.int32)
    cost = jax.jit(model.cost)
    got = cost(vec)
    assert float(got["cycles"]) > 0 and float(got["area_mm2"]) == pytest.approx(32 * 16 * 630e-6 + (64 + 16 + 128) * 0.0047)
    # the layer table's MACs are the counter's, key by key (the ZERO candidate runs nothing)
    counts = build_cost_model("counts", net, {"resolution": 32})
    macs = jnp.sum(model.counts(model.one_hot(vec)) * _costs(model.gemms, make_accelerator()).macs)
    assert float(macs) / 1e6 == pytest.approx(float(counts.cost(vec[:n])["macs_m"]), rel=1e-5)
    grad = jax.grad(lambda p: model.price(p)["edp"])(model.one_hot(vec) * 0.5 + 0.5 * jnp.asarray(model.mask()) / model.mask().sum(-1, keepdims=True))
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad[:n]).sum()) > 0 and float(jnp.abs(grad[n:]).sum()) > 0
