"""The ``dnas`` command.

Subcommands: ``search`` (every run kind a config can name: DARTS-family search, discrete
multi-trial search...), ``train``, ``show``, ``info``, ``list`` (registered ops,
relaxations, spaces, genotypes, hypergradients, run kinds), ``config`` (print the
resolved config), ``latency fit`` and ``lut build|check`` (:mod:`dnas.cli.latency`) and
``zero-cost`` (:mod:`dnas.cli.zero_cost`). Every user error (:class:`dnas.core.errors.DnasError`) ends as one line on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from dnas.core.errors import DnasError

if TYPE_CHECKING:  # the command imports its heavy modules lazily, for a fast --help
    import ml_collections

DATASET_SHAPES = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet": ((224, 224, 3), 1000),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "digits": ((8, 8, 1), 10),
    "synthetic": ((8, 8, 3), 10),
}


def cmd_info(args: argparse.Namespace) -> int:
    """Prints params (without the auxiliary head) and MACs of one image for a genotype."""
    from flax import nnx

    from dnas.space import genotype as G
    from dnas.hardware.counts import count_params, model_macs
    from dnas.space.nets import build_eval_network

    if args.dataset not in DATASET_SHAPES:
        raise DnasError(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASET_SHAPES)}")
    (h, w, c), classes = DATASET_SHAPES[args.dataset]
    geno = G.get(args.genotype)
    # eval_shape: build abstractly, no weights are materialised for counting.
    net = nnx.eval_shape(
        lambda: build_eval_network(geno, args.dataset, args.init_channels, args.layers, classes, auxiliary=False, in_channels=c, rngs=nnx.Rngs(0))
    )
    print(f"genotype: {geno}")
    print(f"network: {geno.space}, input: 1x{h}x{w}x{c}, classes: {classes}, C={args.init_channels}, layers={args.layers}")
    print(f"params: {count_params(net) / 1e6:.6f} M")
    print(f"macs: {model_macs(net, (1, h, w, c)) / 1e6:.3f} M")
    return 0


def _enable_compilation_cache(path: str) -> None:
    """Persistent XLA compilation cache: a second run of a config skips XLA's compilation.

    On CPU the cached executable is still rebuilt single-threaded, in time that grows
    faster than the program: XLA finds each YNNPACK fusion's instruction by scanning the
    whole module (18-21 s for the paper's C=16, 8-cell search step, ~2/3 of it in that
    scan; :func:`dnas.search.state.step_compiler_options` keeps YNNPACK to reductions to shrink
    it; benchmarks/RESULTS.md), so the gain there is compile time minus that.
    """
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
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


def _resume_hint(kind: str, workdir: Path) -> str:
    return f"dnas {kind} --workdir {shlex.quote(str(workdir))}"


def _resolve(args: argparse.Namespace, command: str, defaults) -> tuple[Path, object]:
    """Workdir and config: --config file, else a saved run, else defaults. Nothing is
    written here; the config is validated before the run directory exists."""
    from dnas.run.config import apply_overrides, load_config, validate
    from dnas.run.parallel import maybe_initialize_distributed

    maybe_initialize_distributed()
    _enable_compilation_cache(args.jax_cache)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")
    if args.config:
        return workdir, load_config(args.config, args.overrides, kind=command)
    if (workdir / "config.json").exists():
        if args.overrides:
            raise DnasError("overrides need --config; an existing run resumes with its saved config")
        return workdir, None
    return workdir, validate(apply_overrides(defaults(), args.overrides))


def _run(kind_command: str, workdir: Path, config) -> object | None:
    """Runs the config's kind (or resumes the saved run); an interrupt becomes one line
    saying how to resume, and None."""
    from dnas.run.config import RUN_KINDS, from_json
    from dnas.run.loop import Interrupted

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731

    if config is None:
        config = from_json((workdir / "config.json").read_text())
    kind = RUN_KINDS[config.get("kind", "search")]
    if kind.command != kind_command:
        raise DnasError(f"a config of kind {config.kind!r} runs with 'dnas {kind.command}', not 'dnas {kind_command}'")
    saved = workdir / "config.json"
    if saved.exists():  # refuse a different config before printing anything else
        from dnas.run.loop import prepare_workdir

        prepare_workdir(workdir, config)
    log(f"workdir: {workdir} (interrupt with Ctrl-C; resume with: {_resume_hint(kind_command, workdir)})")
    try:
        return kind.run(config, workdir, log)
    except Interrupted as e:
        log(f"dnas: {e}; resume with: {_resume_hint(kind_command, workdir)}")
        return None


def cmd_search(args: argparse.Namespace) -> int:
    """Runs or resumes a search (any run kind whose command is ``search``); prints the result."""
    from dnas.run.config import default_search_config

    workdir, config = _resolve(args, "search", default_search_config)
    result = _run("search", workdir, config)
    if result is None:
        return 130
    print(f"workdir: {workdir}")
    if hasattr(result, "kind"):  # a genotype
        print(f"genotype: {result}")
    else:  # a multi-trial summary
        import json

        print(f"summary: {json.dumps(result)}")
    return 0


def train_config_for(target: str, overrides: Sequence[str], log: Callable[[str], None] | None = None) -> ml_collections.ConfigDict:
    """The train config for ``dnas train --genotype TARGET`` without ``--config``: a run
    directory lends its dataset and data folder, and the network is sized for the images
    (the paper's C=36/20 cells for 32x32 and larger, C=16/8 cells or NB201's N=5 below).

    DARTS' auxiliary head is turned off, with the reason passed to ``log`` (stderr by
    default), when the images leave it a map under 2x2 and the overrides do not set
    ``auxiliary`` themselves (then validation refuses it in one line instead).
    """
    import json

    from dnas.space import genotype as G
    from dnas.run.config import apply_overrides, import_files, train_defaults, train_image_shape, validate

    c = train_defaults()
    c.genotype = target
    run = Path(target)
    if run.is_dir() and (run / "config.json").is_file():
        saved = json.loads((run / "config.json").read_text())
        c.dataset, c.data_dir = saved.get("dataset", c.dataset), saved.get("data_dir", "")
        c.imports = list(saved.get("imports", []))
        c.genotype = str(run.resolve())
    import_files(c.imports)  # a genotype kind registered by the run's experiment files
    geno = G.get(c.genotype)
    hw = DATASET_SHAPES.get(c.dataset, ((32, 32, 3), 10))[0][0]
    if geno.space == "nb201":
        c.init_channels, c.layers, c.auxiliary, c.drop_path_prob = 16, 5, False, 0.0
    if hw < 32:  # small images (digits, MNIST): a small network and few epochs
        c.init_channels, c.layers = (8, 2) if geno.space == "nb201" else (16, 8)
        c.epochs, c.batch_size, c.cutout = 20, 64, max(hw // 4, 0)
        c.log_every_steps, c.checkpoint_every_steps = 10, 200
    c = apply_overrides(c, overrides)
    user_set_auxiliary = any(o.split("=", 1)[0] == "--config.auxiliary" for o in overrides)
    shape = train_image_shape(c)
    if geno.space == "darts" and c.auxiliary is True and not user_set_auxiliary and shape is not None and int(c.layers) > 0:
        from dnas.space.nets.darts import aux_head_problem

        problem = aux_head_problem(shape[:2], int(c.layers), c.dataset)
        if problem:
            c.auxiliary = False
            (log or (lambda m: print(m, file=sys.stderr)))(f"train: auxiliary head off: {problem}")
    return validate(c)


def _init_from_sizes(run_dir: str | None) -> list[str]:
    """``--init-from RUN`` without ``--config``: the run's dataset and width/depth as leading
    overrides (the user's own overrides come after and win), so the network matches it."""
    import json

    path = Path(run_dir) / "config.json" if run_dir else None
    if path is None or not path.is_file():
        return []  # nothing to read: check_init_from says what is wrong
    saved = json.loads(path.read_text())
    return [f"--config.{k}={saved[k]}" for k in ("dataset", "data_dir", "init_channels", "layers") if k in saved]


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a derived network from scratch and reports test accuracy."""
    from dnas.run.config import train_defaults

    if args.genotype and not args.config and not (args.workdir and (Path(args.workdir) / "config.json").exists()):
        from dnas.run.parallel import maybe_initialize_distributed

        maybe_initialize_distributed()
        _enable_compilation_cache(args.jax_cache)
        workdir = Path(args.workdir) if args.workdir else Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
        config = train_config_for(args.genotype, _init_from_sizes(args.init_from) + list(args.overrides))
    else:
        workdir, config = _resolve(args, "train", train_defaults)
        if config is not None and args.genotype:
            from dnas.space import genotype as G

            G.get(args.genotype)  # fail before any work on a bad genotype
            with config.unlocked():
                config.genotype = str(Path(args.genotype).resolve()) if Path(args.genotype).exists() else args.genotype
    if args.init_from:
        from dnas.run.config import from_json
        from dnas.estimate.inherit import check_init_from

        run = str(Path(args.init_from).resolve())
        if config is None:  # resuming: the saved config decides; refuse a different source
            saved = from_json((workdir / "config.json").read_text()).init_from
            if saved != run:
                raise DnasError(f"{workdir} was started with init_from={saved!r}; resume it without --init-from (or with the same run)")
        else:
            with config.unlocked():
                config.init_from = run
            check_init_from(run, config)
    result = _run("train", workdir, config)
    if result is None:
        return 130
    print(f"workdir: {workdir}")
    print(f"test_acc: {result['test_acc']:.4f}")
    print(f"test_loss: {result['test_loss']:.4f}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Prints a genotype (and a run's α table) and writes cell pictures and plots."""
    from dnas.report.show import show

    for line in show(args.target, Path(args.out) if args.out else None, table=args.table):
        print(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Lists what is registered (after importing ``--import`` files)."""
    for item in registries(args.what, args.imports):
        print(item)
    return 0


def registries(what: str, imports: Sequence[str] = ()) -> list[str]:
    """Lines describing the registered ``what`` (ops, relaxations, spaces, genotypes,
    hypergradients, kinds, or all)."""
    from dnas.space import genotype as G
    from dnas.search.bilevel import HYPERGRADIENTS
    from dnas.run.config import RUN_KINDS, import_files
    from dnas.space.ops import OPS
    from dnas.space.relax import RELAXATIONS
    from dnas.space.base import SPACES

    import_files(imports)
    tables = {
        "ops": [f"{n}{'  (parametric)' if OPS[n].parametric else ''}" for n in OPS],
        "relaxations": [f"{n}  {(RELAXATIONS[n].__doc__ or '').strip().splitlines()[0]}" for n in RELAXATIONS],
        "spaces": [f"{n}  ({SPACES[n].__name__})" for n in SPACES],
        "genotypes": [f"{n}  (published)" for n in G.published_names()] + [f"kind {k}  ({G.GENOTYPES[k].__name__})" for k in G.GENOTYPES],
        "hypergradients": list(HYPERGRADIENTS),
        "kinds": [f"{k}  (dnas {RUN_KINDS[k].command})" for k in RUN_KINDS],
    }
    if what == "all":
        return [f"{k}:" if i == 0 else f"  {line}" for k, lines in tables.items() for i, line in enumerate([""] + lines)]
    if what not in tables:
        raise DnasError(f"dnas list takes one of {', '.join(tables)} or all, got {what!r}")
    return tables[what]


def cmd_config(args: argparse.Namespace) -> int:
    """Prints the resolved, validated config (a file with overrides, the defaults of a
    kind, or a run directory's saved config) as JSON."""
    from dnas.run.config import apply_overrides, default_search_config, from_json, load_config, to_json, train_defaults, validate

    if args.target and Path(args.target).is_dir():
        saved = Path(args.target) / "config.json"
        if not saved.is_file():
            raise DnasError(f"{args.target!r} holds no config.json; is it a dnas run directory?")
        config = from_json(saved.read_text())
    elif args.target:
        config = load_config(args.target, args.overrides, kind=args.kind)
    else:
        defaults = default_search_config if args.kind == "search" else train_defaults
        config = validate(apply_overrides(defaults(), args.overrides))
    print(to_json(config))
    return 0


def _version() -> str:
    try:
        return metadata.version("dnas")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _keys_epilog(kind: str) -> str:
    from dnas.run.config import RUN_KINDS

    c = RUN_KINDS[kind].defaults()
    keys = ", ".join(f"{k}={c[k]!r}" if not hasattr(c[k], "to_dict") else f"{k}={{}}" for k in c.keys())
    return (
        f"config keys ({kind}, override with --config.KEY=VALUE; kwargs with --config.GROUP.NAME=VALUE): {keys}. "
        "See the resolved config with 'dnas config [PATH[:ARG]]' and registered names with 'dnas list all'."
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dnas`` command."""
    p = argparse.ArgumentParser(prog="dnas", description="Neural architecture search in JAX/Flax.")
    p.add_argument("--version", action="version", version=f"dnas {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameters and multiply-adds of a derived network")
    info.add_argument("--genotype", default="DARTS_V2", help="published name, genotype JSON file, run directory or NB201 arch_str")
    info.add_argument("--dataset", default="cifar10", help=f"input shape and classes: {', '.join(DATASET_SHAPES)}")
    info.add_argument("--init-channels", type=int, default=36)
    info.add_argument("--layers", type=int, default=20, help="cells (DARTS) or cells per stage N (NB201)")
    info.set_defaults(fn=cmd_info)

    for name, fn, helptext in (("search", cmd_search, "run or resume an architecture search"), ("train", cmd_train, "train a derived network from scratch")):
        sp = sub.add_parser(
            name, help=helptext, description=f"{helptext}. Override config keys with --config.KEY=VALUE.", epilog=_keys_epilog(name)
        )
        sp.add_argument("--config", help="experiment config: PATH[:ARG] (e.g. experiments/darts/config.py:smoke)")
        sp.add_argument("--workdir", help="run directory; an existing run is resumed")
        sp.add_argument("--jax-cache", default=os.environ.get("DNAS_JAX_CACHE", "~/.cache/dnas/jax"), help="persistent compilation cache folder ('' disables)")
        if name == "train":
            sp.add_argument("--genotype", help="published name, genotype JSON, a search's run directory, or an NB201 arch_str")
            sp.add_argument("--init-from", help="a search run directory: start from its supernet's weights for the genotype (dnas.estimate.inherit)")
        sp.set_defaults(fn=fn)
    show = sub.add_parser("show", help="print a genotype / run, draw its cells, plot α and the training curves")
    show.add_argument("target", help="a run directory, a genotype JSON file, a published name or an NB201 arch_str")
    show.add_argument("--out", help="folder for pictures (default: the run directory, or show-<name> in the current folder)")
    show.add_argument("--table", default=os.environ.get("DNAS_NB201_TABLE", ""), help="NAS-Bench-201 table CSV: print an NB201 cell's benchmark accuracy")
    show.set_defaults(fn=cmd_show)
    ls = sub.add_parser("list", help="list registered ops, relaxations, spaces, genotypes, hypergradients, run kinds")
    ls.add_argument("what", nargs="?", default="all", help="ops | relaxations | spaces | genotypes | hypergradients | kinds | all")
    ls.add_argument("--import", dest="imports", action="append", default=[], help="a Python file to import first (its registrations)")
    ls.set_defaults(fn=cmd_list)
    cfg = sub.add_parser("config", help="print the resolved config as JSON (a file with overrides, defaults, or a run's)")
    cfg.add_argument("target", nargs="?", help="PATH[:ARG] or a run directory (default: the default search)")
    cfg.add_argument("--kind", default="search", help="defaults of this kind when no target is given: search | train")
    cfg.set_defaults(fn=cmd_config)
    from dnas.cli.latency import add_latency_parser, add_lut_parser
    from dnas.cli.eval import add_eval_parser
    from dnas.cli.zero_cost import add_zero_cost_parser

    add_eval_parser(sub)
    add_latency_parser(sub)
    add_lut_parser(sub)
    add_zero_cost_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dnas`` command; returns the exit code."""
    import absl.logging

    # Orbax logs through absl; the CLI reports failures itself, as one line.
    absl.logging.set_verbosity(absl.logging.FATAL)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = _split_overrides(argv)
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
        print("dnas: interrupted before the run started (a run directory, if written, resumes with the same command)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
