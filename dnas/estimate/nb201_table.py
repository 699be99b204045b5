"""The NAS-Bench-201 table as a pure JAX lookup (Dong & Yang, ICLR 2020; NATS-Bench,
Dong et al., TPAMI 2021).

``nb201_table.csv`` (one row per cell, ``arch_str`` plus numeric columns) is read once
with numpy; every row's ``arch_str`` is parsed into the NB201 space's vector, and an
index array over the 5^6 mixed-radix codes maps a vector to its row. A query is then two
gathers, so a strategy and the table run inside one jitted loop.

The path: the ``table`` argument; when empty, the environment variable
``DNAS_NB201_TABLE`` (as the NATS-Bench API finds its files through ``TORCH_HOME``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import read_csv
from dnas.estimate import ESTIMATORS, Estimator
from dnas.space.genotype import NB201_OPS
from dnas.space.spaces.nb201 import NB201Space

ENV = "DNAS_NB201_TABLE"
REQUIRED = ("arch_str", "cifar10_val_12ep", "cifar10_test_200ep", "cifar10_valid_12ep_time_s")


def table_path(table: str = "") -> str:
    """``table``, else ``$DNAS_NB201_TABLE``; a one-line DnasError when neither is set."""
    path = table or os.environ.get(ENV, "")
    if not path:
        raise DnasError(f"no NAS-Bench-201 table: set config.table (or the environment variable {ENV}) to the path of nb201_table.csv")
    if not Path(path).is_file():
        raise DnasError(f"NAS-Bench-201 table {path!r} does not exist; set config.table or {ENV} to nb201_table.csv")
    return path


def _radix(space: NB201Space) -> np.ndarray:
    return np.array([space.num_candidates[i + 1 :].prod() for i in range(len(space))], np.int64)




@functools.lru_cache(maxsize=4)
def load_table(path: str, mtime: float = 0.0) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Reads the CSV: ``(numeric column names, values f32[rows, C], row_of_code int32[5^6])``.

    Raises DnasError (one line) for a missing column, an unparsable ``arch_str``, a
    non-numeric or NaN value, a repeated cell, or a cell missing from the table.
    ``mtime`` is only part of the cache key, so an edited file is read again.
    """
    space = NB201Space()
    header, rows = read_csv(path, "NAS-Bench-201 table")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DnasError(f"NAS-Bench-201 table {path!r} lacks column {missing[0]!r}; it needs {', '.join(REQUIRED)}")
    a = header.index("arch_str")
    names = tuple(c for i, c in enumerate(header) if i != a and c != "index")
    cols = [header.index(c) for c in names]
    radix = _radix(space)
    values = np.empty((len(rows), len(names)), np.float32)
    row_of_code = np.full(space.num_configurations(), -1, np.int32)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise DnasError(f"NAS-Bench-201 table {path!r}, row {r + 2}: {len(row)} fields, the header has {len(header)}")
        try:
            vec = space.arch_str_to_vec(row[a])
        except DnasError:
            raise DnasError(f"NAS-Bench-201 table {path!r}, row {r + 2}: cannot parse arch_str {row[a]!r}") from None
        code = int(vec @ radix)
        if row_of_code[code] >= 0:
            raise DnasError(f"NAS-Bench-201 table {path!r}, row {r + 2}: cell {row[a]} appears twice")
        row_of_code[code] = r
        try:
            values[r] = [float(row[c]) for c in cols]
        except ValueError:
            raise DnasError(f"NAS-Bench-201 table {path!r}, row {r + 2}: a value is not a number") from None
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        r, c = bad[0]
        raise DnasError(f"NAS-Bench-201 table {path!r}, row {r + 2}: column {names[c]!r} is {values[r, c]} (NaN or inf)")
    if (row_of_code < 0).any():
        raise DnasError(f"NAS-Bench-201 table {path!r} covers {int((row_of_code >= 0).sum())} of {len(row_of_code)} cells; it must list every cell")
    return names, values, row_of_code


def table_values(path: str, vecs: np.ndarray, metric: str) -> np.ndarray:
    """The table's ``metric`` column for cells ``vecs int[N, 6]`` (the benchmark space's
    vector order), ``f64[N]``; an unknown column names the known ones."""
    names, values, row_of_code = load_table(path, os.path.getmtime(path))
    if metric not in names:
        raise DnasError(f"the table has no column {metric!r}; choose one of {', '.join(names)}")
    rows = row_of_code[np.asarray(vecs, np.int64) @ _radix(NB201Space())]
    return values[rows, names.index(metric)].astype(np.float64)


def table_row(path: str, arch_str: str) -> dict[str, float]:
    """Every numeric column of the table row of cell ``arch_str`` (the table validated whole,
    as :func:`load_table` reads it)."""
    vec = NB201Space().arch_str_to_vec(arch_str)
    names, values, row_of_code = load_table(os.path.abspath(table_path(path)), os.path.getmtime(table_path(path)))
    return dict(zip(names, values[row_of_code[int(vec.astype(np.int64) @ _radix(NB201Space()))]].tolist()))


def nb201_table(space: NB201Space, table: str = "", cost: str = "cifar10_valid_12ep_time_s") -> Estimator:
    """The NAS-Bench-201 table as an estimator (pure lookup).

    Args:
      space: ``NB201Space()`` (micro, the benchmark's five ops in their order).
      table: path of ``nb201_table.csv`` ('' = ``$DNAS_NB201_TABLE``).
      cost: the column charged per query (the benchmark's ``cifar10_valid_12ep_time_s``:
        12 epochs of training + one validation pass).
    Returns:
      an :class:`Estimator` returning every numeric column (accuracies, ``lat_ms_*``,
      times) as ``f32[P]``; the key is unused (the table holds one value per cell).
    """
    if not isinstance(space, NB201Space) or not space.shared or space.ops != NB201_OPS:
        raise DnasError("the nb201_table estimator needs the benchmark's space: space='nb201' with its default ops and shared=True")
    path = table_path(table)
    names, values, row_of_code = load_table(os.path.abspath(path), os.path.getmtime(path))
    if cost not in names:
        raise DnasError(f"cost column {cost!r} is not in the table; columns: {', '.join(names)}")
    vals, rows, radix = jnp.asarray(values), jnp.asarray(row_of_code), jnp.asarray(_radix(space).astype(np.int32))
    j_cost = names.index(cost)

    def evaluate(archs: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        del key
        got = vals[rows[archs.astype(jnp.int32) @ radix]]  # f32[P, C]
        return {n: got[:, j] for j, n in enumerate(names)}, got[:, j_cost]

    return Estimator(evaluate, names, True, float(values[:, j_cost].min()), space.arch_str)


ESTIMATORS.add("nb201_table", nb201_table)
