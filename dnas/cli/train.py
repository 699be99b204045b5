"""``dnas train``: train a derived network from scratch (sized for the data when no config is given)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections

from dnas.cli.common import add_run_arguments, enable_compilation_cache, keys_epilog, resolve, run_kind
from dnas.core.errors import DnasError
from dnas.core.imports import import_files
from dnas.data.datasets import DATASET_SHAPES
from dnas.estimate.inherit import check_init_from
from dnas.core.io import read_json
from dnas.run.config import apply_overrides, read_config, validate
from dnas.run.parallel import maybe_initialize_distributed
from dnas.run.train import train_defaults, train_image_shape
from dnas.space.nets.darts import aux_head_problem
from dnas.space import genotype as G


def train_config_for(target: str, overrides: Sequence[str], log: Callable[[str], None] | None = None) -> ml_collections.ConfigDict:
    """The train config for ``dnas train --genotype TARGET`` without ``--config``: a run
    directory lends its dataset and data folder, and the network is sized for the images
    (the paper's C=36/20 cells for 32x32 and larger, C=16/8 cells or NB201's N=5 below).

    DARTS' auxiliary head is turned off, with the reason passed to ``log`` (stderr by
    default), when the images leave it a map under 2x2 and the overrides do not set
    ``auxiliary`` themselves (then validation refuses it in one line instead).
    """
    c = train_defaults()
    c.genotype = target
    run = Path(target)
    if run.is_dir() and (run / "config.json").is_file():
        saved = read_json(run / "config.json", "saved config")
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
        problem = aux_head_problem(shape[:2], int(c.layers), c.dataset)
        if problem:
            c.auxiliary = False
            (log or (lambda m: print(m, file=sys.stderr)))(f"train: auxiliary head off: {problem}")
    return validate(c)


def _init_from_sizes(run_dir: str | None) -> list[str]:
    """``--init-from RUN`` without ``--config``: the run's dataset and width/depth as leading
    overrides (the user's own overrides come after and win), so the network matches it."""
    path = Path(run_dir) / "config.json" if run_dir else None
    if path is None or not path.is_file():
        return []  # nothing to read: check_init_from says what is wrong
    saved = read_json(path, "saved config")
    return [f"--config.{k}={saved[k]}" for k in ("dataset", "data_dir", "init_channels", "layers") if k in saved]


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a derived network from scratch and reports test accuracy."""
    if args.genotype and not args.config and not (args.workdir and (Path(args.workdir) / "config.json").exists()):
        maybe_initialize_distributed()
        enable_compilation_cache(args.jax_cache)
        workdir = Path(args.workdir) if args.workdir else Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
        config = train_config_for(args.genotype, _init_from_sizes(args.init_from) + list(args.overrides))
    else:
        workdir, config = resolve(args, "train", train_defaults)
        if config is not None and args.genotype:
            G.get(args.genotype)  # fail before any work on a bad genotype
            with config.unlocked():
                config.genotype = str(Path(args.genotype).resolve()) if Path(args.genotype).exists() else args.genotype
    if args.init_from:
        run = str(Path(args.init_from).resolve())
        if config is None:  # resuming: the saved config decides; refuse a different source
            saved = read_config(workdir / "config.json").init_from
            if saved != run:
                raise DnasError(f"{workdir} was started with init_from={saved!r}; resume it without --init-from (or with the same run)")
        else:
            with config.unlocked():
                config.init_from = run
            check_init_from(run, config)
    result = run_kind("train", workdir, config)
    if result is None:
        return 130
    print(f"workdir: {workdir}")
    print(f"test_acc: {result['test_acc']:.4f}")
    print(f"test_loss: {result['test_loss']:.4f}")
    return 0



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``train`` to the ``dnas`` command's subparsers."""
    helptext = "train a derived network from scratch"
    sp = sub.add_parser("train", help=helptext, description=f"{helptext}. Override config keys with --config.KEY=VALUE.", epilog=keys_epilog("train"))
    add_run_arguments(sp)
    sp.add_argument("--genotype", help="published name, genotype JSON, a search's run directory, or an NB201 arch_str")
    sp.add_argument("--init-from", help="a search run directory: start from its supernet's weights for the genotype (dnas.estimate.inherit)")
    sp.set_defaults(fn=cmd_train)
