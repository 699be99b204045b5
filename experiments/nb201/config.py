"""DARTS on the NAS-Bench-201 space (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020), CIFAR-10.

Command:
  dnas search --config experiments/nb201/config.py --workdir runs/nb201 \
      --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/nb201/config.py:smoke --workdir /tmp/w   # CPU smoke

Setting (the benchmark's DARTS-V1 baseline): cell of 4 nodes / 6 edges over 5 ops, shared
by all 15 cells (N=5), C=16, 50 epochs, batch 64, weights SGD lr 0.025 -> 0.001 cosine,
Nesterov momentum 0.9, wd 5e-4, clip 5; α Adam 3e-4, betas (0.5, 0.999), wd 1e-3 (AutoDL's
``configs/nas-benchmark/algos/DARTS.config``).
Expected result: DARTS collapses to parameter-free ops on this space; the benchmark reports
54.30 ± 0.00 % CIFAR-10 test accuracy for DARTS-V1's derived cell (all skip connections).
Look the derived arch_str up in ../shared/data/nb201/nb201_table.csv.
Run time at paper settings: about 3 GPU-hours (the benchmark's report); not measured with
dnas on a GPU yet.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.space.genotype import NB201_OPS


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke or nothing")
    c = search_defaults()
    c.space = "nb201"
    c.space_kwargs.ops = list(NB201_OPS)
    c.layers = 5
    c.init_channels = 16
    c.w_weight_decay = 5e-4
    c.w_nesterov = True
    if arg == "smoke":
        apply_smoke(c, init_channels=4, layers=1)
    return c
