"""``dnas config``: print the resolved, validated config as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from dnas.core.errors import DnasError
from dnas.run.config import apply_overrides, load_config, read_config, to_json, validate
from dnas.run.search import default_search_config
from dnas.run.train import train_defaults


def cmd_config(args: argparse.Namespace) -> int:
    """Prints the resolved, validated config (a file with overrides, the defaults of a
    kind, or a run directory's saved config) as JSON."""

    if args.target and Path(args.target).is_dir():
        saved = Path(args.target) / "config.json"
        if not saved.is_file():
            raise DnasError(f"{args.target!r} holds no config.json; is it a dnas run directory?")
        config = read_config(saved)
    elif args.target:
        config = load_config(args.target, args.overrides, kind=args.kind)
    else:
        defaults = default_search_config if args.kind == "search" else train_defaults
        config = validate(apply_overrides(defaults(), args.overrides))
    print(to_json(config))
    return 0



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``config`` to the ``dnas`` command's subparsers."""
    cfg = sub.add_parser("config", help="print the resolved config as JSON (a file with overrides, defaults, or a run's)")
    cfg.add_argument("target", nargs="?", help="PATH[:ARG] or a run directory (default: the default search)")
    cfg.add_argument("--kind", default="search", help="defaults of this kind when no target is given: search | train")
    cfg.set_defaults(fn=cmd_config)
