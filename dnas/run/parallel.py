"""Data parallelism with JAX's own sharding: one mesh axis ``data``, batch split, state
replicated. Multi-host runs call ``jax.distributed.initialize()`` under a launcher.

The step function needs no change: ``jax.jit`` over a batch sharded on ``P('data')`` and a
replicated state computes global means (loss, BatchNorm statistics) across devices, and
gradients of replicated parameters come out already reduced.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dnas.core.errors import DnasError

_LAUNCHER_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when a multi-host launcher is detected.

    Returns True if it initialised. Detection: a coordinator address, SLURM, Open MPI or a
    TPU pod environment. Single-process runs are untouched.
    """
    if any(v in os.environ for v in _LAUNCHER_VARS) and os.environ.get("DNAS_NO_DISTRIBUTED") != "1":
        jax.distributed.initialize()
        return True
    return False


def make_mesh(devices: int = 0) -> Mesh:
    """A 1-D ``('data',)`` mesh over all devices (``devices=0``) or the first ``devices``."""
    available = jax.devices()
    n = len(available) if devices == 0 else devices
    if not 1 <= n <= len(available):
        raise DnasError(f"asked for {devices} devices but {len(available)} are available; set config.devices to 0 (all) or fewer")
    return Mesh(np.array(available[:n]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (the state)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over ``data``."""
    return NamedSharding(mesh, P("data"))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places ``tree`` replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def host_rows(n_global: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The rows of a global batch of ``n_global`` that this host feeds (contiguous, equal)."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if n_global % pc:
        raise DnasError(f"batch of {n_global} does not split over {pc} hosts; pick a batch_size divisible by {pc}")
    per = n_global // pc
    return slice(pi * per, (pi + 1) * per)


def shard_batch(mesh: Mesh, tree: Any, *, global_batch: bool = False) -> Any:
    """Places batch arrays on the mesh, split on the batch axis.

    Args:
      mesh: the ``('data',)`` mesh.
      tree: arrays with a leading batch axis.
      global_batch: the arrays are the whole global batch, built identically on every host
        (as dnas' deterministic ``(key, step)`` batches are): each host keeps only its rows
        (:func:`host_rows`), so no example is fed twice. False: the arrays are this host's
        part already.
    """
    sharding = batch_sharding(mesh)
    n = mesh.devices.size // jax.process_count()

    def put(x: np.ndarray) -> jax.Array:
        x = np.asarray(x)
        if global_batch and jax.process_count() > 1:
            x = x[host_rows(x.shape[0])]
        if x.shape[0] % n:
            raise DnasError(f"batch of {x.shape[0]} does not split over {n} local devices; pick a batch_size divisible by {n}")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(put, tree)
