"""Single Path One-Shot NAS (Guo, Zhang, Mu, Heng, Liu, Wei & Sun, "Single Path One-Shot
Neural Architecture Search with Uniform Sampling", ECCV 2020) on the ProxylessNAS
layer-wise mobile space: (1) train the supernet with one uniformly sampled block per layer
and step; (2) search it by evolution under a FLOPs limit, each candidate scored by its
one-shot accuracy with the supernet's weights after BatchNorm recalibration.

Command:
  dnas search --config experiments/spos/config.py --workdir runs/spos --config.data_dir=CIFAR
  dnas search --config experiments/spos/config.py:evolution --workdir runs/spos_ea \
      --config.estimator_kwargs.base_kwargs.run_dir=runs/spos
  dnas search --config experiments/spos/config.py:smoke --workdir /tmp/s
  dnas search --config experiments/spos/config.py:evolution_smoke --workdir /tmp/e \
      --config.estimator_kwargs.base_kwargs.run_dir=/tmp/s

Setting: the paper's supernet training (Sec. 4: SGD momentum 0.9, wd 4e-5, lr 0.5 decayed
linearly, batch 1024, 120 epochs on ImageNet) is at ImageNet scale; on CIFAR-10 here, lr
0.1 -> 0 cosine, batch 128, 120 epochs, wd 4e-5; every block's candidate (MBConv k{3,5,7}
x e{3,6}, and zero where the block has a shortcut, so depth is searched too) is drawn
uniformly (relax="uniform", weights only). The paper's blocks are ShuffleNetV2 units
(k 3/5/7 and Xception); dnas has no ShuffleNet space, the layer-wise MBConv space is the
nearest. Evolution: the paper's EA (population 50, 20 generations, top 10 parents,
mutation and crossover) is replaced by regularised evolution (Real et al. 2019:
population 50, tournament 10) over 1,000 one-shot evaluations, the paper's FLOPs limit as
a hard constraint (330 M multiply-adds at 224 × 224), BN recalibration on 4 batches
(the paper recalibrates on 20,000 training images). ``:smoke``: 1 block per stage, 8
channels, 3 candidates, a few steps; ``:evolution_smoke``: 40 evaluations.
Expected result (paper, block search): 74.3 % ImageNet top-1 at 319 M FLOPs. Not run at
paper settings with dnas; the smoke variants run in CI.
Run time: ``:smoke`` and ``:evolution_smoke`` about a minute each on 2 CPU cores.
"""

import ml_collections

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.search.methods import apply_method

SMOKE_OPS = ["mb_k3_e3", "mb_k5_e3", "mb_k7_e6"]


def _supernet(smoke: bool) -> ml_collections.ConfigDict:
    c = search_defaults()
    apply_method(c, "spos")
    c.space = "proxylessnas"
    c.layers, c.init_channels = 4, 32
    c.epochs, c.batch_size = 120, 128
    c.w_lr, c.w_lr_min, c.w_weight_decay = 0.1, 0.0, 4e-5
    if smoke:
        apply_smoke(c, init_channels=8, layers=1)
        c.space_kwargs.ops = list(SMOKE_OPS)
    return c


def _evolution(smoke: bool) -> ml_collections.ConfigDict:
    from dnas.run.multitrial import multitrial_defaults

    c = multitrial_defaults()
    s = _supernet(smoke)
    # The searched space must be the supernet's: same blocks per stage and candidates.
    c.space = s.space
    c.space_kwargs = ml_collections.ConfigDict({**s.space_kwargs.to_dict(), "layers": s.layers})
    c.strategy = "rea"
    c.strategy_kwargs = ml_collections.ConfigDict({"population": 50, "sample_size": 10})
    c.estimator = "hardware"
    c.estimator_kwargs = ml_collections.ConfigDict({
        "base": "oneshot", "base_kwargs": {"run_dir": "", "recalibrate": 4, "val_batches": 8},
        "counts": True, "resolution": 224,
    })
    c.objective = "hard"
    c.objective_kwargs = ml_collections.ConfigDict({"metric": "oneshot_acc", "limits": {"macs_m": 330.0}})
    c.report_metric = c.valid_metric = "oneshot_acc"
    c.budget_s, c.runs, c.runs_per_chunk = 1000.0, 1, 1  # the oneshot estimator charges 1 per architecture
    if smoke:
        c.strategy_kwargs = ml_collections.ConfigDict({"population": 8, "sample_size": 3})
        c.estimator_kwargs.base_kwargs = {"run_dir": "", "recalibrate": 1, "val_batches": 2}
        c.estimator_kwargs.resolution = 32
        c.objective_kwargs.limits = {"macs_m": 1e9}
        c.budget_s = 40.0
    return c


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke", "evolution", "evolution_smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke, evolution, evolution_smoke or nothing")
    if arg in ("evolution", "evolution_smoke"):
        return _evolution(arg == "evolution_smoke")
    return _supernet(arg == "smoke")
