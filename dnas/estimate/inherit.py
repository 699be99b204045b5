"""Inherited weights: a derived network initialised from a trained supernet.

Once-for-All (Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020) extracts a subnet from the trained supernet and fine-tunes it
instead of training it from scratch; SPOS (Guo et al., ECCV 2020) scores subnets with the
same shared weights. Here the derived network of a genotype (``space.network(genotype)``,
what ``dnas train`` trains) receives, for every chosen op, the weights and BatchNorm
statistics of that op in the supernet's :class:`~dnas.space.mixed.MixedOp`, and the supernet's
skeleton (stem, reduction blocks, preprocessing, classifier) as it is.

How the two store parameters (flat ``nnx`` paths):

- a supernet edge holds one module per candidate, ``.../ops/<candidate index>/...``; in
  the DARTS cell's ``scan``/``batch`` layouts (:class:`~dnas.space.mixed.EdgeScan`,
  :class:`~dnas.space.mixed.EdgeBatch`) several edges share one stacked MixedOp, every leaf with
  a leading edge axis, so an edge's op is ``leaf[e]``;
- the derived network holds only the chosen op per edge (``.../ops/<edge>/...``), built
  by the same op builder, so below that prefix both paths agree;
- search ops use affine-free BatchNorm (DARTS, NB201); the derived ops' BN has a scale and
  shift, which get 1 and 0 so the copy computes the same function.

What equals what (tested, ``tests/test_inherit.py``): the derived network with inherited
weights gives the supernet's logits in index mode (``net(x, {label: int})``) in eval mode
(same running statistics) and in train mode (batch statistics, and the same updated
running statistics), for NB201 (micro and macro), ProxylessNAS (zero blocks dropped) and
FBNet. DARTS, exactly when the genotype has no pooling op: the DARTS search network adds
an affine-free BatchNorm after every pool (``pool_bn``, as the paper's ``MixedOp``), the
evaluation network has none, so a pool edge's output is normalised in one and not in the
other; that BN has no counterpart to copy into and is dropped (a pool has no weights
either way). The derived DARTS network's auxiliary head has no counterpart and keeps its
initialisation; its drop-path (``drop_prob`` with a ``key``) is a retraining regulariser the
supernet does not have, so the comparison holds without it. Not inheritable (one :class:`~dnas.core.errors.DnasError` line): PC-DARTS'
``partial_channels > 1`` (the supernet's ops are ``C/K`` wide, the derived ops ``C``), the
ImageNet DARTS network (a different stem), and any shape that differs (another width,
depth or class count than the search run's).

Library use::

    net = space.network(genotype, C=16, layers=5, num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
    inherit(space, (weights, stats), genotype, net)   # or inherit(space, supernet, ...)

A new space registers its mapping with :func:`register_inherit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.estimate.supernet import read_run_config
from dnas.space import genotype as G
from dnas.space.base import SearchSpace
from dnas.space.genotype import NB201Genotype, NB201MacroGenotype
from dnas.space.nets.darts import DartsCIFARNetwork
from dnas.space.ops import OPS
from dnas.space.spaces.fbnet import FBNetNet
from dnas.space.spaces.nb201 import EDGES, NB201InferCell, NB201Network
from dnas.space.spaces.proxylessnas import ZERO, ProxylessNet

Path_ = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a derived module's parameters live in the supernet.

    Attributes:
      path: the supernet module's flat path prefix, or None: the derived module has no
        counterpart and keeps its initialisation (DARTS' auxiliary head).
      index: position on a stacked leading edge axis (:class:`~dnas.space.mixed.EdgeScan`,
        :class:`~dnas.space.mixed.EdgeBatch`), or None for unstacked leaves.
    """

    path: Path_ | None
    index: int | None = None


InheritMap = Callable[[SearchSpace, Any, nnx.Module], dict[Path_, Source]]
"""``(space, genotype, derived) -> {derived path prefix: Source}``; derived leaves under no
listed prefix are read at the same path in the supernet (the shared skeleton)."""

INHERIT: Registry[InheritMap] = Registry("weight-inheritance map")
"""Per space name, the map from derived-network modules to supernet modules."""


def register_inherit(space_name: str) -> Callable[[InheritMap], InheritMap]:
    """Decorator registering the :data:`InheritMap` of the space ``space_name``."""
    return INHERIT.decorator(space_name, lambda fn: fn)


def _value(v: Any) -> Any:
    """The array of an ``nnx.Variable`` (or the array itself, for states of raw values)."""
    if isinstance(v, nnx.Variable):
        return v.get_value()
    return getattr(v, "value", v)


def _flat(supernet: nnx.Module | nnx.State | Sequence[nnx.State]) -> dict[Path_, Any]:
    """Every Param and BatchStat of a supernet (module, one state or several) by flat path."""
    if isinstance(supernet, nnx.Module):
        supernet = nnx.state(supernet, (nnx.Param, nnx.BatchStat))
    states = [supernet] if isinstance(supernet, (nnx.State, Mapping)) else list(supernet)
    out: dict[Path_, Any] = {}
    for st in states:
        for path, v in nnx.to_flat_state(st if isinstance(st, nnx.State) else nnx.State(st)):
            out[tuple(path)] = _value(v)
    return out


def _name(path: Path_) -> str:
    return "/".join(map(str, path))


def inherited_state(
    space: SearchSpace, supernet: nnx.Module | nnx.State | Sequence[nnx.State], genotype: Any, derived: nnx.Module
) -> nnx.State:
    """The derived network's parameters and BatchNorm statistics copied from a supernet.

    Pure: neither network changes. See the module docstring for which outputs then match.

    Args:
      space: the supernet's search space (its registered name picks the map).
      supernet: the trained supernet, or its state: one ``nnx.State`` or a sequence such as
        ``(weights, stats)`` of a search checkpoint (α, if present, is ignored).
      genotype: the architecture ``derived`` was built from (a genotype of ``space``).
      derived: ``space.network(genotype, ...)`` at the supernet's width and depth.

    Returns:
      an ``nnx.State`` of the derived network's ``nnx.Param`` and ``nnx.BatchStat`` leaves
      (same structure and dtypes as ``nnx.state(derived, (nnx.Param, nnx.BatchStat))``).

    Raises:
      DnasError: no map for the space, a part not inheritable, or a shape that differs
        (one line naming both paths and the fix).
    """
    name = getattr(space, "space_name", type(space).__name__)
    if name not in INHERIT:
        raise DnasError(f"no weight inheritance for space {name!r}; register one with dnas.estimate.inherit.register_inherit (known: {', '.join(INHERIT.names())})")
    prefixes = INHERIT[name](space, genotype, derived)
    lengths = sorted({len(p) for p in prefixes}, reverse=True)
    src = _flat(supernet)
    out = []
    for path, var in nnx.to_flat_state(nnx.state(derived, (nnx.Param, nnx.BatchStat))):
        path = tuple(path)
        like = _value(var)
        prefix = next((path[:n] for n in lengths if path[:n] in prefixes), ())
        source = prefixes.get(prefix, Source(()))
        if source.path is None:  # no counterpart (auxiliary head): keep the initialisation
            out.append((path, var))
            continue
        sp = source.path + path[len(prefix) :]
        if sp in src:
            v = src[sp]
            if source.index is not None:
                v = v[source.index]
            if tuple(np.shape(v)) != tuple(np.shape(like)):
                raise DnasError(
                    f"cannot inherit {_name(path)}: shape {tuple(np.shape(like))} in the derived network, {tuple(np.shape(v))} at "
                    f"{_name(sp)} in the supernet; build the network at the search run's width and depth (config.init_channels, "
                    "config.layers) and class count"
                )
            out.append((path, var.replace(jnp.asarray(v, like.dtype))))
        elif path[-1] in ("scale", "bias") and sp[:-1] + ("mean",) in src:
            # The search op's BatchNorm is affine-free (DARTS, NB201): scale 1 and shift 0
            # make the derived BN compute exactly what the supernet's does.
            out.append((path, var.replace(jnp.ones_like(like) if path[-1] == "scale" else jnp.zeros_like(like))))
        else:
            raise DnasError(
                f"cannot inherit {_name(path)}: the supernet has no {_name(sp)}; the derived network must be the {name!r} network "
                "of this space at the search run's depth (config.layers)"
            )
    return nnx.from_flat_state(out)


def inherit(
    space: SearchSpace, supernet: nnx.Module | nnx.State | Sequence[nnx.State], genotype: Any, derived: nnx.Module
) -> nnx.Module:
    """Copies a supernet's weights into the derived network of ``genotype`` (``nnx.update``).

    Once-for-All's subnet extraction (Cai et al., ICLR 2020): retraining starts from the
    shared weights. Arguments as :func:`inherited_state`; returns ``derived`` (updated).

    Example::

        net = NB201Space.network(geno, C=16, layers=5, num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
        inherit(space, supernet, geno, net)
        net.eval(); supernet.eval()
        net(x).logits  # == supernet(x, {label: index of geno}).logits
    """
    nnx.update(derived, inherited_state(space, supernet, genotype, derived))
    return derived


def _candidate(space: SearchSpace, label: str, op: str) -> int:
    cands = space.choice(label).candidates
    if op not in cands:
        raise DnasError(f"cannot inherit: op {op!r} of {label!r} is not a candidate of the search space ({', '.join(map(str, cands))})")
    return cands.index(op)


def _op_path(space: SearchSpace, label: str, op: str, pool_bn: bool) -> Path_:
    """``ops/<index>`` inside a MixedOp, ``/op`` deeper where the search wrapped the op in
    an extra affine-free BN (``pool_bn`` and the op declares ``search_bn``)."""
    wrap = ("op",) if pool_bn and OPS[op].search_bn else ()
    return ("ops", _candidate(space, label, op)) + wrap


def _no_partial(space: Any) -> None:
    if getattr(space, "partial_channels", 1) != 1:
        raise DnasError(
            f"cannot inherit from a partial-channel supernet (partial_channels={space.partial_channels}): its ops are C/K wide, "
            "the derived network's C wide; search with partial_channels=1 to inherit weights"
        )


@register_inherit("nb201")
def _nb201(space: Any, genotype: Any, derived: nnx.Module) -> dict[Path_, Source]:
    """NB201: derived ``layers/<p>/ops/<e>`` (genotype order) <- supernet
    ``layers/<p>/edges/<EDGES index>/ops/<op>`` (no BN after pools in NB201)."""
    _no_partial(space)
    if not isinstance(derived, NB201Network):
        raise DnasError(f"cannot inherit NB201 supernet weights into a {type(derived).__name__}; build NB201Space.network(genotype)")
    if len(derived.layers) != 3 * space.N + 2:
        raise DnasError(f"cannot inherit: the derived network has {(len(derived.layers) - 2) // 3} cells per stage, the supernet "
                        f"{space.N}; set config.layers={space.N}")
    out: dict[Path_, Source] = {}
    k = 0
    for p, layer in enumerate(derived.layers):
        if not isinstance(layer, NB201InferCell):
            continue
        prefix = space.prefixes()[0 if space.shared else k]
        cell = genotype.cells[k] if isinstance(genotype, NB201MacroGenotype) else genotype
        if not isinstance(cell, NB201Genotype):
            raise DnasError(f"cannot inherit NB201 weights for a {type(genotype).__name__}; pass an NB201 genotype")
        e, seen = 0, set()
        for j, node in enumerate(cell.nodes, start=1):
            for op, i in node:
                if (j, i) in seen or (j, i) not in EDGES:
                    raise DnasError(f"cannot inherit: NB201 cell {k} has no single supernet edge {i} -> {j}")
                seen.add((j, i))
                label = f"{prefix}/edge_{j}_{i}"
                out[("layers", p, "ops", e)] = Source(("layers", p, "edges", EDGES.index((j, i))) + _op_path(space, label, op, False))
                e += 1
        k += 1
    return out


@register_inherit("darts")
def _darts(space: Any, genotype: Any, derived: nnx.Module) -> dict[Path_, Source]:
    """DARTS: derived ``cells/<c>/ops/<e>`` <- the supernet edge (node, input) of that cell in
    its layout (``unrolled``: ``edges/<k>``; ``scan``: ``groups/<g>/op`` at stacked index;
    ``batch``: ``groups/<input>/op`` at the node's index); the auxiliary head keeps its init."""
    _no_partial(space)
    if not isinstance(derived, DartsCIFARNetwork):
        raise DnasError(
            f"cannot inherit DARTS search weights into a {type(derived).__name__}: only the CIFAR network shares the search "
            "network's stem (train with a dataset other than imagenet)"
        )
    if len(derived.cells) != space.layers:
        raise DnasError(f"cannot inherit: the derived network has {len(derived.cells)} cells, the search network {space.layers}; "
                        f"set config.layers={space.layers}")
    steps = space.steps
    order = [(n, i) for n in range(2, steps + 2) for i in range(n)]  # DartsSearchCell's edge order
    out: dict[Path_, Source] = {("aux",): Source(None)}
    for c in range(space.layers):
        reduction = c in space.reductions
        cell = genotype.cell(c, reduction)
        if tuple(cell.concat) != tuple(range(2, steps + 2)):
            raise DnasError(f"cannot inherit: cell {c} concatenates states {cell.concat}; the search network concatenates every node")
        if cell.steps != steps:
            raise DnasError(f"cannot inherit: cell {c} of the genotype has {cell.steps} nodes, the search network's {steps}")
        prefix, seen = space.cell_prefix(c), set()
        for e, (op, i) in enumerate(cell.edges):
            n = 2 + e // cell.per_node
            label = f"{prefix}/edge_{n}_{i}"
            if label in seen:  # two ops on one (node, input) pair: the supernet has one edge there
                raise DnasError(f"cannot inherit: cell {c} has two ops from state {i} into node {n}; the search network has one edge there")
            seen.add(label)
            inner = _op_path(space, label, op, True)
            if space.cell_impl == "unrolled":
                src = Source(("cells", c, "edges", order.index((n, i))) + inner)
            elif space.cell_impl == "batch":
                dsts = list(range(max(2, i + 1), steps + 2))
                src = Source(("cells", c, "groups", i, "op") + inner, dsts.index(n))
            elif not reduction:
                src = Source(("cells", c, "groups", 0, "op") + inner, order.index((n, i)))
            else:  # scans: edges from the inputs (i < 2), then the edges between nodes
                group = [ni for ni in order if (ni[1] < 2) == (i < 2)]
                src = Source(("cells", c, "groups", 0 if i < 2 else 1, "op") + inner, group.index((n, i)))
            out[("cells", c, "ops", e)] = src
    return out


@register_inherit("proxylessnas")
def _proxylessnas(space: Any, genotype: Any, derived: nnx.Module) -> dict[Path_, Source]:
    """ProxylessNAS: derived ``blocks/<d>/op`` (zero blocks dropped, so ``d`` counts the
    kept ones after the fixed first block) <- supernet ``blocks/<j+1>/op/ops/<op>``."""
    if not isinstance(derived, ProxylessNet):
        raise DnasError(f"cannot inherit ProxylessNAS weights into a {type(derived).__name__}")
    geo = {k: getattr(genotype, k) for k in space.geometry}
    if geo != {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in space.geometry.items()}:
        raise DnasError("cannot inherit: the genotype's geometry (widths, blocks, strides) differs from the search space's")
    out: dict[Path_, Source] = {}
    d = 1
    for j, (label, op) in enumerate(zip(space.labels, genotype.ops)):
        if op == ZERO:
            continue  # the supernet's zero op plus the shortcut is the identity: the block is dropped
        out[("blocks", d, "op")] = Source(("blocks", j + 1, "op") + _op_path(space, label, op, False))
        d += 1
    return out


@register_inherit("fbnet")
def _fbnet(space: Any, genotype: Any, derived: nnx.Module) -> dict[Path_, Source]:
    """FBNet: derived ``layers/<i>`` <- supernet ``layers/<i>/ops/<op>`` (all 22 layers kept)."""
    if not isinstance(derived, FBNetNet):
        raise DnasError(f"cannot inherit FBNet weights into a {type(derived).__name__}")
    if genotype.setting != space.setting:
        raise DnasError(f"cannot inherit: the genotype's setting is {genotype.setting!r}, the search space's {space.setting!r}")
    return {("layers", i): Source(("layers", i) + _op_path(space, label, op, False)) for i, (label, op) in enumerate(zip(space.labels, genotype.ops))}


# ----- a search run as the source (dnas train --init-from) ---------------------------------


def check_init_from(run_dir: str | Path, train_config: Any) -> None:
    """Validates ``config.init_from`` without writing anything: the run directory holds a
    search config and a checkpoint, of the genotype's space, width, depth and dataset.

    Raises:
      DnasError: one line naming the fix.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise DnasError(f"config.init_from: {str(run)!r} holds no config.json; pass the directory of a dnas search run")
    search = read_run_config(run)
    if search.get("kind", "search") != "search":
        raise DnasError(f"config.init_from: {str(run)!r} is a {search['kind']!r} run; pass the directory of a dnas search run")
    ck = run / "checkpoints"
    if not ck.is_dir() or not any(p.is_dir() and p.name.isdigit() for p in ck.iterdir()):
        raise DnasError(f"config.init_from: {str(run)!r} has no checkpoint yet; run the search (dnas search --workdir {run}) first")
    geno = G.get(train_config.genotype)
    if geno.space != search.get("space"):
        raise DnasError(f"config.init_from: the run searched the {search.get('space')!r} space, the genotype is of {geno.space!r}; pass a run of its space")
    for key in ("init_channels", "layers", "dataset"):
        if search.get(key) != train_config[key]:
            raise DnasError(
                f"config.init_from: the search ran with {key}={search.get(key)!r}, this training with {train_config[key]!r}; "
                f"set --config.{key}={search.get(key)} to inherit its weights"
            )
