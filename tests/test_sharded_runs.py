"""One-shot evaluation, zero-cost scoring and vmapped multi-trial runs split over devices
(dnas.core.sharding.RowSharded): the same results on 1 and on the suite's 4 fake CPU
devices, and the rows really spread over all of them."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.sharding import RowSharded, local_mesh

needs4 = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")


@needs4
def test_rows_are_split_over_every_device_padded_and_gathered():
    """Each device computes its own rows (the device index is written into the result), the
    padded tail is dropped, and the result is the same for 1 and 4 devices."""
    seen = []

    def fn(rows, w):
        seen.append(rows.shape)
        return {"y": rows @ w, "dev": jax.numpy.broadcast_to(jax.lax.axis_index("rows"), rows.shape[:1])}

    rows, w = np.arange(21, dtype=np.float32).reshape(7, 3), np.array([1.0, -2.0, 0.5], np.float32)
    one = RowSharded(fn, local_mesh(1), 2)(rows, w)
    four = RowSharded(fn, local_mesh(4), 2)(rows, w)
    np.testing.assert_array_equal(one["y"], rows @ w)
    np.testing.assert_array_equal(four["y"], one["y"])
    assert seen == [(2, 3), (2, 3)]  # per device: 2 rows, whatever the device count
    assert four["dev"].tolist() == [0, 0, 1, 1, 2, 2, 3] and set(one["dev"].tolist()) == {0}
    with pytest.raises(DnasError, match="rows per device"):
        RowSharded(fn, None, 0)


@needs4
def test_oneshot_evaluation_is_the_same_on_1_and_4_devices():
    from dnas.estimate.oneshot import OneShotEvaluator
    from dnas.search.state import split_model
    from dnas.space.spaces import NB201Space

    space = NB201Space(layers=1)
    net = space.supernet(C=4, num_classes=3, in_channels=3, rngs=nnx.Rngs(0))
    _, alpha, weights, stats = split_model(net)
    k = jax.random.split(jax.random.key(1), 3)
    val_x, val_y = np.asarray(jax.random.normal(k[0], (1, 4, 8, 8, 3))), np.asarray(jax.random.randint(k[1], (1, 4), 0, 3))
    recal_x = np.zeros((0, 4, 8, 8, 3), np.float32)  # recalibration is orthogonal to the split, and doubles the compile
    vecs = np.asarray(space.distinct_samples(9, jax.random.key(2)))
    out = {}
    for d in (1, 4):
        ev = OneShotEvaluator(space, net, alpha, weights, stats, val_x, val_y, recal_x, chunk=2, mesh=local_mesh(d))
        out[d] = ev.evaluate(vecs)
        assert ev.compiles == 1
    assert len(set(out[1]["loss"].round(5))) > 1  # the architectures differ, so a mix-up would show
    # Measured: bit-identical (each device runs the same per-device program).
    np.testing.assert_allclose(out[4]["loss"], out[1]["loss"], rtol=1e-6)
    np.testing.assert_array_equal(out[4]["acc"], out[1]["acc"])


@needs4
def test_zero_cost_scores_are_the_same_on_1_and_4_devices():
    from dnas.estimate.zero_cost.score import ZeroCostScorer
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space(layers=1)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 4).astype(np.int32)
    archs = np.array([[3, 3, 3, 3, 3, 3], [1, 2, 3, 4, 1, 2], [4, 1, 0, 2, 3, 3], [2, 2, 1, 1, 0, 4], [3, 1, 2, 3, 4, 3]], np.int32)
    scores = {}
    for d in (1, 4):
        scorer = ZeroCostScorer(space, ("naswot",), C=4, num_classes=10, in_channels=3, batch_shape=x.shape, mesh=local_mesh(d))
        scores[d] = scorer.score(archs, (x, y), jax.random.key(0))["naswot"]
        assert scorer.compiles == 1
    assert len(set(scores[1].round(6))) == len(archs)
    np.testing.assert_allclose(scores[4], scores[1], rtol=1e-9)


@needs4
def test_multitrial_summary_is_the_same_on_1_and_4_devices(tmp_path, require_shared):
    from dnas.run.config import load_config
    from dnas.run.multitrial import run_multitrial

    table = require_shared("nb201", "nb201_table.csv", why="the multi-trial runs search the NAS-Bench-201 table")
    summaries, chunks = {}, {}
    for d in (1, 4):
        c = load_config("experiments/nb201_multitrial/config.py:smoke", [])
        c.table, c.runs, c.runs_per_chunk = table, 6, 3  # 3 runs on 4 devices: one padded
        w = tmp_path / f"d{d}"
        run_multitrial(c, w, log=lambda m: None, devices=d)
        summaries[d] = {k: v for k, v in json.loads((w / "summary.json").read_text()).items() if not k.endswith("_s")}
        with np.load(w / "chunks" / "runs_00003.npz") as z:
            chunks[d] = [(a[:n], f[:n]) for a, f, n in zip(z["archs"], z["fitness"], z["count"])]
    assert summaries[4] == summaries[1]
    for (a1, f1), (a4, f4) in zip(chunks[1], chunks[4]):
        np.testing.assert_array_equal(a4, a1)
        np.testing.assert_array_equal(f4, f1)
