"""matplotlib plots of a run: valid PNG/SVG files, a data-driven α scale, readable legends,
one-epoch runs, Pareto fronts, and no change to the user's matplotlib state."""

import json
import math
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from dnas.core.stats import pareto_front, pareto_mask

from dnas.core.errors import DnasError
from dnas.report.plots import (alpha_figures, data_ylim, metrics_figure, plot_alpha, plot_metrics,
                        plot_pareto, plot_run, read_jsonl)

OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _alpha_records(epochs, lo=0.12, hi=0.13, labels=("normal/edge_2_0", "normal/edge_2_1", "reduce/edge_2_0")):
    rng = np.random.default_rng(0)
    return [{"step": 10 * e, "epoch": e, "softmax": {l: rng.uniform(lo, hi, len(OPS)).tolist() for l in labels}}
            for e in range(1, epochs + 1)]


def _metrics_records(steps=8, per_epoch=4):
    recs = []
    for s in range(1, steps + 1):
        recs.append({"step": s, "epoch": (s - 1) // per_epoch + 1, "train_loss": 2.3 - 0.1 * s, "val_loss": 2.2 - 0.1 * s,
                     "train_acc": 0.1 + 0.05 * s, "val_acc": 0.1 + 0.04 * s, "alpha_entropy": 1.386 - 0.001 * s})
        if s % per_epoch == 0:
            recs.append({"step": s, "event": "epoch", "epoch": s // per_epoch, "genotype": "G",
                         "epoch_val_acc": 0.2 + 0.1 * s / per_epoch, "epoch_val_loss": 2.0 - 0.2 * s / per_epoch})
    return recs


def _svg_texts(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return {"".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("text")}


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def test_plot_alpha_writes_valid_png_and_svg_per_prefix(tmp_path):
    paths = plot_alpha(_alpha_records(3), tmp_path, OPS)
    assert sorted(p.name for p in paths) == ["alpha_normal.png", "alpha_normal.svg", "alpha_reduce.png", "alpha_reduce.svg"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
        if p.suffix == ".png":
            _png_size(p)
    texts = _svg_texts(tmp_path / "alpha_normal.svg")
    assert set(OPS) <= texts  # legend labels are real text, not cut or drawn as paths
    assert {"edge_2_0", "edge_2_1", "epoch"} <= texts


def test_alpha_y_scale_follows_the_data():
    fig = alpha_figures(_alpha_records(5), OPS)["normal"]
    for ax in fig.axes[:2]:
        lo, hi = ax.get_ylim()
        assert hi - lo < 0.05  # 0.12-0.13 fills the panel instead of a thin band on 0..1
        assert lo <= 0.12 and hi >= 0.13
        assert all(float(t).is_integer() for t in ax.get_xticks())  # epochs are whole numbers


def test_alpha_y_scale_noise_is_not_magnified():
    # softmax(α) at 1/4 ± 1e-7 (α unmoved): the panel must not turn float noise into a decision.
    recs = _alpha_records(3, 0.25 - 1e-7, 0.25 + 1e-7)
    lo, hi = alpha_figures(recs, OPS)["normal"].axes[0].get_ylim()
    assert hi - lo >= 0.01


def test_data_ylim_stays_in_bounds():
    assert data_ylim([0.995, 1.0], 0.01, 0.0, 1.0)[1] == 1.0
    lo, hi = data_ylim([0.0, 0.001], 0.01, 0.0, 1.0)
    assert lo == 0.0 and hi >= 0.01
    assert data_ylim([], 0.01, 0.0, 1.0) == (0.0, 1.0)
    assert data_ylim([math.nan, 0.5], 0.1) == pytest.approx((0.442, 0.558))


def test_alpha_legend_is_outside_the_axes_and_kept_in_the_file(tmp_path):
    fig = alpha_figures(_alpha_records(2), OPS)["reduce"]
    fig.canvas.draw()
    (legend,) = fig.legends
    assert legend.get_window_extent().x0 >= max(ax.get_window_extent().x1 for ax in fig.axes)
    (png,) = [p for p in plot_alpha(_alpha_records(2), tmp_path, OPS) if p.name == "alpha_reduce.png"]
    width, _ = _png_size(png)
    # The legend sits beyond the figure's right edge; only a tight bbox keeps it.
    assert width > fig.get_figwidth() * fig.dpi


def test_one_epoch_run(tmp_path):
    paths = plot_alpha(_alpha_records(1), tmp_path, OPS)
    assert len(paths) == 4
    ax = alpha_figures(_alpha_records(1), OPS)["normal"].axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi and hi - lo >= 1
    one = [{"step": 4, "epoch": 1, "train_loss": 2.0, "val_acc": 0.5}, {"step": 4, "event": "epoch", "epoch": 1}]
    assert [p.name for p in plot_metrics(one, tmp_path)] == ["metrics.png", "metrics.svg"]


def test_alpha_without_op_names_or_with_a_mismatch(tmp_path):
    recs = _alpha_records(2, labels=("cell/edge_1_0", "cell/edge_2_0"))
    assert "op 0" in _svg_texts(plot_alpha(recs, tmp_path)[1])
    assert "op 3" in _svg_texts(plot_alpha(recs, tmp_path, ["a", "b"])[1])
    assert plot_alpha([], tmp_path) == [] and plot_alpha([{"epoch": 1}], tmp_path) == []


def test_plot_metrics(tmp_path):
    paths = plot_metrics(_metrics_records(), tmp_path)
    assert [p.name for p in paths] == ["metrics.png", "metrics.svg"]
    _png_size(paths[0])
    texts = _svg_texts(paths[1])
    assert {"loss", "accuracy", "train (batch)", "val (full split, per epoch)", "step"} <= texts
    fig = metrics_figure(_metrics_records())
    assert len(fig.axes) == 3  # loss, accuracy, α entropy
    lo, hi = fig.axes[1].get_ylim()
    assert 0.0 <= lo and hi <= 1.0


def test_plot_metrics_is_robust(tmp_path):
    assert plot_metrics([], tmp_path) == []
    assert plot_metrics([{"step": 1}, {"event": "epoch"}, {"loss": 1}], tmp_path) == []
    # A retrain log: train only, NaN loss, a test line; no α entropy, no epoch lines.
    recs = [{"step": 1, "train_loss": 2.0, "train_acc": 0.1}, {"step": 2, "train_loss": math.nan, "train_acc": 0.2},
            {"step": 3, "train_loss": 1.0, "train_acc": 0.4}, {"step": 3, "event": "test", "test_acc": 0.5, "test_loss": 1.2}]
    fig = metrics_figure(recs)
    assert len(fig.axes) == 2
    assert "test" in _svg_texts(plot_metrics(recs, tmp_path)[1])


def test_pareto_mask():
    pts = [(1.0, 0.5), (2.0, 0.7), (2.5, 0.6), (3.0, 0.9), (1.0, 0.4), (3.0, 0.9)]
    assert pareto_mask(pts, maximize=(False, True)).tolist() == [True, True, False, True, False, True]
    assert pareto_mask(pts, maximize=(True, True)).tolist() == [False, False, False, True, False, True]


def test_plot_pareto(tmp_path):
    pts = np.array([(1.0, 0.5), (2.0, 0.7), (2.5, 0.6), (3.0, 0.9)])
    paths = plot_pareto(pts, pareto_mask(pts, maximize=(False, True)), tmp_path / "front.png", "latency (ms)", "accuracy",
                        labels=["a", "b", "c", "d"])
    assert [p.name for p in paths] == ["front.png", "front.svg"]
    _png_size(paths[0])
    texts = _svg_texts(paths[1])
    assert {"latency (ms)", "accuracy", "Pareto front", "candidates", "a", "d"} <= texts and "c" not in texts
    with pytest.raises(DnasError, match="one flag per point"):
        plot_pareto(pts, [True], tmp_path / "x", "x", "y")
    assert len(plot_pareto([], [], tmp_path / "empty", "x", "y")) == 2


def test_read_jsonl_and_plot_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"ops": OPS}))
    lines = [json.dumps(r) for r in _metrics_records()]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9, "train_lo')  # killed mid-write
    (tmp_path / "alpha.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _alpha_records(2)))
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == len(lines)
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    names = sorted(p.name for p in plot_run(tmp_path, tmp_path / "plots"))
    assert names == ["alpha_normal.png", "alpha_normal.svg", "alpha_reduce.png", "alpha_reduce.svg",
                     "metrics.png", "metrics.svg"]
    assert "sep_conv_3x3" in _svg_texts(tmp_path / "plots" / "alpha_normal.svg")
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(DnasError, match="line 2"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_plotting_leaves_pyplot_and_the_backend_alone(tmp_path):
    code = ("import sys, matplotlib; matplotlib.use('pdf'); from dnas.report.plots import plot_pareto; "
            f"plot_pareto([(1, 0.5)], [True], {str(tmp_path / 'p')!r}, 'x', 'y'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# --- accuracy vs latency (issue 19 item 7) ---------------------------------------------


def test_pareto_front_by_hand():
    #          0    1    2    3    4    5    6    7       8       9
    acc = [0.5, 0.7, 0.6, 0.9, 0.4, 0.9, 0.7, math.nan, 0.95, 0.9]
    lat = [1.0, 2.0, 2.5, 3.0, 1.0, 3.0, 2.0, 0.5, math.inf, 4.0]
    # 4: same latency as 0, less accurate; 2: slower and worse than 1; 6 and 5 duplicate 1
    # and 3 (the first of equal points only); 9: as accurate as 3 but slower; 7, 8: not finite.
    front = pareto_front(np.array(acc), np.array(lat))
    assert front.tolist() == [0, 1, 3] and front.dtype == np.int64
    # Sorted by latency whatever the input order.
    assert pareto_front(np.array([0.9, 0.5, 0.7]), np.array([3.0, 1.0, 2.0])).tolist() == [1, 2, 0]
    # A tie in latency: only the more accurate; all points equal: just the first.
    assert pareto_front(np.array([0.3, 0.8, 0.8]), np.array([5.0, 5.0, 5.0])).tolist() == [1]
    assert pareto_front(np.array([0.8, 0.8]), np.array([5.0, 5.0])).tolist() == [0]
    assert pareto_front(np.array([]), np.array([])).tolist() == []
    with pytest.raises(DnasError, match="one of each per point"):
        pareto_front(np.array([1.0]), np.array([1.0, 2.0]))


def test_pareto_front_matches_the_definition_on_a_grid_with_many_ties():
    rng = np.random.default_rng(0)
    acc, lat = rng.integers(0, 6, 200).astype(float), rng.integers(0, 6, 200).astype(float)
    dominated = [((lat <= lat[i]) & (acc >= acc[i]) & ((lat < lat[i]) | (acc > acc[i]))).any() for i in range(200)]
    firsts = {}
    for i in range(200):
        if not dominated[i]:
            firsts.setdefault((lat[i], acc[i]), i)
    assert pareto_front(acc, lat).tolist() == sorted(firsts.values(), key=lambda i: lat[i])


def _multitrial_dir(path, chunks, config_kw=None, log_runs=1):
    """A multi-trial run directory as dnas.run.multitrial writes it: config.json, chunk files
    (through its own writer) and metrics.jsonl lines of the first ``log_runs`` runs.

    ``chunks``: one (archs [R, E, n], count [R], metrics {name: [R, E]} or None) per file.
    """
    from dnas.search.multitrial import History
    from dnas.run.multitrial import _save_chunk, multitrial_defaults

    c = multitrial_defaults()
    c.runs, c.runs_per_chunk, c.log_runs = sum(len(cnt) for _, cnt, _ in chunks), len(chunks[0][1]), log_runs
    for k, v in (config_kw or {}).items():
        c[k] = v
    (path / "chunks").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(c.to_dict(), indent=1, sort_keys=True) + "\n")
    start, lines = 0, []
    for archs, count, metrics in chunks:
        R, E, _ = archs.shape
        h = History(archs.astype(np.int32), np.zeros((R, E), np.float32), np.full((R, E), 10.0, np.float32), np.asarray(count, np.int32))
        _save_chunk(path / "chunks" / f"runs_{start:05d}.npz", h, 0.5, metrics)
        for r in range(R):
            if start + r >= log_runs or metrics is None:
                continue
            for e in range(count[r]):
                rec = {"run": start + r, "eval": e, "arch": archs[r, e].tolist(), "arch_str": f"cell{archs[r, e].tolist()}"}
                rec.update({k: float(v[r, e]) for k, v in metrics.items()})
                rec.update(fitness=0.0, cost_s=10.0, cum_cost_s=10.0 * (e + 1))
                lines.append(json.dumps(rec))
        start += R
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n" if lines else "")
    return c


def _host_chunks():
    """Two chunks of a host-side (trained) search, 2 runs x 3 evaluations each; the third
    evaluation of run 1 is past the budget (count 2) and must not be drawn."""
    archs = np.arange(2 * 2 * 3 * 4).reshape(2, 2, 3, 4) % 5
    acc = np.array([[[0.60, 0.70, 0.65], [0.80, 0.75, 0.99]], [[0.72, 0.50, 0.81], [0.55, 0.62, 0.64]]], np.float32)
    lat = np.array([[[1.0, 2.0, 2.5], [4.0, 3.0, 0.1]], [[2.0, 1.5, 5.0], [0.9, 1.2, 1.1]]], np.float32)
    return [(archs[i], [3, 2], {"cifar10_test_200ep": acc[i], "cifar10_val_12ep": acc[i] - 0.05, "lat_ms_pixel3": lat[i],
                                 "macs_m": lat[i] * 10}) for i in range(2)]


def test_multitrial_pareto_plot_from_every_run(tmp_path):
    from dnas.report.plots import multitrial_pareto_data, plot_run_pareto

    c = _multitrial_dir(tmp_path, _host_chunks(), {"estimator": "train"})
    data = multitrial_pareto_data(tmp_path, json.loads((tmp_path / "config.json").read_text()))
    assert data.lat.size == 10  # 4 runs x 3 evaluations, less the two unpaid ones
    assert not np.isclose(data.lat, 0.1).any() and not np.isclose(data.lat, 1.1).any()  # the unpaid ones
    assert "lat_ms_pixel3" in data.xlabel and c.report_metric in data.ylabel and "4 runs" in data.title
    front = pareto_front(data.acc, data.lat)
    # By hand: 1.5 ms (0.50) loses to 1.0 (0.60); at 2.0 ms 0.72 beats 0.70; 2.5 (0.65) loses to 2.0.
    assert [(round(float(data.lat[i]), 2), round(float(data.acc[i]), 2)) for i in front] == [
        (0.9, 0.55), (1.0, 0.6), (1.2, 0.62), (2.0, 0.72), (3.0, 0.75), (4.0, 0.8), (5.0, 0.81)]
    paths = plot_run_pareto(tmp_path)
    assert [p.name for p in paths] == ["pareto.png", "pareto.svg"]
    _png_size(paths[0])
    assert {"latency (ms): lat_ms_pixel3", "accuracy: cifar10_test_200ep", "Pareto front (7)"} <= _svg_texts(paths[1])


def test_multitrial_latency_metric_choice_and_nsga2_plot_kept(tmp_path):
    from dnas.report.plots import multitrial_pareto_data, plot_run_pareto

    chunks = _host_chunks()
    for _, _, m in chunks:
        m["latency_ms"] = m["lat_ms_pixel3"] * 2
    # The objective's latency wins over latency_ms; without one named, latency_ms.
    cfg = json.loads(json.dumps(_multitrial_dir(tmp_path, chunks).to_dict()))
    cfg["objective_kwargs"] = {"metrics": ["cifar10_val_12ep", "-lat_ms_pixel3"]}
    assert "lat_ms_pixel3" in multitrial_pareto_data(tmp_path, cfg).xlabel
    cfg["objective_kwargs"] = {"metric": "cifar10_val_12ep"}
    cfg["report_metric"] = "not_recorded"  # falls back to the valid metric
    data = multitrial_pareto_data(tmp_path, cfg)
    assert "latency_ms" in data.xlabel and "cifar10_val_12ep" in data.ylabel
    # An NSGA-II run's own pareto.png (with its pareto.json) is not overwritten.
    (tmp_path / "pareto.json").write_text('{"front": []}\n')
    (tmp_path / "pareto.png").write_bytes(b"the run's own")
    assert [p.name for p in plot_run_pareto(tmp_path)] == ["pareto_latency.png", "pareto_latency.svg"]
    assert (tmp_path / "pareto.png").read_bytes() == b"the run's own"


def test_multitrial_table_run_uses_metrics_jsonl_without_the_table(tmp_path):
    # A pure (table) estimator's chunks hold architectures only; with the table gone the
    # logged runs' lines are what is left.
    from dnas.report.plots import plot_run_pareto, run_pareto_data

    (archs, count, metrics), _ = _host_chunks()
    _multitrial_dir(tmp_path, [(archs, count, None)], {"table": str(tmp_path / "moved.csv")})
    lines = [json.dumps({"run": 0, "eval": e, "arch": archs[0, e].tolist(), "arch_str": "x",
                         **{k: float(v[0, e]) for k, v in metrics.items()}, "fitness": 0.0, "cost_s": 1.0, "cum_cost_s": 1.0})
             for e in range(3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    data = run_pareto_data(tmp_path)
    assert data.lat.tolist() == [1.0, 2.0, 2.5] and "in 1 logged run of 2" in data.title  # not "in 1 run": the run had 2
    assert len(plot_run_pareto(tmp_path, tmp_path / "out")) == 2


def test_multitrial_table_run_looks_its_chunks_up_in_the_table(tmp_path, require_shared):
    from dnas.report.plots import run_pareto_data

    table = require_shared("nb201", "nb201_table.csv", why="the plot reads a table run's accuracies back from the benchmark table")
    import jax

    from dnas.estimate import ESTIMATORS
    from dnas.space.spaces import NB201Space

    archs = np.array([[[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1], [3, 3, 3, 3, 3, 3]],
                      [[2, 2, 2, 2, 2, 2], [4, 3, 2, 1, 0, 4], [0, 0, 0, 0, 0, 0]]])
    _multitrial_dir(tmp_path, [(archs, [3, 1], None)], {"table": table, "runs": 2})
    data = run_pareto_data(tmp_path)
    est = ESTIMATORS["nb201_table"](NB201Space(), table=table)
    want, _ = est.evaluate(np.concatenate([archs[0], archs[1, :1]]), jax.random.key(0))
    np.testing.assert_allclose(data.acc, np.asarray(want["cifar10_test_200ep"]))
    # The default objective names no latency and the table has no latency_ms: the first lat_ms_*.
    lat_name = sorted(k for k in want if k.startswith("lat_ms_"))[0]
    assert data.xlabel == f"latency (ms): {lat_name}"
    np.testing.assert_allclose(data.lat, np.asarray(want[lat_name]))


def test_multitrial_without_latency_no_plot_and_one_line_in_show(tmp_path):
    from dnas.report.plots import plot_run_pareto
    from dnas.report.show import show

    chunks = [(a, c, {k: v for k, v in m.items() if "lat" not in k}) for a, c, m in _host_chunks()]
    _multitrial_dir(tmp_path, chunks, {"estimator": "train"})
    assert plot_run_pareto(tmp_path) == []
    lines = show(str(tmp_path))
    assert len(lines) == 2 and "no accuracy-vs-latency plot" in lines[1]
    assert not list(tmp_path.glob("pareto*"))


def test_show_multitrial_writes_and_prints_the_pareto_plot(tmp_path):
    from dnas.report.show import show

    _multitrial_dir(tmp_path, _host_chunks(), {"estimator": "train"})
    (tmp_path / "summary.json").write_text(json.dumps({"runs": 4, "strategy": "rea", "test_metric": "cifar10_test_200ep",
                                                       "test_acc_mean": 0.7, "test_acc_std": 0.1, "most_chosen": "x", "most_chosen_runs": 2}))
    lines = show(str(tmp_path))
    assert lines[0].startswith("multi-trial run (rea, 4 runs)")
    assert lines[-1] == f"wrote: {tmp_path / 'pareto.png'}, {tmp_path / 'pareto.svg'}"


def _search_dir(path, latency=True, epochs=4, steps_per_epoch=2):
    """A search run directory as dnas.run.search.run_search writes it: per-step lines, one
    ``"event": "epoch"`` line per epoch (with the latency term's two numbers when it is on),
    alpha.jsonl, genotype.json and config.json (its ``latency`` section)."""
    from dnas.space import genotype as G
    from dnas.run.metrics import MetricWriter

    cfg = {"kind": "search", "ops": OPS, "latency": {"table": "lut.json" if latency else "", "device": "", "resolution": 224,
                                                   "penalty": "target" if latency else "", "penalty_kwargs": {},
                                                   "target_ms": 2.0 if latency else 0.0, "estimate": "auto", "derive_tolerance": 0.05}}
    (path / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    w = MetricWriter(path / "metrics.jsonl")
    derived = [3.0, 2.5, 2.2, 1.9, 2.1, 2.05][:epochs]
    acc = [0.40, 0.55, 0.50, 0.62, 0.70, 0.60][:epochs]
    for s in range(1, epochs * steps_per_epoch + 1):
        w.write({"step": s, "epoch": (s - 1) // steps_per_epoch + 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1,
                 "val_acc": 0.45, "alpha_entropy": 1.3, "step_time_s": 0.1, "images_per_s": 640.0})
        if s % steps_per_epoch == 0:
            e = s // steps_per_epoch
            extra = {"expected_latency_ms": derived[e - 1] + 0.3, "derived_latency_ms": derived[e - 1]} if latency else {}
            w.write({"step": s, "event": "epoch", "epoch": e, "epoch_val_acc": acc[e - 1], "epoch_val_loss": 1.0,
                     "genotype": "G", "param_free_ops": {"cell": 1}, "epoch_alpha_entropy": 1.2, **extra})
    (path / "alpha.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _alpha_records(epochs, labels=("cell/edge_1_0",))))
    G.save(G.get("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"),
           path / "genotype.json")


def test_search_pareto_plot_per_epoch(tmp_path):
    from dnas.report.plots import pareto_run_figure, plot_run_pareto, run_pareto_data

    _search_dir(tmp_path, epochs=6)
    data = run_pareto_data(tmp_path)
    assert data.epoch.tolist() == [1, 2, 3, 4, 5, 6] and data.target_ms == 2.0
    # epoch 1 (3.0 ms, 0.40) < epoch 2 (2.5, 0.55); epoch 3 (2.2, 0.50) is not beaten by a
    # faster one; 4 (1.9, 0.62) dominates 2, 3 and 1; 5 (2.1, 0.70); 6 (2.05, 0.60) loses to 4.
    assert data.epoch[pareto_front(data.acc, data.lat)].tolist() == [4, 5]
    fig = pareto_run_figure(data)
    assert any(ax.get_ylabel() == "epoch" for ax in fig.axes)  # the colorbar
    paths = plot_run_pareto(tmp_path, tmp_path / "out")
    assert [p.name for p in paths] == ["pareto.png", "pareto.svg"]
    _png_size(paths[0])
    assert {"1", "6", "epoch", "Pareto front (2)", "target 2 ms"} <= _svg_texts(paths[1])


def test_search_pareto_in_show_and_absent_without_latency(tmp_path):
    from dnas.report.plots import plot_run, plot_run_pareto
    from dnas.report.show import show

    run = tmp_path / "lat"
    run.mkdir()
    _search_dir(run, epochs=1)  # a single epoch is still one point
    wrote = show(str(run))[-1]
    assert f"{run / 'pareto.png'}, {run / 'pareto.svg'}" in wrote
    plain = tmp_path / "plain"
    plain.mkdir()
    _search_dir(plain, latency=False)
    assert plot_run_pareto(plain) == []
    lines = show(str(plain))
    assert not any("pareto.png" in l or "accuracy-vs-latency" in l for l in lines)  # not a word about it
    assert not list(plain.glob("pareto*"))
    assert not [p for p in plot_run(plain, tmp_path / "plots") if "pareto" in p.name]
