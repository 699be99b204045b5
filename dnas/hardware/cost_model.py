"""The cost-model seam: every price of an architecture is one :class:`CostModel`.

``model.cost(probs_or_arch, hw=None) -> dict[str, f32[...]]`` prices an architecture of
a space, in any of the forms the rest of dnas holds it in:

- **probabilities per label**: ``{label: f32[k]}``, the distribution a relaxation puts on
  the label's candidates (:func:`dnas.space.relax.candidate_probs`). One entry per *label*,
  not per position: a label used at several positions (DARTS' shared cells) is one
  decision, and the model sums its positions. Leading batch axes are allowed
  (``f32[..., k]``);
- **the padded matrix** ``f32[..., n, K]`` of those rows in the space's label order
  (zeros beyond a label's candidates), which is also the **one-hot** form of a discrete
  architecture;
- **a discrete architecture**: ``int32[..., n]`` in the space's label order, or
  ``{label: int}``. It is priced as its one-hot matrix, so a discrete architecture and its
  one-hot probabilities cost the same by construction.

The result maps metric names, which carry their unit, to ``f32[...]`` (the batch shape of
the input): ``latency_ms``, ``macs_m`` and ``params_m`` (millions), and for accelerator
models ``energy_mj``, ``area_mm2``. Every model is jittable and differentiable in the
probabilities. For an additive model (:class:`AdditiveCost`: a LUT, MAC counts per
candidate, a linear predictor) ``cost(p)`` is the exact expectation ``Σ p·c + fixed``
under independent per-label choices (Cai et al. 2019, Eq. 4; Wu et al. 2019, Eq. 5). A
non-linear model evaluates itself at the mean encoding ``p`` (the first-order estimate of
the expectation that latency-predictor NAS uses), and says so in its docstring.

``hw`` is the hardware's side of a co-design search: a pytree of hardware parameters or
probabilities over hardware choices that a model of an accelerator prices together with
the architecture. A model of one measured device takes none (``hw`` must be None).

Configs name a model by registry name plus kwargs (:data:`COST_MODELS`, big_vision's
``model_name`` + ``model``); factories take the search space first::

    @register_cost_model("my_latency")
    def my_latency(space, scale: float = 1.0) -> CostModel:
        return AdditiveCost({"latency_ms": latency_term(space, {l: scale * np.arange(c.n) for l, c in
                                                                 zip(space.labels, space.choices)})})

    config.latency.cost_model = "my_latency"
    config.latency.cost_model_kwargs = {"scale": 2.0}
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.hardware.penalties import LatencyTerm
from dnas.space.base import JointSpace, SearchSpace

ProbsOrArch = Union[Mapping[str, Any], jax.Array, np.ndarray]
"""``{label: f32[..., k]}``, ``f32[..., n, K]``, ``int32[..., n]`` or ``{label: int}`` (module docstring)."""


class CostModel(abc.ABC):
    """Prices architectures of one space (see the module docstring for the input forms).

    Subclasses implement :meth:`price` on the padded probability matrix; :meth:`cost`
    turns every input form into it first.

    Args:
      labels: the space's labels, in its vector order.
      num_candidates: candidates per label.
      metrics: the names :meth:`cost` returns, each with its unit (``latency_ms``).
    """

    def __init__(self, labels: Sequence[str], num_candidates: Sequence[int], metrics: Sequence[str]):
        self.labels = tuple(labels)
        self.num_candidates = tuple(int(k) for k in num_candidates)
        self.metrics = tuple(metrics)
        if len(self.labels) != len(self.num_candidates) or not self.labels:
            raise DnasError("a cost model needs one candidate count per label, and at least one label")
        if len(set(self.metrics)) != len(self.metrics) or not self.metrics:
            raise DnasError(f"a cost model needs distinct metric names, got {self.metrics}")

    @property
    def width(self) -> int:
        """``K``, the padded width of the probability matrix."""
        return max(self.num_candidates)

    def cost(self, probs_or_arch: ProbsOrArch, hw: Any = None) -> dict[str, jax.Array]:
        """``metric -> f32[...]`` of an architecture or a distribution over architectures.

        Args:
          probs_or_arch: any form of the module docstring.
          hw: hardware parameters for a co-design model; None for a fixed device.
        """
        return self.price(self.encode(probs_or_arch), hw)

    @abc.abstractmethod
    def price(self, probs: jax.Array, hw: Any = None) -> dict[str, jax.Array]:
        """``f32[..., n, K]`` padded per-label probabilities -> ``metric -> f32[...]``."""

    def additive(self, metric: str) -> LatencyTerm:
        """``metric`` as per-candidate entries (what the constrained derivation of the
        target mode searches over); only additive models have them."""
        raise DnasError(f"{type(self).__name__}'s {metric!r} is not a sum of per-candidate entries")

    # ----- input forms -------------------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """``bool[n, K]``: which entries of the padded matrix are candidates."""
        return np.arange(self.width)[None, :] < np.asarray(self.num_candidates)[:, None]

    def one_hot(self, arch: jax.Array) -> jax.Array:
        """``int[..., n]`` -> ``f32[..., n, K]`` (an out-of-range index gives a zero row)."""
        arch = jnp.asarray(arch)
        if arch.shape[-1:] != (len(self.labels),):
            raise DnasError(f"an architecture vector has {len(self.labels)} entries (the space's labels); got shape {arch.shape}")
        return jax.nn.one_hot(arch, self.width, dtype=jnp.float32)

    def encode(self, x: ProbsOrArch) -> jax.Array:
        """Any input form -> the padded probability matrix ``f32[..., n, K]``."""
        if isinstance(x, Mapping):
            missing = [l for l in self.labels if l not in x]
            if missing:
                raise DnasError(f"no entry for label {missing[0]!r}; a cost model prices every label of its space")
            vals = [jnp.asarray(x[l]) for l in self.labels]
            ints = [jnp.issubdtype(v.dtype, jnp.integer) for v in vals]
            if all(ints):
                return self.one_hot(jnp.stack(vals, axis=-1))
            if any(ints):
                raise DnasError("an architecture is either indices for every label or probabilities for every label, not a mix")
            rows = []
            for l, k, v in zip(self.labels, self.num_candidates, vals):
                if v.shape[-1:] != (k,):
                    raise DnasError(f"probabilities for {l!r} have shape {v.shape}, expected (..., {k})")
                rows.append(jnp.pad(v.astype(jnp.float32), [(0, 0)] * (v.ndim - 1) + [(0, self.width - k)]))
            return jnp.stack(rows, axis=-2)
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.integer):
            return self.one_hot(x)
        if x.shape[-2:] != (len(self.labels), self.width):
            raise DnasError(f"probabilities must be f32[..., {len(self.labels)}, {self.width}] (labels x padded candidates); got shape {x.shape}")
        return x.astype(jnp.float32)

    def argmax(self, probs: ProbsOrArch) -> jax.Array:
        """The most probable candidate per label, ``int32[..., n]``."""
        p = self.encode(probs)
        return jnp.argmax(jnp.where(jnp.asarray(self.mask()), p, -jnp.inf), axis=-1).astype(jnp.int32)


def no_hw(model: CostModel, hw: Any) -> None:
    """Refuses hardware parameters in a model of one fixed device."""
    if hw is not None:
        raise DnasError(f"{type(model).__name__} prices one fixed device; it takes no hw (got {type(hw).__name__})")


class AdditiveCost(CostModel):
    """Per-candidate entries, one table per metric: ``cost(p)[m] = Σ p·table_m + fixed_m``.

    The sum is the exact expectation of an additive cost under per-label probabilities
    (linear in ``p``), and for a one-hot ``p`` the discrete architecture's cost.

    Args:
      terms: ``metric -> LatencyTerm`` (per-candidate entries and a fixed part), all over
        the same labels.
    """

    def __init__(self, terms: Mapping[str, LatencyTerm]):
        terms = dict(terms)
        if not terms:
            raise DnasError("an additive cost model needs at least one metric")
        first = next(iter(terms.values()))
        for m, t in terms.items():
            if (t.labels, t.num_candidates) != (first.labels, first.num_candidates):
                raise DnasError(f"metric {m!r} is priced over other labels than {next(iter(terms))!r}")
        super().__init__(first.labels, first.num_candidates, tuple(terms))
        self.terms = terms

    def price(self, probs: jax.Array, hw: Any = None) -> dict[str, jax.Array]:
        no_hw(self, hw)
        return {m: jnp.einsum("...nk,nk->...", probs, t.lat) + t.fixed for m, t in self.terms.items()}

    def additive(self, metric: str) -> LatencyTerm:
        if metric not in self.terms:
            raise DnasError(f"this cost model gives {', '.join(self.terms)}, not {metric!r}")
        return self.terms[metric]


class CombinedCost(CostModel):
    """Several models of one space side by side (their metrics must not overlap), e.g. a
    latency table with MAC and parameter counts."""

    def __init__(self, models: Sequence[CostModel]):
        models = tuple(models)
        if not models:
            raise DnasError("combine at least one cost model")
        for m in models[1:]:
            if (m.labels, m.num_candidates) != (models[0].labels, models[0].num_candidates):
                raise DnasError("combined cost models must price the same space")
        metrics = [k for m in models for k in m.metrics]
        clash = sorted({k for k in metrics if metrics.count(k) > 1})
        if clash:
            raise DnasError(f"two combined cost models both give {clash[0]!r}")
        super().__init__(models[0].labels, models[0].num_candidates, metrics)
        self.models = models

    def price(self, probs: jax.Array, hw: Any = None) -> dict[str, jax.Array]:
        return {k: v for m in self.models for k, v in m.price(probs, hw).items()}

    def additive(self, metric: str) -> LatencyTerm:
        owner = [m for m in self.models if metric in m.metrics]
        if not owner:
            raise DnasError(f"no combined cost model gives {metric!r}")
        return owner[0].additive(metric)


def as_cost_model(x: CostModel | LatencyTerm, metric: str = "latency_ms") -> CostModel:
    """A cost model from itself, or a bare :class:`LatencyTerm` as the one metric ``metric``."""
    if isinstance(x, CostModel):
        return x
    if isinstance(x, LatencyTerm):
        return AdditiveCost({metric: x})
    raise DnasError(f"expected a CostModel or a LatencyTerm, got {type(x).__name__}")


def straight_through_cost(model: CostModel, probs: ProbsOrArch, hw: Any = None) -> dict[str, jax.Array]:
    """The argmax architecture's cost in the forward pass, the expected cost's gradient in
    the backward pass (straight-through, as GDAS and ProxylessNAS treat sampled
    architectures): what drives the *derived* architecture to a target."""
    p = model.encode(probs)
    soft = model.price(p, hw)
    hard = model.price(model.one_hot(model.argmax(p)), hw)
    return {k: soft[k] + jax.lax.stop_gradient(hard[k] - soft[k]) for k in soft}


class NetworkPartCost(CostModel):
    """A model of a joint space's network part, pricing joint inputs: the hardware rows are
    dropped, so a fixed-device model (a LUT, MAC counts) prices the network of a joint
    (network + accelerator) vector and ignores the accelerator.

    Args:
      model: a cost model of ``space.net_space``.
      space: the :class:`~dnas.space.base.JointSpace`.
    """

    def __init__(self, model: CostModel, space: JointSpace):
        super().__init__(space.labels, [int(k) for k in space.num_candidates], model.metrics)
        self.model, self.num_network = model, space.num_network

    def price(self, probs: jax.Array, hw: Any = None) -> dict[str, jax.Array]:
        return self.model.price(probs[..., : self.num_network, : self.model.width], hw)

    def additive(self, metric: str) -> LatencyTerm:
        t = self.model.additive(metric)
        # Hardware labels cost nothing in a fixed-device model: zero rows, padded to the joint width.
        lat = jnp.pad(jnp.asarray(t.lat), [(0, len(self.labels) - self.num_network), (0, self.width - t.lat.shape[1])])
        return LatencyTerm(lat, t.fixed, self.labels, self.num_candidates)


# ----- registry ---------------------------------------------------------------------------------

CostModelFactory = Callable[..., CostModel]
"""``(space, **kwargs) -> CostModel``."""

COST_MODELS: Registry[CostModelFactory] = Registry("cost model", builtins="dnas.hardware.cost_models")
"""Registered cost-model factories by name (built-ins: :mod:`dnas.hardware.cost_models`)."""


def register_cost_model(name: str) -> Callable[[CostModelFactory], CostModelFactory]:
    """Decorator registering a factory ``(space, **kwargs) -> CostModel`` under ``name``."""
    return COST_MODELS.decorator(name, lambda f: f)


def build_cost_model(name: str, space: SearchSpace, kwargs: Mapping[str, Any] | None = None) -> CostModel:
    """The registered cost model ``name`` for ``space`` with ``kwargs``.

    Unknown names list the known ones and unknown keyword arguments name the accepted
    ones (one DnasError line); the model must price exactly the space's labels.
    """
    factory = COST_MODELS[name]
    kwargs = dict(kwargs or {})
    params = list(inspect.signature(factory).parameters)[1:]
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise DnasError(f"cost model {name!r} takes no argument {bad[0]!r}; it accepts: {', '.join(params) or 'nothing'}")
    # A joint (network + hardware) space: a model that does not price hardware itself (all
    # but the accelerator models, which set ``joint = True`` on their factory) prices the
    # network part.
    joint = isinstance(space, JointSpace) and not getattr(factory, "joint", False)
    try:
        model = factory(space.net_space if joint else space, **kwargs)
        if joint:
            model = NetworkPartCost(model, space)
    except TypeError as e:
        raise DnasError(f"cost model {name!r}: {e}") from None
    if not isinstance(model, CostModel):
        raise DnasError(f"cost model {name!r} returned {type(model).__name__}, not a CostModel")
    if model.labels != tuple(space.labels) or model.num_candidates != tuple(int(k) for k in space.num_candidates):
        raise DnasError(f"cost model {name!r} prices other labels or candidate counts than the space")
    return model
