"""A hardware search space: the systolic-array accelerator's design choices as labels.

Codesign NAS (NAAS, Lin et al. 2021; DANCE, Choi et al. 2021; EDD, Li et al. 2020; DOSA,
Hong et al. 2023) searches the network and the accelerator that runs it together. Here the
accelerator's knobs are labels of a :class:`~dnas.space.base.SearchSpace` like any op choice,
so a network space composed with this one (``JointSpace(network, hardware)``, labels
network-first) gives one int32 vector per (network, accelerator) pair, and every discrete
strategy searches both with no new code.

The knobs are those of SCALE-Sim's config (Samajdar et al., ISPASS 2020; SCALE-Sim v3,
2025): array rows x columns, the dataflow (output / weight / input stationary), the three
SRAM buffers in KB (1-byte words, SCALE-Sim's default), the DRAM bandwidth in words per
cycle, and a clock to turn cycles into milliseconds. The space has no supernet: the
hardware is priced by :mod:`dnas.hardware.accelerator`, which reads :meth:`SystolicSpace.params`.

:class:`Accelerator` (the numeric hardware point) lives here rather than in
``dnas.hardware`` because the space layer sits below the hardware layer (the import
contract in ``pyproject.toml``): the space computes it, the cost model consumes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.space.base import HARDWARE_SPACES, Choice, SearchSpace

DATAFLOWS: tuple[str, ...] = ("os", "ws", "is")
"""Output, weight and input stationary, in the order of :attr:`Accelerator.dataflow`."""

NUMERIC_KNOBS: tuple[str, ...] = ("rows", "cols", "ifmap_kb", "filter_kb", "ofmap_kb", "dram_bw", "clock_mhz")
"""The numeric knobs, in :class:`Accelerator`'s field order (the dataflow is the third field)."""


class Accelerator(NamedTuple):
    """One systolic-array accelerator (or the mean of a distribution over them), a pytree.

    Every field is ``f32[...]`` with the same leading batch shape, except ``dataflow``,
    ``f32[..., 3]``: probabilities over :data:`DATAFLOWS` (one-hot for one design; the cost
    model mixes the per-dataflow costs with them).

    Fields:
      rows, cols: the PE array's height and width (SCALE-Sim's ArrayHeight / ArrayWidth).
      dataflow: ``f32[..., 3]`` over (os, ws, is).
      ifmap_kb, filter_kb, ofmap_kb: SRAM buffer sizes in KB (1-byte words).
      dram_bw: DRAM bandwidth per operand channel, words per cycle.
      clock_mhz: clock frequency in MHz.
    """

    rows: Any
    cols: Any
    dataflow: Any
    ifmap_kb: Any
    filter_kb: Any
    ofmap_kb: Any
    dram_bw: Any
    clock_mhz: Any


def dataflow_onehot(dataflow: str) -> np.ndarray:
    """``"ws"`` -> ``f32[3]`` one-hot over :data:`DATAFLOWS`; an unknown name is one DnasError line."""
    if dataflow not in DATAFLOWS:
        raise DnasError(f"unknown dataflow {dataflow!r}; choose one of {', '.join(DATAFLOWS)}")
    return np.eye(len(DATAFLOWS), dtype=np.float32)[DATAFLOWS.index(dataflow)]


def make_accelerator(rows: float = 16, cols: float = 16, dataflow: str | Sequence[float] = "ws", ifmap_kb: float = 64,
                     filter_kb: float = 64, ofmap_kb: float = 64, dram_bw: float = 8, clock_mhz: float = 500) -> Accelerator:
    """A concrete :class:`Accelerator` from numbers, checked (positive sizes, a known dataflow).

    Args:
      rows, cols, ifmap_kb, filter_kb, ofmap_kb, dram_bw, clock_mhz: positive numbers.
      dataflow: ``"os"``, ``"ws"``, ``"is"`` or probabilities ``f32[3]`` over them.

    Returns:
      The accelerator, scalar ``f32`` fields and a ``f32[3]`` dataflow.
    """
    values = dict(rows=rows, cols=cols, ifmap_kb=ifmap_kb, filter_kb=filter_kb, ofmap_kb=ofmap_kb, dram_bw=dram_bw, clock_mhz=clock_mhz)
    for name, v in values.items():
        try:
            ok = math.isfinite(float(v)) and float(v) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DnasError(f"accelerator {name} must be a positive number, got {v!r}")
    if isinstance(dataflow, str):
        df = dataflow_onehot(dataflow)
    else:
        df = np.asarray(dataflow, np.float32)
        if df.shape != (len(DATAFLOWS),) or (df < 0).any() or not np.isclose(df.sum(), 1.0, atol=1e-4):
            raise DnasError(f"accelerator dataflow must be one of {', '.join(DATAFLOWS)} or 3 probabilities over them, got {dataflow!r}")
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return Accelerator(f(rows), f(cols), jnp.asarray(df), f(ifmap_kb), f(filter_kb), f(ofmap_kb), f(dram_bw), f(clock_mhz))


class SystolicSpace(SearchSpace):
    """The design space of a SCALE-Sim-style systolic-array accelerator.

    Labels (in this order): ``hw/rows``, ``hw/cols``, ``hw/dataflow``, ``hw/ifmap_kb``,
    ``hw/filter_kb``, ``hw/ofmap_kb``, ``hw/dram_bw``, ``hw/clock_mhz``; each a
    :class:`~dnas.space.base.Choice` whose candidates are the values themselves.

    The defaults span what the codesign papers search at edge scale (NAAS and DOSA search
    arrays of 8..64 PEs a side and buffers of tens to hundreds of KB): 4^7 x 3 = 49,152
    designs. Every keyword overrides one tuple.

    Args:
      rows, cols: PE array height / width candidates.
      dataflow: a non-empty subset of ``("os", "ws", "is")``.
      ifmap_kb, filter_kb, ofmap_kb: SRAM buffer sizes in KB (1-byte words).
      dram_bw: DRAM words per cycle per operand channel.
      clock_mhz: clock frequencies in MHz.
    """

    space_name = "systolic"

    def __init__(self, rows: Sequence[int] = (8, 16, 32, 64), cols: Sequence[int] = (8, 16, 32, 64),
                 dataflow: Sequence[str] = DATAFLOWS, ifmap_kb: Sequence[int] = (16, 32, 64, 128),
                 filter_kb: Sequence[int] = (16, 32, 64, 128), ofmap_kb: Sequence[int] = (16, 32, 64, 128),
                 dram_bw: Sequence[int] = (2, 4, 8, 16), clock_mhz: Sequence[int] = (200, 400, 700, 1000)):
        numeric = dict(rows=rows, cols=cols, ifmap_kb=ifmap_kb, filter_kb=filter_kb, ofmap_kb=ofmap_kb, dram_bw=dram_bw, clock_mhz=clock_mhz)
        for name, values in numeric.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise DnasError(f"systolic space {name} must be a non-empty list of positive numbers, got {values!r}")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise DnasError(f"systolic space {name} must be positive numbers, got {v!r} in {tuple(values)}")
        if isinstance(dataflow, str) or not dataflow:
            raise DnasError(f"systolic space dataflow must be a non-empty list of {', '.join(DATAFLOWS)}, got {dataflow!r}")
        for d in dataflow:
            if d not in DATAFLOWS:
                raise DnasError(f"unknown dataflow {d!r}; choose from {', '.join(DATAFLOWS)}")
        self.values = {k: tuple(v) for k, v in numeric.items()}
        self.dataflows = tuple(dataflow)
        order = ("rows", "cols", "dataflow", "ifmap_kb", "filter_kb", "ofmap_kb", "dram_bw", "clock_mhz")
        super().__init__([Choice(f"hw/{k}", self.dataflows if k == "dataflow" else self.values[k]) for k in order])
        self.knobs = order

    def params(self, probs_rows: jax.Array) -> Accelerator:
        """The accelerator a distribution over this space's candidates stands for.

        Each numeric knob is its expected value under its row's probabilities (exact for a
        one-hot row, i.e. a discrete design; the mean encoding of a relaxed one), and the
        dataflow is the row's probabilities mapped onto (os, ws, is).

        Args:
          probs_rows: ``f32[..., 8, K]``: this space's rows of a padded probability matrix
            (label order as :attr:`labels`, zeros beyond a label's candidates; ``K`` at
            least the largest candidate count).

        Returns:
          An :class:`Accelerator` with batch shape ``[...]``; differentiable in ``probs_rows``.
        """
        p = jnp.asarray(probs_rows, jnp.float32)
        width = int(max(self.num_candidates))
        if p.ndim < 2 or p.shape[-2] != len(self.labels) or p.shape[-1] < width:
            raise DnasError(f"hardware probabilities must be f32[..., {len(self.labels)}, >={width}] (the systolic space's rows); got shape {p.shape}")
        out = {}
        for i, knob in enumerate(self.knobs):
            row = p[..., i, :]
            if knob == "dataflow":
                onto = np.stack([np.eye(len(DATAFLOWS), dtype=np.float32)[DATAFLOWS.index(d)] for d in self.dataflows])
                out[knob] = row[..., : len(self.dataflows)] @ onto
            else:
                vals = np.asarray(self.values[knob], np.float32)
                out[knob] = row[..., : len(vals)] @ vals
        return Accelerator(**out)

    def accelerator(self, arch: Any) -> Accelerator:
        """The :class:`Accelerator` of one discrete design: ``int32[8]`` (or ``{label: int
        or value}``) in this space's label order."""
        vec = self.encode(arch) if isinstance(arch, dict) else np.asarray(arch)
        self._check_vec(np.asarray(vec))
        onehot = np.zeros((len(self.labels), int(max(self.num_candidates))), np.float32)
        onehot[np.arange(len(self.labels)), np.asarray(vec)] = 1.0
        return self.params(onehot)

    def describe(self, vec: Any) -> dict[str, Any]:
        """``{knob: value}`` of a discrete design (``{"rows": 32, "dataflow": "ws", ...}``), for reports."""
        return {k.split("/", 1)[1]: v for k, v in self.names(vec).items()}


HARDWARE_SPACES.add("systolic", SystolicSpace)
