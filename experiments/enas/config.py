"""ENAS (Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter
Sharing", ICML 2018) on the NAS-Bench-201 cell, as the benchmark's ENAS baseline (Dong &
Yang, ICLR 2020), and on the DARTS cell space (ENAS' micro search had 5 ops; DARTS' 8 here).

A controller policy samples a path through the supernet; the shared weights train on the
sampled path of each train batch, and the controller is trained by REINFORCE on the
sampled path's accuracy on a val batch (+ entropy bonus, moving-average baseline), the two
alternating every step (``dnas.search.plans.reinforce``; method ``enas`` in ``dnas.search.methods``).
The derived architecture written by the search is the policy's most likely one; ENAS'
own final selection (sample the controller 100 times, keep the best by one-shot accuracy,
AutoDL's ``controller_num_samples``) is ``dnas eval RUN --archs 100 --sample policy``.

Command:
  dnas search --config experiments/enas/config.py --workdir runs/enas --config.data_dir=CIFAR
  dnas search --config experiments/enas/config.py:darts --workdir runs/enas_darts --config.data_dir=CIFAR
  dnas eval runs/enas --archs 1000 --table nb201_table.csv        # the same supernet, read one-shot
  dnas search --config experiments/enas/config.py:smoke --workdir /tmp/w

Setting (default, NB201: AutoDL-Projects ``scripts-search/algos/ENAS.sh`` and
``configs/nas-benchmark/algos/ENAS.config``): C=16, N=5, 310 epochs, batch 128, weights SGD
lr 0.05 -> 0.0005 cosine, Nesterov 0.9, wd 2.5e-4; controller Adam lr 0.001, betas (0,
0.999), 20 sampled paths per controller step, entropy weight 1e-4, baseline decay 0.99,
logits ``2.5 · tanh(α / 5)`` (their controller's tanh constant and temperature).
``:darts``: ENAS' micro-search settings (``scripts/cifar10_micro_search.sh``): 150 epochs,
batch 160, weights lr 0.05 -> 0.0005 cosine, wd 1e-4; controller Adam lr 0.0035, β1 = 0, 10
samples per step, op logits ``0.44 · tanh(α)`` (1.10 / op_tanh_reduce 2.5).
Deviations: ENAS' controller is an LSTM over the decisions, here an independent categorical
per label (the benchmark's REINFORCE baseline's policy); ENAS trains the weights for an
epoch, then the controller for 30-50 steps; here one controller sample per weight step
(ENAS' ratio per epoch is about one sample per weight step); Adam's ε is optax' 1e-8, not 1e-3.
Expected result (NB201 paper, Table 5): ENAS 54.30 ± 0.00 % CIFAR-10 test accuracy (the
controller collapses onto parameter-free cells); ENAS' paper: 2.89 % CIFAR-10 test error
with its micro cell. Not run at paper settings with dnas (GPU-scale).
Run time: ``:smoke`` seconds after compiling on 2 CPU cores.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.space.genotype import NB201_OPS
from dnas.search.methods import apply_method


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke", "darts", "darts_smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke, darts, darts_smoke or nothing")
    c = search_defaults()
    apply_method(c, "enas")
    if arg in ("darts", "darts_smoke"):
        c.epochs, c.batch_size = 150, 160
        c.w_lr, c.w_lr_min, c.w_weight_decay = 0.05, 0.0005, 1e-4
        if arg == "darts_smoke":
            apply_smoke(c, init_channels=4, layers=3)
            c.space_kwargs.nodes = 2
        return c
    c.space = "nb201"
    c.space_kwargs.ops = list(NB201_OPS)
    c.layers, c.init_channels = 5, 16
    c.epochs, c.batch_size = 310, 128
    c.w_lr, c.w_lr_min, c.w_weight_decay, c.w_nesterov = 0.05, 0.0005, 2.5e-4, True
    c.a_lr = 0.001
    c.relax_kwargs.temperature, c.relax_kwargs.tanh_constant = 5.0, 2.5
    c.alpha_grad_kwargs.aggregate = 20
    if arg == "smoke":
        apply_smoke(c, init_channels=4, layers=1)
        c.alpha_grad_kwargs.aggregate = 2
    return c
