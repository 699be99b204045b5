"""Run-directory metrics: JSONL lines (optionally mirrored into TensorBoard event files),
and a progress line for people (:class:`dnas.run.progress.Progress`, re-exported here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from dnas.core.errors import DnasError
from dnas.core.io import atomic_write, read_text
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
        keep = [line for line, r in self._lines() if not isinstance(r.get("step", 0), (int, float)) or r.get("step", 0) <= step]
        atomic_write(self.path, "".join(l + "\n" for l in keep))

    def read(self) -> list[dict[str, Any]]:
        """All records written so far (see :meth:`_lines` for a damaged file)."""
        return [r for _, r in self._lines()]

    def _lines(self) -> list[tuple[str, dict[str, Any]]]:
        """``(line, record)`` per line. A last line cut short (the process was killed while
        writing it) is dropped; any other line that is not a JSON object is one DnasError
        naming the file and line (a resume then stops before changing the file)."""
        if not self.path.exists():
            return []
        lines = [l for l in read_text(self.path, "metrics file").splitlines() if l.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    break  # torn by a kill mid-write: never a whole record
                record = None
            if not isinstance(record, dict):
                raise DnasError(f"{str(self.path)!r} line {i + 1} is not a JSON object; is it a dnas metrics file? "
                                "(move it aside to resume without it)")
            out.append((line, record))
        return out

    def close(self) -> None:
        """Closes the TensorBoard event file, if any (the JSONL is closed after each write)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
