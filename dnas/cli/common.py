"""What the run commands (``search``, ``train``, ``config``) share: ``--config.*``
overrides, the compilation cache, resolving the workdir and config, and running a run kind
with one line on interrupt."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from dnas.core.errors import DnasError
from dnas.run.config import RUN_KINDS, apply_overrides, load_config, read_config, validate
from dnas.run.driver import Interrupted, InterruptedInCompile, exit_on_signal_before_first_step, prepare_workdir, run_files
from dnas.run.parallel import is_primary, maybe_initialize_distributed


def enable_compilation_cache(path: str) -> None:
    """Persistent XLA compilation cache: a second run of a config skips XLA's compilation.

    On CPU the cached executable is still rebuilt single-threaded, in time that grows
    faster than the program: XLA finds each YNNPACK fusion's instruction by scanning the
    whole module (18-21 s for the paper's C=16, 8-cell search step, ~2/3 of it in that
    scan; :func:`dnas.search.state.step_compiler_options` keeps YNNPACK to reductions to shrink
    it; benchmarks/RESULTS.md), so the gain there is compile time minus that.
    """
    if not path:
        return

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.KEY=VALUE`` (also ``--config.KEY VALUE``) from other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            if "=" not in a:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise DnasError(f"{a} needs a value: write {a}=VALUE")
                a = f"{a}={argv[i + 1]}"
                i += 1
            overrides.append(a)
        else:
            rest.append(a)
        i += 1
    return rest, overrides


def resume_hint(kind: str, workdir: Path) -> str:
    return f"dnas {kind} --workdir {shlex.quote(str(workdir))}"


def resolve(args: argparse.Namespace, command: str, defaults) -> tuple[Path, object]:
    """Workdir and config: --config file, else a saved run, else defaults. Nothing is
    written here; the config is validated before the run directory exists."""

    maybe_initialize_distributed()
    enable_compilation_cache(args.jax_cache)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")
    if workdir.exists() and not workdir.is_dir():
        raise DnasError(f"--workdir {str(workdir)!r} is a file, not a run directory; name a new or existing folder")
    if args.config:
        return workdir, load_config(args.config, args.overrides, kind=command)
    if (workdir / "config.json").exists():
        if args.overrides:
            raise DnasError("overrides need --config; an existing run resumes with its saved config")
        return workdir, None
    return workdir, validate(apply_overrides(defaults(), args.overrides))


def run_kind(kind_command: str, workdir: Path, config) -> object | None:
    """Runs the config's kind (or resumes the saved run); an interrupt becomes one line
    saying how to resume, and None."""

    # Process 0 speaks for a multi-process run; the others' lines would repeat its own.
    log = (lambda m: print(m, file=sys.stderr)) if is_primary() else (lambda m: None)  # noqa: E731

    if config is None:
        config = read_config(workdir / "config.json")
    kind = RUN_KINDS[config.get("kind", "search")]
    if kind.command != kind_command:
        raise DnasError(f"a config of kind {config.kind!r} runs with 'dnas {kind.command}', not 'dnas {kind_command}'")
    saved = workdir / "config.json"
    if saved.exists() or run_files(workdir):  # refuse a different config (or a config-less run's folder) before printing anything else
        prepare_workdir(workdir, config)
    log(f"workdir: {workdir} (interrupt with Ctrl-C; resume with: {resume_hint(kind_command, workdir)})")
    # This process is the run: a signal during a compile ends it at once.
    exit_on_signal_before_first_step(f"resume with: {resume_hint(kind_command, workdir)}")
    try:
        return kind.run(config, workdir, log)
    except Interrupted as e:
        log(f"dnas: {e}; resume with: {resume_hint(kind_command, workdir)}")
        if isinstance(e, InterruptedInCompile):
            # XLA's compile cannot be cancelled and would hold up the interpreter's exit
            # (or crash in it); the run has released its lock and has nothing to save.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return None
    finally:
        # A caller in the same process (a notebook, a test calling main()) gets the default
        # back: a later signal must not end *it* (once it killed a pytest worker).
        exit_on_signal_before_first_step(None)


def print_summary(summary: dict[str, Any], table: Callable[[dict[str, Any]], list[str]], json_only: bool = False) -> None:
    """A command's result: its short human ``table`` (unless ``json_only``), then the
    summary as one JSON line, always last (what scripts read)."""
    if not json_only:
        print("\n".join(table(summary)))
    print(json.dumps(summary), flush=True)


def version() -> str:
    try:
        return metadata.version("dnas")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def keys_epilog(kind: str, defaults: Callable[[], Any] | None = None) -> str:
    """The ``--help`` epilog: every config key with the default that runs without
    ``--config`` (``defaults``; the kind's schema defaults when None), and how to override.

    Why ``defaults``: ``dnas search --help`` showed the paper's defaults while a plain
    ``dnas search`` runs the digits defaults.
    """
    c = (defaults or RUN_KINDS[kind].defaults)()
    keys = ", ".join(f"{k}={c[k]!r}" if not hasattr(c[k], "to_dict") else f"{k}={json.dumps(c[k].to_dict())}" for k in c.keys())
    return (
        f"config keys, with the defaults 'dnas {RUN_KINDS[kind].command}' runs without --config (override with --config.KEY=VALUE; "
        f"a part's arguments with --config.PART_kwargs.NAME=VALUE, e.g. --config.space_kwargs.nodes=2; a group's entries with "
        f"--config.GROUP.NAME=VALUE): {keys}. See the resolved config with 'dnas config [PATH[:ARG]]', registered names with "
        "'dnas list all' and the experiment configs with 'dnas list experiments'."
    )


def add_run_arguments(sp: argparse.ArgumentParser) -> None:
    """The arguments ``search`` and ``train`` share."""
    sp.add_argument("--config", help="experiment config: PATH[:ARG] (e.g. experiments/darts/config.py:smoke)")
    sp.add_argument("--workdir", help="run directory; an existing run is resumed")
    sp.add_argument("--jax-cache", default=os.environ.get("DNAS_JAX_CACHE", "~/.cache/dnas/jax"), help="persistent compilation cache folder ('' disables)")
