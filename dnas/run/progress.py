"""The progress line of the run loops: a tqdm bar on a terminal, plain log lines otherwise,
and an ETA that leaves XLA compile time out.

Typical use::

    progress = Progress(total_steps, start)
    with progress.compiling():            # "compiling the step..." / "compiled in 41.2 s"
        step_fn = compile_then_trim(...)
    for step in ...:
        progress.update(done, f"loss {loss:.3f}")
    progress.close()
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from tqdm import tqdm


class _Bar(tqdm):
    # No monitor thread: it only re-tunes miniters, and a thread per run loop outliving
    # the loop (or a test) is not worth it. A subclass keeps tqdm's global default intact.
    monitor_interval = 0


def format_seconds(s: float | None) -> str:
    """``"42s"``, ``"3m05s"``, ``"2h07m"``; ``"?"`` while unknown."""
    if s is None or s != s or s == float("inf"):
        return "?"
    r = int(round(max(0.0, s)))  # round first: 59.6 s is "1m00s", not "60s"
    if r < 60:
        return f"{r}s"
    if r < 3600:
        return f"{r // 60}m{r % 60:02d}s"
    h, m = divmod(int(round(r / 60)), 60)
    return f"{h}h{m:02d}m"


class Progress:
    """Progress of a step loop from ``start`` to ``total``.

    On a terminal (``stream.isatty()``) a tqdm bar is redrawn in place; on anything else
    (CI logs, pipes, files) each update is one line without carriage returns, e.g.
    ``step 5/150 (12s, ETA 30s) loss 2.1``.

    The ETA is ``(time since construction - time spent compiling) / steps done × steps
    left``, so the time inside :meth:`compiling` (or between :meth:`start_compile` and
    :meth:`end_compile`) never inflates it; elapsed time shown is wall time, compile
    included.

    Args:
      total: the step the loop ends at.
      start: the step it starts from (a resumed run), so the rate counts only steps run here.
      stream: where to write (default: ``sys.stderr`` at construction time).
      clock: seconds as a float; injectable so tests need not sleep.
    """

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.start = int(total), int(start)
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = clock()
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.compile_s = 0.0  # all compile time so far; excluded from the rate
        self._compile_t0: float | None = None
        self._compile_what = ""
        self._bar: _Bar | None = None
        self._last_step = self.start

    def eta(self, step: int) -> float | None:
        """Seconds left after ``step`` at the rate measured so far (compiles excluded);
        ``None`` before a step has completed."""
        done = step - self.start
        if done <= 0:
            return None
        busy = self.clock() - self.t0 - self.compile_s - self._compiling_for()
        return max(busy, 0.0) / done * max(self.total - step, 0)

    def _compiling_for(self) -> float:
        return 0.0 if self._compile_t0 is None else self.clock() - self._compile_t0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start_compile(self, what: str = "the step") -> None:
        """Says ``compiling <what>...`` and stops the ETA clock until :meth:`end_compile`."""
        self._compile_t0, self._compile_what = self.clock(), what
        if self.tty:
            if self._bar is not None:
                self._bar.clear()
            self._write(f"compiling {what}... ")  # the end message completes this line
        else:
            self._write(f"compiling {what}...\n")

    def end_compile(self, failed: bool = False) -> float:
        """Says ``compiled in X s`` (or ends the line if ``failed``); returns X."""
        if self._compile_t0 is None:
            return 0.0
        dt = self.clock() - self._compile_t0
        self._compile_t0 = None
        self.compile_s += dt
        if failed:
            # Finish the half-written terminal line so the error message starts clean.
            self._write(f"stopped after {dt:.1f} s\n" if self.tty else f"compile stopped after {dt:.1f} s\n")
        else:
            self._write(f"compiled in {dt:.1f} s\n")
        if self._bar is not None:
            self._bar.refresh()
        return dt

    @contextlib.contextmanager
    def compiling(self, what: str = "the step") -> Iterator[None]:
        """Context manager around a compile: :meth:`start_compile` then :meth:`end_compile`
        (also on an exception such as KeyboardInterrupt, which is re-raised)."""
        self.start_compile(what)
        try:
            yield
        except BaseException:
            self.end_compile(failed=True)
            raise
        self.end_compile()

    def _line(self, step: int, text: str) -> str:
        elapsed = self.clock() - self.t0
        return f"step {step}/{self.total} ({format_seconds(elapsed)}, ETA {format_seconds(self.eta(step))}) {text}".rstrip()

    def update(self, step: int, text: str, force_line: bool = False) -> None:
        """Shows ``step`` with ``text`` (e.g. the latest loss).

        ``force_line`` writes a permanent log line even on a terminal (above the bar).
        """
        self._last_step = step
        if not self.tty:
            self._write(self._line(step, text) + "\n")
            return
        if force_line:
            if self._bar is not None:
                self._bar.write(self._line(step, text), file=self.stream)
            else:
                self._write(self._line(step, text) + "\n")
            return
        desc = f"({format_seconds(self.clock() - self.t0)}, ETA {format_seconds(self.eta(step))}) {text}"
        if self._bar is None:
            # Created at the first update so compile messages come before the bar.
            self._bar = _Bar(total=self.total, initial=self.start, file=self.stream, dynamic_ncols=True,
                             disable=False, leave=True, mininterval=0,
                             bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {desc}", desc=desc)
        self._bar.set_description_str(desc, refresh=False)
        self._bar.n = step
        self._bar.refresh()

    def close(self) -> None:
        """Ends the bar's line (terminal); safe to call more than once."""
        if self._compile_t0 is not None:
            self.end_compile(failed=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
