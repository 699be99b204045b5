"""The README's "Extending" examples are real: a new space (experiments/layerwise/space.py),
an op and a relaxation with a parameter (experiments/layerwise/extras.py), each used by a
short search; and what an experiment file registers is there again when the run resumes,
is shown and retrained in fresh processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dnas(*args):
    env = dict(os.environ, DNAS_JAX_CACHE=jax.config.jax_compilation_cache_dir, XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "dnas.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_extension_files_stay_small():
    lines = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "experiments/layerwise").glob("*.py")}
    assert lines["space.py"] <= 150 and lines["config.py"] <= 80
    extras = (ROOT / "experiments/layerwise/extras.py").read_text()
    relax = extras[extras.index("@register_relaxation"):]
    assert len(relax.strip().splitlines()) <= 20


@pytest.mark.slow
def test_new_space_op_and_relaxation_search_resume_show_and_train(tmp_path):
    w = tmp_path / "w"
    r = _dnas("search", "--config", "experiments/layerwise/config.py:smoke,perturbed", "--config.max_steps=2", "--workdir", str(w))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "genotype: layerwise:" in r.stdout
    cfg = json.loads((w / "config.json").read_text())
    assert cfg["space"] == "layerwise" and cfg["relax"] == "perturbed_softmax" and "conv_5x5" in cfg["space_kwargs"]["ops"]
    # Fresh processes: the registrations come back from config.imports.
    again = _dnas("search", "--workdir", str(w))
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr[-2000:]
    shown = _dnas("show", str(w))
    assert shown.returncode == 0 and "layerwise space" in shown.stdout, shown.stderr[-2000:]
    t = _dnas("train", "--genotype", str(w), "--workdir", str(tmp_path / "t"), "--config.max_steps=2", "--config.init_channels=4")
    assert t.returncode == 0, t.stderr[-2000:]
    assert "layerwise network" in t.stderr


@pytest.mark.slow
def test_new_op_and_relaxation_in_the_darts_space(tmp_path):
    extras = str(ROOT / "experiments/layerwise/extras.py")
    r = _dnas("search", "--config", "experiments/darts/config.py:smoke", f"--config.imports=['{extras}']",
              "--config.space_kwargs.ops=none,skip_connect,conv_5x5", "--config.relax=perturbed_softmax",
              "--config.relax_kwargs.epsilon=0.1", "--config.max_steps=2", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "perturbed_softmax relaxation" in r.stderr
