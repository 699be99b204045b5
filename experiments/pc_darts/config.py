"""PC-DARTS (Xu, Xie, Zhang, Chen, Qi, Tian & Xiong, "PC-DARTS: Partial Channel
Connections for Memory-Efficient Architecture Search", ICLR 2020) on CIFAR-10.

Command:
  dnas search --config experiments/pc_darts/config.py --workdir runs/pcdarts --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/pc_darts/config.py:smoke --workdir /tmp/w      # CPU smoke

Method (``dnas.search.methods``, ``pc_darts``): 1/K of the channels (K=4) through each mixed op,
the rest bypassing it (max-pooled on reduction edges), then a channel shuffle
(``space_kwargs.partial_channels``); edge normalisation β per node (``normal/beta_node_3``
..., softmax over the node's input edges, ``space_kwargs.edge_norm``), which scales every
edge in the supernet and ranks edges at derivation by ``β_i · max_op w_i``; α and β frozen
for the first 15 epochs (``a_warmup_epochs``).
Settings (yuhuixu1993/PC-DARTS ``train_search.py``): C=16, 8 cells, 50 epochs, batch 256,
SGD lr 0.1 -> 0 cosine, momentum 0.9, wd 3e-4, clip 5; α Adam 6e-4 betas (0.5, 0.999) wd
1e-3; first order.
Expected result: 2.57 ± 0.07 % CIFAR-10 test error retrained (3.6M params; paper Table 1;
the published cell is ``dnas show PC_DARTS``).
Run time: 0.1 GPU-days (1080Ti) in the paper; not measured with dnas on a GPU.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults
from dnas.search.methods import apply_method


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke or nothing")
    c = search_defaults()
    apply_method(c, "pc_darts")
    c.batch_size = 256
    c.w_lr, c.w_lr_min = 0.1, 0.0
    c.a_lr = 6e-4
    c.hessian_iters = 20
    if arg == "smoke":
        # C=4 with K=4: one channel per op in normal cells, two in reduction cells.
        apply_smoke(c, init_channels=4, layers=3, a_warmup_epochs=0)
        c.space_kwargs.nodes = 2
        c.hessian_iters = 0
    return c
