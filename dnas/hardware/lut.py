"""Latency lookup tables: one schema, JSON (de)serialisation, validation on load.

A table maps an op *at given shapes and settings* to its measured latency, and records
where the numbers come from (device, backend, dtype, batch size, source). The entry key is
a :class:`~dnas.space.keys.LutKey` (defined with the spaces, whose candidates it describes;
re-exported here), in the ProxylessNAS / once-for-all string format of the published
tables, e.g. ``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``.

The JSON file (schema version :data:`SCHEMA_VERSION`)::

    {"schema": "dnas.latency_table", "version": 1,
     "device": "pixel1", "backend": "tflite", "dtype": "float32", "batch_size": 1,
     "source": "proxylessnas_mobile_pixel1.yaml", "unit": "ms",
     "entries": {"<key>": {"mean": 6.24, "std": 0.27, "count": 164}, ...}}

Every malformed input (missing key, NaN or negative value, a key that does not parse, a
required op with no entry) raises one :class:`~dnas.core.errors.DnasError` line that names it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError
from dnas.core.io import read_text
from dnas.space.keys import LutKey, Scalar, as_key

__all__ = ["LatencyTable", "LutEntry", "LutKey", "Scalar", "as_key"]

SCHEMA = "dnas.latency_table"
SCHEMA_VERSION = 1
METADATA = ("device", "backend", "dtype", "batch_size")

@dataclasses.dataclass(frozen=True)
class LutEntry:
    """One measurement summary: mean and standard deviation (in the table's unit) over ``count`` runs."""

    mean: float
    std: float = 0.0
    count: int = 1


def _entry(key: str, obj: Any, where: str) -> LutEntry:
    if not isinstance(obj, Mapping):
        raise DnasError(f"{where}: entry {key!r} must be an object with mean, std, count")
    for field in ("mean", "std", "count"):
        if field not in obj:
            raise DnasError(f"{where}: entry {key!r} lacks {field!r}")
    try:
        mean, std, count = float(obj["mean"]), float(obj["std"]), obj["count"]
    except (TypeError, ValueError):
        raise DnasError(f"{where}: entry {key!r} has a non-numeric mean or std") from None
    for name, v in (("mean", mean), ("std", std)):
        if not math.isfinite(v) or v < 0:
            raise DnasError(f"{where}: entry {key!r} has {name} {v}; latencies must be finite and >= 0")
    if isinstance(count, bool) or not isinstance(count, (int, float)) or count != int(count) or count < 1:
        raise DnasError(f"{where}: entry {key!r} has count {count!r}; it must be a positive integer")
    return LutEntry(mean, std, int(count))


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """A latency lookup table with the settings it was measured under.

    Args:
      entries: key -> :class:`LutEntry`.
      device: what ran it (``pixel1``, ``cpu:AMD EPYC 7B13``, ``gpu:H200``...).
      backend: runtime (``tflite``, ``xla``, ``pytorch``...).
      dtype: activation dtype (``float32``...).
      batch_size: batch size of the measurement.
      source: file or command the numbers come from.
      unit: time unit of mean/std (``ms``).

    Example:
      >>> t = LatencyTable({LutKey("conv", (8, 8, 3), (8, 8, 16), kernel=3): LutEntry(1.5)}, "cpu", "xla", "float32", 1)
      >>> t.mean("conv-input:8x8x3-output:8x8x16-kernel:3")
      1.5
    """

    entries: Mapping[LutKey, LutEntry]
    device: str
    backend: str
    dtype: str
    batch_size: int
    source: str = ""
    unit: str = "ms"

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            key = LutKey.parse(key)
        return key in self.entries

    def lookup(self, key: LutKey | str) -> LutEntry:
        """The entry for ``key``; a key with no entry raises DnasError naming it."""
        k = as_key(key)
        try:
            return self.entries[k]
        except KeyError:
            raise DnasError(f"the {self.device} latency table has no entry for {str(k)!r} ({len(self)} entries)") from None

    def mean(self, key: LutKey | str) -> float:
        """Mean latency of ``key`` in :attr:`unit`."""
        return self.lookup(key).mean

    def missing(self, required: Mapping[str, LutKey | str]) -> list[str]:
        """Names in ``required`` (name -> key) whose key has no entry."""
        return [name for name, key in required.items() if as_key(key) not in self.entries]

    def require(self, required: Mapping[str, LutKey | str]) -> None:
        """Raises one DnasError line if an op the space uses (name -> key) has no entry.

        Args:
          required: e.g. ``{"stage3/block1/op=k5_e6": "expanded_conv-input:..."}``.
        """
        missing = self.missing(required)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DnasError(f"the {self.device} latency table has no entry for space op {missing[0]} (key {str(as_key(required[missing[0]]))!r}){more}")

    # ----- JSON ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON object described in the module docstring."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "device": self.device,
            "backend": self.backend,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "source": self.source,
            "unit": self.unit,
            "entries": {str(k): {"mean": e.mean, "std": e.std, "count": e.count} for k, e in self.entries.items()},
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "latency table") -> "LatencyTable":
        """Builds and validates a table from its JSON object (``where`` names it in errors)."""
        if not isinstance(obj, Mapping):
            raise DnasError(f"{where}: expected a JSON object with 'schema', 'version', 'entries'")
        if obj.get("schema") != SCHEMA:
            raise DnasError(f"{where}: 'schema' is {obj.get('schema')!r}, expected {SCHEMA!r}")
        if obj.get("version") != SCHEMA_VERSION:
            raise DnasError(f"{where}: version {obj.get('version')!r} is not supported; this dnas reads version {SCHEMA_VERSION}")
        for field in (*METADATA, "entries"):
            if field not in obj:
                raise DnasError(f"{where}: lacks {field!r}")
        batch = obj["batch_size"]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise DnasError(f"{where}: batch_size {batch!r} must be a positive integer")
        if not isinstance(obj["entries"], Mapping) or not obj["entries"]:
            raise DnasError(f"{where}: 'entries' must be a non-empty object key -> {{mean, std, count}}")
        entries: dict[LutKey, LutEntry] = {}
        for key, value in obj["entries"].items():
            k = LutKey.parse(key)
            if k in entries:
                raise DnasError(f"{where}: {key!r} is listed twice (as another spelling of {str(k)!r})")
            entries[k] = _entry(key, value, where)
        return cls(entries, str(obj["device"]), str(obj["backend"]), str(obj["dtype"]), batch, str(obj.get("source", "")), str(obj.get("unit", "ms")))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the JSON atomically (temporary file in the same folder, then rename), so a
        reader never sees half a table and an interrupted write leaves the old one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=1, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """Reads and validates a table written by :meth:`save` (or by hand)."""
        path = Path(path)
        text = read_text(path, "latency table")  # missing, a folder or not UTF-8: one line
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DnasError(f"latency table {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}") from None
        return cls.from_json(obj, where=f"latency table {str(path)!r}")

