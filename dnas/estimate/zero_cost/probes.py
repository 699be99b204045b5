"""Probes: what the zero-cost proxies read inside a network, attached by module surgery.

Two proxies need more than the loss and the kernels:

- Fisher (zero-cost-nas ``fisher.py``) needs, per sample and channel, ``sum_hw act *
  dL/dact`` at the output of every convolution and linear layer: a :class:`Gate` of ones
  multiplies each such output, and its gradient is exactly that sum;
- NASWOT (nas-without-training, ``counting_forward_hook``) needs the binary codes
  ``[x > 0]`` of the *input* of every ReLU (``ReLU6`` included: Mellor et al. hook every
  module whose type name contains ``ReLU``): a :class:`Codes` variable accumulates their
  kernel ``c c^T + (1-c)(1-c)^T``.

dnas' ops call ``jax.nn.relu``/``relu6`` as functions, so there is no ReLU module to hook.
Instead every ReLU is located *next to a module* whose input or output has the ReLU's
codes (``[relu(x) > 0] = [x > 0]``, the same for ReLU6): the convolution that reads
``relu(x)`` (``"in"``), or the BatchNorm whose output the ReLU reads (``"out"``).
:data:`RELU_SITES` lists those places per op class; :func:`attach_probes` wraps the
modules there, and every ``Conv2d``/``nnx.Linear``, in a :class:`Probe`. Both kinds of
state are ``nnx.Variable`` leaves, so they pass through ``nnx.switch`` (index-mode mixed
ops) and ``lax.scan`` (:class:`~dnas.space.mixed.EdgeScan`, with a leading edge axis like
its weights) as BatchNorm statistics do. ``dnas.space`` itself is untouched: the surgery
is done on the scorer's own copy of the network.

What the surgery also changes, so that the supernet in index mode computes the derived
network's function (the network a benchmark trains, whose accuracy the proxies predict):

- DARTS' search-only BatchNorm after pools (:class:`~dnas.space.mixed._WithBN`,
  ``pool_bn``) is removed: the evaluation network has none;
- :class:`~dnas.space.ops.darts.DilConv` (and so ``SepConv``) passes its two kernels to one
  fused function and never calls its convolutions; it is replaced by
  :class:`ProbedDilConv`, the same function with the two convolutions called as modules.

An op class in neither :data:`RELU_SITES` nor :data:`RELU_FREE` could hide a ReLU or a
convolution from the probes; :func:`uncovered` names such classes and the scorer refuses
the proxies that need probes (:data:`NEEDS_PROBES`) rather than scoring them wrongly.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.space.mixed import EdgeBatch, EdgeScan, MixedOp, _WithBN
from dnas.space.ops.blocks import DepthwiseSeparable, InvertedResidual, _Projection
from dnas.space.ops.darts import Conv7x1_1x7, DilConv, FactorizedReduce, Identity, Pool, ReLUConvBN, SepConv, Zero
from dnas.space.ops.layers import BatchNorm, Conv2d
from dnas.space.spaces.darts_cnn import DartsSearchCell, DartsSearchNetwork
from dnas.space.spaces.fbnet import FBNetBlock, FBNetNet, FBNetSkip
from dnas.space.spaces.nb201 import NB201SearchCell, NB201SearchNetwork, ResNetBasicBlock
from dnas.space.spaces.proxylessnas import ConvBNReLU6, MBBlock, ProxylessNet, _Head

NEEDS_PROBES = frozenset({"fisher", "naswot", "hook_logdet"})
"""The proxies that read probes (the others need only the loss and the kernels)."""

class Gate(nnx.Variable):
    """Per-sample, per-channel ones multiplying a layer's output, ``f32[..., B, C]`` (Fisher);
    leading axes stack layers (the edges of an :class:`~dnas.space.mixed.EdgeScan`)."""

class Codes(nnx.Variable):
    """NASWOT's accumulated ReLU-code kernel of one probe, ``f32[..., B, B]``."""

def code_kernel(pre: jax.Array) -> jax.Array:
    """``c c^T + (1-c)(1-c)^T`` for ``c = [pre > 0]`` flattened per sample: ``f32[B, B]``.

    Computed as ``2 c c^T - r 1^T - 1 r^T + D`` (``r`` the row sums, ``D`` the code
    length): one matrix product instead of two, exact in float32 below 2^24.
    """
    c = (pre > 0).reshape(pre.shape[0], -1).astype(jnp.float32)
    r = jnp.sum(c, axis=1)
    return 2.0 * (c @ c.T) - r[:, None] - r[None, :] + c.shape[1]


class Probe(nnx.Module):
    """Wraps a layer: optionally records the ReLU codes of its input (``relu_in``) or of
    its output (``relu_out``), and gates its output per sample and channel (``gate``).

    Args:
      inner: the wrapped module.
      lead: the leading (stacked-layer) axes of ``inner``'s variables, ``()`` if unstacked.
      batch: the batch size the network will see.
      channels: the output channels (the gate's width).
      gate: add a Fisher gate.
      relu_in, relu_out: record the codes of the input / output.
    """
    def __init__(
        self, inner: nnx.Module, lead: tuple[int, ...], batch: int, channels: int, *, gate: bool, relu_in: bool = False, relu_out: bool = False
    ):
        self.inner, self.relu_in, self.relu_out = inner, relu_in, relu_out
        self.gate = Gate(jnp.ones(lead + (batch, channels), jnp.float32)) if gate else None
        self.codes = Codes(jnp.zeros(lead + (batch, batch), jnp.float32)) if (relu_in or relu_out) else None
        self.active = True  # False in synflow's linearised network (batch of one, no probes)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.active and self.relu_in:
            self.codes.set_value(self.codes.get_value() + code_kernel(x))
        y = self.inner(x)
        if self.active and self.relu_out:
            self.codes.set_value(self.codes.get_value() + code_kernel(y))
        if self.active and self.gate is not None:
            g = self.gate.get_value().astype(y.dtype)
            y = y * g.reshape(g.shape[:1] + (1,) * (y.ndim - 2) + g.shape[1:])
        return y


class ProbedDilConv(nnx.Module):
    """:class:`~dnas.space.ops.darts.DilConv`'s function, ReLU -> depthwise -> pointwise ->
    BN, with the two convolutions called as modules so that their probes run.

    ``DilConv`` hands both kernels to ``depthwise_pointwise``, which in the ``shift`` and
    ``conv`` lowerings is exactly these two calls (in ``fused`` it multiplies the kernels
    first: the same function up to rounding).
    """
    def __init__(self, op: nnx.Module):
        self.dw, self.pw, self.bn = op.dw, op.pw, op.bn

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.pw(self.dw(jax.nn.relu(x))))


def _sites() -> dict[type, tuple[tuple[tuple, str], ...]]:
    # Imported here: the spaces import much of dnas, and only a scorer needs this table.

    return {
        ReLUConvBN: ((("conv",), "in"),),
        ProbedDilConv: ((("dw",), "in"),),
        # convs[1] reads the same ReLU output shifted by a pixel: counting it would count
        # that ReLU twice.
        FactorizedReduce: ((("convs", 0), "in"),),
        Conv7x1_1x7: ((("a",), "in"),),
        # b0 is None (no expansion) in MBConv1: that site is then skipped.
        InvertedResidual: ((("b0",), "out"), (("b1",), "out")),
        DepthwiseSeparable: ((("b1",), "out"), (("b2",), "out")),
        ConvBNReLU6: ((("bn",), "out"),),
        FBNetBlock: ((("b1",), "out"), (("b2",), "out")),  # the shuffle after b1 permutes units: same kernel
        FBNetSkip: ((("bn",), "out"),),
        FBNetNet: ((("stem_bn",), "out"), (("head_bn",), "out")),
        NB201SearchNetwork: ((("last_bn",), "out"),),
    }


def _relu_free() -> frozenset[type]:
    return frozenset({
        Conv2d, BatchNorm, nnx.Linear, nnx.List, nnx.Dict, Identity, Zero, Pool, SepConv, _WithBN, _Projection,
        MixedOp, EdgeScan, EdgeBatch, DartsSearchCell, DartsSearchNetwork, NB201SearchCell, ResNetBasicBlock,
        MBBlock, _Head, ProxylessNet,
    })


RELU_SITES: dict[type, tuple[tuple[tuple, str], ...]] = {}
"""Op class -> ``((path below it, "in" | "out"), ...)``: where its ReLUs' codes are read
(the input of the module at that path, or its output), e.g. ``ReLUConvBN: ((("conv",),
"in"),)``. dnas' own classes are added on first use (the table imports every space);
a new op class adds its entry here (or to :data:`RELU_FREE`)."""

RELU_FREE: set[type] = set()
"""Module classes with no ReLU of their own that call every convolution they hold as a
module (so gates see them). dnas' own are added on first use."""

_loaded = False


def _tables() -> tuple[dict[type, tuple[tuple[tuple, str], ...]], set[type]]:
    """The two tables with dnas' own classes loaded (once; entries a caller added first win)."""
    global _loaded
    if not _loaded:
        for cls, where in _sites().items():
            RELU_SITES.setdefault(cls, where)
        RELU_FREE.update(_relu_free())
        _loaded = True
    return RELU_SITES, RELU_FREE


def uncovered(model: nnx.Module) -> list[str]:
    """Names of the module classes in ``model`` the probes know nothing about (sorted)."""
    sites, free = _tables()
    known = set(sites) | free | {DilConv}
    return sorted({type(m).__qualname__ for _, m in nnx.iter_modules(model) if type(m) not in known})


def _lead(module: nnx.Module) -> tuple[int, ...]:
    """The stacked-layer axes of ``module``'s variables (``()`` unless built under ``vmap``)."""
    if isinstance(module, Conv2d):
        return tuple(module.kernel.get_value().shape[:-4])
    if isinstance(module, nnx.Linear):
        return tuple(module.kernel.get_value().shape[:-2])
    if isinstance(module, BatchNorm):
        return tuple(module.mean.get_value().shape[:-1])
    raise TypeError(f"no probe for a {type(module).__name__}")


def _set_child(parent: nnx.Module, key: object, child: nnx.Module) -> None:
    if isinstance(parent, nnx.List):
        parent[int(key)] = child
    else:
        setattr(parent, str(key), child)


def _by_path(model: nnx.Module) -> dict[tuple, nnx.Module]:
    return {tuple(p): m for p, m in nnx.iter_modules(model)}


def _replace(model: nnx.Module, pairs: Iterable[tuple[tuple, nnx.Module]]) -> None:
    by_path = _by_path(model)
    for path, new in pairs:
        _set_child(by_path[path[:-1]], path[-1], new)


def attach_probes(model: nnx.Module, batch: int) -> None:
    """Turns ``model`` (a supernet, in place) into the scorer's probed network.

    Removes DARTS' search-only BN after pools, replaces every ``DilConv`` by
    :class:`ProbedDilConv`, then wraps in a :class:`Probe` every ``Conv2d`` and
    ``nnx.Linear`` (a Fisher gate) and every module at a :data:`RELU_SITES` place (codes).

    Args:
      model: the freshly built network (not yet split).
      batch: the batch size it will be called with (the gates' and kernels' size).
    """
    sites, _ = _tables()
    by_path = _by_path(model)
    # Each pass re-reads the paths: a replacement moves what lies below it.
    _replace(model, [(p + ("ops", i), op.op) for p, m in by_path.items() if isinstance(m, MixedOp)
                     for i, op in enumerate(m.ops) if isinstance(op, _WithBN)])
    _replace(model, [(p, ProbedDilConv(m)) for p, m in _by_path(model).items() if isinstance(m, DilConv)])
    by_path = _by_path(model)
    relu: dict[tuple, str] = {}
    for p, m in by_path.items():
        for rel, where in sites.get(type(m), ()):
            if p + rel in by_path:  # an optional child (MBConv1's b0) may be absent
                relu[p + rel] = where
    targets = [p for p, m in by_path.items() if p in relu or isinstance(m, (Conv2d, nnx.Linear))]
    probes = []
    for p in targets:
        m = by_path[p]
        gate = isinstance(m, (Conv2d, nnx.Linear))
        if not gate and not isinstance(m, BatchNorm):
            raise TypeError(f"a ReLU site must be a convolution, linear layer or BatchNorm; {'/'.join(map(str, p))} is a {type(m).__name__}")
        channels = m.kernel.get_value().shape[-1] if gate else 1
        where = relu.get(p)
        probes.append((p, Probe(m, _lead(m), batch, channels, gate=gate, relu_in=where == "in", relu_out=where == "out")))
    _replace(model, probes)


def linear_mode(model: nnx.Module) -> None:
    """Synflow's network: BatchNorm as the identity (no batch statistics; statistics at
    their initial 0/1 and eps 0) and the probes off."""
    for _, m in nnx.iter_modules(model):
        if isinstance(m, BatchNorm):
            m.use_running_average, m.eps = True, 0.0
        elif isinstance(m, Probe):
            m.active = False


def stacked_axes(model: nnx.Module, params: nnx.State) -> tuple[int, ...]:
    """Per leaf of ``params`` (kernels of ``model``), how many leading axes stack layers."""
    ndim = {tuple(p) + ("kernel",): (4 if isinstance(m, Conv2d) else 2) for p, m in nnx.iter_modules(model) if isinstance(m, (Conv2d, nnx.Linear))}
    # In the order of jax.tree_util.tree_leaves(params), which the proxies zip with.
    out = []
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = tuple(k.key for k in keys if isinstance(k, jax.tree_util.DictKey))
        out.append(leaf.ndim - ndim[path])
    return tuple(out)
