"""Latency predictors fitted from measured whole architectures, and few-shot transfer.

The model is ridge regression over groups of features of an architecture vector
``int32[n]`` (one penalty per group, chosen by exact leave-one-out error on the training
rows, so no hold-out set is spent):

- ``onehot``: one indicator per (position, candidate), the additive per-op model whose
  weights are a latency lookup table (nn-Meter, Zhang et al. MobiSys 2021, shows what such
  sums miss: kernel fusion);
- ``count``: how often each candidate value occurs across positions, a prior that an op
  costs about the same wherever it sits; with ``onehot`` it is still additive, and it
  makes 10 measurements enough on spaces of repeated choices such as NAS-Bench-201;
- ``source``: the architecture's latencies on devices measured before (standardised),
  HELP's idea (Lee et al., NeurIPS 2021) that a new device's latencies are predictable
  from other devices' latencies of the same architectures; with ten measurements the fit
  learns how the new device mixes the known ones. HELP meta-learns a GCN with a hardware
  embedding; this is its linear counterpart (benchmarks/LATENCY.md compares them).

All fitting is closed-form NumPy on the host (tens of features, at most thousands of rows).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dnas.core.errors import DnasError
from dnas.core.io import atomic_write_json, read_json
from dnas.hardware.penalties import LatencyTerm, latency_term
from dnas.space.base import SearchSpace

DEFAULT_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
"""Ridge penalties tried per feature group (on standardised or 0/1 features)."""

FEATURES = ("onehot", "count", "source")


def one_hot_features(vecs: np.ndarray, num_candidates: Sequence[int]) -> np.ndarray:
    """``int[P, n]`` architectures -> ``f64[P, sum(num_candidates)]`` indicators, position-major."""
    vecs = np.asarray(vecs)
    offsets = np.concatenate([[0], np.cumsum(num_candidates)[:-1]]).astype(int)
    out = np.zeros((vecs.shape[0], int(np.sum(num_candidates))))
    out[np.arange(vecs.shape[0])[:, None], offsets[None, :] + vecs] = 1.0
    return out


def value_ids(candidates: Sequence[Sequence[Any]]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Maps each (position, candidate) to the id of its value.

    Args:
      candidates: per position, its candidate values (``[c.candidates for c in space.choices]``).

    Returns:
      ``ids int[n, K]`` (-1 where a position has fewer than K candidates) and the distinct
      values' reprs in id order.
    """
    values: dict[str, int] = {}
    width = max(len(c) for c in candidates)
    ids = -np.ones((len(candidates), width), int)
    for i, cands in enumerate(candidates):
        for j, c in enumerate(cands):
            ids[i, j] = values.setdefault(repr(c), len(values))
    return ids, tuple(values)


def count_features(vecs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``int[P, n]`` -> ``f64[P, V]``: occurrences of each candidate value (ids from :func:`value_ids`)."""
    vecs = np.asarray(vecs)
    chosen = ids[np.arange(vecs.shape[1])[None, :], vecs]
    return np.stack([(chosen == v).sum(1) for v in range(int(ids.max()) + 1)], axis=1).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class RidgeModel:
    """``y = (x - mean_x) @ weights + intercept``, fitted with one penalty per feature group.

    Args:
      mean_x: ``f64[F]`` training mean of the features.
      weights: ``f64[F]``.
      intercept: training mean of y (the intercept is not penalised).
      penalties: the chosen penalty of each group.
      loo_rmse: its leave-one-out root-mean-square error on the training rows.
    """

    mean_x: np.ndarray
    weights: np.ndarray
    intercept: float
    penalties: tuple[float, ...]
    loo_rmse: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``f64[P, F]`` -> ``f64[P]``."""
        return (np.asarray(x) - self.mean_x) @ self.weights + self.intercept


def fit_ridge(groups: Sequence[np.ndarray], y: np.ndarray, grid: Sequence[float] = DEFAULT_GRID) -> RidgeModel:
    """Ridge regression with one penalty per feature group, chosen by leave-one-out error.

    The LOO residual of ridge is closed-form, ``e_i / (1 - h_ii)`` with the hat matrix
    ``h = 1/N + Xc (Xc'Xc + D)^-1 Xc'`` (Allen 1974), so every grid point costs one solve.

    Args:
      groups: feature blocks ``f64[N, F_g]`` over the same N rows.
      y: ``f64[N]`` targets, N >= 2.
      grid: penalties tried for each group (all combinations).

    Returns:
      The :class:`RidgeModel` with the lowest LOO error.
    """
    y = np.asarray(y, np.float64)
    x = np.concatenate([np.asarray(g, np.float64) for g in groups], axis=1)
    if len(y) < 2 or x.shape[0] != len(y):
        raise DnasError(f"a latency fit needs at least 2 measured architectures with features; got {len(y)}")
    mean_x, mean_y = x.mean(0), y.mean()
    xc, yc = x - mean_x, y - mean_y
    gram, xty = xc.T @ xc, xc.T @ yc
    sizes = [g.shape[1] for g in groups]
    best = None
    for pens in itertools.product(grid, repeat=len(groups)):
        a = gram + np.diag(np.repeat(pens, sizes))
        w = np.linalg.solve(a, xty)
        h = 1.0 / len(y) + np.einsum("ij,ji->i", xc, np.linalg.solve(a, xc.T))
        loo = (yc - xc @ w) / np.maximum(1.0 - h, 1e-9)
        err = float(np.sqrt(np.mean(loo**2)))
        if best is None or err < best.loo_rmse:
            best = RidgeModel(mean_x, w, float(mean_y), tuple(float(p) for p in pens), err)
    return best


@dataclasses.dataclass(frozen=True)
class LatencyPredictor:
    """A fitted latency predictor over architecture vectors (see the module docstring).

    Args:
      model: the ridge fit over the concatenated feature groups.
      features: the groups used, in order (a subset of ``onehot``, ``count``, ``source``).
      num_candidates: candidates per position.
      ids: value ids per (position, candidate), for ``count``.
      source_mean, source_std: standardisation of the ``source`` group.
    """

    model: RidgeModel
    features: tuple[str, ...]
    num_candidates: tuple[int, ...]
    ids: np.ndarray
    source_mean: np.ndarray | None = None
    source_std: np.ndarray | None = None

    def _groups(self, vecs: np.ndarray, sources: np.ndarray | None) -> list[np.ndarray]:
        vecs = np.asarray(vecs)
        if vecs.ndim != 2 or vecs.shape[1] != len(self.num_candidates):
            raise DnasError(f"architectures must be int[P, {len(self.num_candidates)}]; got shape {vecs.shape}")
        out = []
        for f in self.features:
            if f == "onehot":
                out.append(one_hot_features(vecs, self.num_candidates))
            elif f == "count":
                out.append(count_features(vecs, self.ids))
            else:
                if sources is None or np.shape(sources) != (len(vecs), len(self.source_mean)):
                    raise DnasError(f"this predictor transfers from {len(self.source_mean)} devices: pass their latencies f[P, {len(self.source_mean)}]")
                out.append((np.asarray(sources, np.float64) - self.source_mean) / self.source_std)
        return out

    def predict(self, vecs: np.ndarray, sources: np.ndarray | None = None) -> np.ndarray:
        """Predicted latencies ``f64[P]`` of ``int[P, n]`` architectures (``sources``:
        ``f[P, S]`` their latencies on the source devices, for a transfer predictor)."""
        return self.model.predict(np.concatenate(self._groups(vecs, sources), axis=1))

    def additive(self) -> tuple[float, np.ndarray]:
        """``(fixed, f64[n, K])``: the fit as a per-(position, candidate) table; only for
        predictors without ``source`` features (those are additive)."""
        if "source" in self.features:
            raise DnasError("a transfer predictor is not additive over ops; fit one without source features")
        n, width = len(self.num_candidates), max(self.num_candidates)
        table = np.zeros((n, width))
        w, offset = self.model.weights, 0
        for f in self.features:
            if f == "onehot":
                size = int(sum(self.num_candidates))
                flat = w[offset : offset + size]
                starts = np.concatenate([[0], np.cumsum(self.num_candidates)[:-1]])
                for i, (s, k) in enumerate(zip(starts, self.num_candidates)):
                    table[i, :k] += flat[s : s + k]
            else:
                size = int(self.ids.max()) + 1
                table += np.where(self.ids >= 0, w[offset : offset + size][np.maximum(self.ids, 0)], 0.0)
            offset += size
        fixed = self.model.intercept - float(self.model.mean_x @ w)
        return fixed, table

    def latency_term(self, space: SearchSpace) -> LatencyTerm:
        """The additive fit as a :class:`LatencyTerm` for ``space`` (whose vectors it was fitted on)."""
        if tuple(int(k) for k in space.num_candidates) != self.num_candidates:
            raise DnasError(f"this predictor was fitted on vectors with candidate counts {self.num_candidates}, "
                            f"the space has {tuple(int(k) for k in space.num_candidates)}")
        fixed, table = self.additive()
        return latency_term(space, {l: table[i, : self.num_candidates[i]] for i, l in enumerate(space.labels)}, fixed)

    # ----- JSON (what the ``predictor`` cost model reads) ----------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything a prediction needs, as JSON-able values."""
        m = self.model
        arr = lambda a: None if a is None else np.asarray(a).tolist()  # noqa: E731
        return {"schema": "dnas.latency_predictor", "version": 1, "features": list(self.features),
                "num_candidates": list(self.num_candidates), "ids": arr(self.ids),
                "source_mean": arr(self.source_mean), "source_std": arr(self.source_std),
                "model": {"mean_x": arr(m.mean_x), "weights": arr(m.weights), "intercept": m.intercept,
                          "penalties": list(m.penalties), "loo_rmse": m.loo_rmse}}

    @classmethod
    def from_json(cls, obj: Any, where: str = "latency predictor") -> "LatencyPredictor":
        """Reads :meth:`to_json`'s object; a malformed one is one DnasError line."""
        if not isinstance(obj, dict) or obj.get("schema") != "dnas.latency_predictor" or obj.get("version") != 1:
            raise DnasError(f"{where}: not a dnas.latency_predictor version 1 object")
        try:
            m = obj["model"]
            opt = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
            model = RidgeModel(np.asarray(m["mean_x"], np.float64), np.asarray(m["weights"], np.float64), float(m["intercept"]),
                               tuple(float(p) for p in m["penalties"]), float(m["loo_rmse"]))
            return cls(model, tuple(obj["features"]), tuple(int(k) for k in obj["num_candidates"]), np.asarray(obj["ids"], int),
                       opt(obj["source_mean"]), opt(obj["source_std"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DnasError(f"{where}: malformed ({type(e).__name__}: {e})") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes :meth:`to_json` to ``path``."""
        atomic_write_json(path, self.to_json(), indent=None)  # a crash mid-write leaves the old file whole

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyPredictor":
        """Reads a predictor written by :meth:`save`."""
        obj = read_json(path, "latency predictor")  # missing, not UTF-8 or not JSON: one line naming the file
        return cls.from_json(obj, where=f"latency predictor {str(path)!r}")


def fit_latency_predictor(
    vecs: np.ndarray,
    latency: np.ndarray,
    num_candidates: Sequence[int],
    *,
    candidates: Sequence[Sequence[Any]] | None = None,
    sources: np.ndarray | None = None,
    features: Sequence[str] | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
) -> LatencyPredictor:
    """Fits a latency predictor on measured architectures.

    Args:
      vecs: ``int[N, n]`` measured architectures (the space's vector encoding).
      latency: ``f[N]`` their measured latencies.
      num_candidates: candidates per position (``space.num_candidates``).
      candidates: per position its candidate values (``[c.candidates for c in
        space.choices]``), needed for ``count``.
      sources: ``f[N, S]`` the same architectures' latencies on S other devices, for
        few-shot transfer.
      features: groups to use; default ``onehot``, plus ``count`` when ``candidates`` is
        given and ``source`` when ``sources`` is. ``("onehot",)`` is the plain additive
        per-(position, op) least-squares model.
      grid: ridge penalties tried per group.

    Returns:
      The fitted :class:`LatencyPredictor`.

    Example:
      >>> space = NB201Space()                                              # doctest: +SKIP
      >>> p = fit_latency_predictor(vecs, ms, space.num_candidates, candidates=[c.candidates for c in space.choices])
      >>> p.predict(other_vecs)
    """
    if features is None:
        features = ("onehot",) + (("count",) if candidates is not None else ()) + (("source",) if sources is not None else ())
    features = tuple(features)
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features or len(set(features)) != len(features):
        raise DnasError(f"latency predictor features must be distinct names from {', '.join(FEATURES)}; got {', '.join(features) or 'none'}")
    if "count" in features and candidates is None:
        raise DnasError("'count' features need the candidates of each position")
    if "source" in features and sources is None:
        raise DnasError("'source' features need the source devices' latencies")
    latency = np.asarray(latency, np.float64)
    if not np.all(np.isfinite(latency)):
        raise DnasError("measured latencies must be finite")
    ids = value_ids(candidates)[0] if candidates is not None else -np.ones((len(num_candidates), 1), int)
    src_mean = src_std = None
    if "source" in features:
        sources = np.asarray(sources, np.float64)
        # Standardise with the training rows only: what a user of a new device has measured.
        src_mean = sources.mean(0)
        src_std = np.maximum(sources.std(0), 1e-6 * np.abs(src_mean) + 1e-12)
    shell = LatencyPredictor(RidgeModel(np.zeros(0), np.zeros(0), 0.0, (), 0.0), features, tuple(int(k) for k in num_candidates), ids, src_mean, src_std)
    model = fit_ridge(shell._groups(vecs, sources), latency, grid)
    return dataclasses.replace(shell, model=model)


def latency_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """How well predicted latencies match measured ones.

    Returns:
      ``spearman`` and ``kendall`` (tau-b) rank correlations, ``mape`` (mean absolute
      percentage error, in percent), ``median_ape`` (its median, in percent: robust to
      the few near-zero latencies that dominate the mean, e.g. NB201 cells of skips and
      zeros measured at 0.003 ms) and ``within_10pct`` (the fraction of architectures
      predicted within +-10 % of the measurement).
    """
    from scipy.stats import kendalltau, spearmanr

    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    rel = np.abs(p - m) / np.maximum(np.abs(m), 1e-12)
    return {
        "spearman": float(spearmanr(p, m)[0]),
        "kendall": float(kendalltau(p, m)[0]),
        "mape": float(100.0 * rel.mean()),
        "median_ape": float(100.0 * np.median(rel)),
        "within_10pct": float(np.mean(rel <= 0.10)),
    }
