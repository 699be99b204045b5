"""Training few-shot sub-supernets (Zhao et al., ICML 2021) as one compiled step.

The ``K`` sub-supernets of a :class:`dnas.space.fewshot.FewShotSplit` live in one
:class:`~dnas.search.state.SearchState` whose α, weights, BatchNorm statistics and both
optimizer states carry a leading axis ``K``; the step counter and the base key stay
scalars, so checkpoints, resume and the step loop treat the run as any other. One step
trains every sub-supernet once on the same batch, each on its own path through its own part
of the space (its α masks the split labels, its key is ``fold_in(rng, k)``), with its own
optimizer state: the one-shot step under ``lax.map`` (a loop, not ``vmap``: under ``vmap``
every ``lax.switch`` would run every candidate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.types import Batch, Metrics
from dnas.search.bilevel import SearchStep
from dnas.search.state import SearchState, alpha_dict
from dnas.space.fewshot import FewShotSplit


def stack(tree: Any, k: int) -> Any:
    """Every leaf of ``tree`` repeated ``k`` times along a new leading axis."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(jnp.asarray(x)[None], k, axis=0), tree)


def sub(tree: Any, k: int | jax.Array) -> Any:
    """Slice ``k`` of a stacked tree (``k`` may be traced)."""
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def stack_state(state: SearchState, split: FewShotSplit, *, weights: Any = None, stats: Any = None) -> SearchState:
    """The ``K``-stacked state of the sub-supernets of ``split``, each a copy of ``state``
    (or of ``weights`` / ``stats``: the trained one-shot supernet the few-shot supernets start
    from) with its split labels masked in α and fresh optimizer states.

    Args:
      state: a one-shot search state (:func:`dnas.search.state.init_search_state`).
      split: the split.
      weights, stats: start from these (``nnx.State`` like ``state``'s) instead.
    Returns:
      the stacked state; ``step`` and ``rng`` stay scalars.
    """
    k = split.k
    masked = split.masked_alpha(alpha_dict(state.alpha))
    alpha = jax.tree_util.tree_map(lambda x: x, state.alpha)  # a copy with the same Variables, so checkpoints keep their paths
    nnx.replace_by_pure_dict(alpha, {"alpha": {l: jnp.asarray(v) for l, v in masked.items()}})
    w = state.weights if weights is None else weights
    return state.replace(alpha=alpha, weights=stack(w, k), stats=stack(state.stats if stats is None else stats, k),
                         w_opt=stack(state.w_opt, k), a_opt=stack(state.a_opt, k))


def fewshot_step(step: SearchStep, k: int) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
    """The step training all ``k`` sub-supernets of a stacked state once (pure; jit it).

    Metrics are the means over the sub-supernets.
    """

    def run(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        def one(xs):
            i, alpha, weights, stats, w_opt, a_opt = xs
            st = state.replace(alpha=alpha, weights=weights, stats=stats, w_opt=w_opt, a_opt=a_opt, rng=jax.random.fold_in(state.rng, i))
            new, metrics = step(st, train_batch, val_batch)
            return (new.alpha, new.weights, new.stats, new.w_opt, new.a_opt), metrics

        xs = (jnp.arange(k), state.alpha, state.weights, state.stats, state.w_opt, state.a_opt)
        (alpha, weights, stats, w_opt, a_opt), metrics = jax.lax.map(one, xs)
        new = state.replace(alpha=alpha, weights=weights, stats=stats, w_opt=w_opt, a_opt=a_opt, step=state.step + 1)
        return new, {name: jnp.mean(v) for name, v in metrics.items()}

    return run


def first_alpha(alpha: dict[str, Any]) -> dict[str, np.ndarray]:
    """Sub-supernet 0's α of a stacked ``{label: f32[K, n]}`` (what the driver's per-epoch
    genotype and α log show for a few-shot run: its α is not trained)."""
    return {l: np.asarray(v)[0] for l, v in alpha.items()}
