"""End to end: CLI runs, SIGKILL + resume is bit-identical, bad input fails cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import jax
import pytest

from dnas.core.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[1]
# 3 cells (one normal, two reduction), so both α halves are trained and checked.
TINY = ["--config.dataset=digits", "--config.init_channels=4", "--config.layers=3", "--config.space_kwargs.nodes=2",
        "--config.space_kwargs.ops=none,skip_connect,sep_conv_3x3,max_pool_3x3", "--config.batch_size=16", "--config.epochs=2",
        "--config.max_steps=16", "--config.log_every_steps=2", "--config.checkpoint_every_steps=2"]
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def _dnas(*args, cache=None, **kw):
    env = dict(os.environ, DNAS_JAX_CACHE=str(cache or jax.config.jax_compilation_cache_dir), XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "dnas.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    base = ["search", "--config", "experiments/darts/config.py", *TINY]
    full = _dnas(*base, "--workdir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]

    killed = tmp_path / "killed"
    env = dict(os.environ, DNAS_JAX_CACHE=jax.config.jax_compilation_cache_dir, XLA_FLAGS="")
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
    from dnas.run.config import from_json
    from dnas.run.search import build_search

    config = from_json((tmp_path / "full" / "config.json").read_text())
    like = build_search(config).state
    states = []
    for run in ("full", "killed"):
        ck = Checkpointer(tmp_path / run / "checkpoints")
        states.append(ck.restore(ck.latest_step(), like))
        ck.close()

    for a, b in zip(jax.tree_util.tree_leaves(states[0]), jax.tree_util.tree_leaves(states[1])):
        if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    full_lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    killed_lines = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in full_lines] == [l["step"] for l in killed_lines]
    assert [l.get("train_loss") for l in full_lines] == [l.get("train_loss") for l in killed_lines]
    # Both α halves moved from their initial values: the run has a normal cell, trained too.
    from dnas.search.state import alpha_dict

    init, final = alpha_dict(like.alpha), alpha_dict(states[0].alpha)
    for prefix in ("normal", "reduce"):
        labels = [l for l in final if l.startswith(prefix + "/")]
        assert labels and max(float(np.abs(np.asarray(final[l]) - np.asarray(init[l])).max()) for l in labels) > 1e-3, prefix


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
    epochs = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"epoch"' in l and "event" in l]
    assert epochs and all(0.0 <= e["epoch_val_acc"] <= 1.0 and e["epoch_val_loss"] > 0 for e in epochs)
    assert "workdir: " in run.stderr.splitlines()[0] and "compiled in" in run.stderr
    shown = _dnas("show", str(tmp_path / "r"))
    assert shown.returncode == 0, shown.stderr
    assert "α after epoch" in shown.stdout
    assert (tmp_path / "r" / "cell_normal.dot").read_text().startswith("digraph")
    for name in ("alpha_normal.png", "alpha_normal.svg", "alpha_reduce.png", "metrics.png", "metrics.svg"):
        assert (tmp_path / "r" / name).stat().st_size > 1000, name


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["darts", "nb201", "proxylessnas", "fbnet"])
def test_experiment_smoke_search(tmp_path, experiment):
    """The smoke search ends with the genotype its own α derives (not just exit 0)."""
    from dnas.space import genotype as G
    from dnas.run.config import from_json
    from dnas.run.search import build_space

    w = tmp_path / "w"
    r = _dnas("search", "--config", f"experiments/{experiment}/config.py:smoke", "--workdir", str(w))
    assert r.returncode == 0, r.stderr[-2000:]
    geno = G.load(w / "genotype.json")
    assert f"genotype: {geno}" in r.stdout
    space = build_space(from_json((w / "config.json").read_text()))
    probs = json.loads((w / "alpha.jsonl").read_text().splitlines()[-1])["softmax"]
    # softmax is monotone, so the derivation from the logged probabilities is the run's.
    assert space.derive({l: np.log(np.asarray(p)) for l, p in probs.items()}) == geno


@pytest.mark.slow
def test_train_an_nb201_cell_learns(tmp_path):
    """An NB201 arch_str trains the NB201 network of that cell (it used to die with a
    TypeError in a DARTS-only loop), and the reported accuracy is that of a network that
    learned: far above chance on learnable synthetic data."""
    r = _dnas("train", "--config", "experiments/darts_retrain/config.py:smoke", "--genotype", NB201_CELL, "--workdir", str(tmp_path / "t"),
              "--config.dataset=synthetic", "--config.init_channels=8", "--config.layers=1", "--config.max_steps=120", "--config.epochs=15",
              "--config.batch_size=32", "--config.cutout=0", "--config.lr=0.05")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nb201 network" in r.stderr and "M params" in r.stderr
    acc = float(r.stdout.split("test_acc:")[1].split()[0])
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["test_acc"] == pytest.approx(acc, abs=1e-4) and acc > 0.5, acc
    epochs = [json.loads(l) for l in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines() if '"event": "epoch"' in l]
    assert epochs and epochs[-1]["epoch_test_acc"] == pytest.approx(result["test_acc"])


@pytest.mark.slow
def test_train_accepts_a_search_run_directory(tmp_path):
    """``dnas train --genotype RUN_DIR``: the run's genotype and dataset, a network sized
    for its 8x8 digits (not the paper's 20-cell C=36 one), size printed before compiling."""
    s = _dnas("search", "--config", "experiments/nb201/config.py:smoke", "--config.dataset=digits", "--config.data_dir=",
              "--workdir", str(tmp_path / "s"))
    assert s.returncode == 0, s.stderr[-2000:]
    t = _dnas("train", "--genotype", str(tmp_path / "s"), "--workdir", str(tmp_path / "t"), "--config.max_steps=4")
    assert t.returncode == 0, t.stderr[-2000:]
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["dataset"] == "digits" and cfg["init_channels"] <= 16 and cfg["layers"] <= 8
    size_line = next(l for l in t.stderr.splitlines() if "M params" in l)
    assert t.stderr.index(size_line) < t.stderr.index("compiling")


@pytest.mark.slow
@pytest.mark.parametrize("relax,kwargs", [("gumbel", ["--config.relax_kwargs.decay=0.5"]), ("gdas", [])])
def test_annealed_relaxations_stay_finite_past_their_floor(tmp_path, relax, kwargs):
    """Temperatures are per-epoch schedules with a floor: 40 steps of 2-step epochs reach
    the floor by epoch 6 (gumbel, decay 0.5) or 9 (gdas, linear over 10 epochs) and run
    on at it with finite losses (the old per-step decay went to 0, then NaN)."""
    r = _dnas("search", "--config", "experiments/darts/config.py:smoke", f"--config.relax={relax}", *kwargs,
              "--config.max_train_examples=64", "--config.epochs=10", "--config.max_steps=40", "--config.log_every_steps=4",
              "--config.checkpoint_every_steps=20", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(l) for l in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines() if "train_loss" in l]
    assert lines[-1]["step"] == 40 and all(np.isfinite(l["train_loss"]) and np.isfinite(l["val_loss"]) for l in lines)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    w = tmp_path / "w"
    r = _dnas("search", "--config", "experiments/darts/config.py", *TINY, "--config.w_lr=1e30", "--config.grad_clip=1e38",
              "--workdir", str(w))
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()[-1]
    assert "at step" in err and ("nan" in err.lower() or "inf" in err.lower() or "NaN" in err)
    from dnas.run.config import from_json
    from dnas.run.search import build_search

    ck = Checkpointer(w / "checkpoints")
    if ck.latest_step() is not None:
        state = ck.restore(ck.latest_step(), build_search(from_json((w / "config.json").read_text())).state)
        import jax

        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.weights))
    ck.close()


def test_bad_inputs_fail_with_one_line_and_keep_run_data(tmp_path):
    r = _dnas("search", "--config", "experiments/darts/config.py", "--config.batchsize=3", "--workdir", str(tmp_path / "a"))
    assert r.returncode == 2 and "unknown config key 'batchsize'" in r.stderr and r.stderr.strip().count("\n") == 0
    # A typo in a named part is refused before config.json exists, so the corrected rerun works.
    r = _dnas("search", "--config", "experiments/darts/config.py:smoke", "--config.relax=gumbal", "--workdir", str(tmp_path / "typo"))
    assert r.returncode == 2 and "unknown relaxation 'gumbal'" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "typo").exists()
    r = _dnas("search", "--config", "experiments/darts/config.py:smok", "--workdir", str(tmp_path / "v"))
    assert r.returncode == 2 and "unknown config arg" in r.stderr and r.stderr.strip().count("\n") == 0
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
    assert r.returncode == 2 and "different config: " in r.stderr and "max_steps (saved 2, given 3)" in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    r = _dnas("search", "--workdir", str(w))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("dnas: error:") and "unreadable" in last and "Traceback" not in r.stderr, r.stderr
    after = sorted((p.relative_to(w), p.stat().st_size) for p in w.rglob("*") if p.is_file())
    assert before == after


@pytest.mark.slow
def test_default_search_learns_an_architecture(tmp_path):
    """The README's main job (``dnas search``, no arguments) ends with an architecture α
    chose: entropy on the last line at most 0.95 x uniform, the whole-split validation
    accuracy on every epoch line, the workdir printed before the first step. Its next
    step, ``dnas train --genotype RUN_DIR``, retrains that very genotype (the network the
    README's train sizes for 8x8 digits: C=16, 8 cells, auxiliary head on a 2x2 map;
    only its steps cut): a found genotype once failed to retrain while every test passed."""
    r = _dnas("search", "--workdir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(l) for l in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "alpha_entropy" in l]
    assert steps[-1]["alpha_entropy"] <= 0.95 * np.log(8)
    epochs = [l for l in lines if l.get("event") == "epoch"]
    assert len(epochs) == 10 and all("epoch_val_acc" in e and "epoch_val_loss" in e for e in epochs)
    assert epochs[-1]["epoch_val_acc"] > 0.9  # 8x8 digits: the supernet itself classifies well
    err = r.stderr.splitlines()
    assert err[0].startswith("workdir: ") and "resume with: dnas search --workdir" in err[0]
    assert err.index(next(l for l in err if l.startswith("compiled in"))) < err.index(next(l for l in err if l.startswith("step ")))
    t = _dnas("train", "--genotype", str(tmp_path / "d"), "--workdir", str(tmp_path / "t"), "--config.max_steps=2",
              "--config.max_test_examples=64")
    assert t.returncode == 0, t.stderr[-3000:]
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["dataset"] == "digits" and (cfg["init_channels"], cfg["layers"]) == (16, 8) and cfg["auxiliary"] is True
    assert "test_acc:" in t.stdout
