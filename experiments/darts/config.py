"""DARTS search on CIFAR-10 (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture
Search", ICLR 2019), first or second order, the paper's hyper-parameters.

Command:
  dnas search --config experiments/darts/config.py --workdir runs/darts1 \
      --config.data_dir=/path/to/cifar-10-batches-py          # first order
  dnas search --config experiments/darts/config.py:second ...   # second order (DARTS' Eq. 8)
  dnas search --config experiments/darts/config.py:second --config.hypergradient=exact ...
  dnas search --config experiments/darts/config.py:second --config.hypergradient=forward_difference ...
  dnas search --config experiments/darts/config.py:smoke --workdir /tmp/w   # CPU smoke

Paper setting: 8 cells, C=16, 50 epochs, batch 64, half of the training set for weights
and half for α; SGD lr 0.025 -> 0.001 cosine, momentum 0.9, wd 3e-4, clip 5; α Adam 3e-4,
betas (0.5, 0.999), wd 1e-3.
Expected result: the derived cell retrained (experiments/darts_retrain) reaches
3.00 ± 0.14 % test error (first order) / 2.76 ± 0.09 % (second order) on CIFAR-10 with
3.3M parameters.
Run time at paper settings: 1.5 (first order) / 4 (second order) GPU-days on a 1080Ti in
the paper; not measured with dnas on a GPU yet.
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults


def get_config(arg: str | None = None):
    flags = set((arg or "").split(",")) - {""}
    unknown = flags - {"first", "second", "smoke"}
    if unknown:
        raise ValueError(f"unknown config arg(s) {sorted(unknown)}; use first, second, smoke (comma-separated)")
    c = search_defaults()
    c.order = 2 if "second" in flags else 1
    if "smoke" in flags:
        # 3 cells: one normal, two reduction, so both α halves are trained.
        apply_smoke(c, init_channels=4, layers=3)
        c.space_kwargs.nodes = 2
    return c
