"""Retrain a derived DARTS cell from scratch on CIFAR-10 (Liu et al., ICLR 2019, Sec. 3.3).

Command:
  dnas train --config experiments/darts_retrain/config.py --genotype DARTS_V2 \
      --workdir runs/v2 --config.data_dir=/path/to/cifar-10-batches-py
  dnas train --config experiments/darts_retrain/config.py:smoke --genotype DARTS_V2 --workdir /tmp/t

Setting: 20 cells, C=36, 600 epochs, batch 96, SGD lr 0.025 cosine, momentum 0.9,
wd 3e-4, clip 5, cutout 16, drop-path 0.2 (ramped), auxiliary head weight 0.4.
Expected result: DARTS_V2 2.76 ± 0.09 % test error (3.3M params); DARTS_V1 3.00 ± 0.14 %.
Run time at paper settings: about 1.5 GPU-days on a 1080Ti; not measured with dnas yet.
"""

from dnas.run.config import apply_smoke

from dnas.run.train import train_defaults


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke or nothing")
    c = train_defaults()
    if arg == "smoke":
        apply_smoke(c, max_test_examples=256, init_channels=8, layers=3)
        c.cutout = 16 if c.dataset == "cifar10" else 4
    return c
