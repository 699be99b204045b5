"""Every benchmark script imports: they are run by hand (and on GPUs), so nothing else
notices when a refactor removes a name one of them uses (benchmarks/mobile_step.py once
broke that way unseen)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_script_imports(script):
    assert "__main__" in script.read_text(), f"{script.name} must do its work under `if __name__ == '__main__'`"
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports only: the work is under __main__
    assert module.__doc__, f"{script.name} needs a docstring saying what it measures and how to run it"
