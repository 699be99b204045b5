"""The latency term of a differentiable search, built from ``config.latency``.

``config.latency`` (all off by default: ``table=""``)::

    table           a LUT: dnas JSON (``dnas lut build``), ProxylessNAS / once-for-all YAML,
                    or HW-NAS-Bench's FBNet CSV (then ``device`` picks its column)
    device          the FBNet CSV's device (raspi4, pixel3, eyeriss, fpga)
    resolution      input size the table was measured at (ProxylessNAS keys: 224)
    penalty         "" (log latency only) or a registered penalty (dnas.hardware.PENALTIES):
                    add#linear, mul#log (ProxylessNAS), fbnet (FBNet), tunas_abs (TuNAS),
                    target (drive the derived architecture to target_ms)
    penalty_kwargs  its keyword arguments (lam, alpha, beta)
    target_ms       the reference / target latency T0 in the table's unit
    estimate        which latency of α the penalty sees:
                    expected  Σ softmax(α)·lat + fixed (ProxylessNAS, Cai et al. 2019, Eq. 4)
                    relaxed   Σ w·lat with the relaxation's own weights (FBNet's Gumbel mask, Wu
                              et al. 2019, Eq. 5); for sampled paths (GDAS, binary gates) the
                              mean latency of the sampled candidates, gradient through their
                              probabilities (straight-through)
                    derived   the argmax architecture's table latency, gradient of the expected
                              one (straight-through): what the target mode needs
                    auto      relaxed for sampled relaxations, else expected
    derive_tolerance  with penalty=target, the derived architecture is the most likely one
                    (max Σ log softmax(α)) whose table latency is within this relative
                    distance of target_ms (a small dynamic programme over latency bins,
                    :func:`constrained_argmax`); 0 = the plain argmax

Why the target mode has two parts: the penalty pulls α's latency to T during the search
(so the candidates near T are the ones trained), but the argmax moves in jumps of whole
blocks, and Adam moves near-tied labels together, so a penalty on the argmax itself
(``estimate=derived``) kept stepping over T in our tests (0.85 -> 1.15 -> 0.99 T); the
constrained derivation then picks, among the architectures within the band, the one α
prefers (the selection rule of constrained NAS, as MnasNet's hard latency limit).

The penalty enters the α loss only (:data:`dnas.search.bilevel.ArchPenalty`); ``metrics.jsonl``
gets ``expected_latency_ms`` and the derived architecture's ``derived_latency_ms`` on
every epoch line (:func:`epoch_latency_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.errors import DnasError
from dnas.hardware.loaders import FBNetLayerTable, load_fbnet_csv, load_yaml_lut
from dnas.hardware.lut import LatencyTable
from dnas.hardware.penalties import PENALTIES, LatencyTerm, expected_latency, make_penalty, straight_through_latency, table_latency
from dnas.space.relax import Relaxation
from dnas.space.base import SearchSpace
from dnas.core.types import ArchWeights, Sampled

ESTIMATES = ("auto", "expected", "relaxed", "derived")
_NEEDS_TARGET = ("add#linear", "mul#log", "tunas_abs", "target")


def latency_defaults() -> ml_collections.ConfigDict:
    """``config.latency`` with the term off (the value that reproduces runs made before it)."""
    c = ml_collections.ConfigDict()
    c.table = ""
    c.device = ""
    c.resolution = 224
    c.penalty = ""
    c.penalty_kwargs = ml_collections.ConfigDict()
    c.target_ms = 0.0
    c.estimate = "auto"
    c.derive_tolerance = 0.05
    return c


def load_table(path: str, device: str = "") -> LatencyTable | FBNetLayerTable:
    """A latency table by file type: ``.json`` (dnas schema), ``.yaml``/``.yml``
    (ProxylessNAS / once-for-all), ``.csv`` (HW-NAS-Bench FBNet, ``device`` column)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return LatencyTable.load(path)
    if suffix in (".yaml", ".yml"):
        return load_yaml_lut(path)
    if suffix == ".csv":
        tables = load_fbnet_csv(path)
        if device not in tables:
            raise DnasError(f"config.latency.device must name a device of {path} ({', '.join(sorted(tables))}), got {device!r}")
        return tables[device]
    raise DnasError(f"config.latency.table {path!r}: expected a .json, .yaml or .csv latency table")


def space_latency_term(space: SearchSpace, table: LatencyTable | FBNetLayerTable, resolution: int = 224) -> LatencyTerm:
    """The :class:`LatencyTerm` of ``space`` priced by ``table`` (the space must know its
    table keys: a ``latency_term(table, resolution)`` method, or FBNet's layer table)."""
    if isinstance(table, FBNetLayerTable):
        return table.latency_term(space)
    method = getattr(type(space), "latency_term", None)
    if method is None:
        raise DnasError(f"space {getattr(space, 'space_name', type(space).__name__)!r} has no latency-table keys; "
                        "spaces with them: proxylessnas (LUT JSON/YAML), fbnet (FBNet CSV)")
    return space.latency_term(table, resolution=resolution)


def _probs(term: LatencyTerm, logits: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {l: jax.nn.softmax(logits[l]) for l in term.labels}


def relaxed_latency(term: LatencyTerm, arch: Mapping[str, ArchWeights]) -> jax.Array:
    """Latency of the relaxation's own output: ``Σ w·lat + fixed`` for mixing weights and
    for :class:`Sampled` paths alike (their weight is 1 on the candidate whose output the
    forward uses, e.g. ProxylessNAS' active gate, 0 elsewhere, and carries the
    straight-through gradient of the probabilities)."""
    weights = {l: arch[l].weight if isinstance(arch[l], Sampled) else arch[l] for l in term.labels}
    return expected_latency(term, weights)


class LatencyPenalty:
    """``(α logits, relaxed inputs, step, loss) -> objective - loss``: a registered penalty
    of the latency ``estimate`` of α, added to the α loss (``takes_loss``: the multiplicative
    penalties of ProxylessNAS and FBNet scale the loss, so they need it).

    Args:
      term: the space's latency term.
      penalty: registered name (:data:`dnas.hardware.PENALTIES`).
      kwargs: its keyword arguments.
      target_ms: reference / target latency.
      estimate: ``expected``, ``relaxed`` or ``derived`` (see the module docstring).
    """

    takes_loss = True

    def __init__(self, term: LatencyTerm, penalty: str, kwargs: Mapping[str, Any], target_ms: float, estimate: str):
        self.term, self.estimate, self.target = term, estimate, float(target_ms)
        self.fn = make_penalty(penalty, **dict(kwargs))

    def latency(self, logits: Mapping[str, jax.Array], arch: Mapping[str, ArchWeights]) -> jax.Array:
        """The estimate of the latency the penalty sees, ``f32[]``."""
        if self.estimate == "relaxed":
            return relaxed_latency(self.term, arch)
        probs = _probs(self.term, logits)
        return straight_through_latency(self.term, probs) if self.estimate == "derived" else expected_latency(self.term, probs)

    def __call__(self, logits: Mapping[str, jax.Array], arch: Mapping[str, ArchWeights], step: jax.Array, loss: jax.Array) -> jax.Array:
        return self.fn(loss, self.latency(logits, arch), self.target) - loss


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
    table prices every candidate of it) with one DnasError line."""
    lat = config.latency
    known = latency_defaults()
    unknown = [k for k in lat.keys() if k not in known]
    if unknown:
        raise DnasError(f"unknown key config.latency.{unknown[0]}; keys: {', '.join(known.keys())}")
    if lat.estimate not in ESTIMATES:
        raise DnasError(f"config.latency.estimate must be one of {', '.join(ESTIMATES)}, got {lat.estimate!r}")
    if not lat.table:
        if lat.penalty:
            raise DnasError(f"config.latency.penalty={lat.penalty!r} needs config.latency.table (a latency table)")
        return
    if lat.penalty:
        PENALTIES[lat.penalty]  # unknown names list the known ones
        make_penalty(lat.penalty, **dict(lat.penalty_kwargs))
        if lat.penalty in _NEEDS_TARGET and not float(lat.target_ms) > 0:
            raise DnasError(f"config.latency.penalty={lat.penalty!r} needs config.latency.target_ms > 0, got {lat.target_ms}")
    if not 0.0 <= float(lat.derive_tolerance) < 1.0:
        raise DnasError(f"config.latency.derive_tolerance must be in [0, 1), got {lat.derive_tolerance}")
    if int(lat.resolution) < 1:
        raise DnasError(f"config.latency.resolution must be positive, got {lat.resolution}")
    if space is not None:
        space_latency_term(space, load_table(lat.table, lat.device), int(lat.resolution))


def constrained_argmax(term: LatencyTerm, alpha: Mapping[str, Any], target: float, tol: float, bins_per_tol: int = 40) -> np.ndarray | None:
    """The most likely architecture whose table latency is within ``tol`` of ``target``.

    Maximises ``Σ_label log softmax(α_label)[i]`` subject to ``|lat(i) / target - 1| <= tol``
    by dynamic programming over latency bins of width ``tol * target / bins_per_tol / n``
    (so the binning error of the sum stays below ``tol * target / bins_per_tol``); the
    found architecture's exact latency is checked against the band.

    Returns:
      ``int32[n]`` candidate indices in the term's label order, or None if no architecture
      of the table lies in the band.
    """
    lat = term.per_label()
    n = len(term.labels)
    lo, hi = (1 - tol) * target - float(term.fixed), (1 + tol) * target - float(term.fixed)
    width = tol * target / bins_per_tol / n
    n_bins = int(np.floor(max(hi, 0) / width)) + 1
    best = np.full(n_bins, -np.inf)
    best[0] = 0.0
    choice = np.zeros((n, n_bins), np.int32)
    prev = np.zeros((n, n_bins), np.int64)
    for j, l in enumerate(term.labels):
        logp = np.asarray(jax.nn.log_softmax(jnp.asarray(alpha[l], jnp.float32)), np.float64)
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
      penalty: the α-loss term, or None (latency logged only).
      term: the space's latency term.
      target_ms: the target of the target mode (0: no target derivation).
      derive_tolerance: relative band of the target derivation (0: plain argmax).
    """

    penalty: LatencyPenalty | None
    term: LatencyTerm
    target_ms: float = 0.0
    derive_tolerance: float = 0.0

    def derive_alpha(self, alpha: Mapping[str, Any]) -> dict[str, Any]:
        """α whose argmax is the derived architecture: with a target, the most likely
        architecture within the band is lifted to the top of every label (α unchanged
        where none lies in the band, or without a target)."""
        alpha = dict(alpha)
        if not (self.target_ms > 0 and self.derive_tolerance > 0):
            return alpha
        arch = constrained_argmax(self.term, alpha, self.target_ms, self.derive_tolerance)
        if arch is None:
            return alpha
        for l, i in zip(self.term.labels, arch):
            a = np.asarray(alpha[l], np.float32).copy()
            a[i] = a.max() + 1.0
            alpha[l] = a
        return alpha


def build_latency(config: ml_collections.ConfigDict, space: SearchSpace, relax: Relaxation | None = None) -> LatencySetup | None:
    """The :class:`LatencySetup` of a search config (None without ``latency.table``).

    Args:
      config: a search config with ``latency``.
      space: its search space.
      relax: the run's relaxation; if it gives sampled paths, ``auto`` picks ``relaxed``.
    """
    lat = config.get("latency")
    if lat is None or not lat.table:
        return None
    term = space_latency_term(space, load_table(lat.table, lat.device), int(lat.resolution))
    if not lat.penalty:
        return LatencySetup(None, term)
    estimate = lat.estimate
    relax_is_sampled = relax is not None and isinstance(relax(jax.random.key(0), jnp.zeros(2), jnp.int32(0)), Sampled)
    if estimate == "auto":
        estimate = "relaxed" if relax_is_sampled else "expected"
    penalty = LatencyPenalty(term, lat.penalty, lat.penalty_kwargs.to_dict(), lat.target_ms, estimate)
    target = float(lat.target_ms) if lat.penalty == "target" else 0.0
    return LatencySetup(penalty, term, target, float(lat.derive_tolerance))


def derive_alpha(latency: LatencySetup | None, alpha: Mapping[str, Any]) -> Mapping[str, Any]:
    """``latency.derive_alpha(alpha)``, or ``alpha`` itself without a latency setup."""
    return alpha if latency is None else latency.derive_alpha(alpha)


def epoch_latency_metrics(latency: LatencySetup | LatencyTerm | None, alpha: Mapping[str, Any]) -> dict[str, float]:
    """``expected_latency_ms`` (Σ softmax(α)·lat + fixed) and ``derived_latency_ms`` (the
    table latency of the derived architecture: the argmax of :meth:`LatencySetup.derive_alpha`),
    or nothing without a latency setup."""
    if latency is None:
        return {}
    term = latency.term if isinstance(latency, LatencySetup) else latency
    derived = latency.derive_alpha(alpha) if isinstance(latency, LatencySetup) else alpha
    logits = {l: jnp.asarray(alpha[l]) for l in term.labels}
    argmax = np.array([int(np.argmax(np.asarray(derived[l]))) for l in term.labels], np.int32)
    return {"expected_latency_ms": float(expected_latency(term, _probs(term, logits))),
            "derived_latency_ms": float(table_latency(term, argmax))}
