"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every file a run writes besides its checkpoints (``config.json``, ``genotype.json``,
``result.json``, summaries, chunk files, ``estimate.json``) goes through here: written
next to its target under a temporary name, flushed to disk, then renamed over it (a
rename within one folder is atomic on POSIX).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` atomically (``path.tmp``, fsync, rename).

    Args:
      path: the target file; its folder must exist.
      data: bytes, or text (written as UTF-8).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    raw = data.encode() if isinstance(data, str) else data
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """Writes ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    atomic_write(path, json.dumps(obj, indent=indent) + "\n")
