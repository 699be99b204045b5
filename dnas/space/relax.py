"""Relaxations: architecture logits α -> what a mixed op takes per label.

A relaxation is a pure function ``(key, logits f32[k], epoch int32[]) -> weights`` where
the result is either mixing weights ``f32[k]`` (every non-zero candidate runs, weighted) or
a :class:`~dnas.core.types.Sampled` path set (only the sampled candidates run, through
``lax.switch``, scaled by a straight-through weight so α still gets a gradient). The third
argument is the epoch (0-based), because the papers define their temperature schedules per
epoch; a schedule is a float or a function of the epoch.

Relaxations are registered by name with a factory taking keyword arguments
(``config.relax`` + ``config.relax_kwargs``). A factory that declares an ``epochs`` keyword
receives the run's epoch count (for schedules that end at the last epoch, as GDAS').
Registered:

- ``softmax``: DARTS (Liu et al. 2019), ``softmax(α / T)``.
- ``gumbel``: Gumbel-softmax (Jang et al. 2017) as in SNAS (Xie et al. 2019) and FBNet
  (Wu et al. 2019): mixing weights, temperature ``tau0 * decay^epoch`` floored at
  ``tau_min``; ``hard=True`` gives a one-hot forward with the soft gradient
  (straight-through) but still computes every candidate.
- ``gdas``: GDAS (Dong & Yang 2019): one op per edge sampled by hard Gumbel-softmax with
  τ linear from ``tau_max`` to ``tau_min`` over the epochs; only that op runs, scaled by
  the straight-through one-hot weight.
- ``dirichlet``: DrNAS (Chen et al. 2021), a reparameterised Dirichlet sample with
  concentration ``softplus(α)`` or, ``concentration="elu"``, DrNAS' own ``elu(α) + 1``.
- ``sigmoid``: Fair DARTS (Chu et al. 2020): independent ``σ(α)`` per candidate, no
  competition through a softmax.
- ``binary_gate``: ProxylessNAS (Cai et al. 2019): ``paths`` candidates sampled from
  ``softmax(α)`` without replacement, only those run; with two, one of them is active in
  the forward and the gradient flows through the probabilities renormalised over both.
- ``uniform``: SPOS (Guo et al. 2020) / RSPS (Li & Talwalkar 2019): one uniformly drawn
  candidate per label, no gradient to α (supernet training by sampled paths).
- ``policy``: ENAS (Pham et al. 2018): one candidate per label drawn from
  ``softmax(c · tanh(α / T))``; α is trained by the ``reinforce`` α update.

Each built-in relaxation also says what distribution it puts on the candidates:
``relax.probs(logits, epoch) -> f32[k]`` (a :class:`Relax`; :func:`candidate_probs` for any
relaxation). The latency term prices that distribution through a cost model
(:mod:`dnas.hardware.cost_model`), so the expected cost is the expectation under the
relaxation's own law, not always under ``softmax(α)``:

============  ==========================================  ==================================
relaxation    ``probs(α)``                                why
============  ==========================================  ==================================
softmax       ``softmax(α / T)``                          its mixing weights (DARTS)
gumbel        ``softmax(α)``                              the law of the Gumbel argmax; the
                                                          mean of a *soft* sample at τ > 0
                                                          is not available in closed form
gdas          ``softmax(α)``                              the law of its sampled op (exact)
dirichlet     ``β / Σβ``, ``β`` its concentration         the Dirichlet mean (DrNAS; exact)
sigmoid       ``σ(α)``, not normalised                    Fair DARTS: independent per-op
                                                          gates, multi-hot (see ``sigmoid``)
binary_gate   ``softmax(α)``                              ProxylessNAS Eq. 4 (``probs_over_ops``)
uniform       ``1 / k``                                   SPOS: α does not change the path
policy        ``softmax(c · tanh(α / T))``                ENAS' sampling policy (exact)
============  ==========================================  ==================================

A relaxation registered as a plain function (the README's example) has no declared law;
:func:`candidate_probs` reads it as ``softmax(α)``, DARTS' and the latency term's old default.

What the derivation of a discrete architecture reads from α is a separate, deterministic
map (:data:`DERIVE_WEIGHTS`, a space's ``derive_weights`` argument): ``softmax`` (DARTS,
PC-DARTS, GDAS, SNAS), ``dirichlet_mean`` (DrNAS: the mean ``β / Σβ`` of
``Dirichlet(elu(α) + 1)``) and ``sigmoid`` (Fair DARTS).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.core.types import ArchWeights, PRNGKey, Sampled

Relaxation = Callable[[PRNGKey, jax.Array, jax.Array], ArchWeights]

MASKED = -1e30
"""The logit of a candidate a sampling relaxation must never draw (a few-shot sub-supernet's
split labels, :mod:`dnas.space.fewshot`). Finite, so the run's finiteness checks still hold."""


def allowed(logits: jax.Array) -> jax.Array:
    """``bool[k]``: the candidates not masked by :data:`MASKED`."""
    return logits > MASKED / 2
Schedule = float | Callable[[jax.Array], jax.Array]
Distribution = Callable[[jax.Array, jax.Array], jax.Array]
"""``(logits f32[k], epoch int32[]) -> f32[k]``: the probability a relaxation gives each
candidate (for sigmoid gates, each candidate's own inclusion probability)."""


@dataclasses.dataclass(frozen=True)
class Relax:
    """A relaxation that states its distribution: call it as the plain function
    ``(key, logits, epoch) -> weights``; ``probs(logits, epoch)`` is the law it samples
    from (or the mixing weights it returns), differentiable in the logits.

    Args:
      sample: the relaxation ``(key, logits f32[k], epoch) -> ArchWeights``.
      probs: its :data:`Distribution`.
    """

    sample: Relaxation
    probs: Distribution

    def __call__(self, key: PRNGKey, logits: jax.Array, epoch: jax.Array) -> ArchWeights:
        return self.sample(key, logits, epoch)


@dataclasses.dataclass(frozen=True)
class PolicyRelax(Relax):
    """A :class:`Relax` that samples from an explicit policy, with its ``log_policy(logits)
    -> f32[k]`` (what the ``reinforce`` α update differentiates; ENAS)."""

    log_policy: Callable[[jax.Array], jax.Array]


def candidate_probs(relax: Relaxation, logits: jax.Array, epoch: jax.Array | int = 0) -> jax.Array:
    """The probabilities ``relax`` puts on the candidates of one label, ``f32[k]``.

    A :class:`Relax` states them; a plain-function relaxation is read as ``softmax(α)``.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if isinstance(relax, Relax):
        return relax.probs(logits, jnp.asarray(epoch, jnp.int32))
    return jax.nn.softmax(logits)

RELAXATIONS: Registry[Callable[..., Relaxation]] = Registry("relaxation")


def register_relaxation(name: str) -> Callable[[Callable[..., Relaxation]], Callable[..., Relaxation]]:
    """Decorator registering a relaxation factory ``(**kwargs) -> Relaxation`` under ``name``."""
    return RELAXATIONS.decorator(name, lambda f: f)


def _at(s: Schedule, epoch: jax.Array) -> jax.Array:
    return jnp.asarray(s(epoch) if callable(s) else s, jnp.float32)


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass."""
    return hard + soft - jax.lax.stop_gradient(soft)


@register_relaxation("softmax")
def softmax(temperature: Schedule = 1.0) -> Relaxation:
    """DARTS: ``softmax(α / T)``; the key is unused."""
    probs = lambda logits, epoch: jax.nn.softmax(logits / _at(temperature, epoch))  # noqa: E731
    return Relax(lambda key, logits, epoch: probs(logits, epoch), probs)


def exponential_temperature(tau0: float, decay: float, tau_min: float) -> Callable[[jax.Array], jax.Array]:
    """``max(tau0 * decay^epoch, tau_min)``: SNAS' and FBNet's per-epoch annealing, floored."""
    return lambda epoch: jnp.maximum(tau0 * decay ** jnp.asarray(epoch, jnp.float32), tau_min)


def linear_temperature(tau_max: float, tau_min: float, epochs: int) -> Callable[[jax.Array], jax.Array]:
    """GDAS: ``tau_max - (tau_max - tau_min) * epoch / (epochs - 1)``, clipped to ``tau_min``."""
    span = max(int(epochs) - 1, 1)
    return lambda epoch: jnp.maximum(tau_max - (tau_max - tau_min) * jnp.asarray(epoch, jnp.float32) / span, tau_min)


def _categorical(logits: jax.Array, epoch: jax.Array) -> jax.Array:
    """``softmax(α)``: the law of ``argmax(α + Gumbel noise)`` at any temperature."""
    return jax.nn.softmax(logits)


def _gumbel_soft(key: PRNGKey, logits: jax.Array, tau: jax.Array) -> jax.Array:
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jax.nn.softmax((logits + g) / tau.astype(logits.dtype))


@register_relaxation("gumbel")
def gumbel(tau0: float = 5.0, decay: float = 0.956, tau_min: float = 0.1, hard: bool = False, tau: Schedule | None = None) -> Relaxation:
    """Gumbel-softmax mixing weights (SNAS, FBNet); every candidate runs.

    Args:
      tau0, decay, tau_min: temperature ``max(tau0 * decay^epoch, tau_min)``; the defaults
        are FBNet's (5.0, ``exp(-0.045)`` per epoch).
      hard: straight-through one-hot forward (the soft gradient).
      tau: a fixed temperature or a schedule of the epoch, replacing the three above.
    """
    temp = tau if tau is not None else exponential_temperature(tau0, decay, tau_min)

    def relax(key, logits, epoch):
        soft = _gumbel_soft(key, logits, _at(temp, epoch))
        if not hard:
            return soft
        return straight_through(jax.nn.one_hot(jnp.argmax(soft), logits.shape[-1], dtype=soft.dtype), soft)

    return Relax(relax, _categorical)


@register_relaxation("gdas")
def gdas(tau_max: float = 10.0, tau_min: float = 0.1, epochs: int = 250) -> Relaxation:
    """GDAS (Dong & Yang, CVPR 2019): one sampled op per edge, only it computed.

    The hard Gumbel-softmax sample ``h = one_hot(argmax(softmax((α + g) / τ)))`` picks the
    op; the edge outputs ``w[i] * op_i(x)`` with ``w = h - sg(p) + p`` (value 1, gradient of
    the soft sample ``p``), as in GDAS' ``hardwts``. τ decays linearly from ``tau_max`` to
    ``tau_min`` over the run's ``epochs`` (the paper: 10 -> 0.1 over 250 epochs).

    One deliberate difference from GDAS' code (AutoDL ``search_model_gdas.py``): there a
    node sums ``hardwts[i] * op_i(x)`` for the sampled ``i`` *plus the other entries*
    ``hardwts[j]`` (value 0, so the forward is the same), which gives each unsampled
    ``p_j`` the gradient ``Σ dL/dy`` (a response to a constant shift of the output, not to
    any op's output). dnas leaves them out: the α-gradient is exactly the soft relaxation's
    gradient through the sampled op (tested), ``∂L/∂p_j`` reaching unsampled ops only
    through the softmax of ``p``.
    """
    temp = linear_temperature(tau_max, tau_min, epochs)

    def relax(key, logits, epoch):
        soft = _gumbel_soft(key, logits, _at(temp, epoch))
        index = jnp.argmax(soft)
        weight = straight_through(jax.nn.one_hot(index, logits.shape[-1], dtype=soft.dtype), soft)
        return Sampled(index[None].astype(jnp.int32), weight)

    return Relax(relax, _categorical)


def dirichlet_concentration(logits: jax.Array, kind: str = "elu") -> jax.Array:
    """The Dirichlet concentration of α: ``elu(α) + 1`` (DrNAS' code, ``F.elu(α) + 1``) or
    ``softplus(α)``; both positive, ``elu + 1`` is 1 at α = 0 (the uniform Dirichlet)."""
    if kind == "elu":
        return jax.nn.elu(logits) + 1.0
    if kind == "softplus":
        return jax.nn.softplus(logits)
    raise DnasError(f"dirichlet concentration must be 'elu' or 'softplus', got {kind!r}")


@register_relaxation("dirichlet")
def dirichlet(concentration: str = "softplus") -> Relaxation:
    """DrNAS (Chen et al., ICLR 2021): a ``Dirichlet(β)`` sample, differentiable by implicit
    reparameterisation (JAX's ``random.dirichlet`` gradient).

    Args:
      concentration: ``"elu"`` (``β = elu(α) + 1``, DrNAS' code; the ``drnas`` method) or
        ``"softplus"`` (``β = softplus(α)``, this relaxation's first form, kept as the
        default so runs saved with it resume unchanged).
    """
    dirichlet_concentration(jnp.zeros(()), concentration)  # a bad name fails at build time
    beta = lambda logits: dirichlet_concentration(logits, concentration) + 1e-6  # noqa: E731
    mean = lambda logits, epoch: beta(logits) / jnp.sum(beta(logits), axis=-1, keepdims=True)  # noqa: E731
    return Relax(lambda key, logits, epoch: jax.random.dirichlet(key, beta(logits)), mean)


@register_relaxation("sigmoid")
def sigmoid() -> Relaxation:
    """Fair DARTS (Chu et al., ECCV 2020): ``σ(α)`` per candidate, each op's weight
    independent of the others' (no exclusive competition); the key is unused.

    Its distribution (``probs``) is ``σ(α)`` itself, *not* normalised over the candidates:
    Fair DARTS makes each op an independent gate and drives the gates to 0 or 1 with its
    zero-one loss, approximating "an expected multi-hot solution" (the paper's abstract),
    and the mixed op outputs ``Σ σ(α_i) op_i(x)``. ``σ(α_i)`` is then op i's inclusion
    probability, and for an additive cost the expected cost of the multi-hot architecture
    is ``Σ σ(α_i) c_i`` by linearity, whatever the other gates do; normalising would price
    one op per edge, which Fair DARTS' derivation (ops above a σ threshold) does not impose.
    """
    gates = lambda logits, epoch: jax.nn.sigmoid(logits)  # noqa: E731
    return Relax(lambda key, logits, epoch: gates(logits, epoch), gates)


@register_relaxation("binary_gate")
def binary_gate(paths: int = 1) -> Relaxation:
    """ProxylessNAS (Cai et al., ICLR 2019) binary gates: ``paths`` candidates drawn from
    ``softmax(α)`` without replacement; only they run.

    ``paths=1``: the drawn candidate's output is scaled by ``h - sg(p) + p`` with ``p =
    softmax(α)`` (value 1, gradient through the probabilities).
    ``paths >= 2`` (the paper's memory-saving training, Sec. 3.2.1, and its code's "two"
    mode): of the drawn candidates one is made active with the probabilities renormalised
    over them, ``p' = softmax(α[drawn])``; the gates are ``g = onehot(active)``, so the
    forward is the active candidate alone, and the others run only for the gradient: each
    drawn output is scaled by ``g - sg(p') + p'``, which gives the paper's
    ``∂L/∂α_i = Σ_j ∂L/∂g_j p'_j (δ_ij - p'_i)`` over the drawn candidates.

    Its distribution is ``softmax(α)`` over all paths: the paper's Eq. 4,
    ``E[latency] = Σ_j p_j F(o_j)``, as ``expected_latency`` of mit-han-lab/proxylessnas
    (``super_proxyless.py``) computes it from ``probs_over_ops``. Their two-path mode
    passes the pair's renormalised ``p'`` instead (``current_prob_over_ops``), a sampled
    estimate of that sum with the same α-gradient as ``estimate="relaxed"`` here.
    """
    if paths < 1:
        raise DnasError(f"binary_gate needs paths >= 1, got {paths}")

    def relax(key, logits, epoch):
        k = min(paths, logits.shape[-1])
        k_draw, k_active = jax.random.split(key)
        # Gumbel top-k draws k distinct candidates with the sequential-sampling law.
        index = jax.lax.top_k(logits + jax.random.gumbel(k_draw, logits.shape, logits.dtype), k)[1].astype(jnp.int32)
        if k == 1:
            probs = jax.nn.softmax(logits)
            return Sampled(index, straight_through(jnp.zeros_like(probs).at[index].set(1.0), probs))
        drawn = logits[index]
        active = index[jax.random.categorical(k_active, jax.lax.stop_gradient(drawn))]
        probs = jnp.zeros_like(logits).at[index].set(jax.nn.softmax(drawn))
        hard = jnp.zeros_like(logits).at[active].set(1.0)
        return Sampled(index, straight_through(hard, probs))

    return Relax(relax, _categorical)


@register_relaxation("uniform")
def uniform() -> Relaxation:
    """SPOS / RSPS single path: one candidate drawn uniformly per label; α gets no gradient.

    Candidates whose logit is :data:`MASKED` are never drawn (a few-shot sub-supernet fixes its
    split labels so, :mod:`dnas.space.fewshot`); with none masked the draw is the plain
    ``randint`` over all ``k``, so runs without masks are unchanged.
    """

    def relax(key, logits, epoch):
        k = logits.shape[-1]
        ok = allowed(logits)
        n = jnp.sum(ok).astype(jnp.int32)
        r = jax.random.randint(key, (1,), 0, n, dtype=jnp.int32)
        # the r-th allowed candidate (r itself when every candidate is allowed)
        index = jnp.argmax(jnp.cumsum(ok.astype(jnp.int32)) > r[0]).astype(jnp.int32)[None]
        return Sampled(index, jax.lax.stop_gradient(jax.nn.one_hot(index[0], k, dtype=logits.dtype)))

    def probs(logits, epoch):
        ok = allowed(logits).astype(logits.dtype)
        return ok / jnp.sum(ok, axis=-1, keepdims=True)

    return Relax(relax, probs)


@register_relaxation("policy")
def policy(temperature: float = 1.0, tanh_constant: float = 0.0) -> Relaxation:
    """ENAS' sampling policy (Pham et al., ICML 2018): one candidate per label drawn from
    ``softmax(c · tanh(α / T))`` (``c = tanh_constant``; 0 leaves ``α / T`` unsquashed),
    only it computed; α gets no gradient through the network (the ``reinforce`` α update
    trains it by policy gradient from the function's ``log_policy``).

    ENAS' micro search bounds the op logits with ``c = 1.10 / 2.5`` (``tanh_constant``
    over ``op_tanh_reduce``), which keeps the policy exploring.
    """
    if temperature <= 0:
        raise DnasError(f"policy needs temperature > 0, got {temperature}")
    if tanh_constant < 0:
        raise DnasError(f"policy needs tanh_constant >= 0 (0: no squashing), got {tanh_constant}")

    def log_policy(logits: jax.Array) -> jax.Array:
        z = logits / temperature
        return jax.nn.log_softmax(tanh_constant * jnp.tanh(z) if tanh_constant else z)

    def relax(key, logits, epoch):
        k = logits.shape[-1]
        index = jax.random.categorical(key, jax.lax.stop_gradient(log_policy(logits)), shape=(1,)).astype(jnp.int32)
        return Sampled(index, jax.nn.one_hot(index[0], k, dtype=logits.dtype))

    return PolicyRelax(relax, lambda logits, epoch: jnp.exp(log_policy(logits)), log_policy)


def _dirichlet_mean(logits: jax.Array) -> jax.Array:
    beta = dirichlet_concentration(logits, "elu")
    return beta / jnp.sum(beta, axis=-1, keepdims=True)


DERIVE_WEIGHTS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "softmax": jax.nn.softmax,
    "dirichlet_mean": _dirichlet_mean,
    "sigmoid": jax.nn.sigmoid,
}
"""Deterministic maps α logits ``f32[k]`` -> op strengths ``f32[k]`` that a space's
derivation rule ranks: DARTS' ``softmax``, DrNAS' Dirichlet mean, Fair DARTS' ``sigmoid``."""


def derive_weights(name: str, logits: jax.Array) -> jax.Array:
    """``DERIVE_WEIGHTS[name](logits)``; an unknown name lists the known ones."""
    if name not in DERIVE_WEIGHTS:
        raise DnasError(f"unknown derive_weights {name!r}; choose one of {', '.join(DERIVE_WEIGHTS)}")
    return DERIVE_WEIGHTS[name](jnp.asarray(logits, jnp.float32))


def make_relaxation(name: str, kwargs: Mapping[str, Any] | None = None, *, epochs: int | None = None) -> Relaxation:
    """Builds the registered relaxation ``name`` with ``kwargs``.

    ``epochs`` is passed to factories that declare it (schedules over the whole run).
    Unknown names list the known ones; unknown keyword arguments name the accepted ones.
    """
    factory = RELAXATIONS[name]
    kwargs = dict(kwargs or {})
    params = inspect.signature(factory).parameters
    if epochs is not None and "epochs" in params and "epochs" not in kwargs:
        kwargs["epochs"] = int(epochs)
    accepted = [p for p in params if p != "epochs" or epochs is None]
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise DnasError(f"relaxation {name!r} takes no argument {bad[0]!r}; it accepts: {', '.join(accepted) or 'nothing'}")
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise DnasError(f"relaxation {name!r}: {e}") from None


def relax_all(relax: Relaxation, key: PRNGKey, alpha: Mapping[str, jax.Array], epoch: jax.Array) -> dict[str, ArchWeights]:
    """Applies ``relax`` to every label's logits with an independent key per label."""
    return {label: relax(jax.random.fold_in(key, i), a, epoch) for i, (label, a) in enumerate(sorted(alpha.items()))}
