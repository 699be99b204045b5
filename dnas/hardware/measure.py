"""Measuring latency on the JAX device this runs on: per-op tables (``dnas lut build``) and
whole sampled networks against the table's sum (``dnas lut check``).

Every measurement jits the module's eval-mode forward (BatchNorm on running statistics)
and runs it ``inner`` times per call; all entries (or networks) are compiled and warmed up
first, then timed in ``repeats`` interleaved rounds, each call ended by
``block_until_ready`` (JAX dispatches asynchronously; without it the clock stops before the
device does), by this process's CPU time on the CPU backend (:data:`CLOCKS`: other jobs'
time on the cores is not counted) and wall time elsewhere. Each keeps a robust statistic
of its repeats (the minimum by default), and a
split-half :func:`noise_check` says when the machine was too loaded for the timings to be
trusted. The table records the settings in its ``source`` field as JSON after ``dnas lut
build``, so ``dnas lut check`` rebuilds the same space at the same resolution.
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


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "min": lambda t: t.min(-1),
    "q25": lambda t: np.quantile(t, 0.25, axis=-1),
    "median": lambda t: np.median(t, axis=-1),
}
"""Per-entry summaries of repeated timings ``f64[..., R] -> f64[...]``. ``min`` is the
default: on a shared CPU the noise is almost all *added* time (preemption, cache and
memory-bandwidth contention), so the fastest of several interleaved repeats is the
closest to the op's own cost; the median moves with the load."""

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""What a timed call is measured by: ``wall`` time (the latency a user sees on a quiet
machine) or this process's ``cpu`` time over all its threads, which does not count the
time other jobs hold the cores. On a loaded CPU the cpu clock ranked 20 whole networks at
0.93 and 0.97 with steady timings where the wall clock gave 0.70-0.94 and was flagged noisy each
time (benchmarks/LATENCY.md); it measures work, not latency, so where XLA runs an op on
several threads at once it can exceed the wall time, and on an accelerator it misses the
device's time entirely. ``auto`` (the default of ``dnas lut build``) is ``cpu`` on the CPU
backend, ``wall`` elsewhere."""


def resolve_clock(clock: str) -> str:
    """``auto`` -> ``cpu`` on JAX's CPU backend, else ``wall``; ``wall``/``cpu`` unchanged."""
    if clock == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "wall"
    if clock not in CLOCKS:
        raise DnasError(f"unknown clock {clock!r}; choose auto or one of {', '.join(CLOCKS)}")
    return clock

NOISE_SPEARMAN = 0.9
"""Split-half rank reliability (Spearman-Brown) under which timings are reported as too noisy to trust."""
NOISE_HALF_DIFF_PCT = 10.0
"""Median relative difference (percent) between the two halves' summaries above which
timings are reported as too noisy to trust."""


def time_call(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, float]:
    """Median and standard deviation in ms of ``fn()`` over ``repeats`` timed calls after
    ``warmup`` untimed ones; each call is waited for with ``block_until_ready``."""
    t = time_interleaved([fn], warmup=max(warmup, 1), repeats=repeats, rng=np.random.default_rng(0))[0]
    return float(np.median(t)), float(np.std(t))


def time_interleaved(fns: list[Callable[[], Any]], *, warmup: int, repeats: int, rng: np.random.Generator,
                     clock: str = "wall") -> np.ndarray:
    """Times every ``fn()`` ``repeats`` times, round-robin: round r calls each function once,
    in an order shuffled by ``rng``.

    Why interleave: timing all repeats of one function back to back lets a burst of load
    from other jobs land on one entry (or one network) alone, which then ranks wrongly;
    round-robin spreads every burst over all entries, so it shifts them together.

    Args:
      fns: zero-argument callables returning JAX arrays (waited for with ``block_until_ready``).
      warmup: untimed calls of each function first (one compiles a function not yet called).
      repeats: timed rounds.
      rng: shuffles the order within each round.
      clock: ``wall`` or ``cpu`` (:data:`CLOCKS`).

    Returns:
      ``f64[len(fns), repeats]`` milliseconds per call.
    """
    if clock not in CLOCKS:
        raise DnasError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    now = CLOCKS[clock]
    for fn in fns:
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times = np.zeros((len(fns), repeats))
    for r in range(repeats):
        for i in rng.permutation(len(fns)):
            t0 = now()
            jax.block_until_ready(fns[i]())
            times[i, r] = (now() - t0) * 1e3
    return times


def time_until_steady(fns: list[Callable[[], Any]], *, warmup: int, repeats: int, max_repeats: int, statistic: str,
                      rng: np.random.Generator, clock: str = "wall") -> np.ndarray:
    """:func:`time_interleaved` for ``repeats`` rounds, then two more rounds at a time while
    :func:`noise_check` finds the timings noisy, up to ``max_repeats`` rounds in all.

    Why: compiling dominates a table's (or a check's) cost and a round costs little, so on
    a loaded machine it is cheaper to time more rounds than to distrust the result; the
    minimum over more rounds finds more of the quiet moments.

    Returns:
      ``f64[len(fns), R]`` milliseconds per call, ``repeats <= R <= max(repeats, max_repeats)``.
    """
    times = time_interleaved(fns, warmup=warmup, repeats=repeats, rng=rng, clock=clock)
    while times.shape[1] + 2 <= max_repeats and noise_check(times, statistic)["noisy"]:
        times = np.concatenate([times, time_interleaved(fns, warmup=0, repeats=2, rng=rng, clock=clock)], axis=1)
    return times


def summarise(times: np.ndarray, statistic: str) -> np.ndarray:
    """``f64[n, R]`` repeated timings -> ``f64[n]`` by ``statistic`` (:data:`STATISTICS`)."""
    if statistic not in STATISTICS:
        raise DnasError(f"unknown timing statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    return STATISTICS[statistic](np.asarray(times, np.float64))


def noise_check(times: np.ndarray, statistic: str) -> dict[str, Any]:
    """Whether repeated timings ``f64[n, R]`` are steady enough to trust.

    The repeats are split into two halves (even and odd rounds) and each half is
    summarised alone: if the timings measure the code and not the load, the halves agree.
    Two numbers: the Spearman correlation of the halves over the n entries, stepped up to
    the full number of repeats by the Spearman-Brown formula ``2r / (1 + r)`` (does the
    *order* survive? it matters most for whole networks, whose spread is narrow) and the
    median relative difference between them (do the *values* survive? it matters for a
    table's entries, which span orders of magnitude, so their order always survives).

    Returns:
      ``{"split_half_spearman", "reliability", "half_diff_pct", "noisy": bool, "why": str}`` (``noisy`` is
      None and the numbers NaN with fewer than 2 repeats or 3 entries).
    """
    times = np.asarray(times, np.float64)
    if times.ndim != 2 or times.shape[1] < 2 or times.shape[0] < 3:
        return {"split_half_spearman": float("nan"), "reliability": float("nan"), "half_diff_pct": float("nan"), "noisy": None,
                "why": "too few repeats (>= 2) or entries (>= 3) to check"}
    a, b = summarise(times[:, 0::2], statistic), summarise(times[:, 1::2], statistic)
    half = float(latency_metrics(a, b)["spearman"])
    # Each half has half the repeats; the Spearman-Brown formula turns the halves' agreement
    # into the reliability of all of them together (what the table or check reports).
    rho = 2 * half / (1 + half) if half > -1 else half
    diff = float(np.median(np.abs(a - b) / np.maximum(np.minimum(a, b), 1e-12)) * 100)
    why = []
    if not rho >= NOISE_SPEARMAN:
        why.append(f"the two halves of the repeats rank the {times.shape[0]} entries alike only to spearman {half:.2f} "
                   f"(reliability {rho:.2f} < {NOISE_SPEARMAN})")
    if not diff <= NOISE_HALF_DIFF_PCT:
        why.append(f"they differ by {diff:.1f} % (median) > {NOISE_HALF_DIFF_PCT:.0f} %")
    return {"split_half_spearman": half, "reliability": rho, "half_diff_pct": diff, "noisy": bool(why), "why": "; ".join(why)}


def compile_forward(module: nnx.Module, input_shape: tuple[int, ...], *, key: jax.Array, inner: int = 10) -> Callable[[], jax.Array]:
    """A zero-argument callable running ``module(x)`` in eval mode ``inner`` times in one
    compiled loop, ``x`` random of ``input_shape`` (with batch); not yet compiled.

    Each iteration is fed by the last (so XLA cannot hoist or merge them). Why a loop: a
    jitted call's dispatch (flattening the weights, launching; ~0.1-0.3 ms on a 2-core
    CPU) would otherwise be counted once per table entry but only once per whole network.
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
    return lambda: fn(state, x)


def time_module(module: nnx.Module, input_shape: tuple[int, ...], *, key: jax.Array, warmup: int, repeats: int,
                inner: int = 10) -> tuple[float, float]:
    """Latency (median, std in ms per forward) of ``module(x)`` alone (:func:`compile_forward`)."""
    median, std = time_call(compile_forward(module, input_shape, key=key, inner=inner), warmup, repeats)
    return median / inner, std / inner


def _measurable(space: SearchSpace, name: str) -> None:
    if not isinstance(space, KeyedSpace):
        raise DnasError(f"space {name!r} has no per-op table keys (it is not a dnas.space.keys.KeyedSpace); measurable spaces: proxylessnas")


def build_lut(space_name: str, *, resolution: int = 224, batch_size: int = 1, warmup: int = 2, repeats: int = 7, inner: int = 10,
              statistic: str = "min", max_repeats: int = 21, clock: str = "auto", space_kwargs: dict[str, Any] | None = None,
              seed: int = 0, log: Callable[[str], None] = print) -> LatencyTable:
    """Measures every candidate op at every position of a space (and its fixed parts) on this device.

    All entries are compiled first, then timed round-robin (:func:`time_interleaved`), so
    load from other jobs spreads over every entry instead of landing on a few; each entry
    keeps ``statistic`` of its repeats, and :func:`noise_check` of the repeats is recorded
    in the table's ``source`` (``lut check`` repeats it) and logged as a warning when the
    timings are too noisy to trust.

    Args:
      space_name: a registered space with table keys (``proxylessnas``).
      resolution: input height and width of the measured network.
      batch_size: batch of every measurement.
      warmup, repeats: untimed calls per entry, then timed rounds over all entries.
      max_repeats: more rounds, two at a time, while the timings are noisy (:func:`time_until_steady`).
      inner: forwards per timed call (one compiled loop; the time is divided by it).
      statistic: summary of the repeats (:data:`STATISTICS`; ``min`` by default).
      clock: ``auto`` (default), ``wall`` or ``cpu`` time (:data:`CLOCKS`).
      space_kwargs: the space's constructor arguments.
      seed: initialises the modules and inputs, and shuffles the rounds.

    Returns:
      A :class:`LatencyTable` with one entry per distinct key (ms), the settings and the
      noise check in ``source``.
    """
    if resolution < 8 or batch_size < 1 or repeats < 1 or warmup < 0 or inner < 1:
        raise DnasError("lut build needs resolution >= 8, batch size >= 1, repeats >= 1, warmup >= 0, inner >= 1")
    summarise(np.zeros((1, 1)), statistic)  # an unknown statistic or clock fails before minutes of compiling
    clock = resolve_clock(clock)
    kwargs = dict(space_kwargs or {})
    space = build_space(space_name, int(kwargs.pop("layers", 4)), kwargs)
    _measurable(space, space_name)
    keys, fixed = space.lut_keys(resolution)
    unique = list(dict.fromkeys([k for pos in keys.values() for cands in pos for k in cands if k is not None] + list(fixed)))
    base = jax.random.key(seed)
    t0 = time.perf_counter()
    fns = []
    for i, k in enumerate(unique):
        module = space.lut_module(k, rngs=nnx.Rngs(jax.random.fold_in(base, i)))
        fns.append(compile_forward(module, (batch_size, *k.input_shape), key=jax.random.fold_in(base, 10**6 + i), inner=inner))
        jax.block_until_ready(fns[-1]())  # compile now, so the progress lines mean something
        if (i + 1) % 10 == 0 or i + 1 == len(unique):
            log(f"lut build: compiled {i + 1}/{len(unique)} entries ({time.perf_counter() - t0:.0f} s)")
    times = time_until_steady(fns, warmup=max(warmup - 1, 0), repeats=repeats, max_repeats=max_repeats, statistic=statistic,
                              rng=np.random.default_rng(seed), clock=clock) / inner
    log(f"lut build: timed {len(unique)} entries x {times.shape[1]} interleaved rounds ({time.perf_counter() - t0:.0f} s)")
    values = summarise(times, statistic)
    # The schema's "mean" holds the chosen statistic (recorded in ``source``), what every reader sums.
    entries = {k: LutEntry(float(v), float(np.std(t)), times.shape[1]) for k, v, t in zip(unique, values, times)}
    noise = noise_check(times, statistic)
    warn_if_noisy(noise, "lut build", log)
    settings = {"space": space_name, "space_kwargs": space_kwargs or {}, "resolution": resolution, "warmup": warmup,
                "repeats": int(times.shape[1]), "inner": inner, "statistic": statistic, "clock": clock, "interleaved": True, "seed": seed, "jax": jax.__version__,
                "noise": _rounded(noise)}
    return LatencyTable(entries, device_name(), f"xla:{jax.default_backend()}", "float32", batch_size,
                        SOURCE_PREFIX + json.dumps(settings, sort_keys=True))


def warn_if_noisy(noise: dict[str, Any], what: str, log: Callable[[str], None]) -> None:
    """Logs one warning line when :func:`noise_check` found the timings too noisy."""
    if noise["noisy"]:
        log(f"dnas: warning: {what}: timings too noisy to trust ({noise['why']}); other jobs are loading this machine: "
            "rerun when it is quieter, or with more --repeats")


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    # NaN (nothing to check) is written as null: JSON has no NaN.
    return {k: ((round(v, 4) if np.isfinite(v) else None) if isinstance(v, float) else v) for k, v in d.items()}


def table_settings(table: LatencyTable) -> dict[str, Any]:
    """The settings ``dnas lut build`` recorded in the table's ``source``."""
    if not table.source.startswith(SOURCE_PREFIX):
        raise DnasError(f"this table was not made by dnas lut build (source {table.source[:60]!r}); pass --space and --resolution")
    try:
        return json.loads(table.source[len(SOURCE_PREFIX):])
    except json.JSONDecodeError:
        raise DnasError("the table's source field is not the JSON dnas lut build writes") from None


def sample_networks(space: SearchSpace, n: int, key: jax.Array) -> np.ndarray:
    """``int32[n, labels]``: ``n`` architectures of ``space``, the i-th drawn with ``fold_in(key, i)``."""
    return np.stack([np.asarray(space.sample(jax.random.fold_in(key, i))) for i in range(n)]).astype(np.int32)


def measure_networks(space: SearchSpace, vecs: np.ndarray, *, resolution: int, batch_size: int, num_classes: int, warmup: int,
                     repeats: int, inner: int, key: jax.Array, max_repeats: int = 0, statistic: str = "min", clock: str = "wall",
                     log: Callable[[str], None] = print) -> np.ndarray:
    """Times whole networks ``vecs int[P, n]`` of a keyed space end to end (eval mode),
    interleaved like the table's entries.

    Returns:
      ``f64[P, R]`` ms per forward (``R >= repeats`` rounds: :func:`time_until_steady`).
    """
    fns = []
    t0 = time.perf_counter()
    for i, vec in enumerate(vecs):
        geno = space.genotype([space.choices[j].candidates[v] for j, v in enumerate(vec)])
        net = space.network(geno, C=geno.stem, layers=0, num_classes=num_classes, in_channels=3, rngs=nnx.Rngs(jax.random.fold_in(key, 10**6 + i)))
        fns.append(compile_forward(_Logits(net), (batch_size, resolution, resolution, 3), key=jax.random.fold_in(key, 2 * 10**6 + i), inner=inner))
        jax.block_until_ready(fns[-1]())
        log(f"lut check: compiled network {i + 1}/{len(vecs)} ({time.perf_counter() - t0:.0f} s)")
    times = time_until_steady(fns, warmup=max(warmup - 1, 0), repeats=repeats, max_repeats=max_repeats, statistic=statistic,
                              rng=np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1))), clock=clock)
    log(f"lut check: timed {len(vecs)} networks x {times.shape[1]} interleaved rounds ({time.perf_counter() - t0:.0f} s)")
    return times / inner


def check_lut(table: LatencyTable, space_name: str, *, resolution: int, archs: int = 20, warmup: int = 2, repeats: int = 7, inner: int = 10,
              statistic: str = "min", max_repeats: int = 21, clock: str = "wall", space_kwargs: dict[str, Any] | None = None,
              seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measures ``archs`` sampled whole networks end to end (:func:`measure_networks`) and
    compares ``statistic`` of their repeats with the table's sums (more rounds, up to
    ``max_repeats``, while the timings are noisy).

    Returns:
      ``{"predicted_ms": [...], "measured_ms": [...], "spearman", "kendall", "mape" (percent),
      "within_10pct" (fraction), "ratio" (mean measured / predicted), "noise"}``: ``noise``
      is :func:`noise_check` of the networks' repeats (logged as a warning when noisy).
    """
    summarise(np.zeros((1, 1)), statistic)
    clock = resolve_clock(clock)
    kwargs = dict(space_kwargs or {})
    space = build_space(space_name, int(kwargs.pop("layers", 4)), kwargs)
    _measurable(space, space_name)
    term = lut_term(space, table, resolution)
    key = jax.random.key(seed)
    vecs = sample_networks(space, archs, key)
    times = measure_networks(space, vecs, resolution=resolution, batch_size=table.batch_size, num_classes=_classes(table), warmup=warmup,
                             repeats=repeats, inner=inner, key=key, max_repeats=max_repeats, statistic=statistic, clock=clock, log=log)
    measured = summarise(times, statistic)
    predicted = np.asarray([float(table_latency(term, v)) for v in vecs])
    noise = {**noise_check(times, statistic), "repeats": int(times.shape[1])}
    warn_if_noisy(noise, "lut check", log)
    out = latency_metrics(predicted, measured)
    return {"predicted_ms": predicted.tolist(), "measured_ms": measured.tolist(), **out, "ratio": float(np.mean(measured / predicted)),
            "noise": _rounded(noise)}


def _classes(table: LatencyTable) -> int:
    logits = [k for k in table.entries if k.op == "Logits"]
    return int(logits[0].output_shape[-1]) if logits else 1000


class _Logits(nnx.Module):
    """A network as ``x -> logits`` (what the timer calls)."""

    def __init__(self, net: nnx.Module):
        self.net = net

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net(x).logits
