"""The ``dnas`` command: one parser assembled from one module per subcommand
(:mod:`dnas.cli.search`, :mod:`dnas.cli.train`, ...); the only place that parses arguments.
A :class:`~dnas.core.errors.DnasError` anywhere becomes one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import absl.logging

from dnas.cli import config as config_cmd
from dnas.cli import eval as eval_cmd
from dnas.cli import info, latency, launch, predictor, registered, search, show, train, zero_cost
from dnas.cli.common import split_overrides, version
from dnas.core.errors import DnasError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dnas`` command."""
    p = argparse.ArgumentParser(prog="dnas", description="Neural architecture search in JAX/Flax.")
    p.add_argument("--version", action="version", version=f"dnas {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (info, search, train, show, registered, config_cmd, launch):
        module.add_parser(sub)
    eval_cmd.add_eval_parser(sub)
    latency.add_latency_parser(sub)
    latency.add_lut_parser(sub)
    predictor.add_predictor_parser(sub)
    zero_cost.add_zero_cost_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dnas`` command; returns the exit code."""

    # Orbax logs through absl; the CLI reports failures itself, as one line.
    absl.logging.set_verbosity(absl.logging.FATAL)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # launch passes its command line, overrides included, to its children untouched.
        rest, overrides = (argv, []) if argv[:1] == ["launch"] else split_overrides(argv)
    except DnasError as e:
        print(f"dnas: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    if overrides and args.command not in ("search", "train", "config"):
        print(f"dnas: error: --config.* overrides apply to search, train and config, not {args.command}", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args) or 0)
    except DnasError as e:
        print(f"dnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnas: {interrupted_message(args.command)}", file=sys.stderr)
        return 130


def interrupted_message(command: str) -> str:
    """What a Ctrl-C that reached the top level (no run's own signal handling caught it)
    means for ``command``. Why per command: "before the run started" was printed in the
    middle of ``dnas eval`` and of multi-trial runs, which have no such moment."""
    if command in ("search", "train"):
        return ("interrupted; what the run saved is kept (its config, checkpoints and finished chunks), "
                "so the same command resumes it")
    return f"'dnas {command}' interrupted before it finished; no run's data was changed (re-run it for its output)"


def main_lut(argv: Sequence[str] | None = None) -> int:
    """``dnas lut ...`` on its own: returns the exit code (2 with one error line on a DnasError)."""
    return main(["lut", *(sys.argv[1:] if argv is None else argv)])


def main_latency(argv: Sequence[str] | None = None) -> int:
    """``dnas latency ...`` on its own: returns the exit code (2 with one error line on a DnasError)."""
    return main(["latency", *(sys.argv[1:] if argv is None else argv)])


def main_zero_cost(argv: Sequence[str] | None = None) -> int:
    """``dnas zero-cost`` on its own: returns the exit code (2 and one line on a DnasError)."""
    return main(["zero-cost", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
