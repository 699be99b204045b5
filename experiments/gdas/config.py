"""GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours",
CVPR 2019) on the DARTS CIFAR-10 space, or on NAS-Bench-201 (``:nb201``).

Command:
  dnas search --config experiments/gdas/config.py --workdir runs/gdas --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/gdas/config.py:nb201 --workdir runs/gdas201 --config.data_dir=...
  dnas search --config experiments/gdas/config.py:smoke --workdir /tmp/w      # CPU smoke

Method (``dnas.search.methods``, ``gdas``): one op per edge sampled by hard Gumbel-softmax and
only that op computed, scaled by the straight-through weight ``h - sg(p) + p``; τ linear
from 10 to 0.1 over the epochs (``dnas.space.relax.gdas``, which documents the one place where
the α-gradient deliberately differs from AutoDL's ``hardwts`` sum).
Settings (paper, Sec. 4.1; AutoDL ``configs/nas-benchmark/algos/GDAS.config`` for NB201):
C=16, 8 cells, 250 epochs, batch 64, SGD lr 0.025 -> 0.001 cosine, momentum 0.9, wd 3e-4
(NB201: 5e-4, Nesterov), α Adam 3e-4 betas (0.5, 0.999) wd 1e-3, first order.
Expected result: 2.93 % CIFAR-10 test error retrained (3.4M params; paper Table 1);
NB201 CIFAR-10 test accuracy 93.61 ± 0.09 % (NAS-Bench-201 paper, Table 5).
Run time: 0.21 GPU-days (4 GPU-hours on a V100, the paper's title); not measured with
dnas on a GPU. The smoke variant runs in well under a minute on CPU.
"""

from dnas.run.search import method_config


def get_config(arg: str | None = None):
    flags = set((arg or "").split(",")) - {""}
    if flags - {"nb201", "smoke"}:
        raise ValueError(f"unknown config arg(s) {sorted(flags - {'nb201', 'smoke'})}; use nb201, smoke (comma-separated)")
    return method_config("gdas", epochs=250, nb201="nb201" in flags, smoke="smoke" in flags)
