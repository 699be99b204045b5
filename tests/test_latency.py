"""Latency tables, expected latency, penalties, predictors and ``dnas latency fit``."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.hardware import (
    PENALTIES,
    LatencyTable,
    LutEntry,
    LutKey,
    expected_latency,
    fit_latency_predictor,
    latency_metrics,
    latency_term,
    latency_term_from_table,
    load_fbnet_csv,
    load_yaml_lut,
    make_penalty,
    straight_through_latency,
    table_latency,
)
from dnas.cli.main import main_latency
from dnas.space.base import Choice, SearchSpace

# A small space with a shared label (used at two positions) and unequal candidate counts.
SPACE = SearchSpace([Choice("l1/op", ("k3", "k5", "zero")), Choice("l2/op", ("k3", "k5"))])


def _key(op: str, c_in: int = 16, kernel: int | None = 3) -> LutKey:
    return LutKey(op, (8, 8, c_in), (8, 8, 16), kernel=kernel, stride=1)


def _table() -> LatencyTable:
    entries = {
        _key("conv"): LutEntry(1.0, 0.1, 10),
        _key("conv", kernel=5): LutEntry(2.5, 0.1, 10),
        _key("conv", c_in=32): LutEntry(1.5, 0.1, 10),
        _key("conv", c_in=32, kernel=5): LutEntry(3.0, 0.1, 10),
        LutKey("stem", (32, 32, 3), (8, 8, 16)): LutEntry(0.75, 0.0, 10),
    }
    return LatencyTable(entries, "cpu", "xla", "float32", 1, source="test")


# l1/op is shared by two positions (C_in=16 and 32); l2/op sits at one position.
KEYS = {
    "l1/op": [[_key("conv"), _key("conv", kernel=5), None], [_key("conv", c_in=32), _key("conv", c_in=32, kernel=5), None]],
    "l2/op": [[_key("conv"), _key("conv", kernel=5)]],
}
FIXED = [LutKey("stem", (32, 32, 3), (8, 8, 16))]


def _term():
    return latency_term_from_table(SPACE, _table(), KEYS, FIXED)


def test_key_string_round_trip_and_ofa_order():
    s = "expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0"
    k = LutKey.parse(s)
    assert str(k) == s and k.expand == 144 and k.kernel == 3 and dict(k.extra) == {"idskip": 0, "se": 0, "hs": 0}
    assert LutKey.parse("Logits-input:7x7x1280-output:1000").output_shape == (1000,)


def test_expected_latency_equals_hand_sum():
    term = _term()
    probs = {"l1/op": jnp.array([0.2, 0.5, 0.3]), "l2/op": jnp.array([0.6, 0.4])}
    # l1 sums its two positions: k3 = 1.0 + 1.5, k5 = 2.5 + 3.0, zero = 0.
    hand = 0.2 * 2.5 + 0.5 * 5.5 + 0.3 * 0.0 + 0.6 * 1.0 + 0.4 * 2.5 + 0.75
    assert float(jax.jit(expected_latency)(term, probs)) == pytest.approx(hand, rel=1e-6)
    # A discrete architecture is a one-hot distribution.
    assert float(table_latency(term, np.array([1, 0]))) == pytest.approx(5.5 + 1.0 + 0.75, rel=1e-6)
    batch = table_latency(term, np.array([[1, 0], [2, 1]]))
    np.testing.assert_allclose(np.asarray(batch), [7.25, 0.0 + 2.5 + 0.75], rtol=1e-6)
    assert float(table_latency(term, {"l1/op": 2, "l2/op": 1})) == pytest.approx(3.25, rel=1e-6)


def test_expected_latency_gradient_matches_finite_differences():
    term = _term()
    alpha = {"l1/op": jnp.array([0.3, -0.2, 0.1]), "l2/op": jnp.array([-0.5, 0.4])}

    def f(a):
        return expected_latency(term, {l: jax.nn.softmax(v) for l, v in a.items()})

    grad = jax.grad(f)(alpha)
    assert all(float(jnp.max(jnp.abs(g))) > 1e-3 for g in grad.values())
    eps = 1e-3
    for label, a in alpha.items():
        for i in range(a.shape[0]):
            up = {**alpha, label: a.at[i].add(eps)}
            down = {**alpha, label: a.at[i].add(-eps)}
            fd = (float(f(up)) - float(f(down))) / (2 * eps)
            assert float(grad[label][i]) == pytest.approx(fd, rel=2e-2, abs=2e-4)


def test_straight_through_latency_is_argmax_forward_expected_backward():
    term = _term()
    probs = {"l1/op": jnp.array([0.2, 0.5, 0.3]), "l2/op": jnp.array([0.6, 0.4])}
    assert float(straight_through_latency(term, probs)) == pytest.approx(float(table_latency(term, np.array([1, 0]))), rel=1e-6)
    # Backward: the expected latency's gradient, which is each candidate's latency summed
    # over its positions, written out from _table() (l1: k3 1.0 + 1.5, k5 2.5 + 3.0, zero 0;
    # l2: k3 1.0, k5 2.5), not computed by another call into the code under test.
    g_st = jax.grad(lambda p: straight_through_latency(term, p))(probs)
    hand = {"l1/op": [2.5, 5.5, 0.0], "l2/op": [1.0, 2.5]}
    for l in probs:
        np.testing.assert_allclose(np.asarray(g_st[l]), hand[l], rtol=1e-6)


def test_penalties_against_hand_computation():
    loss, lat, t0 = 2.0, 90.0, 80.0
    assert float(PENALTIES["add#linear"](loss, lat, t0)) == pytest.approx(2.0 + 0.1 * 10.0 / 80.0)
    assert float(PENALTIES["mul#log"](loss, lat, t0)) == pytest.approx(0.2 * 2.0 * (math.log(90) / math.log(80)) ** 0.3)
    assert float(PENALTIES["fbnet"](loss, lat, None)) == pytest.approx(2.0 * 0.2 * math.log(90) ** 0.6)
    assert float(PENALTIES["tunas_abs"](loss, lat, t0)) == pytest.approx(2.0 + 0.10 * abs(90 / 80 - 1))
    assert float(PENALTIES["tunas_abs"](loss, 70.0, t0)) == pytest.approx(2.0 + 0.10 * abs(70 / 80 - 1))
    assert float(PENALTIES["target"](loss, lat, t0, lam=3.0)) == pytest.approx(2.0 + 3.0 * (90 / 80 - 1) ** 2)
    assert float(make_penalty("mul#log", alpha=1.0, beta=0.6)(loss, lat, t0)) == pytest.approx(2.0 * (math.log(90) / math.log(80)) ** 0.6)
    with pytest.raises(DnasError, match="takes lam; got unknown gamma"):
        make_penalty("add#linear", gamma=1.0)
    with pytest.raises(DnasError, match="unknown latency penalty"):
        make_penalty("nope")


def test_penalty_gradient_flows_to_alpha():
    term = _term()
    pen = make_penalty("target", lam=1.0)

    def objective(a):
        return pen(jnp.float32(1.0), expected_latency(term, {l: jax.nn.softmax(v) for l, v in a.items()}), 4.0)

    g = jax.grad(objective)({"l1/op": jnp.zeros(3), "l2/op": jnp.zeros(2)})
    assert float(jnp.abs(g["l1/op"]).sum()) > 0


def test_table_json_round_trip_is_atomic(tmp_path):
    t = _table()
    path = tmp_path / "lut.json"
    t.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["lut.json"]  # no temporary left behind
    back = LatencyTable.load(path)
    assert back == t


def _one_line_error(obj, match: str) -> None:
    with pytest.raises(DnasError, match=match) as e:
        LatencyTable.from_json(obj)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda o: o.pop("device"), "lacks 'device'"),
        (lambda o: o.update(version=7), "version 7 is not supported"),
        (lambda o: next(iter(o["entries"].values())).update(mean=float("nan")), "mean nan"),
        (lambda o: next(iter(o["entries"].values())).update(std=-1.0), "std -1.0"),
        (lambda o: next(iter(o["entries"].values())).pop("count"), "lacks 'count'"),
        (lambda o: o["entries"].update({"conv-input:8x8-output:8xAx16": {"mean": 1, "std": 0, "count": 1}}), "output shape '8xAx16'"),
        (lambda o: o["entries"].update({"conv-output:8x8x16": {"mean": 1, "std": 0, "count": 1}}), "no input:HxWxC"),
        (lambda o: o["entries"].update({"conv-input:8x8x3-output:8x8x3-kernel": {"mean": 1, "std": 0, "count": 1}}), "not name:value"),
    ],
)
def test_malformed_tables_give_one_line(mutate, match):
    obj = json.loads(json.dumps(_table().to_json()))
    mutate(obj)
    _one_line_error(obj, match)


def test_space_op_with_no_entry_is_named(tmp_path):
    keys = {**KEYS, "l2/op": [[_key("conv"), _key("conv", kernel=7)]]}
    with pytest.raises(DnasError, match=r"no entry for space op l2/op\[0\]=k5 \(key 'conv-input:8x8x16-output:8x8x16-kernel:7-stride:1'\)"):
        latency_term_from_table(SPACE, _table(), keys, FIXED)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DnasError, match="not valid JSON"):
        LatencyTable.load(bad)


def test_proxylessnas_and_ofa_yaml_tables(require_shared):
    why = "the YAML loader is checked on the published ProxylessNAS / Once-for-All latency tables"
    path = require_shared("luts", "proxylessnas_mobile_pixel1.yaml", why=why)
    import yaml

    t = load_yaml_lut(path, device="pixel1")
    raw = yaml.safe_load(open(path))
    assert len(t) == len(raw) == 72 and sorted(map(str, t.entries)) == sorted(raw)
    k = "expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0"
    assert t.lookup(k).mean == pytest.approx(raw[k]["mean"]) and t.lookup(k).std == pytest.approx(math.sqrt(raw[k]["var"]))
    ofa = require_shared("luts", "ofa_note10", "224_lookup_table.yaml", why=why)
    t2 = load_yaml_lut(ofa, device="note10")
    raw2 = yaml.safe_load(open(ofa))
    assert sorted(map(str, t2.entries)) == sorted(raw2)
    any_key = next(iter(raw2))
    assert t2.mean(any_key) == pytest.approx(raw2[any_key]["mean"]) and t2.lookup(any_key).std == pytest.approx(raw2[any_key]["std"])


def test_yaml_with_nan_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Conv-input:224x224x3-output:112x112x32:\n  count: 3\n  mean: .nan\n  var: 0.1\n")
    with pytest.raises(DnasError, match="mean nan"):
        load_yaml_lut(bad)


def test_fbnet_csv_sums_deltas_and_becomes_a_latency_term(require_shared):
    path = require_shared("luts", "fbnet_layer_lut_hwnasbench.csv", why="the FBNet loader is checked on HW-NAS-Bench's per-layer table")
    tables = load_fbnet_csv(path)
    assert sorted(tables) == ["eyeriss", "fpga", "pixel3", "raspi4"]
    t = tables["raspi4"]
    assert t.delta_ms.shape == (22, 9) and t.ops[0] == "k3_e1" and t.ops[-1] == "skip"
    arch = np.arange(22) % 9
    hand = t.base_ms + sum(t.delta_ms[l, arch[l]] for l in range(22))
    assert float(t.latency(arch)) == pytest.approx(hand)
    assert float(t.latency(np.zeros(22, int))) == pytest.approx(t.base_ms)
    space = SearchSpace([Choice(f"layer{l}/op", t.ops) for l in range(22)])
    term = t.latency_term(space)
    assert float(table_latency(term, arch)) == pytest.approx(hand, rel=1e-5)


def test_fbnet_csv_missing_total_is_one_line(tmp_path):
    bad = tmp_path / "fb.csv"
    bad.write_text("device,layer,op_idx,op,delta_ms_vs_k3_e1_same_layer\nd,0,0,k3_e1,0.0\nd,0,1,skip,-0.5\n")
    with pytest.raises(DnasError, match="device 'd' has no total row"):
        load_fbnet_csv(bad)


def test_least_squares_recovers_a_synthetic_additive_model():
    key = jax.random.key(0)
    k_w, k_x = jax.random.split(key)
    n, k = 6, 5
    true_w = np.asarray(jax.random.uniform(k_w, (n, k), minval=0.1, maxval=2.0))
    vecs = np.asarray(jax.random.randint(k_x, (200, n), 0, k))
    y = 3.0 + true_w[np.arange(n)[None, :], vecs].sum(1)
    pred = fit_latency_predictor(vecs[:100], y[:100], [k] * n, features=("onehot",), grid=(1e-9,))
    np.testing.assert_allclose(pred.predict(vecs[100:]), y[100:], rtol=1e-6)
    # The additive fit is a lookup table: as a latency term it prices architectures the same.
    space = SearchSpace([Choice(f"e{i}", tuple(range(k))) for i in range(n)])
    term = pred.latency_term(space)
    np.testing.assert_allclose(np.asarray(table_latency(term, vecs[100:])), y[100:], rtol=1e-5)
    m = latency_metrics(pred.predict(vecs[100:]), y[100:])
    assert m["spearman"] == pytest.approx(1.0) and m["mape"] < 1e-3 and m["within_10pct"] == 1.0


def test_metrics_by_hand():
    m = latency_metrics(np.array([1.0, 2.1, 2.9, 5.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx(100 * (0 + 0.05 + 0.1 / 3 + 0.25) / 4)
    assert m["median_ape"] == pytest.approx(100 * (0.1 / 3 + 0.05) / 2)
    assert m["within_10pct"] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def nb201(require_shared):
    """The NB201 table's architectures (int32[15625, 6]) and latency columns."""
    path = require_shared("nb201", "nb201_table.csv", why="latency predictors are fitted to the benchmark's measured latencies")
    import csv

    from dnas.space.genotype import NB201Genotype
    from dnas.space.spaces.nb201 import NB201Space

    space = NB201Space()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    vecs = np.stack([space.genotype_to_vec(NB201Genotype.from_arch_str(r["arch_str"])) for r in rows])
    lat = {c: np.array([float(r[c]) for r in rows]) for c in rows[0] if c.startswith("lat_ms_")}
    return path, space, vecs, lat


def test_few_shot_transfer_beats_from_scratch_at_10(nb201):
    _, space, vecs, lat = nb201
    sources = np.stack([lat[f"lat_ms_{d}"] for d in ("1080ti_1", "1080ti_32", "1080ti_256", "pixel3", "samsung_a50")], axis=1)
    y = lat["lat_ms_raspi4"]
    scratch, transfer = [], []
    for seed in range(3):
        order = np.asarray(jax.random.permutation(jax.random.key(seed), len(y)))
        tr, te = order[:10], order[10:]
        p = fit_latency_predictor(vecs[tr], y[tr], space.num_candidates, features=("onehot",))
        scratch.append(latency_metrics(p.predict(vecs[te]), y[te])["spearman"])
        q = fit_latency_predictor(vecs[tr], y[tr], space.num_candidates, sources=sources[tr])
        transfer.append(latency_metrics(q.predict(vecs[te], sources[te]), y[te])["spearman"])
    assert np.mean(transfer) > np.mean(scratch) + 0.2, (scratch, transfer)
    assert np.mean(transfer) > 0.85


def test_cli_fit_prints_metrics_json_last(nb201, capsys):
    """``dnas latency fit`` fits on the first ``--train`` rows of
    ``np.random.default_rng(seed).permutation`` (its documented, machine-independent pick)
    and scores every other row: the same predictor fitted through the library on those
    rows and scored by hand (scipy's rank correlations, numpy's relative errors) gives
    the numbers it prints."""
    from scipy.stats import kendalltau, spearmanr

    path, space, vecs, lat = nb201
    args = ["fit", "--space", "nb201", "--csv", path, "--arch-column", "arch_str", "--latency-column", "lat_ms_raspi4", "--train", "20", "--seed", "1",
            "--model", "ridge"]  # the ridge path, checked number by number (the transfer default is ridge_ensemble)
    assert main_latency([*args, "--transfer-from", path, "--transfer-columns", "lat_ms_pixel3,lat_ms_1080ti_1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["train"] == 20 and out["test"] == 15625 - 20 and out["features"] == ["onehot", "count", "source"]
    assert out["transfer_columns"] == ["lat_ms_pixel3", "lat_ms_1080ti_1"]
    order = np.random.default_rng(1).permutation(len(vecs))
    tr, te = order[:20], order[20:]
    y, sources = lat["lat_ms_raspi4"], np.stack([lat["lat_ms_pixel3"], lat["lat_ms_1080ti_1"]], axis=1)
    pred = fit_latency_predictor(vecs[tr], y[tr], space.num_candidates, candidates=[c.candidates for c in space.choices],
                                 sources=sources[tr], features=("onehot", "count", "source")).predict(vecs[te], sources[te])
    rel = np.abs(pred - y[te]) / y[te]
    assert out["spearman"] == pytest.approx(spearmanr(pred, y[te])[0], abs=1e-9)
    assert out["kendall"] == pytest.approx(kendalltau(pred, y[te])[0], abs=1e-9)
    assert out["mape"] == pytest.approx(100 * rel.mean(), rel=1e-9)
    assert out["median_ape"] == pytest.approx(100 * np.median(rel), rel=1e-9)
    assert out["within_10pct"] == pytest.approx(np.mean(rel <= 0.1), abs=1e-12)
    assert out["spearman"] > 0.8  # and transfer from two devices ranks raspi4 latencies well at 20 rows
    assert main_latency([*args, "--transfer-from", path, "--transfer-columns", "lat_ms_raspi4,lat_ms_pixel3"]) == 2
    assert "include the target column 'lat_ms_raspi4'" in capsys.readouterr().err


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("arch,ms\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.0\n|bogus~0|+|x|,2.0\n")
    base = ["fit", "--space", "nb201", "--csv", str(csv_path), "--arch-column", "arch", "--latency-column", "ms", "--train", "2"]
    for argv, match in [
        (base, "row 2 of 'arch'"),
        ([*base[:4], str(tmp_path / "missing.csv"), *base[5:]], "cannot read"),
        ([*base[:8], "latency", *base[9:]], "no column 'latency'"),
    ]:
        assert main_latency(argv) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
