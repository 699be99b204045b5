"""Latency lookup tables: one schema, JSON (de)serialisation, validation on load.

A table maps an op *at given shapes and settings* to its measured latency, and records
where the numbers come from (device, backend, dtype, batch size, source). The entry key
is the ProxylessNAS / once-for-all string format, the one the published tables use
(Cai et al., ICLR 2019; Cai et al., ICLR 2020)::

    <op>-input:HxWxC-output:HxWxC[-expand:e][-kernel:k][-stride:s][-<name>:<value>...]

e.g. ``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``.
``expand`` holds what the source writes: the expansion *ratio* in ProxylessNAS' table,
the expanded *channel count* in once-for-all's. Extra fields (``idskip``, ``se``, ``hs``,
or a ``position`` of your own) keep their names. A shape is ``x``-separated positive ints
(``1000`` for a classifier's output).

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
from typing import Any, Union

from dnas.core.errors import DnasError

SCHEMA = "dnas.latency_table"
SCHEMA_VERSION = 1
METADATA = ("device", "backend", "dtype", "batch_size")
# Extra fields in the order the published tables write them, so keys round-trip exactly.
_EXTRA_ORDER = ("idskip", "se", "hs")
_KEY_EXAMPLE = "'expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2'"

Scalar = Union[int, float, str]


def _number(text: str) -> Scalar:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, anything else stays a string."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _shape(text: str, where: str, key: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise DnasError(f"malformed LUT key {key!r}: {where} shape {text!r} is not positive ints joined by 'x' (like 112x112x16)")
    return dims


@dataclasses.dataclass(frozen=True)
class LutKey:
    """What a table entry is measured for.

    Args:
      op: op name as the source writes it (``expanded_conv``, ``Conv``, ``k5_e6``...).
      input_shape: input activation shape without batch, e.g. ``(112, 112, 16)``.
      output_shape: output shape without batch.
      expand: expansion (ratio or channels, as the source writes it), if any.
      kernel: kernel size, if any.
      stride: stride, if any.
      extra: further ``(name, value)`` fields (``idskip``, ``se``, ``hs``, ``position``...);
        order does not matter (stored sorted).
    """

    op: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    expand: int | float | None = None
    kernel: int | None = None
    stride: int | None = None
    extra: tuple[tuple[str, Scalar], ...] = ()

    def __post_init__(self) -> None:
        if not self.op or "-" in self.op or ":" in self.op:
            raise DnasError(f"LUT op name {self.op!r} must be non-empty without '-' or ':'")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "output_shape", tuple(int(d) for d in self.output_shape))
        object.__setattr__(self, "extra", tuple(sorted((str(k), v) for k, v in dict(self.extra).items())))

    def __str__(self) -> str:
        parts = [self.op, "input:" + "x".join(map(str, self.input_shape)), "output:" + "x".join(map(str, self.output_shape))]
        for name in ("expand", "kernel", "stride"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}:{value}")
        extra = dict(self.extra)
        names = [n for n in _EXTRA_ORDER if n in extra] + sorted(n for n in extra if n not in _EXTRA_ORDER)
        parts += [f"{n}:{extra[n]}" for n in names]
        return "-".join(parts)

    @classmethod
    def parse(cls, key: str) -> "LutKey":
        """Parses the string form; a malformed key raises one DnasError line naming it."""
        if not isinstance(key, str) or not key:
            raise DnasError(f"malformed LUT key {key!r}: expected a string like {_KEY_EXAMPLE}")
        op, *fields = key.split("-")
        values: dict[str, str] = {}
        for f in fields:
            name, sep, value = f.partition(":")
            if not sep or not name or not value:
                raise DnasError(f"malformed LUT key {key!r}: field {f!r} is not name:value; expected like {_KEY_EXAMPLE}")
            if name in values:
                raise DnasError(f"malformed LUT key {key!r}: field {name!r} appears twice")
            values[name] = value
        for need in ("input", "output"):
            if need not in values:
                raise DnasError(f"malformed LUT key {key!r}: no {need}:HxWxC field; expected like {_KEY_EXAMPLE}")
        kw: dict[str, Any] = {}
        for name in ("kernel", "stride"):
            if name in values:
                v = _number(values.pop(name))
                if not isinstance(v, int) or v <= 0:
                    raise DnasError(f"malformed LUT key {key!r}: {name} must be a positive int")
                kw[name] = v
        if "expand" in values:
            v = _number(values.pop("expand"))
            if isinstance(v, str) or v <= 0:
                raise DnasError(f"malformed LUT key {key!r}: expand must be a positive number")
            kw["expand"] = v
        inp, out = values.pop("input"), values.pop("output")
        return cls(op, _shape(inp, "input", key), _shape(out, "output", key), extra=tuple((n, _number(v)) for n, v in values.items()), **kw)


def as_key(key: LutKey | str) -> LutKey:
    """A :class:`LutKey` from itself or its string form."""
    return key if isinstance(key, LutKey) else LutKey.parse(key)


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
        try:
            text = path.read_text()
        except OSError as e:
            raise DnasError(f"cannot read latency table {str(path)!r}: {e.strerror or e}") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DnasError(f"latency table {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}") from None
        return cls.from_json(obj, where=f"latency table {str(path)!r}")

