"""Joint (network + hardware) spaces and what discrete codesign search builds on them:
composition by name, variation of both parts, estimators and fixed-device cost models
that see the network part, hard limits on several objectives, the sequential baseline
strategy, and the normalised hypervolume. No network is compiled here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.core.stats import hypervolume
from dnas.estimate import ESTIMATORS, Estimator, build_estimator
from dnas.hardware.cost_model import AdditiveCost, COST_MODELS, build_cost_model
from dnas.hardware.penalties import latency_term
from dnas.search.latency import derive_hardware
from dnas.search.objectives import OBJECTIVES
from dnas.search.strategies import STRATEGIES
from dnas.space.base import HARDWARE_SPACES, Choice, JointSpace, SearchSpace, build_space


class _Hw(SearchSpace):
    """A two-label hardware space for these tests."""

    def __init__(self, rows=(8, 16, 32), dataflow=("os", "ws", "is")):
        super().__init__([Choice("hw/rows", rows), Choice("hw/dataflow", dataflow)])


if "_test_hw" not in HARDWARE_SPACES:
    HARDWARE_SPACES.add("_test_hw", _Hw)


@pytest.fixture(scope="module")
def joint():
    return build_space("nb201", None, {"hardware": "_test_hw"})


def test_composition_by_name(joint):
    assert isinstance(joint, JointSpace)
    assert joint.labels[:6] == joint.net_space.labels and joint.labels[6:] == ("hw/rows", "hw/dataflow")
    assert joint.size() == 15625 * 9
    assert joint.arch_str(np.zeros(6, np.int32)).count("none") == 6  # network helpers are the network's
    with pytest.raises(DnasError, match="unknown hardware space 'nope'"):
        build_space("nb201", None, {"hardware": "nope"})
    with pytest.raises(DnasError, match="hardware space '_test_hw'"):
        build_space("nb201", None, {"hardware": "_test_hw", "hardware_kwargs": {"banks": 2}})
    with pytest.raises(DnasError, match="share the label"):
        JointSpace(_Hw(), _Hw())


def test_variation_keeps_both_parts_valid(joint):
    keys = jax.random.split(jax.random.key(0), 400)
    v = np.asarray(jax.vmap(joint.sample)(keys))
    assert all(joint.is_valid(x) for x in v[:50])
    assert len({tuple(x[6:]) for x in v}) == 9  # every hardware configuration is drawn
    m = np.asarray(jax.vmap(joint.mutate)(keys, jnp.asarray(v)))
    net_changed, hw_changed = (m[:, :6] != v[:, :6]).any(1), (m[:, 6:] != v[:, 6:]).any(1)
    assert not (net_changed & hw_changed).any() and (net_changed | hw_changed).all()  # one group at a time
    # Each part is picked in proportion to its group count (6 edges, 2 hardware labels).
    assert abs(hw_changed.mean() - 2 / 8) < 0.07
    net, hw = joint.split(v[0])
    assert (joint.join(net, hw) == v[0]).all()


def test_fixed_device_models_and_estimators_see_the_network_part(joint):
    if "_test_edges" not in COST_MODELS:
        COST_MODELS.add("_test_edges", lambda space: AdditiveCost({"latency_ms": latency_term(space, {l: np.arange(5.0) for l in space.labels}, 1.0)}))
    model = build_cost_model("_test_edges", joint)
    assert model.labels == joint.labels
    v = np.array([1, 2, 3, 4, 0, 1, 2, 0])
    assert float(model.cost(v)["latency_ms"]) == 1.0 + 1 + 2 + 3 + 4 + 0 + 1
    v2 = v.copy()
    v2[6:] = [0, 2]
    assert float(model.cost(v2)["latency_ms"]) == float(model.cost(v)["latency_ms"])  # hardware does not change it
    term = model.additive("latency_ms")
    assert term.lat.shape == (8, 5) and float(jnp.abs(term.lat[6:]).sum()) == 0.0

    if "_test_sum" not in ESTIMATORS:
        def _sum(space):
            assert not isinstance(space, JointSpace)  # built on the network part
            return Estimator(lambda a, k: ({"acc": a.sum(-1).astype(jnp.float32)}, jnp.ones(a.shape[:1])), ("acc",), True, 1.0, lambda x: str(list(x)))
        ESTIMATORS.add("_test_sum", _sum)
    est = build_estimator("_test_sum", joint)
    metrics, _ = est.evaluate(jnp.asarray([v, v2]), jax.random.key(0))
    assert metrics["acc"].tolist() == [11.0, 11.0]
    assert est.describe(v).endswith("@ rows=32 dataflow=os") and est.describe(v2).endswith("@ rows=8 dataflow=is")


def test_multi_objective_hard_limits():
    fn = OBJECTIVES["multi"](metrics=["acc", "-lat"], limits={"area": 2.0}, penalty=-99.0)
    out = np.asarray(fn({"acc": jnp.array([90.0, 95.0]), "lat": jnp.array([3.0, 1.0]), "area": jnp.array([1.0, 3.0])}))
    assert out.tolist() == [[90.0, -3.0], [-99.0, -99.0]]


def test_sequential_searches_the_network_then_the_hardware(joint):
    st = STRATEGIES["sequential"](joint, network_evals=8, network_strategy="random", network_kwargs={"batch": 4},
                                  hardware_strategy="random", hardware_kwargs={"batch": 4}, baseline={"rows": 16}, num_objectives=2)
    state = st.init(jax.random.key(0))
    asked = []
    for i in range(5):
        archs, state = st.ask(state, jax.random.fold_in(jax.random.key(1), i))
        fit = jnp.stack([archs[:, :6].sum(-1).astype(jnp.float32), -archs[:, 6].astype(jnp.float32)], -1)  # accuracy: op indices' sum
        state = st.tell(state, archs, fit)
        asked.append(np.asarray(archs))
    phase_one, phase_two = np.concatenate(asked[:2]), np.concatenate(asked[2:])
    assert (phase_one[:, 6:] == [1, 0]).all()  # the baseline accelerator (rows=16, first dataflow)
    best = phase_one[np.argmax(phase_one[:, :6].sum(-1)), :6]
    assert (phase_two[:, :6] == best).all() and len({tuple(x) for x in phase_two[:, 6:]}) > 1
    with pytest.raises(DnasError, match="joint space"):
        STRATEGIES["sequential"](joint.net_space)
    with pytest.raises(DnasError, match="as many architectures per step"):
        STRATEGIES["sequential"](joint, network_strategy="random", network_kwargs={"batch": 2}, hardware_strategy="random", hardware_kwargs={"batch": 3})
    with pytest.raises(DnasError, match="no hardware label 'hw/banks'"):
        STRATEGIES["sequential"](joint, baseline={"banks": 2})


def test_normalised_hypervolume():
    # One point halfway in both objectives covers a quarter of the unit box.
    assert hypervolume(np.array([[0.5, 0.5]]), [0.0, 0.0], [1.0, 1.0]) == pytest.approx(0.25)
    # Two points: 0.5*1 + 1*0.5 - 0.5*0.5 (the overlap).
    assert hypervolume(np.array([[0.5, 1.0], [1.0, 0.5]]), [0.0, 0.0], [1.0, 1.0]) == pytest.approx(0.75)
    # A point worse than the reference in one objective dominates nothing.
    assert hypervolume(np.array([[-1.0, 1.0]]), [0.0, 0.0], [1.0, 1.0]) == 0.0
    with pytest.raises(DnasError, match="one reference and one ideal value per objective"):
        hypervolume(np.array([[0.5, 0.5]]), [0.0], [1.0, 1.0])


def test_derived_hardware_is_the_most_likely_design_within_the_limits(joint):
    # "area" grows with the rows index; the dataflow costs nothing.
    area = {l: (np.array([1.0, 2.0, 4.0]) if l == "hw/rows" else np.zeros(joint.choice(l).n)) for l in joint.labels}
    model = AdditiveCost({"area_mm2": latency_term(joint, area)})
    alpha = {l: np.zeros(joint.choice(l).n) for l in joint.labels}
    alpha["hw/rows"] = np.array([0.0, 1.0, 3.0])  # prefers 32 rows
    alpha["hw/dataflow"] = np.array([0.0, 2.0, 1.0])  # prefers ws
    net = np.zeros(6, np.int32)
    assert derive_hardware(joint, model, alpha, net).tolist() == [2, 1]
    assert derive_hardware(joint, model, alpha, net, {"area_mm2": 2.5}).tolist() == [1, 1]  # 32 rows is over the budget
    with pytest.raises(DnasError, match="no design"):
        derive_hardware(joint, model, alpha, net, {"area_mm2": 0.5})
    with pytest.raises(DnasError, match="hardware limit on 'power_w'"):
        derive_hardware(joint, model, alpha, net, {"power_w": 1.0})
