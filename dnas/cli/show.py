"""``dnas show``: print a genotype or a run, draw its cells, plot α and the training curves."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dnas.report.show import show


def cmd_show(args: argparse.Namespace) -> int:
    """Prints a genotype (and a run's α table) and writes cell pictures and plots."""

    for line in show(args.target, Path(args.out) if args.out else None, table=args.table):
        print(line)
    return 0



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``show`` to the ``dnas`` command's subparsers."""
    p = sub.add_parser("show", help="print a genotype / run, draw its cells, plot α and the training curves")
    p.add_argument("target", help="a run directory, a genotype JSON file, a published name or an NB201 arch_str")
    p.add_argument("--out", help="folder for pictures (default: the run directory, or show-<name> in the current folder)")
    p.add_argument("--table", default=os.environ.get("DNAS_NB201_TABLE", ""), help="NAS-Bench-201 table CSV: print an NB201 cell's benchmark accuracy")
    p.set_defaults(fn=cmd_show)
