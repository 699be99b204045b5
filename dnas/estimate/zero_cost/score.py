"""Zero-cost scores of many architectures of a space with one compiled function.

The supernet runs in index mode (``space.to_inputs(vec)``: one ``int32[]`` per label,
``lax.switch`` in every :class:`~dnas.space.mixed.MixedOp`), so the architecture is an array
argument and every architecture shares one compiled program; architectures go through
a Python loop over that one jitted function (never ``vmap``: under ``vmap`` a switch
runs every branch).

How each architecture's weights are drawn: inside the jitted function the supernet is
*built again* from a per-architecture key (``space.supernet(..., rngs=nnx.Rngs(key))``
under ``jax.jit``: its constructor becomes part of the program), so every op gets its
weights from the same initialiser, with the same shapes, as the op of a freshly built
network of that architecture (the convolutions' kaiming-uniform bound, ``nnx.Linear``'s
default, BatchNorm at scale 1 / shift 0 / statistics 0 and 1; the search cells'
affine-free BatchNorm equals the derived network's affine one at initialisation). The
key is ``fold_in`` of the seed with each entry of the architecture vector, so a cell's
score depends on (cell, seed) only, not on its position in a batch.

Probes: the freshly built network is given, before it is split into state pytrees,
small wrapper modules around its convolutions and its head (our own module surgery on
our own copy; ``dnas.space.ops`` and ``dnas.space.mixed`` are untouched): a per-sample channel gate
(Fisher) on every convolution and the classifier, and NASWOT's ReLU-code kernel on
every ReLU-conv-BN op's input and the final BN-ReLU. Both live in ``nnx.Variable``
state, so they pass through ``nnx.switch`` like BatchNorm statistics do.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.ops.darts import ReLUConvBN
from dnas.space.ops.layers import BatchNorm, Conv2d
from dnas.space.base import SearchSpace
from dnas.core.types import Batch, PRNGKey
from dnas.estimate.zero_cost.proxies import PROXIES, ProxyNet
from dnas.hardware.counts import count_params, model_macs


class Gate(nnx.Variable):
    """Per-sample, per-channel ones multiplying a layer's output, ``f32[B, C]`` (Fisher)."""

class Codes(nnx.Variable):
    """NASWOT's accumulated ReLU-code kernel of one probe, ``f32[B, B]``."""

def code_kernel(pre: jax.Array) -> jax.Array:
    """``c c^T + (1-c)(1-c)^T`` for ``c = [pre > 0]`` flattened per sample: ``f32[B, B]``.

    Computed as ``2 c c^T - r 1^T - 1 r^T + D`` (``r`` the row sums, ``D`` the code
    length): one matrix product instead of two, exact in float32 below 2^24.
    """
    c = (pre > 0).reshape(pre.shape[0], -1).astype(jnp.float32)
    r = jnp.sum(c, axis=1)
    return 2.0 * (c @ c.T) - r[:, None] - r[None, :] + c.shape[1]


class _Probe(nnx.Module):
    """Wraps a layer: optionally records the ReLU codes of its input (``relu_in``) or of
    its output (``relu_out``), and gates its output per sample and channel (``gate``)."""
    def __init__(self, inner: nnx.Module, batch: int, channels: int, *, gate: bool, relu_in: bool = False, relu_out: bool = False):
        self.inner, self.relu_in, self.relu_out = inner, relu_in, relu_out
        self.gate = Gate(jnp.ones((batch, channels), jnp.float32)) if gate else None
        self.codes = Codes(jnp.zeros((batch, batch), jnp.float32)) if (relu_in or relu_out) else None
        self.active = True  # False in synflow's linearised network (batch of one, no probes)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.active and self.relu_in:
            self.codes.set_value(self.codes.get_value() + code_kernel(x))
        y = self.inner(x)
        if self.active and self.relu_out:
            self.codes.set_value(self.codes.get_value() + code_kernel(y))
        if self.active and self.gate is not None:
            g = self.gate.get_value().astype(y.dtype)
            y = y * g.reshape(g.shape[:1] + (1,) * (y.ndim - 2) + g.shape[1:])
        return y


def _attach_probes(model: nnx.Module, batch: int) -> None:
    """Wraps every ``Conv2d`` (gate; ReLU codes when it is a ReLU-conv-BN's conv, whose
    input is ``relu(x)`` and so has ``x``'s codes), the classifier (gate) and the final
    BatchNorm before the head's ReLU (codes)."""
    targets = []
    for _, m in nnx.iter_modules(model):
        for name, child in list(vars(m).items()):
            if isinstance(child, Conv2d):
                targets.append((m, name, _Probe(child, batch, child.kernel.shape[-1], gate=True, relu_in=isinstance(m, ReLUConvBN))))
            elif isinstance(child, nnx.Linear) and name == "classifier":
                targets.append((m, name, _Probe(child, batch, child.kernel.shape[-1], gate=True)))
            elif isinstance(child, BatchNorm) and name == "last_bn":
                targets.append((m, name, _Probe(child, batch, 1, gate=False, relu_out=True)))
    for m, name, probe in targets:
        setattr(m, name, probe)


def _prunable(path, value) -> bool:
    return isinstance(value, nnx.Param) and path[-1] == "kernel"


def _linear_mode(model: nnx.Module) -> None:
    """Synflow's network: BatchNorm as the identity (no batch statistics; statistics at
    their initial 0/1 and eps 0) and the probes off."""
    for _, m in nnx.iter_modules(model):
        if isinstance(m, BatchNorm):
            m.use_running_average, m.eps = True, 0.0
        elif isinstance(m, _Probe):
            m.active = False


def arch_key(key: PRNGKey, vec: jax.Array) -> PRNGKey:
    """The architecture's own key: ``fold_in`` of ``key`` with each entry of ``vec``."""
    for i in range(vec.shape[0]):
        key = jax.random.fold_in(key, vec[i])
    return key


def build_probe_net(
    space: SearchSpace, vec: jax.Array, key: PRNGKey, *, C: int, num_classes: int, in_channels: int, batch: int, cost: dict
) -> tuple[ProxyNet, dict]:
    """One freshly initialised network of ``vec`` as a :class:`ProxyNet` (jittable).

    Args:
      space: the search space; its supernet runs in index mode.
      vec: ``int32[n]`` the architecture.
      key: its weights' key.
      C, num_classes, in_channels: the supernet's size.
      batch: the batch size ``apply`` will see (the gates' and kernels' leading size).
      cost: ``{"params": f[], "flops": f[]}`` for the baselines.
    Returns:
      ``(net, params)``, ``params`` the convolution and linear kernels.
    """
    model = space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(params=key))
    _attach_probes(model, batch)
    gd, params, gates, codes, rest = nnx.split(model, _prunable, Gate, Codes, ...)
    _linear_mode(model)
    gd_lin = nnx.graphdef(model)
    arch = space.to_inputs(vec)

    def apply(p, x, g=None):
        m = nnx.merge(gd, p, gates if g is None else g, codes, rest, copy=True)
        logits = m(x, arch).logits
        kern = sum(jax.tree_util.tree_leaves(nnx.state(m, Codes)), jnp.zeros((x.shape[0],) * 2, jnp.float32))
        return logits, kern

    def apply_linear(p, x):
        absrest = jax.tree_util.tree_map(lambda a: jnp.abs(a).astype(x.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, rest)
        m = nnx.merge(gd_lin, p, gates, codes, absrest, copy=True)
        return m(x, arch).logits

    return ProxyNet(apply, apply_linear, gates, cost), params


def cost_tables(space: SearchSpace, *, C: int, num_classes: int, in_channels: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-choice parameter and MAC tables: ``cost(vec) = base + sum_l table[l, vec[l]]``.

    Measured on the *derived* networks (``space.network(space.derive(one-hot))``, the
    networks a benchmark trains), by differences from the all-first-candidate
    architecture: one change of one choice at a time, ``1 + sum_l (n_l - 1)`` networks.
    Exact when each choice's cost does not depend on the others (NB201 and layer-wise
    spaces: every op's shape is fixed by its position).

    Returns:
      ``{"params": f64[n+1, k], "flops": f64[n+1, k]}``; row 0 column 0 holds the base.
    """
    def measure(vec: np.ndarray) -> tuple[float, float]:
        alpha = {c.label: jnp.asarray(np.eye(c.n)[vec[i]], jnp.float32) for i, c in enumerate(space.choices)}
        geno = space.derive(alpha)
        net = nnx.eval_shape(
            lambda: space.network(geno, C=C, layers=getattr(space, "N", 1), num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(0))
        )
        return float(count_params(net)), float(model_macs(net, (1, *hw, in_channels)))

    n, k = len(space), int(space.num_candidates.max())
    tables = {"params": np.zeros((n + 1, k)), "flops": np.zeros((n + 1, k))}
    zero = np.zeros(n, np.int64)
    base = measure(zero)
    tables["params"][0, 0], tables["flops"][0, 0] = base
    for i, c in enumerate(space.choices):
        for j in range(1, c.n):
            v = zero.copy()
            v[i] = j
            p, f = measure(v)
            tables["params"][i + 1, j], tables["flops"][i + 1, j] = p - base[0], f - base[1]
    return tables


def lookup_cost(tables: dict[str, np.ndarray], vec: jax.Array) -> dict[str, jax.Array]:
    """``base + sum_l table[l, vec[l]]`` per cost (jittable)."""
    n = vec.shape[0]
    return {name: t[0, 0] + jnp.sum(jnp.asarray(t)[1 + jnp.arange(n), vec]) for name, t in tables.items()}


class ZeroCostScorer:
    """Scores architectures of ``space`` with zero-cost proxies, one compilation for all.

    Args:
      space: a registered search space (its supernet takes per-label indices).
      proxies: registered proxy names (``vote`` is computed by :func:`score` callers
        from its members; see :func:`dnas.estimate.zero_cost.proxies.vote`).
      C: the network's initial channels (the space's ``layers`` sets its depth).
      num_classes, in_channels: the dataset's.
      batch_shape: ``(B, H, W, C_in)`` of the batch every architecture sees.
      fused: all proxies in one program (one compilation) or one program per proxy
        (as many compilations as proxies, still independent of the number of
        architectures). On CPU the per-proxy programs also score faster in total
        (``benchmarks/RESULTS.md``); the fused one is the single compilation.

    Example:
      >>> scorer = ZeroCostScorer(NB201Space(layers=1), ("synflow", "naswot"), C=8,
      ...                         num_classes=10, in_channels=3, batch_shape=(16, 32, 32, 3))
      >>> scores = scorer.score(archs, (x, y), jax.random.key(0))  # {"synflow": f64[P], ...}
      >>> scorer.compiles
      1
    """
    def __init__(
        self, space: SearchSpace, proxies: Sequence[str], *, C: int, num_classes: int, in_channels: int, batch_shape: tuple[int, ...], fused: bool = True
    ):
        if len(batch_shape) != 4:
            raise DnasError(f"batch_shape must be (B, H, W, C), got {batch_shape}")
        self.space, self.names = space, tuple(proxies)
        for n in self.names:
            PROXIES[n]
        self.C, self.num_classes, self.in_channels, self.batch_shape = C, num_classes, in_channels, tuple(batch_shape)
        need_cost = any(n in ("params", "flops") for n in self.names)
        k = int(space.num_candidates.max())
        zeros = {"params": np.zeros((len(space) + 1, k)), "flops": np.zeros((len(space) + 1, k))}
        self.tables = cost_tables(space, C=C, num_classes=num_classes, in_channels=in_channels, hw=tuple(batch_shape[1:3])) if need_cost else zeros
        self.compiles = 0
        groups = [self.names] if fused else [(n,) for n in self.names]
        self._fns = [jax.jit(lambda v, x, y, k, g=g: self._score_one(v, x, y, k, g)) for g in groups]

    def _score_one(self, vec: jax.Array, x: jax.Array, y: jax.Array, key: PRNGKey, names: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
        self.compiles += 1  # runs only when JAX traces, i.e. once per compilation
        k_init, k_proxy = jax.random.split(arch_key(key, vec))
        # The initialisers draw from an RBG key: XLA compiles the supernet's few hundred
        # draws 4x faster than threefry's (NB201 N=1: 31 s -> 8 s); same distributions.
        k_init = jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="unsafe_rbg")
        net, params = build_probe_net(
            self.space, vec, k_init, C=self.C, num_classes=self.num_classes, in_channels=self.in_channels,
            batch=x.shape[0], cost=lookup_cost(self.tables, vec),
        )
        # A proxy's key depends on its name's position in the full list, fused or not.
        return {n: PROXIES[n](net, params, (x, y), jax.random.fold_in(k_proxy, self.names.index(n))) for n in (names or self.names)}

    def score(self, archs: np.ndarray | jax.Array, batch: Batch, key: PRNGKey) -> dict[str, np.ndarray]:
        """Scores ``archs int32[P, n]`` on ``batch``: ``{proxy: f64[P]}`` (one call per
        architecture of the same compiled function, float64 enabled for synflow)."""
        archs = np.asarray(archs, np.int32)
        if archs.ndim != 2 or archs.shape[1] != len(self.space):
            raise DnasError(f"archs must be int32[P, {len(self.space)}], got shape {archs.shape}")
        x, y = batch
        if tuple(x.shape) != self.batch_shape:
            raise DnasError(f"batch images have shape {tuple(x.shape)}; this scorer was built for {self.batch_shape}")
        out = {n: np.zeros(len(archs)) for n in self.names}
        with jax.enable_x64(True):
            x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
            for fn in self._fns:
                pending = []
                for i, vec in enumerate(archs):
                    pending.append(fn(jnp.asarray(vec, jnp.int32), x, y, key))
                    if len(pending) == 8 or i == len(archs) - 1:  # keep a few in flight, then fetch
                        base = i + 1 - len(pending)
                        for j, r in enumerate(jax.device_get(pending)):
                            for n, v in r.items():
                                out[n][base + j] = float(v)
                        pending = []
        return out
