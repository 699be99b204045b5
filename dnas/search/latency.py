"""The latency term of a differentiable search, built from ``config.latency``.

The term prices the distribution the relaxation puts on the candidates
(:func:`dnas.space.relax.candidate_probs`: ``softmax(α)`` for DARTS, the Dirichlet mean for
DrNAS, ``σ(α)`` for Fair DARTS, the policy for ENAS...) with a cost model
(:mod:`dnas.hardware.cost_model`), so it is the expected cost under the relaxation's own law.

``config.latency`` (all off by default: ``cost_model=""`` and ``table=""``)::

    cost_model      a registered cost model (dnas.hardware.COST_MODELS): lut, fbnet_lut,
                    predictor, counts, or one of your own
    cost_model_kwargs  its keyword arguments (lut: table, resolution; fbnet_lut: table, device;
                    predictor: predictor; counts: resolution, C, num_classes, in_channels)
    metric          which of its metrics the penalty sees (latency_ms; macs_m is ProxylessNAS'
                    "flops" target)
    table           older spelling of a table cost model, still accepted: a dnas JSON or
                    ProxylessNAS / once-for-all YAML path means cost_model=lut with
                    {table, resolution}, HW-NAS-Bench's FBNet CSV cost_model=fbnet_lut with
                    {table, device} (then ``device`` picks its column)
    device          the FBNet CSV's device (raspi4, pixel3, eyeriss, fpga), with ``table``
    resolution      input size the table was measured at (ProxylessNAS keys: 224), with ``table``
    penalty         "" (log the metric only) or a registered penalty (dnas.hardware.PENALTIES):
                    add#linear, mul#log (ProxylessNAS), fbnet (FBNet), tunas_abs (TuNAS),
                    target (drive the derived architecture to target_ms)
    penalty_kwargs  its keyword arguments (lam, alpha, beta)
    target_ms       the reference / target T0 in the metric's unit
    estimate        which cost of α the penalty sees:
                    expected  cost(p) with p the relaxation's distribution, = Σ p·c + fixed for
                              an additive model (ProxylessNAS, Cai et al. 2019, Eq. 4)
                    relaxed   cost of the relaxation's own weights (FBNet's Gumbel mask, Wu
                              et al. 2019, Eq. 5); for sampled paths (GDAS, binary gates) the
                              cost of the sampled candidates, gradient through their
                              probabilities (straight-through)
                    derived   the most probable architecture's cost, gradient of the expected
                              one (straight-through): what the target mode needs
                    auto      relaxed for sampled relaxations, else expected
    derive_tolerance  with penalty=target, the derived architecture is the most likely one
                    (max Σ log p) whose cost is within this relative distance of target_ms
                    (a small dynamic programme over cost bins, :func:`constrained_argmax`;
                    needs an additive metric); 0 = the plain argmax

Why the target mode has two parts: the penalty pulls α's latency to T during the search
(so the candidates near T are the ones trained), but the argmax moves in jumps of whole
blocks, and Adam moves near-tied labels together, so a penalty on the argmax itself
(``estimate=derived``) kept stepping over T in our tests (0.85 -> 1.15 -> 0.99 T); the
constrained derivation then picks, among the architectures within the band, the one α
prefers (the selection rule of constrained NAS, as MnasNet's hard latency limit).

The penalty enters the α loss only (:data:`dnas.search.bilevel.ArchPenalty`); ``metrics.jsonl``
gets ``expected_latency_ms`` and the derived architecture's ``derived_latency_ms`` on
every epoch line (``expected_<metric>`` / ``derived_<metric>`` for another metric;
:func:`epoch_latency_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.types import ArchWeights, Sampled
from dnas.hardware.cost_model import COST_MODELS, CostModel, as_cost_model, build_cost_model, straight_through_cost
from dnas.hardware.cost_models import legacy_cost_model, load_table
from dnas.hardware.penalties import PENALTIES, LatencyTerm, make_penalty, table_latency
from dnas.space.base import JointSpace, SearchSpace
from dnas.space.relax import Relaxation, candidate_probs

__all__ = ["ESTIMATES", "LatencyPenalty", "LatencySetup", "add_penalties", "build_latency", "check_latency", "constrained_argmax",
           "cost_model_spec", "derive_alpha", "derive_hardware", "epoch_latency_metrics", "latency_defaults", "load_table", "relaxed_latency"]

ESTIMATES = ("auto", "expected", "relaxed", "derived")
_NEEDS_TARGET = ("add#linear", "mul#log", "tunas_abs", "target")

Probs = Callable[[jax.Array, jax.Array], jax.Array]
"""``(logits f32[k], epoch) -> f32[k]``: a relaxation's distribution over one label's candidates."""


def _softmax(logits: jax.Array, epoch: Any = 0) -> jax.Array:
    return jax.nn.softmax(logits)


def latency_defaults() -> ml_collections.ConfigDict:
    """``config.latency`` with the term off (the value that reproduces runs made before it)."""
    c = ml_collections.ConfigDict()
    c.cost_model = ""
    c.cost_model_kwargs = ml_collections.ConfigDict()
    c.metric = "latency_ms"
    c.table = ""
    c.device = ""
    c.resolution = 224
    c.penalty = ""
    c.penalty_kwargs = ml_collections.ConfigDict()
    c.target_ms = 0.0
    c.estimate = "auto"
    c.derive_tolerance = 0.05
    return c


def cost_model_spec(lat: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]] | None:
    """``(name, kwargs)`` of the cost model ``config.latency`` names (None: the term is off).

    ``cost_model`` + ``cost_model_kwargs`` name it; the older ``table`` path (+ ``device``,
    ``resolution``) maps onto ``lut`` or ``fbnet_lut`` (:func:`dnas.hardware.cost_models.legacy_cost_model`).
    """
    name = lat.get("cost_model", "")
    if name and lat.get("table", ""):
        raise DnasError("config.latency names both cost_model and table; give the table in cost_model_kwargs.table")
    if name:
        kw = lat.get("cost_model_kwargs")
        return name, (kw.to_dict() if isinstance(kw, ml_collections.ConfigDict) else dict(kw or {}))
    if lat.get("table", ""):
        return legacy_cost_model(lat.table, lat.get("device", ""), int(lat.get("resolution", 224)))
    return None


def _label_probs(labels: tuple[str, ...], probs: Probs, logits: Mapping[str, jax.Array], epoch: Any) -> dict[str, jax.Array]:
    return {l: probs(jnp.asarray(logits[l], jnp.float32), epoch) for l in labels}


def relaxed_latency(cost: CostModel | LatencyTerm, arch: Mapping[str, ArchWeights], metric: str = "latency_ms") -> jax.Array:
    """Cost of the relaxation's own output: its mixing weights, or for :class:`Sampled`
    paths their straight-through weights (1 on the candidate whose output the forward
    uses, e.g. ProxylessNAS' active gate, 0 elsewhere, with the probabilities' gradient)."""
    cost = as_cost_model(cost, metric)
    weights = {l: arch[l].weight if isinstance(arch[l], Sampled) else arch[l] for l in cost.labels}
    return cost.cost(weights)[metric]


class LatencyPenalty:
    """``(α logits, relaxed inputs, step, loss) -> objective - loss``: a registered penalty
    of the cost ``estimate`` of α, added to the α loss (``takes_loss``: the multiplicative
    penalties of ProxylessNAS and FBNet scale the loss, so they need it).

    Args:
      cost: the space's cost model (a bare :class:`LatencyTerm` is the metric ``latency_ms``).
      penalty: registered name (:data:`dnas.hardware.PENALTIES`).
      kwargs: its keyword arguments.
      target_ms: reference / target, in the metric's unit.
      estimate: ``expected``, ``relaxed`` or ``derived`` (see the module docstring).
      probs: the relaxation's distribution (:func:`dnas.space.relax.candidate_probs`);
        default ``softmax(α)``.
      metric: which of the model's metrics the penalty sees.
      steps_per_epoch: turns the step into the epoch a temperature schedule reads.
    """

    takes_loss = True

    def __init__(self, cost: CostModel | LatencyTerm, penalty: str, kwargs: Mapping[str, Any], target_ms: float, estimate: str,
                 probs: Probs | None = None, metric: str = "latency_ms", steps_per_epoch: int = 1):
        self.cost, self.estimate, self.target, self.metric = as_cost_model(cost, metric), estimate, float(target_ms), metric
        if metric not in self.cost.metrics:
            raise DnasError(f"config.latency.metric={metric!r}: the cost model gives {', '.join(self.cost.metrics)}")
        self.probs, self.spe = probs or _softmax, max(int(steps_per_epoch), 1)
        self.fn = make_penalty(penalty, **dict(kwargs))

    def latency(self, logits: Mapping[str, jax.Array], arch: Mapping[str, ArchWeights], step: Any = 0) -> jax.Array:
        """The estimate of the cost the penalty sees, ``f32[]``."""
        if self.estimate == "relaxed":
            return relaxed_latency(self.cost, arch, self.metric)
        p = _label_probs(self.cost.labels, self.probs, logits, jnp.asarray(step) // self.spe)
        return (straight_through_cost(self.cost, p) if self.estimate == "derived" else self.cost.cost(p))[self.metric]

    def __call__(self, logits: Mapping[str, jax.Array], arch: Mapping[str, ArchWeights], step: jax.Array, loss: jax.Array) -> jax.Array:
        return self.fn(loss, self.latency(logits, arch, step), self.target) - loss


def add_penalties(*penalties: Any) -> Any:
    """One :data:`dnas.search.bilevel.ArchPenalty` summing ``penalties`` (None entries dropped;
    None if none is left), passing the loss to those that take it."""
    live = [p for p in penalties if p is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def total(logits, arch, step, loss):
        return sum(p(logits, arch, step, loss) if getattr(p, "takes_loss", False) else p(logits, arch, step) for p in live)

    total.takes_loss = True
    return total


def check_latency(config: ml_collections.ConfigDict, space: SearchSpace | None = None) -> None:
    """Validates ``config.latency`` (unknown keys, names, values; with ``space``, that the
    cost model builds for it, e.g. its table prices every candidate) with one DnasError line."""
    lat = config.latency
    known = latency_defaults()
    unknown = [k for k in lat.keys() if k not in known]
    if unknown:
        raise DnasError(f"unknown key config.latency.{unknown[0]}; keys: {', '.join(known.keys())}")
    if lat.estimate not in ESTIMATES:
        raise DnasError(f"config.latency.estimate must be one of {', '.join(ESTIMATES)}, got {lat.estimate!r}")
    spec = cost_model_spec(lat)
    if spec is None:
        if lat.penalty:
            raise DnasError(f"config.latency.penalty={lat.penalty!r} needs a cost model: config.latency.cost_model "
                            "(or config.latency.table, a latency table)")
        return
    COST_MODELS[spec[0]]  # unknown names list the known ones
    if lat.penalty:
        PENALTIES[lat.penalty]
        make_penalty(lat.penalty, **dict(lat.penalty_kwargs))
        if lat.penalty in _NEEDS_TARGET and not float(lat.target_ms) > 0:
            raise DnasError(f"config.latency.penalty={lat.penalty!r} needs config.latency.target_ms > 0, got {lat.target_ms}")
    if not 0.0 <= float(lat.derive_tolerance) < 1.0:
        raise DnasError(f"config.latency.derive_tolerance must be in [0, 1), got {lat.derive_tolerance}")
    if int(lat.resolution) < 1:
        raise DnasError(f"config.latency.resolution must be positive, got {lat.resolution}")
    if space is not None:
        model = build_cost_model(spec[0], space, spec[1])
        if lat.metric not in model.metrics:
            raise DnasError(f"config.latency.metric={lat.metric!r}: cost model {spec[0]!r} gives {', '.join(model.metrics)}")
        if lat.penalty == "target" and float(lat.derive_tolerance) > 0:
            model.additive(lat.metric)  # the constrained derivation needs per-candidate entries


def constrained_argmax(cost: CostModel | LatencyTerm, alpha: Mapping[str, Any], target: float, tol: float, bins_per_tol: int = 40,
                       probs: Probs | None = None, metric: str = "latency_ms") -> np.ndarray | None:
    """The most likely architecture whose cost ``metric`` is within ``tol`` of ``target``.

    Maximises ``Σ_label log p_label[i]`` (``p = probs(α)``, default ``softmax(α)``) subject
    to ``|lat(i) / target - 1| <= tol`` by dynamic programming over latency bins of width ``tol * target / bins_per_tol / n``
    (so the binning error of the sum stays below ``tol * target / bins_per_tol``); the
    found architecture's exact latency is checked against the band.

    Returns:
      ``int32[n]`` candidate indices in the term's label order, or None if no architecture
      of the table lies in the band.
    """
    term = as_cost_model(cost, metric).additive(metric)
    probs = probs or _softmax
    # Entries may be negative (FBNet's deltas, a predictor's weights): shift every label's
    # row to start at 0 and move the shifts into the fixed part, so bins count from 0.
    lat = {l: v - v.min() for l, v in term.per_label().items()}
    fixed = float(term.fixed) + sum(float(v.min()) for v in term.per_label().values())
    n = len(term.labels)
    lo, hi = (1 - tol) * target - fixed, (1 + tol) * target - fixed
    width = tol * target / bins_per_tol / n
    n_bins = int(np.floor(max(hi, 0) / width)) + 1
    best = np.full(n_bins, -np.inf)
    best[0] = 0.0
    choice = np.zeros((n, n_bins), np.int32)
    prev = np.zeros((n, n_bins), np.int64)
    for j, l in enumerate(term.labels):
        logp = np.log(np.maximum(np.asarray(probs(jnp.asarray(alpha[l], jnp.float32), 0), np.float64), 1e-30))
        new = np.full(n_bins, -np.inf)
        for i, (li, lp) in enumerate(zip(lat[l], logp)):
            shift = int(round(li / width))
            if shift >= n_bins:
                continue
            cand = np.full(n_bins, -np.inf)
            cand[shift:] = best[: n_bins - shift] + lp
            better = cand > new
            new[better], choice[j, better] = cand[better], i
            prev[j, better] = np.nonzero(better)[0] - shift
        best = new
    ok = [b for b in np.argsort(-best) if np.isfinite(best[b]) and lo - width * n <= b * width]
    for b in ok:
        arch, cur = np.zeros(n, np.int32), int(b)
        for j in range(n - 1, -1, -1):
            arch[j], cur = choice[j, cur], int(prev[j, cur])
        if abs(float(table_latency(term, arch)) / target - 1) <= tol:
            return arch
    return None


@dataclasses.dataclass(frozen=True)
class LatencySetup:
    """What a search run takes from ``config.latency``.

    Args:
      penalty: the α-loss term, or None (the metric logged only).
      cost: the space's cost model (a bare :class:`LatencyTerm` is ``latency_ms``).
      target_ms: the target of the target mode (0: no target derivation).
      derive_tolerance: relative band of the target derivation (0: plain argmax).
      probs: the relaxation's distribution (default ``softmax(α)``).
      metric: the cost model's metric the term prices.
    """

    penalty: LatencyPenalty | None
    cost: CostModel | LatencyTerm
    target_ms: float = 0.0
    derive_tolerance: float = 0.0
    probs: Probs | None = None
    metric: str = "latency_ms"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", as_cost_model(self.cost, self.metric))
        object.__setattr__(self, "probs", self.probs or _softmax)

    def derive_alpha(self, alpha: Mapping[str, Any]) -> dict[str, Any]:
        """α whose argmax is the derived architecture: with a target, the most likely
        architecture within the band is lifted to the top of every label (α unchanged
        where none lies in the band, or without a target)."""
        alpha = dict(alpha)
        if not (self.target_ms > 0 and self.derive_tolerance > 0):
            return alpha
        arch = constrained_argmax(self.cost, alpha, self.target_ms, self.derive_tolerance, probs=self.probs, metric=self.metric)
        if arch is None:
            return alpha
        for l, i in zip(self.cost.labels, arch):
            a = np.asarray(alpha[l], np.float32).copy()
            a[i] = a.max() + 1.0
            alpha[l] = a
        return alpha


def build_latency(config: ml_collections.ConfigDict, space: SearchSpace, relax: Relaxation | None = None,
                  steps_per_epoch: int = 1) -> LatencySetup | None:
    """The :class:`LatencySetup` of a search config (None without a cost model).

    Args:
      config: a search config with ``latency``.
      space: its search space.
      relax: the run's relaxation: its distribution is what the term prices
        (:func:`dnas.space.relax.candidate_probs`), and if it gives sampled paths, ``auto``
        picks ``relaxed``. None: ``softmax(α)``.
      steps_per_epoch: for a relaxation whose distribution follows an epoch schedule.
    """
    lat = config.get("latency")
    spec = None if lat is None else cost_model_spec(lat)
    if spec is None:
        return None
    cost = build_cost_model(spec[0], space, spec[1])
    metric = lat.get("metric", "latency_ms")
    probs = (lambda logits, epoch: candidate_probs(relax, logits, epoch)) if relax is not None else None
    if not lat.penalty:
        return LatencySetup(None, cost, probs=probs, metric=metric)
    estimate = lat.estimate
    relax_is_sampled = relax is not None and isinstance(relax(jax.random.key(0), jnp.zeros(2), jnp.int32(0)), Sampled)
    if estimate == "auto":
        estimate = "relaxed" if relax_is_sampled else "expected"
    penalty = LatencyPenalty(cost, lat.penalty, lat.penalty_kwargs.to_dict(), lat.target_ms, estimate, probs, metric, steps_per_epoch)
    target = float(lat.target_ms) if lat.penalty == "target" else 0.0
    return LatencySetup(penalty, cost, target, float(lat.derive_tolerance), probs, metric)


def derive_alpha(latency: LatencySetup | None, alpha: Mapping[str, Any]) -> Mapping[str, Any]:
    """``latency.derive_alpha(alpha)``, or ``alpha`` itself without a latency setup."""
    return alpha if latency is None else latency.derive_alpha(alpha)


def epoch_latency_metrics(latency: LatencySetup | CostModel | LatencyTerm | None, alpha: Mapping[str, Any]) -> dict[str, float]:
    """``expected_latency_ms`` (the cost of the relaxation's distribution) and
    ``derived_latency_ms`` (the cost of the derived architecture: the argmax of
    :meth:`LatencySetup.derive_alpha`), named ``expected_<metric>`` / ``derived_<metric>``
    for another metric; nothing without a latency setup."""
    if latency is None:
        return {}
    setup = latency if isinstance(latency, LatencySetup) else LatencySetup(None, latency)
    cost, metric = setup.cost, setup.metric
    derived = setup.derive_alpha(alpha)
    probs = _label_probs(cost.labels, setup.probs, alpha, 0)
    argmax = np.array([int(np.argmax(np.asarray(derived[l]))) for l in cost.labels], np.int32)
    return {f"expected_{metric}": float(cost.cost(probs)[metric]), f"derived_{metric}": float(cost.cost(argmax)[metric])}


def derive_hardware(space: JointSpace, cost: CostModel, alpha: Mapping[str, Any], net_vec: np.ndarray,
                    limits: Mapping[str, float] | None = None, max_designs: int = 1_000_000) -> np.ndarray:
    """The derived accelerator of a differentiable codesign search, ``int32[n_hw]``: the
    most likely design under the hardware α (max Σ log softmax(α)) among those whose
    pair with the derived network ``net_vec`` meets every hard ``limits`` entry (``{metric:
    upper bound}``, e.g. an area budget: rejection, as the discrete searches' ``hard`` and
    ``multi`` objectives). Without limits, the argmax per label.

    The hardware space is enumerated (its designs priced in one vectorised call), which is
    what makes the constraint exact; a space of more than ``max_designs`` designs is
    refused.

    Raises:
      DnasError: no design meets the limits, a limit names a metric the model lacks, or the
        space is too large to enumerate.
    """
    hw = space.hw_space
    logp = [np.asarray(jax.nn.log_softmax(jnp.asarray(alpha[l], jnp.float32))) for l in hw.labels]
    if not limits:
        return np.array([int(np.argmax(p)) for p in logp], np.int32)
    unknown = [k for k in limits if k not in cost.metrics]
    if unknown:
        raise DnasError(f"hardware limit on {unknown[0]!r}: the cost model gives {', '.join(cost.metrics)}")
    if hw.num_configurations() > max_designs:
        raise DnasError(f"the hardware space has {hw.num_configurations():,} designs; a hard limit enumerates them (at most {max_designs:,})")
    designs = np.indices(tuple(int(k) for k in hw.num_candidates)).reshape(len(hw.labels), -1).T.astype(np.int32)
    score = sum(p[designs[:, i]] for i, p in enumerate(logp))
    metrics = jax.jit(cost.cost)(jnp.asarray(space.join(np.asarray(net_vec)[None], designs)))
    ok = np.all([np.asarray(metrics[k]) <= v for k, v in limits.items()], axis=0)
    if not ok.any():
        raise DnasError(f"no design of the hardware space meets the limits {dict(limits)} with the derived network; relax them")
    return designs[int(np.argmax(np.where(ok, score, -np.inf)))]
