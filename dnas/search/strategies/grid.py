"""Grid search: every architecture of the space, once each, in a fixed (mixed-radix) order.

The exhaustive baseline (e.g. the brute-force scan NAS-Bench-201 reports as "optimal",
Dong & Yang, ICLR 2020). Only for spaces small enough to list.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.core.types import PRNGKey

MAX_GRID = 1_000_000


def enumerate_space(space: SearchSpace, max_size: int = MAX_GRID) -> np.ndarray:
    """All valid architectures, ``int32[size, n]``, the last label varying fastest.

    Raises DnasError (naming the size) when the space has more than ``max_size``
    configurations.
    """
    total = space.num_configurations()
    if total > max_size:
        raise DnasError(f"grid search lists every architecture, but this space has {total:.3g} configurations (limit {max_size:.0e}); use random, rea or reinforce")
    radix = space.num_candidates.astype(np.int64)
    codes = np.arange(total, dtype=np.int64)
    vecs = np.zeros((total, len(radix)), np.int32)
    for i in range(len(radix) - 1, -1, -1):
        vecs[:, i] = codes % radix[i]
        codes //= radix[i]
    if type(space).is_valid is not SearchSpace.is_valid:  # a constrained space: keep the valid ones
        vecs = vecs[np.array([space.is_valid(v) for v in vecs], bool)]
    return vecs


def grid(space: SearchSpace, batch: int = 1, max_size: int = MAX_GRID) -> Strategy:
    """Exhaustive search in a fixed order; after the last architecture it starts again.

    Args:
      space: a space with at most ``max_size`` configurations.
      batch: architectures per ``ask`` (P).
      max_size: refuse bigger spaces (DnasError naming the size).
    Returns:
      a :class:`Strategy`; the state is the index of the next architecture (``int32[]``).
    """
    table = jnp.asarray(enumerate_space(space, max_size))
    size = table.shape[0]

    def init(key: PRNGKey) -> jax.Array:
        del key
        return jnp.zeros((), jnp.int32)

    def ask(state: jax.Array, key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        del key
        return table[(state + jnp.arange(batch)) % size], (state + batch) % size

    def tell(state: jax.Array, archs: jax.Array, fitness: jax.Array) -> jax.Array:
        return state

    return Strategy(init, ask, tell)


STRATEGIES.add("grid", grid)
