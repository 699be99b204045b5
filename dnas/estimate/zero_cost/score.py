"""Zero-cost scores of many architectures of a space with one compiled function.

The supernet runs in index mode (``space.to_inputs(vec)``: one ``int32[]`` per label,
``lax.switch`` in every :class:`~dnas.space.mixed.MixedOp`), so the architecture is an array
argument and every architecture shares one compiled program; architectures go through
a Python loop over that one jitted function (never ``vmap``: under ``vmap`` a switch
runs every branch), each call scoring ``rows_per_device`` architectures on every device
of a mesh (:class:`dnas.core.sharding.RowSharded`, ``lax.map`` on each device; processes
included), so the scores are the same on 1 device, N devices and N processes.

How each architecture's weights are drawn: inside the jitted function the supernet is
*built again* from a per-architecture key (``space.supernet(..., rngs=nnx.Rngs(key))``
under ``jax.jit``: its constructor becomes part of the program), so every op gets its
weights from the same initialiser, with the same shapes, as the op of a freshly built
network of that architecture (the convolutions' kaiming-uniform bound, ``nnx.Linear``'s
default, BatchNorm at scale 1 / shift 0 / statistics 0 and 1; the search cells'
affine-free BatchNorm equals the derived network's affine one at initialisation). The
key is ``fold_in`` of the seed with each entry of the architecture vector, so a cell's
score depends on (cell, seed) only, not on its position in a batch.
:meth:`ZeroCostScorer.network_state` returns those weights.

What is scored is the *derived* network's function (``space.network(space.derive(...))``,
the network a benchmark trains): given the same weights
(:func:`dnas.estimate.inherit.inherit`), every proxy of the supernet in index mode equals
the proxy of the derived network (``tests/test_zero_cost.py`` checks it on every
registered space). For that the probed supernet (:mod:`dnas.estimate.zero_cost.probes`)
drops DARTS' search-only BatchNorm after pools, and a PC-DARTS space
(``partial_channels > 1``) is scored at full width, as its derived network runs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from dnas.core.errors import DnasError
from dnas.core.sharding import RowSharded
from dnas.core.types import Batch, PRNGKey
from dnas.estimate.zero_cost.probes import NEEDS_PROBES, Codes, Gate, attach_probes, code_kernel, linear_mode, stacked_axes, uncovered
from dnas.estimate.zero_cost.proxies import PROXIES, ProxyNet
from dnas.space.base import SearchSpace
from dnas.hardware.counts import count_params, model_macs

__all__ = ["ZeroCostScorer", "arch_key", "arch_keys", "build_probe_net", "code_kernel", "cost_tables", "derived_network", "genotype_of", "lookup_cost", "network_depth", "probe_net", "scored_space"]


def arch_key(key: PRNGKey, vec: jax.Array) -> PRNGKey:
    """The architecture's own key: ``fold_in`` of ``key`` with each entry of ``vec``."""
    for i in range(vec.shape[0]):
        key = jax.random.fold_in(key, vec[i])
    return key


def arch_keys(key: PRNGKey, vec: jax.Array) -> tuple[PRNGKey, PRNGKey]:
    """``(k_init, k_proxy)``: the keys of an architecture's weights and of its proxies.

    ``k_init`` is an RBG key: XLA compiles the supernet's few hundred draws 4x faster
    than threefry's (NB201 N=1: 31 s -> 8 s); same distributions.
    """
    k_init, k_proxy = jax.random.split(arch_key(key, vec))
    return jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="unsafe_rbg"), k_proxy


def scored_space(space: SearchSpace) -> SearchSpace:
    """The space whose supernet the scorer builds: ``space`` itself, or for PC-DARTS
    (``partial_channels > 1``, whose supernet runs the candidates on ``C/K`` channels) a
    copy at full width, the width of its derived networks."""
    if getattr(space, "partial_channels", 1) == 1:
        return space
    full = copy.copy(space)
    full.partial_channels = 1
    return full


def network_depth(space: SearchSpace) -> int:
    """The ``layers`` a derived network of ``space`` needs to match its supernet's depth:
    NB201's cells per stage ``N``, DARTS' cell count; the layer-wise spaces (ProxylessNAS,
    FBNet) take their depth from the genotype and ignore it."""
    return int(getattr(space, "N", getattr(space, "layers", 1)))


def genotype_of(space: SearchSpace, vec: np.ndarray) -> object:
    """The genotype of the architecture ``vec``: ``space.derive`` of its one-hot α."""
    return space.derive({c.label: jnp.asarray(np.eye(c.n)[int(vec[i])], jnp.float32) for i, c in enumerate(space.choices)})


def derived_network(space: SearchSpace, genotype: object, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> nnx.Module:
    """``space.network(genotype)`` at the supernet's width and depth (:func:`network_depth`),
    without DARTS' auxiliary head (a training-only branch; DARTS counts parameters
    without it): the network whose proxies the scorer computes."""
    return space.network(genotype, C=C, layers=network_depth(space), num_classes=num_classes, in_channels=in_channels, rngs=rngs, auxiliary=False)


def _prunable(path, value) -> bool:
    return isinstance(value, nnx.Param) and path[-1] == "kernel"


def build_probe_net(
    space: SearchSpace, vec: jax.Array, key: PRNGKey, *, C: int, num_classes: int, in_channels: int, batch: int, cost: dict
) -> tuple[ProxyNet, dict]:
    """One freshly initialised network of ``vec`` as a :class:`ProxyNet` (jittable).

    Args:
      space: the search space (:func:`scored_space` of it is built); its supernet runs in
        index mode (``vec`` traced) or calls the chosen ops (``vec`` concrete).
      vec: ``int32[n]`` the architecture.
      key: its weights' key.
      C, num_classes, in_channels: the supernet's size.
      batch: the batch size ``apply`` will see (the gates' and kernels' leading size).
      cost: ``{"params": f[], "flops": f[]}`` for the baselines.
    Returns:
      ``(net, params)``, ``params`` the convolution and linear kernels.
    """
    space = scored_space(space)
    model = space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(params=key))
    return probe_net(model, space, vec, batch=batch, cost=cost)


def probe_net(model: nnx.Module, space: SearchSpace, vec: jax.Array, *, batch: int, cost: dict) -> tuple[ProxyNet, dict]:
    """A supernet of ``space`` with its current weights as the :class:`ProxyNet` of ``vec``.

    ``model`` becomes the probed network (:func:`dnas.estimate.zero_cost.probes.attach_probes`,
    in place); arguments otherwise as :func:`build_probe_net`.
    """
    attach_probes(model, batch)
    gd, params, gates, codes, rest = nnx.split(model, _prunable, Gate, Codes, ...)
    stacked = stacked_axes(model, params)
    linear_mode(model)
    gd_lin = nnx.graphdef(model)
    arch = space.to_inputs(vec)

    def apply(p, x, g=None):
        m = nnx.merge(gd, p, gates if g is None else g, codes, rest, copy=True)
        logits = m(x, arch).logits
        b = x.shape[0]
        # Stacked probes (an EdgeScan's edges) hold one kernel per layer on leading axes.
        kern = sum((jnp.sum(c.reshape((-1, b, b)), 0) for c in jax.tree_util.tree_leaves(nnx.state(m, Codes))), jnp.zeros((b, b), jnp.float32))
        return logits, kern

    def apply_linear(p, x):
        absrest = jax.tree_util.tree_map(lambda a: jnp.abs(a).astype(x.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, rest)
        m = nnx.merge(gd_lin, p, gates, codes, absrest, copy=True)
        return m(x, arch).logits

    return ProxyNet(apply, apply_linear, gates, cost, stacked), params


def cost_tables(space: SearchSpace, *, C: int, num_classes: int, in_channels: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-choice parameter and MAC tables: ``cost(vec) = base + sum_l table[l, vec[l]]``.

    Measured on the *derived* networks (:func:`derived_network`, the networks a benchmark
    trains), by differences from the all-first-candidate architecture: one change of one
    choice at a time, ``1 + sum_l (n_l - 1)`` networks. Exact when each choice's cost does
    not depend on the others (NB201 and layer-wise spaces: every op's shape is fixed by
    its position; DARTS with ``none`` among its ops: an edge's op costs the same whichever
    other edges its node keeps).

    Returns:
      ``{"params": f64[n+1, k], "flops": f64[n+1, k]}``; row 0 column 0 holds the base.
    """
    def measure(vec: np.ndarray) -> tuple[float, float]:
        geno = genotype_of(space, vec)
        net = nnx.eval_shape(lambda: derived_network(space, geno, C=C, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(0)))
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
      mesh: a 1-D mesh whose devices split the architectures (None: the default device).
      rows_per_device: architectures each device scores per call (one after another).

    Example:
      >>> scorer = ZeroCostScorer(NB201Space(layers=1), ("synflow", "naswot"), C=8,
      ...                         num_classes=10, in_channels=3, batch_shape=(16, 32, 32, 3))
      >>> scores = scorer.score(archs, (x, y), jax.random.key(0))  # {"synflow": f64[P], ...}
      >>> scorer.compiles
      1
    """
    def __init__(
        self, space: SearchSpace, proxies: Sequence[str], *, C: int, num_classes: int, in_channels: int, batch_shape: tuple[int, ...], fused: bool = True,
        mesh: Mesh | None = None, rows_per_device: int = 1,
    ):
        if len(batch_shape) != 4:
            raise DnasError(f"batch_shape must be (B, H, W, C), got {batch_shape}")
        self.space, self.names = space, tuple(proxies)
        for n in self.names:
            PROXIES[n]
        self.C, self.num_classes, self.in_channels, self.batch_shape = C, num_classes, in_channels, tuple(batch_shape)
        probed = sorted(NEEDS_PROBES.intersection(self.names))
        if probed:
            # Checked on an abstract supernet (no weights drawn, nothing compiled): a
            # module class the probes do not know could hide ReLUs or convolutions from
            # them, and the scores would be silently wrong.
            unknown = uncovered(nnx.eval_shape(lambda: self._supernet(jax.random.key(0))))
            if unknown:
                raise DnasError(
                    f"{', '.join(probed)} cannot score space {getattr(space, 'space_name', type(space).__name__)!r}: the zero-cost "
                    f"probes do not know its modules {', '.join(unknown)} (add their ReLU sites to "
                    "dnas.estimate.zero_cost.probes.RELU_SITES, or the class to RELU_FREE if it has none)"
                )
        need_cost = any(n in ("params", "flops") for n in self.names)
        k = int(space.num_candidates.max())
        zeros = {"params": np.zeros((len(space) + 1, k)), "flops": np.zeros((len(space) + 1, k))}
        self.tables = cost_tables(space, C=C, num_classes=num_classes, in_channels=in_channels, hw=tuple(batch_shape[1:3])) if need_cost else zeros
        self.compiles = 0
        groups = [self.names] if fused else [(n,) for n in self.names]
        self._fns = [RowSharded(lambda vecs, shared, g=g: jax.lax.map(lambda v: self._score_one(v, *shared, g), vecs), mesh, rows_per_device)
                     for g in groups]

    def _score_one(self, vec: jax.Array, x: jax.Array, y: jax.Array, key: PRNGKey, names: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
        self.compiles += 1  # runs only when JAX traces, i.e. once per compilation
        k_init, k_proxy = arch_keys(key, vec)
        net, params = build_probe_net(
            self.space, vec, k_init, C=self.C, num_classes=self.num_classes, in_channels=self.in_channels,
            batch=x.shape[0], cost=lookup_cost(self.tables, vec),
        )
        # A proxy's key depends on its name's position in the full list, fused or not.
        return {n: PROXIES[n](net, params, (x, y), jax.random.fold_in(k_proxy, self.names.index(n))) for n in (names or self.names)}

    def _supernet(self, k_init: PRNGKey) -> nnx.Module:
        return scored_space(self.space).supernet(C=self.C, num_classes=self.num_classes, in_channels=self.in_channels, rngs=nnx.Rngs(params=k_init))

    def network_state(self, vec: np.ndarray | jax.Array, key: PRNGKey) -> nnx.State:
        """The weights the scorer draws for architecture ``vec`` with ``key``: the
        supernet's ``(nnx.Param, nnx.BatchStat)`` state before any probe is attached.

        With :func:`dnas.estimate.inherit.inherit` it initialises the derived network
        (:func:`derived_network`) that the scores describe.
        """
        fn = jax.jit(lambda v, k: nnx.state(self._supernet(arch_keys(k, v)[0]), (nnx.Param, nnx.BatchStat)))
        with jax.enable_x64(True):  # as in score(): the same program draws the same bits
            return fn(jnp.asarray(vec, jnp.int32), key)

    def score(self, archs: np.ndarray | jax.Array, batch: Batch, key: PRNGKey) -> dict[str, np.ndarray]:
        """Scores ``archs int32[P, n]`` on ``batch``: ``{proxy: f64[P]}`` (calls of the same
        compiled function, ``rows_per_device`` architectures per device each, float64
        enabled for synflow)."""
        archs = np.asarray(archs, np.int32)
        if archs.ndim != 2 or archs.shape[1] != len(self.space):
            raise DnasError(f"archs must be int32[P, {len(self.space)}], got shape {archs.shape}")
        x, y = batch
        if tuple(x.shape) != self.batch_shape:
            raise DnasError(f"batch images have shape {tuple(x.shape)}; this scorer was built for {self.batch_shape}")
        out: dict[str, np.ndarray] = {}
        with jax.enable_x64(True):
            shared = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), key)
            for fn in self._fns:
                out.update(fn(archs, fn.put_shared(shared)))
        return {n: np.asarray(out[n], np.float64) for n in self.names}
