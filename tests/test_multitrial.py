"""Multi-trial runs: the NAS-Bench-201 table estimator, objectives and constraints checked
against a brute-force scan of all 15,625 cells, the run driver end to end with resume,
NSGA-II's Pareto output, and one-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.estimate import ESTIMATORS
from dnas.estimate.nb201_table import load_table
from dnas.run.multitrial import check_multitrial, multitrial_defaults, run_multitrial
from dnas.core.stats import pareto_mask
from dnas.search.objectives import OBJECTIVES
from dnas.space.spaces import NB201Space

WHY = "the table estimator, the objectives and the driver are checked on the real NAS-Bench-201 table"


@pytest.fixture
def table(require_shared):
    """The NAS-Bench-201 table's path (``../shared/data``; a failure in CI when absent)."""
    return require_shared("nb201", "nb201_table.csv", why=WHY)


def _config(table, **kw):
    c = multitrial_defaults()
    c.table = table
    c.runs, c.runs_per_chunk, c.budget_s, c.log_runs = 5, 2, 2000.0, 2
    for k, v in kw.items():
        c[k] = v
    return c


def _csv_rows(path):
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_table_lookup_matches_the_csv_rows(table):
    path = table
    header, rows = _csv_rows(path)
    space = NB201Space()
    est = ESTIMATORS["nb201_table"](space, table=path)
    from dnas.space.genotype import NB201Genotype

    picks = [0, 1, 777, 15624]
    vecs = np.stack([space.encode({f"cell/edge_{j}_{i}": op for j, node in enumerate(NB201Genotype.from_arch_str(rows[r][1]).nodes, 1) for op, i in node}) for r in picks])
    metrics, cost = jax.jit(est.evaluate)(jnp.asarray(vecs), jax.random.key(0))
    for k, r in enumerate(picks):
        assert est.describe(vecs[k]) == rows[r][header.index("arch_str")]
        for col in ("cifar10_val_12ep", "cifar10_test_200ep", "lat_ms_pixel3"):
            assert float(metrics[col][k]) == pytest.approx(float(rows[r][header.index(col)]), rel=1e-6)
        assert float(cost[k]) == pytest.approx(float(rows[r][header.index("cifar10_valid_12ep_time_s")]), rel=1e-6)
    assert all(c in est.metrics for c in header if c.startswith("lat_ms_"))


def test_table_path_from_config_then_environment(monkeypatch, table):
    monkeypatch.delenv("DNAS_NB201_TABLE", raising=False)
    with pytest.raises(DnasError, match="set config.table .*DNAS_NB201_TABLE"):
        ESTIMATORS["nb201_table"](NB201Space(), table="")
    monkeypatch.setenv("DNAS_NB201_TABLE", table)
    assert "cifar10_val_12ep" in ESTIMATORS["nb201_table"](NB201Space(), table="").metrics


def test_malformed_tables_are_one_line_errors(tmp_path, table):
    path = table
    header, rows = _csv_rows(path)
    cases = {
        "lacks column 'cifar10_val_12ep'": lambda h, r: ([c if c != "cifar10_val_12ep" else "x" for c in h], r),
        "cannot parse arch_str": lambda h, r: (h, [[r[0][0], "|conv_9x9~0|+|"] + r[0][2:]] + r[1:]),
        "NaN or inf": lambda h, r: (h, [r[0][:2] + ["nan"] + r[0][3:]] + r[1:]),
        "covers 15624 of 15625": lambda h, r: (h, r[:-1]),
    }
    for i, (msg, edit) in enumerate(cases.items()):
        h, r = edit(header, rows)
        bad = tmp_path / f"bad{i}.csv"
        bad.write_text("\n".join(",".join(x) for x in [h] + r) + "\n")
        with pytest.raises(DnasError, match=msg) as e:
            load_table(str(bad))
        assert "\n" not in str(e.value)


def _brute(table, objective, kwargs):
    """Every cell of the table scored by the objective; returns the best cell's row."""
    names, values, _ = load_table(os.path.abspath(table), os.path.getmtime(table))
    fit = np.asarray(OBJECTIVES[objective](**kwargs)({n: jnp.asarray(values[:, j]) for j, n in enumerate(names)}))
    return names, values, fit


@pytest.mark.parametrize(
    "objective,kwargs",
    [
        ("hard", {"limits": {"lat_ms_pixel3": 12.0}}),
        ("mnasnet", {"latency": "lat_ms_pixel3", "target": 12.0, "alpha": -0.07, "beta": -0.07}),
        ("tunas", {"latency": "lat_ms_pixel3", "target": 12.0, "beta": -7.0}),
    ],
)
def test_constrained_search_finds_the_brute_force_best(tmp_path, objective, kwargs, table):
    """A grid search through the driver under each constraint returns the cell a numpy scan
    of all 15,625 rows picks; hard limits are also checked with plain numpy maths."""
    names, values, fit = _brute(table, objective, kwargs)
    acc, lat = values[:, names.index("cifar10_val_12ep")], values[:, names.index("lat_ms_pixel3")]
    expect = {
        "hard": np.where(lat <= 12.0, acc, -1.0),
        "mnasnet": acc * (lat / 12.0) ** -0.07,
        "tunas": acc - 7.0 * np.abs(lat / 12.0 - 1.0),
    }[objective]
    np.testing.assert_allclose(fit, expect, rtol=1e-5)
    c = _config(table, strategy="grid", strategy_kwargs={"batch": 125}, objective=objective, objective_kwargs=kwargs, runs=1, budget_s=1e9, max_evals=5**6, log_runs=0)
    s = run_multitrial(c, tmp_path / objective, log=lambda m: None)
    best = int(np.argmax(expect))
    _, rows = _csv_rows(table)
    assert s["most_chosen"] == rows[best][1]
    assert s["evals_mean"] == 5**6
    if objective == "hard":
        assert lat[best] <= 12.0 and acc[best] == acc[lat <= 12.0].max() and acc[best] < acc.max()


def test_rea_under_a_hard_limit_respects_it(tmp_path, table):
    """REA with a latency limit: every run's choice is feasible, and the best choice over
    runs is among the 5 best of the 9,364 feasible cells.

    Not "is the best feasible cell": with ~560 evaluations per run, the best of 8 runs ranked
    0 to 3 over 20 seeds (the old uniform-label mutation hit rank 0 for 1 seed in 6 too), so
    the exact optimum held only for seed 0's random stream, which changed when the mutation
    became the benchmark's.
    """
    names, values, fit = _brute(table, "hard", {"limits": {"lat_ms_pixel3": 12.0}})
    acc, lat = values[:, names.index("cifar10_val_12ep")], values[:, names.index("lat_ms_pixel3")]
    feasible = np.sort(acc[lat <= 12.0])[::-1]
    c = _config(table, objective="hard", objective_kwargs={"limits": {"lat_ms_pixel3": 12.0}}, runs=8, runs_per_chunk=8, budget_s=60000.0, log_runs=8)
    run_multitrial(c, tmp_path, log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    chosen = [max((l for l in lines if l["run"] == r), key=lambda l: l["fitness"]) for r in range(8)]
    assert all(l["lat_ms_pixel3"] <= 12.0 for l in chosen)
    assert feasible[0] == pytest.approx(fit.max(), rel=1e-6)  # the objective's best is the best feasible cell
    assert max(l["cifar10_val_12ep"] for l in chosen) >= feasible[4] - 1e-4


def test_driver_end_to_end_and_bit_identical_resume(tmp_path, table):
    c = _config(table)
    logs = []
    s = run_multitrial(c, tmp_path / "a", log=logs.append)
    for k in ("runs", "test_acc_mean", "test_acc_std", "valid_acc_mean", "wall_s"):
        assert k in s
    assert s["runs"] == 5 and 80 < s["test_acc_mean"] < 95 and len([m for m in logs if m.startswith("runs ")]) == 3
    assert logs[0].startswith("compiling the rea search") and logs[1].startswith("compiled in")  # said before the wait
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["test_acc_mean"] == s["test_acc_mean"]
    lines = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {l["run"] for l in lines} == {0, 1}
    run0 = [l for l in lines if l["run"] == 0]
    assert [l["eval"] for l in run0] == list(range(len(run0)))
    assert run0[-1]["cum_cost_s"] <= 2000.0 and run0[-1]["cum_cost_s"] == pytest.approx(sum(l["cost_s"] for l in run0), rel=1e-5)
    assert all(l["cost_s"] == l["cifar10_valid_12ep_time_s"] and l["fitness"] == l["cifar10_val_12ep"] for l in run0)
    assert run0[0]["arch_str"].startswith("|") and len(run0[0]["arch"]) == 6
    # "Kill" after the first chunk (later chunks never written, a torn temp file left), resume.
    b = tmp_path / "b"
    run_multitrial(c, b, log=lambda m: None)
    for p in sorted((b / "chunks").iterdir())[1:]:
        p.unlink()
    (b / "chunks" / "runs_00002.npz.tmp").write_bytes(b"torn")
    (b / "summary.json").unlink()
    s2 = run_multitrial(c, b, log=lambda m: None)
    for p in sorted((tmp_path / "a" / "chunks").iterdir()):
        with np.load(p) as want, np.load(b / "chunks" / p.name) as got:
            for k in ("archs", "fitness", "cost", "count"):  # bit-identical (not "seconds", a timing)
                assert want[k].tobytes() == got[k].tobytes(), (p.name, k)
    assert (b / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()
    assert {k: v for k, v in s2.items() if not k.endswith("_s")} == {k: v for k, v in s.items() if not k.endswith("_s")}
    c.runs = 6
    with pytest.raises(DnasError, match="different config"):
        run_multitrial(c, b, log=lambda m: None)


def test_nsga2_writes_a_pareto_front(tmp_path, table):
    c = _config(
        table,
        strategy="nsga2",
        strategy_kwargs={"population": 10, "batch": 10},
        objective="multi",
        objective_kwargs={"metrics": ["cifar10_val_12ep", "-lat_ms_pixel3"]},
        runs=2,
        budget_s=6000.0,
    )
    s = run_multitrial(c, tmp_path, log=lambda m: None)
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert s["pareto_size"] == len(front) >= 2
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = np.array([[l["cifar10_val_12ep"], -l["lat_ms_pixel3"]] for l in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if l["run"] == 0])
    for p in front:  # nothing evaluated dominates a front point
        o = np.array([p["cifar10_val_12ep"], -p["lat_ms_pixel3"]])
        assert not ((evaluated >= o).all(1) & (evaluated > o).any(1)).any()
    assert pareto_mask(np.array([[1.0, 1.0], [0.0, 2.0], [0.5, 0.5]])).tolist() == [True, True, False]


def test_config_errors_are_one_line(require_shared):
    c = multitrial_defaults()
    c.budget_s = 0.0
    with pytest.raises(DnasError, match="budget_s must be positive"):
        check_multitrial(c)
    c = multitrial_defaults()
    with c.unlocked():
        c.budjet_s = 1.0
    with pytest.raises(DnasError, match="did you mean 'budget_s'"):
        check_multitrial(c)
    c = multitrial_defaults()
    c.strategy = "evolution"
    with pytest.raises(DnasError, match="unknown strategy 'evolution'"):
        check_multitrial(c)
    c = _config(require_shared("nb201", "nb201_table.csv", why=WHY), strategy_kwargs={"populaton": 10})
    with pytest.raises(DnasError, match="strategy 'rea' takes no argument 'populaton'.*accepts: population, sample_size"):
        run_multitrial(c, "/nonexistent/never-created", log=lambda m: None)
    with pytest.raises(DnasError, match="mnasnet needs alpha, beta <= 0"):
        OBJECTIVES["mnasnet"](alpha=0.07)
    with pytest.raises(DnasError, match="tunas needs beta <= 0"):
        OBJECTIVES["tunas"](beta=0.07)


def test_smoke_configs_run(tmp_path, table):
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb201_mt", os.path.join(os.path.dirname(__file__), "..", "experiments", "nb201_multitrial", "config.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for variant in ("smoke",):
        c = mod.get_config(variant)
        c.table = table
        s = run_multitrial(c, tmp_path / variant, log=lambda m: None)
        assert s["runs"] == c.runs
    for variant in ("rs", "rea", "reinforce", "predictor", "nsga2", "mnasnet", "hard"):
        check_multitrial(mod.get_config(variant))


def test_host_loop_reproduces_the_vmapped_program(tmp_path, table):
    """The step-by-step host loop (for estimators that train) takes the same steps, keys and
    budget rule as the vmapped program: over the table it gives the same history, also
    when it dies midway and resumes from its per-step checkpoint."""
    from dnas.search.multitrial import build
    from dnas.run.multitrial import run_host

    c = _config(table, runs=2, runs_per_chunk=2)
    run_multitrial(c, tmp_path / "pure", log=lambda m: None)
    with np.load(tmp_path / "pure" / "chunks" / "runs_00000.npz") as z:
        want_archs, want_fit, want_count = z["archs"][1], z["fitness"][1], int(z["count"][1])
    b = build(c)
    lookup, calls = jax.jit(b.estimator.evaluate), []

    def crashing(archs, key):  # dies at its 6th query, as a killed process would
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return lookup(archs, key)

    (tmp_path / "host" / "chunks").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_host(b._replace(estimator=b.estimator._replace(pure=False, evaluate=crashing)), c, tmp_path / "host", 1, log=lambda m: None)
    logs = []
    h, m = run_host(b._replace(estimator=b.estimator._replace(pure=False, evaluate=lookup)), c, tmp_path / "host", 1, log=logs.append)
    assert logs[0] == "run 1: resuming at step 5"
    assert int(h.count[0]) == want_count
    np.testing.assert_array_equal(h.archs[0, :want_count], want_archs[:want_count])
    np.testing.assert_array_equal(h.fitness[0, :want_count], want_fit[:want_count])
    np.testing.assert_array_equal(m["cifar10_val_12ep"][0, :want_count], want_fit[:want_count])


def test_train_from_scratch_estimator_on_digits(tmp_path):
    """Real training as the estimator: 2 NB201 cells on 8x8 digits (tiny proxies), through
    the driver; results are cached per architecture, so a rerun reads them back. The search
    reads the held-out validation split; the test split is only reported."""
    c = multitrial_defaults()
    c.strategy, c.strategy_kwargs = "random", {}
    c.estimator = "train"
    c.estimator_kwargs = {"epochs": 1, "max_train_examples": 128, "max_test_examples": 64, "valid_examples": 32, "init_channels": 4,
                          "layers": 1, "batch_size": 32}
    c.objective_kwargs = {"metric": "val_acc"}
    c.report_metric, c.valid_metric = "test_acc", "val_acc"
    c.runs, c.max_evals, c.budget_s = 1, 2, 1e6
    s = run_multitrial(c, tmp_path / "run", log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and s["evals_mean"] == 2
    assert all(0.0 <= l["test_acc"] <= 100.0 and 0.0 <= l["val_acc"] <= 100.0 and l["params"] > 0 and l["cost_s"] == l["train_s"] > 0 for l in lines)
    assert [l["fitness"] for l in lines] == [l["val_acc"] for l in lines]  # the signal is validation accuracy
    chosen = max(lines, key=lambda l: l["val_acc"])
    assert s["test_acc_mean"] == chosen["test_acc"] and s["valid_acc_mean"] == chosen["val_acc"]
    assert len(list((tmp_path / "run" / "trained").iterdir())) == len({l["arch_str"] for l in lines})
    (tmp_path / "run" / "chunks" / "runs_00000.npz").unlink()  # "killed" before the run was saved
    again = run_multitrial(c, tmp_path / "run", log=lambda m: None)
    assert again["test_acc_mean"] == s["test_acc_mean"]
    assert [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == lines


def test_a_search_over_another_estimator_reports_the_chosen_cells_from_the_table(tmp_path, table, monkeypatch):
    """The report metric of a search whose estimator is not the table (here parameter
    counts) is read from the table for each run's chosen cell alone; without a table the
    config is refused in one line that names config.table."""
    from dnas.estimate.nb201_table import table_values

    kw = dict(estimator="hardware", estimator_kwargs={"resolution": 32, "counts_kwargs": {"C": 4, "num_classes": 10}},
              objective_kwargs={"metric": "params_m"}, valid_metric="params_m", runs=3, runs_per_chunk=3, budget_s=20.0, log_runs=3)
    summary = run_multitrial(_config(table, **kw), tmp_path / "run", log=lambda m: None)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "cifar10_test_200ep" not in lines[0]  # the strategy's evaluations never carry it
    chosen = [max((l for l in lines if l["run"] == r), key=lambda l: l["fitness"])["arch"] for r in range(3)]
    truth = table_values(table, np.array(chosen), "cifar10_test_200ep")
    assert summary["test_from_table"] and summary["test_acc_mean"] == pytest.approx(truth.mean(), rel=1e-6)
    monkeypatch.delenv("DNAS_NB201_TABLE", raising=False)
    with pytest.raises(DnasError, match="config.table"):
        run_multitrial(_config("", **kw), tmp_path / "bad", log=lambda m: None)
    assert not (tmp_path / "bad").exists()
