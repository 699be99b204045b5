"""Fair DARTS (Chu, Zhou, Zhang & Li, "Fair DARTS: Eliminating Unfair Advantages in
Differentiable Architecture Search", ECCV 2020) on the DARTS CIFAR-10 space.

Command:
  dnas search --config experiments/fair_darts/config.py --workdir runs/fairdarts --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/fair_darts/config.py:smoke --workdir /tmp/w      # CPU smoke

Method (``dnas.search.methods``, ``fair_darts``): ``σ(α)`` per op instead of a softmax (ops do
not compete), the zero-one loss ``-10 · mean((σ(α) - 0.5)²)`` on the α loss, and the
architecture derived from ``σ(α)``: per node the two edges with the largest ``σ``, each
with its argmax op. Fair DARTS' parser (``threshold_sparse``) also drops a kept edge whose
``σ`` is below 0.85; a DARTS cell here always has two inputs per node, so such an edge is
kept (the epoch lines' α table shows which ones are below the threshold).
Settings (xiaomi-automl/FairDARTS ``fairdarts/train_search.py``): the 7 DARTS ops without
``none``, C=16, 8 cells, 50 epochs, batch 128, SGD lr 0.005 -> 0.001 cosine, momentum 0.9,
wd 3e-4, clip 5; α Adam 3e-3 betas (0.9, 0.999) wd 1e-3; first order.
Expected result: FairDARTS-a 2.54 ± 0.05 % CIFAR-10 test error retrained (2.8M params;
paper Table 2).
Run time: about 0.25 GPU-days in the paper; not measured with dnas on a GPU.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.search.methods import apply_method
from dnas.space.spaces.darts_cnn import DARTS_OPS


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke or nothing")
    c = search_defaults()
    apply_method(c, "fair_darts")
    c.space_kwargs.ops = [op for op in DARTS_OPS if op != "none"]
    c.batch_size = 128
    c.w_lr, c.w_lr_min = 0.005, 0.001
    c.a_lr, c.a_b1, c.a_b2 = 3e-3, 0.9, 0.999
    c.hessian_iters = 20
    if arg == "smoke":
        apply_smoke(c, init_channels=4, layers=3)
        c.space_kwargs.nodes = 2
        c.hessian_iters = 0
    return c
