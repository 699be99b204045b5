"""``dnas show``: print a genotype (and a run's α table), draw its cells (Graphviz DOT, PNG
and SVG when the ``dot`` program exists) and plot α, the training curves and, for a run
that records latency, accuracy vs latency with its Pareto front (matplotlib, PNG and SVG;
:mod:`dnas.report.plots`). An NB201 cell shown with a benchmark table prints the table's
accuracies for it; a multi-trial run prints its summary."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from dnas.space import genotype as G
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write, read_json
from dnas.run.config import read_config
from dnas.run.search import build_space
from dnas.core.imports import import_files
from dnas.estimate.nb201_table import table_row
from dnas.report.plots import plot_alpha, plot_metrics, plot_run_pareto, read_jsonl

GRAPHVIZ_HINT = "Graphviz's 'dot' is not installed, so cells are written as .dot only; for PNG/SVG cells: apt-get install graphviz"


def _render(dot_path: Path) -> list[Path]:
    if shutil.which("dot") is None:
        return []
    out = []
    for fmt in ("png", "svg"):
        target = dot_path.with_suffix("." + fmt)
        subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(target)], check=True)
        out.append(target)
    return out




def _run_candidates(run: Path) -> dict[str, list[str]] | None:
    """Each label's candidate names in the run's space (α tables and plot legends), or None
    when the space cannot be built from the run's config."""
    try:
        space = build_space(read_config(run / "config.json"))
    except (DnasError, OSError):
        return None
    return {c.label: [str(x) for x in c.candidates] for c in space.choices}


def _common(per_label: dict[str, list[str]] | None) -> list[str] | None:
    """The candidate names every label shares, or None (a layer-wise space's labels differ)."""
    if not per_label:
        return None
    first = next(iter(per_label.values()))
    return first if all(v == first for v in per_label.values()) else None


def alpha_table(last: dict[str, list[float]], per_label: dict[str, list[str]] | None) -> list[str]:
    """Lines of the softmax(α) table: one column per op when every label has the same ops;
    otherwise (a layer-wise space) each row names its own ops, never bare column numbers."""
    shared = _common(per_label)
    if shared is not None or not per_label:
        names = shared or [str(i) for i in range(len(next(iter(last.values()))))]
        out = ["  " + "label".ljust(22) + " ".join(n[:12].rjust(12) for n in names)]
        return out + ["  " + label.ljust(22) + " ".join(f"{p:12.3f}" for p in probs) for label, probs in last.items()]
    rows = []
    for label, probs in last.items():
        names = per_label.get(label) or [str(i) for i in range(len(probs))]
        rows.append("  " + label.ljust(22) + "  ".join(f"{n} {p:.3f}" for n, p in zip(names, probs)))
    return rows


def show(target: str, out: Path | None = None, table: str = "") -> list[str]:
    """Describes ``target`` (run dir or genotype); returns printable lines, writes files.

    Args:
      target: a run directory, a genotype JSON file, a published name or an NB201 arch_str.
      out: folder for the pictures (default: the run directory, else ``show-<name>``).
      table: an NB201 table CSV; an NB201 cell's accuracies in it are printed.
    """
    path = Path(target)
    lines: list[str] = []
    history: list[dict] = []
    ops = None
    if path.is_dir():
        saved = read_json(path / "config.json", "saved config") if (path / "config.json").is_file() else {}
        if not isinstance(saved, dict):
            raise DnasError(f"saved config {str(path / 'config.json')!r} must hold a JSON object; is {target!r} a dnas run directory?")
        if saved:
            import_files(saved.get("imports", []))
        if saved.get("kind") == "multitrial":  # no genotype: one per run, summarised instead
            return show_multitrial(path, out or path, saved)
        if saved.get("kind") == "train":  # a retraining run: its genotype is in its config
            geno = _train_genotype(path, saved)
            lines += train_lines(path, saved)
        elif not (path / "genotype.json").exists():
            raise DnasError(f"{target!r} is a folder without genotype.json; is it a dnas run directory (finished one epoch)?")
        else:
            geno = G.load(path / "genotype.json")
        out = out or path
        if (path / "alpha.jsonl").exists():
            history = read_jsonl(path / "alpha.jsonl")
        # Only a search run's config names a space to build (a train run's names a genotype).
        ops = _run_candidates(path) if saved.get("kind", "search") == "search" and (path / "config.json").is_file() else None
    else:
        if not path.exists() and (path.suffix == ".json" or "/" in target or target.startswith(".")):
            # It reads as a path: say it is missing rather than list what else it might be.
            raise DnasError(f"{target!r} does not exist: no such run directory or genotype file")
        geno = G.get(target)
        out = out or Path("show-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.suffix == ".json" else target).strip("_")[:60] or "genotype"))
    lines.append(f"genotype ({geno.kind}, {geno.space} space): {geno}")
    if table and isinstance(geno, G.NB201Genotype):  # read (and refused) before any picture is written
        row = table_row(table, geno.arch_str())
        accs = {k: row[k] for k in ("cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_120_test_200ep") if k in row}
        lines.append("NAS-Bench-201 (200 epochs, test accuracy %): " + ", ".join(f"{k.split('_test')[0]} {v:.2f}" for k, v in accs.items()))
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, dot in geno.dot_graphs().items():
        p = out / f"{name}.dot"
        atomic_write(p, dot)
        files += [p] + _render(p)
    if shutil.which("dot") is None:
        lines.append(GRAPHVIZ_HINT)
    if history:
        last = history[-1].get("softmax")
        if not isinstance(last, dict) or not all(isinstance(v, list) and v for v in last.values()) or not last:
            raise DnasError(f"{str(path / 'alpha.jsonl')!r}: its last record has no 'softmax' table of label -> probabilities; "
                            "is it a dnas alpha.jsonl?")
        lines.append(f"α after epoch {history[-1]['epoch']} (softmax per edge):")
        lines += alpha_table(last, ops)
    if path.is_dir() and (path / "summary.json").is_file():  # a search's derived pair (codesign: its accelerator)
        summary = read_json(path / "summary.json", "run summary")
        if not isinstance(summary, dict):
            raise DnasError(f"{str(path / 'summary.json')!r} must hold a JSON object; delete it and run the search command again to rewrite it")
        lines += front_lines(summary)
    if path.is_dir() and (path / "metrics.jsonl").exists():
        lines += diagnostic_lines(read_jsonl(path / "metrics.jsonl"))
    if path.is_dir():
        files += plot_metrics(read_jsonl(path / "metrics.jsonl"), out) if (path / "metrics.jsonl").exists() else []
        files += plot_alpha(history, out, _common(ops)) if history else []
        files += plot_run_pareto(path, out)  # nothing unless the search had a latency term
    lines.append("wrote: " + ", ".join(str(f) for f in files))
    return lines


def _train_genotype(path: Path, config: dict) -> G.Genotype:
    """The genotype a ``dnas train`` run trains (``config.genotype``: a name, a genotype
    file, a search run or an NB201 arch_str)."""
    name = config.get("genotype")
    if not isinstance(name, str) or not name:
        raise DnasError(f"the train run {str(path)!r} names no genotype in its config.json")
    try:
        return G.get(name)
    except DnasError as e:
        raise DnasError(f"the genotype of train run {str(path)!r} ({name!r}) is no longer readable: {e}") from None


def train_lines(path: Path, config: dict) -> list[str]:
    """The lines of a ``dnas train`` run: its result (``result.json``) or how far it got."""
    if (path / "result.json").is_file():
        r = read_json(path / "result.json", "train result")
        if isinstance(r, dict):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float))
            return [f"train run ({config.get('epochs')} epochs): {shown}"]
    done = [x for x in read_jsonl(path / "metrics.jsonl") if x.get("event") == "epoch" or "epoch" in x]
    last = done[-1].get("epoch") if done else 0
    return [f"train run, not finished (no result.json; last logged epoch {last} of {config.get('epochs')}); "
            f"resume with: dnas train --workdir {str(path)!r}"]


def show_multitrial(path: Path, out: Path, config: dict) -> list[str]:
    """``dnas show`` of a multi-trial run: its summary and the accuracy-vs-latency plot
    (:func:`dnas.report.plots.plot_run_pareto`) when its estimator gives a latency.

    Args:
      path: the run directory.
      out: folder for the pictures.
      config: its ``config.json``.
    Returns:
      printable lines.
    """
    lines = []
    if (path / "summary.json").is_file():
        s = read_json(path / "summary.json", "run summary")
        if not isinstance(s, dict):
            raise DnasError(f"{str(path / 'summary.json')!r} must hold a JSON object; delete it and run the same command again to rewrite it")
        lines.append(f"multi-trial run ({s.get('strategy', config.get('strategy'))}, {s.get('runs')} runs): "
                     f"{s.get('test_metric')} {_num(s.get('test_acc_mean')):.3f} ± {_num(s.get('test_acc_std')):.3f} "
                     f"of the chosen architectures; most chosen: {s.get('most_chosen')} ({s.get('most_chosen_runs')} runs)")
        lines += front_lines(s)
    else:
        lines.append(f"multi-trial run ({config.get('strategy')}, {config.get('runs')} runs), not finished (no summary.json)")
    out.mkdir(parents=True, exist_ok=True)
    files = plot_run_pareto(path, out)
    if (path / "pareto.png").is_file():  # the run's own front (every objective; accelerators named on a joint space)
        if out.resolve() != path.resolve():
            shutil.copyfile(path / "pareto.png", out / "pareto.png")
        if out / "pareto.png" not in files:  # plot_run_pareto may have just written it (listed once)
            files.append(out / "pareto.png")
    lines.append("wrote: " + ", ".join(str(f) for f in files) if files else
                 "no accuracy-vs-latency plot: the estimator gives no latency metric (lat_ms_* or latency_ms)")
    return lines


def front_lines(summary: dict, limit: int = 12) -> list[str]:
    """The hypervolume and Pareto front of a ``summary.json`` (multi-objective or codesign
    runs), one line per point with its accelerator; empty when it has none."""
    pts = summary.get("pareto") or []
    if not isinstance(pts, list):  # a damaged summary: points of another shape are not shown
        return []
    pts = [p for p in pts if isinstance(p, dict)]
    if not pts:
        return []
    lines = []
    if "hypervolume_mean" in summary:
        lines.append(f"hypervolume {_num(summary['hypervolume_mean']):.4f} ± {_num(summary.get('hypervolume_std', 0.0)):.4f} over {summary.get('runs')} runs "
                     f"(normalised to reference {summary.get('hv_reference')} and ideal {summary.get('hv_ideal')})")
    elif "hypervolume" in summary:
        lines.append(f"hypervolume {_num(summary['hypervolume']):.4f} (normalised to reference {summary.get('hv_reference')} and ideal {summary.get('hv_ideal')})")
    lines.append(f"Pareto front ({len(pts)} points" + (f", first {limit}" if len(pts) > limit else "") + "):")
    for p in pts[:limit]:
        nums = ", ".join(f"{k} {v:.4g}" for k, v in p.items() if isinstance(v, float))
        hw = p.get("hardware") if isinstance(p.get("hardware"), dict) else {}
        hw = " ".join(f"{k}={v}" for k, v in hw.items())
        lines.append(f"  {p.get('arch', '')}" + (f" @ {hw}" if hw else "") + f": {nums}")
    return lines


def diagnostic_lines(records: list[dict]) -> list[str]:
    """The collapse diagnostics of a search's ``metrics.jsonl`` records (:mod:`dnas.search.diagnostics`),
    one line per epoch: supernet val accuracy, top Hessian eigenvalue (when logged),
    parameter-free ops per derived cell, α entropy; and the DARTS-ES stop, if any.
    Empty when the run logged none (runs from before the diagnostics)."""
    # Records of another shape (a hand-edited or foreign file) are skipped, not a traceback.
    epochs = [r for r in records if r.get("event") == "epoch" and isinstance(r.get("param_free_ops"), dict) and isinstance(r.get("epoch"), int)]
    if not epochs:
        return []
    cells = list(epochs[-1]["param_free_ops"])
    out = ["collapse diagnostics per epoch (RobustDARTS: a rising λ_max and more parameter-free ops signal collapse):",
           "  epoch  val_acc      λ_max  " + " ".join(f"free({c})".rjust(12) for c in cells) + "  α-entropy"]
    for r in epochs:
        lam = f"{_num(r['hessian_eigenvalue']):10.4g}" if "hessian_eigenvalue" in r else "         -"
        free = " ".join(str(r["param_free_ops"].get(c, "-")).rjust(12) for c in cells)
        # An epoch config.val_every_epochs skipped logged no whole-split accuracy.
        acc = f"{_num(r['epoch_val_acc']):7.3f}" if "epoch_val_acc" in r else "      -"
        out.append(f"  {r['epoch']:5d}  {acc} {lam}  {free}  {_num(r.get('epoch_alpha_entropy')):9.3f}")
    for r in records:
        if r.get("event") == "early_stop":
            out.append(f"DARTS-ES stopped the search after epoch {r.get('epoch')}; result: the genotype of epoch {r.get('stop_epoch')}")
    return out


def _num(x: object) -> float:
    """``x`` as a float for a table cell; NaN when it is not a number."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else float("nan")
