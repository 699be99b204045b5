"""The command line a new user meets: discoverable keys, names and versions, overrides
written either way, errors that name the fix, `dnas show` outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from dnas.cli.common import split_overrides as _split_overrides
from dnas.cli.main import main
from dnas.core.errors import DnasError

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_with_a_space_instead_of_equals():
    rest, ov = _split_overrides(["search", "--config.epochs", "3", "--workdir", "w", "--config.w_lr=0.1"])
    assert rest == ["search", "--workdir", "w"] and ov == ["--config.epochs=3", "--config.w_lr=0.1"]
    with pytest.raises(DnasError, match="needs a value"):
        _split_overrides(["search", "--config.epochs"])


def test_version_list_and_config(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("dnas ")
    assert main(["list", "relaxations"]) == 0
    out = capsys.readouterr().out
    assert "gdas" in out and "softmax" in out
    assert main(["list", "all"]) == 0
    out = capsys.readouterr().out
    for section in ("ops:", "relaxations:", "spaces:", "genotypes:", "hypergradients:", "kinds:"):
        assert section in out
    assert "darts" in out and "nb201" in out and "multitrial" in out
    assert main(["config", "--config.epochs", "3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["epochs"] == 3 and cfg["dataset"] == "digits"  # the default search, resolved
    assert main(["config", "experiments/layerwise/config.py:smoke"]) == 0
    assert json.loads(capsys.readouterr().out)["space"] == "layerwise"


def test_help_lists_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert "w_lr=0.025" in out and "space_kwargs" in out and "dnas config" in out


def test_user_errors_name_the_fix(capsys):
    assert main(["search", "--config.learning_rate=0.1", "--workdir", "/nonexistent/never"]) == 2
    assert "did you mean 'w_lr'" in capsys.readouterr().err
    assert main(["search", "--config", "experiments/darts/config.py:smok"]) == 2
    assert "unknown config arg" in capsys.readouterr().err
    assert main(["list", "opz"]) == 2
    assert not Path("/nonexistent/never").exists()


SHOWN_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_show_a_genotype_writes_a_named_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", SHOWN_CELL]) == 0
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("show-") and (folders[0] / "cell_nb201.dot").exists()
    assert not (tmp_path / "cell_nb201.dot").exists()  # nothing loose in the current folder
    assert "NAS-Bench-201" not in capsys.readouterr().out  # no table given, no accuracy line


def test_show_a_genotype_with_the_table_prints_its_accuracy(tmp_path, monkeypatch, capsys, require_shared):
    table = require_shared("nb201", "nb201_table.csv", why="the accuracy line is read from the benchmark table")
    monkeypatch.chdir(tmp_path)
    assert main(["show", SHOWN_CELL, "--table", table]) == 0
    assert "NAS-Bench-201 (200 epochs, test accuracy %): cifar10 93.66" in capsys.readouterr().out  # row 1 of the table


@pytest.mark.slow
def test_train_stops_cleanly_on_sigint_and_resumes(tmp_path):
    """SIGINT in `dnas train` (during compile or steps) writes a checkpoint and exits with one
    line saying how to resume; it used to be ignored (or a raw KeyboardInterrupt)."""
    env = dict(os.environ, DNAS_JAX_CACHE=jax.config.jax_compilation_cache_dir, XLA_FLAGS="")
    w = tmp_path / "t"
    cmd = [sys.executable, "-m", "dnas.cli", "train", "--config", "experiments/darts_retrain/config.py:smoke", "--genotype",
           "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|", "--config.dataset=synthetic",
           "--config.init_channels=4", "--config.layers=1", "--config.max_steps=100000", "--config.epochs=2000", "--workdir", str(w)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (w / "config.json").exists():
        time.sleep(0.2)
    time.sleep(1.0)  # likely compiling now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "stopped by signal 2" in last and "resume with: dnas train --workdir" in last
    # Resuming continues (or starts) the run: the same command with the workdir alone works.
    if "at step" in last:
        assert [p for p in (w / "checkpoints").iterdir() if p.name.isdigit()]
