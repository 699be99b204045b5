"""Codesign NAS: the network and its systolic-array accelerator searched together.

The NAS-Bench-201 cell (15,625 cells, accuracy from the benchmark's table) joined with the
``systolic`` hardware space (array rows x columns 8..64, dataflow OS/WS/IS, ifmap / filter /
ofmap SRAM, DRAM bandwidth, clock: 49,152 designs) into one joint vector
(``space_kwargs.hardware="systolic"``), priced by the ``accelerator`` cost model (SCALE-Sim's
analytical compute cycles, bandwidth-bound memory stalls, Eyeriss-style energy, area from PEs
and SRAM; :mod:`dnas.hardware.accelerator`) on the CIFAR-10 network (32x32, C=16, N=5,
batch 1) the cell builds.

Variants (each with a ``_smoke`` twin of a few runs; ``smoke`` = ``nsga2_smoke``):

- ``nsga2``: joint discrete search, NSGA-II over the joint vector on four objectives
  (12-epoch validation accuracy, latency, energy, area), an area budget as a hard limit
  (NAAS, Lin et al., DAC 2021; "Best of Both Worlds", Abdelfattah et al., DAC 2020).
- ``sequential``: the usual practice as a baseline, same evaluations: regularised evolution
  for the best network under a MAC budget on a fixed baseline accelerator (32x32 WS, the
  middle of every range), then NSGA-II over the accelerator for that network.
- ``differentiable``: a DARTS-style bi-level search on the NB201 supernet (CPU size, CIFAR-10
  subset) whose α also holds one logit vector per hardware label; the α-loss adds the
  expected energy-delay-area product of the accelerator model under both distributions
  (DANCE, Choi et al., DAC 2021; EDD, Li et al., DAC 2020). ``differentiable_proxyless``
  does the same on the ProxylessNAS space (MBConv choices, 32x32 input).

Multi-trial variants write ``summary.json`` with ``hypervolume`` (pymoo's exact indicator on
objectives normalised by the fixed ``hv_reference`` / ``hv_ideal`` below, so joint and
sequential compare) and ``pareto`` (``{arch, hardware, accuracy, cifar10_val_12ep,
latency_ms, energy_mj, area_mm2}``); the differentiable ones write the derived pair and its
hypervolume on the same axes.

Commands:
  DNAS_NB201_TABLE=../shared/data/nb201/nb201_table.csv \\
    dnas search --config experiments/codesign/config.py:nsga2 --workdir runs/codesign-joint
  dnas search --config experiments/codesign/config.py:sequential --workdir runs/codesign-seq
  dnas search --config experiments/codesign/config.py:differentiable --workdir runs/codesign-diff
  dnas show runs/codesign-joint        # the front, accelerators named

Measured results (hypervolume, mean ± std over seeds): experiments/README.md, "Codesign".
"""

import ml_collections

from dnas.data.datasets import shared_data
from dnas.run.config import apply_smoke
from dnas.run.multitrial import multitrial_defaults
from dnas.run.search import search_defaults

TABLE = shared_data("nb201", "nb201_table.csv")
OBJECTIVES = ["cifar10_val_12ep", "-latency_ms", "-energy_mj", "-area_mm2"]
# The hypervolume's box (objective space, maximised). Over 20,000 random (cell, design)
# pairs of the default space the model gives latency 0.008-84 ms (median 1.6), energy
# 0.02-2.1 mJ (median 0.29) and area 0.27-4.4 mm^2 (median 1.2); the reference sits near the
# medians so the axes separate the good designs (a design beyond it in any objective adds
# nothing), the ideal at the best possible values.
HV_REFERENCE = [60.0, -2.0, -0.5, -3.0]
HV_IDEAL = [85.0, 0.0, 0.0, 0.0]
AREA_LIMIT_MM2 = 3.0  # a hard area budget (reject): larger designs are never on a front
MACS_LIMIT_M = 100.0  # the sequential baseline's MAC budget for its network step
BASELINE = {"rows": 32, "cols": 32, "dataflow": "ws", "ifmap_kb": 64, "filter_kb": 64, "ofmap_kb": 64, "dram_bw": 8, "clock_mhz": 400}
COST = {"resolution": 32, "C": 16, "batch": 1}
VARIANTS = ("nsga2", "sequential", "differentiable", "differentiable_proxyless")


def _multitrial(variant: str, smoke: bool) -> ml_collections.ConfigDict:
    c = multitrial_defaults()
    c.space = "nb201"
    c.space_kwargs = ml_collections.ConfigDict({"hardware": "systolic"})
    c.table = TABLE
    c.estimator = "hardware"
    c.estimator_kwargs = ml_collections.ConfigDict({
        "base": "nb201_table", "base_kwargs": {"table": TABLE}, "cost_model": "accelerator", "cost_model_kwargs": dict(COST),
        # MACs only where the sequential baseline's network step is limited by them
        "counts": variant == "sequential", "resolution": 32, "counts_kwargs": {"C": 16},
    })
    limits = {"area_mm2": AREA_LIMIT_MM2}
    if variant == "sequential":
        limits["macs_m"] = MACS_LIMIT_M  # constant in the hardware step: the network is fixed there
    c.objective = "multi"
    c.objective_kwargs = ml_collections.ConfigDict({"metrics": list(OBJECTIVES), "limits": limits})
    c.hv_reference, c.hv_ideal = list(HV_REFERENCE), list(HV_IDEAL)
    # Every variant pays the same number of (network, accelerator) evaluations; the table's
    # training time is not what limits a codesign search (the accelerator is priced in
    # microseconds), so the simulated budget does not bind.
    c.budget_s, c.max_evals = 1e12, 300
    c.runs, c.runs_per_chunk = 10, 10
    if variant == "nsga2":
        c.strategy = "nsga2"
        c.strategy_kwargs = ml_collections.ConfigDict({"population": 30, "batch": 10})
    else:
        c.strategy = "sequential"
        c.strategy_kwargs = ml_collections.ConfigDict({
            "network_evals": 150, "network_strategy": "rea", "network_kwargs": {"population": 20, "sample_size": 5},
            "hardware_strategy": "nsga2", "hardware_kwargs": {"population": 30}, "baseline": dict(BASELINE), "batch": 10,
        })
    if smoke:
        c.runs, c.runs_per_chunk, c.max_evals = 2, 2, 40
        if variant == "sequential":
            c.strategy_kwargs.network_evals = 20
    return c


def _differentiable(variant: str, smoke: bool) -> ml_collections.ConfigDict:
    c = search_defaults()
    proxyless = variant == "differentiable_proxyless"
    c.space_kwargs = ml_collections.ConfigDict({"hardware": "systolic"})
    if proxyless:
        c.space, c.layers, c.init_channels = "proxylessnas", 1, 8
        cost = {"resolution": 32, "batch": 1}
    else:
        c.space, c.layers, c.init_channels = "nb201", 1, 8
        cost = dict(COST)
        c.summary.table = TABLE
        c.summary.accuracy = "cifar10_test_200ep"
        c.summary.objectives = list(OBJECTIVES)
        c.summary.hv_reference, c.summary.hv_ideal = list(HV_REFERENCE), list(HV_IDEAL)
    c.summary.limits = ml_collections.ConfigDict({"area_mm2": AREA_LIMIT_MM2})  # the same area budget: the most likely design within it
    c.data_dir = shared_data("images", "cifar10_subset")
    c.dataset = "cifar10" if c.data_dir else "digits"
    c.max_train_examples = 2048
    c.epochs, c.batch_size = 8, 32
    c.a_lr, c.a_weight_decay = 0.02, 0.0  # α must commit within a CPU-sized run (the paper's 3e-4 needs 50 epochs)
    c.latency.cost_model = "accelerator"
    c.latency.cost_model_kwargs = ml_collections.ConfigDict(cost)
    c.latency.metric = "edap"  # energy x delay x area: one number that no single knob can drive to zero
    c.latency.penalty = "add#linear"
    c.latency.penalty_kwargs = ml_collections.ConfigDict({"lam": 0.1})
    c.latency.target_ms = 0.1  # a good design's EDAP (mJ ms mm^2); the term is lam * (edap - 0.1) / 0.1
    if smoke:
        apply_smoke(c, init_channels=4, layers=1)
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`, the same with ``_smoke``, or ``smoke`` (= ``nsga2_smoke``)."""
    variant = arg or "nsga2"
    if variant == "smoke":
        variant = "nsga2_smoke"
    smoke = variant.endswith("_smoke")
    base = variant[: -len("_smoke")] if smoke else variant
    if base not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; known: smoke, {', '.join(VARIANTS)} (each also as <name>_smoke)")
    return _differentiable(base, smoke) if base.startswith("differentiable") else _multitrial(base, smoke)
