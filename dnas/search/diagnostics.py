"""Collapse diagnostics of differentiable search (RobustDARTS, Zela et al., ICLR 2020).

DARTS tends to collapse to parameter-free ops (skip connections, pools) as the search
goes on; Zela et al. show that the dominant eigenvalue of the Hessian of the validation
loss with respect to α rises at the same time, and stop the search when it does
(DARTS-ES). This module gives:

- :func:`hvp` / :func:`top_hessian_eigenvalue`: exact Hessian-vector products
  (``jax.jvp`` of ``jax.grad``: forward over reverse, no finite differences as the
  PyTorch codes use) and power iteration on them for the largest eigenvalue;
- :func:`param_free_ops`: parameter-free ops per cell of a derived genotype, from the op
  registry's declared metadata (``OPS[name].parametric``), never from op names;
- :func:`alpha_entropy`: mean entropy of ``softmax(α)`` over the space's labels;
- :func:`darts_es`: RobustDARTS' early-stopping rule on a series of eigenvalues.

:func:`dnas.run.search.run_search` logs the three numbers on every ``"event": "epoch"`` line of
``metrics.jsonl`` (the eigenvalue when ``config.hessian_iters > 0``) and applies
:func:`darts_es` when ``config.early_stop``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.types import PRNGKey
from dnas.space import genotype as G
from dnas.space.ops import OPS


def hvp(f: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """The exact Hessian-vector product ``∇²f(params) · v`` (a pytree shaped like ``params``).

    Forward-over-reverse: the directional derivative of ``∇f`` along ``v``, one
    ``jax.jvp`` of ``jax.grad`` (about the cost of two gradients; no step size to tune).
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def _dot(a: Any, b: Any) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _normalise(v: Any) -> Any:
    n = jnp.sqrt(_dot(v, v))
    return jax.tree_util.tree_map(lambda x: x / jnp.maximum(n, 1e-30).astype(x.dtype), v)


def _power(matvec: Callable[[Any], Any], v0: Any, iters: int) -> tuple[jax.Array, Any]:
    def body(_, v):
        return _normalise(matvec(v))

    v = jax.lax.fori_loop(0, iters, body, _normalise(v0))
    return _dot(v, matvec(v)), v  # Rayleigh quotient of the unit vector


def top_hessian_eigenvalue(f: Callable[[Any], jax.Array], params: Any, *, key: PRNGKey, iters: int = 20) -> jax.Array:
    """The largest (algebraic) eigenvalue of ``∇²f(params)`` by power iteration on exact
    Hessian-vector products (RobustDARTS' dominant eigenvalue of the validation loss
    Hessian w.r.t. α, which their code takes as ``max(eigvals(H))``).

    Power iteration converges to the eigenvalue of largest magnitude, ``λ₁``. When that is
    negative, the largest algebraic eigenvalue is found by a second power iteration on
    ``H - λ₁ I`` (whose spectrum is ``λ - λ₁ >= 0``): ``λ_max = μ + λ₁``.

    Args:
      f: scalar function of a pytree (e.g. the val loss of α at fixed weights).
      params: where the Hessian is taken (a pytree of float arrays).
      key: draws the random start vector.
      iters: power iterations (each one HVP); the error shrinks like ``|λ₂/λ₁|^iters``.
    Returns:
      ``f32[]`` the eigenvalue (jittable).
    """
    if iters < 1:
        raise DnasError(f"power iteration needs iters >= 1, got {iters}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    v0 = jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)])
    matvec = lambda v: hvp(f, params, v)  # noqa: E731
    lam, _ = _power(matvec, v0, iters)

    def shifted():
        mu, _ = _power(lambda v: jax.tree_util.tree_map(lambda hv, x: hv - lam.astype(x.dtype) * x, matvec(v), v), v0, iters)
        return mu + lam

    return jax.lax.cond(lam < 0, shifted, lambda: lam)


def genotype_ops(genotype: Any) -> dict[str, list[str]]:
    """The op names of a derived genotype per cell: ``{"normal": [...], "reduce": [...]}``
    for DARTS cells, ``{"cell": [...]}`` for an NB201 cell, ``{"cell0": ...}`` for macro
    genotypes. Unknown genotype kinds give ``{}``."""
    if isinstance(genotype, G.DartsGenotype):
        return {"normal": [op for op, _ in genotype.normal.edges], "reduce": [op for op, _ in genotype.reduce.edges]}
    if isinstance(genotype, G.MacroGenotype):
        return {f"cell{i}": [op for op, _ in c.edges] for i, c in enumerate(genotype.cells)}
    if isinstance(genotype, G.NB201Genotype):
        return {"cell": [op for node in genotype.nodes for op, _ in node]}
    if isinstance(genotype, G.NB201MacroGenotype):
        return {f"cell{i}": [op for node in c.nodes for op, _ in node] for i, c in enumerate(genotype.cells)}
    return {}


def param_free_ops(genotype: Any) -> dict[str, int]:
    """Parameter-free ops (``OPS[name].parametric`` False: skip, pools, ``none``) per cell of
    a derived genotype: the collapse RobustDARTS describes shows as this count rising in
    the normal cell."""
    return {cell: sum(1 for op in ops if not OPS[op].parametric) for cell, ops in genotype_ops(genotype).items()}


def alpha_entropy(alpha: Mapping[str, Any], labels: Sequence[str]) -> float:
    """Mean over ``labels`` of the entropy of ``softmax(α)`` in nats (``log k`` uniform, 0
    committed); other entries of ``alpha`` (PC-DARTS' β) are left out."""
    ents = []
    for label in labels:
        p = np.asarray(jax.nn.softmax(jnp.asarray(alpha[label], jnp.float32)), np.float64)
        ents.append(float(-(p * np.log(p + 1e-12)).sum()))
    return float(np.mean(ents)) if ents else 0.0


def darts_es(eigenvalues: Sequence[float], *, window: int = 5, factor: float = 1.3, delta: int = 4, start_epoch: int = 10) -> int | None:
    """RobustDARTS' early-stopping rule (DARTS-ES), evaluated after the latest epoch.

    ``eigenvalues[e]`` is the dominant eigenvalue after epoch ``e`` (0-based, one per
    epoch). As ``EVLocalAvg`` in automl/RobustDARTS ``src/utils.py``: the local average at
    epoch ``e`` is the mean of the last ``window`` values (all values while fewer), and it
    stands for epoch ``e - window // 2``; once that epoch minus ``delta`` reaches
    ``start_epoch``, the search stops when the newest local average exceeds the one
    ``delta`` entries earlier by more than ``factor`` (1.3, i.e. the paper's
    ``λ(i-k) / λ(i) < 0.75`` with some slack), and the architecture of epoch
    ``e - window // 2 - delta`` is the result. Defaults are RobustDARTS' code defaults
    (eigenvalues computed every epoch, its ``ev_freq = 1``).

    Returns:
      the 0-based epoch whose architecture to return, or None (continue).
    """
    e = len(eigenvalues) - 1
    first = math.ceil(window / 2) - 1
    if e < first:
        return None
    la = [float(np.mean(eigenvalues[max(0, j - window + 1) : j + 1])) for j in range(first, e + 1)]
    la_epoch = e - window // 2
    if la_epoch - delta < start_epoch or len(la) <= delta:
        return None
    return la_epoch - delta if la[-1] / la[-1 - delta] > factor else None
