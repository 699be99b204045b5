"""Measuring latency on the JAX device this runs on: per-op tables (``dnas lut build``) and
whole sampled networks against the table's sum (``dnas lut check``).

Every measurement jits the module's eval-mode forward (BatchNorm on running statistics),
runs ``warmup`` calls (compilation and caches), then times ``repeats`` calls each ended by
``block_until_ready`` (JAX dispatches asynchronously; without it the clock stops before the
device does) and keeps the median (robust to the scheduler's outliers on a shared CPU). The
table records the settings in its ``source`` field as JSON after ``dnas lut build``, so
``dnas lut check`` rebuilds the same space at the same resolution.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.hardware.lut import LatencyTable, LutEntry, LutKey
from dnas.hardware.penalties import lut_term, table_latency
from dnas.hardware.predictor import latency_metrics
from dnas.space.base import SearchSpace, build_space
from dnas.space.keys import KeyedSpace

SOURCE_PREFIX = "dnas lut build "


def device_name() -> str:
    """``platform:kind`` of the first JAX device, with the CPU model on CPU (``cpu:AMD EPYC ...``)."""
    d = jax.devices()[0]
    if d.platform == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return f"cpu:{line.split(':', 1)[1].strip()}"
        except OSError:
            pass
    return f"{d.platform}:{d.device_kind}"


def time_call(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, float]:
    """Median and standard deviation in ms of ``fn()`` over ``repeats`` timed calls after
    ``warmup`` untimed ones; each call is waited for with ``block_until_ready``."""
    for _ in range(max(warmup, 1)):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.std(times))


def time_module(module: nnx.Module, input_shape: tuple[int, ...], *, key: jax.Array, warmup: int, repeats: int,
                inner: int = 10) -> tuple[float, float]:
    """Latency (median, std in ms per forward) of ``module(x)`` in eval mode, ``x`` random of
    ``input_shape`` (with batch).

    Each timed call runs the forward ``inner`` times in one compiled loop, each iteration
    fed by the last (so XLA cannot hoist or merge them), and divides: a jitted call's
    dispatch (flattening the weights, launching; ~0.1-0.3 ms on a 2-core CPU) would
    otherwise be counted once per table entry but only once per whole network.
    """
    module.eval()
    graphdef, state = nnx.split(module)

    def many(st, x):
        def body(_, carry):
            y = nnx.merge(graphdef, st)(x + carry)
            return jnp.sum(y) * 0.0  # a data dependency of value 0
        return jax.lax.fori_loop(0, inner, body, jnp.zeros((), x.dtype))

    fn = jax.jit(many)
    x = jax.random.normal(key, input_shape, jnp.float32)
    median, std = time_call(lambda: fn(state, x), warmup, repeats)
    return median / inner, std / inner


def _measurable(space: SearchSpace, name: str) -> None:
    if not isinstance(space, KeyedSpace):
        raise DnasError(f"space {name!r} has no per-op table keys (it is not a dnas.space.keys.KeyedSpace); measurable spaces: proxylessnas")


def build_lut(space_name: str, *, resolution: int = 224, batch_size: int = 1, warmup: int = 2, repeats: int = 5, inner: int = 10,
              space_kwargs: dict[str, Any] | None = None, seed: int = 0, log: Callable[[str], None] = print) -> LatencyTable:
    """Measures every candidate op at every position of a space (and its fixed parts) on this device.

    Args:
      space_name: a registered space with table keys (``proxylessnas``).
      resolution: input height and width of the measured network.
      batch_size: batch of every measurement.
      warmup, repeats: untimed and timed calls per entry (the median is kept).
      inner: forwards per timed call (one compiled loop; the time is divided by it).
      space_kwargs: the space's constructor arguments.
      seed: initialises the modules and inputs.

    Returns:
      A :class:`LatencyTable` with one entry per distinct key (ms), the settings in ``source``.
    """
    if resolution < 8 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise DnasError("lut build needs resolution >= 8, batch size >= 1, repeats >= 1, warmup >= 0")
    kwargs = dict(space_kwargs or {})
    space = build_space(space_name, int(kwargs.pop("layers", 4)), kwargs)
    _measurable(space, space_name)
    keys, fixed = space.lut_keys(resolution)
    unique = list(dict.fromkeys([k for pos in keys.values() for cands in pos for k in cands if k is not None] + list(fixed)))
    entries: dict[LutKey, LutEntry] = {}
    base = jax.random.key(seed)
    t0 = time.perf_counter()
    for i, k in enumerate(unique):
        module = space.lut_module(k, rngs=nnx.Rngs(jax.random.fold_in(base, i)))
        median, std = time_module(module, (batch_size, *k.input_shape), key=jax.random.fold_in(base, 10**6 + i), warmup=warmup,
                                    repeats=repeats, inner=inner)
        entries[k] = LutEntry(median, std, repeats)
        if (i + 1) % 10 == 0 or i + 1 == len(unique):
            log(f"lut build: {i + 1}/{len(unique)} entries ({time.perf_counter() - t0:.0f} s)")
    settings = {"space": space_name, "space_kwargs": space_kwargs or {}, "resolution": resolution, "warmup": warmup,
                "repeats": repeats, "inner": inner, "statistic": "median", "seed": seed, "jax": jax.__version__}
    return LatencyTable(entries, device_name(), f"xla:{jax.default_backend()}", "float32", batch_size,
                        SOURCE_PREFIX + json.dumps(settings, sort_keys=True))


def table_settings(table: LatencyTable) -> dict[str, Any]:
    """The settings ``dnas lut build`` recorded in the table's ``source``."""
    if not table.source.startswith(SOURCE_PREFIX):
        raise DnasError(f"this table was not made by dnas lut build (source {table.source[:60]!r}); pass --space and --resolution")
    try:
        return json.loads(table.source[len(SOURCE_PREFIX):])
    except json.JSONDecodeError:
        raise DnasError("the table's source field is not the JSON dnas lut build writes") from None


def check_lut(table: LatencyTable, space_name: str, *, resolution: int, archs: int = 20, warmup: int = 2, repeats: int = 5, inner: int = 10,
              space_kwargs: dict[str, Any] | None = None, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measures ``archs`` sampled whole networks end to end and compares them with the table's sums.

    Returns:
      ``{"predicted_ms": [...], "measured_ms": [...], "spearman", "kendall", "mape" (percent),
      "within_10pct" (fraction), "ratio" (mean measured / predicted)}``.
    """
    kwargs = dict(space_kwargs or {})
    space = build_space(space_name, int(kwargs.pop("layers", 4)), kwargs)
    _measurable(space, space_name)
    term = lut_term(space, table, resolution)
    key = jax.random.key(seed)
    predicted, measured = [], []
    for i in range(archs):
        vec = np.asarray(space.sample(jax.random.fold_in(key, i)))
        geno = space.genotype([space.choices[j].candidates[v] for j, v in enumerate(vec)])
        net = space.network(geno, C=geno.stem, layers=0, num_classes=_classes(table), in_channels=3,
                            rngs=nnx.Rngs(jax.random.fold_in(key, 10**6 + i)))
        median, _ = time_module(_Logits(net), (table.batch_size, resolution, resolution, 3), key=jax.random.fold_in(key, 2 * 10**6 + i),
                                warmup=warmup, repeats=repeats, inner=inner)
        predicted.append(float(table_latency(term, vec)))
        measured.append(median)
        log(f"lut check: network {i + 1}/{archs}: table {predicted[-1]:.3f} ms, measured {median:.3f} ms")
    out = latency_metrics(np.asarray(predicted), np.asarray(measured))
    return {"predicted_ms": predicted, "measured_ms": measured, **out, "ratio": float(np.mean(np.asarray(measured) / np.asarray(predicted)))}


def _classes(table: LatencyTable) -> int:
    logits = [k for k in table.entries if k.op == "Logits"]
    return int(logits[0].output_shape[-1]) if logits else 1000


class _Logits(nnx.Module):
    """A network as ``x -> logits`` (what the timer calls)."""

    def __init__(self, net: nnx.Module):
        self.net = net

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net(x).logits
