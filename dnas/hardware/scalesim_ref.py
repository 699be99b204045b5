"""SCALE-Sim 3.0 as a reference for :mod:`dnas.hardware.accelerator` (optional: the
``codesign`` extra, ``pip install 'dnas[codesign]'``).

:func:`scalesim_conv` runs SCALE-Sim's cycle-level simulation of one convolution in-process:
it writes the config and topology files SCALE-Sim reads into a temporary folder and runs
``single_layer_sim`` on them directly (the ``scalesim`` front end also needs a layout file
and writes report CSVs and traces; the per-layer simulator is the same code without them).

Two adaptations, both documented where they are made:

- SCALE-Sim 3.0.0 calls ``int(max(a))`` on ``(n, 1)`` arrays in its memory model, which
  NumPy >= 2.4 refuses (a 1-element array is no longer a scalar). :func:`_numpy2_shim`
  rebinds ``max`` in those two SCALE-Sim modules only, to return the scalar; the values
  are unchanged.
- SCALE-Sim has no padding, and sizes its output ``ceil((H - k + s) / s)``: one more than
  a convolution's ``floor((H - k) / s) + 1`` when ``s`` does not divide ``H - k``. Give it
  the input extent a (padded) convolution reads, ``(Hout - 1)·s + k``. A
  grouped (depthwise) convolution runs in SCALE-Sim as one single-group layer per group
  (its ``DP`` layers), each with its own memory system, so all groups cost the same and
  one group is simulated and multiplied by ``groups``.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from dnas.core.errors import DnasError
from dnas.space.spaces.hardware import DATAFLOWS

_CONFIG = """[general]
run_name = dnas
[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False
[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
ifmapsramszkB = {ifmap_kb}
filtersramszkB = {filter_kb}
ofmapsramszkB = {ofmap_kb}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
Bandwidth = {dram_bw}
ReadRequestBuffer = 32
WriteRequestBuffer = 32
[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = {dram_bw}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = {dram_bw}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2
[sparsity]
SparsitySupport = false
"""
# In USER bandwidth mode SCALE-Sim takes the ifmap and filter DRAM bandwidths from the
# layout section's SRAM bank bandwidths and the ofmap's from Bandwidth: all three are set
# to dram_bw, one channel per operand, as the analytical model assumes.

_shimmed = False


def _numpy2_shim() -> None:
    """Rebinds ``max`` in SCALE-Sim's read buffer and scratchpad modules so that ``int(max(a))``
    of an ``(n, 1)`` array works under NumPy >= 2.4 (module docstring)."""
    global _shimmed
    if _shimmed:
        return
    import scalesim.memory.double_buffered_scratchpad_mem as scratchpad  # optional dependency
    import scalesim.memory.read_buffer as read_buffer

    def scalar_max(*args: Any, **kwargs: Any) -> Any:
        out = builtins.max(*args, **kwargs)
        return out.reshape(()).item() if isinstance(out, np.ndarray) and out.size == 1 else out

    for module in (read_buffer, scratchpad):
        module.max = scalar_max
    _shimmed = True


def scalesim_conv(h: int, w: int, kh: int, kw: int, cin: int, cout: int, stride: int, hw: Mapping[str, Any],
                  groups: int = 1) -> dict[str, float]:
    """SCALE-Sim 3.0's cycles for one convolution (batch 1, no padding) on one accelerator.

    Args:
      h, w: the (padded) input height and width.
      kh, kw, stride: the kernel and stride.
      cin, cout: input and output channels (of all groups together).
      hw: ``rows``, ``cols``, ``dataflow`` (``"os"``/``"ws"``/``"is"``), ``ifmap_kb``,
        ``filter_kb``, ``ofmap_kb`` (whole KB), ``dram_bw`` (words/cycle).
      groups: feature groups (``cin`` for a depthwise convolution).

    Returns:
      ``compute_cycles`` (no stalls), ``cycles`` (with stalls: SCALE-Sim's "Total Cycles"),
      ``stall_cycles``, ``cycles_incl_prefetch`` (its first report column) and the DRAM
      words read / written per operand, each summed over the groups.
    """
    try:
        from scalesim.layout_utils import layouts  # optional dependency: the codesign extra
        from scalesim.scale_config import scale_config
        from scalesim.single_layer_sim import single_layer_sim
        from scalesim.topology_utils import topologies
    except ImportError as e:
        raise DnasError(f"SCALE-Sim is not installed ({e}); pip install 'dnas[codesign]'") from None
    if hw.get("dataflow") not in DATAFLOWS:
        raise DnasError(f"unknown dataflow {hw.get('dataflow')!r}; choose one of {', '.join(DATAFLOWS)}")
    if cin % groups or cout % groups or min(h, w, kh, kw, cin, cout, stride, groups) <= 0 or h < kh or w < kw:
        raise DnasError(f"bad convolution for SCALE-Sim: {h}x{w} input, {kh}x{kw} kernel, {cin}->{cout} channels, groups {groups}")
    _numpy2_shim()
    fields = {k: int(hw[k]) for k in ("rows", "cols", "ifmap_kb", "filter_kb", "ofmap_kb", "dram_bw")}
    with tempfile.TemporaryDirectory() as d:
        cfg_path, topo_path = os.path.join(d, "dnas.cfg"), os.path.join(d, "layer.csv")
        with open(cfg_path, "w") as f:
            f.write(_CONFIG.format(dataflow=hw["dataflow"], **fields))
        with open(topo_path, "w") as f:
            f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n")
            f.write(f"layer,{h},{w},{kh},{kw},{cin // groups},{cout // groups},{stride},\n")
        config = scale_config()
        config.read_conf_file(cfg_path)
        topo = topologies()
        topo.load_arrays(topofile=topo_path)
        sim = single_layer_sim()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints layout flags unconditionally
            sim.set_params(layer_id=0, config_obj=config, topology_obj=topo, layout_obj=layouts(), verbose=False)
            sim.run()
            overall, total, stall, *_ = sim.get_compute_report_items()
            detail = sim.get_detail_report_items()
    return {"compute_cycles": groups * float(total - stall), "cycles": groups * float(total), "stall_cycles": groups * float(stall),
            "cycles_incl_prefetch": groups * float(overall), "ifmap_dram_reads": groups * float(detail[11]),
            "filter_dram_reads": groups * float(detail[14]), "ofmap_dram_writes": groups * float(detail[17])}
