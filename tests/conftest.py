"""Session-wide test setup: 4 fake CPU devices, a persistent compilation cache, and the
one way tests reach the shared data folder (:func:`require_shared`).

XLA compile time dominates this suite on CPU; the cache lets repeated compilations of
the same program (across tests and across runs) load from disk.
"""

import os
from collections.abc import Callable
from pathlib import Path

# LLVM's optimisation passes are most of an XLA:CPU compile, and the tests' programs run a
# few steps on tiny inputs: unoptimised code compiles in ~30 % less CPU time (test_bilevel:
# 367 s against 519 s of CPU) and runs slower only where a test runs many steps, which the
# end-to-end tests do in subprocesses that keep the default level.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
)

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.environ.get("DNAS_TEST_JAX_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

TINY_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


@pytest.fixture(scope="session")
def tiny_ops():
    """A 4-op DARTS subset (zero, pool, skip, conv): every op kind, small programs."""
    return TINY_OPS


SHARED_ENV = "DNAS_TEST_SHARED_DATA"
"""Overrides where the tests look for the shared data folder (default: ``../shared/data``
beside the repository, :func:`dnas.data.datasets.shared_data_root`); point it at a missing
folder to see what the suite does without the data."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _shared_root() -> Path:
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    from dnas.data.datasets import shared_data_root

    return shared_data_root()


def _require_shared(*parts: str, why: str = "the test checks against this real data") -> str:
    path = _shared_root().joinpath(*parts)
    if path.exists():
        return str(path)
    msg = f"shared test data {'/'.join(parts)!r} is absent from {_shared_root()}: {why}"
    if _in_ci():
        # CI must run every real-data check: there a missing folder is a broken setup, not a
        # reason to report the suite green with these tests quietly skipped.
        pytest.fail(f"{msg}; CI is set, so a missing shared folder is a failure (mount it)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def require_shared() -> Callable[..., str]:
    """``require_shared(*parts, why=...) -> str``: the path of ``<shared data>/<parts>``.

    When it is absent: ``pytest.fail`` if the environment variable ``CI`` is set (true, 1
    or yes), else ``pytest.skip`` with a reason naming what is missing, where it was looked
    for, and ``why`` the test needs it. Tests reach the shared data folder only through
    this, so a missing folder never passes silently in CI."""
    return _require_shared
