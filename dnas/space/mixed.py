"""Mixed operations and the architecture-parameter variable type.

:class:`Alpha` is its own ``nnx.Variable`` type (not a ``nnx.Param`` subclass, so
``wrt=nnx.Param`` and optimizers over ``nnx.Param`` never pick it up). A supernet owns one
``Alpha`` per *label* (in ``self.alpha``), so every mixed op that uses the same label reads
the same logits: label sharing is a dictionary key, not a pointer between modules.

:class:`MixedOp` takes, per call, either mixing weights ``f32[k]`` (DARTS/SNAS/GDAS/FBNet
after relaxation: the weighted sum of its candidates, zero ops skipped) or an index
``int32[]`` (one-shot evaluation: only that candidate runs, via ``lax.switch``, so one
compiled function serves every discrete architecture), or :class:`~dnas.core.types.Sampled`
paths (GDAS, ProxylessNAS, SPOS: only the sampled candidates run, each through
``lax.switch``, scaled by a straight-through weight so α keeps its gradient).

``partial_channels=K`` (PC-DARTS, Xu et al. 2020) sends only the first ``C/K`` channels
through the candidates, passes the rest by (max-pooled on reduction edges), concatenates
and shuffles channels in ``K`` groups; ``K=1`` is the plain mixed op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.space.ops import OPS
from dnas.space.ops.layers import batch_norm, current_depthwise_impl, current_grad_gates, grad_gates, max_pool
from dnas.space.base import SearchSpace
from dnas.core.types import ArchInput, PRNGKey, Sampled


class Alpha(nnx.Variable):
    """Architecture logits of one label, ``f32[n_candidates]``."""


def init_alpha(space: SearchSpace, key: PRNGKey, scale: float = 1e-3, extra: Mapping[str, int] | None = None) -> nnx.Dict:
    """One :class:`Alpha` per label, ``scale * N(0, 1)`` as in DARTS (``1e-3 * randn``).

    Args:
      space: its choices give the labels and sizes.
      key: PRNG key (label ``i`` draws from ``fold_in(key, i)``).
      scale: the standard deviation.
      extra: further architecture parameters that are not choices, label -> size (PC-DARTS'
        edge-normalisation β per node, ``normal/beta_node_3``), drawn the same way from
        ``fold_in(key, 100_000 + j)`` so the choices' α does not change.
    """
    alpha = {
        c.label: Alpha(scale * jax.random.normal(jax.random.fold_in(key, i), (c.n,), jnp.float32))
        for i, c in enumerate(space.choices)
    }
    for j, (label, n) in enumerate((extra or {}).items()):
        if label in alpha:
            raise DnasError(f"extra architecture parameter {label!r} collides with a choice label")
        alpha[label] = Alpha(scale * jax.random.normal(jax.random.fold_in(key, 100_000 + j), (int(n),), jnp.float32))
    return nnx.Dict(alpha)


class _WithBN(nnx.Module):
    """``op`` followed by an affine-free BatchNorm (DARTS' BN after pools in search)."""

    def __init__(self, op: nnx.Module, c: int, rngs: nnx.Rngs):
        self.op, self.bn = op, batch_norm(c, affine=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.op(x))


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle on NHWC ``f32[..., C]``: channel ``g * (C/groups) + j``
    moves to ``j * groups + g`` (PC-DARTS' ``channel_shuffle``: view as (groups, C/groups),
    transpose, flatten)."""
    c = x.shape[-1]
    if c % groups:
        raise DnasError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    y = x.reshape(x.shape[:-1] + (groups, c // groups))
    return jnp.swapaxes(y, -1, -2).reshape(x.shape)


def _remat_branch(i: int) -> Callable[[nnx.List, jax.Array], jax.Array]:
    """The ``lax.switch`` branch that runs candidate ``i``, rematerialised.

    Why: differentiating a switch makes every branch return the residuals of all
    branches (zeros where not taken), and XLA writes and copies those buffers whichever
    branch runs. A rematerialised branch keeps only its inputs (already live) and
    recomputes the chosen op in the backward pass, which measured faster for every NB201
    candidate (``benchmarks/RESULTS.md``, "Convolution gradients inside conditionals");
    values, gradients and BatchNorm statistics are unchanged (a test checks them).
    """

    def run(ops: nnx.List, x: jax.Array) -> jax.Array:
        return ops[i](x)

    return nnx.remat(run)


class MixedOp(nnx.Module):
    """All candidates of one labelled choice on one edge.

    Args:
      label: the choice's label (used in error messages; α is looked up by the caller).
      candidates: registered op names.
      c_in, c_out, stride: the edge's shape.
      affine: BatchNorm scale/shift inside the ops (DARTS search: False).
      pool_bn: add an affine-free BN after ops declaring ``search_bn`` (DARTS: True,
        NAS-Bench-201: False).
      partial_channels: ``K`` of PC-DARTS: the candidates see ``C/K`` channels (built at
        that width), the other channels bypass them; output channels are shuffled in ``K``
        groups. 1 (default): every channel goes through the candidates (DARTS).
      rngs: NNX RNG streams.
    """

    def __init__(
        self,
        label: str,
        candidates: Sequence[str],
        c_in: int,
        c_out: int,
        stride: int,
        *,
        affine: bool = False,
        pool_bn: bool = True,
        partial_channels: int = 1,
        rngs: nnx.Rngs,
    ):
        self.label = label
        self.candidates = tuple(candidates)
        k = int(partial_channels)
        if k < 1 or c_in % k or c_out % k or (k > 1 and c_in != c_out):
            raise DnasError(
                f"partial_channels={partial_channels} for {label!r} needs equal in/out channels divisible by it, "
                f"got {c_in} -> {c_out}"
            )
        self.partial, self.stride = k, stride
        c_in, c_out = c_in // k, c_out // k
        specs = [OPS[n] for n in self.candidates]
        ops = []
        for spec in specs:
            op = spec.builder(c_in, c_out, stride, affine, rngs)
            ops.append(_WithBN(op, c_out, rngs) if (pool_bn and spec.search_bn) else op)
        self.ops = nnx.List(ops)
        self.is_zero = tuple(s.is_zero for s in specs)

    def __call__(self, x: jax.Array, a: jax.Array | Sampled) -> jax.Array:
        """Mix (``a`` float ``[k]``), switch (``a`` integer scalar) or run sampled paths."""
        if self.partial == 1:
            return self._candidates(x, a)
        # PC-DARTS: the first C/K channels through the candidates, the rest bypass them
        # (max-pooled 2x2 where the edge reduces, as PC-DARTS' self.mp), then a shuffle so
        # that the next edge samples different channels.
        c = x.shape[-1] // self.partial
        y = self._candidates(x[..., :c], a)
        rest = x[..., c:]
        if self.stride != 1:
            rest = max_pool(rest, 2, 2, 0)
        if rest.shape[:-1] != y.shape[:-1]:
            raise DnasError(f"partial channels of {self.label!r}: bypass shape {rest.shape} does not match the ops' {y.shape}")
        return channel_shuffle(jnp.concatenate([y, rest.astype(y.dtype)], axis=-1), self.partial)

    def _candidates(self, x: jax.Array, a: jax.Array | Sampled) -> jax.Array:
        k = len(self.candidates)
        branches = [_remat_branch(i) for i in range(k)]
        if isinstance(a, Sampled):
            if a.weight.shape != (k,) or a.index.ndim != 1:
                raise DnasError(
                    f"sampled paths for {self.label!r} have index shape {a.index.shape} and weight shape "
                    f"{a.weight.shape}; expected (m,) and ({k},)"
                )
            out = None
            for j in range(a.index.shape[0]):
                i = jnp.clip(a.index[j], 0, k - 1)
                y = a.weight[i].astype(x.dtype) * nnx.switch(i, branches, self.ops, x)
                out = y if out is None else out + y
            return out
        if _is_concrete_index(a):
            # A known index (not traced): call the chosen op itself (exact cost counts,
            # no conditional in an eagerly run or traced-per-architecture program).
            return self.ops[int(np.clip(int(np.asarray(a)), 0, k - 1))](x)
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.integer):
            if a.shape != ():
                raise DnasError(f"index for {self.label!r} must be a scalar, got shape {a.shape}")
            return nnx.switch(jnp.clip(a, 0, k - 1), branches, self.ops, x)
        if a.shape != (k,):
            raise DnasError(
                f"mixing weights for {self.label!r} have shape {a.shape}, expected ({k},) for candidates {self.candidates}"
            )
        # w * 0 contributes nothing: zero ops are skipped, compute and gradient.
        live = [i for i in range(k) if not self.is_zero[i]]
        if not live:
            return self.ops[0](x)  # every candidate is a zero op
        outs = [self.ops[i](x) for i in live]
        gate = current_grad_gates().alpha
        if gate is not None:
            return _mix_gated(a, tuple(outs), gate, tuple(live))
        return _weighted_sum(a, outs, live)


def _weighted_sum(a: jax.Array, outs: Sequence[jax.Array], live: Sequence[int]) -> jax.Array:
    out = a[live[0]] * outs[0]
    for i, o in zip(live[1:], outs[1:]):
        out = out + a[i] * o
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _mix_gated(a: jax.Array, outs: tuple[jax.Array, ...], gate: jax.Array, live: tuple[int, ...]) -> jax.Array:
    """``sum_j a[live[j]] * outs[j]`` whose backward computes ``da`` only where ``gate``."""
    return _weighted_sum(a, outs, live)


def _mix_gated_fwd(a, outs, gate, live):
    return _mix_gated(a, outs, gate, live), (a, outs, gate)


def _mix_gated_bwd(live, res, dy):
    a, outs, gate = res

    def da():
        terms = jnp.stack([jnp.vdot(o, dy) for o in outs]).astype(a.dtype)
        return jnp.zeros_like(a).at[jnp.asarray(live)].set(terms)

    return jax.lax.cond(gate, da, lambda: jnp.zeros_like(a)), tuple(a[i] * dy for i in live), None


_mix_gated.defvjp(_mix_gated_fwd, _mix_gated_bwd)


def stacked_mixed_op(
    labels: Sequence[str], candidates: Sequence[str], c: int, stride: int, *, pool_bn: bool, affine: bool, rngs: nnx.Rngs,
    partial_channels: int = 1,
) -> MixedOp:
    """One :class:`MixedOp` per label with parameters stacked on a leading edge axis."""
    name = f"{labels[0]}..{labels[-1]}"

    @nnx.split_rngs(splits=len(labels))
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r: nnx.Rngs) -> MixedOp:
        return MixedOp(name, candidates, c, c, stride, pool_bn=pool_bn, affine=affine, partial_channels=partial_channels, rngs=r)

    return make(rngs)


def stack_arch(arch: ArchInput, labels: Sequence[str]) -> jax.Array | Sampled:
    """The per-edge mixing weights ``f32[E, k]``, indices ``int32[E]`` or :class:`Sampled`
    paths (fields stacked on a leading edge axis) of ``labels``."""
    try:
        items = [arch[l] for l in labels]
    except KeyError as e:
        raise DnasError(f"architecture input lacks label {e.args[0]!r}") from None
    if isinstance(items[0], Sampled):
        return Sampled(jnp.stack([s.index for s in items]), jnp.stack([s.weight for s in items]))
    return jnp.stack([jnp.asarray(a) for a in items])


def _is_concrete_index(a: object) -> bool:
    """An integer scalar whose value is known at trace time (a Python/NumPy int or a
    concrete, untraced JAX array)."""
    if isinstance(a, (int, np.integer)) and not isinstance(a, bool):
        return True
    if isinstance(a, (np.ndarray, jax.Array)) and not isinstance(a, jax.core.Tracer):
        return np.ndim(a) == 0 and jnp.issubdtype(a.dtype, jnp.integer)
    return False


def _is_discrete(a: jax.Array | Sampled) -> bool:
    """Whether edges run chosen candidates only (indices or sampled paths)."""
    return isinstance(a, Sampled) or jnp.issubdtype(a.dtype, jnp.integer)


class EdgeScan(nnx.Module):
    """Several same-shaped edges run as one ``lax.scan`` over a stacked :class:`MixedOp`.

    Why: an unrolled supernet (14 edges x 8 ops per DARTS cell, forward and backward,
    twice per step) gives XLA a huge program; compile time grows with program size. All
    edges of a cell that share a stride have the same shapes, so their ops can be one
    MixedOp with parameters stacked on a leading axis, applied edge by edge in a scan:
    the program holds each candidate op once per segment instead of once per edge. The
    result equals the unrolled formulation (tested).

    Edges are processed in the given order; edge ``t`` reads ``source[src[t]]`` and adds
    its output to ``buffer[dst[t]]``. Order edges by destination so that every source node
    is complete before it is read.

    Args:
      labels: per-edge labels (α / index is looked up per edge).
      src, dst: per-edge source and destination slots.
      candidates, c, stride, pool_bn, affine: as :class:`MixedOp`.
      remat: recompute each edge's forward in the backward pass (``jax.checkpoint`` on
        the scan body) instead of stacking its intermediates per iteration. On XLA CPU
        this made the DARTS search step 1.6x faster and halved peak memory
        (``benchmarks/RESULTS.md``): writing and re-reading the stacked residuals of a
        ``while`` loop costs more than the recomputation.
      partial_channels: PC-DARTS' ``K`` (:class:`MixedOp`).
      rngs: NNX RNG streams (split per edge).
    """

    def __init__(
        self,
        labels: Sequence[str],
        src: Sequence[int],
        dst: Sequence[int],
        candidates: Sequence[str],
        c: int,
        stride: int,
        *,
        pool_bn: bool = True,
        affine: bool = False,
        remat: bool = True,
        partial_channels: int = 1,
        rngs: nnx.Rngs,
    ):
        if not (len(labels) == len(src) == len(dst)) or not labels:
            raise ValueError("EdgeScan needs one src and dst per label and at least one edge")
        self.labels, self.src, self.dst = tuple(labels), tuple(src), tuple(dst)
        self.remat = remat
        self.op = stacked_mixed_op(labels, candidates, c, stride, pool_bn=pool_bn, affine=affine, partial_channels=partial_channels, rngs=rngs)

    def __call__(self, buffer: jax.Array, arch: ArchInput, source: jax.Array | None = None, edge_scale: jax.Array | None = None) -> jax.Array:
        """Runs the edges.

        Args:
          buffer: ``f32[slots, B, H, W, C]`` accumulators (outputs are added at ``dst``).
          arch: label -> mixing weights ``f32[k]`` or index ``int32[]``.
          source: ``f32[n, B, H_in, W_in, C]`` inputs, or None to read from ``buffer``.
          edge_scale: ``f32[E]`` a scale per edge (PC-DARTS' edge normalisation β), or
            None (no scaling: the program has no multiply).
        Returns:
          the updated buffer.
        """
        if all(_is_concrete_index(arch.get(l)) for l in self.labels):
            return self._run_chosen(buffer, arch, source, edge_scale)
        a = stack_arch(arch, self.labels)
        graphdef, state = nnx.split(self.op)
        src, dst = jnp.asarray(self.src, jnp.int32), jnp.asarray(self.dst, jnp.int32)
        gates = current_grad_gates()
        run = _edge_scan_run(graphdef, self.remat, source is not None, current_depthwise_impl(), edge_scale is not None)
        carry = buffer if source is None else (buffer, source)
        carry, new_state = run(carry, state, src, dst, a, gates, edge_scale)
        nnx.update(self.op, new_state)
        return carry if source is None else carry[0]

    def _run_chosen(self, buffer: jax.Array, arch: ArchInput, source: jax.Array | None, edge_scale: jax.Array | None) -> jax.Array:
        # Known indices: the edges one by one, each calling its chosen op (no scan, no switch).
        graphdef, state = nnx.split(self.op)
        states = []
        for e, label in enumerate(self.labels):
            op = nnx.merge(graphdef, jax.tree_util.tree_map(lambda v: v[e], state), copy=True)
            x = (buffer if source is None else source)[self.src[e]]
            y = op(x, arch[label])
            buffer = buffer.at[self.dst[e]].add(y if edge_scale is None else edge_scale[e].astype(y.dtype) * y)
            states.append(nnx.state(op))
        nnx.update(self.op, jax.tree_util.tree_map(lambda *v: jnp.stack(v), *states))
        return buffer


@functools.lru_cache(maxsize=256)
def _edge_scan_run(graphdef: nnx.GraphDef, remat: bool, external_source: bool, lowering: str, scaled: bool = False) -> Callable:
    """The jitted ``lax.scan`` of :class:`EdgeScan`, one function object per (graphdef, flags, lowering).

    ``run(carry, state, src, dst, a) -> (carry, new_state)``. JAX caches traces by function
    identity and input shapes, so cells with the same structure and shapes trace the body
    once instead of once per call. Wrapping the scan in ``jax.jit`` goes further: JAX also
    caches the linearization and transposition of a jitted call per (jaxpr, tangent
    pattern), so same-shaped cells and the passes of a search step (which all take the
    same tangent pattern, see :func:`dnas.search.bilevel.make_search_step`) differentiate each
    scan once, and lowering emits it once. C=16, 8 cells, first order: trace + lowering
    17.1 s -> 8.1 s; second order (finite difference) 33.4 s -> 20.1 s. XLA inlines the
    calls (compile and step time measured unchanged).

    ``lowering`` (the depthwise/pool lowering, read at trace time) is part of the key so
    that a trace made under one :func:`~dnas.space.ops.layers.depthwise_impl` is never reused
    under another.
    """
    del lowering  # only a cache key

    def run(carry, state, src, dst, a, gates, scale):
        # The gradient gates (dnas.space.ops.layers.grad_gates) are an argument, not read from
        # the context in here, because this trace is cached and reused.
        def body(carry, xs):
            st, s, d, at, sc = xs
            buf, source = carry if external_source else (carry, carry)
            op = nnx.merge(graphdef, st, copy=True)
            with grad_gates(gates):
                y = op(source[s], at)
                buf = buf.at[d].add(sc.astype(y.dtype) * y if scaled else y)
            return ((buf, source) if external_source else buf), nnx.state(op)

        # prevent_cse=False: inside scan there is nothing for CSE to merge across iterations.
        body = jax.checkpoint(body, prevent_cse=False) if remat else body
        # Unscaled scans carry a dummy per-edge value (never read) so that one body serves both.
        sc = scale if scaled else jnp.zeros(src.shape, jnp.float32)
        return jax.lax.scan(body, carry, (state, src, dst, a, sc))

    return jax.jit(run)


class EdgeBatch(nnx.Module):
    """Several same-shaped edges run side by side as one ``vmap`` over a stacked :class:`MixedOp`.

    Batching the edges of a group makes every kernel ``E`` times bigger, keeps the
    program at one copy of each candidate per group, and avoids the per-iteration carry
    copies and residual stacking that :class:`EdgeScan` pays inside a ``while`` loop.
    When all edges read the same input (``shared=True``: the edges leaving one node), its
    ReLU is computed once and a convolution whose kernel alone is batched becomes one
    wider convolution (JAX's batching rule folds the edge axis into the output features).
    Convolutions whose input is batched too become grouped convolutions, which XLA's CPU
    backend runs slowly, so on CPU this measured slower than :class:`EdgeScan`
    (``benchmarks/RESULTS.md``).

    With an integer architecture (one-shot evaluation) or sampled paths the edges run one
    by one, each through ``lax.switch``, so only the chosen candidates are computed.

    Args:
      labels: per-edge labels (α / index is looked up per edge).
      candidates, c, stride, pool_bn, affine, partial_channels: as :class:`MixedOp`.
      rngs: NNX RNG streams (split per edge).
    """

    def __init__(
        self,
        labels: Sequence[str],
        candidates: Sequence[str],
        c: int,
        stride: int,
        *,
        pool_bn: bool = True,
        affine: bool = False,
        partial_channels: int = 1,
        rngs: nnx.Rngs,
    ):
        if not labels:
            raise ValueError("EdgeBatch needs at least one edge")
        self.labels = tuple(labels)
        self.op = stacked_mixed_op(labels, candidates, c, stride, pool_bn=pool_bn, affine=affine, partial_channels=partial_channels, rngs=rngs)

    def __call__(self, x: jax.Array, arch: ArchInput, shared: bool = True) -> jax.Array:
        """Runs the edges.

        Args:
          x: the input ``f32[B, H, W, C]`` read by every edge (``shared=True``), or one
            input per edge ``f32[E, B, H, W, C]``.
          arch: label -> mixing weights ``f32[k]`` or index ``int32[]``.
        Returns:
          ``f32[E, B, H_out, W_out, C]``, edge ``e``'s output at ``[e]``.
        """
        a = stack_arch(arch, self.labels)
        graphdef, state = nnx.split(self.op)

        def body(st, at, xe):
            op = nnx.merge(graphdef, st, copy=True)
            return op(xe, at), nnx.state(op)

        if _is_discrete(a):
            # vmap would turn the switch into "run every branch and select".
            outs, states = [], []
            for e in range(len(self.labels)):
                a_e = jax.tree_util.tree_map(lambda v: v[e], a)
                y, st = body(jax.tree_util.tree_map(lambda v: v[e], state), a_e, x if shared else x[e])
                outs.append(y)
                states.append(st)
            ys = jnp.stack(outs)
            new_state = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *states)
        else:
            ys, new_state = jax.vmap(body, in_axes=(0, 0, None if shared else 0))(state, a, x)
        nnx.update(self.op, new_state)
        return ys


def layer_groups(shapes: Sequence[tuple[object, ...]]) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive equal entries of ``shapes`` (e.g. ``(c_in, c_out,
    stride)`` per layer): the layers :func:`scan_layers` may run as one scan."""
    groups, start = [], 0
    for i in range(1, len(shapes) + 1):
        if i == len(shapes) or shapes[i] != shapes[start]:
            groups.append((start, i))
            start = i
    return groups


def scan_layers(ops: Sequence[MixedOp], labels: Sequence[str], x: jax.Array, arch: ArchInput, *, residual: bool = False,
                remat: bool = True) -> jax.Array:
    """A chain of same-shaped mixed layers, ``x <- [x +] ops[i](x, arch[labels[i]])``, as one ``lax.scan``.

    Why: a layer-wise space (FBNet, ProxylessNAS) repeats a layer of the same shapes and
    candidates 3 times per stage; unrolled, the step program holds every candidate of every
    layer (forward and backward, per pass), and XLA's compile time grows with that. Scanned,
    it holds each candidate once per group. Parameters stay per layer (the modules are not
    changed, so weight inheritance and probes see the same tree); they are stacked inside
    the traced function, a copy of the group's weights per call, which is small next to the
    activations. Indices known at trace time (eager evaluation) run the layers one by one.

    Args:
      ops: the layers' :class:`MixedOp` (same candidates and shapes).
      labels: their labels in ``arch``.
      x: ``f32[B, H, W, C]``.
      arch: label -> mixing weights ``f32[k]``, index ``int32[]`` or :class:`Sampled` paths.
      residual: add the layer's input to its output (ProxylessNAS' block shortcut).
      remat: recompute each layer's forward in the backward pass (:class:`EdgeScan`'s reason).
    Returns:
      the last layer's output, ``f32[B, H, W, C]``.
    """
    if len(ops) == 1 or all(_is_concrete_index(arch.get(l)) for l in labels):
        for op, label in zip(ops, labels):
            y = op(x, arch[label])
            x = x + y if residual else y
        return x
    a = stack_arch(arch, labels)
    graphdef = nnx.graphdef(ops[0])  # labels differ only in error messages
    state = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *[nnx.state(op) for op in ops])

    def body(h, xs):
        st, at = xs
        op = nnx.merge(graphdef, st, copy=True)
        y = op(h, at)
        return (h + y if residual else y), nnx.state(op)

    body = jax.checkpoint(body, prevent_cse=False) if remat else body
    x, new_state = jax.lax.scan(body, x, (state, a))
    for i, op in enumerate(ops):  # BatchNorm running statistics per layer
        nnx.update(op, jax.tree_util.tree_map(lambda v: v[i], new_state))
    return x


def mixed_layers(labels: Sequence[str], candidates: Sequence[str], c_in: int, c_out: int, stride: int, *, affine: bool,
                 pool_bn: bool, rngs: nnx.Rngs) -> list[MixedOp]:
    """One :class:`MixedOp` per label, all of the same shapes, initialised as one stacked draw.

    Why: a supernet is built inside one jitted init program (:func:`dnas.search.state.build_jitted`),
    and XLA's CPU compile time of that program grows faster than linearly with the number of
    random draws in it (each draw is a dozen small kernels): FBNet's 22 x 9 candidates took
    ~100 s of CPU to compile at optimisation level 0. Drawn stacked (``nnx.vmap``), a group of
    same-shaped layers costs one draw per parameter, then splits into separate modules, so
    the parameter tree is the same as building them one by one (only the random values differ).

    Args:
      labels: the layers' labels (one module each, ``label`` set to it).
      candidates, c_in, c_out, stride, affine, pool_bn: as :class:`MixedOp`; with several
        labels ``c_in`` must equal ``c_out`` (a chain of same-shaped layers).
      rngs: NNX RNG streams.
    Returns:
      the modules, in ``labels`` order.
    """
    if len(labels) == 1:
        return [MixedOp(labels[0], candidates, c_in, c_out, stride, affine=affine, pool_bn=pool_bn, rngs=rngs)]
    if c_in != c_out:
        raise DnasError(f"mixed_layers: a group of {len(labels)} layers needs c_in == c_out, got {c_in} -> {c_out}")
    graphdef, state = nnx.split(stacked_mixed_op(labels, candidates, c_in, stride, pool_bn=pool_bn, affine=affine, rngs=rngs))
    ops = []
    for i, label in enumerate(labels):
        op = nnx.merge(graphdef, jax.tree_util.tree_map(lambda v: v[i], state), copy=True)
        op.label = label
        ops.append(op)
    return ops
