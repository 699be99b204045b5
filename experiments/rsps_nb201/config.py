"""Random search with parameter sharing on NAS-Bench-201 (RSPS: Li & Talwalkar, "Random
Search and Reproducibility for Neural Architecture Search", UAI 2019; the benchmark's "RSPS"
baseline, Dong & Yang, ICLR 2020), CIFAR-10: a supernet trained by one uniformly sampled
path per step, then cells ranked by their one-shot accuracy with its shared weights.

Command:
  dnas search --config experiments/rsps_nb201/config.py --workdir runs/rsps --config.data_dir=CIFAR
  dnas eval runs/rsps --archs 1000 --table nb201_table.csv [--bn-recalib 4]
  dnas search --config experiments/rsps_nb201/config.py:cpu --workdir runs/rsps_cpu   # 2 CPU cores, see below
  dnas search --config experiments/rsps_nb201/config.py:smoke --workdir /tmp/w && dnas eval /tmp/w --archs 20

Setting: the NB201 supernet (C=16, N=5), one uniformly drawn op per edge and step
(relax="uniform", weights only: α is not trained), weights SGD lr 0.025 -> 0.001 cosine,
Nesterov momentum 0.9, wd 5e-4, batch 64, 250 epochs, on the DARTS half of CIFAR-10's
training set (the other half is the validation split the one-shot accuracies are measured
on). RSPS then draws random cells and keeps the best by one-shot accuracy (``dnas eval``,
or the ``oneshot`` estimator under ``random``). SPOS (Guo et al., ECCV 2020) trains the
supernet the same way and searches it by evolution (``experiments/spos``).
``:cpu`` trades width and depth for time (C=8, N=2, the benchmark's 250 epochs on the
5,085-image CIFAR subset in ``../shared/data``).
Expected result: the benchmark reports RSPS' chosen cells at 87.66 ± 1.69 % CIFAR-10
test accuracy; one-shot rankings of NB201 cells correlate weakly with the true ones
(Kendall τ around 0.2-0.6 in the literature, depending on BN handling and training).
Measured here (``:cpu``): see experiments/README.md, "One-shot ranking".
Run time: a few GPU hours at paper settings (not measured with dnas on a GPU); ``:cpu``
35 minutes of training on one CPU core; ``:smoke`` seconds after compiling.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.space.genotype import NB201_OPS
from dnas.search.methods import apply_method


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke", "cpu"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke, cpu or nothing")
    c = search_defaults()
    apply_method(c, "rsps")
    c.space = "nb201"
    c.space_kwargs.ops = list(NB201_OPS)
    c.layers, c.init_channels = 5, 16
    c.epochs = 250
    c.w_weight_decay, c.w_nesterov = 5e-4, True
    if arg == "cpu":
        from dnas.data.datasets import shared_data

        c.data_dir = shared_data("images", "cifar10_subset")
        c.layers, c.init_channels, c.epochs, c.batch_size = 2, 8, 250, 64
        c.log_every_steps, c.checkpoint_every_steps = 20, 200
    if arg == "smoke":
        apply_smoke(c, init_channels=4, layers=1)
    return c
