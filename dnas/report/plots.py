"""Plots of a run directory with matplotlib: softmax(α) over epochs, loss/accuracy curves,
and accuracy-vs-cost Pareto fronts. Every plot is written as PNG and SVG.

:func:`plot_run_pareto` draws accuracy against latency for any run that records both: a
multi-trial run (every evaluated architecture of every run) or a search with a latency
term (the derived architecture of each epoch).

Only :class:`matplotlib.figure.Figure` with an Agg canvas is used, never ``pyplot``, so
importing or calling this module leaves the user's matplotlib backend and open figures
alone (and works headless, in threads and in CI).

Inputs are the parsed JSONL records a run writes (``metrics.jsonl``, ``alpha.jsonl``, see
:mod:`dnas.run.search`); missing keys, a single epoch, NaNs and a truncated last line are handled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from dnas.core.errors import DnasError
from dnas.core.io import read_text
from dnas.core.stats import pareto_front
from dnas.run.config import from_json
from dnas.search.multitrial import build, metrics_of

FORMATS: tuple[str, ...] = ("png", "svg")
# The smallest y-range an α panel shows: narrower bands are float noise around 1/k and
# would otherwise be blown up to look like a decision.
ALPHA_MIN_SPAN = 0.01
_COLS = 4  # α panels per row; 14 DARTS edges make a 4x4 grid that still fits a screen
_SAVE_RC = {
    "svg.fonttype": "none",  # keep text as <text> so labels are searchable and crisp
    "svg.hashsalt": "dnas",  # deterministic ids: re-plotting an unchanged run gives the same file
}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; ``[]`` when it is missing.

    A last line cut short (the run was killed mid-write) is skipped rather than failing the
    whole plot; a malformed line elsewhere is a real error and raises :class:`DnasError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [l for l in read_text(path, "run file").splitlines() if l.strip()]
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise DnasError(f"{str(path)!r} line {i + 1} is not JSON ({e.msg}); is it a dnas metrics file?") from None
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # attaches itself; savefig then renders with Agg, not pyplot's backend
    return fig


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``fig`` to ``stem.<fmt>`` for each format; returns the paths.

    ``bbox_inches="tight"`` grows the canvas to include legends placed outside the axes,
    so no label is cut off.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(_SAVE_RC):
        for fmt in formats:
            p = stem.with_name(stem.name + "." + fmt)
            # No dates/versions in the files: identical runs give identical plots.
            meta = {"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else None
            fig.savefig(p, format=fmt, bbox_inches="tight", metadata=meta)
            paths.append(p)
    return paths


def _finite(values: Iterable[Any]) -> np.ndarray:
    a = np.asarray([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)], float)
    return a[np.isfinite(a)]


def _num(v: Any) -> float:
    """A JSON value as a float for plotting; anything else becomes NaN (a gap in the line)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan


def data_ylim(values: Iterable[Any], min_span: float = 0.0, lo: float | None = None, hi: float | None = None,
              pad: float = 0.08) -> tuple[float, float]:
    """y-limits that fit ``values`` with ``pad`` of the span on each side.

    The span is at least ``min_span`` (centered on the data); limits are shifted, not
    clipped, to stay inside ``[lo, hi]`` so the data keeps its full height.
    """
    v = _finite(values)
    if v.size == 0:
        return (lo if lo is not None else 0.0, hi if hi is not None else 1.0)
    vmin, vmax = float(v.min()), float(v.max())
    span = max(vmax - vmin, min_span, 1e-12)
    mid = (vmin + vmax) / 2
    a, b = mid - span / 2 - pad * span, mid + span / 2 + pad * span
    if lo is not None and a < lo:
        a, b = lo, min(b + (lo - a), hi if hi is not None else math.inf)
    if hi is not None and b > hi:
        a, b = max(a - (b - hi), lo if lo is not None else -math.inf), hi
    return a, b


def _style_axes(ax: Any, integer_x: bool) -> None:
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fmt = ScalarFormatter(useOffset=False)  # "0.124", not "+1.2e-1" on the corner
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.grid(True, alpha=0.3)


def _single_x(ax: Any, xs: Sequence[float]) -> None:
    """One distinct x (a one-epoch run): a readable window around it instead of a 1e-9 range."""
    if len(set(xs)) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)


def _alpha_history(alpha_records: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[str, list[list[float]]]]:
    """Epochs (sorted, last record per epoch wins) and ``{label: [probs per epoch]}``."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for i, r in enumerate(alpha_records):
        sm = r.get("softmax")
        if not isinstance(sm, Mapping) or not sm:
            continue
        e = r.get("epoch", r.get("step", i + 1))
        by_epoch[int(e) if isinstance(e, (int, float)) else i + 1] = sm
    epochs = sorted(by_epoch)
    labels: list[str] = []
    for e in epochs:
        labels += [l for l in by_epoch[e] if l not in labels]
    width = {l: max((len(by_epoch[e].get(l) or []) for e in epochs), default=0) for l in labels}
    hist = {l: [[_num(p) for p in (by_epoch[e].get(l) or [])] + [math.nan] * (width[l] - len(by_epoch[e].get(l) or []))
                for e in epochs] for l in labels}
    return epochs, hist


def _prefix(label: str) -> str:
    return label.split("/", 1)[0] if "/" in label else "alpha"


def alpha_figures(alpha_records: Sequence[Mapping[str, Any]], ops: Sequence[str] | None = None) -> dict[str, Figure]:
    """One figure per label prefix (``normal``, ``reduce``, ``cell``, ``cell3`` ...).

    Each figure has a panel per label (edge) with one line per candidate op: softmax(α)
    over epochs. The y-range of each panel comes from its data (at least
    :data:`ALPHA_MIN_SPAN`), so curves near 1/k are spread out; one legend, outside.
    """
    epochs, hist = _alpha_history(alpha_records)
    groups: dict[str, list[str]] = {}
    for l in hist:
        groups.setdefault(_prefix(l), []).append(l)
    figs: dict[str, Figure] = {}
    for prefix, labels in groups.items():
        k = max(len(hist[l][0]) for l in labels)
        names = list(ops) if ops is not None and len(ops) == k else [f"op {i}" for i in range(k)]
        ncols = min(_COLS, len(labels))
        nrows = -(-len(labels) // ncols)
        fig = _new_figure(3.2 * ncols, 2.4 * nrows + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        handles = []
        marker = "o" if len(epochs) <= 30 else None  # a single epoch is otherwise invisible
        for idx, label in enumerate(labels):
            ax = axes[idx // ncols][idx % ncols]
            probs = np.asarray(hist[label], float).reshape(len(epochs), -1)
            for j in range(probs.shape[1]):
                (h,) = ax.plot(epochs, probs[:, j], marker=marker, markersize=3, lw=1.5, color=f"C{j % 10}",
                               label=names[j] if j < len(names) else f"op {j}")
                if idx == 0:
                    handles.append(h)
            ax.set_title(label.split("/", 1)[1] if "/" in label else label, fontsize=10)
            ax.set_ylim(*data_ylim(probs.ravel(), ALPHA_MIN_SPAN, 0.0, 1.0))
            _style_axes(ax, integer_x=True)
            _single_x(ax, epochs)
            if idx // ncols == nrows - 1 or idx + ncols >= len(labels):
                ax.set_xlabel("epoch")
            if idx % ncols == 0:
                ax.set_ylabel("softmax(α)")
        for idx in range(len(labels), nrows * ncols):
            axes[idx // ncols][idx % ncols].set_visible(False)
        fig.suptitle(f"{prefix}: softmax(α) per candidate op", fontsize=12)
        fig.tight_layout()
        fig.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(1.0, 0.95),
                   title="op", frameon=False)
        figs[prefix] = fig
    return figs


def plot_alpha(alpha_records: Sequence[Mapping[str, Any]], out_dir: str | Path, ops: Sequence[str] | None = None,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``alpha_<prefix>.{png,svg}`` per label prefix; returns the paths.

    Args:
      alpha_records: ``alpha.jsonl`` records (``{"epoch", "softmax": {label: probs}}``).
      out_dir: folder for the files (created).
      ops: candidate op names in α's order (the run's ``config.json`` ``ops``); without
        them, or when their count does not match, lines are named ``op 0``, ``op 1``, ...
    """
    out = []
    for prefix, fig in alpha_figures(alpha_records, ops).items():
        out += save_figure(fig, Path(out_dir) / f"alpha_{prefix}", formats)
    return out


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["step"]), _num(r.get(key))) for r in records if key in r and isinstance(r.get("step"), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


# (panel title, y-label, bounded to [0, 1], [(key, legend, per-epoch style)]).
_PANELS: tuple[tuple[str, str, bool, tuple[tuple[str, str, bool], ...]], ...] = (
    ("loss", "cross-entropy", False, (("train_loss", "train (batch)", False), ("val_loss", "val (batch)", False),
                                      ("epoch_val_loss", "val (full split, per epoch)", True),
                                      ("test_loss", "test", True))),
    ("accuracy", "accuracy", True, (("train_acc", "train (batch)", False), ("val_acc", "val (batch)", False),
                                    ("epoch_val_acc", "val (full split, per epoch)", True),
                                    ("test_acc", "test", True))),
    ("α entropy", "nats", False, (("alpha_entropy", "α entropy", False),)),
)


def metrics_figure(metrics_records: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Loss, accuracy (and α entropy when logged) against step; ``None`` if nothing to plot.

    Per-step values are one batch each, drawn thin; ``epoch_val_*`` from the
    ``"event": "epoch"`` lines and ``test_*`` from the ``"event": "test"`` line are the
    full-split numbers, drawn as markers. Dotted verticals mark epoch ends.
    """
    by_step: dict[float, Mapping[str, Any]] = {}
    events: list[Mapping[str, Any]] = []
    for r in metrics_records:
        if not isinstance(r.get("step"), (int, float)):
            continue
        if "event" in r:
            events.append(r)
        else:
            by_step[float(r["step"])] = r  # a duplicated step (old resume) keeps its last value
    steps = [by_step[s] for s in sorted(by_step)]
    epoch_ends = sorted({float(r["step"]) for r in events if r.get("event") == "epoch"})
    panels = []
    for title, ylabel, bounded, keys in _PANELS:
        lines = [(key, name, per_epoch, *_series(events if per_epoch else steps, key)) for key, name, per_epoch in keys]
        lines = [l for l in lines if _finite(l[4]).size]
        if lines:
            panels.append((title, ylabel, bounded, lines))
    if not panels:
        return None
    fig = _new_figure(6.4, 2.6 * len(panels))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    all_x: list[float] = []
    for ax, (title, ylabel, bounded, lines) in zip(axes, panels):
        ys: list[float] = []
        for j, (key, name, per_epoch, x, y) in enumerate(lines):
            if per_epoch:
                ax.plot(x, y, marker="o" if key.startswith("epoch") else "*", markersize=6 if key.startswith("epoch") else 11,
                        lw=2, color="black" if key.startswith("epoch") else "C3", label=name)
            else:
                ax.plot(x, y, lw=1, alpha=0.8, color=f"C{j}", marker="." if len(x) <= 2 else None, label=name)
            ys += y
            all_x += x
        for s in epoch_ends:
            ax.axvline(s, color="0.6", lw=0.8, ls=":")
        ax.set_ylim(*data_ylim(ys, 0.01, 0.0, 1.0) if bounded else data_ylim(ys, 1e-3))
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        _style_axes(ax, integer_x=True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    _single_x(axes[-1], all_x)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    return fig


def plot_metrics(metrics_records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``metrics.{png,svg}`` (loss and accuracy curves) into ``out_dir``; returns the
    paths, ``[]`` when the records hold no loss/accuracy/entropy at all."""
    fig = metrics_figure(metrics_records)
    return [] if fig is None else save_figure(fig, Path(out_dir) / "metrics", formats)



def pareto_figure(points: Any, front_mask: Any, xlabel: str, ylabel: str, labels: Sequence[str] | None = None,
                  title: str | None = None) -> Figure:
    """Scatter of ``points`` (``[N, 2]``: x, y) with the ``front_mask`` points highlighted and
    joined in x order; ``labels`` annotate the front points."""
    p = np.asarray(points, float).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    mask = np.asarray(front_mask, bool).reshape(-1)
    if mask.shape[0] != p.shape[0]:
        raise DnasError(f"plot_pareto: {p.shape[0]} points but a front mask of {mask.shape[0]}; pass one flag per point")
    if labels is not None and len(labels) != p.shape[0]:
        raise DnasError(f"plot_pareto: {p.shape[0]} points but {len(labels)} labels; pass one label per point")
    fig = _new_figure(6.4, 4.4)
    ax = fig.subplots()
    rest, front = p[~mask], p[mask]
    if len(rest):
        ax.scatter(rest[:, 0], rest[:, 1], s=18, color="0.6", alpha=0.7, label="candidates")
    if len(front):
        order = np.argsort(front[:, 0], kind="stable")
        ax.plot(front[order, 0], front[order, 1], "-o", color="C3", ms=6, lw=1.5, label="Pareto front")
        if labels is not None:
            for i in np.flatnonzero(mask):
                ax.annotate(str(labels[i]), p[i], textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(p):
        ax.set_ylim(*data_ylim(p[:, 1], 1e-3))
    _style_axes(ax, integer_x=False)
    if len(p):
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_pareto(points: Any, front_mask: Any, out_path: str | Path, xlabel: str = "latency (ms)",
                ylabel: str = "accuracy", labels: Sequence[str] | None = None, title: str | None = None,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes the accuracy-vs-cost scatter (front highlighted) as ``out_path`` with each of
    ``formats`` as suffix (an existing ``.png``/``.svg`` suffix is replaced); returns paths.

    Args:
      points: ``[N, 2]`` array-like of (x, y), e.g. (latency, accuracy).
      front_mask: ``[N]`` booleans, True on the front (see :func:`dnas.core.stats.pareto_mask`).
    """
    out_path = Path(out_path)
    stem = out_path.with_suffix("") if out_path.suffix.lower() in (".png", ".svg", ".pdf") else out_path
    return save_figure(pareto_figure(points, front_mask, xlabel, ylabel, labels, title), stem, formats)



class ParetoData(NamedTuple):
    """What an accuracy-vs-latency plot of a run shows.

    ``lat`` and ``acc`` are ``f64[N]`` (one per evaluated or derived architecture);
    ``epoch`` is ``int[N]`` for a search (the epoch each architecture was derived at), else
    ``None``; ``target_ms`` is the latency target of a search that had one.
    """
    lat: np.ndarray
    acc: np.ndarray
    epoch: np.ndarray | None
    xlabel: str
    ylabel: str
    title: str
    target_ms: float | None = None


def search_pareto_data(metrics_records: Sequence[Mapping[str, Any]],
                       config: Mapping[str, Any] | None = None) -> ParetoData | None:
    """Each epoch's derived architecture of a search with a latency term, or ``None``.

    Reads the ``"event": "epoch"`` lines of ``metrics.jsonl`` (:func:`dnas.run.search.run_search`
    with :func:`dnas.search.latency.epoch_latency_metrics`): x = ``derived_latency_ms`` (the
    table latency of the architecture derived that epoch), y = ``epoch_val_acc`` (the
    supernet's accuracy on the validation split at that epoch: the search's own accuracy
    signal; the derived network's is only known after retraining). A repeated epoch (an
    older resume) keeps its last line.

    Args:
      metrics_records: the run's ``metrics.jsonl`` records.
      config: the run's ``config.json`` (for a ``target`` penalty's ``latency.target_ms``).
    """
    by_epoch: dict[int, tuple[float, float]] = {}
    for r in metrics_records:
        if r.get("event") != "epoch" or not isinstance(r.get("epoch"), (int, float)):
            continue
        lat, acc = _num(r.get("derived_latency_ms")), _num(r.get("epoch_val_acc"))
        if math.isfinite(lat) and math.isfinite(acc):
            by_epoch[int(r["epoch"])] = (lat, acc)
    if not by_epoch:
        return None
    epochs = np.array(sorted(by_epoch), int)
    lat, acc = (np.array([by_epoch[int(e)][i] for e in epochs], float) for i in (0, 1))
    latency = (config or {}).get("latency") or {}
    target = _num(latency.get("target_ms")) if latency.get("penalty") == "target" else math.nan
    return ParetoData(lat, acc, epochs, "latency (ms): derived architecture (derived_latency_ms)",
                      "accuracy: supernet on val (epoch_val_acc)",
                      f"search: derived architecture per epoch ({len(epochs)} epochs)",
                      target if math.isfinite(target) and target > 0 else None)


def _latency_metric(names: Iterable[str], config: Mapping[str, Any]) -> str | None:
    """The latency metric among ``names``: the one the objective names (``multi``'s
    ``"-lat_ms_x"``, ``mnasnet``'s ``latency``, ``hard``'s limits...), else ``latency_ms``,
    else the first ``lat_ms_*`` alphabetically."""
    names = set(names)
    is_lat = lambda n: n == "latency_ms" or n.startswith("lat_ms_")  # noqa: E731
    wanted: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            wanted.append(v.lstrip("-"))
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(config.get("objective_kwargs") or {})
    for n in [*wanted, "latency_ms", *sorted(names)]:
        if n in names and is_lat(n):
            return n
    return None


def _multitrial_history(run_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Per chunk file: archs ``[R, E, n]``, counts ``[R]`` and stored metrics ``{name: [R, E]}``
    (:func:`dnas.run.multitrial._save_chunk`). A host run still under way has only its
    ``run_XXXXX.partial.npz``, used when its finished ``runs_XXXXX.npz`` is absent."""
    chunks = run_dir / "chunks"
    done = sorted(chunks.glob("runs_*.npz"))
    finished = {p.name[len("runs_"):-len(".npz")] for p in done}
    partial = [p for p in sorted(chunks.glob("run_*.partial.npz")) if p.name[len("run_"):-len(".partial.npz")] not in finished]
    archs, counts, metrics = [], [], []
    for p in sorted(done + partial, key=lambda p: int(p.name.split("_")[1].split(".")[0])):  # run order
        with np.load(p) as z:
            archs.append(z["archs"])
            counts.append(np.asarray(z["count"]).reshape(-1))
            metrics.append({k[len("metric:"):]: z[k] for k in z.files if k.startswith("metric:")})
    return archs, counts, metrics


def _table_metrics(run_dir: Path, config: Mapping[str, Any], archs: np.ndarray) -> dict[str, np.ndarray] | None:
    """Metrics of ``archs [K, n]`` from a pure estimator (a benchmark table), as the run
    itself computes them: its chunks store architectures only, the table is the record.
    ``None`` when the estimator cannot be rebuilt here (table moved, not pure)."""
    try:
        b = build(from_json(json.dumps(dict(config))), run_dir)
        if not b.estimator.pure:
            return None
        return metrics_of(b, archs) if len(archs) else {k: np.zeros((0,), np.float32) for k in b.estimator.metrics}
    except (DnasError, OSError, ValueError, KeyError, TypeError):
        return None


def multitrial_pareto_data(run_dir: str | Path, config: Mapping[str, Any]) -> ParetoData | None:
    """Every evaluated architecture of a multi-trial run (all runs), or ``None`` when it has
    no latency metric.

    Where the values come from (:mod:`dnas.run.multitrial`): a host-side estimator's chunks
    store each evaluation's metrics (``metric:NAME``, ``[R, E]``); a pure estimator's store
    architectures only, so they are looked up in its table again (as the run's summary
    does); without the table, the ``metrics.jsonl`` lines (the first ``log_runs`` runs) are
    used. Only the first ``count`` evaluations of a run (those paid within the budget) count.
    Accuracy is ``config["report_metric"]`` (else ``valid_metric``); latency is the metric
    the objective names, else ``latency_ms``, else a ``lat_ms_*`` one.

    Args:
      run_dir: the run directory.
      config: its ``config.json`` as a dict.
    """
    run_dir = Path(run_dir)
    archs, counts, stored = _multitrial_history(run_dir)
    # Paid evaluations only: the padded tail of a chunk was never part of the search.
    paid = [(a[r, : int(c[r])], {k: v[r, : int(c[r])] for k, v in m.items()})
            for a, c, m in zip(archs, counts, stored) for r in range(a.shape[0])]
    if isinstance(config.get("runs"), int):
        paid = paid[: config["runs"]]  # the last chunk is padded to full width with runs past the end
    metrics: dict[str, np.ndarray] = {}
    if paid and all(m for _, m in paid):
        names = set.intersection(*(set(m) for _, m in paid))
        metrics = {k: np.concatenate([m[k] for _, m in paid]).astype(float) for k in names}
    elif paid:
        found = _table_metrics(run_dir, config, np.concatenate([a for a, _ in paid]))
        metrics = {k: np.asarray(v, float) for k, v in (found or {}).items()}
    runs, of_runs = len(paid), ""
    if not metrics:  # no chunks, or a table not found here: the logged runs' lines
        recs = read_jsonl(run_dir / "metrics.jsonl")
        keys = set.intersection(*(set(r) for r in recs)) if recs else set()
        keys -= {"run", "eval", "arch", "arch_str", "fitness", "cost_s", "cum_cost_s"}
        metrics = {k: np.array([_num(r[k]) for r in recs]) for k in keys}
        runs = len({r.get("run") for r in recs})
        total = config.get("runs")
        if isinstance(total, int) and total > runs:  # metrics.jsonl logs only the first log_runs runs
            of_runs = f"{runs} logged run{'s' * (runs != 1)} of {total}"
    acc_name = next((config.get(k) for k in ("report_metric", "valid_metric") if config.get(k) in metrics), None)
    lat_name = _latency_metric(metrics, config)
    if acc_name is None or lat_name is None:
        return None
    lat, acc = metrics[lat_name], metrics[acc_name]
    if not (np.isfinite(lat) & np.isfinite(acc)).any():
        return None
    of_runs = of_runs or f"{runs} run{'s' * (runs != 1)}"
    return ParetoData(lat, acc, None, f"latency (ms): {lat_name}", f"accuracy: {acc_name}",
                      f"{config.get('strategy', 'multi-trial')}: {lat.size} evaluations in {of_runs}")


def run_pareto_data(run_dir: str | Path) -> ParetoData | None:
    """Accuracy and latency of a run directory's architectures, or ``None`` when it does not
    record both: a multi-trial run (``config.json`` ``kind`` ``"multitrial"``,
    :func:`multitrial_pareto_data`) or a search with a latency term
    (:func:`search_pareto_data`)."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    except json.JSONDecodeError:
        config = {}  # the search's lines still have what the plot needs
    if not isinstance(config, dict):
        config = {}
    if config.get("kind") == "multitrial":
        return multitrial_pareto_data(run_dir, config)
    return search_pareto_data(read_jsonl(run_dir / "metrics.jsonl"), config)


def pareto_run_figure(data: ParetoData) -> Figure:
    """Scatter of ``data`` (x latency, y accuracy) with the :func:`pareto_front` points
    highlighted and joined as a step line: at any latency, the line is the best accuracy
    reached at or below it. A search's points are colored and labelled by epoch."""
    front = pareto_front(data.acc, data.lat)
    fig = _new_figure(6.8, 4.6)
    ax = fig.subplots()
    if data.epoch is None:
        # Table runs revisit the same cells thousands of times; one marker per distinct
        # point keeps the picture (and the SVG) the same but small.
        ok = np.isfinite(data.lat) & np.isfinite(data.acc)
        pts = np.unique(np.stack([data.lat[ok], data.acc[ok]], 1), axis=0)
        ax.scatter(pts[:, 0], pts[:, 1], s=10, color="0.6", alpha=0.6, lw=0,
                   label=f"evaluated ({len(pts)} distinct)")
    else:
        sc = ax.scatter(data.lat, data.acc, c=data.epoch, cmap="viridis", s=30, zorder=3, label="derived, per epoch")
        bar = fig.colorbar(sc, ax=ax, label="epoch", pad=0.02)
        bar.locator = MaxNLocator(integer=True)  # epochs are whole numbers, not 2.5
        bar.update_ticks()
        if len(data.epoch) <= 40:  # beyond that the numbers overprint each other
            for x, y, e in zip(data.lat, data.acc, data.epoch):
                ax.annotate(str(int(e)), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    fx, fy = data.lat[front], data.acc[front]
    ax.step(fx, fy, where="post", color="C3", lw=1.5, zorder=4)
    ax.scatter(fx, fy, s=55, facecolors="none", edgecolors="C3", lw=1.6, zorder=5,
               label=f"Pareto front ({len(front)})")
    if data.target_ms is not None:
        ax.axvline(data.target_ms, color="0.3", ls="--", lw=1, label=f"target {data.target_ms:g} ms")
    ax.set_xlabel(data.xlabel)
    ax.set_ylabel(data.ylabel)
    ax.set_title(data.title, fontsize=11)
    ax.set_ylim(*data_ylim(data.acc, 1e-3))
    if len(set(np.asarray(data.lat)[np.isfinite(data.lat)].tolist())) == 1:
        _single_x(ax, [float(np.nanmax(data.lat))])
    _style_axes(ax, integer_x=False)
    # "best" searches every drawn point for a free corner: fine for a search's epochs, slow
    # for tens of thousands of evaluations, whose front leaves the lower right empty anyway.
    ax.legend(loc="best" if data.epoch is not None else "lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_run_pareto(run_dir: str | Path, out_dir: str | Path | None = None,
                    formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``pareto.{png,svg}`` (accuracy vs latency, :func:`pareto_run_figure`) for a run
    that records both (:func:`run_pareto_data`); returns the paths, ``[]`` otherwise.

    A multi-objective multi-trial run already wrote its own ``pareto.png`` (run 0 in its
    objectives' space, :mod:`dnas.run.summary`); where that run's ``pareto.json`` lies
    in ``out_dir`` the files are named ``pareto_latency.*`` instead, so the run's own plot is
    kept (a resumed run would write it back anyway).

    Args:
      run_dir: a run directory.
      out_dir: folder for the files (default: the run directory).
    """
    data = run_pareto_data(run_dir)
    if data is None:
        return []
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    stem = "pareto_latency" if (out / "pareto.json").is_file() else "pareto"
    return save_figure(pareto_run_figure(data), out / stem, formats)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """All plots of a run directory (metrics and α curves, op names from its config.json, and
    accuracy vs latency when the run records both, :func:`plot_run_pareto`); writes into
    ``out_dir`` (default: the run directory); returns the written paths."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    ops = None
    if (run_dir / "config.json").exists():
        try:
            cfg = json.loads((run_dir / "config.json").read_text())
            ops = cfg.get("ops") or (cfg.get("space_kwargs") or {}).get("ops")
        except json.JSONDecodeError:
            ops = None  # names only; the plot still works with "op i"
    return (plot_metrics(read_jsonl(run_dir / "metrics.jsonl"), out, formats)
            + plot_alpha(read_jsonl(run_dir / "alpha.jsonl"), out, ops, formats)
            + plot_run_pareto(run_dir, out, formats))
