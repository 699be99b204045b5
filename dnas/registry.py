"""Name -> object registries (ops, relaxations, spaces, strategies).

Registries are plain objects rather than module-level dicts so that duplicate names fail
loudly and unknown names list what is available (DESIGN.md, "Extension points").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dnas.errors import DnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries with helpful errors.

    Args:
      kind: what the entries are ("op", "relaxation", ...), used in error messages.

    Example:
      >>> R = Registry[int]("number")
      >>> R.add("one", 1)
      >>> R["one"]
      1
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Registers ``item`` under ``name``; a name already taken raises DnasError."""
        if name in self._items:
            raise DnasError(f"{self.kind} {name!r} is already registered; pick another name")
        self._items[name] = item
        return item

    def decorator(self, name: str, wrap: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """Returns a decorator that registers ``wrap(fn)`` under ``name`` and returns ``fn``."""

        def deco(fn: Callable) -> Callable:
            self.add(name, wrap(fn))
            return fn

        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise DnasError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)
