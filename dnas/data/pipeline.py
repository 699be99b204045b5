"""The input pipeline of a run: its batches as a pure function of ``(seed, step)``, read in
the step loop (``loader="memory"``) or ahead of it by grain's worker threads (``"grain"``).

A run draws its batches from one or more :class:`Stream` s (the search: weight and α
batches; retraining: one). Batch ``k`` of a stream is ``x[subset[indices(k)]]``, where
``indices`` is the run's :class:`~dnas.data.datasets.StepIndices` (a per-epoch permutation
of ``(key, epoch)``); an image decoded from a file (:class:`~dnas.data.folder.ImageFiles`)
is augmented with a generator seeded by ``(seed, stream, step, row)``, ``row`` its place in
the global batch. So batch ``k`` is the same on every run, on resume (a run restarted at
step ``k`` reads from ``k``) and whatever the number of processes: each process reads only
the ``rows`` of the global batch that its devices take (``dnas.run.parallel.host_rows``),
and the processes' rows of an epoch are disjoint and cover it.

``"grain"`` (https://github.com/google/grain) runs the same reads in a pool of threads that
keeps ``prefetch`` batches ready: in-memory arrays are gathered one batch per task, files
decoded one image per task (Pillow releases the GIL while it decodes and resizes), then
stacked in order. Both loaders give identical batches (tested).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator, Sequence

import numpy as np

from dnas.core.errors import DnasError
from dnas.data.datasets import StepIndices
from dnas.data.folder import ImageFiles

LOADERS = ("memory", "grain")


def check_loader(loader: str) -> None:
    """Refuses an unknown loader, or ``"grain"`` where grain is not installed (it is an
    optional dependency, ``pip install 'dnas[pipeline]'``: the default loader needs none of it)."""
    if loader not in LOADERS:
        raise DnasError(f"config.pipeline.loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    if loader == "grain" and importlib.util.find_spec("grain") is None:
        raise DnasError("config.pipeline.loader='grain' needs grain: pip install grain (or pip install 'dnas[pipeline]')")


@dataclasses.dataclass(frozen=True)
class Stream:
    """One sequence of batches: the examples ``(x[subset], y[subset])`` in the order that
    ``indices`` gives each step.

    Attributes:
      x: images ``[N, H, W, C]``, an array or an :class:`~dnas.data.folder.ImageFiles`
        (decoded with its training transform).
      y: labels ``int[N]``.
      indices: ``step -> int[batch]`` positions into ``subset`` (or ``range(N)``).
      subset: which examples of ``x`` the stream draws from (e.g. DARTS' weight or α
        split); None: all.
    """

    x: np.ndarray | ImageFiles
    y: np.ndarray
    indices: StepIndices
    subset: np.ndarray | None = None

    def rows_at(self, step: int, rows: slice) -> np.ndarray:
        """Indices into ``x`` of ``rows`` of the global batch at ``step``."""
        pos = self.indices(step)[rows]
        return pos if self.subset is None else self.subset[pos]


def _example(streams: Sequence[Stream], seed: int, step: int, row: int) -> tuple[np.ndarray, ...]:
    """Row ``row`` of the global batch at ``step`` of every stream: ``(x0, y0, x1, y1, ...)``."""
    out: list[np.ndarray] = []
    for s, stream in enumerate(streams):
        i = int(stream.rows_at(step, slice(row, row + 1))[0])
        if isinstance(stream.x, ImageFiles):
            out.append(stream.x.load(i, np.random.default_rng((seed, s, step, row))))
        else:
            out.append(np.asarray(stream.x[i]))
        out.append(np.asarray(stream.y[i]))
    return tuple(out)


def _stack(examples: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack(column) for column in zip(*examples))


def read_batch(streams: Sequence[Stream], step: int, rows: slice, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``rows`` of the global batch at ``step`` of every stream, ``(x0, y0, x1, y1, ...)``
    with a leading axis of ``rows.stop - rows.start``; read in the calling thread."""
    if any(isinstance(s.x, ImageFiles) for s in streams):
        return _stack([_example(streams, seed, step, r) for r in range(rows.start, rows.stop)])
    out: list[np.ndarray] = []
    for stream in streams:
        i = stream.rows_at(step, rows)
        out += [np.asarray(stream.x[i]), np.asarray(stream.y[i])]
    return tuple(out)


def step_batches(
    streams: Sequence[Stream], rows: slice, start: int, stop: int, *, loader: str = "memory", seed: int = 0,
    workers: int = 4, prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, ...]]:
    """The batches of steps ``start .. stop - 1`` in order, each :func:`read_batch` of that step.

    Args:
      streams: what each batch holds.
      rows: this process' rows of the global batch (``dnas.run.parallel.host_rows``).
      start, stop: the steps (a resumed run starts at its restored step).
      loader: ``"memory"`` reads each batch when asked; ``"grain"`` reads ahead with
        ``workers`` threads, keeping ``prefetch`` batches ready.
      seed: seeds the augmentation of images decoded from files.
    Returns:
      an iterator; call its ``close()`` (grain's) when stopping early, to end the threads.
    Raises:
      DnasError: an unknown loader or non-positive ``workers`` / ``prefetch``.
    """
    check_loader(loader)
    if loader == "memory":
        return (read_batch(streams, step, rows, seed) for step in range(start, stop))
    if int(workers) < 1 or int(prefetch) < 1:
        raise DnasError(f"config.pipeline.workers and prefetch must be >= 1 for the grain loader, got {workers} and {prefetch}")
    import grain  # optional (pip install 'dnas[pipeline]'); check_loader has said so before a run starts

    per = rows.stop - rows.start
    if any(isinstance(s.x, ImageFiles) for s in streams):
        # One image per task: decoding dominates, and a batch is many images.
        ds = grain.MapDataset.range(start * per, stop * per).map(lambda e: _example(streams, seed, e // per, rows.start + e % per))
        options = grain.ReadOptions(num_threads=int(workers), prefetch_buffer_size=int(prefetch) * per)
        return iter(ds.to_iter_dataset(options).batch(per, batch_fn=_stack))
    # In-memory arrays: one vectorised gather per batch (a task per example costs more in
    # Python than the copy it does).
    ds = grain.MapDataset.range(start, stop).map(lambda step: read_batch(streams, step, rows, seed))
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=int(workers), prefetch_buffer_size=int(prefetch))))
