"""The one run skeleton every run kind shares: directory, lock, config, signals, the step
loop's bookkeeping (compile once, log, NaN stop, checkpoint, interrupt) and evaluation.

A run kind (search, train, multi-trial) is a body ``(config, workdir, log, stop) -> result``
that :func:`run_in_workdir` calls once the directory is locked and holds the config; a
step-based body drives its loop with a :class:`StepLoop` (its own loop, DESIGN.md: the
user owns the loop, helpers are called). Nothing here knows what a step computes.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas.core.checkpoint import Checkpointer
from dnas.core.errors import DnasError
from dnas.core.io import atomic_write
from dnas.run.config import differing_keys, read_config, to_json
from dnas.run.parallel import is_primary, primary_agrees, shard_batch
from dnas.run.progress import Progress
from dnas.search.state import release_free_memory


class Interrupted(Exception):
    """Raised after a checkpoint was written in response to SIGINT/SIGTERM."""


class InterruptedInCompile(Interrupted):
    """SIGINT/SIGTERM came while XLA compiled the first step; nothing needed saving.

    XLA's compiler cannot be stopped: it runs on in a background thread, so the caller
    should end the process with ``os._exit`` once it has said so (:func:`compile_interruptibly`).
    """


class NonFiniteLoss(DnasError):
    """A loss turned NaN or infinite: the run stopped without checkpointing that state."""


_EXIT_BEFORE_FIRST_STEP: str | None = None  # the hint said on exit; None: off


def exit_on_signal_before_first_step(hint: str | None = "the same command starts the run again") -> None:
    """Process-wide: SIGINT/SIGTERM before a run's first step ends the process at once
    (exit code 130, one line on stderr), wherever the main thread is.

    Why: Python runs signal handlers only in the main thread between bytecodes, so a signal
    that comes while XLA compiles (minutes for a big supernet on CPU, in the network's
    initialisation as well as the step) waited for the compile: ``timeout``'s SIGTERM went
    unanswered until SIGKILL. Before the first step nothing needs saving, the lock goes with
    the process, and a new run's ``config.json`` makes the same command start it again. For
    the command line, whose process is the run; a notebook keeps the default (off), where
    a signal stops the run at the next point Python reaches (:class:`SignalFlag`).

    Args:
      hint: what the exit line says after the reason (e.g. the command that resumes);
        None turns the policy off.
    """
    global _EXIT_BEFORE_FIRST_STEP
    _EXIT_BEFORE_FIRST_STEP = hint


class SignalFlag:
    """Records SIGINT/SIGTERM instead of raising, from construction until :meth:`restore`,
    so that a run stops at a point where it can checkpoint (never inside XLA's compiler).

    Install it right after the run directory is prepared: a signal during the build or the
    compile then stops the run before its first step (:meth:`check_not_started`), or ends
    the process at once under :func:`exit_on_signal_before_first_step`: a watcher thread
    wakes on the signal through ``signal.set_wakeup_fd``, which the C-level handler writes
    even while the main thread is inside XLA (which releases the GIL).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.started = False  # set by StepLoop once the first step ran (see run_in_workdir)
        # What a signal before the first step leaves behind, as the watcher reports it; a
        # run without steps (multi-trial) says what it saved instead.
        self.saved = "before the first step: nothing to checkpoint"
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._wakeup_w = -1
        self._hint = _EXIT_BEFORE_FIRST_STEP
        if self._hint is not None and threading.current_thread() is threading.main_thread():
            r, self._wakeup_w = os.pipe()
            os.set_blocking(self._wakeup_w, False)
            self._old_wakeup = signal.set_wakeup_fd(self._wakeup_w)
            threading.Thread(target=self._watch, args=(r,), name="dnas-signal-watch", daemon=True).start()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def _watch(self, r: int) -> None:
        try:
            while data := os.read(r, 16):  # b"" once restore() closed the write end
                if not self.started and any(b in (signal.SIGINT, signal.SIGTERM) for b in data):
                    os.write(2, f"dnas: stopped by signal {data[0]} ({self.saved}); {self._hint}\n".encode())
                    os._exit(130)
        finally:
            os.close(r)

    def check_not_started(self, workdir: Path, command: str) -> None:
        """Raises :class:`Interrupted` if a signal came before the first step."""
        if self.signal is not None:
            raise Interrupted(f"stopped by signal {self.signal} before the first step (nothing to checkpoint; the run starts afresh)")

    def restore(self) -> None:
        """Puts the previous handlers back (and ends the watcher thread, if any)."""
        if self._wakeup_w >= 0:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._wakeup_w)
            self._wakeup_w = -1
        for s, h in self._old.items():
            signal.signal(s, h)


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    head, _, sub = dotted.partition(".")
    value = config.get(head)
    return value.get(sub) if sub and value is not None else value


def prepare_workdir(workdir: str | Path, config: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    """Creates or reopens a run directory; returns the config to run with.

    A new directory gets ``config.json``. An existing run resumes with its own config; a
    different config for it is refused (nothing in it is touched).
    """
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if saved.exists():
        old = read_config(saved)
        if config is not None and to_json(config) != to_json(old):
            diff = differing_keys(config, old)
            shown = ", ".join(f"{k} (saved {_get(old, k)!r}, given {_get(config, k)!r})" for k in diff[:3])
            raise DnasError(
                f"{str(workdir)!r} holds a run with a different config: {shown}; resume it without --config, "
                "or use a new --workdir"
            )
        return old
    found = run_files(workdir)
    if found:
        # Writing a config here would start a new run over this one's files (and its
        # metrics.jsonl, alpha.jsonl, genotype.json would be overwritten): never do that.
        raise DnasError(
            f"{str(workdir)!r} holds a run's files ({', '.join(found)}) but no config.json, so dnas will not start a run "
            f"in it; put its config.json back (e.g. dnas config PATH[:ARG] > {str(workdir / 'config.json')!r} with the "
            "config it was started with) to resume it, or use a new --workdir"
        )
    if config is None:
        raise DnasError(f"{str(workdir)!r} holds no run; pass --config (or omit --workdir for the default search)")
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, to_json(config) + "\n")
    return config


RUN_FILES = ("checkpoints", "metrics.jsonl", "alpha.jsonl", "genotype.json", "result.json", "summary.json")
"""What a run writes besides ``config.json``; a folder holding any of them is a run."""


def run_files(workdir: str | Path) -> list[str]:
    """The entries of :data:`RUN_FILES` present in ``workdir``."""
    return [n for n in RUN_FILES if (Path(workdir) / n).exists()]


class WorkdirLock:
    """An exclusive lock on a run directory for the life of one run (``<workdir>/.lock``,
    ``fcntl.flock``, released by the OS if the process dies).

    Why: two processes in one directory (a resumed command started while the first still
    runs, or still writes its last checkpoint after SIGTERM) interleave checkpoints and
    metrics; the second is refused with one line instead.
    """

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / ".lock"
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise DnasError(f"{str(workdir)!r} is in use by a running dnas process (pid {holder}); wait for it to end, or use another --workdir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Drops the lock (closing the descriptor releases the flock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_run(workdir: str | Path, prepare: Callable[[], Any], *, must_exist: bool = False) -> tuple[Any, WorkdirLock]:
    """Locks ``workdir`` and then runs ``prepare()`` (which writes or checks its config):
    ``(prepare's result, the lock)``; release the lock when the run ends.

    Why in this order: two processes started at once on a new directory would otherwise
    both find no ``config.json`` and both write one before either takes the lock. The
    directory is created first only so that the lock file has a place; ``must_exist`` (or a
    folder holding a run's files, :func:`run_files`) runs ``prepare`` unlocked when the
    directory holds no config (it can only refuse).
    """
    workdir = Path(workdir)
    if (must_exist or run_files(workdir)) and not (workdir / "config.json").exists():
        prepare()  # it can only refuse: not even a lock file goes into a config-less run's folder
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir)
    try:
        return prepare(), lock
    except BaseException:
        lock.release()
        raise


def run_in_workdir(
    config: ml_collections.ConfigDict | None,
    workdir: str | Path,
    body: Callable[[ml_collections.ConfigDict, Path, Callable[[str], None], SignalFlag], Any],
    *,
    log: Callable[[str], None] = print,
    prepare: Callable[[Path, ml_collections.ConfigDict | None], ml_collections.ConfigDict] = prepare_workdir,
    clean_early_failure: bool = True,
    multiprocess: bool = False,
) -> Any:
    """Opens (or resumes) the run in ``workdir`` and runs ``body(config, workdir, log, stop)``
    with the directory locked and SIGINT/SIGTERM recorded in ``stop``.

    Args:
      config: the validated config, or None to resume the saved one.
      workdir: the run directory.
      body: the run kind's work.
      log: where progress lines go.
      prepare: writes or checks the directory's config (default :func:`prepare_workdir`).
      clean_early_failure: a new run that fails before its first step (data, network
        build, compile; ``stop.started`` still False) takes back what it wrote, so the
        corrected command is not refused as "a run with a different config". A resumed run
        and an interrupt (whose message says how to resume) keep everything.
      multiprocess: ``body`` works as one of several processes (``jax.process_count() >
        1``): process 0 alone locks the directory, writes the config and cleans up, the
        others wait for it and read its config. False: several processes are refused.
    Returns:
      what ``body`` returns.
    """
    workdir = Path(workdir)
    if jax.process_count() > 1 and not multiprocess:
        raise DnasError(f"this run kind runs in one process; {jax.process_count()} were started (multi-process runs: dnas search)")
    primary = is_primary()
    existed = workdir.is_dir()
    before = set(workdir.iterdir()) if existed and primary else set()
    new_run = config is not None and not (workdir / "config.json").exists()
    lock: WorkdirLock | None = None
    if primary:
        try:
            config, lock = open_run(workdir, lambda: prepare(workdir, config), must_exist=config is None)
        except BaseException:
            primary_agrees(False)  # the others stop too (they print nothing of their own)
            raise
    if not primary_agrees(True):
        raise DnasError("process 0 could not open the run directory (its error says why)")
    if not primary:  # process 0 has written or checked config.json by now
        config = read_config(workdir / "config.json")
    stop = SignalFlag()
    try:
        return body(config, workdir, log, stop)
    except Exception as e:
        if lock is not None and clean_early_failure and new_run and not stop.started and not isinstance(e, Interrupted):
            _remove_new_entries(workdir, before, lock, remove_dir=not existed)
        raise
    finally:
        stop.restore()
        if lock is not None:
            lock.release()


def _remove_new_entries(workdir: Path, before: set[Path], lock: WorkdirLock, remove_dir: bool) -> None:
    """Deletes what appeared in ``workdir`` since ``before``, then releases ``lock``, then
    removes ``workdir`` if this run created it and nothing else has appeared in it.

    The lock file goes while still held: a process that starts meanwhile is refused by the
    lock or makes a new lock file of its own, never loses one to this cleanup.
    """
    try:
        for p in set(workdir.iterdir()) - before:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        lock.release()
        if remove_dir and not any(workdir.iterdir()):
            workdir.rmdir()
    except OSError:
        pass  # the run's own error is what the user must see; a leftover file is only untidy


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (``bool[]``)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def compile_interruptibly(jitted: Any, stop: SignalFlag, *args: Any, poll_s: float = 0.1) -> Callable[..., Any]:
    """:func:`~dnas.search.state.compile_then_trim` of ``jitted`` for ``args``, in a
    background thread while the main thread watches ``stop``.

    Why: Python runs signal handlers in the main thread between bytecodes, so a SIGTERM
    sent while the main thread sits in XLA's compiler (minutes for a big supernet on CPU)
    went unanswered until SIGKILL. Tracing and lowering stay in the calling thread (JAX's
    context settings are thread-local; they are Python and see signals anyway); only
    XLA's compile, which releases the GIL, moves.

    Raises:
      InterruptedInCompile: a signal came during the compile. The compile goes on in its
        (daemon) thread and cannot be cancelled: end the process with ``os._exit`` once
        the run's clean-up (lock, files) is done.
    """
    lowered = jitted.lower(*args)
    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            result["compiled"] = lowered.compile()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = e
        done.set()

    threading.Thread(target=work, name="dnas-xla-compile", daemon=True).start()
    while not done.wait(poll_s):
        if stop.signal is not None:
            raise InterruptedInCompile(f"stopped by signal {stop.signal} while XLA compiled the first step (nothing to checkpoint)")
    if "error" in result:
        raise result["error"]
    release_free_memory()  # as compile_then_trim: the compile's freed heap back to the OS before the step runs
    return result["compiled"]


class Tick(NamedTuple):
    """What one finished step asks of the loop: ``done`` steps so far, the 1-based
    ``epoch``, whether it ends an epoch, is logged, and is checkpointed; ``metrics`` on the
    host when logged or saved (else the device values)."""

    done: int
    epoch: int
    epoch_end: bool
    logging: bool
    saving: bool
    metrics: dict[str, Any]


class StepLoop:
    """The bookkeeping of a step-based run: compile the first step once (said while XLA
    works), log, stop on a non-finite loss before that state is saved, checkpoint
    periodically / at the end / on a signal, and turn a signal into :class:`Interrupted`.

    Usage (the caller owns the loop)::

        loop = StepLoop(workdir, "search", ckpt, stop, total, steps_per_epoch, config)
        for step in loop.steps(int(state.step)):
            state, tick = loop.step(step_fn, state, batch_of(step))
            ...  # log / evaluate with tick
            loop.end_step(tick, state)
        loop.close()

    Args:
      workdir: the run directory (named in messages).
      command: the ``dnas`` subcommand (``search``/``train``) for messages.
      ckpt: the run's checkpointer.
      stop: the run's signal flag.
      total: the last step.
      steps_per_epoch: steps in one epoch.
      config: holds ``log_every_steps`` and ``checkpoint_every_steps``.
      loss_keys: metrics whose non-finite value stops the run.
      hint: the fix named when a loss turns non-finite.
    """

    def __init__(self, workdir: Path, command: str, ckpt: Checkpointer, stop: SignalFlag, total: int, steps_per_epoch: int,
                 config: ml_collections.ConfigDict, loss_keys: Sequence[str] = ("train_loss",), hint: str = "lower the learning rate"):
        self.workdir, self.command, self.ckpt, self.stop = workdir, command, ckpt, stop
        self.total, self.spe = total, steps_per_epoch
        self.log_every, self.save_every = int(config.log_every_steps), int(config.checkpoint_every_steps)
        self.loss_keys, self.hint = tuple(loss_keys), hint
        self.start = self.done = 0
        self.progress: Progress | None = None
        self._compiled: Callable[..., Any] | None = None
        self._saved_any = False
        self.t_last, self.n_last = time.perf_counter(), 0

    def steps(self, start: int) -> range:
        """The steps still to run from ``start`` (a resumed run's step); starts the progress
        display and refuses to begin after a signal."""
        self.start, self.n_last, self.done = start, start, start
        self._saved_any = self.ckpt.latest_step() is not None
        self.stop.check_not_started(self.workdir, self.command)
        # One progress display per run: the other processes' would repeat process 0's lines.
        self.progress = Progress(self.total, start, stream=None if is_primary() else io.StringIO())
        return range(start, self.total)

    def step(self, step_fn: Callable[..., Any], state: Any, batch: Sequence[Any], what: str = "the step") -> tuple[Any, Tick]:
        """Runs one step (compiling it first, on the first call) and says what follows it."""
        if self._compiled is None:
            assert self.progress is not None, "call steps() first"
            with self.progress.compiling(what):
                self._compiled = compile_interruptibly(step_fn, self.stop, state, *batch)
            self.stop.check_not_started(self.workdir, self.command)
            self.t_last = time.perf_counter()
            state, m = self._compiled(state, *batch)
            self.stop.started = True
            release_free_memory()  # what the first step freed, otherwise resident all run
        else:
            state, m = self._compiled(state, *batch)
        self.done += 1
        return state, self._tick(state, m)

    def _tick(self, state: Any, m: dict[str, Any]) -> Tick:
        done = self.done
        epoch_end = done % self.spe == 0 or done == self.total
        logging = done % self.log_every == 0 or epoch_end
        saving = done % self.save_every == 0 or done == self.total or self.stop.signal is not None
        if logging or saving:
            m = jax.device_get(m)
            bad = [k for k in self.loss_keys if k in m and not np.isfinite(m[k])]
            if bad or (saving and not bool(all_finite(state))):
                what = f"{bad[0]} is {m[bad[0]]}" if bad else "the state holds NaN or infinite values"
                kept = (f"the newest checkpoint in {str(self.workdir / 'checkpoints')!r} is the last finite one" if self._saved_any
                        else "no checkpoint was written yet, so the run starts afresh when run again")
                raise NonFiniteLoss(f"{what} at step {done}; stopped without saving that state ({kept}). {self.hint[0].upper()}{self.hint[1:]}")
        return Tick(done, (done - 1) // self.spe + 1, epoch_end, logging, saving, m)

    def seconds_per_step(self, done: int) -> float:
        """Mean wall time of the steps since the last call (evaluations excluded by :meth:`reset_clock`)."""
        dt = (time.perf_counter() - self.t_last) / max(done - self.n_last, 1)
        self.t_last, self.n_last = time.perf_counter(), done
        return dt

    def reset_clock(self) -> None:
        """Starts step timing afresh (after work that is not a step, e.g. an evaluation)."""
        self.t_last = time.perf_counter()

    def say(self, done: int, text: str, line: bool = False) -> None:
        """A progress line (``line``: kept on screen, e.g. per epoch)."""
        assert self.progress is not None
        self.progress.update(done, text, force_line=line)

    def save(self, done: int, state: Any) -> None:
        """Checkpoints ``state`` at step ``done`` now."""
        self.ckpt.save(done, state)
        self._saved_any = True

    def end_step(self, tick: Tick, state: Any) -> None:
        """Checkpoints when due and stops with :class:`Interrupted` after a signal."""
        if tick.saving:
            self.save(tick.done, state)
        if self.stop.signal is not None:
            raise Interrupted(f"stopped by signal {self.stop.signal} at step {tick.done}; checkpoint written")

    def close(self) -> None:
        """Closes the progress display and the checkpointer."""
        if self.progress is not None:
            self.progress.close()
        self.ckpt.close()


def evaluate_split(
    eval_step: Callable[..., tuple[jax.Array, jax.Array]], state: Any, mesh: Any, x: np.ndarray, y: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Accuracy and mean loss of ``eval_step(state, x, y, valid) -> (correct, loss_sum)``
    over every example of ``(x, y)``, in batches of ``batch_size`` (the last one padded
    and masked, so each batch has one shape and the step compiles once)."""
    n_dev = mesh.devices.size
    bs = max(n_dev, (min(batch_size, len(y)) // n_dev) * n_dev)
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y), bs):
        xb, yb = x[i : i + bs], y[i : i + bs]
        valid = np.ones(bs, np.float32)
        if len(yb) < bs:
            valid[len(yb) :] = 0
            xb = np.concatenate([xb, np.zeros((bs - len(yb),) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros(bs - len(yb), yb.dtype)])
        cnt, ls = eval_step(state, *shard_batch(mesh, (xb, yb, valid), global_batch=True))
        correct, loss_sum = correct + int(cnt), loss_sum + float(ls)
    return {"acc": correct / max(len(y), 1), "loss": loss_sum / max(len(y), 1)}
