"""The ``accelerator`` cost model: a network (and, in a joint space, its accelerator) priced
by the analytical systolic-array model of :mod:`dnas.hardware.accelerator`.

The network's GEMMs come from traced programs, once, at construction, as per-candidate
tables (the pattern of :func:`dnas.hardware.counts.supernet_count_terms`): for a
:class:`~dnas.space.keys.KeyedSpace` (ProxylessNAS) each key's module is traced and a
candidate's GEMMs are its keys' summed over positions; for any other space (NB201, DARTS)
the supernet is traced at the all-first-candidate architecture and at each single change,
and a candidate's GEMMs are the layers it adds and removes. A network is then a vector of
counts over the distinct GEMM shapes, ``base + Σ p · delta``, which is linear in the
probabilities; every per-layer cost is additive over layers, so the expected cost under
independent per-label probabilities is exact *for a fixed accelerator*. The accelerator is
evaluated at its mean encoding (:meth:`SystolicSpace.params`: expected knob values and
dataflow probabilities; exact for a discrete design), the first-order estimate the module
docstring of :mod:`dnas.hardware.cost_model` names for non-linear models.

A joint space (:class:`~dnas.space.base.JointSpace` whose ``hw_space`` is a
:class:`~dnas.space.spaces.hardware.SystolicSpace`) is priced from one vector: the network's
labels come first, the hardware's rows are the last ``len(space.hw_space.labels)`` rows of
the padded matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.hardware.accelerator import accelerator_metrics, area_mm2, as_accelerator, gemm_array, gemm_layers, layer_costs
from dnas.hardware.cost_model import CostModel
from dnas.space.base import JointSpace, SearchSpace
from dnas.space.keys import KeyedSpace
from dnas.space.spaces.hardware import Accelerator, SystolicSpace, make_accelerator

METRICS = ("latency_ms", "energy_mj", "area_mm2", "cycles", "edp", "edap")
"""What :class:`AcceleratorCost` returns (``edp`` in mJ·ms, ``edap`` in mJ·ms·mm²)."""


def _space_name(space: SearchSpace) -> str:
    return getattr(space, "space_name", type(space).__name__)


def keyed_gemm_tables(space: KeyedSpace, resolution: int, batch: int) -> tuple[Counter, dict[str, list[Counter]]]:
    """``(fixed GEMMs, label -> per-candidate GEMMs summed over positions)`` of a keyed space,
    each key's module traced once at ``(batch, *key.input_shape)``."""
    keys, fixed = space.lut_keys(resolution)
    cache: dict[Any, Counter] = {}

    def of(key: Any) -> Counter:
        if key not in cache:
            module = nnx.eval_shape(lambda: space.lut_module(key, rngs=nnx.Rngs(0)))
            graphdef, state = nnx.split(module)

            def run(st, x):
                m = nnx.merge(graphdef, st)
                m.eval()
                return m(x)

            abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)
            cache[key] = gemm_layers(run, abstract, jax.ShapeDtypeStruct((batch, *key.input_shape), jnp.float32))
        return cache[key]

    base: Counter = Counter()
    for k in fixed:
        base.update(of(k))
    per: dict[str, list[Counter]] = {}
    for label, choice in zip(space.labels, space.choices):
        cands = [Counter() for _ in range(choice.n)]
        for position in keys[label]:
            for c, k in enumerate(position):
                if k is not None:
                    cands[c].update(of(k))
        per[label] = cands
    return base, per


def supernet_gemm_tables(space: SearchSpace, *, C: int, num_classes: int, in_channels: int, resolution: int, batch: int,
                         check: int = 2, seed: int = 0) -> tuple[Counter, dict[str, list[dict]]]:
    """``(base GEMMs, label -> per-candidate GEMM changes)`` of any space, from its supernet
    traced at concrete architectures (``1 + Σ (k - 1)`` abstract traces): the all-first
    architecture, and for candidate i of a label the GEMMs that changing only that label to
    i adds (+) and removes (-). ``check`` random architectures are traced whole and must
    equal base + changes (labels that interact have no per-candidate table: DnasError)."""
    net = nnx.eval_shape(lambda: space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    shape = lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype)  # noqa: E731
    abs_params, abs_rest = jax.tree.map(shape, params), jax.tree.map(shape, rest)
    x = jax.ShapeDtypeStruct((batch, resolution, resolution, in_channels), jnp.float32)

    def trace(vec: np.ndarray) -> Counter:
        arch = {l: int(v) for l, v in zip(space.labels, vec)}

        def run(p, r, x):
            m = nnx.merge(graphdef, p, r)
            m.eval()
            return m(x, arch)

        return gemm_layers(run, abs_params, abs_rest, x)

    def diff(a: Counter, b: Counter) -> dict:
        return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}

    base_vec = np.zeros(len(space.labels), np.int32)
    base = trace(base_vec)
    per: dict[str, list[dict]] = {}
    for i, (label, choice) in enumerate(zip(space.labels, space.choices)):
        cands: list[dict] = [{}]
        for c in range(1, choice.n):
            vec = base_vec.copy()
            vec[i] = c
            cands.append(diff(trace(vec), base))
        per[label] = cands
    rng = np.random.default_rng(seed)
    for _ in range(int(check)):
        vec = np.array([rng.integers(k) for k in space.num_candidates], np.int32)
        summed: Counter = Counter(base)
        for l, v in zip(space.labels, vec):
            for k, n in per[l][int(v)].items():
                summed[k] += n
        if +summed != trace(vec):
            raise DnasError(f"space {_space_name(space)!r}: its layers are not a sum over its labels (architecture {vec.tolist()}); "
                            "the accelerator model needs per-candidate layer tables")
    return base, per


class AcceleratorCost(CostModel):
    """A network priced on a systolic-array accelerator (module docstring).

    Args:
      space: a network space, or a joint space (:class:`~dnas.space.base.JointSpace` whose ``hw_space`` is a
        :class:`SystolicSpace`; labels network-first).
      base: GEMMs every architecture runs, ``Counter[(Np, K, M, G)]``.
      per: ``label -> per-candidate GEMM counts`` (changes, may be negative) of the network labels.
      hardware: the accelerator of a plain network space when :meth:`cost` gets ``hw=None``;
        must be None for a joint space (the hardware comes from the vector).

    Metrics: ``latency_ms``, ``energy_mj``, ``area_mm2``, ``cycles``, ``edp`` (mJ·ms), ``edap`` (mJ·ms·mm²), each
    ``f32[...]``; jittable, differentiable in the network's and the hardware's probabilities.
    """

    def __init__(self, space: SearchSpace, base: Mapping, per: Mapping[str, list[Mapping]], hardware: Accelerator | Mapping | None = None):
        super().__init__(space.labels, space.num_candidates, METRICS)
        self.hw_space, self.network = _split_joint(space)
        if self.hw_space is not None and hardware is not None:
            raise DnasError("a joint space's accelerator comes from its hardware labels; pass no hardware= to the accelerator cost model")
        self.default_hw = None if self.hw_space is not None else as_accelerator(hardware if hardware is not None else {})
        shapes = sorted(set(base) | {k for cands in per.values() for c in cands for k in c})
        if not shapes:
            raise DnasError(f"space {_space_name(self.network)!r}: its network runs no convolution or dense layer to price")
        index = {s: i for i, s in enumerate(shapes)}
        self.gemms = jnp.asarray(gemm_array(shapes))  # [U, 4] distinct GEMM shapes
        n_net = len(self.network.labels)
        self.n_net = n_net
        base_counts = np.zeros(len(shapes), np.float32)
        for s, n in base.items():
            base_counts[index[s]] += n
        delta = np.zeros((n_net, self.width, len(shapes)), np.float32)
        for i, label in enumerate(self.network.labels):
            for c, changes in enumerate(per[label]):
                for s, n in changes.items():
                    delta[i, c, index[s]] += n
        self.base_counts, self.delta = jnp.asarray(base_counts), jnp.asarray(delta)

    def counts(self, probs: jax.Array) -> jax.Array:
        """``f32[..., U]``: expected runs of each distinct GEMM shape (:attr:`gemms`) under the
        network's rows of ``probs`` (``f32[..., n, K]``)."""
        return self.base_counts + jnp.einsum("...nk,nku->...u", probs[..., : self.n_net, :], self.delta)

    def hardware(self, probs: jax.Array, hw: Any = None) -> Accelerator:
        """The accelerator priced: from the hardware rows of a joint ``probs``, else ``hw`` or the default."""
        if self.hw_space is not None:
            if hw is not None:
                raise DnasError("a joint space's accelerator comes from its hardware labels; cost() takes no hw")
            return self.hw_space.params(probs[..., self.n_net :, :])
        return self.default_hw if hw is None else as_accelerator(hw)

    def price(self, probs: jax.Array, hw: Any = None) -> dict[str, jax.Array]:
        acc = self.hardware(probs, hw)
        costs = layer_costs(self.gemms, acc)
        counts = self.counts(probs)
        cycles = jnp.sum(counts * costs.cycles, -1)
        latency = cycles / (acc.clock_mhz * 1e3)
        energy = jnp.sum(counts * costs.energy_pj, -1) * 1e-9
        area = jnp.broadcast_to(area_mm2(acc), cycles.shape)
        # edap (energy x delay x area) is the one-number codesign objective no single knob can
        # drive down alone: more PEs cut the delay but add area, bigger buffers cut DRAM energy
        # but add area (the α-loss term of the differentiable codesign variant).
        return {"latency_ms": latency, "energy_mj": energy, "area_mm2": area, "cycles": cycles, "edp": energy * latency,
                "edap": energy * latency * area}


def _split_joint(space: SearchSpace) -> tuple[SystolicSpace | None, SearchSpace]:
    """``(hardware space or None, network space)`` of a joint or plain network space."""
    if isinstance(space, SystolicSpace):
        raise DnasError("the accelerator cost model prices a network space or a joint (network + hardware) space, not a hardware space alone")
    if not isinstance(space, JointSpace):
        return None, space
    if not isinstance(space.hw_space, SystolicSpace):
        raise DnasError(f"the accelerator cost model prices a systolic array; this joint space's hardware is {type(space.hw_space).__name__}")
    return space.hw_space, space.net_space


def accelerator_cost(space: SearchSpace, resolution: int = 32, batch: int = 1, C: int = 16, num_classes: int = 10,
                     in_channels: int = 3, hardware: Accelerator | Mapping | None = None, check: int = 2) -> AcceleratorCost:
    """The ``accelerator`` cost model of a network or joint space (module docstring).

    Args:
      space: a network space, or a joint space (:class:`~dnas.space.base.JointSpace`, ``hw_space`` a :class:`SystolicSpace`).
      resolution: input height = width of the traced network.
      batch: images per inference (``N`` of ``Np = N·Hout·Wout``).
      C, num_classes, in_channels: the supernet's width, classes and input channels (a
        keyed space's keys fix their own shapes).
      hardware: a plain network space's accelerator (an :class:`Accelerator` or a dict
        like ``{"rows": 32, "cols": 32, "dataflow": "ws"}``; defaults of
        :func:`~dnas.space.spaces.hardware.make_accelerator` for missing keys).
      check: random architectures traced whole to check the per-candidate tables.
    """
    for name, v in dict(resolution=resolution, batch=batch, C=C, num_classes=num_classes, in_channels=in_channels).items():
        if int(v) <= 0:
            raise DnasError(f"accelerator cost model: {name} must be positive, got {v}")
    _, net = _split_joint(space)
    if isinstance(net, KeyedSpace):
        base, per = keyed_gemm_tables(net, int(resolution), int(batch))
    else:
        base, per = supernet_gemm_tables(net, C=int(C), num_classes=int(num_classes), in_channels=int(in_channels),
                                         resolution=int(resolution), batch=int(batch), check=int(check))
    return AcceleratorCost(space, base, per, hardware)


__all__ = ["METRICS", "AcceleratorCost", "accelerator_cost", "accelerator_metrics", "keyed_gemm_tables", "make_accelerator",
           "supernet_gemm_tables"]
