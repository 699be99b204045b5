"""Performance predictors with one contract, for accuracy, latency, energy alike.

Every model is built by a :data:`MODELS` factory and answers

    model.fit(x: Encoded, y: f[N], key) -> model      # fitted in place, returned
    model.predict(x: Encoded) -> f64[P]

deterministically for a given ``key`` (JAX models draw every random number from it; the
trees take their seed from it). Inputs are :class:`~dnas.hardware.predictors.graphs.Encoded`
batches, so a model picks the view it needs (graph, one-hot, counts, ``flops``/``params``,
other devices' latencies under ``extra["sources"]``).

- ``gcn``: a graph convolutional network over the architecture DAG (Kipf & Welling, ICLR
  2017), the latency predictor of BRP-NAS (Dudziak et al., NeurIPS 2020) and HELP (Lee et
  al., NeurIPS 2021); Flax NNX, trained with optax. It can be pretrained on other targets
  (other devices) and adapted to a new one with a few samples (:meth:`GCNPredictor.pretrain`).
- ``mlp``: an ensemble of MLPs on one-hot + count features (BANANAS, White et al., AAAI 2021).
- ``ridge``: ridge regression per feature group with leave-one-out penalties
  (:mod:`dnas.hardware.predictor`, the earlier latency predictor).
- ``xgboost``: gradient-boosted trees (NASLib's strongest tabular baseline, White et al.,
  "How powerful are performance predictors", NeurIPS 2021).
- ``ridge_ensemble``: few-shot transfer, the geometric mean of ``ridge`` with sources and
  a log-space ridge on the log source latencies alone (:class:`RidgeEnsemble`).
- ``flops`` / ``params``: one count alone, scaled by least squares (the zero-training baseline).

``ridge``, ``mlp`` and ``xgboost`` append the standardised ``sources`` (other devices'
latencies of the same architectures) to their features when the batch has them: few-shot
transfer as in :mod:`dnas.hardware.predictor`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.core.types import PRNGKey
from dnas.hardware.predictor import DEFAULT_GRID, fit_ridge
from dnas.hardware.predictors.graphs import Encoded


class Model(Protocol):
    """What every predictor answers (module docstring)."""

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "Model": ...

    def predict(self, x: Encoded) -> np.ndarray: ...


MODELS: Registry[Callable[..., Model]] = Registry("predictor model")


def _targets(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or len(y) != n:
        raise DnasError(f"a predictor fit needs one target per architecture: {n} architectures, targets of shape {y.shape}")
    if len(y) < 2 or not np.all(np.isfinite(y)):
        raise DnasError(f"a predictor fit needs at least 2 finite targets; got {len(y)} ({int(np.sum(~np.isfinite(y)))} not finite)")
    return y


class _Standardiser:
    """Feature scaling fitted on the training rows only (what a user has measured)."""

    def __init__(self, x: np.ndarray):
        self.mean = x.mean(0)
        std = x.std(0)
        # A feature constant on the training rows (a one-hot never chosen among 10 samples)
        # keeps unit scale: dividing by ~0 would blow up the rows that do choose it.
        self.std = np.where(std > 1e-8 * (1.0 + np.abs(self.mean)), std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _sources(x: Encoded) -> np.ndarray | None:
    s = x.extra.get("sources")
    return None if s is None else np.asarray(s, np.float64).reshape(len(x), -1)


# ----- ridge ---------------------------------------------------------------------------
class RidgePredictor:
    """Ridge regression, one penalty per feature group chosen by exact leave-one-out error.

    Args:
      features: groups among ``onehot``, ``count`` (the per-op prior); the standardised
        ``sources`` group is added when the batch has ``extra["sources"]``.
      grid: penalties tried per group.
    """

    def __init__(self, features: tuple[str, ...] = ("onehot", "count"), grid: tuple[float, ...] = DEFAULT_GRID):
        bad = [f for f in features if f not in ("onehot", "count")]
        if bad or not features:
            raise DnasError(f"ridge features are onehot and/or count; got {', '.join(features) or 'none'}")
        self.features, self.grid = tuple(features), tuple(grid)
        self.model = self.scale = None

    def _groups(self, x: Encoded) -> list[np.ndarray]:
        groups = [x.onehot if f == "onehot" else x.count for f in self.features]
        s = _sources(x)
        if (s is not None) != (self.scale is not None):
            raise DnasError("this ridge model was fitted " + ("with" if self.scale is not None else "without") + " source latencies; predict the same way")
        return groups + ([self.scale(s)] if s is not None else [])

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "RidgePredictor":
        """Closed form; ``key`` is unused (the fit has no randomness)."""
        del key
        y = _targets(y, len(x))
        s = _sources(x)
        self.scale = None if s is None else _Standardiser(s)
        self.model = fit_ridge(self._groups(x), y, self.grid)
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``."""
        return self.model.predict(np.concatenate(self._groups(x), axis=1))


MODELS.add("ridge", RidgePredictor)


# ----- single counts -------------------------------------------------------------------
class CountPredictor:
    """``y ≈ a · x.extra[column] + b`` by least squares: FLOPs or parameters alone.

    Args:
      column: the ``extra`` feature read (``flops``, ``params``).
    """

    def __init__(self, column: str):
        self.column, self.coef = column, None

    def _col(self, x: Encoded) -> np.ndarray:
        if self.column not in x.extra:
            raise DnasError(f"the {self.column!r} model needs the architectures' {self.column} (Encoded.extra[{self.column!r}])")
        return np.asarray(x.extra[self.column], np.float64).reshape(len(x))

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "CountPredictor":
        """Least squares on one feature; ``key`` is unused."""
        del key
        y, c = _targets(y, len(x)), self._col(x)
        a = np.cov(c, y, bias=True)[0, 1] / max(np.var(c), 1e-12)
        self.coef = (float(a), float(y.mean() - a * c.mean()))
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``."""
        return self.coef[0] * self._col(x) + self.coef[1]


MODELS.add("flops", functools.partial(CountPredictor, "flops"))
MODELS.add("params", functools.partial(CountPredictor, "params"))


# ----- gradient-boosted trees ----------------------------------------------------------
TREES_DEFAULTS = dict(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8)


def trees_regressor(seed: int, **kw: Any) -> Any:
    """An unfitted ``xgboost.XGBRegressor`` (``TREES_DEFAULTS`` updated by ``kw``), one thread
    and exact splits so a fit is bitwise reproducible for its ``seed``; a one-line DnasError
    when xgboost is not installed (it is an optional dependency: ``dnas[predictors]``)."""
    try:
        import xgboost  # a heavy optional dependency, loaded only when trees are asked for
    except ImportError:
        raise DnasError("gradient-boosted trees need xgboost: pip install 'dnas[predictors]'") from None
    return xgboost.XGBRegressor(**{**TREES_DEFAULTS, **kw}, random_state=int(seed), n_jobs=1, tree_method="exact")


class TreesPredictor:
    """Gradient-boosted regression trees (xgboost) on one-hot + count (+ sources).

    Args:
      n_estimators, max_depth, learning_rate, subsample: xgboost's; NASLib's defaults
        scaled down for small N (shallow trees, row subsampling).
    """

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.05, subsample: float = 0.8):
        self.kw = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=subsample)
        self.model = self.scale = None

    def _x(self, x: Encoded) -> np.ndarray:
        s = _sources(x)
        return np.concatenate([x.onehot, x.count] + ([self.scale(s)] if s is not None and self.scale is not None else []), axis=1)

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "TreesPredictor":
        """Fits the trees; the seed of their row subsampling comes from ``key``."""
        y = _targets(y, len(x))
        s = _sources(x)
        self.scale = None if s is None else _Standardiser(s)
        self.model = trees_regressor(int(jax.random.randint(key, (), 0, 2**31 - 1)), **self.kw)
        self.model.fit(self._x(x), y)
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``."""
        return np.asarray(self.model.predict(self._x(x)), np.float64)


MODELS.add("xgboost", TreesPredictor)


# ----- few-shot ridge ensemble ---------------------------------------------------------
class RidgeEnsemble:
    """Few-shot transfer by two ridge models averaged in log space (a geometric mean):

    - ``ridge``: :class:`RidgePredictor` on one-hot + count + the standardised source
      latencies (one penalty per group by leave-one-out);
    - ``log sources``: the log target as a ridge mix of the standardised *log* source
      latencies alone (latencies of one cell on two devices compose multiplicatively).

    Why both: with 10 samples, leave-one-out sometimes hands the first model's weight to
    the op features, which is right on additive devices (GPU, FPGA, ASIC: 0.997-1.000) and
    wrong where latency is not additive or is rounded to whole milliseconds (pixel2); the
    second has no op features to pick. The leave-one-device-out table in
    benchmarks/LATENCY.md shows the average steadier than either (it was also chosen
    there, with pixel2 in view: see its caveat).

    Needs ``extra["sources"]`` (positive) and positive targets.
    """

    def __init__(self, grid: tuple[float, ...] = DEFAULT_GRID):
        self.grid = grid
        self.ridge = self.log_model = self.log_ref = None

    def _log_sources(self, x: Encoded) -> np.ndarray:
        s = _sources(x)
        if s is None or np.any(s <= 0):
            raise DnasError("the ridge_ensemble model transfers from other devices: pass positive source latencies "
                            "(--transfer-from FILE --transfer-columns ...)")
        return np.log(s)

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "RidgeEnsemble":
        """Both members in closed form; ``key`` is unused."""
        y = _targets(y, len(x))
        if np.any(y <= 0):
            raise DnasError("the ridge_ensemble model fits logs of latencies: targets must be positive")
        ls = self._log_sources(x)
        self.ridge = RidgePredictor(grid=self.grid).fit(x, y, key)
        self.log_ref = _Standardiser(ls)
        self.log_model = fit_ridge([self.log_ref(ls)], np.log(y), self.grid)
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``: ``exp(mean(log ridge, log-sources ridge))``."""
        # A linear ridge can predict <= 0 far from its samples; floor it before the log.
        a = np.log(np.maximum(self.ridge.predict(x), 1e-6))
        b = self.log_model.predict(self.log_ref(self._log_sources(x)))
        return np.exp(0.5 * (a + b))


MODELS.add("ridge_ensemble", RidgeEnsemble)


# ----- shared training loop ------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _trainer(loss: Callable[..., jax.Array], static: Any, n: int, steps: int, learning_rate: float, weight_decay: float,
             batch: int | None) -> Callable[[Any, dict[str, jax.Array], PRNGKey, Any], Any]:
    """One jitted training loop per (loss, static settings, sizes): repeated fits (seeds,
    devices, search rounds) reuse the compiled program instead of tracing a new closure."""
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)

    @jax.jit
    def run(params, data, key, anchor):
        def step(carry, k):
            p, s = carry
            b = data if batch is None or batch >= n else jax.tree.map(lambda a: a[jax.random.randint(k, (batch,), 0, n)], data)
            g = jax.grad(loss)(p, b, static, anchor)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))[0][0]

    return run


def _train(loss: Callable[..., jax.Array], static: Any, params: Any, data: dict[str, jax.Array], key: PRNGKey, *, steps: int,
           learning_rate: float, weight_decay: float, batch: int | None, anchor: Any = None) -> Any:
    """AdamW with cosine decay for ``steps`` steps, full batch or minibatches drawn from ``key``.

    Args:
      loss: a module-level ``(params, batch dict, static, anchor) -> scalar``.
      static: hashable settings of the loss (graph definition, ensemble size, ...).
      params: the pytree trained.
      data: arrays with a common leading axis N.
      key: draws the minibatches.
      batch: rows per step (None: all N every step).
      anchor: a pytree the loss may read (the pretrained weights for L2-SP).

    Returns:
      The trained params.
    """
    n = int(next(iter(data.values())).shape[0])
    run = _trainer(loss, static, n, int(steps), float(learning_rate), float(weight_decay), batch)
    # Block: a fit returns trained weights, not a promise (and fit_s then times the training).
    return jax.block_until_ready(run(params, data, key, anchor))


# ----- MLP ensemble --------------------------------------------------------------------
class MLP(nnx.Module):
    """A ReLU MLP ``f32[P, d] -> f32[P]``."""

    def __init__(self, d: int, hidden: int, layers: int, *, rngs: nnx.Rngs):
        sizes = [d] + [hidden] * layers
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for lin in self.hidden:
            x = jax.nn.relu(lin(x))
        return self.out(x)[:, 0]


def _ensemble_loss(p: Any, b: dict[str, jax.Array], static: tuple[Any, str], anchor: Any) -> jax.Array:
    """Summed mean-square error of an ensemble (vmapped params) on the batch's ``y``; the
    members share nothing, so the sum trains each as if alone."""
    del anchor
    gd, kind = static
    if kind == "x":
        pred = jax.vmap(lambda q: nnx.merge(gd, q)(b["x"]))(p)
    else:
        pred = jax.vmap(lambda q: nnx.merge(gd, q)(b["adj"], b["nodes"]))(p)
    return jnp.sum(jnp.mean((pred - b["y"][None]) ** 2, axis=tuple(range(1, pred.ndim))))


def _finetune_loss(p: Any, b: dict[str, jax.Array], static: tuple[Any, float], anchor: Any) -> jax.Array:
    """Mean-square error of one GCN plus L2-SP: ``l2sp / N · ||p - anchor||²``."""
    gd, l2sp = static
    pred = nnx.merge(gd, p)(b["adj"], b["nodes"])[:, 0]
    pull = sum(jnp.sum((u - v) ** 2) for u, v in zip(jax.tree.leaves(p), jax.tree.leaves(anchor)))
    return jnp.mean((pred - b["y"]) ** 2) + l2sp * pull / b["y"].shape[0]


class MLPEnsemble:
    """``members`` MLPs on one-hot + count (+ standardised sources) features, each from its
    own initialisation, trained full batch on standardised targets; the prediction is
    their mean (BANANAS' ensemble, White et al. 2021).

    Args:
      members, hidden, layers: ensemble size and MLP shape.
      steps, learning_rate, weight_decay: AdamW (cosine decay) full-batch training.
    """

    def __init__(self, members: int = 5, hidden: int = 64, layers: int = 2, steps: int = 500, learning_rate: float = 1e-2,
                 weight_decay: float = 1e-3):
        self.members, self.hidden, self.layers = members, hidden, layers
        self.steps, self.learning_rate, self.weight_decay = steps, learning_rate, weight_decay
        self.params = self.graphdef = self.scale = None

    def _x(self, x: Encoded) -> np.ndarray:
        s = _sources(x)
        return np.concatenate([x.onehot, x.count] + ([s] if s is not None else []), axis=1)

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "MLPEnsemble":
        """Trains the members (initialisations from ``key``)."""
        y = _targets(y, len(x))
        feats = self._x(x)
        self.scale, self.y_mean, self.y_std = _Standardiser(feats), y.mean(), max(y.std(), 1e-12)
        d = feats.shape[1]
        k_init, k_train = jax.random.split(key)
        self.graphdef = nnx.graphdef(MLP(d, self.hidden, self.layers, rngs=nnx.Rngs(0)))
        params = jax.vmap(lambda k: nnx.state(MLP(d, self.hidden, self.layers, rngs=nnx.Rngs(k)), nnx.Param))(jax.random.split(k_init, self.members))
        data = {"x": jnp.asarray(self.scale(feats), jnp.float32), "y": jnp.asarray((y - self.y_mean) / self.y_std, jnp.float32)}
        self.params = _train(_ensemble_loss, (self.graphdef, "x"), params, data, k_train, steps=self.steps, learning_rate=self.learning_rate,
                             weight_decay=self.weight_decay, batch=None)
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``: the members' mean."""
        xs = jnp.asarray(self.scale(self._x(x)), jnp.float32)
        pred = jax.vmap(lambda q: nnx.merge(self.graphdef, q)(xs))(self.params).mean(0)
        return np.asarray(pred, np.float64) * self.y_std + self.y_mean


MODELS.add("mlp", MLPEnsemble)


# ----- graph convolutional network -----------------------------------------------------
def normalised_adjacency(adj: jax.Array) -> jax.Array:
    """``f32[P, V, V]`` -> ``D^-1/2 (A + A' + I) D^-1/2``: Kipf & Welling's propagation, with
    edges used both ways so a node sees what it feeds as well as what feeds it (a cost
    depends on both, e.g. a conv followed by a pool)."""
    a = jnp.minimum(adj + jnp.swapaxes(adj, -1, -2), 1.0) + jnp.eye(adj.shape[-1])
    d = 1.0 / jnp.sqrt(a.sum(-1))
    return a * d[..., :, None] * d[..., None, :]


class GCN(nnx.Module):
    """Graph convolutions over an architecture DAG, read out by the mean over nodes and the
    output node (the last), then a linear head.

    ``h_{l+1} = relu(Â h_l W_l) + h_l`` (residual, so depth does not wash out the op
    identities); the embedding is ``[mean_v h_L, h_L[output]]`` ``f32[P, 2·hidden]``.

    Args:
      in_features: node feature size F.
      hidden: width.
      layers: graph convolutions.
      out: outputs (1 for one target; S when pretrained on S devices at once).
    """

    def __init__(self, in_features: int, hidden: int, layers: int, out: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(in_features, hidden, rngs=rngs)
        self.convs = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs) for _ in range(layers)])
        self.head = nnx.Linear(2 * hidden, out, rngs=rngs)

    def embedding(self, adj: jax.Array, nodes: jax.Array) -> jax.Array:
        """``adj f32[P, V, V]``, ``nodes f32[P, V, F]`` -> ``f32[P, 2·hidden]``."""
        a = normalised_adjacency(adj)
        h = jax.nn.relu(self.embed(nodes))
        for conv in self.convs:
            h = jax.nn.relu(a @ conv(h)) + h
        return jnp.concatenate([h.mean(1), h[:, -1]], axis=-1)

    def __call__(self, adj: jax.Array, nodes: jax.Array) -> jax.Array:
        """``f32[P, out]``."""
        return self.head(self.embedding(adj, nodes))


class GCNPredictor:
    """The GCN as a predictor: from scratch, or pretrained on source targets and adapted.

    From scratch, :meth:`fit` trains the whole network on the standardised targets (an
    ensemble of ``members`` initialisations, averaged). After :meth:`pretrain` on S
    source targets (other devices' latencies of many architectures), :meth:`fit` adapts
    to a new target with few samples in two steps: a new linear head on the frozen
    embedding, by ridge with its penalty chosen by leave-one-out error on those samples
    (closed form, so ten samples give a stable head, and no hold-out is spent), then
    ``finetune_steps`` of AdamW on the whole network pulled towards the pretrained weights
    (L2-SP, Li et al. ICML 2018), which keeps a few samples from undoing the pretraining.

    Args:
      hidden, layers: GCN width and depth (BRP-NAS uses 4 layers; NB201 cells are 8 nodes).
      members: ensemble size for training from scratch.
      steps, learning_rate, weight_decay, batch: training from scratch / pretraining.
      pretrain_steps, pretrain_lr: :meth:`pretrain`'s steps (minibatches of ``batch``) and
        peak learning rate (chosen by the fit to the source devices, not the target).
      finetune_steps, finetune_lr, l2sp: adaptation after the ridge head (0 steps: head only).
    """

    def __init__(self, hidden: int = 64, layers: int = 3, members: int = 3, steps: int = 600, learning_rate: float = 3e-3,
                 weight_decay: float = 1e-4, batch: int = 256, pretrain_steps: int = 2000, pretrain_lr: float = 1e-2, finetune_steps: int = 0,
                 finetune_lr: float = 1e-3, l2sp: float = 1.0):
        self.hidden, self.layers, self.members = hidden, layers, members
        self.steps, self.learning_rate, self.weight_decay, self.batch = steps, learning_rate, weight_decay, batch
        self.pretrain_steps, self.pretrain_lr, self.finetune_steps, self.finetune_lr, self.l2sp = pretrain_steps, pretrain_lr, finetune_steps, finetune_lr, l2sp
        self.graphdef = self.params = None
        self.pretrained = None  # (graphdef, params, source mean, source std) after pretrain
        self.head = None  # (w f64[E], b): the ridge head on the frozen embedding, after a head-only adaptation

    def _module(self, f: int, out: int, key: PRNGKey) -> GCN:
        return GCN(f, self.hidden, self.layers, out, rngs=nnx.Rngs(key))

    def _fit_net(self, x: Encoded, y: np.ndarray, key: PRNGKey, members: int, steps: int, lr: float) -> tuple[Any, Any]:
        """Trains ``members`` GCNs with ``y.shape[1]`` outputs on standardised ``y f[N, S]``."""
        f, out = x.nodes.shape[-1], y.shape[1]
        k_init, k_train = jax.random.split(key)
        gd = nnx.graphdef(self._module(f, out, jax.random.key(0)))
        params = jax.vmap(lambda k: nnx.state(self._module(f, out, k), nnx.Param))(jax.random.split(k_init, members))
        data = {"adj": jnp.asarray(x.adj), "nodes": jnp.asarray(x.nodes), "y": jnp.asarray(y, jnp.float32)}
        params = _train(_ensemble_loss, (gd, "graph"), params, data, k_train, steps=steps, learning_rate=lr, weight_decay=self.weight_decay,
                        batch=self.batch)
        return gd, params

    def pretrain(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "GCNPredictor":
        """Trains one GCN on S source targets at once (a multi-output head).

        Args:
          x: the source architectures (P of them).
          y: ``f[P, S]`` their source targets (e.g. S devices' latencies); each column is
            standardised, so devices of any scale weigh the same.
          key: initialisation and minibatches.
        Returns:
          self, ready for few-shot :meth:`fit`.
        """
        y = np.asarray(y, np.float64).reshape(len(x), -1)
        if not np.all(np.isfinite(y)):
            raise DnasError("pretraining targets must be finite")
        mu, sd = y.mean(0), np.maximum(y.std(0), 1e-12)
        gd, params = self._fit_net(x, (y - mu) / sd, key, 1, self.pretrain_steps, self.pretrain_lr)
        self.pretrained = (gd, jax.tree.map(lambda a: a[0], params), mu, sd)
        return self

    def _embed(self, gd: Any, params: Any, x: Encoded) -> np.ndarray:
        return np.asarray(nnx.merge(gd, params).embedding(jnp.asarray(x.adj), jnp.asarray(x.nodes)), np.float64)

    def fit(self, x: Encoded, y: np.ndarray, key: PRNGKey) -> "GCNPredictor":
        """From scratch, or (after :meth:`pretrain`) the few-shot adaptation (class docstring)."""
        y = _targets(y, len(x))
        self.y_mean, self.y_std = y.mean(), max(y.std(), 1e-12)
        yz = (y - self.y_mean) / self.y_std
        if self.pretrained is None:
            self.graphdef, self.params = self._fit_net(x, yz[:, None], key, self.members, self.steps, self.learning_rate)
            self.head = None
            return self
        gd, p0, _, _ = self.pretrained
        emb = self._embed(gd, p0, x)
        ridge = fit_ridge([emb], yz, DEFAULT_GRID)
        w, b = ridge.weights, ridge.intercept - float(ridge.mean_x @ ridge.weights)
        if self.finetune_steps <= 0:
            self.graphdef, self.params, self.head = gd, p0, (w, b)
            return self
        # Fine-tune the whole network from the ridge head, pulled towards the pretrained weights.
        module = nnx.merge(gd, p0)
        module.head = nnx.Linear(2 * self.hidden, 1, rngs=nnx.Rngs(0))
        module.head.kernel[...] = jnp.asarray(w[:, None], jnp.float32)
        module.head.bias[...] = jnp.asarray([b], jnp.float32)
        head_gd, params = nnx.split(module, nnx.Param)
        data = {"adj": jnp.asarray(x.adj), "nodes": jnp.asarray(x.nodes), "y": jnp.asarray(yz, jnp.float32)}
        params = _train(_finetune_loss, (head_gd, float(self.l2sp)), params, data, key, steps=self.finetune_steps,
                        learning_rate=self.finetune_lr, weight_decay=0.0, batch=None, anchor=params)
        self.graphdef, self.params, self.head = head_gd, jax.tree.map(lambda a: a[None], params), None
        return self

    def predict(self, x: Encoded) -> np.ndarray:
        """``f64[P]``."""
        if self.head is not None:
            w, b = self.head
            z = self._embed(self.graphdef, self.params, x) @ w + b
        else:
            adj, nodes = jnp.asarray(x.adj), jnp.asarray(x.nodes)
            z = np.asarray(jax.vmap(lambda q: nnx.merge(self.graphdef, q)(adj, nodes)[:, 0])(self.params).mean(0), np.float64)
        return z * self.y_std + self.y_mean


MODELS.add("gcn", GCNPredictor)
