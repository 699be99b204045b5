"""Run-directory metrics: JSONL lines, and a progress line for people."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _plain(v: Any) -> Any:
    try:
        return float(v) if not isinstance(v, (str, int, bool, list, dict)) else v
    except (TypeError, ValueError):
        return str(v)


class MetricWriter:
    """Appends one JSON object per line to ``path``.

    On resume, :meth:`truncate_after` drops lines past the restored step so the file
    matches what an uninterrupted run would have written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(l + "\n" for l in keep))
        tmp.replace(self.path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]


class Progress:
    """A progress bar with ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, start: int = 0, stream: TextIO = sys.stderr):
        self.total, self.start, self.stream = total, start, stream
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()

    def update(self, step: int, text: str, force_line: bool = False) -> None:
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        if self.tty and not force_line:
            width = 30
            fill = int(width * step / max(self.total, 1))
            self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {step}/{self.total} ETA {eta:6.0f}s {text}\033[K")
        else:
            self.stream.write(f"step {step}/{self.total} ({elapsed:.0f}s, ETA {eta:.0f}s) {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
