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
    else:  # a multi-trial summary: a short table, the JSON line last
        print("\n".join(multitrial_table(result)))
        # The front and per-run lists live in summary.json; the JSON line stays one readable line.
        print(json.dumps({k: v for k, v in result.items() if k not in ("pareto", "hypervolume_runs")}))
    return 0


def multitrial_table(s: dict) -> list[str]:
    """The short human table of a multi-trial summary (the JSON line follows it)."""
    def get(k: str) -> float:
        return float(s.get(k, float("nan")))

    return [
        f"{s.get('runs')} runs of {s.get('strategy')}, {get('evals_mean'):.1f} architectures each on average "
        f"(compile {get('compile_s'):.1f} s, search {get('search_s'):.1f} s)",
        f"  {'test: ' + str(s.get('test_metric')):40s} {get('test_acc_mean'):8.3f} ± {get('test_acc_std'):.3f}",
        f"  {'valid: ' + str(s.get('valid_metric')):40s} {get('valid_acc_mean'):8.3f} ± {get('valid_acc_std'):.3f}",
        f"  most chosen ({s.get('most_chosen_runs')} runs): {s.get('most_chosen')}",
    ] + ([f"  hypervolume {get('hypervolume_mean'):.4f} ± {get('hypervolume_std'):.4f}; Pareto front of run 0: {s.get('pareto_size')} "
          "architectures (summary.json, pareto.png; dnas show WORKDIR)"] if "hypervolume_mean" in s else [])



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``search`` to the ``dnas`` command's subparsers."""
    helptext = "run or resume an architecture search"
    sp = sub.add_parser("search", help=helptext, description=f"{helptext}. Override config keys with --config.KEY=VALUE.", epilog=keys_epilog("search", default_search_config))
    add_run_arguments(sp)
    sp.set_defaults(fn=cmd_search)
