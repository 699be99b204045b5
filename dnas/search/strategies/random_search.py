"""Random search: every architecture drawn uniformly from the space.

Li & Talwalkar, "Random Search and Reproducibility for Neural Architecture Search",
UAI 2019 (the baseline every NAS benchmark reports; NAS-Bench-201's "RS").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.core.types import PRNGKey


def sample_batch(space: SearchSpace, key: PRNGKey, n: int) -> jax.Array:
    """``n`` independent uniform valid architectures, ``int32[n, n_choices]``.

    A space that keeps the base ``sample`` (independent uniform labels) is drawn with one
    ``jax.random.bits`` call and a modulo (bias < k / 2^32): per-label ``randint`` calls
    made the NAS-Bench-201 search loop ~2x slower. Otherwise ``space.sample`` per row.
    """
    if type(space).sample is not SearchSpace.sample:
        return jax.vmap(space.sample)(jax.random.split(key, n))
    bits = jax.random.bits(key, (n, len(space)))
    return (bits % jnp.asarray(space.num_candidates, jnp.uint32)).astype(jnp.int32)


def random_search(space: SearchSpace, batch: int = 1) -> Strategy:
    """Uniform random search (Li & Talwalkar 2019); the state is an evaluation counter.

    Args:
      space: the search space.
      batch: architectures per ``ask`` (P).
    Returns:
      a :class:`Strategy` whose ``ask`` returns ``int32[batch, n]``; ``tell`` only counts.
    """

    def init(key: PRNGKey) -> jax.Array:
        del key
        return jnp.zeros((), jnp.int32)

    def ask(state: jax.Array, key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        return sample_batch(space, key, batch), state

    def tell(state: jax.Array, archs: jax.Array, fitness: jax.Array) -> jax.Array:
        return state + archs.shape[0]

    return Strategy(init, ask, tell)


STRATEGIES.add("random", random_search)
