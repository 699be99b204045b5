"""``dnas search``: run or resume a search of any run kind whose command is ``search``."""

from __future__ import annotations

import argparse
import json

from dnas.cli.common import add_run_arguments, keys_epilog, resolve, run_kind
from dnas.run.search import default_search_config


def cmd_search(args: argparse.Namespace) -> int:
    """Runs or resumes a search (any run kind whose command is ``search``); prints the result."""

    workdir, config = resolve(args, "search", default_search_config)
    result = run_kind("search", workdir, config)
    if result is None:
        return 130
    print(f"workdir: {workdir}")
    if hasattr(result, "kind"):  # a genotype
        print(f"genotype: {result}")
    else:  # a multi-trial summary

        print(f"summary: {json.dumps(result)}")
    return 0



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``search`` to the ``dnas`` command's subparsers."""
    helptext = "run or resume an architecture search"
    sp = sub.add_parser("search", help=helptext, description=f"{helptext}. Override config keys with --config.KEY=VALUE.", epilog=keys_epilog("search"))
    add_run_arguments(sp)
    sp.set_defaults(fn=cmd_search)
