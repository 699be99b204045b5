"""Codesign NAS end to end: the experiments/codesign smoke variants from the command line,
what they write (summary.json's hypervolume and named front, the derived accelerator) and
what `dnas show` says about them."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from dnas.cli.main import main
from dnas.hardware.cost_model import build_cost_model
from dnas.run import driver
from dnas.space.base import build_space

CONFIG = "experiments/codesign/config.py"


@pytest.fixture(scope="module")
def table(require_shared):
    return require_shared("nb201", "nb201_table.csv")


def test_joint_nsga2_smoke_writes_a_named_front(tmp_path, table, capsys):
    run = tmp_path / "joint"
    assert main(["search", "--config", f"{CONFIG}:smoke", "--workdir", str(run)]) == 0
    assert driver._EXIT_BEFORE_FIRST_STEP is None  # main() in a process that lives on leaves signals to it (a later SIGTERM killed a pytest worker)
    s = json.loads((run / "summary.json").read_text())
    assert s["runs"] == 2 and 0.0 < s["hypervolume_mean"] <= 1.0 and len(s["hypervolume_runs"]) == 2
    assert s["hv_reference"] == [60.0, -2.0, -0.5, -3.0]
    front = s["pareto"]
    assert len(front) == s["pareto_size"] >= 2
    for p in front:
        assert set(p) >= {"arch", "hardware", "accuracy", "latency_ms", "energy_mj", "area_mm2"}
        assert set(p["hardware"]) == {"rows", "cols", "dataflow", "ifmap_kb", "filter_kb", "ofmap_kb", "dram_bw", "clock_mhz"}
        assert p["area_mm2"] <= 3.0  # the hard area limit rejects larger designs
    objs = np.array([p["objectives"] for p in front])
    dominated = [(objs >= o).all(1) & (objs > o).any(1) for o in objs]
    assert not any(d.any() for d in dominated)  # no front point dominates another
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "hypervolume" in out and "dataflow=" in out and "Pareto front" in out


def test_differentiable_smoke_derives_a_network_and_an_accelerator(tmp_path, table, capsys):
    run = tmp_path / "diff"
    assert main(["search", "--config", f"{CONFIG}:differentiable_smoke", "--workdir", str(run), "--config.max_steps=2"]) == 0
    hw = json.loads((run / "hardware.json").read_text())
    assert hw["dataflow"] in ("os", "ws", "is") and hw["rows"] in (8, 16, 32, 64)
    s = json.loads((run / "summary.json").read_text())
    (p,) = s["pareto"]
    assert p["hardware"] == hw and p["latency_ms"] > 0 and 0 <= s["hypervolume"] <= 1
    assert p["area_mm2"] <= 3.0  # the area budget: the most likely design within it
    # The pair's cost is the accelerator model's price of the derived joint vector.
    space = build_space("nb201", None, {"hardware": "systolic"})
    model = build_cost_model("accelerator", space, {"resolution": 32, "C": 16, "batch": 1})
    vec = np.concatenate([space.net_space.arch_str_to_vec(s["genotype"]), space.hw_space.encode({f"hw/{k}": v for k, v in hw.items()})])
    assert float(model.cost(vec)["energy_mj"]) == pytest.approx(p["energy_mj"], rel=1e-5)
    alpha = [json.loads(l) for l in (run / "alpha.jsonl").read_text().splitlines()][-1]["softmax"]
    assert "hw/dataflow" in alpha and len(alpha["hw/rows"]) == 4  # the hardware's α is logged beside the ops'


def test_hardware_alpha_gets_the_cost_gradient():
    """The joint supernet owns α for the hardware labels, and only the cost term moves them."""
    space = build_space("nb201", 1, {"hardware": "systolic"})
    net = space.supernet(C=4, num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
    assert set(space.hw_space.labels) <= set(net.alpha.keys())
    model = build_cost_model("accelerator", space, {"resolution": 16, "C": 4})
    logits = {l: jax.numpy.asarray(net.alpha[l][...]) for l in space.labels}
    grads = jax.grad(lambda a: model.cost({l: jax.nn.softmax(a[l]) for l in space.labels})["edap"])(logits)
    assert all(float(abs(grads[l]).sum()) > 0 for l in ("hw/rows", "hw/cols", "hw/dataflow"))
