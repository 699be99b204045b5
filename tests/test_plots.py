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

from dnas.errors import DnasError
from dnas.plots import (alpha_figures, data_ylim, metrics_figure, pareto_mask, plot_alpha, plot_metrics, plot_pareto,
                        plot_run, read_jsonl)

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
    assert pareto_mask(pts).tolist() == [True, True, False, True, False, True]
    assert pareto_mask(pts, minimize_x=False).tolist() == [False, False, False, True, False, True]


def test_plot_pareto(tmp_path):
    pts = np.array([(1.0, 0.5), (2.0, 0.7), (2.5, 0.6), (3.0, 0.9)])
    paths = plot_pareto(pts, pareto_mask(pts), tmp_path / "front.png", "latency (ms)", "accuracy",
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
    code = ("import sys, matplotlib; matplotlib.use('pdf'); from dnas.plots import plot_pareto; "
            f"plot_pareto([(1, 0.5)], [True], {str(tmp_path / 'p')!r}, 'x', 'y'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
