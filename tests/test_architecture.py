"""The package layers hold (README, "Architecture"): ``lint-imports`` keeps the contract in
pyproject.toml, and no dnas module imports another inside a function (the way import
cycles used to be dodged), except the few listed here with their reason."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (module, imported module): why the import waits until the function runs.
ALLOWED_LOCAL: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "dnas").rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def test_import_layers_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: the test extra installs import-linter (pip install -e '.[test]')")
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_function_local_imports_of_dnas():
    found = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("dnas"):
                    target = inner.module
                elif isinstance(inner, ast.Import) and inner.names[0].name.startswith("dnas"):
                    target = inner.names[0].name
                else:
                    continue
                if (mod, target) not in ALLOWED_LOCAL:
                    found.append(f"{mod}:{inner.lineno} imports {target} inside {node.name}()")
    assert not found, "function-local imports of dnas modules (move them to the top; a cycle means a misplaced responsibility):\n" + "\n".join(sorted(set(found)))


def test_no_import_cycles():
    """Module-level and function-level imports together form no cycle (Tarjan's SCCs)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                r = resolve(n) if n.startswith("dnas") else None
                if r and r != m and not r.startswith(m + "."):  # a package re-exporting its children is no cycle
                    edges[m].add(r)
    index, low, stack, on, cycles = {}, {}, [], set(), []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in mods:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
