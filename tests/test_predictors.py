"""Predictors behind one contract (dnas.hardware.predictors), few-shot transfer, ``dnas predictor fit``."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest
from scipy.stats import spearmanr

import dnas.cli.predictor as cli_predictor
from dnas.cli.main import main
from dnas.core.errors import DnasError
from dnas.hardware.predictors import MODELS, encode, flops_params, nb201_graph, sequence_graph
from dnas.hardware.predictors.graphs import Encoded
from dnas.hardware.predictors.transfer import TransferPredictor
import dnas.space.spaces  # noqa: F401 - registers the built-in spaces
from dnas.space.base import build_space
from dnas.space.spaces.nb201 import EDGES, NB201Space

SMALL = {  # every model small enough for a test on 2 shared cores
    "gcn": dict(hidden=16, layers=2, members=1, steps=100),
    "mlp": dict(members=2, hidden=16, steps=100),
    "ridge": {},
    "xgboost": dict(n_estimators=30),
    "flops": {},
    "params": {},
}
SMALL_PRETRAIN = dict(hidden=16, layers=2, pretrain_steps=200)


@pytest.fixture(scope="module")
def nb201_data():
    """120 random NB201 cells, a synthetic additive-plus-interaction target, counts."""
    space = NB201Space()
    rng = np.random.default_rng(0)
    vecs = rng.integers(0, 5, (120, 6)).astype(np.int32)
    conv3, conv1 = (vecs == 3).sum(1), (vecs == 2).sum(1)
    y = 1.0 + 2.0 * conv3 + 0.5 * conv1 + 0.3 * conv3 * conv1 + 0.05 * rng.normal(size=len(vecs))
    x = encode(space, vecs, flops=35.0 * conv3 + 4.0 * conv1, params=0.24 * conv3 + 0.03 * conv1)
    return space, vecs, x, y


def test_nb201_graph_is_brp_nas_graph():
    """8 nodes: input, the six edge ops in label order, output; op on edge i -> j reads the
    ops ending at node i (or the input); the output reads the three ops ending at node 3."""
    adj, nodes = nb201_graph(np.array([[0, 1, 2, 3, 4, 3]]))
    assert adj.shape == (1, 8, 8) and nodes.shape == (1, 8, 7)
    a = adj[0]
    for k, (j, i) in enumerate(EDGES):
        want = {0} if i == 0 else {1 + m for m, (jj, _) in enumerate(EDGES) if jj == i}
        assert set(np.flatnonzero(a[1 + k]).tolist()) == want
    assert set(np.flatnonzero(a[7]).tolist()) == {4, 5, 6} and not a[0].any()
    assert nodes[0, 0, 0] == 1 and nodes[0, 7, 1] == 1
    assert [int(np.argmax(nodes[0, 1 + k, 2:])) for k in range(6)] == [0, 1, 2, 3, 4, 3]
    seq_adj, seq_nodes = sequence_graph(np.array([[1, 0]]), np.array([[0, 1], [0, 2]]))
    assert seq_adj[0].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert seq_nodes.shape == (1, 4, 2 + 3 + 2) and seq_nodes[0, 1, 2 + 1] == 1 and seq_nodes[0, 2, 2 + 0] == 1


@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_contract(name, nb201_data):
    """fit(x, y, key) returns the model; predict gives f64[P]; the same key gives the same
    predictions; every model ranks this easy target well above chance."""
    _, _, x, y = nb201_data
    tr, te = np.arange(80), np.arange(80, 120)
    fit = lambda: MODELS[name](**SMALL[name]).fit(x.take(tr), y[tr], jax.random.key(3))  # noqa: E731
    m = fit()
    p = m.predict(x.take(te))
    assert p.shape == (40,) and p.dtype == np.float64 and np.all(np.isfinite(p))
    np.testing.assert_array_equal(p, fit().predict(x.take(te)))
    assert spearmanr(p, y[te])[0] > 0.8, name
    with pytest.raises(DnasError):
        MODELS[name](**SMALL[name]).fit(x.take(tr), y[:10], jax.random.key(0))


def test_gcn_learns_a_graph_property():
    """A known answer the one-hot position features cannot express linearly: the number of
    conv ops (ops 2, 3) on edges that the input reaches through non-``none`` ops. The GCN
    (message passing over the DAG) learns it from 300 cells."""
    rng = np.random.default_rng(1)
    vecs = rng.integers(0, 5, (400, 6)).astype(np.int32)

    def reached_convs(v):
        live = [True, False, False, False]  # node 0 (input) is reached
        count = 0
        for k, (j, i) in enumerate(EDGES):
            if live[i] and v[k] != 0:
                live[j] = True
                count += int(v[k] in (2, 3))
        return count

    y = np.array([reached_convs(v) for v in vecs], np.float64)
    x = encode(NB201Space(), vecs)
    m = MODELS["gcn"](hidden=32, layers=3, members=1, steps=300, learning_rate=1e-2).fit(x.take(np.arange(300)), y[:300], jax.random.key(0))
    p = m.predict(x.take(np.arange(300, 400)))
    assert np.mean(np.abs(p - y[300:])) < 0.35 and spearmanr(p, y[300:])[0] > 0.9


def _latency_table(rows: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NB201 cells with synthetic latencies on 4 'devices' (columns), positive, related."""
    rng = np.random.default_rng(seed)
    vecs = rng.integers(0, 5, (rows, 6)).astype(np.int32)
    counts = np.stack([(vecs == k).sum(1) for k in range(5)], 1).astype(float)
    per_op = np.array([[0.0, 0.1, 1.0, 3.0, 0.5], [0.0, 0.2, 0.8, 2.0, 0.9], [0.0, 0.05, 1.5, 4.0, 0.3], [0.0, 0.15, 1.1, 2.5, 0.7]])
    lat = 1.0 + counts @ per_op.T + 0.01 * rng.random((rows, 4))
    return vecs, lat


def test_transfer_reads_only_its_n_target_values():
    """TransferPredictor.fit is handed the N training values and nothing else: changing
    every other target row changes no prediction (the CLI passes target[train] only, see
    test_cli_transfer_reads_n_target_rows), and the adapted model ranks the new device."""
    vecs, lat = _latency_table()
    x = encode(NB201Space(), vecs)
    src, y = lat[:, :3], lat[:, 3]
    tp = TransferPredictor(x, src, gcn=SMALL_PRETRAIN, pretrain_key=jax.random.key(0))
    tr, te = np.arange(10), np.arange(10, 80)
    p = tp.fit(x.take(tr), y[tr], jax.random.key(1)).predict(x.take(te))
    assert spearmanr(p, y[te])[0] > 0.9
    with pytest.raises(DnasError, match="at least 3"):
        tp.fit(x.take(tr), y, jax.random.key(1))  # all rows offered: refused, shapes must match the N architectures


def test_cli_transfer_reads_n_target_rows(tmp_path, monkeypatch, capsys):
    """``dnas predictor fit --transfer-from``: two CSVs that differ only in the target's
    non-training rows give the same predictions (the fit read N target rows, no more)."""
    vecs, lat = _latency_table()
    space = NB201Space()
    order = np.random.default_rng(0).permutation(len(vecs))  # the CLI's documented pick at --seed 0
    seen = []
    real = cli_predictor.latency_metrics
    monkeypatch.setattr(cli_predictor, "latency_metrics", lambda p, m: (seen.append(np.asarray(p)), real(p, m))[1])
    monkeypatch.setattr(cli_predictor, "TransferPredictor", functools.partial(TransferPredictor, gcn=SMALL_PRETRAIN))
    for k, scale in enumerate((1.0, 7.0)):
        target = lat[:, 3].copy()
        target[order[10:]] *= scale  # only rows the fit must not read
        path = tmp_path / f"t{k}.csv"
        lines = ["arch,a,b,c,target"] + [f"{space.arch_str(v)},{a:.6f},{b:.6f},{c:.6f},{t:.6f}" for v, (a, b, c, _), t in zip(vecs, lat, target)]
        path.write_text("\n".join(lines) + "\n")
        argv = ["predictor", "fit", "--space", "nb201", "--csv", str(path), "--arch-column", "arch", "--target-column", "target",
                "--train", "10", "--model", "gcn", "--log-transfer", "--transfer-from", str(path), "--transfer-columns", "a,b,c", "--seed", "0"]
        assert main(argv) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert {"spearman", "kendall", "mape", "median_ape", "within_10pct", "fit_s"} <= set(out) and out["model"] == "gcn"
    np.testing.assert_array_equal(seen[0], seen[1])


def test_cli_json_last_and_clean_errors(tmp_path, capsys):
    vecs, lat = _latency_table(30)
    space = NB201Space()
    path = tmp_path / "m.csv"
    path.write_text("arch,acc\n" + "".join(f"{space.arch_str(v)},{70 + 3 * t:.4f}\n" for v, t in zip(vecs, lat[:, 0])))
    base = ["predictor", "fit", "--space", "nb201", "--csv", str(path), "--arch-column", "arch", "--target-column", "acc", "--seed", "0"]
    for model in ("ridge", "xgboost"):
        assert main([*base, "--train", "20", "--model", model]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        out = json.loads(lines[-1])
        assert len(lines) >= 2 and out["train"] == 20 and out["test"] == 10 and out["model"] == model
        assert {"spearman", "kendall", "mape", "median_ape", "within_10pct", "fit_s"} <= set(out)
    for argv, match in [
        ([*base, "--train", "29"], "--train must be between 3 and 28"),
        ([*base, "--train", "2"], "--train must be between"),
        ([*base[:5], str(tmp_path / "no.csv"), *base[6:], "--train", "5"], "cannot read"),
        ([*base[:9], "nope", *base[10:], "--train", "5"], "no column 'nope'"),
        ([*base, "--train", "5", "--transfer-from", str(path)], "go together"),
        ([*base, "--train", "5", "--transfer-from", str(path), "--transfer-columns", "acc"], "include the target column"),
        ([*base, "--train", "5", "--model", "mlp", "--features", "onehot"], "--features applies to the ridge model"),
        ([*base, "--train", "5", "--model", "ridge", "--features", "bogus"], "ridge features are onehot and/or count"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err


def test_encoded_take_and_extra():
    x = encode(NB201Space(), np.zeros((4, 6), np.int32), flops=np.arange(4.0))
    assert isinstance(x, Encoded) and len(x.take(np.array([0, 2]))) == 2
    assert x.take(np.array([3])).extra["flops"].tolist() == [3.0]
    with pytest.raises(DnasError):
        x.with_extra(sources=np.zeros((3, 2)))
    with pytest.raises(DnasError):
        encode(NB201Space(), np.zeros((4, 5), np.int32))


def test_gcn_pretrain_then_adapt_is_deterministic():
    """GCNPredictor.pretrain on source columns, then fit with a few samples: a ridge head
    on the frozen embedding, then L2-SP fine-tuning; same key, same predictions."""
    vecs, lat = _latency_table()  # the shapes and settings of the transfer tests: their compiled pretraining is reused
    x = encode(NB201Space(), vecs)
    y = np.log(lat[:, 3])

    def run():
        g = MODELS["gcn"](**SMALL_PRETRAIN, finetune_steps=20).pretrain(x, np.log(lat[:, :3]), jax.random.key(0))
        return g.fit(x.take(np.arange(10)), y[:10], jax.random.key(1)).predict(x.take(np.arange(10, 80)))

    p = run()
    assert p.shape == (70,) and np.all(np.isfinite(p))
    np.testing.assert_array_equal(p, run())
    assert spearmanr(p, y[10:])[0] > 0.7


def test_flops_params_count_the_cells_convolutions():
    """flops/params from the NB201 supernet (C=16, 32x32): a conv_3x3 edge costs 9x a
    conv_1x1 edge's MACs (same channels), skip / pool / none cost nothing."""
    vecs = np.array([[0] * 6, [1, 4, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0]], np.int32)
    c = flops_params(NB201Space(), vecs, C=16, num_classes=10, in_channels=3, resolution=32)
    f, p = c["flops"], c["params"]
    assert f[0] == pytest.approx(f[1]) and p[0] == pytest.approx(p[1])
    assert (f[3] - f[0]) == pytest.approx(9 * (f[2] - f[0]), rel=1e-6) and p[3] > p[2] > p[0] > 0


def test_other_spaces_are_op_sequences():
    """A space without a DAG encoding (DARTS here) is a chain of its positions, and the GCN
    fits on it through the same contract."""
    space = build_space("darts", 8)
    vecs = np.stack([np.asarray(space.sample(k)) for k in jax.random.split(jax.random.key(0), 24)])
    x = encode(space, vecs)
    n = len(space.labels)
    assert x.adj.shape == (24, n + 2, n + 2) and x.nodes.shape[:2] == (24, n + 2)
    p = MODELS["ridge"]().fit(x, x.count[:, 0] + 0.01 * np.arange(24), None).predict(x)
    assert p.shape == (24,)


def test_ridge_ensemble_transfers_from_sources_and_needs_them():
    """The few-shot ridge ensemble ranks a new device from 10 samples and its sources,
    deterministically, and refuses to run without source latencies (one line)."""
    vecs, lat = _latency_table()
    x = encode(NB201Space(), vecs, sources=lat[:, :3])
    y, tr, te = lat[:, 3], np.arange(10), np.arange(10, 80)
    fit = lambda: MODELS["ridge_ensemble"]().fit(x.take(tr), y[tr], jax.random.key(0))  # noqa: E731
    p = fit().predict(x.take(te))
    assert p.shape == (70,) and np.all(p > 0) and spearmanr(p, y[te])[0] > 0.9
    np.testing.assert_array_equal(p, fit().predict(x.take(te)))
    with pytest.raises(DnasError, match="transfers from other devices"):
        MODELS["ridge_ensemble"]().fit(encode(NB201Space(), vecs).take(tr), y[tr], jax.random.key(0))
