"""REINFORCE controller: a per-label categorical policy trained by policy gradient.

Williams, "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning", Machine Learning 1992; as NAS-Bench-201's baseline (Dong & Yang,
ICLR 2020, ``exps/algos/reinforce.py``): logits ``1e-3 * N(0, 1)`` per label, Adam on
the logits (lr 0.001 in the benchmark's ``REINFORCE.sh``; NATS-Bench later used 0.01),
an exponential-moving-average reward baseline (momentum 0.9, bias-corrected), loss
``-log p(arch) * (reward - baseline)`` with the baseline updated by the reward first.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas.core.errors import DnasError
from dnas.space.base import SearchSpace
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.core.types import PRNGKey


class ReinforceState(NamedTuple):
    """Policy ``logits f32[n, k_max]`` (padded with -inf), Adam state, EMA baseline
    numerator/denominator (``value = num / den``, the benchmark's bias correction)."""

    logits: jax.Array
    opt: optax.OptState
    ema_num: jax.Array
    ema_den: jax.Array


def reinforce(space: SearchSpace, learning_rate: float = 0.001, ema_momentum: float = 0.9, batch: int = 1, init_scale: float = 1e-3) -> Strategy:
    """REINFORCE with an EMA baseline (Williams 1992; NAS-Bench-201's settings by default).

    Args:
      space: a space whose labels are independent (no multi-label groups): the policy
        samples each label on its own.
      learning_rate: Adam's step size on the logits.
      ema_momentum: the reward baseline's momentum.
      batch: architectures per ``ask`` (P); a told batch is one gradient step on the
        mean of its P terms, each against the baseline updated through that reward.
      init_scale: std of the initial logits.
    Returns:
      a :class:`Strategy` over :class:`ReinforceState`; fitness ``f32[P]`` (the reward).
    """
    if any(len(g) > 1 for g in space.groups):
        raise DnasError("reinforce samples every label independently, but this space ties labels into groups (e.g. DARTS' two inputs per node); use rea or random")
    if not 0.0 <= ema_momentum < 1.0:
        raise DnasError(f"ema_momentum must lie in [0, 1), got {ema_momentum}")
    k = space.num_candidates
    mask = jnp.asarray(np.arange(k.max())[None, :] < k[:, None])
    opt = optax.adam(learning_rate)

    def log_probs(logits: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)

    def init(key: PRNGKey) -> ReinforceState:
        logits = jnp.where(mask, init_scale * jax.random.normal(key, mask.shape), 0.0)
        return ReinforceState(logits, opt.init(logits), jnp.zeros(()), jnp.zeros(()))

    def ask(state: ReinforceState, key: PRNGKey) -> tuple[jax.Array, ReinforceState]:
        lp = jnp.where(mask, log_probs(state.logits), -jnp.inf)
        archs = jax.random.categorical(key, lp, axis=-1, shape=(batch, lp.shape[0]))
        return archs.astype(jnp.int32), state

    def tell(state: ReinforceState, archs: jax.Array, fitness: jax.Array) -> ReinforceState:
        def ema_step(carry, r):
            num, den = carry
            num, den = ema_momentum * num + (1 - ema_momentum) * r, ema_momentum * den + (1 - ema_momentum)
            return (num, den), num / den

        (num, den), baselines = jax.lax.scan(ema_step, (state.ema_num, state.ema_den), fitness.astype(jnp.float32))
        advantage = fitness - baselines

        def loss(logits):
            lp = log_probs(logits)
            chosen = jnp.take_along_axis(lp[None], archs[..., None], axis=-1)[..., 0].sum(-1)  # log p(arch), f32[P]
            return -jnp.mean(chosen * advantage)

        updates, opt_state = opt.update(jax.grad(loss)(state.logits), state.opt, state.logits)
        logits = jnp.where(mask, optax.apply_updates(state.logits, updates), 0.0)
        return ReinforceState(logits, opt_state, num, den)

    return Strategy(init, ask, tell)


STRATEGIES.add("reinforce", reinforce)
