"""Session-wide test setup: 4 fake CPU devices and a persistent compilation cache.

XLA compile time dominates this suite on CPU; the cache lets repeated compilations of
the same program (across tests and across runs) load from disk.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

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
