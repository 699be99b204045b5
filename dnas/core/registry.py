"""Name -> object registries (ops, relaxations, spaces, strategies).

Registries are plain objects rather than module-level dicts so that duplicate names fail
loudly and unknown names list what is available (DESIGN.md, "Extension points").
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dnas.core.errors import DnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries with helpful errors.

    Args:
      kind: what the entries are ("op", "relaxation", ...), used in error messages.
      builtins: a module to import before the first lookup (where the built-in entries
        register themselves), so a registry never looks empty because of import order.

    Example:
      >>> R = Registry[int]("number")
      >>> R.add("one", 1)
      >>> R["one"]
      1
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            import importlib

            importlib.import_module(module)

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
        self._load()
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from a malformed config
            raise DnasError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The one-line message for an unknown ``name``: every registered name, then the
        closest one ("did you mean"). One place, so every registry lookup says it."""
        self._load()
        names = sorted(self._items)
        close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
        return f"unknown {self.kind} {name!r}; known {plural}: {', '.join(names)}{hint}"

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._items)
