"""Latency-constrained search on a device measured 10 times (HELP, Lee et al., "HELP:
Hardware-Adaptive Efficient Latency Prediction for NAS via Meta-Learning", NeurIPS 2021,
Table 4 setting) on the NAS-Bench-201 table.

A new device has a latency limit and 10 measured cells. A few-shot GCN latency predictor
(pretrained on the table's other devices, adapted with the 10 samples) is saved, loaded as
the ``gcn`` cost model inside the ``hardware`` estimator, and regularised evolution
rejects every cell *predicted* over the limit (``hard`` objective). The report is the
chosen cell's 200-epoch CIFAR-10 test accuracy; its true latency on the device is the
table's column (``lat_ms_<device>`` in the run's metrics).

Command (pixel2 held out, 10 samples, limit 14 ms):
  T=../shared/data/nb201/nb201_table.csv
  dnas predictor fit --space nb201 --csv $T --arch-column arch_str --target-column lat_ms_pixel2 \\
      --train 10 --seed 0 --model gcn --log-transfer --transfer-from $T \\
      --transfer-columns lat_ms_raspi4,lat_ms_pixel3,lat_ms_eyeriss,lat_ms_fpga,lat_ms_1080ti_1,lat_ms_1080ti_32,lat_ms_1080ti_256,lat_ms_gold_6226,lat_ms_titan_rtx_1,lat_ms_titan_rtx_32,lat_ms_titan_rtx_256,lat_ms_samsung_a50 \\
      --save pixel2.json
  DNAS_NB201_TABLE=$T dnas search --config experiments/help_nb201/config.py \\
      --config.estimator_kwargs.cost_model_kwargs.predictor=pixel2.json \\
      --config.objective_kwargs.limits.latency_ms=14 --workdir runs/help_pixel2_14

Expected: benchmarks/LATENCY.md ("Latency-constrained search", from
``benchmarks/help_constrained.py``): per device and limit, how often the chosen cell meets
the true limit and its accuracy against the best cell under the limit. Runtime: fitting
the predictor about a minute on 2 CPU cores (GCN pretraining), the search seconds.
Variants: ``smoke`` (4 runs, 3,000 s budget).
"""

import ml_collections

from dnas.run.multitrial import multitrial_defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``None`` (500 runs) or ``smoke``; the predictor file and the limit are overrides."""
    c = multitrial_defaults()
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown variant {arg!r}; known: smoke")
    c.strategy, c.strategy_kwargs = "rea", ml_collections.ConfigDict({"population": 10, "sample_size": 3})
    c.estimator = "hardware"
    c.estimator_kwargs = ml_collections.ConfigDict({
        "base": "nb201_table", "counts": False, "cost_model": "gcn",
        "cost_model_kwargs": {"predictor": "", "metric": "latency_ms"},  # the file dnas predictor fit --save wrote
    })
    c.objective = "hard"
    c.objective_kwargs = ml_collections.ConfigDict({"metric": "cifar10_val_12ep", "limits": {"latency_ms": 14.0}})
    if arg == "smoke":
        c.runs, c.runs_per_chunk, c.budget_s = 4, 2, 3000.0
    return c
