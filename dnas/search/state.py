"""SearchState: everything a bi-level search step reads and writes, as one pytree."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from dnas.space.mixed import Alpha
from dnas.core.types import PRNGKey


M = TypeVar("M", bound=nnx.Module)


def build_jitted(ctor: Callable[[nnx.Rngs], M], key: PRNGKey) -> M:
    """Builds a module inside one ``jax.jit``: ``ctor(nnx.Rngs(params=key))``.

    Why: built eagerly, a supernet's initialisation is thousands of small random draws,
    each dispatched (and, for every new shape, compiled) on its own: the DARTS search
    network at C=8 with 5 cells took 34 s to build on a 2-core CPU, against ~11 s here
    (one trace, one compile without LLVM optimisation) and well under a second when the
    persistent compilation cache already holds the program.
    The parameters equal the eager build's up to float32 rounding (``jax.random`` draws
    the same bits; the compiled program may round the bits-to-float scaling differently,
    |difference| < 1e-7).

    Args:
      ctor: builds the module from an ``nnx.Rngs``; must not keep the ``Rngs``.
      key: the ``params`` stream key.
    Returns:
      the module, its arrays concrete.
    """
    box: dict[str, nnx.GraphDef] = {}

    def init(k: PRNGKey) -> nnx.State:
        graphdef, state = nnx.split(ctor(nnx.Rngs(params=k)))
        box["graphdef"] = graphdef
        return state

    # The init program runs once: compile it without LLVM optimisations (C=8, 5 cells:
    # 9.7 s instead of 38.7 s; eager construction took 33.7 s).
    compiled = jax.jit(init).lower(key).compile(compiler_options={"xla_backend_optimization_level": 0})
    state = compiled(key)
    del compiled
    # The init compile's freed heap would otherwise stay resident under the step compile
    # that follows and lift the run's peak memory (benchmarks/RESULTS.md).
    release_free_memory()
    return nnx.merge(box["graphdef"], state)


_YNN_OPTION, _YNN_REDUCE = "xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_REDUCE"


def step_compiler_options(opt_level: int | None = None) -> dict[str, Any]:
    """XLA compile options for the big training/search step programs.

    On CPU the LLVM backend dominates compile time, and its default optimisation level
    (3) buys nothing measurable for these programs: the DARTS search step at C=16, 8
    cells compiled in 63 s at level 1 against 94 s at level 3, with the same step time
    (``benchmarks/RESULTS.md``). Level 0 is 5x slower to run.

    On CPU it also keeps XLA's YNNPACK library fusions to reductions
    (``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE``; XLA's default
    also hands it single dots and convolutions). Why: loading a program from the persistent
    compilation cache looks up each YNNPACK fusion's HLO instruction by a linear scan of
    the whole module, so the warm start grows with (YNNPACK fusions x instructions). At
    C=16, 8 cells this takes the search step from 2000 to 1541 YNNPACK fusions and its warm
    load from 22.7-26.3 s to 17.8-21.2 s (alternating processes), with the same step time
    (interleaved medians: 4.14 s against 4.32 s at C=8/5 cells/batch 32, 5.91 s against
    6.66 s at C=16/8 cells/batch 16) and the same cold compile. Reductions stay with
    YNNPACK because it runs them on all cores: without any YNNPACK fusion the step was
    12-45 % slower. Skipped where the jaxlib does not know the option, or where
    ``XLA_FLAGS`` already sets it (the user's choice wins).
    Other backends get ``{}``.

    Args:
      opt_level: ``xla_backend_optimization_level`` to use on CPU (default 1).
    Returns:
      keyword options for ``jax.jit(..., compiler_options=...)``.
    """
    if jax.default_backend() != "cpu":
        return {}
    opts: dict[str, Any] = {"xla_backend_optimization_level": 1 if opt_level is None else int(opt_level)}
    if _YNN_OPTION not in os.environ.get("XLA_FLAGS", "") and _cpu_accepts(_YNN_OPTION, _YNN_REDUCE):
        opts[_YNN_OPTION] = _YNN_REDUCE
    return opts


@functools.cache
def _cpu_accepts(option: str, value: str) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``option=value`` (probed on a tiny program)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(jnp.zeros((), jnp.float32)).compile()
    except RuntimeError:  # JaxRuntimeError (XlaRuntimeError in older jaxlib): unknown option or value
        return False
    return True


def release_free_memory() -> bool:
    """Hands memory the process has freed back to the OS (glibc ``malloc_trim``).

    XLA's CPU compiler allocates gigabytes while compiling a supernet step and frees
    them afterwards, but glibc keeps the freed pages mapped, so the process's resident
    memory stays at the compile peak for the whole run. Call it between compiling a big
    program and running it (:func:`compile_then_trim`) and once after the first step.
    A no-op (returns False) where glibc is not available.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def compile_then_trim(jitted: Any, *args: Any) -> Callable[..., Any]:
    """Compiles a ``jax.jit`` function ahead of time for ``args``, then releases the
    compiler's freed heap (:func:`release_free_memory`) before the program first runs.

    Why: compiled on its first call, the step's buffers are allocated on top of the
    compile's freed but still resident heap, so the run's peak memory is compile leftovers
    plus one step. Trimmed in between, the peak is the compile's own (DARTS C=8, 5 cells,
    batch 32, first order on a 2-core CPU: peak RSS incl. compile 2.21 -> 1.90 GB, and
    2.32 GB before :func:`build_jitted` trimmed too; ``benchmarks/RESULTS.md``).

    Args:
      jitted: the ``jax.jit``-wrapped function.
      *args: example arguments: the shapes, dtypes and shardings of every later call.
    Returns:
      the compiled executable; call it as ``jitted`` (donation included) with arguments
      of those shapes, dtypes and shardings.
    """
    compiled = jitted.lower(*args).compile()
    release_free_memory()
    return compiled


@struct.dataclass
class SearchState:
    """The search state (a pytree; checkpoint it whole).

    Attributes:
      step: ``int32[]`` number of completed search steps.
      alpha: ``nnx.State`` of :class:`~dnas.space.mixed.Alpha` (architecture logits per label).
      weights: ``nnx.State`` of ``nnx.Param``.
      stats: ``nnx.State`` of ``nnx.BatchStat`` (BatchNorm running averages).
      w_opt: weight optimizer state.
      a_opt: α optimizer state.
      rng: base PRNG key; step ``t`` uses ``fold_in(rng, t)``.
    """

    step: jax.Array
    alpha: nnx.State
    weights: nnx.State
    stats: nnx.State
    w_opt: optax.OptState
    a_opt: optax.OptState
    rng: PRNGKey


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """``(graphdef, alpha, weights, stats)`` of a supernet in training mode.

    Split once, then run plain ``jax.jit`` over the pure pytrees (the fast functional form;
    DESIGN.md measured 53 ms vs 449 ms dispatch for ``nnx.jit``).
    """
    model.train()
    return nnx.split(model, Alpha, nnx.Param, nnx.BatchStat)  # type: ignore[return-value]


def init_search_state(
    model: nnx.Module, w_optimizer: optax.GradientTransformation, a_optimizer: optax.GradientTransformation, *, key: PRNGKey
) -> tuple[nnx.GraphDef, SearchState]:
    """Splits ``model`` and initialises both optimizers.

    Returns:
      ``(graphdef, state)``; pass ``graphdef`` to :func:`dnas.search.bilevel.make_search_step`.
    """
    graphdef, alpha, weights, stats = split_model(model)
    state = SearchState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        alpha=alpha,
        weights=weights,
        stats=stats,
        w_opt=w_optimizer.init(weights),
        a_opt=a_optimizer.init(alpha),
        rng=key,
    )
    return graphdef, state


def alpha_dict(alpha: nnx.State) -> dict[str, Any]:
    """``{label: logits}`` from the α state (the supernet keeps α under ``alpha``)."""
    return dict(nnx.to_pure_dict(alpha)["alpha"])
