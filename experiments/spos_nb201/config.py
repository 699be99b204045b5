"""Supernet training by uniformly sampled single paths on NAS-Bench-201, then one-shot
ranking of its cells: SPOS (Guo et al., ECCV 2020) / RSPS (Li & Talwalkar, UAI 2019; the
benchmark's "RSPS" baseline, Dong & Yang, ICLR 2020), CIFAR-10.

Command:
  dnas search --config experiments/spos_nb201/config.py --workdir runs/spos --config.data_dir=CIFAR
  python benchmarks/oneshot_rank.py --run runs/spos --archs 1000 --table nb201_table.csv [--recalibrate 4]
  dnas search --config experiments/spos_nb201/config.py:cpu --workdir runs/spos_cpu   # ~1 h on 2 CPU cores
  dnas search --config experiments/spos_nb201/config.py:smoke --workdir /tmp/w

Setting: the NB201 supernet (C=16, N=5), one uniformly drawn op per edge and step
(relax="uniform", weights only: α is not trained), weights SGD lr 0.025 -> 0.001 cosine,
Nesterov momentum 0.9, wd 5e-4, batch 64, on the DARTS half of CIFAR-10's training set
(the other half is the validation split the one-shot accuracies are measured on).
``:cpu`` trades width and depth for time (C=8, N=2, the 5,085-image CIFAR subset).
Expected result: the benchmark reports RSPS' chosen cells at 87.66 ± 1.69 % CIFAR-10
test accuracy; one-shot rankings of NB201 cells correlate weakly with the true ones
(Kendall τ around 0.2-0.6 in the literature, depending on BN handling and training).
Run time: a few GPU hours at paper settings (not measured with dnas on a GPU).
"""

from dnas.config import apply_smoke, search_defaults
from dnas.genotype import NB201_OPS
from dnas.methods import apply_method


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke", "cpu"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke, cpu or nothing")
    c = search_defaults()
    apply_method(c, "spos")
    c.space = "nb201"
    c.space_kwargs.ops = list(NB201_OPS)
    c.layers, c.init_channels = 5, 16
    c.epochs = 250
    c.w_weight_decay, c.w_nesterov = 5e-4, True
    if arg == "cpu":
        from dnas.config import shared_data

        c.data_dir = shared_data("images", "cifar10_subset")
        c.layers, c.init_channels, c.epochs, c.batch_size = 2, 8, 60, 64
        c.log_every_steps, c.checkpoint_every_steps = 20, 200
    if arg == "smoke":
        apply_smoke(c, init_channels=4, layers=1)
    return c
