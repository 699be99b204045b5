"""The progress line: plain log lines off a terminal, a tqdm bar on one, and an ETA that
leaves compile time out (driven by an injected clock, no sleeping)."""

import io

import pytest

from dnas.run.progress import Progress, format_seconds


class Clock:
    """A settable clock: tests move time by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True



@pytest.mark.parametrize("s,want", [(None, "?"), (float("nan"), "?"), (0.4, "0s"), (42.4, "42s"), (59.4, "59s"), (59.6, "1m00s"),
                                    (125, "2m05s"), (3599.6, "1h00m"), (7620, "2h07m")])
def test_format_seconds(s, want):
    assert format_seconds(s) == want


def test_plain_lines_off_a_terminal():
    clock, out = Clock(), io.StringIO()
    p = Progress(150, 0, out, clock=clock)
    assert not p.tty
    clock.t += 12
    p.update(5, "loss 2.100")
    clock.t += 2
    p.update(10, "loss 1.900", force_line=True)
    p.close()
    text = out.getvalue()
    assert "\r" not in text and "\033" not in text
    # 12 s for 5 steps -> 2.4 s/step x 145 left = 348 s; then 14 s / 10 x 140 = 196 s.
    assert text.splitlines() == ["step 5/150 (12s, ETA 5m48s) loss 2.100", "step 10/150 (14s, ETA 3m16s) loss 1.900"]


def test_eta_excludes_a_5s_compile():
    clock, out = Clock(), io.StringIO()
    p = Progress(100, 0, out, clock=clock)
    with p.compiling():
        clock.t += 5.0
    clock.t += 10.0  # 10 steps at 1 s each
    p.update(10, "x")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["compiling the step...", "compiled in 5.0 s"]
    # 90 steps left at 1 s/step; counting the compile would say 1.5 s/step = 135 s.
    assert lines[2] == "step 10/100 (15s, ETA 1m30s) x"
    assert p.eta(10) == pytest.approx(90.0)
    assert p.compile_s == pytest.approx(5.0)


def test_start_end_compile_pair_and_second_compile_also_excluded():
    clock, out = Clock(), io.StringIO()
    p = Progress(100, 0, out, clock=clock)
    p.start_compile("the train step")
    clock.t += 30
    assert p.end_compile() == pytest.approx(30)
    clock.t += 20
    p.update(20, "")
    p.start_compile("the eval step")  # e.g. the first epoch-end evaluation
    clock.t += 7
    assert p.eta(20) == pytest.approx(80.0)  # the running compile is not counted either
    p.end_compile()
    clock.t += 20
    assert p.eta(40) == pytest.approx(60.0)
    assert "compiling the train step...\n" in out.getvalue() and "compiled in 7.0 s\n" in out.getvalue()


def test_resumed_run_rate_counts_only_steps_run_here():
    clock, out = Clock(), io.StringIO()
    p = Progress(100, start=50, stream=out, clock=clock)
    clock.t += 10
    p.update(60, "")
    assert p.eta(60) == pytest.approx(40.0)
    assert p.eta(50) is None  # nothing run yet: unknown, not 0 or infinite
    assert "ETA 40s" in out.getvalue()


def test_interrupted_compile_reraises_and_ends_the_line():
    clock, out = Clock(), Tty()
    p = Progress(10, 0, out, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        with p.compiling():
            clock.t += 3
            raise KeyboardInterrupt
    assert out.getvalue() == "compiling the step... stopped after 3.0 s\n"
    p.close()
    assert out.getvalue().endswith("\n")


def test_terminal_bar():
    clock, out = Clock(), Tty()
    p = Progress(100, 0, out, clock=clock)
    assert p.tty
    with p.compiling():
        clock.t += 5
    assert out.getvalue() == "compiling the step... compiled in 5.0 s\n"  # one line on a terminal
    clock.t += 10
    p.update(10, "loss 1.234")
    clock.t += 10
    p.update(20, "loss 0.987")
    p.update(20, "a log line", force_line=True)
    p.close()
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "20/100" in text and "ETA 1m20s" in text and "loss 0.987" in text
    assert "|" in text and "20%" in text  # tqdm's bar
    assert "step 20/100 (25s, ETA 1m20s) a log line\n" in text
    assert text.endswith("\n")
    p.close()  # idempotent


def test_call_sites_signature_still_works(capsys):
    # Progress(total, start) with the default stream, as loop.py / retrain.py call it.
    p = Progress(4, 1)
    p.update(2, "loss 1.0")
    p.close()
    assert "2/4" in capsys.readouterr().err
