"""Convolution, pooling and BatchNorm building blocks (NHWC) shared by all ops.

Depthwise convolutions get a backend-dependent lowering: XLA's CPU backend runs
``feature_group_count`` convolutions and their gradients very slowly (DESIGN.md, measured
58 ms vs 7.7 ms in PyTorch for sep_conv_3x3 at C=8), while a sum of k*k shifted,
per-channel-scaled slices is plain elementwise work that XLA fuses well. On GPU/TPU the
grouped convolution (cuDNN) wins. Both lowerings compute the same function; the choice can
be forced with :func:`depthwise_impl` (tests compare them, MAC counting forces ``"conv"``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

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


def _resolved_depthwise_impl() -> str:
    impl = _DEPTHWISE_IMPL.get()
    if impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "conv"
    return impl


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def out_size(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution/pool along one spatial axis (PyTorch's formula)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def depthwise_shift(x: jax.Array, w: jax.Array, stride: int, pad: int, dilation: int) -> jax.Array:
    """Depthwise conv as a sum of shifted, per-channel-scaled slices.

    Args:
      x: ``f32[B, H, W, C]``.
      w: ``f32[kh, kw, C]`` per-channel kernel.
    Returns:
      ``f32[B, Ho, Wo, C]``, equal to ``lax.conv_general_dilated`` with
      ``feature_group_count=C``.
    """
    kh, kw, _ = w.shape
    _, h, wd, _ = x.shape
    ho, wo = out_size(h, kh, stride, pad, dilation), out_size(wd, kw, stride, pad, dilation)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation, j * dilation
            sl = jax.lax.slice(
                xp,
                (0, r0, c0, 0),
                (xp.shape[0], r0 + (ho - 1) * stride + 1, c0 + (wo - 1) * stride + 1, xp.shape[3]),
                (1, stride, stride, 1),
            )
            term = sl * w[i, j]
            out = term if out is None else out + term
    return out  # type: ignore[return-value]


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
        if _resolved_depthwise_impl() in ("shift", "fused"):
            return depthwise_shift(x, w[:, :, 0, :], sh, ph, dilation)
    if w.shape[:2] == (1, 1) and groups == 1 and ph == pw == 0 and _resolved_depthwise_impl() != "conv":
        # A 1x1 convolution is a matrix product over pixels. As a 2-D dot XLA's CPU
        # backend runs it (and its gradients) ~10x faster than as a convolution at the
        # small channel counts of a supernet (C = 8..64).
        if sh > 1 or sw > 1:
            x = x[:, ::sh, ::sw, :]
        y = jnp.dot(x.reshape(-1, cin), w[0, 0])
        return y.reshape(x.shape[:-1] + (w.shape[-1],))
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(sh, sw),
        padding=((ph, ph), (pw, pw)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


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
    if _resolved_depthwise_impl() == "fused":
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


def avg_pool(x: jax.Array, k: int, stride: int, pad: int, count_include_pad: bool = False) -> jax.Array:
    """Average pooling, NHWC; ``count_include_pad=False`` divides by the real window size."""
    window, strides = (1, k, k, 1), (1, stride, stride, 1)
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
    if count_include_pad or pad == 0:
        return summed / (k * k)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)
    return summed / counts


def max_pool(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
    """Max pooling, NHWC, padding with -inf as PyTorch does."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0))
    )
