"""``dnas launch``: several processes of one dnas command on this machine, joined by JAX's
own runtime (``jax.distributed``), as a cluster's scheduler would start them on many.

Each child gets the coordinator's address (a free port on localhost, served by process 0),
the process count and its index (:data:`dnas.run.parallel.LAUNCH_ENV`), which
:func:`dnas.run.parallel.maybe_initialize_distributed` hands to
``jax.distributed.initialize``. The launcher then only supervises: it forwards
SIGINT/SIGTERM to every child, and when one child fails (an error, or killed) it stops the
others, because a multi-process program cannot go on without a member: the survivors would
wait in their next collective until JAX's heartbeat timeout.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from dnas.core.errors import DnasError
from dnas.run.parallel import LAUNCH_ENV

MULTIPROCESS_COMMANDS = ("search", "eval", "zero-cost")
"""The dnas commands that run as several processes (the others would each do all the work)."""

STOP_GRACE_S = 10.0
"""How long stopped children get to exit (a checkpoint on SIGTERM, the lock released)
before SIGKILL; children waiting in a collective for a dead peer never exit on their own."""


def free_port() -> int:
    """A TCP port free on localhost now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(base: dict[str, str], index: int, processes: int, port: int, devices_per_process: int, cpu: bool) -> dict[str, str]:
    """The environment of child ``index``: ``base`` plus the coordinator, count and index.

    On the host (CPU) platform XLA makes ``devices_per_process`` devices
    (``--xla_force_host_platform_device_count``; it does nothing on GPU/TPU). ``cpu``
    forces the CPU platform (``JAX_PLATFORMS=cpu``); otherwise each child sees its own
    ``devices_per_process`` accelerators (``JAX_LOCAL_DEVICE_IDS``, read by
    ``jax.distributed.initialize``), so the processes of a GPU host do not share devices.
    """
    env = dict(base)
    env.update({LAUNCH_ENV[0]: f"127.0.0.1:{port}", LAUNCH_ENV[1]: str(processes), LAUNCH_ENV[2]: str(index)})
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices_per_process}"])
    if cpu:
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("JAX_LOCAL_DEVICE_IDS", None)
    else:
        env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(d) for d in range(index * devices_per_process, (index + 1) * devices_per_process))
    env.pop("DNAS_NO_DISTRIBUTED", None)
    return env


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the launcher dies (even by SIGKILL), so no orphan
    # waits in a collective for the heartbeat timeout. Elsewhere a no-op.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(command: Sequence[str], processes: int, *, devices_per_process: int = 1, cpu: bool = False, port: int = 0,
           log: Any = None) -> int:
    """Runs ``python -m dnas.cli *command`` as ``processes`` processes of one JAX program.

    Args:
      command: the dnas command line, e.g. ``["search", "--config", "...", "--workdir", "W"]``.
      processes: how many processes.
      devices_per_process: devices each process uses (fake CPU devices on the host platform).
      cpu: run on the CPU platform (``JAX_PLATFORMS=cpu``) even where an accelerator exists.
      port: the coordinator's port on localhost (0: a free one).
      log: where the launcher's own lines go (default: stderr).
    Returns:
      0 when every process succeeded; else the first failure's exit code (128 + signal for
      a killed process), after the others were stopped.
    """
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if processes < 1 or devices_per_process < 1:
        raise DnasError(f"--processes and --devices-per-process must be >= 1, got {processes} and {devices_per_process}")
    if not command:
        raise DnasError("name the dnas command to run after '--', e.g.: dnas launch --processes 2 -- search --config CONFIG --workdir DIR")
    if command[0] not in MULTIPROCESS_COMMANDS:
        raise DnasError(f"dnas launch runs {', '.join(MULTIPROCESS_COMMANDS)} (the commands that work as several processes), not {command[0]!r}")
    port = port or free_port()
    children: list[subprocess.Popen] = []
    for i in range(processes):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "dnas.cli", *command],
            env=child_env(dict(os.environ), i, processes, port, devices_per_process, cpu),
            # Process 0 speaks for the run; the others' stdout would repeat its result lines.
            # Their stderr stays: an error of any process must be seen.
            stdout=None if i == 0 else subprocess.DEVNULL,
            start_new_session=True,  # signals reach the children only through this launcher, once
            preexec_fn=_die_with_parent,
        ))
    say(f"dnas launch: {processes} process(es) x {devices_per_process} device(s), coordinator 127.0.0.1:{port}, "
        f"pids {' '.join(str(c.pid) for c in children)}")

    signals: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        signals.append(signum)
        # A second signal means "now": the children may be stuck where no handler runs.
        for c in children:
            if c.poll() is None:
                try:
                    c.send_signal(signal.SIGKILL if len(signals) > 1 else signum)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    failed: tuple[int, int] | None = None
    stop_deadline: float | None = None
    try:
        while [c.poll() for c in children].count(None):  # polls every child (any() would stop at the first alive)
            if failed is None:
                for i, c in enumerate(children):
                    if c.returncode not in (None, 0) and not signals:
                        failed = (i, c.returncode)
                        for other in children:
                            if other.poll() is None:
                                other.terminate()
                        break
            if (failed is not None or signals) and stop_deadline is None and any(c.returncode is not None for c in children):
                stop_deadline = time.monotonic() + STOP_GRACE_S
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                for c in children:
                    if c.poll() is None:
                        c.kill()
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    codes = [c.returncode for c in children]
    if failed is None:
        bad = [(i, r) for i, r in enumerate(codes) if r != 0]
        if not bad:
            return 0
        failed = bad[0]
        if signals:  # the user stopped the run; each child said how it ended
            return 128 + signals[0] if failed[1] < 0 else failed[1]
    i, code = failed
    say(f"dnas launch: process {i} (pid {children[i].pid}) {_describe(code)}; stopped the other {processes - 1} process(es)"
        f" (running the same command again resumes from the newest checkpoint)")
    return 128 - code if code < 0 else code
