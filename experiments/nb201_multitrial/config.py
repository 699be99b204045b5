"""NAS-Bench-201's multi-trial baselines on its table (Dong & Yang, "NAS-Bench-201:
Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020, Table 5).

Search on CIFAR-10-valid with the 12-epoch validation accuracy as reward, each query
charged the table's ``cifar10_valid_12ep_time_s`` against 12,000 simulated seconds; the
chosen architecture (best reward seen) is reported by its 200-epoch CIFAR-10 test
accuracy, mean ± std over 500 runs.

Variants: ``rs`` (Li & Talwalkar 2019), ``rea`` (Real et al. 2019: population 10,
sample 3), ``reinforce`` (Williams 1992: Adam lr 0.001 as the benchmark's REINFORCE.sh,
EMA baseline 0.9), ``predictor`` (Wen et al. 2020 / BANANAS' MLP ensemble), ``nsga2``
(Deb et al. 2002: accuracy vs Pixel 3 latency), ``mnasnet`` and ``hard`` (latency-aware
single objective), ``smoke`` (a few runs, seconds).

Command:
  DNAS_NB201_TABLE=../shared/data/nb201/nb201_table.csv \
    dnas search --config experiments/nb201_multitrial/config.py:rea --workdir runs/rea

Expected (500 runs, measured here; paper in brackets): rs 93.74 ± 0.38 [93.70 ± 0.36],
rea 93.92 ± 0.38 [93.92 ± 0.30], reinforce 93.74 ± 0.35 [93.85 ± 0.37]
(experiments/README.md). Runtime on 2 CPU cores: 2-4 s compile + < 1 s for 500 runs.
"""

import ml_collections

from dnas.run.multitrial import multitrial_defaults

STRATEGY = {
    "rs": ("random", {}),
    "rea": ("rea", {"population": 10, "sample_size": 3}),
    "reinforce": ("reinforce", {"learning_rate": 0.001, "ema_momentum": 0.9}),
    "predictor": ("predictor", {"initial": 20, "batch": 5, "candidates": 500, "history": 128}),
    "nsga2": ("nsga2", {"population": 20, "batch": 20}),
    "mnasnet": ("rea", {"population": 10, "sample_size": 3}),
    "hard": ("rea", {"population": 10, "sample_size": 3}),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: one of ``STRATEGY``'s keys, or ``smoke`` (REA, 4 runs, 3,000 s budget)."""
    variant = arg or "rea"
    c = multitrial_defaults()
    if variant == "smoke":
        variant = "rea"
        c.runs, c.runs_per_chunk, c.budget_s = 4, 2, 3000.0
    if variant not in STRATEGY:
        raise ValueError(f"unknown variant {variant!r}; known: smoke, {', '.join(STRATEGY)}")
    c.strategy, kwargs = STRATEGY[variant]
    c.strategy_kwargs = ml_collections.ConfigDict(kwargs)
    if variant == "predictor":
        c.runs = 100  # the predictor refits an ensemble every round: 100 runs take minutes, not seconds
    if variant == "nsga2":
        c.objective, c.objective_kwargs = "multi", ml_collections.ConfigDict({"metrics": ["cifar10_val_12ep", "-lat_ms_pixel3"]})
        c.budget_s, c.runs = 60000.0, 20
    if variant == "mnasnet":  # MnasNet's soft constraint at a 12 ms Pixel 3 target
        c.objective = "mnasnet"
        c.objective_kwargs = ml_collections.ConfigDict({"latency": "lat_ms_pixel3", "target": 12.0, "alpha": -0.07, "beta": -0.07})
    if variant == "hard":  # reject anything slower than 12 ms on a Pixel 3
        c.objective, c.objective_kwargs = "hard", ml_collections.ConfigDict({"limits": {"lat_ms_pixel3": 12.0}})
    return c
