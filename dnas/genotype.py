"""Genotypes: derived discrete architectures, their JSON form and the published cells.

- :class:`CellGenotype`: a DARTS-style cell, ``edges`` = ((op, input_state), ...) two per
  intermediate node, ``concat`` = states concatenated at the output.
- :class:`DartsGenotype`: one normal and one reduction cell shared by the whole network
  (micro search). :class:`MacroGenotype`: one cell per layer (macro search).
- :class:`NB201Genotype`: a NAS-Bench-201 cell, parsed from / printed as the benchmark's
  ``arch_str``.

JSON carries ``"schema": "dnas.genotype/1"`` and ``"kind"``. The published cells (DARTS
V1/V2, PC-DARTS, GDAS, ENAS, NASNet-A, AmoebaNet-A) ship as data in
``dnas/data/genotypes.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Union

from dnas.errors import DnasError
from dnas.ops import OPS

SCHEMA = "dnas.genotype/1"


def _check_op(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in OPS:
        raise DnasError(f"{where}: unknown op {name!r}; known ops: {', '.join(OPS.names())}")
    return name


@dataclasses.dataclass(frozen=True)
class CellGenotype:
    """A DARTS-style cell: two (op, input) edges per node; states 0,1 are the cell inputs."""

    edges: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        edges = tuple((str(op), int(i)) for op, i in self.edges)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "concat", tuple(int(c) for c in self.concat))
        if len(edges) % 2 or not edges:
            raise DnasError(f"a cell needs two edges per node, got {len(edges)} edges")
        for e, (op, inp) in enumerate(edges):
            _check_op(op, f"cell edge {e}")
            node = 2 + e // 2
            if not 0 <= inp < node:
                raise DnasError(f"cell edge {e} (node {node}) reads state {inp}; it may only read states 0..{node - 1}")
        n_states = 2 + len(edges) // 2
        if not self.concat or any(not 0 <= c < n_states for c in self.concat):
            raise DnasError(f"cell concat {self.concat} must list states in 0..{n_states - 1}")

    @property
    def steps(self) -> int:
        """Number of intermediate nodes."""
        return len(self.edges) // 2

    def to_json(self) -> dict[str, Any]:
        return {"edges": [list(e) for e in self.edges], "concat": list(self.concat)}


@dataclasses.dataclass(frozen=True)
class DartsGenotype:
    """Micro genotype: every normal cell is ``normal``, every reduction cell ``reduce``."""

    normal: CellGenotype
    reduce: CellGenotype

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
        }

    def __str__(self) -> str:
        return (
            f"Genotype(normal={list(self.normal.edges)}, normal_concat={list(self.normal.concat)}, "
            f"reduce={list(self.reduce.edges)}, reduce_concat={list(self.reduce.concat)})"
        )


@dataclasses.dataclass(frozen=True)
class MacroGenotype:
    """Macro genotype: one cell per layer, in order."""

    cells: tuple[CellGenotype, ...]

    def cell(self, index: int, reduction: bool) -> CellGenotype:
        if not 0 <= index < len(self.cells):
            raise DnasError(f"macro genotype has {len(self.cells)} cells; the network asks for cell {index}")
        return self.cells[index]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "darts_macro", "cells": [c.to_json() for c in self.cells]}

    def __str__(self) -> str:
        return "MacroGenotype(\n" + "\n".join(f"  cell {i}: {list(c.edges)} concat={list(c.concat)}" for i, c in enumerate(self.cells)) + "\n)"


NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: ``nodes[j-1]`` = ((op, from_node), ...) for nodes j = 1..3."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]

    def __post_init__(self) -> None:
        nodes = tuple(tuple((str(op), int(i)) for op, i in node) for node in self.nodes)
        object.__setattr__(self, "nodes", nodes)
        for j, node in enumerate(nodes, start=1):
            for op, i in node:
                _check_op(op, f"NB201 node {j}")
                if not 0 <= i < j:
                    raise DnasError(f"NB201 node {j} reads node {i}; it may only read nodes 0..{j - 1}")

    @classmethod
    def from_arch_str(cls, s: str) -> "NB201Genotype":
        """Parses ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        try:
            nodes = []
            for part in s.strip().split("+"):
                items = [x for x in part.strip().split("|") if x]
                nodes.append(tuple((it.split("~")[0], int(it.split("~")[1])) for it in items))
        except (IndexError, ValueError):
            raise DnasError(f"malformed NB201 arch_str {s!r}; expected like '|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|'") from None
        return cls(tuple(nodes))

    def arch_str(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": "nb201", "arch_str": self.arch_str()}

    def __str__(self) -> str:
        return self.arch_str()


Genotype = Union[DartsGenotype, MacroGenotype, NB201Genotype]


def from_json(obj: dict[str, Any]) -> Genotype:
    """Builds a genotype from its JSON object; malformed input raises one clear DnasError."""
    if not isinstance(obj, dict):
        raise DnasError("a genotype JSON must be an object with 'schema' and 'kind'")
    schema = obj.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise DnasError(f"genotype schema {schema!r} is not supported; this dnas reads {SCHEMA!r}")
    kind = obj.get("kind", "darts")
    try:
        if kind == "darts":
            return DartsGenotype(
                CellGenotype([tuple(e) for e in obj["normal"]], obj["normal_concat"]),
                CellGenotype([tuple(e) for e in obj["reduce"]], obj["reduce_concat"]),
            )
        if kind == "darts_macro":
            return MacroGenotype(tuple(CellGenotype([tuple(e) for e in c["edges"]], c["concat"]) for c in obj["cells"]))
        if kind == "nb201":
            return NB201Genotype.from_arch_str(obj["arch_str"])
    except KeyError as e:
        raise DnasError(f"genotype JSON of kind {kind!r} lacks the key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, DnasError):
            raise
        raise DnasError(f"malformed genotype JSON of kind {kind!r}: {e}") from None
    raise DnasError(f"unknown genotype kind {kind!r}; known: darts, darts_macro, nb201")


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
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DnasError(f"genotype file {str(path)!r} is not valid JSON: {e}") from None
    return from_json(obj)


def _published() -> dict[str, dict[str, Any]]:
    text = resources.files("dnas").joinpath("data/genotypes.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def published_names() -> list[str]:
    """Names of the shipped published genotypes."""
    return sorted(_published())


def get(name_or_path: str) -> Genotype:
    """A published genotype by name (``DARTS_V2``), a JSON file path, or an NB201 arch_str."""
    table = _published()
    if name_or_path in table:
        return from_json(table[name_or_path])
    if name_or_path.startswith("|") and "~" in name_or_path:
        return NB201Genotype.from_arch_str(name_or_path)
    if Path(name_or_path).suffix == ".json" or Path(name_or_path).exists():
        return load(name_or_path)
    raise DnasError(f"{name_or_path!r} is neither a published genotype ({', '.join(sorted(table))}) nor a JSON file")


def cell_from_pairs(pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> CellGenotype:
    """Convenience constructor from DARTS' list-of-pairs form."""
    return CellGenotype(tuple(pairs), tuple(concat))
