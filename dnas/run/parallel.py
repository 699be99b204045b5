"""Data parallelism with JAX's own sharding: one mesh axis ``data``, batch split, state
replicated; several processes (hosts) through JAX's own runtime (``jax.distributed``).

The step function needs no change: ``jax.jit`` over a batch sharded on ``P('data')`` and a
replicated state computes global means (loss, BatchNorm statistics) across devices, and
gradients of replicated parameters come out already reduced. With several processes the
mesh spans every process' devices (``jax.devices()``), each process feeds the rows of the
global batch on its own devices (:func:`host_rows`), and the jitted step's collectives run
across processes (gloo on CPU, NCCL on GPU), so metrics come out reduced over all of them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dnas.core.errors import DnasError
from dnas.core.sharding import global_put

LAUNCH_ENV = ("DNAS_COORDINATOR_ADDRESS", "DNAS_NUM_PROCESSES", "DNAS_PROCESS_ID")
"""What ``dnas launch`` sets in each child: the coordinator (process 0's ``host:port``), the
number of processes and this one's index."""

# Environments in which jax.distributed.initialize() finds its arguments on its own.
_LAUNCHER_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize`` when this process is one of several.

    Returns True if it initialised. Under ``dnas launch`` (:data:`LAUNCH_ENV`) the
    coordinator, process count and index are passed explicitly (cluster auto-detection off,
    so a launch inside a SLURM allocation still means this machine's processes); under
    SLURM, Open MPI, a TPU pod or with ``JAX_COORDINATOR_ADDRESS`` JAX detects them itself.
    ``DNAS_NO_DISTRIBUTED=1`` keeps a process alone (e.g. a one-process job inside an
    allocation). Call it before any JAX computation; a second call is a no-op.
    """
    if os.environ.get("DNAS_NO_DISTRIBUTED") == "1" or jax.distributed.is_initialized():
        return False
    if os.environ.get(LAUNCH_ENV[0]):
        try:
            n, i = int(os.environ[LAUNCH_ENV[1]]), int(os.environ[LAUNCH_ENV[2]])
        except (KeyError, ValueError):
            raise DnasError(f"{LAUNCH_ENV[0]} is set, so {LAUNCH_ENV[1]} and {LAUNCH_ENV[2]} must be integers (dnas launch sets all three)") from None
        jax.distributed.initialize(os.environ[LAUNCH_ENV[0]], n, i, cluster_detection_method="deactivate")
        return True
    if any(v in os.environ for v in _LAUNCHER_VARS):
        jax.distributed.initialize()
        return True
    return False


def is_primary() -> bool:
    """Whether this is process 0, the one that writes the run directory (all processes
    compute; all take part in checkpoints, which orbax coordinates)."""
    return jax.process_index() == 0


def primary_agrees(ok: bool) -> bool:
    """Process 0's ``ok`` on every process (a barrier); ``ok`` itself when alone.

    Why: process 0 alone opens the run directory; the others must wait until it has (its
    ``config.json`` is then on disk) and must stop too when it refused, not hang in the
    first collective waiting for a peer that has left.
    """
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok, np.int32)))


def from_primary(value: np.ndarray) -> np.ndarray:
    """Process 0's ``value`` on every process; ``value`` itself when alone.

    Why: decisions read from the shared run directory (which chunks are done) must be the
    same on every process, or they would run different programs and wait for each other
    forever; process 0's reading is the one that counts.
    """
    value = np.asarray(value)
    if jax.process_count() == 1:
        return value
    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def collectives_in_conditionals_ok() -> bool:
    """Whether a program may hold cross-device collectives inside ``lax.cond``/``switch``
    branches (the fused pass executor, :mod:`dnas.search.plans`, computes its gradients there).

    False on the CPU platform with several processes. Why: XLA:CPU (jaxlib 0.10.2) runs a
    conditional's thunks concurrently with the collectives beside it, so two processes can
    issue their all-reduces in different orders; gloo then aborts with "Received data size
    doesn't match expected size. Is there a distributed collective mismatch". Seen on
    the NB201 smoke search as 2 processes: every run aborted within its first steps, and ran
    through with the sequential executor, whose program has no conditional. One process
    (any number of devices) and GPU/TPU are unaffected.
    """
    return not (jax.process_count() > 1 and jax.default_backend() == "cpu")


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
    """Places ``tree`` replicated on the mesh, from full values every process holds alike
    (built from the same seed): :func:`dnas.core.sharding.global_put` with no partition."""
    return global_put(mesh, tree)


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
        if global_batch and jax.process_count() > 1:
            x = x[host_rows(len(x))]  # before np.asarray: a folder's images decode only for this host's rows
        x = np.asarray(x)
        if x.shape[0] % n:
            raise DnasError(f"batch of {x.shape[0]} does not split over {n} local devices; pick a batch_size divisible by {n}")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(put, tree)
