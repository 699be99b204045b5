"""The latency term in the search step: hand sums, finite differences, the target mode,
and ``config.latency`` validation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dnas.search.bilevel import make_search_step
from dnas.run.config import from_json, to_json, validate
from dnas.run.search import search_defaults
from dnas.core.errors import DnasError
from dnas.hardware import LatencyTable, LutEntry, LutKey, lut_term, table_latency
from dnas.search.latency import (
    LatencyPenalty,
    LatencySetup,
    add_penalties,
    build_latency,
    constrained_argmax,
    epoch_latency_metrics,
    relaxed_latency,
)
from dnas.space.relax import binary_gate
from dnas.space.spaces.proxylessnas import ProxylessSpace
from dnas.search.state import build_jitted, init_search_state



def tiny_space(ops=("mb_k3_e3", "mb_k5_e6")) -> ProxylessSpace:
    """Two searched blocks: a strided one (2 candidates) and one that may be zero (3)."""
    return ProxylessSpace(width_stages=(24,), n_cell_stages=(2,), stride_stages=(2,), ops=ops)


def tiny_table(space: ProxylessSpace, resolution: int = 32) -> LatencyTable:
    """Distinct made-up latencies: the i-th searched key costs 1 + i/3, the fixed parts 0.5
    each (small, so the searched blocks decide the latency)."""
    keys, fixed = space.lut_keys(resolution)
    wanted = dict.fromkeys(k for pos in keys.values() for cands in pos for k in cands if k is not None)
    entries = {k: LutEntry(1.0 + i / 3) for i, k in enumerate(wanted)}
    return LatencyTable({**entries, **{k: LutEntry(0.5) for k in fixed}}, "test", "none", "float32", 1)


def hand_expected(space, table, logits, resolution=32):
    keys, fixed = space.lut_keys(resolution)
    total = sum(table.mean(k) for k in fixed)
    for l in space.labels:
        p = np.exp(logits[l] - logits[l].max())
        p /= p.sum()
        total += sum(pi * (0.0 if k is None else table.mean(k)) for pi, k in zip(p, keys[l][0]))
    return total


def test_expected_latency_in_the_search_step_equals_a_hand_sum():
    space, rng = tiny_space(), np.random.default_rng(0)
    table = tiny_table(space)
    term = lut_term(space, table, 32)
    target, lam = 5.0, 0.7
    penalty = LatencyPenalty(term, "add#linear", {"lam": lam}, target, "expected")
    net = build_jitted(lambda r: space.supernet(C=8, num_classes=3, in_channels=1, rngs=r), jax.random.key(0))
    w_opt, a_opt = optax.sgd(0.01), optax.adam(0.1)
    graphdef, state = init_search_state(net, w_opt, a_opt, key=jax.random.key(1))
    # Non-uniform α, so the sum weighs candidates differently.
    alpha = {l: jnp.asarray(rng.normal(size=space.choice(l).n), jnp.float32) for l in space.labels}
    nnx.replace_by_pure_dict(state.alpha, {"alpha": alpha})
    step = make_search_step(graphdef, w_opt, a_opt, arch_penalty=penalty, fuse_passes=False)
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    y = jnp.array([0, 1, 2, 0])
    _, m = step.jit(donate=False)(state, (x, y), (x, y))
    expected = hand_expected(space, table, {l: np.asarray(a) for l, a in alpha.items()})
    assert float(m["penalty"]) == pytest.approx(lam * (expected - target) / target, rel=1e-5)
    got = epoch_latency_metrics(term, alpha)
    assert got["expected_latency_ms"] == pytest.approx(expected, rel=1e-5)
    argmax = {l: int(np.argmax(np.asarray(a))) for l, a in alpha.items()}
    assert got["derived_latency_ms"] == pytest.approx(float(table_latency(term, argmax)), rel=1e-6)


@pytest.mark.parametrize("name,kwargs,estimate", [("add#linear", {"lam": 0.3}, "expected"), ("mul#log", {}, "expected"),
                                                  ("fbnet", {}, "relaxed"), ("tunas_abs", {}, "expected")])
def test_penalty_alpha_gradient_matches_finite_differences(name, kwargs, estimate):
    space = tiny_space()
    term = lut_term(space, tiny_table(space), 32)
    pen = LatencyPenalty(term, name, kwargs, 4.0, estimate)
    base = {l: jnp.asarray(np.random.default_rng(i).normal(size=space.choice(l).n), jnp.float32)
            for i, l in enumerate(space.labels)}
    loss = jnp.float32(1.3)

    def f(logits):
        arch = {l: jax.nn.softmax(v) for l, v in logits.items()}  # "relaxed" sees mixing weights
        return pen(logits, arch, jnp.int32(0), loss) + loss

    g = jax.grad(f)(base)
    assert any(float(jnp.abs(v).max()) > 1e-4 for v in g.values())
    eps = 1e-2
    for l in space.labels:
        for i in range(space.choice(l).n):
            up = {k: (v.at[i].add(eps) if k == l else v) for k, v in base.items()}
            down = {k: (v.at[i].add(-eps) if k == l else v) for k, v in base.items()}
            fd = (float(f(up)) - float(f(down))) / (2 * eps)
            assert float(g[l][i]) == pytest.approx(fd, rel=2e-2, abs=2e-4)


def test_derived_and_sampled_estimates():
    space = tiny_space()
    term = lut_term(space, tiny_table(space), 32)
    logits = {l: jnp.linspace(-1.0, 1.0, space.choice(l).n) for l in space.labels}
    derived = LatencyPenalty(term, "target", {"lam": 1.0}, 4.0, "derived")
    argmax_lat = float(table_latency(term, {l: space.choice(l).n - 1 for l in space.labels}))
    assert float(derived.latency(logits, {})) == pytest.approx(argmax_lat, rel=1e-6)
    # Straight-through: the derived estimate's gradient is the expected latency's, checked
    # against central differences of the hand-written expected latency (numpy, float64).
    gd = jax.grad(lambda a: derived.latency(a, {}))(logits)
    table, base, eps = tiny_table(space), {l: np.asarray(v, np.float64) for l, v in logits.items()}, 1e-5
    for l in space.labels:
        for i in range(space.choice(l).n):
            step = eps * np.eye(space.choice(l).n)[i]
            fd = (hand_expected(space, table, {**base, l: base[l] + step}) - hand_expected(space, table, {**base, l: base[l] - step})) / (2 * eps)
            assert float(gd[l][i]) == pytest.approx(fd, rel=1e-4, abs=1e-6), (l, i)
    assert any(np.abs(np.asarray(gd[l])).max() > 1e-2 for l in space.labels)  # a gradient that matters
    # Two sampled paths: the latency of the active one of the two.
    relax = binary_gate(paths=2)
    arch = {l: relax(jax.random.key(i), logits[l], 0) for i, l in enumerate(space.labels)}
    lat = term.per_label()
    active = {l: int(np.argmax(np.asarray(arch[l].weight))) for l in space.labels}
    assert all(active[l] in np.asarray(arch[l].index) for l in space.labels)
    hand = float(term.fixed) + sum(lat[l][active[l]] for l in space.labels)
    assert float(relaxed_latency(term, arch)) == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_target_mode_drives_the_derived_architecture_to_the_target(factor):
    """α alone under Adam with the target penalty (a constant task loss): α's expected
    latency approaches T and the derived architecture's table latency ends within 10 % of
    T, for two targets 1.5x apart."""
    space = ProxylessSpace(layers=2)  # 11 blocks: enough granularity for 10 %
    table = tiny_table(space, 224)
    term = lut_term(space, table, 224)
    lat = term.per_label()
    lo = float(term.fixed) + sum(v.min() for v in lat.values())
    hi = float(term.fixed) + sum(v.max() for v in lat.values())
    target = 1.2 * lo * factor
    assert target < hi
    pen = LatencyPenalty(term, "target", {"lam": 1.0, "tol": 0.05}, target, "expected")
    # Start committed to the slowest candidate everywhere, far above both targets.
    logits = {l: 4.0 * jax.nn.one_hot(int(np.argmax(lat[l])), space.choice(l).n) for l in space.labels}
    opt = optax.adam(0.05)
    st = opt.init(logits)

    @jax.jit
    def update(logits, st):
        g = jax.grad(lambda a: pen(a, {}, jnp.int32(0), jnp.float32(0.0)))(logits)
        u, st = opt.update(g, st)
        return optax.apply_updates(logits, u), st

    setup = LatencySetup(pen, term, target, 0.05)
    start = epoch_latency_metrics(setup, logits)
    for _ in range(300):
        logits, st = update(logits, st)
    end = epoch_latency_metrics(setup, logits)
    # The penalty moved α's latency towards T; the derivation lands in the band.
    assert start["expected_latency_ms"] > 1.1 * target
    assert abs(end["expected_latency_ms"] - target) < 0.3 * abs(start["expected_latency_ms"] - target)
    assert abs(end["derived_latency_ms"] - target) / target < 0.10


def test_constrained_argmax_is_the_most_likely_architecture_in_the_band():
    """Against brute force over all 2 x 3 x 2 x 3 = 36 architectures of a 4-block space."""
    space = ProxylessSpace(width_stages=(24, 40), n_cell_stages=(2, 2), stride_stages=(2, 2), ops=("mb_k3_e3", "mb_k7_e6"))
    term = lut_term(space, tiny_table(space), 32)
    rng = np.random.default_rng(3)
    alpha = {l: rng.normal(size=space.choice(l).n) for l in space.labels}
    grid = np.stack(np.meshgrid(*[np.arange(space.choice(l).n) for l in space.labels], indexing="ij"), -1).reshape(-1, len(space))
    lats = np.asarray(table_latency(term, grid))
    logp = sum(np.asarray(jax.nn.log_softmax(jnp.asarray(alpha[l])))[grid[:, j]] for j, l in enumerate(space.labels))
    for target in np.quantile(lats, [0.2, 0.5, 0.9]):
        ok = np.abs(lats / target - 1) <= 0.05
        got = constrained_argmax(term, alpha, float(target), 0.05)
        np.testing.assert_array_equal(got, grid[np.argmax(np.where(ok, logp, -np.inf))])
        setup = LatencySetup(None, term, float(target), 0.05)
        assert abs(epoch_latency_metrics(setup, alpha)["derived_latency_ms"] / target - 1) <= 0.05
    assert constrained_argmax(term, alpha, 0.5 * float(lats.min()), 0.05) is None


def _config(**latency):
    c = search_defaults()
    c.dataset, c.space = "digits", "proxylessnas"
    for k, v in latency.items():
        c.latency[k] = v
    return c


def test_config_latency_keys_and_errors(tmp_path):
    space = tiny_space()
    path = tmp_path / "t.json"
    tiny_table(ProxylessSpace(), 224).save(path)
    # A table that lacks the keys of a smaller space's positions is refused for the full space.
    tiny_table(space, 224).save(tmp_path / "small.json")
    with pytest.raises(DnasError, match="no entry for space op"):
        validate(_config(table=str(tmp_path / "small.json")))
    c = _config(table=str(path), penalty="mul#log", target_ms=20.0)
    validate(c)
    setup = build_latency(c, ProxylessSpace(), binary_gate(paths=2))
    pen = setup.penalty
    assert pen.estimate == "relaxed" and setup.target_ms == 0.0
    with pytest.raises(DnasError, match="needs config.latency.target_ms"):
        validate(_config(table=str(path), penalty="add#linear"))
    with pytest.raises(DnasError, match="needs a cost model"):
        validate(_config(penalty="target", target_ms=3.0))
    with pytest.raises(DnasError, match="estimate"):
        validate(_config(table=str(path), estimate="bogus"))
    bad = LatencyTable({LutKey("Conv", (32, 32, 3), (16, 16, 32)): LutEntry(1.0)}, "x", "y", "float32", 1)
    bad.save(tmp_path / "bad.json")
    with pytest.raises(DnasError, match="no entry for space op"):
        validate(_config(table=str(tmp_path / "bad.json")))
    # A config saved before config.latency existed resumes with the term off.
    raw = json.loads(to_json(_config()))
    del raw["latency"]
    assert from_json(json.dumps(raw)).latency.table == ""
    assert add_penalties(None, None) is None and add_penalties(pen) is pen


def test_lut_build_and_check_on_this_device(tmp_path, capsys):
    """A 2-block space at 16x16: every key measured once, settings recorded, and the check
    compares sampled whole networks with the table's sums (one JSON line last)."""
    from dnas.cli.main import main_lut

    kwargs = '{"width_stages": [24], "n_cell_stages": [2], "stride_stages": [2], "ops": ["mb_k3_e3", "mb_k5_e6"]}'
    out = tmp_path / "lut.json"
    assert main_lut(["build", "--space", "proxylessnas", "--out", str(out), "--resolution", "16", "--repeats", "2",
                     "--max-repeats", "2", "--warmup", "1", "--inner", "2", "--space-kwargs", kwargs]) == 0
    table = LatencyTable.load(out)
    space = ProxylessSpace(width_stages=(24,), n_cell_stages=(2,), stride_stages=(2,), ops=("mb_k3_e3", "mb_k5_e6"))
    keys, fixed = space.lut_keys(16)
    assert set(table.entries) == {k for pos in keys.values() for c in pos for k in c if k is not None} | set(fixed)
    assert all(e.mean > 0 and e.count == 2 for e in table.entries.values())
    assert json.loads(table.source.split(" ", 3)[3])["statistic"] == "min"
    assert json.loads(table.source.split(" ", 3)[3])["clock"] == "cpu"  # auto on the CPU backend
    assert json.loads(table.source.split(" ", 3)[3])["resolution"] == 16 and table.backend.startswith("xla")
    capsys.readouterr()
    assert main_lut(["check", str(out), "--archs", "3", "--repeats", "2", "--max-repeats", "2", "--warmup", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"spearman", "mape", "within_10pct", "ratio", "noise", "noisy"} <= set(last) and len(last["measured_ms"]) == 3
    assert last["noise"]["repeats"] == 2 and isinstance(last["noisy"], bool)
    assert all(m > 0 for m in last["measured_ms"])
    # A table that dnas lut build did not write says so in one line.
    tiny_table(space, 16).save(tmp_path / "hand.json")
    assert main_lut(["check", str(tmp_path / "hand.json"), "--archs", "3"]) == 2
    assert "not made by dnas lut build" in capsys.readouterr().err
