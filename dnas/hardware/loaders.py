"""Loaders for the latency tables people already have.

- ProxylessNAS / once-for-all YAML (Cai et al., ICLR 2019 / ICLR 2020; the files their
  code loads from han-cai/files): ``"<op>-input:HxWxC-output:HxWxC[-expand:e-kernel:k-
  stride:s-idskip:0/1][-se:0/1-hs:0/1]": {count, mean, var | std}`` -> :class:`LatencyTable`.
- The FBNet per-layer table of HW-NAS-Bench (Li et al., ICLR 2021, as shipped by HELP):
  ``device,layer,op_idx,op,delta_ms_vs_k3_e1_same_layer``, where a network's latency is
  the device's all-``k3_e1`` total (row ``layer=-1``) plus the per-layer deltas of its ops
  -> :class:`FBNetLayerTable`. Deltas are differences (``skip`` is negative), so they are
  not table entries; the layer table converts to a :class:`LatencyTerm` directly.

Every loader takes a path (the files are not part of dnas) and turns malformed input into
one DnasError line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import read_text
from dnas.hardware.lut import LatencyTable
from dnas.hardware.penalties import LatencyTerm, latency_term
from dnas.space.base import SearchSpace


def load_yaml_lut(
    path: str | os.PathLike, *, device: str | None = None, backend: str = "tflite", dtype: str = "float32", batch_size: int = 1
) -> LatencyTable:
    """Reads a ProxylessNAS / once-for-all YAML latency table.

    Args:
      path: e.g. ``proxylessnas_mobile_pixel1.yaml`` (Pixel 1, TFLite, 1 thread) or
        ``ofa_note10/224_lookup_table.yaml`` (Note10, input 224).
      device: recorded device name (default: the file name without extension).
      backend, dtype, batch_size: the measurement settings to record (the published
        tables are TFLite float32, batch 1).

    Returns:
      A validated :class:`LatencyTable`; ``var`` is converted to ``std = sqrt(var)``.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(read_text(path, "latency table"))  # missing or not UTF-8: one line
    except yaml.YAMLError as e:
        raise DnasError(f"latency table {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    where = f"latency table {str(path)!r}"
    if not isinstance(raw, dict) or not raw:
        raise DnasError(f"{where}: expected a mapping key -> {{count, mean, var|std}}")
    entries: dict = {}
    for key, v in raw.items():
        if not isinstance(v, dict):
            raise DnasError(f"{where}: entry {key!r} must be a mapping with count, mean and var or std")
        if "std" not in v and "var" not in v:
            raise DnasError(f"{where}: entry {key!r} has neither 'std' nor 'var'")
        try:
            var = float(v["var"]) if "var" in v else None
        except (TypeError, ValueError):
            raise DnasError(f"{where}: entry {key!r} has a non-numeric var") from None
        if var is not None and not var >= 0:  # also catches NaN
            raise DnasError(f"{where}: entry {key!r} has var {var}; it must be finite and >= 0")
        obj = {"mean": v.get("mean"), "std": math.sqrt(var) if var is not None else v["std"], "count": v.get("count")}
        # Reuse the JSON validation so both formats reject the same things the same way.
        table_obj = {"schema": "dnas.latency_table", "version": 1, "device": "", "backend": "", "dtype": "", "batch_size": 1, "entries": {str(key): obj}}
        (k, e), = LatencyTable.from_json(table_obj, where).entries.items()
        entries[k] = e
    return LatencyTable(entries, device or path.stem, backend, dtype, batch_size, source=str(path))


@dataclasses.dataclass(frozen=True)
class FBNetLayerTable:
    """One device's FBNet per-layer latency table.

    Args:
      device: device name (``raspi4``, ``pixel3``, ``eyeriss``, ``fpga``).
      ops: the candidate ops in ``op_idx`` order (``k3_e1`` first: the reference).
      base_ms: latency of the network with ``k3_e1`` at every searched layer.
      delta_ms: ``f64[L, K]``, latency change of op k at layer l relative to ``k3_e1``.
    """

    device: str
    ops: tuple[str, ...]
    base_ms: float
    delta_ms: np.ndarray

    @property
    def num_layers(self) -> int:
        """Searched layers (22 in FBNet)."""
        return int(self.delta_ms.shape[0])

    def latency(self, arch: Sequence[int] | np.ndarray) -> np.ndarray:
        """Latency in ms of ``int[L]`` (or ``int[P, L]``) op indices: base + sum of deltas."""
        arch = np.asarray(arch)
        if arch.shape[-1] != self.num_layers or arch.min() < 0 or arch.max() >= len(self.ops):
            raise DnasError(f"an FBNet architecture is {self.num_layers} op indices in [0, {len(self.ops)}); got shape {arch.shape}")
        return self.base_ms + np.take_along_axis(np.broadcast_to(self.delta_ms, arch.shape + (len(self.ops),)), arch[..., None], -1)[..., 0].sum(-1)

    def latency_term(self, space: SearchSpace | Sequence[str]) -> LatencyTerm:
        """The table as a :class:`LatencyTerm` for a space with one label per layer, in layer order.

        Args:
          space: a search space whose every label offers any subset of :attr:`ops`, in any
            order (each candidate is priced by its name: a smoke run searching 3 of FBNet's
            9 ops keeps the full table's numbers), or a plain label order (all :attr:`ops`
            in table order).
        Returns:
          ``base_ms + Σ_layer Σ_i p_i · delta[layer, op_i]``; the base stays the all-``k3_e1``
          network's, so a subset without ``k3_e1`` still prices each architecture exactly.
        """
        labels = tuple(space.labels if isinstance(space, SearchSpace) else space)
        if len(labels) != self.num_layers:
            raise DnasError(f"the FBNet table has {self.num_layers} layers but the space has {len(labels)} labels")
        if not isinstance(space, SearchSpace):
            return latency_term(labels, {l: self.delta_ms[i] for i, l in enumerate(labels)}, self.base_ms)
        column = {op: k for k, op in enumerate(self.ops)}
        per_label = {}
        for i, l in enumerate(labels):
            cands = tuple(map(str, space.choice(l).candidates))
            unknown = [c for c in cands if c not in column]
            if unknown:
                raise DnasError(f"label {l!r} offers {unknown[0]!r}, which the FBNet table ({self.device}) has no latency for; "
                                f"its ops are {', '.join(self.ops)}")
            per_label[l] = self.delta_ms[i, [column[c] for c in cands]]
        return latency_term(space, per_label, self.base_ms)


FBNET_COLUMNS = ("device", "layer", "op_idx", "op", "delta_ms_vs_k3_e1_same_layer")


def load_fbnet_csv(path: str | os.PathLike) -> dict[str, FBNetLayerTable]:
    """Reads HW-NAS-Bench's FBNet per-layer table (``fbnet_layer_lut_hwnasbench.csv``).

    Returns:
      ``device -> FBNetLayerTable``. Checks: the header, one total row per device, layers
      ``0..L-1`` each listing ops ``0..K-1`` once with the same names on every layer and
      device, finite numbers, and a zero delta for the reference op.
    """
    path = Path(path)
    where = f"FBNet table {str(path)!r}"
    rows = list(csv.DictReader(io.StringIO(read_text(path, "FBNet table"), newline="")))  # not UTF-8: one line
    header = tuple(rows[0].keys()) if rows else ()
    if header[: len(FBNET_COLUMNS)] != FBNET_COLUMNS:
        raise DnasError(f"{where}: header {','.join(header)!r} is not {','.join(FBNET_COLUMNS)!r}")
    totals: dict[str, float] = {}
    cells: dict[str, dict[tuple[int, int], float]] = {}
    names: dict[int, str] = {}
    for n, r in enumerate(rows, start=2):
        try:
            layer, op_idx, value = int(r["layer"]), int(r["op_idx"]), float(r["delta_ms_vs_k3_e1_same_layer"])
        except (TypeError, ValueError):
            raise DnasError(f"{where}: line {n} has a non-numeric layer, op_idx or latency") from None
        if not math.isfinite(value):
            raise DnasError(f"{where}: line {n} has latency {value}")
        dev = r["device"]
        if layer == -1:
            if dev in totals:
                raise DnasError(f"{where}: device {dev!r} has two total rows (layer=-1)")
            if value <= 0:
                raise DnasError(f"{where}: device {dev!r} has total {value} ms; it must be positive")
            totals[dev] = value
            continue
        if layer < 0 or op_idx < 0:
            raise DnasError(f"{where}: line {n} has layer {layer}, op_idx {op_idx}")
        if names.setdefault(op_idx, r["op"]) != r["op"]:
            raise DnasError(f"{where}: op_idx {op_idx} is {names[op_idx]!r} elsewhere but {r['op']!r} on line {n}")
        if (layer, op_idx) in cells.setdefault(dev, {}):
            raise DnasError(f"{where}: device {dev!r} lists layer {layer} op {op_idx} twice")
        cells[dev][(layer, op_idx)] = value
    if not cells:
        raise DnasError(f"{where}: no per-layer rows")
    K = len(names)
    if sorted(names) != list(range(K)):
        raise DnasError(f"{where}: op_idx values {sorted(names)} are not 0..{K - 1}")
    out = {}
    for dev, c in cells.items():
        if dev not in totals:
            raise DnasError(f"{where}: device {dev!r} has no total row (layer=-1, the all-{names[0]} network)")
        L = max(l for l, _ in c) + 1
        missing = [(l, k) for l in range(L) for k in range(K) if (l, k) not in c]
        if missing:
            raise DnasError(f"{where}: device {dev!r} has no latency for layer {missing[0][0]} op {names[missing[0][1]]!r}")
        delta = np.array([[c[(l, k)] for k in range(K)] for l in range(L)])
        if np.any(delta[:, 0] != 0):
            raise DnasError(f"{where}: device {dev!r}: the reference op {names[0]!r} must have delta 0 on every layer")
        out[dev] = FBNetLayerTable(dev, tuple(names[k] for k in range(K)), totals[dev], delta)
    lost = sorted(set(totals) - set(out))
    if lost:
        raise DnasError(f"{where}: device {lost[0]!r} has a total but no per-layer rows")
    return out

