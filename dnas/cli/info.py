"""``dnas info``: parameters and multiply-adds of a derived network, from the traced program."""

from __future__ import annotations

import argparse

from flax import nnx

from dnas.core.errors import DnasError
from dnas.data.datasets import DATASET_SHAPES
from dnas.hardware.counts import count_params, model_macs
from dnas.space import genotype as G
from dnas.space.nets import build_eval_network


def cmd_info(args: argparse.Namespace) -> int:
    """Prints params (without the auxiliary head) and MACs of one image for a genotype."""

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



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``info`` to the ``dnas`` command's subparsers."""
    info = sub.add_parser("info", help="parameters and multiply-adds of a derived network")
    info.add_argument("--genotype", default="DARTS_V2", help="published name, genotype JSON file, run directory or NB201 arch_str")
    info.add_argument("--dataset", default="cifar10", help=f"input shape and classes: {', '.join(DATASET_SHAPES)}")
    info.add_argument("--init-channels", type=int, default=36)
    info.add_argument("--layers", type=int, default=20, help="cells (DARTS) or cells per stage N (NB201)")
    info.set_defaults(fn=cmd_info)
