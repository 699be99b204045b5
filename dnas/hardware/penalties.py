"""The differentiable latency term: expected latency of a relaxed architecture, the
latency of a discrete one, and the published penalties that fold it into the loss.

A :class:`LatencyTerm` holds, per label, the latency of each candidate (summed over every
place the label is used, since a shared label is one decision) and a fixed part (stem,
head, everything not searched). For per-label probabilities ``p`` (softmax of α, Gumbel
weights, binary-gate probabilities)::

    E[latency] = sum_label sum_i p[label][i] * lat[label][i] + fixed

which is linear in ``p``, hence differentiable and jittable (the expected latency of FBNet,
Wu et al. CVPR 2019, and of ProxylessNAS, Cai et al. ICLR 2019). Penalties are pure functions
``(loss, latency, target, **kwargs) -> objective`` registered in :data:`PENALTIES`, so a
config names one with kwargs (``make_penalty("mul#log", beta=0.6)``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.hardware.lut import LatencyTable, LutKey, as_key
from dnas.space.base import SearchSpace
from dnas.space.keys import KeyedSpace

Probs = Union[Mapping[str, jax.Array], jax.Array]
"""Per-label probabilities ``label -> f32[k]``, or the padded matrix ``f32[n, K]`` in the term's label order."""


@dataclasses.dataclass(frozen=True)
class LatencyTerm:
    """Per-candidate latencies of a space, as arrays (a pytree: ``lat``, ``fixed`` are leaves).

    Args:
      lat: ``f32[n, K]``, row i = latencies of label i's candidates (padded with 0 to K).
      fixed: ``f32[]``, latency of the parts no choice changes.
      labels: the n labels, in the order of the space's ``int32[n]`` vectors.
      num_candidates: candidates per label (row i uses ``lat[i, :num_candidates[i]]``).
    """

    lat: jax.Array
    fixed: jax.Array
    labels: tuple[str, ...]
    num_candidates: tuple[int, ...]

    def per_label(self) -> dict[str, np.ndarray]:
        """``label -> f64[k]`` latencies of its candidates (for printing and tests)."""
        lat = np.asarray(self.lat, np.float64)
        return {l: lat[i, :k] for i, (l, k) in enumerate(zip(self.labels, self.num_candidates))}


jax.tree_util.register_dataclass(LatencyTerm, data_fields=["lat", "fixed"], meta_fields=["labels", "num_candidates"])


def latency_term(space: SearchSpace | Sequence[str], per_label: Mapping[str, Sequence[float]], fixed: float = 0.0) -> LatencyTerm:
    """Builds a :class:`LatencyTerm` from per-label candidate latencies.

    Args:
      space: a search space (labels and candidate counts are checked against it) or a
        plain label order.
      per_label: ``label -> [latency of candidate i]``; every label of the space must be
        present (give zeros for a choice that costs nothing).
      fixed: the architecture-independent latency.

    Returns:
      The term, labels in the space's vector order.
    """
    labels = tuple(space.labels if isinstance(space, SearchSpace) else space)
    missing = [l for l in labels if l not in per_label]
    if missing:
        raise DnasError(f"no latencies for labels {missing[:3]}{' ...' if len(missing) > 3 else ''}; give zeros for choices that cost nothing")
    rows = [np.asarray(per_label[l], np.float64).reshape(-1) for l in labels]
    if isinstance(space, SearchSpace):
        for l, row, n in zip(labels, rows, space.num_candidates):
            if len(row) != int(n):
                raise DnasError(f"label {l!r} has {int(n)} candidates but {len(row)} latencies")
    if any(not np.all(np.isfinite(r)) for r in rows) or not np.isfinite(fixed):
        raise DnasError("latencies must be finite (a NaN or inf reached the latency term)")
    width = max(len(r) for r in rows)
    lat = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        lat[i, : len(r)] = r
    return LatencyTerm(jnp.asarray(lat), jnp.asarray(fixed, jnp.float32), labels, tuple(len(r) for r in rows))


def latency_term_from_table(
    space: SearchSpace,
    table: LatencyTable,
    keys: Mapping[str, Sequence[Sequence[LutKey | str | None]]],
    fixed_keys: Sequence[LutKey | str] = (),
) -> LatencyTerm:
    """A :class:`LatencyTerm` whose entries are table means.

    Args:
      space: the search space.
      table: the lookup table.
      keys: ``label -> positions``, each position a list aligned with the label's
        candidates giving the LUT key of that candidate there, or ``None`` for a candidate
        that costs nothing (zero op, a skipped block). A label used at several positions
        (a shared cell) sums them.
      fixed_keys: LUT keys of the fixed part (stem, head...), summed.

    Returns:
      The term. A key with no table entry raises one DnasError line naming the label,
      position and candidate.
    """
    required: dict[str, LutKey] = {}
    for l in space.labels:
        if l not in keys:
            raise DnasError(f"no LUT keys for label {l!r}; map every label to its positions' candidate keys")
        cands = space.choice(l).candidates
        for p, position in enumerate(keys[l]):
            if len(position) != len(cands):
                raise DnasError(f"label {l!r} position {p} lists {len(position)} keys for {len(cands)} candidates")
            for c, k in zip(cands, position):
                if k is not None:
                    required[f"{l}[{p}]={c}"] = as_key(k)
    required.update({f"fixed[{i}]": as_key(k) for i, k in enumerate(fixed_keys)})
    table.require(required)
    per_label = {}
    for l in space.labels:
        row = np.zeros(space.choice(l).n)
        for position in keys[l]:
            row += [0.0 if k is None else table.mean(k) for k in position]
        per_label[l] = row
    return latency_term(space, per_label, float(sum(table.mean(k) for k in fixed_keys)))


def lut_term(space: SearchSpace, table: LatencyTable, resolution: int = 224) -> LatencyTerm:
    """The :class:`LatencyTerm` of a :class:`~dnas.space.keys.KeyedSpace` priced by ``table``
    (its keys at input size ``resolution``); a missing entry is one DnasError line."""
    if not isinstance(space, KeyedSpace):
        raise DnasError(f"space {getattr(space, 'space_name', type(space).__name__)!r} has no per-op table keys "
                        "(it is not a dnas.space.keys.KeyedSpace); spaces with them: proxylessnas")
    keys, fixed = space.lut_keys(resolution)
    return latency_term_from_table(space, table, keys, fixed)


def _matrix(term: LatencyTerm, probs: Probs) -> jax.Array:
    """Per-label probabilities as the padded ``f32[n, K]`` matrix (labels not in the term are ignored)."""
    if not isinstance(probs, Mapping):
        return jnp.asarray(probs)
    width = term.lat.shape[1]
    rows = []
    for l, k in zip(term.labels, term.num_candidates):
        if l not in probs:
            raise DnasError(f"no probabilities for label {l!r}; the latency term needs every label it was built with")
        p = jnp.asarray(probs[l])
        if p.shape != (k,):
            raise DnasError(f"probabilities for {l!r} have shape {p.shape}, expected ({k},)")
        rows.append(jnp.pad(p, (0, width - k)))
    return jnp.stack(rows)


def expected_latency(term: LatencyTerm, probs: Probs) -> jax.Array:
    """Expected latency ``sum_label sum_i p_i * lat_i + fixed`` of a relaxed architecture.

    Args:
      term: the space's :class:`LatencyTerm`.
      probs: ``label -> f32[k]`` probabilities (e.g. ``softmax(alpha[label])``) or the
        padded ``f32[n, K]`` matrix.

    Returns:
      ``f32[]`` in the table's unit; differentiable in ``probs``.
    """
    return jnp.sum(_matrix(term, probs) * term.lat) + term.fixed


def table_latency(term: LatencyTerm, arch: jax.Array | Mapping[str, int]) -> jax.Array:
    """Latency of discrete architectures: the sum of their chosen candidates' entries.

    Args:
      term: the space's :class:`LatencyTerm`.
      arch: ``int32[n]`` or a batch ``int32[P, n]`` in the term's label order, or a dict
        label -> index.

    Returns:
      ``f32[]`` or ``f32[P]``.
    """
    if isinstance(arch, Mapping):
        arch = jnp.asarray([int(arch[l]) for l in term.labels], jnp.int32)
    arch = jnp.asarray(arch)
    picked = jnp.take_along_axis(jnp.broadcast_to(term.lat, arch.shape + term.lat.shape[-1:]), arch[..., None], axis=-1)[..., 0]
    return jnp.sum(picked, axis=-1) + term.fixed


def straight_through_latency(term: LatencyTerm, probs: Probs) -> jax.Array:
    """The argmax architecture's table latency in the forward pass, the expected
    latency's gradient in the backward pass (straight-through, as GDAS and ProxylessNAS
    treat sampled architectures). Use it to drive the *derived* architecture to a target.

    Returns:
      ``f32[]``: value ``table_latency(argmax probs)``, gradient ``d expected_latency / d probs``.
    """
    p = _matrix(term, probs)
    mask = jnp.arange(term.lat.shape[1])[None, :] < jnp.asarray(term.num_candidates)[:, None]
    hard = table_latency(term, jnp.argmax(jnp.where(mask, p, -jnp.inf), axis=-1))
    soft = jnp.sum(p * term.lat) + term.fixed
    return soft + jax.lax.stop_gradient(hard - soft)


# ----- penalties: (loss, latency, target, **kwargs) -> objective ----------------------------

Penalty = Callable[..., jax.Array]
PENALTIES: Registry[Penalty] = Registry("latency penalty")


@PENALTIES.decorator("add#linear", lambda f: f)
def add_linear(loss: jax.Array, latency: jax.Array, target: float, *, lam: float = 0.1) -> jax.Array:
    """ProxylessNAS' additive penalty ``loss + lam * (T - T0) / T0`` (Cai et al., ICLR 2019).

    As in ``GradientArchSearchConfig.add_regularization_loss`` of mit-han-lab/proxylessnas
    (search/nas_manager.py); ``lam`` defaults to the search script's 0.1
    (``--grad_reg_loss_lambda``; the class' own fallback is 0.2).

    Args:
      loss: ``f32[]`` task loss (cross-entropy).
      latency: ``f32[]`` expected latency T.
      target: reference latency T0 (80 ms for their Pixel 1 search).
    """
    return loss + lam * (latency - target) / target


@PENALTIES.decorator("mul#log", lambda f: f)
def mul_log(loss: jax.Array, latency: jax.Array, target: float, *, alpha: float = 0.2, beta: float = 0.3) -> jax.Array:
    """ProxylessNAS' multiplicative penalty ``alpha * loss * (log T / log T0) ** beta``.

    As in mit-han-lab/proxylessnas search/nas_manager.py (``mul#log``); ``alpha=0.2``,
    ``beta=0.3`` are the search script's defaults (imagenet_arch_search.py; the class'
    own fallbacks are 1 and 0.6). Both T and T0 must exceed 1 in the table's unit, or the
    log ratio is negative and its fractional power NaN.
    """
    return alpha * loss * (jnp.log(latency) / jnp.log(target)) ** beta


@PENALTIES.decorator("fbnet", lambda f: f)
def fbnet(loss: jax.Array, latency: jax.Array, target: float | None = None, *, alpha: float = 0.2, beta: float = 0.6) -> jax.Array:
    """FBNet's loss ``CE * alpha * log(LAT) ** beta`` (Wu et al., CVPR 2019, with
    the paper's ``alpha=0.2``, ``beta=0.6``). ``target`` is unused: FBNet
    has no reference latency. LAT must exceed 1 in the table's unit (ms for mobile nets).
    The FBNet search code was not released (facebookresearch/mobile-vision ships only
    the found networks), so the paper's equation is the reference.
    """
    del target
    return loss * alpha * jnp.log(latency) ** beta


@PENALTIES.decorator("tunas_abs", lambda f: f)
def tunas_abs(loss: jax.Array, latency: jax.Array, target: float, *, beta: float = -0.10) -> jax.Array:
    """TuNAS' absolute reward as a loss: ``loss - beta * |T / T0 - 1|`` (Bender et al.,
    CVPR 2020: reward ``Q + beta * |T/T0 - 1|`` with ``beta < 0``).

    As ``reward_for_single_cost_model(..., 'abs', ...)`` in google-research
    tunas/search_space_utils.py; ``beta=-0.10`` is the default of its
    ``--rl_cost_model_exponent``. Negating the reward adjustment turns the reward to
    maximise into a loss to minimise; it pulls T towards T0 from both sides.
    """
    return loss - beta * jnp.abs(latency / target - 1.0)


@PENALTIES.decorator("target", lambda f: f)
def target_latency(loss: jax.Array, latency: jax.Array, target: float, *, lam: float = 1.0, tol: float = 0.0) -> jax.Array:
    """Target-latency mode: ``loss + lam * max(|T / T0 - 1| - tol, 0) ** 2``, a smooth
    two-sided pull to T0 that lets go within ``tol`` (relative) of it.

    Apply it to :func:`straight_through_latency` to drive the derived (argmax)
    architecture, not only the expected one, to the target. Why the band: the derived
    latency moves in jumps (one block's op at a time), and a pull that never lets go keeps
    pushing the argmax back and forth across T0; inside the band only the task loss acts.
    """
    return loss + lam * jnp.maximum(jnp.abs(latency / target - 1.0) - tol, 0.0) ** 2


def make_penalty(name: str, **kwargs: Any) -> Callable[[jax.Array, jax.Array, Any], jax.Array]:
    """``(loss, latency, target) -> objective`` for the registered penalty ``name`` with
    ``kwargs`` bound; an unknown name or keyword raises one DnasError line listing the known ones."""
    fn = PENALTIES[name]
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise DnasError(f"latency penalty {name!r} takes {', '.join(accepted)}; got unknown {', '.join(unknown)}")
    return lambda loss, latency, target=None: fn(loss, latency, target, **kwargs)
