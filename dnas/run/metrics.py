"""Run-directory metrics: JSONL lines (optionally mirrored into TensorBoard event files),
and a progress line for people (:class:`dnas.run.progress.Progress`, re-exported here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from dnas.run.parallel import is_primary
from dnas.run.tensorboard import TensorBoardWriter  # optional dependency, imported only when asked


def _plain(v: Any) -> Any:
    try:
        return float(v) if not isinstance(v, (str, int, bool, list, dict)) else v
    except (TypeError, ValueError):
        return str(v)


class MetricWriter:
    """Appends one JSON object per line to ``path``.

    On resume, :meth:`truncate_after` drops lines past the restored step so the file
    matches what an uninterrupted run would have written.

    In a multi-process run only process 0 writes (and truncates); every process may read.
    Its metrics are the global ones already (the jitted step reduces over all processes).

    Args:
      path: the JSONL file.
      tensorboard_dir: also write each record's scalars as TensorBoard events there
        (one event file per writer, named after ``path``); needs tensorboardX, else
        :class:`~dnas.core.errors.DnasError` here, before the run starts.
      list_names: names for list entries in TensorBoard tags (e.g. the op names for
        ``alpha.jsonl``'s softmax lists).
    """
    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None,
                 list_names: Sequence[str] | None = None):
        self.path = Path(path)
        self.tensorboard = None
        self.writes = is_primary()
        if tensorboard_dir is not None and self.writes:
            self.tensorboard = TensorBoardWriter(tensorboard_dir, name=self.path.stem, list_names=list_names)

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` (values made JSON-plain) and mirrors it to TensorBoard."""
        if not self.writes:
            return
        plain = {k: _plain(v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(plain) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.write(plain)

    def truncate_after(self, step: int) -> None:
        """Drops records past ``step`` (TensorBoard: hides them in the viewer)."""
        if not self.writes:
            return
        if self.tensorboard is not None:
            self.tensorboard.purge_after(step)
        if not self.path.exists():
            return
        keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(l + "\n" for l in keep))
        tmp.replace(self.path)

    def read(self) -> list[dict[str, Any]]:
        """All records written so far."""
        if not self.path.exists():
            return []
        return [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]

    def close(self) -> None:
        """Closes the TensorBoard event file, if any (the JSONL is closed after each write)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
