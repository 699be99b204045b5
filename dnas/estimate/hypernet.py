"""A SMASH hypernetwork for NAS-Bench-201 cells (Brock et al., "SMASH: One-Shot Model
Architecture Search through HyperNetworks", ICLR 2018), the smallest honest version.

The hypernetwork maps an architecture's encoding (the one-hot of every edge's op) plus a
learned embedding of the (cell, edge) slot to a code ``z``; per stage, a linear map of
``z`` gives that edge's ``nor_conv_3x3`` and ``nor_conv_1x1`` kernels. Every other weight
(stem, reduction blocks, classifier, BatchNorm) is an ordinary shared weight. Training
draws one random architecture per batch (as SMASH does); ranking scores an architecture
by its validation accuracy with the generated weights. The network is the NB201
supernet in index mode, so training and ranking each compile once for all architectures.

Differences from SMASH: SMASH's memory-bank view and its 1x1 "read/write" kernels are
replaced by NB201's cell; the generator is one hidden layer and a low-rank map (``dim``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.losses import cross_entropy
from dnas.space.spaces.nb201 import NB201SearchCell, NB201Space
from dnas.core.types import PRNGKey

GENERATED = ("nor_conv_3x3", "nor_conv_1x1")


class HyperNet(nnx.Module):
    """Architecture encoding -> the conv kernels of every cell edge.

    Args:
      space: a micro NB201 space with ``nor_conv_3x3`` and ``nor_conv_1x1`` among its ops.
      C: the network's initial channels (stages have C, 2C, 4C).
      dim: the code size (rank of the generated kernels' family per stage).
      hidden: the encoder's hidden width.
      rngs: NNX RNG streams.
    Call ``hyper(vec int32[n]) -> {op: [f32[slots_s, k, k, c_s, c_s] per stage s]}``.
    """

    def __init__(self, space: NB201Space, C: int, *, dim: int = 32, hidden: int = 64, rngs: nnx.Rngs):
        if not isinstance(space, NB201Space) or not space.shared or any(o not in space.ops for o in GENERATED):
            raise DnasError("the SMASH hypernetwork needs a micro NB201 space containing nor_conv_3x3 and nor_conv_1x1")
        self.space, self.N, self.C = space, space.N, C
        self.k = int(space.num_candidates.max())
        slots = 3 * space.N * 6
        self.slot_emb = nnx.Param(0.1 * jax.random.normal(rngs.params(), (slots, 16)))
        self.enc1 = nnx.Linear(len(space) * self.k + 16, hidden, rngs=rngs)
        self.enc2 = nnx.Linear(hidden, dim, rngs=rngs)
        gens = {}
        for op, ksz in (("nor_conv_3x3", 3), ("nor_conv_1x1", 1)):
            for s, c in enumerate((C, 2 * C, 4 * C)):
                # Scaled so a generated kernel has about the variance of PyTorch's default
                # init (uniform ±1/sqrt(fan_in): variance 1/(3 fan_in)) for a unit-variance code.
                std = 1.0 / np.sqrt(3.0 * ksz * ksz * c * dim)
                gens[f"{op}/{s}"] = nnx.Param(std * jax.random.normal(rngs.params(), (dim, ksz * ksz * c * c)))
        self.gens = nnx.Dict(gens)

    def __call__(self, vec: jax.Array) -> dict[str, list[jax.Array]]:
        onehot = jax.nn.one_hot(vec, self.k).reshape(-1)
        feats = jnp.concatenate([jnp.broadcast_to(onehot, (self.slot_emb.shape[0], onehot.shape[0])), self.slot_emb.get_value()], 1)
        z = self.enc2(jax.nn.relu(self.enc1(feats)))  # [slots, dim]
        z = z / (jnp.std(z, axis=1, keepdims=True) + 1e-6)  # unit-variance codes (see the init's scale)
        per = self.N * 6
        out: dict[str, list[jax.Array]] = {}
        for op, ksz in (("nor_conv_3x3", 3), ("nor_conv_1x1", 1)):
            out[op] = []
            for s, c in enumerate((self.C, 2 * self.C, 4 * self.C)):
                w = z[s * per : (s + 1) * per] @ self.gens[f"{op}/{s}"].get_value()
                out[op].append(w.reshape(per, ksz, ksz, c, c))
        return out


def _cells(model: nnx.Module) -> list[NB201SearchCell]:
    return [m for m in model.layers if isinstance(m, NB201SearchCell)]


def install(model: nnx.Module, space: NB201Space, kernels: dict[str, list[jax.Array]]) -> None:
    """Writes generated kernels into the supernet's cell convolutions (a copy merged
    inside a traced function: the gradient reaches the hypernetwork through them)."""
    cells = _cells(model)
    per_stage = len(cells) // 3
    for op in GENERATED:
        j = space.ops.index(op)
        for ci, cell in enumerate(cells):
            s, slot0 = divmod(ci, per_stage)
            for e, edge in enumerate(cell.edges):
                edge.ops[j].conv.kernel.set_value(kernels[op][s][slot0 * 6 + e])




class Smash:
    """Trains a :class:`HyperNet` with the NB201 supernet's shared weights and ranks cells.

    Args:
      space: a micro NB201 space. C: initial channels. num_classes, in_channels: the data's.
      lr: Adam's learning rate. key: initialisation key.
    """

    def __init__(self, space: NB201Space, *, C: int, num_classes: int, in_channels: int, lr: float = 1e-3, key: PRNGKey):
        k_h, k_n = jax.random.split(key)
        self.space = space
        self.hyper = HyperNet(space, C, rngs=nnx.Rngs(params=k_h))
        net = space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(params=k_n))
        self.gd_h, self.p_h = nnx.split(self.hyper)
        self.gd_n, self.p_n, self.rest = nnx.split(net, nnx.Param, ...)
        self.opt = optax.adam(lr)
        self.params = (self.p_h, self.p_n)
        self.opt_state = self.opt.init(self.params)
        self.traces = {"step": 0, "eval": 0}
        self._step, self._eval = jax.jit(self._step_fn), jax.jit(self._eval_fn)

    def _logits(self, params: Any, vec: jax.Array, x: jax.Array) -> jax.Array:
        p_h, p_n = params
        kernels = nnx.merge(self.gd_h, p_h, copy=True)(vec)
        net = nnx.merge(self.gd_n, p_n, self.rest, copy=True)
        install(net, self.space, kernels)
        return net(x, self.space.to_inputs(vec)).logits

    def _step_fn(self, params, opt_state, vec, x, y):
        self.traces["step"] += 1
        loss, g = jax.value_and_grad(lambda p: cross_entropy(self._logits(p, vec, x), y))(params)
        upd, opt_state = self.opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    def _eval_fn(self, params, vec, x, y):
        self.traces["eval"] += 1
        logits = self._logits(params, vec, x)
        return jnp.mean(jnp.argmax(logits, -1) == y), cross_entropy(logits, y)

    def generated(self, vec: jax.Array) -> dict[str, list[jax.Array]]:
        """The kernels generated for ``vec`` with the current hypernetwork."""
        return nnx.merge(self.gd_h, self.params[0], copy=True)(jnp.asarray(vec, jnp.int32))

    def train(self, x: np.ndarray, y: np.ndarray, *, steps: int, batch_size: int, key: PRNGKey) -> list[float]:
        """``steps`` Adam steps, each on a random architecture and a random batch; the losses."""
        losses = []
        for t in range(steps):
            k_a, k_b = jax.random.split(jax.random.fold_in(key, t))
            idx = np.asarray(jax.random.choice(k_b, len(x), (batch_size,), replace=False))
            self.params, self.opt_state, loss = self._step(self.params, self.opt_state, self.space.sample(k_a), x[idx], y[idx])
            losses.append(float(loss))
        return losses

    def rank(self, archs: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validation accuracy and loss ``(f32[P], f32[P])`` of each architecture with generated weights."""
        res = [self._eval(self.params, jnp.asarray(v, jnp.int32), x, y) for v in np.asarray(archs)]
        acc, loss = zip(*jax.device_get(res))
        return np.asarray(acc, np.float32), np.asarray(loss, np.float32)
