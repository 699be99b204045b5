"""Files in and out: atomic writes (a reader, or a resumed run, never sees a half-written
file) and reads that fail in one line.

Reading goes through here too (:func:`read_text`, :func:`read_json`, :func:`read_csv`): a
file that is missing, a folder, unreadable, not UTF-8 or not JSON becomes one DnasError
line naming the file, never a ``UnicodeDecodeError`` traceback.

Every file a run writes besides its checkpoints (``config.json``, ``genotype.json``,
``result.json``, summaries, chunk files, ``estimate.json``) goes through here: written
next to its target under a temporary name, flushed to disk, then renamed over it (a
rename within one folder is atomic on POSIX).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError


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


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of ``path`` (UTF-8; a BOM is dropped); one DnasError line naming ``what``
    and the file when it is missing, a folder, unreadable or not UTF-8.

    Why one place: a CSV saved by a spreadsheet as Latin-1 or UTF-16 raised
    ``UnicodeDecodeError`` from each of the five readers that opened files themselves.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DnasError(f"{what} {str(path)!r} is a folder, not a file") from None
    except FileNotFoundError:
        raise DnasError(f"cannot read {what} {str(path)!r}: it does not exist") from None
    except OSError as e:
        raise DnasError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DnasError(
            f"{what} {str(path)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The JSON value in ``path``; one DnasError line (file, line, column) when it is not
    readable UTF-8 JSON."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DnasError(f"{what} {str(path)!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def read_csv(path: str | Path, what: str = "CSV file") -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV file read as UTF-8 (:func:`read_text`); an empty file has
    an empty header; blank lines are skipped. A malformed CSV (e.g. a NUL byte) is one DnasError line."""
    text = read_text(path, what)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None) or []
        rows = [r for r in reader if r]  # blank lines (a trailing newline) are no rows, as in csv.DictReader
    except csv.Error as e:
        raise DnasError(f"{what} {str(path)!r} is not a readable CSV: {e}") from None
    return [h.strip() for h in header], rows


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Refuses, before any work, an output path that cannot be written: a folder, a file in
    a missing folder or under a file, or a folder without write permission. Returns it.

    Why up front: a command that evaluates for minutes and then fails to write loses its
    results (``dnas eval --out missing/archs.csv`` did).
    """
    path = Path(path)
    if path.is_dir():
        raise DnasError(f"{what} {str(path)!r} is a folder; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DnasError(f"{what} {str(path)!r}: folder {str(parent)!r} does not exist; create it first (mkdir -p {str(parent)!r})")
    if not os.access(parent, os.W_OK):
        raise DnasError(f"{what} {str(path)!r}: folder {str(parent)!r} is not writable")
    return path
