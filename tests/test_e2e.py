"""End to end: CLI runs, SIGKILL + resume is bit-identical, bad input fails cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dnas.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config.dataset=digits", "--config.init_channels=4", "--config.layers=1", "--config.nodes=2",
        "--config.ops=none,skip_connect,sep_conv_3x3,max_pool_3x3", "--config.batch_size=16", "--config.epochs=2",
        "--config.max_steps=16", "--config.log_every_steps=2", "--config.checkpoint_every_steps=2"]


def _dnas(*args, cache=None, **kw):
    env = dict(os.environ, DNAS_JAX_CACHE=str(cache or ROOT / ".jax_cache"), XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "dnas.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    base = ["search", "--config", "experiments/darts/config.py", *TINY]
    full = _dnas(*base, "--workdir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]

    killed = tmp_path / "killed"
    env = dict(os.environ, DNAS_JAX_CACHE=str(ROOT / ".jax_cache"), XLA_FLAGS="")
    proc = subprocess.Popen([sys.executable, "-m", "dnas.cli", *base, "--workdir", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once a mid-run checkpoint exists
        ck = killed / "checkpoints"
        if ck.exists() and any(p.name.isdigit() and 4 <= int(p.name) < 16 for p in ck.iterdir()):
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed = _dnas("search", "--workdir", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr

    assert (killed / "genotype.json").read_text() == (tmp_path / "full" / "genotype.json").read_text()
    from dnas.config import from_json
    from dnas.loop import build_search

    config = from_json((tmp_path / "full" / "config.json").read_text())
    like = build_search(config).state
    states = []
    for run in ("full", "killed"):
        ck = Checkpointer(tmp_path / run / "checkpoints")
        states.append(ck.restore(ck.latest_step(), like))
        ck.close()
    import jax

    for a, b in zip(jax.tree_util.tree_leaves(states[0]), jax.tree_util.tree_leaves(states[1])):
        if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    full_lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    killed_lines = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in full_lines] == [l["step"] for l in killed_lines]
    assert [l.get("train_loss") for l in full_lines] == [l.get("train_loss") for l in killed_lines]


@pytest.mark.slow
def test_show_run_directory(tmp_path):
    run = _dnas("search", "--config", "experiments/darts/config.py", *TINY[:-3], "--config.max_steps=4", "--workdir", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "genotype: Genotype(" in run.stdout
    for name in ("config.json", "metrics.jsonl", "alpha.jsonl", "genotype.json"):
        assert (tmp_path / "r" / name).exists()
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "alpha_entropy", "w_lr", "a_lr", "step_time_s", "images_per_s"):
        assert key in rec
    shown = _dnas("show", str(tmp_path / "r"))
    assert shown.returncode == 0, shown.stderr
    assert "α after epoch" in shown.stdout
    assert (tmp_path / "r" / "cell_normal.dot").read_text().startswith("digraph")
    assert "<polyline" in (tmp_path / "r" / "alpha_normal.svg").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["darts", "nb201"])
def test_experiment_smoke_search(tmp_path, experiment):
    r = _dnas("search", "--config", f"experiments/{experiment}/config.py:smoke", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "genotype:" in r.stdout
    assert json.loads((tmp_path / "w" / "genotype.json").read_text())["schema"] == "dnas.genotype/1"


@pytest.mark.slow
def test_train_smoke_reports_accuracy(tmp_path):
    r = _dnas("train", "--config", "experiments/darts_retrain/config.py:smoke", "--genotype", "DARTS_V2", "--workdir", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-2000:]
    acc = float(r.stdout.split("test_acc:")[1].split()[0])
    assert 0.0 <= acc <= 1.0
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["test_examples"] > 0


def test_bad_inputs_fail_with_one_line_and_keep_run_data(tmp_path):
    r = _dnas("search", "--config", "experiments/darts/config.py", "--config.batchsize=3", "--workdir", str(tmp_path / "a"))
    assert r.returncode == 2 and "unknown config key 'batchsize'" in r.stderr and r.stderr.strip().count("\n") == 0
    r = _dnas("search", "--config", "experiments/darts/config.py", "--config.data_dir=/nope", "--workdir", str(tmp_path / "b"))
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stderr.strip().count("\n") == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "dnas.genotype/1", "kind": "darts", "normal": [["conv_99", 0], ["skip_connect", 1]],
                               "normal_concat": [2], "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]}))
    r = _dnas("train", "--genotype", str(bad), "--workdir", str(tmp_path / "c"))
    assert r.returncode == 2 and "unknown op 'conv_99'" in r.stderr and r.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_corrupt_checkpoint_is_reported_and_kept(tmp_path):
    w = tmp_path / "w"
    r = _dnas("search", "--config", "experiments/darts/config.py", *TINY[:-3], "--config.max_steps=2", "--config.checkpoint_every_steps=2", "--workdir", str(w))
    assert r.returncode == 0, r.stderr[-2000:]
    step_dir = w / "checkpoints" / "2"
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0 and "metadata" not in p.name]
    for p in files:
        p.write_bytes(b"\x00garbage" * 4)
    before = sorted((p.relative_to(w), p.stat().st_size) for p in w.rglob("*") if p.is_file())
    # A different config must be refused without touching the run.
    r = _dnas("search", "--config", "experiments/darts/config.py", *TINY[:-3], "--config.max_steps=3", "--workdir", str(w))
    assert r.returncode == 2 and "different config" in r.stderr
    r = _dnas("search", "--workdir", str(w))
    assert r.returncode == 2 and "unreadable" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    after = sorted((p.relative_to(w), p.stat().st_size) for p in w.rglob("*") if p.is_file())
    assert before == after
