"""Net2Net function-preserving widening (Net2WiderNet).

Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR
2016, section 2.1: a layer with ``n`` output units becomes ``q > n`` units through a
random mapping ``g`` (``g(j) = j`` for ``j < n``, else drawn uniformly from ``[0, n)``).
The widened layer's unit ``j`` copies unit ``g(j)`` (its outgoing weights are replicated),
and the next layer divides each incoming weight by the replication count
``|{x : g(x) = g(j)}|``, so the sum over a unit's copies is the original weight and the
network computes the same function. A BatchNorm between the two (scale, shift, running
mean and variance) is replicated by ``g`` too: a copy sees the same inputs, so it
normalises identically, in training mode (batch statistics) and eval mode alike.
Element-wise nonlinearities (ReLU) commute with the replication.

The paper adds a little noise to break the symmetry between copies (otherwise replicas
receive identical gradients forever); here ``noise > 0`` adds
``noise * std(W) * N(0, 1)`` to the next layer's widened incoming weights, so the output
changes slightly. Off by default: exactly function-preserving.

Layouts: convolution kernels are HWIO (``f32[kh, kw, c_in, c_out]``, as
:class:`dnas.space.ops.layers.Conv2d` and ``flax.nnx.Conv`` store them), dense kernels
``f32[in, out]`` (``flax.nnx.Linear``); in both the output axis is the last and the input
axis the second to last. Grouped and depthwise convolutions are not handled.

Example::

    g = wider_mapping(jax.random.key(0), n=16, q=24)
    conv1, bn, conv2 = widen_conv_bn_conv(conv1, bn, conv2, 24, key=jax.random.key(0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.types import PRNGKey

BN_FIELDS = ("scale", "bias", "mean", "var")


def wider_mapping(key: PRNGKey, n: int, q: int) -> jax.Array:
    """Net2WiderNet's random mapping ``g``, ``int32[q]``: ``g(j) = j`` for ``j < n``, the
    other ``q - n`` entries uniform over ``[0, n)``.

    Args:
      key: PRNG key of the draw.
      n: the layer's current width; q: the new width (``q >= n``).
    """
    if n < 1 or q < n:
        raise DnasError(f"Net2WiderNet widens n >= 1 units to q >= n; got n={n}, q={q}")
    extra = jax.random.randint(key, (q - n,), 0, n, dtype=jnp.int32)
    return jnp.concatenate([jnp.arange(n, dtype=jnp.int32), extra])


def replication_counts(g: jax.Array, n: int) -> jax.Array:
    """``f32[n]``: how many new units copy each old unit (``|{x : g(x) = i}|``)."""
    return jnp.zeros((n,), jnp.float32).at[g].add(1.0)


def widen_outgoing(kernel: jax.Array, g: jax.Array, bias: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The widened layer: output unit ``j`` copies unit ``g[j]``.

    Args:
      kernel: ``f32[..., in, n]`` (HWIO conv or dense); bias: ``f32[n]`` or None.
      g: the mapping ``int32[q]`` (:func:`wider_mapping`).
    Returns:
      ``(f32[..., in, q], f32[q] | None)``.
    """
    return jnp.take(kernel, g, axis=-1), None if bias is None else jnp.take(bias, g, axis=0)


def widen_batch_norm(bn: Mapping[str, jax.Array | None], g: jax.Array) -> dict[str, jax.Array | None]:
    """BatchNorm fields (``scale``, ``bias``, ``mean``, ``var``, each ``f32[n]`` or None for
    an affine-free BN) replicated by ``g``: ``f32[q]`` each."""
    return {k: None if bn.get(k) is None else jnp.take(bn[k], g, axis=0) for k in BN_FIELDS}


def widen_incoming(kernel: jax.Array, g: jax.Array, *, noise: float = 0.0, key: PRNGKey | None = None) -> jax.Array:
    """The next layer: input ``j`` gets the weights of input ``g[j]`` divided by its
    replication count, so the copies' contributions sum to the original one.

    Args:
      kernel: ``f32[..., n, out]`` (HWIO conv or dense).
      g: the mapping ``int32[q]``.
      noise: relative scale of the symmetry-breaking noise (``noise * std(kernel) * N(0,1)``);
        0 keeps the function exactly.
      key: PRNG key of the noise (needed when ``noise > 0``).
    Returns:
      ``f32[..., q, out]``.
    """
    n = kernel.shape[-2]
    counts = replication_counts(g, n)
    out = jnp.take(kernel, g, axis=-2) / jnp.take(counts, g)[:, None]
    if noise:
        if key is None:
            raise DnasError("Net2WiderNet noise needs a PRNG key (key=...)")
        out = out + noise * jnp.std(kernel) * jax.random.normal(key, out.shape, out.dtype)
    return out


def _get(layer: Any, name: str) -> jax.Array | None:
    """A field of a param dict or an nnx module (``None`` when absent)."""
    v = layer.get(name) if isinstance(layer, Mapping) else getattr(layer, name, None)
    if isinstance(v, nnx.Variable):
        return v.get_value()
    return v


def _put(layer: Any, values: Mapping[str, jax.Array | None], widths: Mapping[str, int]) -> Any:
    """A copy of ``layer`` (dict or nnx module) with ``values`` set and width attributes
    (``in_features``, ``out_features``, ``num_features``) updated where the module has them."""
    if isinstance(layer, Mapping):
        out = dict(layer)
        out.update({k: v for k, v in values.items() if k in layer or v is not None})
        return out
    new = nnx.clone(layer)
    for k, v in values.items():
        var = getattr(new, k, None)
        if isinstance(var, nnx.Variable) and v is not None:
            # A fresh Variable of the same type: the shape changes, the kind does not.
            setattr(new, k, var.replace(v))
    for k, w in widths.items():
        if isinstance(getattr(new, k, None), int):
            setattr(new, k, w)
    return new


def widen_conv_bn_conv(conv1: Any, bn: Any, conv2: Any, q: int, *, key: PRNGKey, noise: float = 0.0) -> tuple[Any, Any, Any]:
    """Widens ``conv1 -> BN -> ReLU -> conv2`` from ``n`` to ``q`` channels, same function.

    Each layer is an nnx module (``dnas.space.ops.layers.Conv2d``, ``nnx.Conv``, ``nnx.Linear``;
    ``dnas.space.ops.layers.BatchNorm``, ``nnx.BatchNorm``) or a dict of arrays (``kernel``,
    optional ``bias``; ``scale``, ``bias``, ``mean``, ``var``). The inputs are not changed:
    modules are cloned, dicts copied.

    Args:
      conv1: the layer widened, kernel ``f32[..., c_in, n]``; bn: its BatchNorm (``f32[n]``
        fields) or None; conv2: the consumer, kernel ``f32[..., n, c_out]``.
      q: the new width (``q >= n``).
      key: PRNG key: ``g`` is drawn from ``fold_in(key, 0)``, the noise from ``fold_in(key, 1)``.
      noise: symmetry-breaking noise scale (:func:`widen_incoming`); 0 = exact.
    Returns:
      ``(conv1, bn, conv2)`` widened, of the same kinds as given.
    """
    k1, k2 = _get(conv1, "kernel"), _get(conv2, "kernel")
    if k1 is None or k2 is None:
        raise DnasError("Net2WiderNet needs layers with a 'kernel' (conv HWIO or dense [in, out])")
    n = k1.shape[-1]
    if k2.shape[-2] != n:
        raise DnasError(f"Net2WiderNet: the first layer has {n} outputs, the second {k2.shape[-2]} inputs (grouped convs are not handled)")
    g = wider_mapping(jax.random.fold_in(key, 0), n, q)
    kernel, bias = widen_outgoing(k1, g, _get(conv1, "bias"))
    conv1 = _put(conv1, {"kernel": kernel, "bias": bias}, {"out_features": q})
    if bn is not None:
        fields = {f: _get(bn, f) for f in BN_FIELDS}
        if any(v is not None and v.shape != (n,) for v in fields.values()):
            raise DnasError(f"Net2WiderNet: the BatchNorm's fields must be f32[{n}] like the first layer's outputs")
        bn = _put(bn, widen_batch_norm(fields, g), {"num_features": q})
    conv2 = _put(conv2, {"kernel": widen_incoming(k2, g, noise=noise, key=jax.random.fold_in(key, 1))}, {"in_features": q})
    return conv1, bn, conv2


__all__ = [
    "wider_mapping", "replication_counts", "widen_outgoing", "widen_batch_norm", "widen_incoming", "widen_conv_bn_conv",
]
