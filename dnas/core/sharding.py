"""Independent rows of work (architectures, search seeds) split over every device of a mesh,
on one process or several, with one compiled program.

One-shot evaluation, zero-cost scoring and vmapped multi-trial runs all compute one result
per row (an architecture, a run's key) from the row alone and some shared values (the
supernet's weights, a batch). :class:`RowSharded` runs such a function under
``jax.shard_map``: each device takes ``rows_per_device`` rows, the shared values are
replicated, and the results are gathered onto every device (hence every process) at the
end, the only collective of the program. Each device runs the same per-device program
whatever the device count, so a row's result does not depend on how many devices (or
processes) there are.

With several processes (``jax.distributed``) every process passes the *same* rows and
shared values (built from the same seed) and :func:`global_put` lets each supply its own
devices' parts; every process gets every result back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dnas.core.errors import DnasError

__all__ = ["RowSharded", "global_put", "local_mesh"]


def local_mesh(devices: int = 1, axis: str = "rows") -> Mesh:
    """A 1-D mesh named ``axis`` over the first ``devices`` of ``jax.devices()`` (0: all)."""
    available = jax.devices()
    return Mesh(np.array(available[: devices or len(available)]), (axis,))


def global_put(mesh: Mesh, tree: Any, spec: P = P()) -> Any:
    """Places ``tree`` on ``mesh`` with partition ``spec``, from full values that every
    process holds alike.

    Why not ``jax.device_put`` alone: with several processes it cannot target another
    process' devices, so each process builds its own devices' shards from the full value
    (``jax.make_array_from_callback``). PRNG key arrays travel as their key data.
    """
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> Any:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(put, tree)


class RowSharded:
    """``fn(rows, *shared)`` over many rows, split over the devices of ``mesh``.

    Args:
      fn: ``fn(rows [R, ...], *shared) -> pytree of [R, ...]``, the result of each row
        depending on that row and ``shared`` alone (e.g. ``lax.map`` of a per-row
        function; not ``vmap`` of a ``lax.switch``, which runs every branch).
      mesh: a 1-D mesh (its one axis splits the rows); None: the default device alone.
      rows_per_device: ``R``, the rows each device takes per compiled call; a call covers
        ``R * devices`` rows and the last one is padded with copies of the last row.

    Example:
      >>> run = RowSharded(lambda v, w: jax.lax.map(lambda r: r @ w, v), local_mesh(0), 8)
      >>> out = run(np.ones((100, 3)), np.ones(3))   # f32[100], the same on 1 or N devices
    """

    def __init__(self, fn: Callable[..., Any], mesh: Mesh | None, rows_per_device: int):
        if rows_per_device < 1:
            raise DnasError(f"rows per device must be >= 1, got {rows_per_device}")
        self.mesh = mesh if mesh is not None else local_mesh(1)
        if len(self.mesh.axis_names) != 1:
            raise DnasError(f"splitting rows over devices needs a 1-D mesh, got axes {self.mesh.axis_names}")
        self.rows_per_device = rows_per_device
        self.width = rows_per_device * self.mesh.devices.size  # rows per compiled call
        axis = self.mesh.axis_names[0]
        self._fn = fn
        self._rows_spec = P(axis)
        self._jitted: dict[int, Any] = {}
        self._axis = axis

    def _compiled(self, n_shared: int) -> Any:
        if n_shared not in self._jitted:
            mapped = jax.shard_map(self._fn, mesh=self.mesh, in_specs=(self._rows_spec,) + (P(),) * n_shared,
                                   out_specs=self._rows_spec, check_vma=False)
            # Replicated outputs: the gather is part of the program, and every process can
            # read every row afterwards.
            self._jitted[n_shared] = jax.jit(mapped, out_shardings=NamedSharding(self.mesh, P()))
        return self._jitted[n_shared]

    def compile(self, rows: np.ndarray, *shared: Any) -> Any:
        """Compiles the program for rows like ``rows`` (one call's worth is enough) and
        ``shared`` ahead of the first call (to time the compile apart); later calls reuse it."""
        f = self._compiled(len(shared))
        if not hasattr(f, "lower"):  # compiled already
            return f
        rows = np.asarray(rows)
        part = np.resize(rows, (self.width,) + rows.shape[1:])
        shared = tuple(s if _placed(s, self.mesh) else self.put_shared(s) for s in shared)
        self._jitted[len(shared)] = f.lower(global_put(self.mesh, part, self._rows_spec), *shared).compile()
        return self._jitted[len(shared)]

    def put_shared(self, tree: Any) -> Any:
        """``tree`` replicated on the mesh: pass values used by many calls through this once."""
        return global_put(self.mesh, tree)

    def __call__(self, rows: np.ndarray, *shared: Any) -> Any:
        """``fn`` of every row of ``rows`` (``[N, ...]``, the same on every process): a pytree
        of numpy arrays with leading size ``N``, on every process. ``shared`` may be host
        values or arrays from :meth:`put_shared`."""
        rows = np.asarray(rows)
        n = len(rows)
        if n == 0:
            raise DnasError("no rows to compute: pass at least one")
        f = self._compiled(len(shared))
        shared = tuple(s if _placed(s, self.mesh) else self.put_shared(s) for s in shared)
        outs = []
        for start in range(0, n, self.width):
            part = rows[start : start + self.width]
            if len(part) < self.width:
                part = np.concatenate([part, np.repeat(part[-1:], self.width - len(part), 0)])
            outs.append(f(global_put(self.mesh, part, self._rows_spec), *shared))
        outs = jax.device_get(outs)
        return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *outs)


def _placed(tree: Any, mesh: Mesh) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return bool(leaves) and all(isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
                                for x in leaves)
