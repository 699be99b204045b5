"""Convolution, pooling and BatchNorm building blocks (NHWC) shared by all ops.

Depthwise convolutions get a backend-dependent lowering: XLA's CPU backend runs
``feature_group_count`` convolutions and their gradients very slowly (DESIGN.md, measured
58 ms vs 7.7 ms in PyTorch for sep_conv_3x3 at C=8), while a sum of k*k shifted,
per-channel-scaled slices is plain elementwise work that XLA fuses well. On GPU/TPU the
grouped convolution (cuDNN) wins. Both lowerings compute the same function; the choice can
be forced with :func:`depthwise_impl` (tests compare them, MAC counting forces ``"conv"``).

The shifted lowerings (depthwise, max/avg pool) carry hand-written VJPs: XLA differentiates
a slice into a pad, and on CPU it fuses the ``k*k`` pads of a cotangent into one loop that
re-evaluates the cotangent's producer per tap, which made the backward 5-10x the forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

_DEPTHWISE_IMPL: contextvars.ContextVar[str] = contextvars.ContextVar("depthwise_impl", default="auto")
_IMPLS = ("auto", "conv", "shift", "fused")


@contextlib.contextmanager
def depthwise_impl(impl: str) -> Iterator[None]:
    """Forces the depthwise lowering while tracing: ``"auto"``, ``"conv"``, ``"shift"`` or ``"fused"``.

    - ``"conv"``: ``feature_group_count`` convolution (cuDNN's fast path; slow on CPU).
    - ``"shift"``: a sum of ``k*k`` shifted, per-channel-scaled slices (elementwise).
    - ``"fused"``: a depthwise conv followed by a pointwise one (every DARTS sep/dil conv)
      runs as *one* dense convolution whose kernel is their product,
      ``W[i, j, c, o] = dw[i, j, c] * pw[c, o]``; a lone depthwise falls back to shift.
      More FLOPs, but one well-shaped kernel instead of two memory-bound ones, and the
      smallest program (fast compile).
    - ``"auto"``: ``"shift"`` on CPU (fastest whole search step measured with XLA's
      default CPU flags, ``benchmarks/RESULTS.md``), ``"conv"`` elsewhere.

    Max and average pooling follow the same switch: ``"conv"`` uses XLA's
    ``reduce_window``, every other choice shifted slices with a hand-written VJP.

    It acts at trace time, so use it around the first call of a jitted function (or an
    un-jitted call).
    """
    if impl not in _IMPLS:
        raise ValueError(f"depthwise impl must be one of {_IMPLS}, got {impl!r}")
    token = _DEPTHWISE_IMPL.set(impl)
    try:
        yield
    finally:
        _DEPTHWISE_IMPL.reset(token)


class GradGates(NamedTuple):
    """Traced ``bool[]`` flags saying which gradients a backward pass must compute.

    ``weights``: kernel gradients of every convolution that goes through :func:`conv2d`
    (all lowerings: shifted depthwise, 1x1 as a dot, XLA convolutions); ``alpha``:
    gradients of the mixing weights of :class:`~dnas.space.mixed.MixedOp`. None means "always"
    (no gate, the default). Other parameters (``nnx.Linear``, BatchNorm scale and shift)
    are not gated.
    """

    weights: jax.Array | None = None
    alpha: jax.Array | None = None


_GATES: contextvars.ContextVar[GradGates] = contextvars.ContextVar("grad_gates", default=GradGates())


@contextlib.contextmanager
def grad_gates(gates: GradGates) -> Iterator[None]:
    """Traces the enclosed ops so that their backward computes only the gradients ``gates`` allow.

    Why: the fused search step (:func:`dnas.search.bilevel.make_search_step`) runs its passes
    (the α pass, the weight pass, and for second order the finite-difference passes) as
    iterations of one loop, so one copy of the network's forward and backward serves all
    of them and the program is several times smaller. Without gates every iteration would
    compute every gradient; with them a ``lax.cond`` skips what an iteration discards:
    the α pass skips the convolutions' kernel gradients (the depthwise ones dominate a
    DARTS edge's backward on CPU), the weight pass the mixing-weight gradients. Where a
    gate is false that gradient is zero, so only close a gate whose gradient is unused.
    It acts at trace time; cached traced functions that read it (the edge scan) must take
    the gates as an argument and re-enter them inside.
    """
    token = _GATES.set(gates)
    try:
        yield
    finally:
        _GATES.reset(token)


def current_grad_gates() -> GradGates:
    """The gates set by :func:`grad_gates` here (``GradGates()`` when none)."""
    return _GATES.get()


def current_depthwise_impl() -> str:
    """The depthwise/pool lowering in effect here (``"auto"`` resolved for the backend).

    Code that caches traced functions must key its cache on this: the choice is read at
    trace time, so a cached trace would keep the lowering it was traced with.
    """
    impl = _DEPTHWISE_IMPL.get()
    if impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "conv"
    return impl


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def out_size(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution/pool along one spatial axis (PyTorch's formula)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _taps(xp: jax.Array, kh: int, kw: int, ho: int, wo: int, stride: int, dilation: int) -> list[jax.Array]:
    """The ``kh * kw`` strided windows of a padded NHWC tensor, row-major tap order."""
    return [
        jax.lax.slice(
            xp,
            (0, i * dilation, j * dilation, 0),
            (xp.shape[0], i * dilation + (ho - 1) * stride + 1, j * dilation + (wo - 1) * stride + 1, xp.shape[3]),
            (1, stride, stride, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]


def _pad_hw(x: jax.Array, pad: int, value: float = 0.0) -> jax.Array:
    # lax.pad, not jnp.pad: the supernet traces thousands of these and jnp's wrapper
    # costs a nested jit trace each.
    return jax.lax.pad(x, jnp.asarray(value, x.dtype), ((0, 0, 0), (pad, pad, 0), (pad, pad, 0), (0, 0, 0)))


def _transpose_layout(dy: jax.Array, in_hw: tuple[int, int], k: tuple[int, int], stride: int, pad: int, dilation: int, fill: float = 0) -> jax.Array:
    """Lays a window op's cotangent out so that its input gradient is a stride-1 window op.

    Output pixel ``o`` reads input pixel ``o * stride + t * dilation - pad`` at tap ``t``.
    Upsampling ``dy`` by ``stride`` (interior padding) and padding it by
    ``(k - 1) * dilation - pad`` in front turns "which outputs read input ``i``" into the
    stride-1 window at ``i`` with the taps flipped. ``fill`` pads (``-1`` for tap indices).
    """
    pads = [(0, 0, 0)]
    for n, kk, no in zip(in_hw, k, dy.shape[1:3]):
        lo = (kk - 1) * dilation - pad
        pads.append((lo, n - 1 + pad - (no - 1) * stride, stride - 1))
    pads.append((0, 0, 0))
    return jax.lax.pad(dy, jnp.asarray(fill, dy.dtype), tuple(pads))


def _weighted_taps(xp: jax.Array, w: jax.Array, ho: int, wo: int, stride: int, dilation: int) -> jax.Array:
    kh, kw, c = w.shape
    wf = w.reshape(kh * kw, c)
    out = None
    for t, sl in enumerate(_taps(xp, kh, kw, ho, wo, stride, dilation)):
        term = sl * jax.lax.index_in_dim(wf, t, keepdims=False)
        out = term if out is None else out + term
    return out  # type: ignore[return-value]


def depthwise_shift(x: jax.Array, w: jax.Array, stride: int, pad: int, dilation: int) -> jax.Array:
    """Depthwise conv as a sum of shifted, per-channel-scaled slices, with a hand-written VJP.

    Args:
      x: ``f32[B, H, W, C]``.
      w: ``f32[kh, kw, C]`` per-channel kernel.
      stride, pad, dilation: PyTorch semantics (symmetric integer padding).
    Returns:
      ``f32[B, Ho, Wo, C]``, equal to ``lax.conv_general_dilated`` with
      ``feature_group_count=C``.

    The VJP is written out because XLA's CPU backend handles the autodiff transpose badly:
    the transpose of each slice is a pad, and fusing ``k*k`` pads of the cotangent into
    one loop re-evaluates the cotangent's producer per tap. Here the input gradient is
    the same shifted sum (flipped taps) over the cotangent laid out once by
    :func:`_transpose_layout`, and the kernel gradient is a loop over taps
    (:func:`_kernel_grad`). 1.5-4x faster forward+backward at DARTS sizes
    (``benchmarks/RESULTS.md``). Reverse-over-reverse (second-order DARTS) differentiates
    these rules; forward mode is not supported. Under :func:`grad_gates` the kernel
    gradient is computed only where the ``weights`` gate holds.
    """
    flag = current_grad_gates().weights
    if flag is None:
        return _depthwise_shift(x, w, stride, pad, dilation)
    return _depthwise_shift_gated(x, w, flag, stride, pad, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_shift(x: jax.Array, w: jax.Array, stride: int, pad: int, dilation: int) -> jax.Array:
    kh, kw, _ = w.shape
    ho, wo = out_size(x.shape[1], kh, stride, pad, dilation), out_size(x.shape[2], kw, stride, pad, dilation)
    return _weighted_taps(_pad_hw(x, pad), w, ho, wo, stride, dilation)


def _depthwise_shift_fwd(x, w, stride, pad, dilation):
    # Forward rules call the undecorated functions (``.fun``), here and below: a
    # custom-VJP call inside a forward rule cannot be differentiated forward, which a
    # Hessian-vector product (jvp of grad) does.
    return _depthwise_shift.fun(x, w, stride, pad, dilation), (x, w)


def _depthwise_input_grad(x, w, dy, stride, pad, dilation):
    kh, kw, _ = w.shape
    h, wd = x.shape[1], x.shape[2]
    dyl = _transpose_layout(dy, (h, wd), (kh, kw), stride, pad, dilation)
    return _weighted_taps(dyl, w[::-1, ::-1], h, wd, 1, dilation)


def _depthwise_shift_bwd(stride, pad, dilation, res, dy):
    x, w = res
    dw = _kernel_grad(_pad_hw(x, pad), dy, w.shape[0], w.shape[1], stride, dilation)
    return _depthwise_input_grad(x, w, dy, stride, pad, dilation), dw.reshape(w.shape)


_depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _depthwise_shift_gated(x: jax.Array, w: jax.Array, flag: jax.Array, stride: int, pad: int, dilation: int) -> jax.Array:
    return _depthwise_shift(x, w, stride, pad, dilation)


def _depthwise_shift_gated_fwd(x, w, flag, stride, pad, dilation):
    return _depthwise_shift.fun(x, w, stride, pad, dilation), (x, w, flag)


def _depthwise_shift_gated_bwd(stride, pad, dilation, res, dy):
    x, w, flag = res
    dw = jax.lax.cond(
        flag,
        lambda: _kernel_grad(_pad_hw(x, pad), dy, w.shape[0], w.shape[1], stride, dilation).reshape(w.shape),
        lambda: jnp.zeros_like(w),
    )
    return _depthwise_input_grad(x, w, dy, stride, pad, dilation), dw, None


_depthwise_shift_gated.defvjp(_depthwise_shift_gated_fwd, _depthwise_shift_gated_bwd)


def _kernel_grad(xp: jax.Array, dy: jax.Array, kh: int, kw: int, stride: int, dilation: int) -> jax.Array:
    """``dw[t, c] = sum_{b,h,w} window_t(xp)[b, h, w, c] * dy[b, h, w, c]`` for every tap ``t``.

    One loop iteration per tap, the window taken with a *dynamic* slice at the tap's
    offset. Why not ``k*k`` static slices: each static slice is a kernel of its own
    (its offset is part of the code), and XLA CPU compiles every kernel separately; at
    C=16, 8 cells they were 470 of the step's 1597 kernels. The loop's body is one
    kernel per shape, and it also ran the search step faster (C=16/8 cells: median step
    6.3 s -> 5.3 s, compile CPU time 114 s -> 78 s, ``benchmarks/RESULTS.md``).
    Returns ``f32[kh * kw, C]``.
    """
    b, ho, wo, c = dy.shape
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1

    def tap(t: jax.Array) -> jax.Array:
        i, j, zero = t // kw, t % kw, jnp.zeros((), t.dtype)  # one index dtype also under x64
        win = jax.lax.dynamic_slice(xp, (zero, i * dilation, j * dilation, zero), (b, span_h, span_w, c))
        if stride > 1:
            win = win[:, ::stride, ::stride, :]
        return jax.lax.reduce(win * dy, jnp.zeros((), dy.dtype), jax.lax.add, (0, 1, 2))

    return jax.lax.map(tap, jnp.arange(kh * kw, dtype=jnp.int32))


def conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    groups: int = 1,
) -> jax.Array:
    """NHWC/HWIO convolution with PyTorch-style symmetric integer padding.

    Args:
      x: ``f32[B, H, W, Cin]``.
      w: ``f32[kh, kw, Cin // groups, Cout]``.
    Returns:
      ``f32[B, Ho, Wo, Cout]``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    cin = x.shape[-1]
    if groups == cin and w.shape[-1] == cin and w.shape[2] == 1 and sh == sw and ph == pw and groups > 1:
        if current_depthwise_impl() in ("shift", "fused"):
            return depthwise_shift(x, w[:, :, 0, :], sh, ph, dilation)
    if w.shape[:2] == (1, 1) and groups == 1 and ph == pw == 0 and current_depthwise_impl() != "conv":
        # A 1x1 convolution is a matrix product over pixels. As a 2-D dot XLA's CPU
        # backend runs it (and its gradients) ~10x faster than as a convolution at the
        # small channel counts of a supernet (C = 8..64).
        if sh > 1 or sw > 1:
            x = x[:, ::sh, ::sw, :]
        y = _gated(jnp.dot, x.reshape(-1, cin), w[0, 0])
        return y.reshape(x.shape[:-1] + (w.shape[-1],))
    if w.shape[:2] == (1, 1) and 1 < groups < cin and ph == pw == 0 and current_depthwise_impl() != "conv":
        # A grouped 1x1 convolution (FBNet's g2 ops, ShuffleNet) as a batched matrix product
        # over the groups: XLA's CPU backend runs feature_group_count convolutions and their
        # gradients on a slow path (see the depthwise note above).
        if sh > 1 or sw > 1:
            x = x[:, ::sh, ::sw, :]
        cout, g = w.shape[-1], groups
        wg = w[0, 0].reshape(cin // g, g, cout // g).transpose(1, 0, 2)  # output channel o is in group o // (cout / g)
        y = _gated(lambda a, b: jnp.einsum("ngc,gcd->ngd", a, b), x.reshape(-1, g, cin // g), wg)
        return y.reshape(x.shape[:-1] + (cout,))
    if groups == 1:
        conv = functools.partial(_conv_nhwc, strides=(sh, sw), pads=(ph, pw), dilation=dilation)
    else:
        conv = functools.partial(
            jax.lax.conv_general_dilated,
            window_strides=(sh, sw),
            padding=((ph, ph), (pw, pw)),
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
    return _gated(conv, x, w)


def _dilated(n: int, d: int) -> int:
    return 0 if n == 0 else 1 + d * (n - 1)


_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_nhwc(x: jax.Array, w: jax.Array, strides: tuple[int, int], pads: tuple[int, int], dilation: int) -> jax.Array:
    """An NHWC/HWIO convolution (``groups = 1``) whose gradients are convolutions in the
    canonical ``NHWC/HWIO`` form too.

    Why: JAX writes a convolution's input and kernel gradients with permuted dimension
    numbers (``f01b_i01o->01bf``), and XLA's CPU backend brings those into its fast form
    only in the top-level computation. Inside a ``lax.cond``/``lax.switch`` branch or a
    ``lax.scan`` body (index-mode supernets, sampled paths, the fused search step, the
    zero-cost scorer) they ran on a generic path, an order of magnitude slower
    (``benchmarks/RESULTS.md``, "Convolution gradients inside conditionals"). Here both
    gradients are computed from explicitly transposed operands in the canonical form,
    the same arithmetic as JAX's rules (bit-equal results in the tests).
    """
    return jax.lax.conv_general_dilated(x, w, strides, [(p, p) for p in pads], rhs_dilation=(dilation, dilation), dimension_numbers=_NHWC)


def _conv_nhwc_fwd(x, w, strides, pads, dilation):
    return _conv_nhwc.fun(x, w, strides, pads, dilation), (x, w)


def _conv_nhwc_bwd(strides, pads, dilation, res, dy):
    x, w = res
    # Per spatial axis: input size, dilated kernel extent, padding, stride-dilated output extent.
    axes = [(n, _dilated(k, dilation), p, _dilated(o, s)) for n, k, p, o, s in zip(x.shape[1:3], w.shape[:2], pads, dy.shape[1:3], strides)]
    # Input gradient: dy (dilated by the stride) convolved with the flipped kernel, in/out swapped.
    pad_x = [(k - p - 1, n - o + p) for n, k, p, o in axes]
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(dy.dtype)
    dx = jax.lax.conv_general_dilated(dy, w_t, (1, 1), pad_x, lhs_dilation=strides, rhs_dilation=(dilation, dilation), dimension_numbers=_NHWC)
    # Kernel gradient: channels as the batch, the images' batch as the features, dy as the window.
    pad_w = [(p, o - n + k - p - 1) for n, k, p, o in axes]
    xt, dyt = x.astype(dy.dtype).transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3)
    dw = jax.lax.conv_general_dilated(xt, dyt, (dilation, dilation), pad_w, rhs_dilation=strides, dimension_numbers=_NHWC)
    return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _gated(fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, w: jax.Array) -> jax.Array:
    """``fn(x, w)``; under a ``weights`` gate (:func:`grad_gates`) its ``w`` gradient is gated."""
    flag = current_grad_gates().weights
    return fn(x, w) if flag is None else _kernel_gated(fn, x, w, flag)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernel_gated(fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, w: jax.Array, flag: jax.Array) -> jax.Array:
    return fn(x, w)


def _kernel_gated_fwd(fn, x, w, flag):
    return _undecorated(fn)(x, w), (x, w, flag)


def _undecorated(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``fn`` without its custom VJP, when it is a ``functools.partial`` of one."""
    if isinstance(fn, functools.partial) and isinstance(fn.func, jax.custom_vjp):
        return functools.partial(fn.func.fun, *fn.args, **fn.keywords)
    return fn


def _kernel_gated_bwd(fn, res, dy):
    x, w, flag = res
    (dx,) = jax.vjp(lambda x_: fn(x_, w), x)[1](dy)
    dw = jax.lax.cond(flag, lambda: jax.vjp(lambda w_: fn(x, w_), w)[1](dy)[0], lambda: jnp.zeros_like(w))
    return dx, dw, None


_kernel_gated.defvjp(_kernel_gated_fwd, _kernel_gated_bwd)


def depthwise_pointwise(
    x: jax.Array, dw: jax.Array, pw: jax.Array, stride: int, padding: int, dilation: int = 1
) -> jax.Array:
    """A depthwise conv followed by a pointwise (1x1) conv, in the selected lowering.

    Args:
      x: ``f32[B, H, W, C]``.
      dw: depthwise kernel ``f32[kh, kw, 1, C]``.
      pw: pointwise kernel ``f32[1, 1, C, C_out]``.
      stride, padding, dilation: of the depthwise conv (PyTorch semantics).
    Returns:
      ``f32[B, H_out, W_out, C_out]``; equal (up to float rounding) in every lowering.
    """
    if current_depthwise_impl() == "fused":
        w = dw[:, :, 0, :, None] * pw[0, 0][None, None]  # [kh, kw, C, C_out]
        return conv2d(x, w, stride, padding, dilation)
    return conv2d(conv2d(x, dw, stride, padding, dilation, groups=x.shape[-1]), pw)


class Conv2d(nnx.Module):
    """A bias-free (by default) 2-D convolution, NHWC, PyTorch's default initialisation.

    Args:
      c_in, c_out: channels.
      kernel: ``k`` or ``(kh, kw)``.
      stride, padding, dilation, groups: as in ``torch.nn.Conv2d``.
      bias: add a bias.
      rngs: NNX RNG streams (``params`` is used).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        if c_in % groups or c_out % groups:
            raise ValueError(f"channels ({c_in}->{c_out}) must be divisible by groups={groups}")
        kh, kw = _pair(kernel)
        fan_in = (c_in // groups) * kh * kw
        bound = 1.0 / math.sqrt(fan_in)  # torch's kaiming_uniform(a=sqrt(5)) bound
        self.kernel = nnx.Param(
            jax.random.uniform(rngs.params(), (kh, kw, c_in // groups, c_out), jnp.float32, -bound, bound)
        )
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32)) if bias else None
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv2d(x, self.kernel.get_value(), self.stride, self.padding, self.dilation, self.groups)
        if self.bias is not None:
            y = y + self.bias.get_value()
        return y


class BatchNorm(nnx.Module):
    """BatchNorm over NHWC with PyTorch's semantics (momentum 0.1, eps 1e-5).

    Training mode normalises with batch statistics and updates the running averages, the
    running variance with the *unbiased* batch variance as ``torch.nn.BatchNorm2d`` does;
    ``model.eval()`` switches to the running averages. Under ``jit`` with the batch
    sharded over devices, the batch mean is a global mean (sync BN for free).

    Args:
      c: channels. affine: learn scale and shift (DARTS search ops: False).
    """

    def __init__(self, c: int, affine: bool = True, momentum: float = 0.1, eps: float = 1e-5):
        self.mean = nnx.BatchStat(jnp.zeros((c,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((c,), jnp.float32))
        self.scale = nnx.Param(jnp.ones((c,), jnp.float32)) if affine else None
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32)) if affine else None
        self.momentum, self.eps = momentum, eps
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            n = x.size // x.shape[-1]
            m = self.momentum
            # set_value(v), not var[...] = v: flax's indexed set inspects the tracer's
            # sharding, which costs milliseconds per BatchNorm when tracing.
            self.mean.set_value((1 - m) * self.mean.get_value() + m * jax.lax.stop_gradient(mean))
            self.var.set_value((1 - m) * self.var.get_value() + m * jax.lax.stop_gradient(var) * (n / max(n - 1, 1)))
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        if self.scale is not None:
            y = y * self.scale.get_value() + self.bias.get_value()
        return y


def batch_norm(c: int, affine: bool, *, rngs: nnx.Rngs | None = None) -> BatchNorm:
    """A :class:`BatchNorm`; ``affine=False`` drops scale and shift, as DARTS does in search."""
    return BatchNorm(c, affine)


def _window_lowering_is_native() -> bool:
    # Pools follow the depthwise switch: "conv" means XLA's own window kernels everywhere.
    return current_depthwise_impl() == "conv"


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _window_sum(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    """Sum over each ``k x k`` window (zero padding) as shifted slices, NHWC."""
    ho, wo = out_size(x.shape[1], k, stride, pad), out_size(x.shape[2], k, stride, pad)
    taps = _taps(_pad_hw(x, pad), k, k, ho, wo, stride, 1)
    return functools.reduce(jnp.add, taps)


def _window_sum_fwd(x, k, stride, pad):
    return _window_sum.fun(x, k, stride, pad), x.shape


def _window_sum_bwd(k, stride, pad, shape, dy):
    # The transpose of a window sum is a window sum of the laid-out cotangent.
    dyl = _transpose_layout(dy, (shape[1], shape[2]), (k, k), stride, pad, 1)
    return (functools.reduce(jnp.add, _taps(dyl, k, k, shape[1], shape[2], 1, 1)),)


_window_sum.defvjp(_window_sum_fwd, _window_sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_shift(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    return _max_pool_shift_fwd(x, k, stride, pad)[0]


def _max_pool_shift_fwd(x, k, stride, pad):
    ho, wo = out_size(x.shape[1], k, stride, pad), out_size(x.shape[2], k, stride, pad)
    taps = _taps(_pad_hw(x, pad, -jnp.inf), k, k, ho, wo, stride, 1)
    y, arg = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
    for t, v in enumerate(taps[1:], 1):
        # Strictly greater: the first maximum in window order gets the gradient, as in
        # PyTorch and XLA's select-and-scatter.
        better = v > y
        y, arg = jnp.where(better, v, y), jnp.where(better, jnp.int8(t), arg)
    return y, (arg, x.shape)


def _max_pool_shift_bwd(k, stride, pad, res, dy):
    arg, shape = res
    hw = (shape[1], shape[2])
    dyl = _transpose_layout(dy, hw, (k, k), stride, pad, 1)
    argl = _transpose_layout(arg, hw, (k, k), stride, pad, 1, fill=-1)
    dx = None
    # Slice q of the laid-out cotangent is the output that reads this pixel at tap k*k-1-q.
    for q, (d, a) in enumerate(zip(_taps(dyl, k, k, hw[0], hw[1], 1, 1), _taps(argl, k, k, hw[0], hw[1], 1, 1))):
        term = jnp.where(a == k * k - 1 - q, d, jnp.zeros((), d.dtype))
        dx = term if dx is None else dx + term
    return (dx,)


_max_pool_shift.defvjp(_max_pool_shift_fwd, _max_pool_shift_bwd)


def avg_pool(x: jax.Array, k: int, stride: int, pad: int, count_include_pad: bool = False) -> jax.Array:
    """Average pooling, NHWC; ``count_include_pad=False`` divides by the real window size.

    Lowered as shifted slices with a hand-written VJP except under
    ``depthwise_impl("conv")`` or on GPU/TPU, where XLA's ``reduce_window`` is used (on
    CPU its backward was 2x slower at DARTS sizes).
    """
    window, strides = (1, k, k, 1), (1, stride, stride, 1)
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    if _window_lowering_is_native():
        summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
    else:
        summed = _window_sum(x, k, stride, pad)
    if count_include_pad or pad == 0:
        return summed / (k * k)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)
    return summed / counts


def max_pool(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    """Max pooling, NHWC, padding with -inf as PyTorch does.

    The first maximum of a window receives its gradient (PyTorch's rule). Lowered as
    shifted slices with a hand-written VJP except under ``depthwise_impl("conv")`` or on
    GPU/TPU: XLA CPU's select-and-scatter backward was 4x slower at DARTS sizes.
    """
    if _window_lowering_is_native():
        return jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0))
        )
    return _max_pool_shift(x, k, stride, pad)
