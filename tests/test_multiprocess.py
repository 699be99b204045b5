"""Several processes as one JAX program (``dnas launch``, jax.distributed with gloo on CPU):
the NB201 smoke search as 2 processes x 1 device ends as 1 process x 2 devices and x 1
device do, survives a SIGKILL of one process by resuming, and only process 0 writes the
run directory."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# One epoch of 8 steps (128 examples, half for α, batch 8), checkpoints every 2 steps, and
# an α learning rate that moves α well beyond float noise, so the genotypes are comparable.
# The step's passes run one after another in every run: several CPU processes must
# (dnas.run.parallel.collectives_in_conditionals_ok), and the fused executor's rounding
# differs (softmax(α) 5e-4 apart after 8 steps), which would hide what is compared here.
SEARCH = ["search", "--config", str(ROOT / "experiments" / "nb201" / "config.py") + ":smoke", "--config.max_train_examples=128",
          "--config.batch_size=8", "--config.max_steps=8", "--config.a_lr=0.05", "--config.checkpoint_every_steps=2",
          "--config.fuse_passes=false"]


def _env(devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # The children compile the same programs on every run: share the suite's cache. Only
    # process 0 of a launch gains from it: JAX 0.10 writes cache entries from process 0
    # alone and keys a CPU program by the topology fingerprint of the process's *local*
    # devices, which differs between processes (0 and 1 never share a key), so process 1
    # compiles every program on every run, and process 0, loaded from the cache, waits in
    # the first step's collective for it (the ~80 s "first step" of a resumed launch).
    env["DNAS_JAX_CACHE"] = jax.config.jax_compilation_cache_dir or ""
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # dnas launch sets the device count per process
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _one_process(workdir: Path, devices: int) -> subprocess.Popen:
    """The same search as one plain ``dnas search`` process with ``devices`` CPU devices
    (a process of its own: the suite's 4 fake devices change XLA:CPU's rounding)."""
    return subprocess.Popen([sys.executable, "-m", "dnas.cli", *SEARCH, "--workdir", str(workdir)], env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir.parent)


def _last_alpha(workdir: Path) -> dict[str, list[float]]:
    return json.loads((workdir / "alpha.jsonl").read_text().splitlines()[-1])["softmax"]


@pytest.mark.slow
def test_two_processes_resume_after_sigkill_and_equal_one_process(tmp_path):
    t0 = time.monotonic()
    w = tmp_path / "two"
    cmd = [sys.executable, "-m", "dnas.cli", "launch", "--processes", "2", "--cpu", "--", *SEARCH, "--workdir", str(w)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    first = launcher.stderr.readline()
    pids = [int(p) for p in re.search(r"pids ([\d ]+)", first).group(1).split()]
    assert len(pids) == 2, first
    # SIGKILL process 1 as soon as the step-2 checkpoint is complete (orbax renames the
    # folder when done); the epoch-end evaluation compiles before step 8 ends, so the run
    # cannot have finished by then.
    deadline = time.monotonic() + 600
    while not (w / "checkpoints" / "2").is_dir():
        assert launcher.poll() is None, f"the launch ended before its first checkpoint: {first}{launcher.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint after 600 s"
        time.sleep(0.05)
    t_kill = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    t_stopped = time.monotonic()
    assert launcher.returncode != 0
    assert re.search(r"dnas launch: process 1 \(pid \d+\) was killed by SIGKILL; stopped the other 1 process", err), err[-2000:]
    assert not (w / "genotype.json").exists(), "the run ended before the kill: nothing was resumed"

    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    t_resumed = time.monotonic()
    resumed = int(re.search(r"resuming \S+ from step (\d+)", again.stderr).group(1))
    assert 2 <= resumed < 8
    assert "genotype: |" in again.stdout and again.stdout.count("genotype:") == 1  # process 0's stdout alone

    # Only process 0 wrote: one line per logged step (two writers would double them).
    steps = [r["step"] for r in map(json.loads, (w / "metrics.jsonl").read_text().splitlines()) if "event" not in r]
    assert steps == [2, 4, 6, 8]
    assert len((w / "alpha.jsonl").read_text().splitlines()) == 1

    refs = {devices: _one_process(tmp_path / f"one{devices}", devices) for devices in (2, 1)}  # both at once
    two, geno = _last_alpha(w), json.loads((w / "genotype.json").read_text())
    for devices, proc in refs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        one = tmp_path / f"one{devices}"
        assert json.loads((one / "genotype.json").read_text()) == geno, devices
        ref = _last_alpha(one)
        assert ref.keys() == two.keys()
        for label in ref:
            # Measured: identical to 1 x 2 devices (the same program), 1.6e-7 from 1 x 1.
            np.testing.assert_allclose(two[label], ref[label], rtol=1e-5, atol=1e-6, err_msg=f"{label}, 1 process x {devices} devices")
    print(f"to the kill {t_kill - t0:.0f} s, stopped {t_stopped - t_kill:.1f} s later, resumed run {t_resumed - t_stopped:.0f} s, "
          f"1-process runs {time.monotonic() - t_resumed:.0f} s")


def test_a_signal_during_the_compile_stops_the_wait_at_once():
    """XLA's compile runs in a thread while the main thread watches the signal flag (a
    stand-in compile that sleeps, as XLA's releases the GIL; nothing is compiled here)."""
    import threading

    from dnas.run.driver import InterruptedInCompile, SignalFlag, compile_interruptibly

    class SlowCompile:
        def lower(self, *args):
            return self

        def compile(self):
            time.sleep(30)

    stop = SignalFlag()
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(InterruptedInCompile, match="signal 15 while XLA compiled"):
            compile_interruptibly(SlowCompile(), stop)
        assert time.monotonic() - t0 < 3
    finally:
        timer.cancel()  # never a SIGTERM after the flag's handler is gone
        stop.restore()


def test_each_launched_process_gets_the_coordinator_its_index_and_its_devices():
    from dnas.run.launch import child_env

    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_dump_to=/x", "DNAS_NO_DISTRIBUTED": "1"}
    env = child_env(base, 1, 3, 1234, 2, cpu=False)
    assert (env["DNAS_COORDINATOR_ADDRESS"], env["DNAS_NUM_PROCESSES"], env["DNAS_PROCESS_ID"]) == ("127.0.0.1:1234", "3", "1")
    assert env["XLA_FLAGS"] == "--xla_dump_to=/x --xla_force_host_platform_device_count=2"  # the user's other flags kept
    assert env["JAX_LOCAL_DEVICE_IDS"] == "2,3" and "JAX_PLATFORMS" not in env and "DNAS_NO_DISTRIBUTED" not in env
    cpu = child_env({}, 0, 2, 1234, 1, cpu=True)
    assert cpu["JAX_PLATFORMS"] == "cpu" and "JAX_LOCAL_DEVICE_IDS" not in cpu


def test_a_signal_before_the_first_step_ends_the_command_at_once():
    """Under the command line's policy a signal before the first step ends the process even
    while the main thread is blocked outside Python (here a read of an empty pipe, as XLA's
    compiler blocks it; the Python-level handler alone would wait for it forever)."""
    code = (
        "import os, sys\n"
        "from dnas.run.driver import SignalFlag, exit_on_signal_before_first_step\n"
        "exit_on_signal_before_first_step()\n"
        "flag = SignalFlag()\n"
        "r, w = os.pipe()\n"
        "print('ready', flush=True)\n"
        "os.read(r, 1)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        assert time.monotonic() - t0 < 5
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert "dnas: stopped by signal 15 (before the first step: nothing to checkpoint)" in err


@pytest.mark.slow
def test_eval_and_a_multitrial_run_as_two_processes_equal_one_process(tmp_path, capsys, require_shared):
    """``dnas eval`` and a multi-trial ``dnas search`` launched as 2 processes x 1 device give
    what one process with the suite's 4 devices gives (rows split over devices, not over
    anything that changes a result); process 0 alone prints and writes; a SIGKILL of one
    process during the multi-trial run, then the same command, resumes from its chunks and
    ends the same."""
    from dnas.cli.main import main
    from dnas.run.config import load_config
    from dnas.run.multitrial import run_multitrial
    from dnas.run.search import run_search

    table = require_shared("nb201", "nb201_table.csv", why="the multi-trial run searches the NAS-Bench-201 table")
    run = tmp_path / "supernet"  # one RSPS step: a supernet checkpoint to evaluate
    run_search(load_config(str(ROOT / "experiments" / "rsps_nb201" / "config.py") + ":smoke", ["--config.max_steps=1"]), run,
               log=lambda m: None)
    ev = ["eval", str(run), "--archs", "6", "--val-batches", "1", "--chunk", "2", "--json"]
    two = subprocess.run([sys.executable, "-m", "dnas.cli", "launch", "--processes", "2", "--cpu", "--", *ev, "--out", str(tmp_path / "two.csv")],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    summaries = [l for l in two.stdout.splitlines() if l.startswith("{")]  # gloo's C++ writes a line of its own
    assert len(summaries) == 1 and json.loads(summaries[0])["compiles"] == 1
    assert "on 2 device(s)" in two.stderr and two.stderr.count("evaluating 6 architectures") == 1
    capsys.readouterr()
    assert main([*ev, "--out", str(tmp_path / "one.csv")]) == 0
    assert "on 4 device(s)" in capsys.readouterr().err
    # Measured: byte-identical (each device runs the same per-device program).
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()

    # 24 chunks of 2 runs: the run is far from its end when the first chunk is saved.
    overrides = [f"--config.table={table}", "--config.runs=48", "--config.runs_per_chunk=2", "--config.budget_s=12000"]
    w = tmp_path / "mt"
    cmd = [sys.executable, "-m", "dnas.cli", "launch", "--processes", "2", "--cpu", "--", "search", "--config",
           str(ROOT / "experiments" / "nb201_multitrial" / "config.py") + ":smoke", *overrides, "--workdir", str(w)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    first = launcher.stderr.readline()
    pids = [int(p) for p in re.search(r"pids ([\d ]+)", first).group(1).split()]
    deadline = time.monotonic() + 300
    while not (w / "chunks" / "runs_00000.npz").exists():
        assert launcher.poll() is None, f"the launch ended before its first chunk: {first}{launcher.stderr.read()}"
        assert time.monotonic() < deadline, "no chunk after 300 s"
        time.sleep(0.005)
    os.kill(pids[1], signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert not (w / "summary.json").exists(), "the run ended before the kill: nothing was resumed"
    kept = len(list((w / "chunks").iterdir()))
    assert 1 <= kept < 24
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('"runs": 48') == 1  # process 0's summary line alone

    ref = tmp_path / "ref"
    run_multitrial(load_config(str(ROOT / "experiments" / "nb201_multitrial" / "config.py") + ":smoke", overrides), ref, log=lambda m: None)
    timings = ("wall_s", "compile_s", "search_s")
    got, want = (json.loads((d / "summary.json").read_text()) for d in (w, ref))
    assert {k: v for k, v in got.items() if k not in timings} == {k: v for k, v in want.items() if k not in timings}
    assert (w / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    assert sorted(p.name for p in w.iterdir()) == sorted(p.name for p in ref.iterdir())
