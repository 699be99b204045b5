"""The ``dnas`` command.

Subcommands: ``info`` (size of a derived network), ``search``, ``train``, ``show``.
Every user error (:class:`dnas.errors.DnasError`) ends as one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dnas.errors import DnasError

DATASET_SHAPES = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet": ((224, 224, 3), 1000),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "digits": ((8, 8, 1), 10),
}


def cmd_info(args: argparse.Namespace) -> int:
    """Prints params (without the auxiliary head) and MACs of one image for a genotype."""
    from flax import nnx

    from dnas import genotype as G
    from dnas.cost import count_params, model_macs
    from dnas.nets import build_eval_network

    if args.dataset not in DATASET_SHAPES:
        raise DnasError(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASET_SHAPES)}")
    (h, w, c), classes = DATASET_SHAPES[args.dataset]
    geno = G.get(args.genotype)
    # eval_shape: build abstractly, no weights are materialised for counting.
    net = nnx.eval_shape(
        lambda: build_eval_network(geno, args.dataset, args.init_channels, args.layers, classes, auxiliary=False, in_channels=c, rngs=nnx.Rngs(0))
    )
    print(f"genotype: {geno}")
    print(f"input: 1x{h}x{w}x{c}, classes: {classes}, C={args.init_channels}, layers={args.layers}")
    print(f"params: {count_params(net) / 1e6:.6f} M")
    print(f"macs: {model_macs(net, (1, h, w, c)) / 1e6:.3f} M")
    return 0


def _enable_compilation_cache(path: str) -> None:
    """Persistent XLA compilation cache: a second run of a config skips XLA's compilation.

    On CPU the cached executable is still rebuilt single-threaded, in time that grows
    faster than the program: XLA finds each YNNPACK fusion's instruction by scanning the
    whole module (18-21 s for the paper's C=16, 8-cell search step, ~2/3 of it in that
    scan; :func:`dnas.state.step_compiler_options` keeps YNNPACK to reductions to shrink
    it; benchmarks/RESULTS.md), so the gain there is compile time minus that.
    """
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    rest, overrides = [], []
    for a in argv:
        (overrides if a.startswith("--config.") else rest).append(a)
    return rest, overrides


def _resolve(args: argparse.Namespace, kind: str, defaults) -> tuple[Path, object]:
    """Workdir and config for search/train: --config file, else a saved run, else defaults."""
    from dnas.config import apply_overrides, load_config, validate
    from dnas.parallel import maybe_initialize_distributed

    maybe_initialize_distributed()
    _enable_compilation_cache(args.jax_cache)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / time.strftime(f"{kind}-%Y%m%d-%H%M%S")
    if args.config:
        return workdir, load_config(args.config, args.overrides, kind=kind)
    if (workdir / "config.json").exists():
        if args.overrides:
            raise DnasError("overrides need --config; an existing run resumes with its saved config")
        return workdir, None
    return workdir, validate(apply_overrides(defaults(), args.overrides))


def cmd_search(args: argparse.Namespace) -> int:
    """Runs or resumes a search; prints the derived genotype."""
    from dnas.config import default_search_config
    from dnas.loop import Interrupted, run_search

    workdir, config = _resolve(args, "search", default_search_config)
    try:
        geno = run_search(config, workdir, log=lambda m: print(m, file=sys.stderr))
    except Interrupted as e:
        print(f"dnas: {e}", file=sys.stderr)
        return 130
    print(f"workdir: {workdir}")
    print(f"genotype: {geno}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a derived network from scratch and reports test accuracy."""
    from dnas.config import train_defaults
    from dnas.retrain import run_train

    workdir, config = _resolve(args, "train", train_defaults)
    if config is not None and args.genotype:
        with config.unlocked():
            config.genotype = args.genotype
    if config is not None:
        from dnas import genotype as G

        G.get(config.genotype)  # fail before any work on a bad genotype
    result = run_train(config, workdir, log=lambda m: print(m, file=sys.stderr))
    print(f"workdir: {workdir}")
    print(f"test_acc: {result['test_acc']:.4f}")
    print(f"test_loss: {result['test_loss']:.4f}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Prints a genotype (and a run's α table) and writes cell pictures and α plots."""
    from dnas.show import show

    for line in show(args.target, Path(args.out) if args.out else None):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnas", description="Neural architecture search in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameters and multiply-adds of a derived network")
    info.add_argument("--genotype", default="DARTS_V2", help="published name, genotype JSON file, or NB201 arch_str")
    info.add_argument("--dataset", default="cifar10", help=f"input shape and classes: {', '.join(DATASET_SHAPES)}")
    info.add_argument("--init-channels", type=int, default=36)
    info.add_argument("--layers", type=int, default=20, help="cells (DARTS) or cells per stage N (NB201)")
    info.set_defaults(fn=cmd_info)

    for name, fn, helptext in (("search", cmd_search, "run or resume an architecture search"), ("train", cmd_train, "train a derived network from scratch")):
        sp = sub.add_parser(name, help=helptext, description=f"{helptext}. Override config keys with --config.KEY=VALUE.")
        sp.add_argument("--config", help="experiment config: PATH[:ARG] (e.g. experiments/darts/config.py:smoke)")
        sp.add_argument("--workdir", help="run directory; an existing run is resumed")
        sp.add_argument("--jax-cache", default=os.environ.get("DNAS_JAX_CACHE", "~/.cache/dnas/jax"), help="persistent compilation cache folder ('' disables)")
        if name == "train":
            sp.add_argument("--genotype", help="published name or genotype JSON (overrides config.genotype)")
        sp.set_defaults(fn=fn)
    show = sub.add_parser("show", help="print a genotype / run, draw its cells and α over epochs")
    show.add_argument("target", help="a run directory, a genotype JSON file, a published name or an NB201 arch_str")
    show.add_argument("--out", help="folder for pictures (default: the run directory, or the current folder)")
    show.set_defaults(fn=cmd_show)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dnas`` command; returns the exit code."""
    import absl.logging

    # Orbax logs through absl; the CLI reports failures itself, as one line.
    absl.logging.set_verbosity(absl.logging.FATAL)
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    if overrides and args.command not in ("search", "train"):
        print(f"dnas: error: --config.* overrides apply to search and train, not {args.command}", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args) or 0)
    except DnasError as e:
        print(f"dnas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
