"""Importing the user's Python files (experiment configs and the ops, relaxations and
spaces they register), once per process, with one clear error line when a file fails.

``config.imports`` names such files; a run, ``dnas show`` and a restored supernet import
them again, so what they registered is there when the run is read back.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnas.core.errors import DnasError

_IMPORTED: dict[str, Any] = {}


def import_file(path: str | Path) -> Any:
    """Imports a Python file once per process (registrations in it happen once) and
    returns the module; a failing file gives one DnasError line."""
    file = Path(path).resolve()
    if str(file) in _IMPORTED:
        return _IMPORTED[str(file)]
    if not file.is_file():
        raise DnasError(f"config file {str(path)!r} does not exist")
    if file.suffix != ".py":
        # importlib finds no loader for other suffixes (an AttributeError on None before).
        hint = " (a run's saved config.json: resume with --workdir RUN, or see it with 'dnas config RUN')" if file.suffix == ".json" else ""
        raise DnasError(f"config file {str(path)!r} is not a Python file: a config is a .py file with get_config(arg) "
                        f"(e.g. experiments/darts/config.py){hint}")
    name = f"dnas_config_{file.parent.name}_{file.stem}_{len(_IMPORTED)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise DnasError(f"config file {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # so dataclasses and pickles in it resolve their module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except DnasError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's file: report, do not crash
        del sys.modules[name]
        raise DnasError(f"config file {str(path)!r} failed to load: {type(e).__name__}: {e}") from None
    _IMPORTED[str(file)] = module
    return module


def import_files(paths: Sequence[str]) -> None:
    """Imports each of ``paths`` (:func:`import_file`). A file that no longer exists (a moved
    checkout) is reported on stderr and skipped: a run whose config file registered nothing
    still resumes, and one that did fails at the unknown name, after this line."""
    for p in paths or ():
        if not Path(p).is_file():
            print(f"dnas: warning: {p!r} (in config.imports) does not exist any more; its registrations are missing", file=sys.stderr)
            continue
        import_file(p)

