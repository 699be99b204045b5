"""Search methods by name: the config values that make a search one paper's method.

A method is a registered dict of search-config values (relaxation and its kwargs, order,
whether α is updated, an architecture penalty, space options, α warm-up); experiment
configs apply it with :func:`apply_method`, and ``benchmarks/search_step.py --method
NAME`` builds the same step, so the names in configs and benchmarks are one set.
Values that are a paper's *training* budget (epochs, batch, learning rates) live in its
``experiments/<name>/config.py``; a method holds what makes the algorithm.

- ``darts``: DARTS (Liu et al., ICLR 2019), softmax mixing, first order (``darts2``:
  second order, Eq. 8).
- ``gdas``: GDAS (Dong & Yang, CVPR 2019), one op per edge sampled by hard Gumbel-softmax,
  only it computed, τ from 10 to 0.1 linearly over the epochs.
- ``snas``: SNAS (Xie et al., ICLR 2019), soft Gumbel-softmax mixing with an exponentially
  annealed temperature (every op computed).
- ``pc_darts``: PC-DARTS (Xu et al., ICLR 2020): partial channels (K=4, channel shuffle),
  edge normalisation β entering the derivation, α frozen for the first 15 epochs.
- ``drnas``: DrNAS (Chen et al., ICLR 2021): Dirichlet(elu(α)+1) samples, the KL
  regulariser to Dirichlet(1) on the α loss, the architecture derived from the Dirichlet
  mean.
- ``fair_darts``: Fair DARTS (Chu et al., ECCV 2020): ``σ(α)`` per op and the zero-one
  loss ``-w · mean((σ(α) - 0.5)²)`` on the α loss, the architecture derived from ``σ(α)``.
- ``spos``: SPOS (Guo et al., ECCV 2020) supernet training: one uniformly sampled path per
  step, weights only (α is not trained; a discrete search reads the supernet afterwards).
  ``rsps`` (Li & Talwalkar, UAI 2019, random search with weight sharing) trains the
  supernet the same way; the two differ in the search that reads it (random vs evolution).
- ``enas``: ENAS (Pham et al., ICML 2018): paths sampled from a controller policy
  ``softmax(0.44 · tanh(α))`` (micro search: tanh constant 1.10 / op_tanh_reduce 2.5),
  α trained by REINFORCE on the sampled path's val-batch accuracy (+1e-4 × entropy,
  baseline decay 0.99, 10 samples per Adam step, Adam lr 0.0035, β1 = 0), alternating
  with the shared-weight step. ENAS' controller is an LSTM over the decisions; here the
  policy is one independent categorical per label (NAS-Bench-201's REINFORCE baseline).

Architecture penalties (:data:`ARCH_PENALTIES`, ``config.arch_penalty`` +
``config.arch_penalty_kwargs``) are factories returning
``(logits_by_label, arch_inputs, step) -> scalar`` (:data:`dnas.search.bilevel.ArchPenalty`),
added to the α loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.scipy.special import digamma, gammaln

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.space.relax import dirichlet_concentration

METHODS: Registry[dict[str, Any]] = Registry("method")
METHODS.add("darts", {"relax": "softmax", "relax_kwargs": {}, "order": 1, "update_alpha": True})
METHODS.add("darts2", {"relax": "softmax", "relax_kwargs": {}, "order": 2, "update_alpha": True})
METHODS.add("gdas", {"relax": "gdas", "relax_kwargs": {"tau_max": 10.0, "tau_min": 0.1}, "order": 1, "update_alpha": True})
# SNAS' paper anneals λ exponentially from 1.0; the rate here (0.97 per epoch, floor 0.03)
# was not checked against SNAS-Series' code in this session (see experiments/snas).
METHODS.add("snas", {"relax": "gumbel", "relax_kwargs": {"tau0": 1.0, "decay": 0.97, "tau_min": 0.03}, "order": 1, "update_alpha": True})
METHODS.add("pc_darts", {"relax": "softmax", "relax_kwargs": {}, "order": 1, "update_alpha": True,
                         "space_kwargs": {"partial_channels": 4, "edge_norm": True}, "a_warmup_epochs": 15})
METHODS.add("drnas", {"relax": "dirichlet", "relax_kwargs": {"concentration": "elu"}, "order": 1, "update_alpha": True,
                      "arch_penalty": "dirichlet_kl", "arch_penalty_kwargs": {"scale": 1e-3},
                      "space_kwargs": {"derive_weights": "dirichlet_mean"}})
METHODS.add("fair_darts", {"relax": "sigmoid", "relax_kwargs": {}, "order": 1, "update_alpha": True,
                           "arch_penalty": "zero_one", "arch_penalty_kwargs": {"weight": 10.0},
                           "space_kwargs": {"derive_weights": "sigmoid"}})
METHODS.add("spos", {"relax": "uniform", "relax_kwargs": {}, "order": 1, "update_alpha": False})
METHODS.add("rsps", {"relax": "uniform", "relax_kwargs": {}, "order": 1, "update_alpha": False})
METHODS.add("enas", {"relax": "policy", "relax_kwargs": {"tanh_constant": 1.10 / 2.5}, "order": 1, "update_alpha": True,
                     "alpha_grad": "reinforce", "alpha_grad_kwargs": {"entropy_weight": 1e-4, "baseline_decay": 0.99, "aggregate": 10},
                     "a_lr": 0.0035, "a_b1": 0.0, "a_weight_decay": 0.0})

_MERGED = ("space_kwargs",)  # kwargs groups a method adds to rather than replaces (the space's own options stay)


def apply_method(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets the config values of method ``name`` on a search config (in place; returned).

    ``space_kwargs`` entries are added to the config's (the space, its ops and nodes stay);
    every other value, ``relax_kwargs`` included, replaces the config's.
    """
    for k, v in METHODS[name].items():
        if k in _MERGED:
            with config[k].unlocked():
                for sub, value in v.items():
                    config[k][sub] = value
        else:
            config[k] = ml_collections.ConfigDict(v) if isinstance(v, dict) else v
    return config


# ----- architecture penalties ------------------------------------------------------------

ArchPenaltyFactory = Callable[..., Callable[[Mapping[str, jax.Array], Mapping[str, Any], jax.Array], jax.Array]]
ARCH_PENALTIES: Registry[ArchPenaltyFactory] = Registry("architecture penalty")


def _choice_logits(logits_by_label: Mapping[str, jax.Array]) -> list[jax.Array]:
    # Edge-normalisation parameters (PC-DARTS' β) are not op choices: penalties on op
    # weights leave them out.
    return [v for k, v in sorted(logits_by_label.items()) if "/beta_node_" not in k]


def dirichlet_kl_uniform(concentration: jax.Array) -> jax.Array:
    """``KL(Dir(β) || Dir(1))`` over the last axis, per leading index.

    ``KL = log Γ(β₀) - Σ log Γ(β_i) - log Γ(k) + Σ (β_i - 1)(ψ(β_i) - ψ(β₀))`` with
    ``β₀ = Σ β_i`` (the anchor Dir(1) has ``log B(1) = -log Γ(k)``), as
    ``torch.distributions.kl_divergence(Dirichlet(β), Dirichlet(ones))``.
    """
    b0 = jnp.sum(concentration, axis=-1)
    k = concentration.shape[-1]
    return (
        gammaln(b0) - jnp.sum(gammaln(concentration), axis=-1) - gammaln(jnp.asarray(float(k)))
        + jnp.sum((concentration - 1.0) * (digamma(concentration) - digamma(b0)[..., None]), axis=-1)
    )


@ARCH_PENALTIES.decorator("dirichlet_kl", lambda f: f)
def dirichlet_kl(scale: float = 1e-3, concentration: str = "elu"):
    """DrNAS' regulariser (its ``reg_type="kl"``): ``scale · Σ_labels KL(Dir(β) || Dir(1))``
    with ``β = elu(α) + 1``: keeps the concentration near the uniform anchor, so the
    Dirichlet stays exploratory and α does not commit too early (Chen et al. 2021, Sec. 3.1;
    ``_get_kl_reg`` in xiangning-chen/DrNAS).
    """
    dirichlet_concentration(jnp.zeros(()), concentration)

    def penalty(logits_by_label, arch, step):
        return scale * sum(jnp.sum(dirichlet_kl_uniform(dirichlet_concentration(a, concentration))) for a in _choice_logits(logits_by_label))

    return penalty


@ARCH_PENALTIES.decorator("zero_one", lambda f: f)
def zero_one(weight: float = 10.0):
    """Fair DARTS' zero-one loss (``ConvSeparateLoss``): ``-weight · mean((σ(α) - 0.5)²)``
    over every op weight of every label; pushes each ``σ(α)`` towards 0 or 1 so that the
    derived architecture matches the trained supernet. ``weight`` 10 is the paper's
    ``aux_loss_weight`` (xiaomi-automl/FairDARTS ``train_search.py``).
    """

    def penalty(logits_by_label, arch, step):
        flat = jnp.concatenate([jnp.ravel(jax.nn.sigmoid(a)) for a in _choice_logits(logits_by_label)])
        return -weight * jnp.mean((flat - 0.5) ** 2)

    return penalty


def make_arch_penalty(name: str, kwargs: Mapping[str, Any] | None = None):
    """The registered penalty ``name`` built with ``kwargs``; ``""`` gives None (no penalty).
    Unknown names list the known ones; unknown kwargs name the accepted ones."""
    if not name:
        return None
    factory = ARCH_PENALTIES[name]
    kwargs = dict(kwargs or {})
    params = inspect.signature(factory).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise DnasError(f"arch penalty {name!r} takes no argument {bad[0]!r}; it accepts: {', '.join(params) or 'nothing'}")
    return factory(**kwargs)


# ----- α warm-up ---------------------------------------------------------------------------


class DelayedState(NamedTuple):
    """State of :func:`delayed`: the update count and the wrapped optimizer's state."""

    count: jax.Array
    inner: Any


def delayed(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """``inner`` that outputs zero updates, and leaves its own state untouched, for the
    first ``steps`` updates: PC-DARTS trains only the weights for 15 epochs before α moves
    (``if epoch >= 15: architect.step(...)``); its Adam moments start at the first real step.
    """

    def init(params):
        return DelayedState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner, params)
        on = state.count >= steps
        pick = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(on, x, y), a, b)  # noqa: E731
        zero = jax.tree_util.tree_map(jnp.zeros_like, new_updates)
        return pick(new_updates, zero), DelayedState(state.count + 1, pick(new_inner, state.inner))

    return optax.GradientTransformation(init, update)
