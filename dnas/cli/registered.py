"""``dnas list``: what is registered (ops, relaxations, spaces, genotypes, hypergradients, run
kinds, methods, strategies, estimators, objectives, cost models, penalties, zero-cost proxies,
predictors) and the experiment configs with their variants."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from dnas.core.errors import DnasError
from dnas.core.imports import import_file, import_files
from dnas.core.registry import Registry
from dnas.estimate import ESTIMATORS
from dnas.estimate.zero_cost.proxies import PROXIES
from dnas.hardware.cost_model import COST_MODELS
from dnas.hardware.penalties import PENALTIES
from dnas.search.methods import ARCH_PENALTIES, METHODS
from dnas.search.objectives import OBJECTIVES
from dnas.search.strategies import STRATEGIES
from dnas.search.strategies.predictor import PREDICTORS
from dnas.run.config import RUN_KINDS
from dnas.search.bilevel import HYPERGRADIENTS
from dnas.space import genotype as G
from dnas.space.base import HARDWARE_SPACES, SPACES
from dnas.space.ops import OPS
from dnas.space.relax import RELAXATIONS


def cmd_list(args: argparse.Namespace) -> int:
    """Lists what is registered (after importing ``--import`` files)."""
    for item in registries(args.what, args.imports):
        print(item)
    return 0


def _doc(obj: object) -> str:
    """The first line of ``obj``'s docstring (a dict entry: its ``paper`` or ``doc``), or ''."""
    if isinstance(obj, dict):
        text = str(obj.get("paper") or obj.get("doc") or "")
    else:
        text = getattr(obj, "paper", "") or getattr(obj, "__doc__", "") or ""
        if text == getattr(type(obj), "__doc__", None) and not callable(obj):
            text = ""  # a plain instance's class docstring says nothing about this entry
    lines = str(text).strip().splitlines()
    return lines[0].strip() if lines else ""


def _entries(reg: Registry) -> list[str]:
    return [f"{n}  {_doc(reg[n])}".rstrip() for n in reg]


def experiments_root() -> Path | None:
    """``experiments/`` of the current folder, else of the checkout dnas runs from."""
    for root in (Path("experiments"), Path(__file__).resolve().parents[2] / "experiments"):
        if root.is_dir():
            return root
    return None


def experiment_lines() -> list[str]:
    """One line per ``experiments/*/config.py``: its path, its first docstring line and the
    variants its ``get_config`` accepts (its ``VARIANTS`` if it declares them, else what it
    answers to an unknown variant: every config names them in that error)."""
    root = experiments_root()
    if root is None:
        return ["(no experiments/ folder here or beside dnas)"]
    out = []
    for f in sorted(root.glob("*/config.py")):
        try:
            module = import_file(f)
        except DnasError as e:
            out.append(f"{f}  (does not load: {e})")
            continue
        variants = getattr(module, "VARIANTS", None)
        if variants is None:
            try:
                module.get_config("__dnas_list__")
                hint = "?"
            except Exception as e:  # noqa: BLE001 - the config's own refusal names its variants
                msg = str(e)
                hint = re.split(r"; use |; known: |: ", msg, maxsplit=1)[-1] if re.search(r"; use |; known: |: ", msg) else msg
        else:
            hint = ", ".join(variants)
        out.append(f"{f}  {_doc(module)}".rstrip())
        out.append(f"    variants (PATH:VARIANT): {hint}")
    return out


def registries(what: str, imports: Sequence[str] = ()) -> list[str]:
    """Lines describing the registered ``what`` (one of :data:`WHAT`, or all)."""
    import_files(imports)
    tables: dict[str, Callable[[], list[str]]] = {
        "ops": lambda: [f"{n}{'  (parametric)' if OPS[n].parametric else ''}" for n in OPS],
        "relaxations": lambda: [f"{n}  {_doc(RELAXATIONS[n])}".rstrip() for n in RELAXATIONS],
        "spaces": lambda: [f"{n}  ({SPACES[n].__name__})" for n in SPACES]
        + [f"{n}  (hardware: {HARDWARE_SPACES[n].__name__}; compose with space_kwargs.hardware={n!r})" for n in HARDWARE_SPACES],
        "genotypes": lambda: [f"{n}  (published)" for n in G.published_names()] + [f"kind {k}  ({G.GENOTYPES[k].__name__})" for k in G.GENOTYPES],
        "hypergradients": lambda: list(HYPERGRADIENTS),
        "kinds": lambda: [f"{k}  (dnas {RUN_KINDS[k].command})" for k in RUN_KINDS],
        "methods": lambda: _entries(METHODS),
        "strategies": lambda: _entries(STRATEGIES),
        "estimators": lambda: _entries(ESTIMATORS),
        "objectives": lambda: _entries(OBJECTIVES),
        "cost_models": lambda: _entries(COST_MODELS),
        "latency_penalties": lambda: _entries(PENALTIES),
        "arch_penalties": lambda: _entries(ARCH_PENALTIES),
        "proxies": lambda: _entries(PROXIES),
        "predictors": lambda: _entries(PREDICTORS),
        "experiments": experiment_lines,
    }
    if what == "all":
        return [line for k, fn in tables.items() for line in [f"{k}:"] + [f"  {x}" for x in fn()]]
    if what not in tables:
        close = difflib.get_close_matches(what, list(tables), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DnasError(f"dnas list takes one of {', '.join(tables)} or all, got {what!r}; {hint}".rstrip("; "))
    return tables[what]()


WHAT = ("ops", "relaxations", "spaces", "genotypes", "hypergradients", "kinds", "methods", "strategies", "estimators",
        "objectives", "cost_models", "latency_penalties", "arch_penalties", "proxies", "predictors", "experiments")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``list`` to the ``dnas`` command's subparsers."""
    ls = sub.add_parser("list", help="list what is registered (ops, spaces, methods, strategies, estimators, ...) and the experiments")
    ls.add_argument("what", nargs="?", default="all", help=" | ".join(WHAT) + " | all")
    ls.add_argument("--import", dest="imports", action="append", default=[], help="a Python file to import first (its registrations)")
    ls.set_defaults(fn=cmd_list)
