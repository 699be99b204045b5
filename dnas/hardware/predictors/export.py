"""Fitted graph predictors as files and as pure, differentiable JAX functions of α.

A fitted :class:`~dnas.hardware.predictors.models.GCNPredictor` (from scratch, pretrained
and adapted, or fine-tuned) or a graph-only
:class:`~dnas.hardware.predictors.transfer.TransferPredictor` is exported to an
:class:`ExportedPredictor`: the GCN weights and every number its prediction reads (target
scaling, ridge head, prior, correction), nothing else. ``dnas predictor fit --save F``
writes it as JSON; the ``gcn`` cost model (:mod:`dnas.hardware.cost_models`) loads it.

Why it is differentiable in the architecture: every input the predictor reads is linear
in the architecture's one-hot matrix ``f32[n, K]``. The graph's node features put each
position's one-hot in its own node row (NB201's BRP-NAS graph, the op-sequence graph), the
adjacency does not depend on the architecture in those encodings, and the per-op counts
of the transfer correction are sums of one-hots. So with ``nodes(a) = Σ_{i,k} a[i,k]·B[i,k]``
(the basis ``B`` read off :func:`~dnas.hardware.predictors.graphs.encode` at n·K
architectures), feeding the relaxation's probabilities in place of the one-hots gives the
predictor at the mean encoding: exact for discrete architectures, smooth in α, and
jittable (the first-order estimate latency-predictor NAS uses, e.g. BRP-NAS, HELP).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.io import atomic_write_json, read_json
from dnas.hardware.predictors.graphs import encode
from dnas.hardware.predictors.models import GCN, GCNPredictor
from dnas.hardware.predictors.transfer import TransferPredictor
from dnas.space.base import SearchSpace

SCHEMA = "dnas.graph_predictor"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Basis:
    """The linear map from a one-hot (or probability) matrix to a predictor's inputs.

    Args:
      adj: ``f32[V, V]`` the adjacency (the same for every architecture).
      nodes: ``f32[n, K, V, F]`` node features contributed by candidate k at position i.
      count: ``f32[n, K, C]`` per-op counts contributed likewise.
    """

    adj: np.ndarray
    nodes: np.ndarray
    count: np.ndarray


def basis(space: SearchSpace) -> Basis:
    """Reads :class:`Basis` off :func:`encode` at the all-zeros architecture and at each
    single change of it; refuses a space whose encoding is not additive over positions."""
    n, K = len(space.labels), max(int(k) for k in space.num_candidates)
    zero = np.zeros((1, n), np.int32)
    e0 = encode(space, zero)
    nodes = np.zeros((n, K) + e0.nodes.shape[1:], np.float32)
    count = np.zeros((n, K, e0.count.shape[1]), np.float32)
    for i, k_i in enumerate(space.num_candidates):
        vecs = np.zeros((int(k_i), n), np.int32)
        vecs[:, i] = np.arange(int(k_i))
        e = encode(space, vecs)
        if not np.array_equal(e.adj, np.broadcast_to(e0.adj, e.adj.shape)):
            raise DnasError("this space's graph changes with the architecture; the gcn cost model needs a fixed graph")
        # nodes(a) = nodes(0) + Σ_i (nodes(e_i,a_i) - nodes(0)): spread nodes(0) over positions.
        nodes[i, : int(k_i)] = e.nodes - e0.nodes + e0.nodes / n
        count[i, : int(k_i)] = e.count - e0.count + e0.count / n
    b = Basis(e0.adj[0], nodes, count)
    # Check additivity on a few architectures rather than trusting it.
    rng = np.random.default_rng(0)
    vecs = np.stack([rng.integers(0, int(k), 8) for k in space.num_candidates], axis=1).astype(np.int32)
    enc = encode(space, vecs)
    onehot = np.asarray(jax.nn.one_hot(vecs, K))
    if not (np.allclose(np.einsum("pnk,nkvf->pvf", onehot, nodes), enc.nodes, atol=1e-5)
            and np.allclose(np.einsum("pnk,nkc->pc", onehot, count), enc.count, atol=1e-5)):
        raise DnasError("this space's predictor encoding is not a sum over positions; the gcn cost model cannot price probabilities")
    return b


def _pure(tree: Any) -> Any:
    return jax.tree.map(lambda a: np.asarray(a, np.float32).tolist(), nnx.to_pure_dict(tree))


def _abstract(cfg: dict[str, int]) -> tuple[Any, Any]:
    module = nnx.eval_shape(lambda: GCN(cfg["in_features"], cfg["hidden"], cfg["layers"], cfg["out"], rngs=nnx.Rngs(0)))
    return nnx.split(module, nnx.Param)


@dataclasses.dataclass
class ExportedPredictor:
    """A fitted graph predictor reduced to arrays (module docstring).

    ``kind`` is ``gcn`` (``y = readout(GCN(a)) · y_std + y_mean`` where the readout is the
    members' mean first output, or a ridge ``head`` on the embedding) or ``transfer``
    (``t = slope · mean_s ĝ_s(a) + offset + ridge([count(a), z(ĝ(a))])``, ``y = exp(t)``
    when ``log``; :mod:`.transfer`).

    Args:
      kind: ``gcn`` or ``transfer``.
      gcn: ``{"in_features", "hidden", "layers", "out"}`` of the network.
      params: the GCN's ``nnx.Param`` state, each leaf with a leading members axis.
      numbers: the readout's arrays and scalars (see :meth:`to_json`).
      num_candidates: the space's candidate counts, checked on use.
    """

    kind: str
    gcn: dict[str, int]
    params: Any
    numbers: dict[str, Any]
    num_candidates: tuple[int, ...]

    @classmethod
    def of(cls, predictor: GCNPredictor | TransferPredictor, space: SearchSpace) -> "ExportedPredictor":
        """Exports a fitted predictor of architectures of ``space``."""
        nc = tuple(int(k) for k in space.num_candidates)
        if isinstance(predictor, TransferPredictor):
            if predictor.ridge is None:
                raise DnasError("fit the transfer predictor before saving it")
            if predictor._measured_ref is not None:
                raise DnasError("a transfer predictor that reads measured source values cannot price unmeasured architectures; "
                                "fit it without use_measured to save it")
            gd, p0, _, _ = predictor.gcn.pretrained
            g_ref = predictor._g_ref
            r = predictor.ridge
            numbers = {"log": bool(predictor.log), "slope": predictor.prior[0], "offset": predictor.prior[1],
                       "g_mean": g_ref.mean(0), "g_std": np.maximum(g_ref.std(0), 1e-9), "mean_x": r.mean_x, "weights": r.weights,
                       "intercept": r.intercept}
            return cls("transfer", _config(predictor.gcn, gd, p0), jax.tree.map(lambda a: a[None], p0), numbers, nc)
        if isinstance(predictor, GCNPredictor):
            if predictor.params is None:
                raise DnasError("fit the gcn predictor before saving it")
            numbers: dict[str, Any] = {"y_mean": predictor.y_mean, "y_std": predictor.y_std}
            params = predictor.params
            if predictor.head is not None:  # the head-only adaptation: one network, a ridge head
                numbers.update(head_w=predictor.head[0], head_b=predictor.head[1])
                params = jax.tree.map(lambda a: a[None], params)
            return cls("gcn", _config(predictor, predictor.graphdef, jax.tree.map(lambda a: a[0], params)), params, numbers, nc)
        raise DnasError(f"only gcn predictors can be exported as graph predictors, not {type(predictor).__name__}")

    # ----- the pure function ------------------------------------------------------------------
    def apply(self, adj: jax.Array, nodes: jax.Array, count: jax.Array) -> jax.Array:
        """``adj f32[P, V, V]``, ``nodes f32[P, V, F]``, ``count f32[P, C]`` -> ``f32[P]``
        predictions; pure JAX (jittable, differentiable in ``nodes`` and ``count``)."""
        nums = {k: jnp.asarray(v, jnp.float32) for k, v in self.numbers.items() if not isinstance(v, bool)}
        static = (self.kind, tuple(sorted(self.gcn.items())), bool(self.numbers.get("log", False)))
        return _apply(static, self.params, nums, adj, nodes, count)

    def price(self, b: Basis, probs: jax.Array) -> jax.Array:
        """``f32[..., n, K]`` one-hots or probabilities -> ``f32[...]`` predictions, through
        the linear :class:`Basis` (module docstring)."""
        probs = jnp.asarray(probs, jnp.float32)
        lead = probs.shape[:-2]
        p = probs.reshape((-1,) + probs.shape[-2:])
        nodes = jnp.einsum("pnk,nkvf->pvf", p, jnp.asarray(b.nodes))
        count = jnp.einsum("pnk,nkc->pc", p, jnp.asarray(b.count))
        adj = jnp.broadcast_to(jnp.asarray(b.adj), (p.shape[0],) + b.adj.shape)
        return self.apply(adj, nodes, count).reshape(lead)

    def predict(self, space: SearchSpace, vecs: np.ndarray) -> np.ndarray:
        """``int[P, n]`` architectures of ``space`` -> ``f64[P]`` (eager, from :func:`encode`)."""
        self.check(space)
        e = encode(space, vecs)
        return np.asarray(self.apply(jnp.asarray(e.adj), jnp.asarray(e.nodes), jnp.asarray(e.count, jnp.float32)), np.float64)

    def check(self, space: SearchSpace) -> None:
        """Refuses a space with other candidate counts than the one fitted on."""
        if tuple(int(k) for k in space.num_candidates) != self.num_candidates:
            raise DnasError(f"this predictor was fitted on architectures with candidate counts {self.num_candidates}; "
                            f"the space has {tuple(int(k) for k in space.num_candidates)}")

    # ----- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"schema", "version", "kind", "gcn", "num_candidates", "params", "numbers"}``, arrays as lists."""
        nums = {k: (v if isinstance(v, bool) else np.asarray(v, np.float64).tolist()) for k, v in self.numbers.items()}
        return {"schema": SCHEMA, "version": VERSION, "kind": self.kind, "gcn": self.gcn, "num_candidates": list(self.num_candidates),
                "params": _pure(self.params), "numbers": nums}

    @classmethod
    def from_json(cls, obj: Any, where: str = "graph predictor") -> "ExportedPredictor":
        """Rebuilds from :meth:`to_json`'s object (``where`` names it in errors)."""
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise DnasError(f"{where}: not a dnas graph predictor (schema {SCHEMA!r}); write one with dnas predictor fit --model gcn --save F")
        if obj.get("version") != VERSION:
            raise DnasError(f"{where}: version {obj.get('version')!r} is not supported; this dnas reads version {VERSION}")
        try:
            kind, cfg = obj["kind"], {k: int(v) for k, v in obj["gcn"].items()}
            _, state = _abstract(cfg)
            pure = jax.tree.map(lambda a: np.asarray(a, np.float32), obj["params"], is_leaf=lambda a: isinstance(a, list))
            nnx.replace_by_pure_dict(state, pure)
            numbers = {k: (v if isinstance(v, bool) else np.asarray(v, np.float64)) for k, v in obj["numbers"].items()}
            nc = tuple(int(k) for k in obj["num_candidates"])
        except (KeyError, TypeError, ValueError) as e:
            raise DnasError(f"{where}: malformed graph predictor ({type(e).__name__}: {e})") from None
        if kind not in ("gcn", "transfer"):
            raise DnasError(f"{where}: kind {kind!r} is not gcn or transfer")
        return cls(kind, cfg, state, numbers, nc)

    def save(self, path: str | os.PathLike) -> None:
        """Writes :meth:`to_json` to ``path``."""
        atomic_write_json(path, self.to_json(), indent=None)  # a crash mid-write leaves the old file whole

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExportedPredictor":
        """Reads a file written by :meth:`save`."""
        return cls.from_json(read_json(path, "graph predictor"), where=f"graph predictor {str(path)!r}")


@functools.partial(jax.jit, static_argnums=0)
def _apply(static: tuple[str, tuple[tuple[str, int], ...], bool], params: Any, num: dict[str, jax.Array], adj: jax.Array, nodes: jax.Array,
           count: jax.Array) -> jax.Array:
    """:meth:`ExportedPredictor.apply` as one jitted function of arrays (one compile per
    network shape, shared by eager calls and their gradients)."""
    kind, cfg, log = static
    gd, _ = _abstract(dict(cfg))
    if kind == "transfer":
        g = nnx.merge(gd, jax.tree.map(lambda a: a[0], params))(adj, nodes)  # [P, S]
        z = (g - num["g_mean"]) / num["g_std"]
        feats = jnp.concatenate([count, z], axis=-1)
        t = num["slope"] * g.mean(-1) + num["offset"] + (feats - num["mean_x"]) @ num["weights"] + num["intercept"]
        return jnp.exp(t) if log else t
    if "head_w" in num:
        emb = nnx.merge(gd, jax.tree.map(lambda a: a[0], params)).embedding(adj, nodes)
        z = emb @ num["head_w"] + num["head_b"]
    else:
        z = jax.vmap(lambda q: nnx.merge(gd, q)(adj, nodes)[:, 0])(params).mean(0)
    return z * num["y_std"] + num["y_mean"]


def _config(p: GCNPredictor, gd: Any, params: Any) -> dict[str, int]:
    module = nnx.merge(gd, params)
    return {"in_features": int(module.embed.in_features), "hidden": int(p.hidden), "layers": int(p.layers),
            "out": int(module.head.out_features)}
