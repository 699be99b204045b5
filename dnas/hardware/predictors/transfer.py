"""Few-shot transfer of a predictor to a new target (a new device) from source targets.

HELP (Lee et al., NeurIPS 2021) predicts a new device's latencies from 10 measurements by
meta-learning a GCN over the architecture graph conditioned on a hardware embedding. Here
the same ingredients are used without the meta-learning loop (not implemented; the
leave-one-device-out numbers in benchmarks/LATENCY.md are for this simpler scheme):

1. **Pretrain** one GCN (:class:`~dnas.hardware.predictors.models.GCNPredictor`) on all S
   source devices at once, on standardised log latencies (devices differ by scale and
   latencies compose multiplicatively across devices, so logs make them alike).
2. **Prior**: a new device is assumed, before any measurement, to rank like the source
   devices on average: ``prior(a) = mean_s ẑ_s(a)``, the pretrained GCN's mean
   standardised log latency over the source devices (with ``use_measured``, the measured
   ``z_s(a)`` when the architectures were measured there, as in NB201's table). Its slope
   and offset are fitted by unpenalised least squares on the N target samples (two
   numbers: ten samples determine them well).
3. **Correction**: the residual is fitted by ridge over groups (the per-op counts, the
   GCN's S predicted source latencies, and, with ``use_measured``, the measured ones), one
   penalty per group chosen by exact leave-one-out error on the N samples. A large
   penalty falls back to the prior, which is meant to keep a poor sample from swinging
   the model far; on a device whose latencies are mostly ties (NB201's pixel2) the
   seed-to-seed spread stays large (benchmarks/LATENCY.md).

No hyper-parameter reads the target beyond its N samples: the GCN's settings are fixed,
the ridge penalties come from leave-one-out on the N samples. The target is only ever
passed in as the N training values (:meth:`TransferPredictor.fit`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.types import PRNGKey
from dnas.hardware.predictor import DEFAULT_GRID, RidgeModel, fit_ridge
from dnas.hardware.predictors.graphs import Encoded
from dnas.hardware.predictors.models import GCNPredictor


def _z(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (a - ref.mean(0)) / np.maximum(ref.std(0), 1e-9)


class TransferPredictor:
    """Few-shot predictor of a new target from S source targets (module docstring).

    Follows the predictor contract (``fit(x, y, key)`` / ``predict(x)``); the source data
    are given at construction and the GCN is pretrained on first use (or by
    :meth:`pretrain`, to share one pretraining across many adaptations).

    Args:
      source_x: ``Encoded`` batch of P source architectures.
      source_y: ``f[P, S]`` their source targets (positive when ``log``).
      log: fit logs of the sources and the target (latencies), predicting ``exp``.
      use_measured: also use ``x.extra["sources"]`` (the measured source targets of the
        architectures being fitted and predicted) when the batch has them. Off by
        default: leave-one-device-out on NB201 (benchmarks/LATENCY.md) found the graph-only
        predictor as good on average and steadier on the hardest device (pixel2).
      gcn: keyword arguments of :class:`GCNPredictor`.
      pretrain_key: the key of the pretraining (default: the first ``fit``'s key).
    """

    def __init__(self, source_x: Encoded, source_y: np.ndarray, *, log: bool = True, use_measured: bool = False,
                 gcn: dict[str, Any] | None = None, pretrain_key: PRNGKey | None = None):
        source_y = np.asarray(source_y, np.float64).reshape(len(source_x), -1)
        if len(source_x) < 2 or not np.all(np.isfinite(source_y)):
            raise DnasError("transfer needs at least 2 source architectures with finite source values")
        if log and np.any(source_y <= 0):
            raise DnasError("transfer in log space needs positive source values (latencies); found values <= 0")
        self.source_x, self.source_y, self.log, self.use_measured = source_x, source_y, log, use_measured
        t = self._t(source_y)
        self.source_mean, self.source_std = t.mean(0), np.maximum(t.std(0), 1e-12)
        self.gcn = GCNPredictor(**(gcn or {}))
        self.pretrain_key = pretrain_key
        self.ridge: RidgeModel | None = None

    def _t(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.log else y

    def pretrain(self, key: PRNGKey) -> "TransferPredictor":
        """Pretrains the GCN on the source targets (step 1); returns self."""
        self.gcn.pretrain(self.source_x, self._t(self.source_y), key)
        return self

    def source_predictions(self, x: Encoded) -> np.ndarray:
        """``f64[P, S]``: the pretrained GCN's standardised predictions of the source targets."""
        gd, params, _, _ = self.gcn.pretrained
        return np.asarray(nnx.merge(gd, params)(jnp.asarray(x.adj), jnp.asarray(x.nodes)), np.float64)

    def _groups(self, x: Encoded, g: np.ndarray) -> list[np.ndarray]:
        groups = [x.count, _z(g, self._g_ref)]
        if self._measured_ref is not None:
            groups.append(_z(self._t(np.asarray(x.extra["sources"], np.float64)), self._measured_ref))
        return groups

    def _prior(self, x: Encoded, g: np.ndarray) -> np.ndarray:
        """``f64[P]``: the mean standardised source value, measured if known, else predicted."""
        if self._measured_ref is None:
            return g.mean(1)
        return ((self._t(np.asarray(x.extra["sources"], np.float64)) - self.source_mean) / self.source_std).mean(1)

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "TransferPredictor":
        """Adapts to the target from its N samples ``y f[N]`` at architectures ``x``.

        Args:
          x: the N measured architectures.
          y: ``f[N]`` their target values: the only target values this predictor reads.
          key: pretrains the GCN when it has not been (unless ``pretrain_key`` was given).
        """
        y = np.asarray(y, np.float64)
        if y.shape != (len(x),) or len(y) < 3 or not np.all(np.isfinite(y)):
            raise DnasError(f"transfer needs at least 3 finite target samples, one per architecture; got shape {y.shape}")
        if self.log and np.any(y <= 0):
            raise DnasError("transfer in log space needs positive target values (latencies); found values <= 0")
        if self.gcn.pretrained is None:
            self.pretrain(self.pretrain_key if self.pretrain_key is not None else key)
        t = self._t(y)
        g = self.source_predictions(x)
        self._g_ref = g
        measured = self.use_measured and "sources" in x.extra
        self._measured_ref = self._t(np.asarray(x.extra["sources"], np.float64)) if measured else None
        prior = self._prior(x, g)
        # Unpenalised slope and offset of the prior (np.polyfit's least squares, guarded
        # against a constant prior on the N samples).
        var = max(float(np.var(prior)), 1e-12)
        slope = float(np.mean((prior - prior.mean()) * (t - t.mean())) / var)
        self.prior = (slope, float(t.mean() - slope * prior.mean()))
        resid = t - (self.prior[0] * prior + self.prior[1])
        self.ridge = fit_ridge(self._groups(x, g), resid, DEFAULT_GRID)
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]`` predicted target values."""
        if self.ridge is None:
            raise DnasError("fit the transfer predictor before predicting")
        if self._measured_ref is not None and "sources" not in x.extra:
            raise DnasError("this transfer predictor was fitted with measured source values: pass them as extra['sources']")
        g = self.source_predictions(x)
        t = self.prior[0] * self._prior(x, g) + self.prior[1] + self.ridge.predict(np.concatenate(self._groups(x, g), axis=1))
        return np.exp(t) if self.log else t
