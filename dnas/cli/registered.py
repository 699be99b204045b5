"""``dnas list``: what is registered (ops, relaxations, spaces, genotypes, hypergradients, run kinds)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dnas.core.errors import DnasError
from dnas.core.imports import import_files
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


def registries(what: str, imports: Sequence[str] = ()) -> list[str]:
    """Lines describing the registered ``what`` (ops, relaxations, spaces, genotypes,
    hypergradients, kinds, or all)."""
    import_files(imports)
    tables = {
        "ops": [f"{n}{'  (parametric)' if OPS[n].parametric else ''}" for n in OPS],
        "relaxations": [f"{n}  {(RELAXATIONS[n].__doc__ or '').strip().splitlines()[0]}" for n in RELAXATIONS],
        "spaces": [f"{n}  ({SPACES[n].__name__})" for n in SPACES]
        + [f"{n}  (hardware: {HARDWARE_SPACES[n].__name__}; compose with space_kwargs.hardware={n!r})" for n in HARDWARE_SPACES],
        "genotypes": [f"{n}  (published)" for n in G.published_names()] + [f"kind {k}  ({G.GENOTYPES[k].__name__})" for k in G.GENOTYPES],
        "hypergradients": list(HYPERGRADIENTS),
        "kinds": [f"{k}  (dnas {RUN_KINDS[k].command})" for k in RUN_KINDS],
    }
    if what == "all":
        return [f"{k}:" if i == 0 else f"  {line}" for k, lines in tables.items() for i, line in enumerate([""] + lines)]
    if what not in tables:
        raise DnasError(f"dnas list takes one of {', '.join(tables)} or all, got {what!r}")
    return tables[what]



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``list`` to the ``dnas`` command's subparsers."""
    ls = sub.add_parser("list", help="list registered ops, relaxations, spaces, genotypes, hypergradients, run kinds")
    ls.add_argument("what", nargs="?", default="all", help="ops | relaxations | spaces | genotypes | hypergradients | kinds | all")
    ls.add_argument("--import", dest="imports", action="append", default=[], help="a Python file to import first (its registrations)")
    ls.set_defaults(fn=cmd_list)
