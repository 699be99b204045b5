"""Timing under load (dnas.hardware.measure): interleaved rounds, robust summaries, the noise check."""

from __future__ import annotations

import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.hardware.measure import noise_check, summarise, time_interleaved


def test_rounds_call_every_function_once_in_a_shuffled_order():
    calls: list[int] = []
    fns = [lambda i=i: (calls.append(i), np.zeros(()))[1] for i in range(5)]
    times = time_interleaved(fns, warmup=1, repeats=4, rng=np.random.default_rng(0))
    assert times.shape == (5, 4) and np.all(times >= 0)
    assert calls[:5] == [0, 1, 2, 3, 4]  # the warm-up, in order
    assert time_interleaved(fns, warmup=0, repeats=1, rng=np.random.default_rng(0)).shape == (5, 1) and len(calls) == 30  # no warm-up
    rounds = [calls[5 + 5 * r: 10 + 5 * r] for r in range(4)]
    assert all(sorted(r) == list(range(5)) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, so a burst of load does not hit one entry each round
    assert time_interleaved(fns, warmup=0, repeats=2, rng=np.random.default_rng(0), clock="cpu").shape == (5, 2)
    with pytest.raises(DnasError, match="unknown clock"):
        time_interleaved(fns, warmup=0, repeats=1, rng=np.random.default_rng(0), clock="gpu")


def test_noise_check_tells_steady_from_loaded_timings():
    rng = np.random.default_rng(0)
    cost = np.linspace(10.0, 14.0, 20)  # 20 networks within 40 % of each other, like 20 sampled nets
    steady = cost[:, None] * (1 + 0.005 * rng.random((20, 8)))
    out = noise_check(steady, "min")
    assert out["noisy"] is False and out["reliability"] > 0.95
    # Load adds time (never removes it): bursts as large as the spread between networks.
    loaded = cost[:, None] + rng.exponential(4.0, (20, 8))
    out = noise_check(loaded, "median")
    assert out["noisy"] is True and "spearman" in out["why"]
    assert noise_check(steady[:, :1], "min")["noisy"] is None  # one repeat: nothing to split
    assert np.allclose(summarise(loaded, "min"), loaded.min(1))
    with pytest.raises(DnasError, match="unknown timing statistic"):
        summarise(loaded, "mean")
