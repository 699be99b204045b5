"""An analytical systolic-array accelerator model in JAX: cycles, energy and area per layer.

**Layers as GEMMs.** A convolution is the im2col GEMM ``(Np x K) @ (K x M)`` repeated ``G``
times: ``Np = N·Hout·Wout``, ``K = Cin/g·kh·kw``, ``M = Cout/g``, ``G = g`` (the feature
groups). A depthwise convolution is thus ``G = C`` GEMMs of ``K = kh·kw``, ``M = 1``: what
SCALE-Sim does with a depthwise layer (a ``DP`` layer of its topology file runs as one
single-channel layer per channel). A dense layer (``dot_general``) is ``Np`` = the product
of the lhs free dims, ``K`` the contracted ones, ``M`` the rhs free ones, ``G`` the batch
dims. The shapes are read from the traced program (:func:`gemm_layers`, the walk of
:mod:`dnas.hardware.counts`), so they are the network's, not a hand table.

**Compute** (SCALE-Sim, Samajdar et al. 2018/2020; v3 2025). A dataflow maps the GEMM onto
the ``R x C`` array as ``(S_R, S_C, T)``: ``(Np, M, K)`` output stationary, ``(K, M, Np)``
weight stationary, ``(K, Np, M)`` input stationary; it runs ``ceil(S_R/R)·ceil(S_C/C)``
folds. SCALE-Sim 3.0's compute code (``compute/systolic_compute_{os,ws,is}.py``: the
demand matrices it builds, one row a cycle) gives each fold

- OS: ``T + R + C - 2`` cycles (operands skewed in, ``C - 1`` cycles for the outputs to
  drain; no separate preload), and
- WS / IS: ``T + 2R + C - 2`` (the paper's formula: ``R`` cycles to load the stationary
  operand, then ``T`` streamed, plus skew),

and a layer's cycle count is the number of demand rows minus one (it reports the last
cycle's index). The ``2R + C + T - 2`` of the paper for OS is what SCALE-Sim v1 did; v3
overlaps the output drain with the next fold's skew, so this model follows v3. With these
conventions the compute cycles equal SCALE-Sim 3.0's exactly (tested).

**Memory** (a bandwidth bound per operand, after Timeloop's data-movement accounting,
Parashar et al. ISPASS 2019, with SCALE-Sim's buffer policy). SCALE-Sim double-buffers each
SRAM (half active, half prefetching) and fills the first active half before the layer
starts, outside its cycle count. An operand whose whole stream fits in the active half
therefore never stalls; one that does not is re-fetched from DRAM during compute, once per
SRAM access the dataflow makes of it (re-fetch): ifmap ``Np·K`` words read ``ceil(S_C/C)``
times (OS, WS) or once (IS), filter ``K·M`` read ``ceil(S_R/R)`` (OS), once (WS) or
``ceil(S_C/C)`` times (IS), ofmap ``Np·M`` written once (OS) or ``ceil(S_R/R)`` times as
partial sums (WS, IS): SCALE-Sim's own SRAM access counts. The traffic beyond the free
first fill moves at ``dram_bw`` words/cycle, and the layer takes ``compute + Σ_operands
spilled / dram_bw`` cycles. The stall *adds* to compute rather than overlapping it (a
Timeloop-style ``max(compute, traffic / bandwidth)``) because SCALE-Sim fetches on a demand
miss (its read buffer issues the next prefetch only when a requested word is not in the
active half), so a spilled operand's transfers serialise with the array; on the validation
set the sum ranks SCALE-Sim's total cycles better than the max (RESULTS.md has both, and
where SCALE-Sim's buffer thrashing costs far more than either).

**Energy** (Eyeriss, Chen et al. ISCA 2016: access energy relative to a MAC, DRAM 200x,
global buffer 6x, register file 1x): ``mac_pj·(MACs·(1 + 3·1) + 6·SRAM accesses + 200·DRAM
words)``; each MAC reads two operands and updates a partial sum in the PE's registers.
``mac_pj`` defaults to 0.23 pJ, an 8-bit multiply (0.2 pJ) plus add (0.03 pJ) at 45 nm
(Horowitz, ISSCC 2014), matching SCALE-Sim's 1-byte words. Static energy is not modelled.

**Area**: ``R·C·pe_mm2 + (ifmap + filter + ofmap KB)·sram_mm2_per_kb`` at 45 nm. A PE is an
8-bit multiplier (282 µm²) and a 32-bit accumulator adder (137 µm²) (Horowitz, ISSCC 2014,
45 nm), plus an assumed 50 % for operand / partial-sum registers and wiring: 630 µm². An
SRAM KB is 8,192 bit cells of 0.346 µm² (Intel 45 nm, Mistry et al., IEDM 2007) at an
assumed 60 % array efficiency: 0.0047 mm². Both are module constants, overridable.

**Differentiable** in continuous hardware parameters (the mean encoding of hardware
probabilities): ``ceil`` is straight-through (``x + stop_gradient(ceil(x) - x)``), and so is
the "fits in the buffer" step (its gradient a sigmoid's in log size); the spilled traffic is
a ``relu``, piecewise linear. No max remains in the cycle count (the stall adds to compute),
so no smooth max is needed. The dataflow is a probability vector over (os, ws, is) that
mixes the three dataflows' costs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.hardware.counts import _subjaxprs
from dnas.space.ops.layers import depthwise_impl
from dnas.space.spaces.hardware import DATAFLOWS, Accelerator, make_accelerator

Gemm = tuple[int, int, int, int]
"""``(Np, K, M, G)``: G repeats of an ``(Np x K) @ (K x M)`` GEMM."""

WORD_BYTES = 1
"""Bytes per word (SCALE-Sim's default ``word_size``)."""
ACTIVE_FRACTION = 0.5
"""The active half of SCALE-Sim's double-buffered SRAMs (``active_buf_frac``)."""

MAC_PJ = 0.23
"""pJ of one 8-bit MAC at 45 nm (Horowitz, ISSCC 2014): the energy unit."""
REL_ENERGY = {"mac": 1.0, "rf": 1.0, "sram": 6.0, "dram": 200.0}
"""Access energy relative to a MAC (Eyeriss, Chen et al. ISCA 2016)."""
RF_ACCESSES_PER_MAC = 3.0
"""Register-file accesses per MAC: two operand reads and one partial-sum update."""
PE_MM2 = 630e-6
"""mm² of one PE at 45 nm (module docstring)."""
SRAM_MM2_PER_KB = 0.0047
"""mm² of one KB of SRAM at 45 nm (module docstring)."""
FIT_TAU = 0.05
"""Temperature of the sigmoid whose gradient the straight-through "fits in the buffer" step uses."""


# ----- GEMMs from traced programs -----------------------------------------------------------------

def eqn_gemm(eqn: Any) -> Gemm | None:
    """The GEMM of one jaxpr equation (``conv_general_dilated`` or ``dot_general``), else None.

    Returns:
      ``(Np, K, M, G)`` as ints: ``Np = N·Hout·Wout``, ``K = Cin/g·kh·kw``, ``M = Cout/g``,
      ``G = g`` for a convolution; free, contracted, free and batch sizes for a dot.
    """
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        g = int(eqn.params.get("feature_group_count", 1)) * int(eqn.params.get("batch_group_count", 1))
        n = out.shape[dn.out_spec[0]]
        cout = out.shape[dn.out_spec[1]]
        pixels = math.prod(out.shape[d] for d in dn.out_spec[2:])
        k = rhs.shape[dn.rhs_spec[1]] * math.prod(rhs.shape[d] for d in dn.rhs_spec[2:])
        return (int(n * pixels), int(k), int(cout // g), g)
    if name == "dot_general":
        lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lfree = [d for d in range(len(lhs.shape)) if d not in lc and d not in lb]
        rfree = [d for d in range(len(rhs.shape)) if d not in rc and d not in rb]
        return (math.prod(lhs.shape[d] for d in lfree), math.prod(lhs.shape[d] for d in lc),
                math.prod(rhs.shape[d] for d in rfree), math.prod(lhs.shape[d] for d in lb))
    return None


def jaxpr_gemms(jaxpr: Any) -> Counter:
    """``Counter[(Np, K, M, G)]`` of every GEMM a jaxpr runs.

    A ``scan`` body counts ``length`` times; of a ``cond`` only one branch runs, so it
    counts the branch with the most MACs (an upper bound, as :mod:`dnas.hardware.counts`).
    """
    found: Counter = Counter()
    for eqn in jaxpr.eqns:
        g = eqn_gemm(eqn)
        if g is not None:
            found[g] += 1
        subs = [jaxpr_gemms(s) for s in _subjaxprs(eqn.params)]
        if not subs:
            continue
        if eqn.primitive.name == "cond":
            found.update(max(subs, key=lambda c: sum(math.prod(k) * v for k, v in c.items())))
        elif eqn.primitive.name == "scan":
            for _ in range(int(eqn.params["length"])):
                found.update(sum(subs, Counter()))
        else:
            for s in subs:
                found.update(s)
    return found


def gemm_layers(fn: Callable[..., Any], *args: Any) -> Counter:
    """The GEMMs of one call ``fn(*args)`` (an abstract trace; nothing is computed), with
    depthwise convolutions in their grouped-convolution lowering.

    Returns:
      ``Counter[(Np, K, M, G)]``: how many times each GEMM shape runs.
    """
    with depthwise_impl("conv"):
        closed = jax.make_jaxpr(fn)(*args)
    return jaxpr_gemms(closed.jaxpr)


def gemm_array(gemms: Mapping[Gemm, float] | list[Gemm]) -> np.ndarray:
    """GEMMs as ``f32[L, 4]`` rows of ``(Np, K, M, G)`` (a Counter repeats each row by its count)."""
    rows = [g for g, n in gemms.items() for _ in range(int(n))] if isinstance(gemms, Mapping) else list(gemms)
    arr = np.asarray(rows, np.float32).reshape(-1, 4)
    if (arr <= 0).any():
        raise DnasError(f"GEMM sizes (Np, K, M, G) must be positive, got {arr[(arr <= 0).any(axis=1)][0].tolist()}")
    return arr


def conv_gemm(n: int, h: int, w: int, cin: int, cout: int, kh: int, kw: int, stride: int = 1, padding: int = 0,
              groups: int = 1) -> Gemm:
    """The GEMM of a 2-D convolution by the formulas (``Hout = (h + 2·padding - kh)//stride + 1``)."""
    if min(n, h, w, cin, cout, kh, kw, stride, groups) <= 0 or padding < 0 or cin % groups or cout % groups:
        raise DnasError(f"bad convolution: n={n} h={h} w={w} cin={cin} cout={cout} k={kh}x{kw} stride={stride} groups={groups}")
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    return (n * ho * wo, cin // groups * kh * kw, cout // groups, groups)


# ----- the cost of GEMMs on an accelerator --------------------------------------------------------

class LayerCost(NamedTuple):
    """Per-layer costs, each ``f32[..., L]`` (mixed over the dataflow probabilities).

    Fields:
      compute_cycles: cycles with no memory stall (SCALE-Sim's demand rows).
      cycles: compute plus the stalls of spilled operands' DRAM traffic.
      energy_pj: MAC, register, SRAM and DRAM access energy.
      macs: multiply-accumulates.
    """

    compute_cycles: jax.Array
    cycles: jax.Array
    energy_pj: jax.Array
    macs: jax.Array


def as_accelerator(hw: Accelerator | Mapping[str, Any]) -> Accelerator:
    """An :class:`Accelerator` from itself or from ``{rows: 16, dataflow: "ws", ...}``
    (missing keys take :func:`~dnas.space.spaces.hardware.make_accelerator`'s defaults)."""
    if isinstance(hw, Accelerator):
        return Accelerator(*(jnp.asarray(v, jnp.float32) for v in hw))
    if isinstance(hw, Mapping):
        bad = [k for k in hw if k not in Accelerator._fields]
        if bad:
            raise DnasError(f"unknown accelerator parameter {bad[0]!r}; known: {', '.join(Accelerator._fields)}")
        return make_accelerator(**hw)
    raise DnasError(f"hardware must be an Accelerator or a dict of its fields, got {type(hw).__name__}")


def st_ceil(x: jax.Array) -> jax.Array:
    """``ceil(x)`` forward, identity gradient backward (straight-through)."""
    return x + jax.lax.stop_gradient(jnp.ceil(x) - x)


def st_step(margin_log: jax.Array, tau: float = FIT_TAU) -> jax.Array:
    """``1[margin >= 0]`` forward, ``sigmoid(margin/tau)``'s gradient backward."""
    soft = jax.nn.sigmoid(margin_log / tau)
    return soft + jax.lax.stop_gradient((margin_log >= 0).astype(soft.dtype) - soft)


def _per_dataflow(*cols: float) -> np.ndarray:
    """``f32[3]``: one value per dataflow (os, ws, is), to select or weight per-dataflow terms."""
    return np.asarray(cols, np.float32)


def layer_costs(gemms: jax.Array | np.ndarray, hw: Accelerator, *, mac_pj: float = MAC_PJ,
                rel_energy: Mapping[str, float] = REL_ENERGY) -> LayerCost:
    """Cycles and energy of GEMMs on one accelerator (or a batch of them).

    Args:
      gemms: ``f32[L, 4]`` rows ``(Np, K, M, G)``.
      hw: an :class:`Accelerator` whose fields have batch shape ``[...]`` (dataflow
        ``f32[..., 3]``).
      mac_pj: pJ per MAC, the energy unit.
      rel_energy: access energy relative to a MAC: ``mac``, ``rf``, ``sram``, ``dram``.

    Returns:
      :class:`LayerCost` with ``f32[..., L]`` fields; jittable, differentiable in ``hw``.
    """
    g = jnp.asarray(gemms, jnp.float32)
    Np, K, M, G = (g[:, i][:, None] for i in range(4))  # [L, 1]; the last axis will be the dataflow
    ex = lambda v: jnp.asarray(v, jnp.float32)[..., None, None]  # noqa: E731  [..., 1, 1]
    R, C, bw = ex(hw.rows), ex(hw.cols), ex(hw.dram_bw)
    # (S_R, S_C, T) per dataflow, stacked on the last axis in DATAFLOWS order (os, ws, is).
    SR = jnp.concatenate([Np, K, K], -1)
    SC = jnp.concatenate([M, M, Np], -1)
    T = jnp.concatenate([K, Np, M], -1)
    rf, cf = st_ceil(SR / R), st_ceil(SC / C)
    per_fold = T + R + C - 2 + R * _per_dataflow(0, 1, 1)  # WS/IS preload the stationary operand
    compute = rf * cf * per_fold - 1  # SCALE-Sim reports the last demand row's index
    # SRAM accesses per GEMM (SCALE-Sim's counts): which operand is re-read over which folds.
    ifmap_reads = Np * K * (cf * _per_dataflow(1, 1, 0) + _per_dataflow(0, 0, 1))
    filter_reads = K * M * (rf * _per_dataflow(1, 0, 0) + _per_dataflow(0, 1, 0) + cf * _per_dataflow(0, 0, 1))
    ofmap_writes = Np * M * (_per_dataflow(1, 0, 0) + rf * _per_dataflow(0, 1, 1))
    active = lambda kb: ex(kb) * (1024.0 * ACTIVE_FRACTION / WORD_BYTES)  # noqa: E731  words in the active half
    a_i, a_f, a_o = active(hw.ifmap_kb), active(hw.filter_kb), active(hw.ofmap_kb)
    fit_i = st_step(jnp.log(a_i) - jnp.log(Np * K))
    fit_f = st_step(jnp.log(a_f) - jnp.log(K * M))
    fit_o = st_step(jnp.log(a_o) - jnp.log(ofmap_writes))
    # a spilled operand streams every access but the free first fill of the active half
    spill = (1 - fit_i) * jax.nn.relu(ifmap_reads - a_i) + (1 - fit_f) * jax.nn.relu(filter_reads - a_f) \
        + (1 - fit_o) * jax.nn.relu(ofmap_writes - a_o)
    cycles = compute + spill / bw
    dram = fit_i * Np * K + (1 - fit_i) * ifmap_reads + fit_f * K * M + (1 - fit_f) * filter_reads + ofmap_writes
    macs = Np * K * M
    e = rel_energy
    energy = mac_pj * (macs * (e["mac"] + RF_ACCESSES_PER_MAC * e["rf"]) + e["sram"] * (ifmap_reads + filter_reads + ofmap_writes)
                       + e["dram"] * dram)
    df = jnp.asarray(hw.dataflow, jnp.float32)[..., None, :]  # [..., 1, 3]
    mix = lambda x: jnp.sum(G * x * df, axis=-1)  # noqa: E731  G repeats, then the dataflow mixture
    return LayerCost(mix(compute), mix(cycles), mix(energy), mix(macs * jnp.ones_like(compute)))


def area_mm2(hw: Accelerator, *, pe_mm2: float = PE_MM2, sram_mm2_per_kb: float = SRAM_MM2_PER_KB) -> jax.Array:
    """``f32[...]`` area: PEs plus the three SRAM buffers (module docstring for the numbers)."""
    return hw.rows * hw.cols * pe_mm2 + (hw.ifmap_kb + hw.filter_kb + hw.ofmap_kb) * sram_mm2_per_kb


def accelerator_metrics(gemms: jax.Array | np.ndarray, hw: Accelerator | Mapping[str, Any]) -> dict[str, jax.Array]:
    """A whole network's ``cycles``, ``compute_cycles``, ``latency_ms``, ``energy_mj``,
    ``area_mm2``, ``edp`` (mJ·ms) on one accelerator: the sums over ``gemms`` (``f32[L, 4]``)."""
    hw = as_accelerator(hw)
    c = layer_costs(gemms, hw)
    cycles = jnp.sum(c.cycles, -1)
    latency = cycles / (hw.clock_mhz * 1e3)
    energy = jnp.sum(c.energy_pj, -1) * 1e-9
    return {"cycles": cycles, "compute_cycles": jnp.sum(c.compute_cycles, -1), "latency_ms": latency,
            "energy_mj": energy, "area_mm2": area_mm2(hw), "edp": energy * latency}


__all__ = ["ACTIVE_FRACTION", "DATAFLOWS", "Gemm", "LayerCost", "accelerator_metrics", "area_mm2", "as_accelerator",
           "conv_gemm", "eqn_gemm", "gemm_array", "gemm_layers", "jaxpr_gemms", "layer_costs", "st_ceil", "st_step"]
