"""How far the one-shot supernet of the layer-wise ProxylessNAS space ranks like training
from scratch (issue 32): SPOS uniform sampling (Guo et al., ECCV 2020) against the sandwich
rule (Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques", ICCV
2019; BigNAS, Yu et al., ECCV 2020) with and without in-place distillation, at CPU size.

Command (the whole experiment: the three supernets, a few dozen architectures trained from
scratch, the rank correlations, JSON out):
  python benchmarks/layerwise_ranking.py --data-dir ../shared/data/images/cifar10_subset \
      --out benchmarks/layerwise_ranking.json
One supernet alone, with dnas' run machinery:
  dnas search --config experiments/layerwise_ranking/config.py:sandwich_kd --workdir runs/lw_kd \
      --config.data_dir=../shared/data/images/cifar10_subset
  dnas eval runs/lw_kd --archs 24

Setting: the CIFAR-10 subset (5,085 training images, half for the weights and half held out
for the one-shot accuracy, as every dnas supernet splits) at 16x16, the ProxylessNAS space
with at most 2 blocks per stage, candidates MBConv k3e3 / k5e3 / k7e6 (+ zero where a
block has the shortcut), stem width 16 (every width halved), batch 64, SGD momentum 0.9,
cosine lr 0.05, wd 4e-5, no augmentation. The supernets get the same number of
path-steps (forward+backward of one path): SPOS 1,600 steps of 1 path, the sandwich 400
steps of 4 paths (largest, smallest, 2 random; BigNAS' n = 2). ``truth``: the config each
architecture is trained from scratch with (400 steps, its own seed; only its own path).
Expected result: measured in experiments/README.md ("One-shot ranking on the layer-wise
space (issue 32)"). ``smoke``: 1 block per stage, 8 channels, a few steps.
Run time: 21.6 CPU-minutes of training for the whole benchmark (24 architectures) on one core; ``smoke`` about a minute.
"""

import ml_collections

from dnas.run.config import apply_smoke
from dnas.run.search import search_defaults
from dnas.search.methods import apply_method

OPS = ["mb_k3_e3", "mb_k5_e3", "mb_k7_e6"]
VARIANTS = ("spos", "sandwich", "sandwich_kd", "truth")
PATHS_PER_SANDWICH_STEP = 4  # largest + smallest + 2 random


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    bad = [p for p in parts if p not in VARIANTS + ("smoke",)]
    if bad or sum(p in VARIANTS for p in parts) > 1:
        raise ValueError(f"unknown config arg {arg!r}; use one of {', '.join(VARIANTS)}, optionally with ',smoke' (or smoke alone)")
    variant = next((p for p in parts if p in VARIANTS), "spos")
    c = search_defaults()
    apply_method(c, "spos")
    c.space, c.layers, c.init_channels = "proxylessnas", 2, 16
    c.space_kwargs.ops = list(OPS)
    c.dataset, c.downsample, c.augment = "cifar10", 2, False
    c.batch_size, c.w_lr, c.w_lr_min, c.w_weight_decay = 64, 0.05, 0.0, 4e-5
    c.eval_bn = "batch"
    steps = {"spos": 1600, "sandwich": 1600 // PATHS_PER_SANDWICH_STEP, "sandwich_kd": 1600 // PATHS_PER_SANDWICH_STEP, "truth": 400}[variant]
    spe = 2542 // c.batch_size  # the weight half of the 5,085-image subset
    c.epochs = -(-steps // spe)
    c.max_steps = steps
    c.sandwich.enabled = variant.startswith("sandwich")
    c.sandwich.distill = variant == "sandwich_kd"
    if "smoke" in parts:
        apply_smoke(c, init_channels=8, layers=1)
        c.max_steps = 4
    return c
