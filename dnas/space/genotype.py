"""Genotypes: derived discrete architectures, their JSON form and the published cells.

- :class:`CellGenotype`: a DARTS-style cell, ``edges`` = ((op, input_state), ...) two per
  intermediate node, ``concat`` = states concatenated at the output.
- :class:`DartsGenotype`: one normal and one reduction cell shared by the whole network
  (micro search). :class:`MacroGenotype`: one cell per layer (macro search).
- :class:`NB201Genotype`: a NAS-Bench-201 cell, parsed from / printed as the benchmark's
  ``arch_str``.

JSON carries ``"schema": "dnas.genotype/1"`` and ``"kind"``. Every kind is a class
registered with :func:`register_genotype`: it has ``to_json()``, a ``from_json(obj)``
classmethod, ``space`` (the registered space whose ``network()`` builds it), ``__str__``,
``dot_graphs()`` (Graphviz pictures for ``dnas show``) and optionally a ``parse(text)``
classmethod for a one-line string form (NB201's ``arch_str``). The published cells (DARTS
V1/V2, PC-DARTS, GDAS, ENAS, NASNet-A, AmoebaNet-A) ship as data in
``dnas/space/genotypes.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError
from dnas.core.io import read_json
from dnas.space.ops import OPS
from dnas.core.registry import Registry

SCHEMA = "dnas.genotype/1"

GENOTYPES: Registry[type] = Registry("genotype kind", builtins="dnas.space.spaces")
"""Genotype classes by their JSON ``kind``."""


def register_genotype(kind: str):
    """Class decorator registering a genotype class under its JSON ``kind``."""

    def deco(cls: type) -> type:
        for method in ("to_json", "from_json", "dot_graphs"):
            if not callable(getattr(cls, method, None)):
                raise DnasError(f"genotype kind {kind!r} ({cls.__name__}) lacks the method {method}()")
        if not isinstance(getattr(cls, "space", None), str):
            raise DnasError(f"genotype kind {kind!r} ({cls.__name__}) must name its space in a class attribute 'space'")
        cls.kind = kind
        GENOTYPES.add(kind, cls)
        return cls

    return deco


def _check_op(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in OPS:
        raise DnasError(f"{where}: {OPS.unknown(name)}")
    return name


@dataclasses.dataclass(frozen=True)
class CellGenotype:
    """A DARTS-style cell: ``per_node`` (op, input) edges per node (2 in DARTS), listed node
    by node; states 0,1 are the cell inputs and node ``n`` is state ``2 + n``."""

    edges: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]
    per_node: int = 2

    def __post_init__(self) -> None:
        edges = tuple((str(op), int(i)) for op, i in self.edges)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "concat", tuple(int(c) for c in self.concat))
        k = int(self.per_node)
        object.__setattr__(self, "per_node", k)
        if k < 1 or len(edges) % k or not edges:
            raise DnasError(f"a cell needs {k} edges per node, got {len(edges)} edges")
        for e, (op, inp) in enumerate(edges):
            _check_op(op, f"cell edge {e}")
            node = 2 + e // k
            if not 0 <= inp < node:
                raise DnasError(f"cell edge {e} (node {node}) reads state {inp}; it may only read states 0..{node - 1}")
        n_states = 2 + len(edges) // k
        if not self.concat or any(not 0 <= c < n_states for c in self.concat):
            raise DnasError(f"cell concat {self.concat} must list states in 0..{n_states - 1}")

    @property
    def steps(self) -> int:
        """Number of intermediate nodes."""
        return len(self.edges) // self.per_node

    def node_edges(self, node: int) -> range:
        """Indices into ``edges`` of intermediate node ``node`` (0-based)."""
        return range(node * self.per_node, (node + 1) * self.per_node)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"edges": [list(e) for e in self.edges], "concat": list(self.concat)}
        if self.per_node != 2:
            out["per_node"] = self.per_node
        return out

    def dot(self, name: str) -> str:
        """Graphviz DOT of the cell (inputs c_{k-2}, c_{k-1}; nodes 0..n-1; output c_{k})."""
        lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eeeeee"];']
        lines += ['  "c_{k-2}" [fillcolor="#a6d8f0"];', '  "c_{k-1}" [fillcolor="#a6d8f0"];', '  "c_{k}" [fillcolor="#f7e08a"];']
        label = lambda s: "c_{k-2}" if s == 0 else "c_{k-1}" if s == 1 else str(s - 2)  # noqa: E731
        for e, (op, inp) in enumerate(self.edges):
            lines.append(f'  "{label(inp)}" -> "{e // self.per_node}" [label="{op}"];')
        for st in self.concat:
            lines.append(f'  "{label(st)}" -> "c_{{k}}";')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _cell_from_json(obj: Any) -> CellGenotype:
    return CellGenotype([tuple(e) for e in obj["edges"]], obj["concat"], obj.get("per_node", 2))


@register_genotype("darts")
@dataclasses.dataclass(frozen=True)
class DartsGenotype:
    """Micro genotype: every normal cell is ``normal``, every reduction cell ``reduce``."""

    normal: CellGenotype
    reduce: CellGenotype
    space = "darts"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "DartsGenotype":
        return cls(
            CellGenotype([tuple(e) for e in obj["normal"]], obj["normal_concat"], obj.get("per_node", 2)),
            CellGenotype([tuple(e) for e in obj["reduce"]], obj["reduce_concat"], obj.get("per_node", 2)),
        )

    def dot_graphs(self) -> dict[str, str]:
        """``{"cell_normal": DOT, "cell_reduce": DOT}``."""
        return {"cell_normal": self.normal.dot("normal"), "cell_reduce": self.reduce.dot("reduce")}

    def cell(self, index: int, reduction: bool) -> CellGenotype:
        """The cell used at layer ``index``."""
        return self.reduce if reduction else self.normal

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": "darts",
            "normal": [list(e) for e in self.normal.edges],
            "normal_concat": list(self.normal.concat),
            "reduce": [list(e) for e in self.reduce.edges],
            "reduce_concat": list(self.reduce.concat),
            **({"per_node": self.normal.per_node} if self.normal.per_node != 2 else {}),
        }

    def __str__(self) -> str:
        return (
            f"Genotype(normal={list(self.normal.edges)}, normal_concat={list(self.normal.concat)}, "
            f"reduce={list(self.reduce.edges)}, reduce_concat={list(self.reduce.concat)})"
        )


@register_genotype("darts_macro")
@dataclasses.dataclass(frozen=True)
class MacroGenotype:
    """Macro genotype: one cell per layer, in order."""

    cells: tuple[CellGenotype, ...]
    space = "darts"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "MacroGenotype":
        return cls(tuple(_cell_from_json(c) for c in obj["cells"]))

    def dot_graphs(self) -> dict[str, str]:
        """``{"cell_<i>": DOT}`` per layer."""
        return {f"cell_{i}": c.dot(f"cell{i}") for i, c in enumerate(self.cells)}

    def cell(self, index: int, reduction: bool) -> CellGenotype:
        if not 0 <= index < len(self.cells):
            raise DnasError(f"macro genotype has {len(self.cells)} cells; the network asks for cell {index}")
        return self.cells[index]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "darts_macro", "cells": [c.to_json() for c in self.cells]}

    def __str__(self) -> str:
        return "MacroGenotype(\n" + "\n".join(f"  cell {i}: {list(c.edges)} concat={list(c.concat)}" for i, c in enumerate(self.cells)) + "\n)"


NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 3  # nodes after the cell's input node 0
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@register_genotype("nb201")
@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: ``nodes[j-1]`` = ((op, from_node), ...) for nodes j = 1..3."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]
    space = "nb201"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "NB201Genotype":
        return cls.from_arch_str(obj["arch_str"], ops=None)  # a run's space may have other ops

    @classmethod
    def parse(cls, text: str) -> "NB201Genotype | None":
        """The genotype of an ``arch_str`` (``|op~0|+|...|``), or None for other text."""
        return cls.from_arch_str(text) if text.startswith("|") and "~" in text else None

    def dot(self, name: str = "nb201") -> str:
        """Graphviz DOT of the cell (``none`` edges omitted)."""
        lines = [f'digraph "{name}" {{', "  rankdir=LR;", "  node [shape=circle];"]
        for j, node in enumerate(self.nodes, start=1):
            for op, i in node:
                if op != "none":
                    lines.append(f'  "{i}" -> "{j}" [label="{op}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def dot_graphs(self) -> dict[str, str]:
        """``{"cell_nb201": DOT}``."""
        return {"cell_nb201": self.dot()}

    def __post_init__(self) -> None:
        """Checks that this is an NB201 cell: 3 nodes after the input, node ``j`` reading each
        of nodes ``0..j-1`` exactly once (edges kept in that order), registered ops.

        Why: a 2- or 4-node string, or a node reading one input twice, built a network that
        is not an NB201 cell (and has no row in the benchmark's table) without a word.
        """
        nodes = tuple(tuple((str(op), int(i)) for op, i in node) for node in self.nodes)
        if len(nodes) != NB201_NODES:
            raise DnasError(f"an NB201 cell has {NB201_NODES} nodes ('+'-separated groups), got {len(nodes)}; e.g. {NB201_EXAMPLE!r}")
        for j, node in enumerate(nodes, start=1):
            for op, i in node:
                _check_op(op, f"NB201 node {j}")
                if not 0 <= i < j:
                    raise DnasError(f"NB201 node {j} reads node {i}; it may only read nodes 0..{j - 1}")
            inputs = sorted(i for _, i in node)
            if inputs != list(range(j)):
                twice = sorted({i for i in inputs if inputs.count(i) > 1})
                problem = f"reads node {twice[0]} twice" if twice else f"reads nodes {inputs}"
                raise DnasError(f"NB201 node {j} {problem}; it must read each of nodes 0..{j - 1} once (|op~0|...|op~{j - 1}|)")
        object.__setattr__(self, "nodes", tuple(tuple(sorted(node, key=lambda e: e[1])) for node in nodes))

    @classmethod
    def from_arch_str(cls, s: str, ops: Sequence[str] | None = NB201_OPS) -> "NB201Genotype":
        """Parses ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

        Args:
          s: the benchmark's ``arch_str``.
          ops: the ops a cell may use: the benchmark's five by default (a typed string);
            None for any registered op (a saved run of an NB201 space with other ops).
        """
        if not isinstance(s, str):
            raise DnasError(f"an NB201 arch_str is text, got {s!r}")
        try:
            nodes = []
            for part in s.strip().split("+"):
                items = [x for x in part.strip().split("|") if x]
                pairs = [it.partition("~") for it in items]
                if any(not sep or not op for op, sep, _ in pairs):
                    raise ValueError(part)
                nodes.append(tuple((op, int(i)) for op, _, i in pairs))
        except ValueError:
            raise DnasError(f"malformed NB201 arch_str {s!r}; expected like {NB201_EXAMPLE!r}") from None
        if ops is not None:
            for node in nodes:
                for op, _ in node:
                    if op not in ops:
                        close = difflib.get_close_matches(op, ops, n=1)
                        hint = f"did you mean {close[0]!r}? " if close else ""
                        whose = "NAS-Bench-201's" if tuple(ops) == NB201_OPS else "this space's"
                        raise DnasError(f"{op!r} is not one of {whose} {len(ops)} ops ({', '.join(ops)}); {hint}an NB201 arch_str names only these")
        return cls(tuple(nodes))

    def arch_str(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "nb201", "arch_str": self.arch_str()}

    def __str__(self) -> str:
        return self.arch_str()


@register_genotype("nb201_macro")
@dataclasses.dataclass(frozen=True)
class NB201MacroGenotype:
    """An NB201 network searched per cell (``NB201Space(shared=False)``): one cell per position."""

    cells: tuple[NB201Genotype, ...]
    space = "nb201"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "NB201MacroGenotype":
        return cls(tuple(NB201Genotype.from_arch_str(c, ops=None) for c in obj["cells"]))

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "nb201_macro", "cells": [c.arch_str() for c in self.cells]}

    def dot_graphs(self) -> dict[str, str]:
        """``{"cell_<i>": DOT}`` per cell."""
        return {f"cell_{i}": c.dot(f"cell{i}") for i, c in enumerate(self.cells)}

    def __str__(self) -> str:
        return "NB201MacroGenotype(" + ", ".join(c.arch_str() for c in self.cells) + ")"


Genotype = Any
"""An instance of a registered genotype class (:data:`GENOTYPES`)."""


def from_json(obj: dict[str, Any]) -> Genotype:
    """Builds a genotype from its JSON object; malformed input raises one clear DnasError."""
    if not isinstance(obj, dict):
        raise DnasError("a genotype JSON must be an object with 'schema' and 'kind'")
    schema = obj.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise DnasError(f"genotype schema {schema!r} is not supported; this dnas reads {SCHEMA!r}")
    kind = obj.get("kind", "darts")
    cls = GENOTYPES[kind]
    try:
        return cls.from_json(obj)
    except KeyError as e:
        raise DnasError(f"genotype JSON of kind {kind!r} lacks the key {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, DnasError):
            raise
        raise DnasError(f"malformed genotype JSON of kind {kind!r}: {e}") from None


def save(genotype: Genotype, path: str | Path) -> None:
    """Writes ``genotype`` as JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(genotype.to_json(), indent=1) + "\n")
    tmp.replace(path)


def load(path: str | Path) -> Genotype:
    """Reads a genotype JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DnasError(f"genotype file {str(path)!r} does not exist")
    return from_json(read_json(path, "genotype file"))  # not UTF-8 or not JSON: one line naming the file


def _published() -> dict[str, dict[str, Any]]:
    text = resources.files("dnas.space").joinpath("genotypes.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def published_names() -> list[str]:
    """Names of the shipped published genotypes."""
    return sorted(_published())


def get(name_or_path: str) -> Genotype:
    """A genotype from a published name (``DARTS_V2``), a genotype JSON file, a run
    directory (its ``genotype.json``) or a registered kind's string form (an NB201
    ``arch_str``)."""
    table = _published()
    if name_or_path in table:
        return from_json(table[name_or_path])
    for kind in GENOTYPES:
        parse = getattr(GENOTYPES[kind], "parse", None)
        parsed = parse(name_or_path) if parse is not None else None
        if parsed is not None:
            return parsed
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise DnasError(f"{name_or_path!r} is a folder without genotype.json; pass a dnas run directory")
        return load(path / "genotype.json")
    if path.suffix == ".json" or path.exists():
        return load(name_or_path)
    raise DnasError(
        f"{name_or_path!r} is neither a published genotype ({', '.join(sorted(table))}), a run directory, "
        "a genotype JSON file nor an NB201 arch_str"
    )


def cell_from_pairs(pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> CellGenotype:
    """Convenience constructor from DARTS' list-of-pairs form."""
    return CellGenotype(tuple(pairs), tuple(concat))
