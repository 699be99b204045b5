"""Optional TensorBoard event files beside a run's JSONL (``pip install tensorboardX``,
or ``pip install 'dnas[tensorboard]'``); the JSONL files stay the record of truth.

tensorboardX writes event files without TensorFlow or PyTorch; ``tensorboard --logdir
RUN_DIR/tensorboard`` shows them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError

MISSING = ("TensorBoard logging needs the tensorboardX package: pip install tensorboardX "
           "(or pip install 'dnas[tensorboard]'), or run without TensorBoard")
# Bookkeeping keys of a record, not metrics.
_SKIP = frozenset({"step", "epoch", "event"})


def _require() -> Any:
    try:
        import tensorboardX
    except ImportError:
        raise DnasError(MISSING) from None
    return tensorboardX


def available() -> bool:
    """Whether TensorBoard event files can be written (tensorboardX importable)."""
    try:
        _require()
    except DnasError:
        return False
    return True


def scalars(record: Mapping[str, Any], list_names: Sequence[str] | None = None, prefix: str = "") -> dict[str, float]:
    """The numeric values of a JSONL record as ``{tag: value}``.

    Nested dicts become ``a/b`` tags and lists ``a/<i>`` (or ``a/<list_names[i]>``, e.g.
    the op names for softmax(α)); strings, bools and the step/epoch/event keys are skipped.
    """
    out: dict[str, float] = {}
    for k, v in record.items():
        if not prefix and k in _SKIP:
            continue
        tag = f"{prefix}{k}"
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, (int, float)):
            out[tag] = float(v)
        elif isinstance(v, Mapping):
            out.update(scalars(v, list_names, tag + "/"))
        elif isinstance(v, (list, tuple)):
            names = list_names if list_names is not None and len(list_names) == len(v) else range(len(v))
            out.update(scalars(dict(zip((str(n) for n in names), v)), list_names, tag + "/"))
    return out


class TensorBoardWriter:
    """Scalars of JSONL records into one TensorBoard event file in ``logdir``.

    The file is opened at the first write, so a resumed run can first call
    :meth:`purge_after`: TensorBoard then hides the interrupted run's points past the
    restored step, as :meth:`dnas.run.metrics.MetricWriter.truncate_after` does for the JSONL.

    Args:
      logdir: the event-file folder (created).
      name: distinguishes this writer's file from others in ``logdir`` (e.g. ``metrics``,
        ``alpha``); two writers opened in the same second would otherwise share a name.
      list_names: names for list entries (e.g. op names for ``softmax`` lists).

    Raises:
      DnasError: tensorboardX is not installed (one line naming the pip package).
    """

    def __init__(self, logdir: str | Path, name: str = "", list_names: Sequence[str] | None = None):
        self._tbx = _require()
        self.logdir = Path(logdir)
        self.name = name
        self.list_names = list(list_names) if list_names is not None else None
        self._writer: Any = None
        self._purge_step: int | None = None

    def purge_after(self, step: int) -> None:
        """Marks steps after ``step`` of earlier event files as discarded (on resume)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = step + 1

    def _open(self) -> Any:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = self._tbx.SummaryWriter(
                logdir=str(self.logdir), purge_step=self._purge_step, flush_secs=10,
                filename_suffix=f".{self.name}" if self.name else "")
        return self._writer

    def write(self, record: Mapping[str, Any], step: int | None = None) -> None:
        """Writes every scalar of ``record`` at ``step`` (default: ``record["step"]``);
        a record without a step is skipped (TensorBoard needs one)."""
        step = record.get("step") if step is None else step
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            return
        values = scalars(record, self.list_names)
        if not values:
            return
        w = self._open()
        now = time.time()
        for tag, v in values.items():
            if math.isfinite(v) or math.isnan(v):  # NaN shows as a gap; ±inf breaks the axes
                w.add_scalar(tag, v, int(step), walltime=now)
        # Logged steps are seconds apart; flushing each keeps `tensorboard` live and a
        # killed run's file complete.
        w.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
