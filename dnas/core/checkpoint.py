"""Orbax checkpoints of everything a resume needs.

A checkpoint holds the whole :class:`~dnas.search.state.SearchState` (or a training state):
step, α, weights, BatchNorm statistics, both optimizer states and the PRNG key. The data
position needs no extra field: batches are a pure function of ``(key, step)``. Orbax
writes each step into a temporary folder and renames it when complete, so a crash never
leaves a half-written checkpoint that looks whole.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dnas.core.errors import DnasError


def _to_savable(tree: Any) -> Any:
    """Typed PRNG keys -> raw ``uint32`` data (orbax stores plain arrays)."""
    return jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree
    )


def _from_savable(tree: Any, like: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x, ref: jax.random.wrap_key_data(x) if isinstance(ref, jax.Array) and jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key) else x,
        tree,
        like,
    )


def _is_closed_loop_noise(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _drop_item_metadata_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Metadata file does not exist")


def _silence_item_metadata_warning() -> None:
    """Drops orbax's "Metadata file does not exist: <step>/default/_CHECKPOINT_METADATA".

    Why: reading one item of a step with ``PyTreeCheckpointer`` (as host numpy arrays,
    :meth:`Checkpointer.restore_fields`) looks for the step-level metadata file inside the
    item folder, where the manager never writes it; the read is complete without it, but
    every ``dnas eval`` and one-shot estimator printed the warning. Only that message of the
    ``absl`` logger is dropped, once per process.
    """
    log = logging.getLogger("absl")
    if _drop_item_metadata_warning not in log.filters:
        log.addFilter(_drop_item_metadata_warning)


def _silence_abandoned_reads() -> None:
    """Drops the "Event loop is closed" errors of reads a failed restore abandoned.

    Why: orbax runs a restore's reads with ``asyncio.gather`` in a fresh event loop and
    closes that loop as soon as the first read fails; the reads still in flight in
    TensorStore complete later and call back into the closed loop, so a damaged checkpoint
    printed our one error line and then, racily, an asyncio traceback (sometimes before the
    failure reached our ``except``). So the hooks are wrapped before each restore (once per
    process, or again where a test harness put its own back); only that exact error is
    dropped, through either hook it can surface by.
    """
    if getattr(sys.unraisablehook, "_dnas", False):
        return
    old_unraisable, old_thread = sys.unraisablehook, threading.excepthook

    def unraisable(args: Any) -> None:
        if not _is_closed_loop_noise(args.exc_value):
            old_unraisable(args)

    def thread_hook(args: Any) -> None:
        if not _is_closed_loop_noise(args.exc_value):
            old_thread(args)

    unraisable._dnas = thread_hook._dnas = True  # type: ignore[attr-defined]
    sys.unraisablehook, threading.excepthook = unraisable, thread_hook


class Checkpointer:
    """Periodic, atomic checkpoints in ``directory`` (keeps the newest ``keep``).

    Args:
      directory: checkpoint folder (created if missing).
      keep: number of checkpoints kept.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Writes ``state`` at ``step`` (synchronously; returns when it is on disk)."""
        self._manager.save(int(step), args=ocp.args.StandardSave(_to_savable(state)), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Reads the checkpoint at ``step`` into the structure (and shardings) of ``like``."""
        savable = _to_savable(like)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)), savable
        )
        _silence_abandoned_reads()  # before the read: the noise can come before our except clause runs
        try:
            restored = self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged folder
            raise DnasError(
                f"checkpoint {step} in {str(self.directory)!r} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                f"move {str(self.directory / str(step))!r} aside to resume from an older checkpoint"
            ) from None
        return _from_savable(restored, like)

    def restore_fields(self, step: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Reads only the named top-level fields of the checkpoint at ``step`` (e.g. a
        search state's ``alpha``, ``weights`` and ``stats``, without the optimizer states,
        whose structure depends on the run's optimizer settings) into the structures of
        ``fields`` (concrete or ``jax.ShapeDtypeStruct`` leaves).

        The checkpoint is read as stored (nested dicts of numpy arrays, on every process
        alike) and each target leaf is found by its key path; a missing or differently shaped leaf is one DnasError line.
        """
        _silence_abandoned_reads()  # before the read: the noise can come before our except clause runs
        _silence_item_metadata_warning()
        try:
            # Read as host numpy arrays, not with the shardings stored beside the values:
            # those name the saving run's devices, which a reader of several processes
            # (dnas launch -- eval) or with other devices does not have ("no addressable shards").
            item = self.directory / str(int(step)) / "default"
            reader = ocp.PyTreeCheckpointer()
            meta = reader.metadata(item).item_metadata
            as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), getattr(meta, "tree", meta))
            raw = reader.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged folder
            raise DnasError(
                f"checkpoint {step} in {str(self.directory)!r} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                f"move {str(self.directory / str(step))!r} aside to use an older checkpoint"
            ) from None
        out = {}
        for name, like in fields.items():
            leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
            values = []
            for path, ref in leaves:
                node: Any = raw.get(name) if isinstance(raw, dict) else None
                for k in path:
                    key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
                    if isinstance(node, dict):
                        node = node.get(key, node.get(str(key)))
                    elif isinstance(node, (list, tuple)) and isinstance(key, int) and key < len(node):
                        node = node[key]
                    else:
                        node = None
                if node is None or np.shape(node) != np.shape(ref):
                    raise DnasError(
                        f"checkpoint {step} in {str(self.directory)!r} has no {name}{jax.tree_util.keystr(path)} of shape "
                        f"{np.shape(ref)}; it was written by another network than this config builds"
                    )
                values.append(jnp.asarray(node, dtype=ref.dtype))
            out[name] = jax.tree_util.tree_unflatten(treedef, values)
        return out

    def close(self) -> None:
        """Releases orbax's resources (call once the checkpointer is no longer needed)."""
        self._manager.close()


def resume(ckpt: Checkpointer, state: Any, writers: tuple = (), log=print) -> Any:
    """Restores the newest checkpoint into ``state`` (if any) and truncates metric files
    past it, so a resumed run's files match an uninterrupted run's."""
    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, state)
        log(f"resuming {ckpt.directory.parent} from step {latest}")
    for w in writers:
        w.truncate_after(int(state.step))
    return state
