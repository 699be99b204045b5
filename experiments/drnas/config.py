"""DrNAS (Chen, Wang, Cheng, Tang & Hsieh, "DrNAS: Dirichlet Neural Architecture
Search", ICLR 2021) on NAS-Bench-201 (default) or the DARTS CIFAR-10 space (``:darts``).

Command:
  dnas search --config experiments/drnas/config.py --workdir runs/drnas --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/drnas/config.py:darts --workdir runs/drnas-darts --config.data_dir=...
  dnas search --config experiments/drnas/config.py:smoke --workdir /tmp/w      # CPU smoke

Method (``dnas.search.methods``, ``drnas``): mixing weights sampled from Dirichlet(β), β =
elu(α) + 1 (reparameterised), the regulariser ``1e-3 · Σ KL(Dir(β) || Dir(1))`` on the α
loss (the code's ``reg_type="kl"``; its default ``"l2"`` adds nothing beyond Adam's weight
decay: ``--config.arch_penalty=""``), and the architecture derived from the Dirichlet mean
``β / Σβ``. Not reproduced: the progressive partial-channel schedule of the DARTS-space
search (K 6 -> 3 with network widening); ``--config.space_kwargs.partial_channels=6``
gives the fixed-K part.
Settings (xiangning-chen/DrNAS ``201-space/train_search.py``): NB201 cell, C=16, N=5,
100 epochs, batch 64, SGD lr 0.025 -> 0.001 cosine, momentum 0.9, wd 3e-4, clip 5; α Adam
3e-4 betas (0.5, 0.999) wd 1e-3; first order.
Expected result: NB201 CIFAR-10 test accuracy 94.36 ± 0.00 % (DrNAS paper, Table 3; the
global optimum is 94.37); DARTS space 2.46 ± 0.03 % test error retrained (progressive).
Run time: NB201 about 0.1 GPU-days (paper); not measured with dnas on a GPU.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.space.genotype import NB201_OPS
from dnas.search.methods import apply_method


def get_config(arg: str | None = None):
    flags = set((arg or "").split(",")) - {""}
    if flags - {"darts", "smoke"}:
        raise ValueError(f"unknown config arg(s) {sorted(flags - {'darts', 'smoke'})}; use darts, smoke (comma-separated)")
    c = search_defaults()
    if "darts" not in flags:
        c.space, c.layers = "nb201", 5
        c.space_kwargs.ops = list(NB201_OPS)
    apply_method(c, "drnas")
    c.epochs = 100 if "darts" not in flags else 50
    c.hessian_iters = 20
    if "smoke" in flags:
        apply_smoke(c, init_channels=4, layers=3 if "darts" in flags else 1)
        c.hessian_iters = 0
        if "darts" in flags:
            c.space_kwargs.nodes = 2
    return c
