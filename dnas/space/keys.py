"""What a space's candidates *are*, position by position: the key of a per-op cost table.

A per-op cost (a measured latency, a MAC count) depends on the op and where it sits (its
input and output shapes, stride, kernel, expansion). :class:`LutKey` names that, in the
ProxylessNAS / once-for-all string format the published latency tables use (Cai et al.,
ICLR 2019; Cai et al., ICLR 2020)::

    <op>-input:HxWxC-output:HxWxC[-expand:e][-kernel:k][-stride:s][-<name>:<value>...]

e.g. ``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``.
``expand`` holds what the source writes: the expansion *ratio* in ProxylessNAS' table,
the expanded *channel count* in once-for-all's. Extra fields (``idskip``, ``se``, ``hs``,
or a ``position`` of your own) keep their names. A shape is ``x``-separated positive ints
(``1000`` for a classifier's output).

A space whose candidates have such keys says so by subclassing :class:`KeyedSpace` (an
explicit contract, not a method looked up by name): the hardware layer then prices it with
any per-op table (:mod:`dnas.hardware.cost_models`: ``lut``, ``counts``) and measures it
(``dnas lut build``). The keys live here, in the space layer, because they describe the
space; the tables that price them live in :mod:`dnas.hardware.lut`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Union

from flax import nnx

from dnas.core.errors import DnasError

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



PositionKeys = dict[str, list[list[Union[LutKey, None]]]]
"""``label -> positions``, each position a list aligned with the label's candidates giving
the key of that candidate there, or None for a candidate that costs nothing (a zero op, a
skipped block). A label used at several positions (a shared cell) lists each."""


class KeyedSpace(abc.ABC):
    """Mixin of a :class:`~dnas.space.base.SearchSpace` whose candidates have per-op table keys.

    A subclass is priced by every per-op cost table (a latency LUT, MAC/parameter counts
    per key) and can be measured key by key. A space's cost is then additive over its
    positions, which holds for layer-wise spaces such as ProxylessNAS (a block's cost
    depends only on its op and position).

    Example:
      >>> class MySpace(SearchSpace, KeyedSpace):                          # doctest: +SKIP
      ...     def lut_keys(self, resolution=224): return {"l1/op": [[LutKey("conv", ...), None]]}, []
      ...     def lut_module(self, key, *, rngs): return MyConv(key, rngs=rngs)
    """

    @abc.abstractmethod
    def lut_keys(self, resolution: int = 224) -> tuple[PositionKeys, list[LutKey]]:
        """The keys of the network at input size ``resolution``.

        Returns:
          ``(label -> positions -> one key per candidate (None: costs nothing), fixed keys)``;
          the fixed keys are the parts no choice changes (stem, head), summed.
        """

    @abc.abstractmethod
    def lut_module(self, key: LutKey, *, rngs: nnx.Rngs) -> nnx.Module:
        """The module a key stands for, called as ``module(x)`` on ``x`` of shape
        ``(batch, *key.input_shape)`` (what ``dnas lut build`` times and the counter counts)."""
