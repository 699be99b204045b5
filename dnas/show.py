"""``dnas show``: print a genotype and α table, draw cells (Graphviz DOT, PNG/SVG when the
``dot`` program exists) and plot α over the epochs (a dependency-free SVG)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from dnas import genotype as G
from dnas.errors import DnasError

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def cell_dot(cell: G.CellGenotype, name: str) -> str:
    """Graphviz DOT of a DARTS-style cell (inputs c_{k-2}, c_{k-1}; nodes 0..n-1; output)."""
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eeeeee"];']
    lines += ['  "c_{k-2}" [fillcolor="#a6d8f0"];', '  "c_{k-1}" [fillcolor="#a6d8f0"];', '  "c_{k}" [fillcolor="#f7e08a"];']
    label = lambda s: "c_{k-2}" if s == 0 else "c_{k-1}" if s == 1 else str(s - 2)  # noqa: E731
    for e, (op, inp) in enumerate(cell.edges):
        lines.append(f'  "{label(inp)}" -> "{e // 2}" [label="{op}"];')
    for s in cell.concat:
        lines.append(f'  "{label(s)}" -> "c_{{k}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def nb201_dot(geno: G.NB201Genotype) -> str:
    """Graphviz DOT of an NB201 cell."""
    lines = ['digraph "nb201" {', "  rankdir=LR;", "  node [shape=circle];"]
    for j, node in enumerate(geno.nodes, start=1):
        for op, i in node:
            if op != "none":
                lines.append(f'  "{i}" -> "{j}" [label="{op}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(dot_path: Path) -> list[Path]:
    if shutil.which("dot") is None:
        return []
    out = []
    for fmt in ("png", "svg"):
        target = dot_path.with_suffix("." + fmt)
        subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(target)], check=True)
        out.append(target)
    return out


def alpha_svg(epochs: list[int], series: dict[str, list[float]], title: str) -> str:
    """A line chart (SVG) of one value per op over epochs."""
    w, h, m = 640, 360, 50
    xs = np.asarray(epochs, float)
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    ymax = max(max(v) for v in series.values()) * 1.1 or 1.0
    px = lambda x: m + (x - x0) / (x1 - x0) * (w - 2 * m)  # noqa: E731
    py = lambda y: h - m - y / ymax * (h - 2 * m)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">epoch</text>',
             f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">mean softmax(α)</text>',
             f'<text x="{m - 5}" y="{py(ymax / 1.1) + 4}" text-anchor="end">{ymax / 1.1:.2f}</text>',
             f'<text x="{m - 5}" y="{h - m + 4}" text-anchor="end">0</text>']
    for k, (op, ys) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - m + 5}" y="{m + 14 * k}" fill="{color}">{op}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def show(target: str, out: Path | None = None) -> list[str]:
    """Describes ``target`` (run dir or genotype); returns printable lines, writes files."""
    path = Path(target)
    lines: list[str] = []
    history: list[dict] = []
    if path.is_dir():
        if not (path / "genotype.json").exists():
            raise DnasError(f"{target!r} is a folder without genotype.json; is it a dnas run directory?")
        obj = json.loads((path / "genotype.json").read_text())
        geno = G.from_json(obj) if obj.get("kind") != "nb201_macro" else None
        if geno is None:
            lines.append("genotype (per cell): " + ", ".join(obj["cells"]))
        if (path / "alpha.jsonl").exists():
            history = [json.loads(l) for l in (path / "alpha.jsonl").read_text().splitlines() if l.strip()]
        out = out or path
        ops = None
        if (path / "config.json").exists():
            ops = json.loads((path / "config.json").read_text()).get("ops")
    else:
        geno = G.get(target)
        out = out or Path(".")
        ops = None
    out.mkdir(parents=True, exist_ok=True)
    if geno is not None:
        lines.append(f"genotype: {geno}")
    files: list[Path] = []
    if isinstance(geno, G.DartsGenotype):
        for name, cell in (("normal", geno.normal), ("reduce", geno.reduce)):
            p = out / f"cell_{name}.dot"
            p.write_text(cell_dot(cell, name))
            files += [p] + _render(p)
    elif isinstance(geno, G.MacroGenotype):
        for i, cell in enumerate(geno.cells):
            p = out / f"cell_{i}.dot"
            p.write_text(cell_dot(cell, f"cell{i}"))
            files += [p] + _render(p)
    elif isinstance(geno, G.NB201Genotype):
        p = out / "cell_nb201.dot"
        p.write_text(nb201_dot(geno))
        files += [p] + _render(p)
    if history:
        last = history[-1]["softmax"]
        op_names = ops or [str(i) for i in range(len(next(iter(last.values()))))]
        lines.append(f"α after epoch {history[-1]['epoch']} (softmax per edge):")
        lines.append("  " + "label".ljust(22) + " ".join(n[:12].rjust(12) for n in op_names))
        for label, probs in last.items():
            lines.append("  " + label.ljust(22) + " ".join(f"{p:12.3f}" for p in probs))
        prefixes = sorted({l.split("/")[0] for l in last})
        epochs = [h["epoch"] for h in history]
        for prefix in prefixes:
            labels = [l for l in last if l.startswith(prefix + "/")]
            series = {op: [float(np.mean([h["softmax"][l][k] for l in labels])) for h in history] for k, op in enumerate(op_names)}
            p = out / f"alpha_{prefix}.svg"
            p.write_text(alpha_svg(epochs, series, f"{prefix}: mean softmax(α) per op"))
            files.append(p)
    lines.append("wrote: " + ", ".join(str(f) for f in files))
    return lines
