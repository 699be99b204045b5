"""The DARTS family on NAS-Bench-201 with real CIFAR-10 images, at a budget two CPU cores
afford, every method the same: the comparison of the NB201 paper's Table 5 (Dong & Yang,
ICLR 2020) and DrNAS' Table 3, run with dnas.

One config per method (``ARG`` = a method of :data:`dnas.search.methods.METHODS`: darts, darts2,
gdas, snas, pc_darts, drnas, fair_darts, enas), all with the same budget:

- data: the 5,085-image CIFAR-10 subset in ``../shared/data`` (half trains the weights,
  half α; ``--config.data_dir`` for full CIFAR-10);
- network: the NB201 search supernet at C=8, N=1 (one cell per stage; the benchmark's is
  C=16, N=5); batch 64; 10 epochs; the methods' own settings otherwise (``dnas.search.methods``),
  with PC-DARTS' α warm-up scaled with the epochs (15 of 50 -> 30 %: 3 epochs) and the temperature
  schedules spanning the 10 epochs; PC-DARTS without edge normalisation (dnas' NB201
  space does not have it; partial channels K=4 only);
- diagnostics every epoch: parameter-free ops of the derived cell, α entropy, and the top
  Hessian eigenvalue of the val loss w.r.t. α (5 power iterations).

Command (one run; seeds 0, 1, 2 in experiments/README.md):
  dnas search --config experiments/nb201_family/config.py:gdas --config.seed=0 --workdir runs/family/gdas_0
  python experiments/nb201_family/report.py runs/family --table ../shared/data/nb201/nb201_table.csv

Expected (published, full budget on GPUs; CIFAR-10 test accuracy of the derived cell):
DARTS 1st/2nd 54.30 ± 0.00, GDAS 93.61 ± 0.09, SNAS 92.77 ± 0.83 (NB201 paper, Table 5;
SNAS from DrNAS' Table 3), PC-DARTS 93.66 ± 0.17 (from DrNAS' Table 3), DrNAS 94.36 ± 0.00,
ENAS 54.30 ± 0.00; Fair DARTS has no published NB201 figure. At this budget the numbers
differ; the table in experiments/README.md says by how much.
Run time: 2-5 minutes per run on 2 CPU cores (darts2 about twice darts).
"""

from dnas.search.methods import METHODS

from dnas.run.search import method_config

EPOCHS = 10


def get_config(arg: str | None = None):
    """``arg``: ``METHOD[,smoke]`` (default ``darts``); ``smoke`` runs a few steps."""
    flags = [a for a in (arg or "").split(",") if a]
    smoke = "smoke" in flags
    methods = [a for a in flags if a != "smoke"] or ["darts"]
    name = methods[0]
    if len(methods) > 1 or name not in METHODS.names() or name in ("spos", "rsps"):
        raise ValueError(f"give one differentiable method: {', '.join(n for n in METHODS.names() if n not in ('spos', 'rsps'))} (and optionally ,smoke)")
    from dnas.run.config import apply_smoke
    from dnas.data.datasets import shared_data

    c = method_config(name, epochs=EPOCHS, nb201=True)
    c.data_dir = shared_data("images", "cifar10_subset")
    c.dataset = "cifar10" if c.data_dir else "digits"
    c.layers, c.init_channels, c.batch_size = 1, 8, 64
    c.downsample = 2 if c.dataset == "cifar10" else 1  # 16x16 images: a quarter of the pixels
    c.hessian_iters = 5 if name != "enas" else 0  # ENAS' α gets no gradient through the network
    if "edge_norm" in c.space_kwargs:  # dnas' NB201 space has no edge normalisation: PC-DARTS runs with partial channels only
        del c.space_kwargs["edge_norm"]
    if c.a_warmup_epochs:
        c.a_warmup_epochs = round(c.a_warmup_epochs * EPOCHS / 50)
    c.log_every_steps, c.checkpoint_every_steps = 40, 400
    if smoke:
        apply_smoke(c, init_channels=4, layers=1)
        c.hessian_iters = 0
    return c
