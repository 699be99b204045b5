"""SNAS (Xie, Zheng, Liu & Lin, "SNAS: Stochastic Neural Architecture Search", ICLR
2019) on the DARTS CIFAR-10 space, or on NAS-Bench-201 (``:nb201``).

Command:
  dnas search --config experiments/snas/config.py --workdir runs/snas --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/snas/config.py:smoke --workdir /tmp/w      # CPU smoke

Method (``dnas.search.methods``, ``snas``): soft Gumbel-softmax mixing weights, every op
computed, temperature annealed per epoch ``max(1.0 · 0.97^epoch, 0.03)``
(``--config.relax_kwargs.decay=...`` to change). SNAS starts at λ0 = 1; the annealing rate
and the floor were not checked against SNAS-Series' code in this session. Not reproduced:
SNAS' resource constraint (a Poisson-Binomial penalty on the expected cost of the sampled
cell) and its single-level update of α and weights on the same batch; dnas runs the
bi-level DARTS step (α on the val split).
Settings (paper, Sec. 4.1): C=16, 8 cells, 150 epochs, batch 64, SGD lr 0.025 cosine,
momentum 0.9, wd 3e-4; α Adam 3e-4 betas (0.5, 0.999) wd 1e-3.
Expected result: 2.85 ± 0.02 % CIFAR-10 test error retrained (mild constraint, 2.8M
params; paper Table 1).
Run time: 1.5 GPU-days in the paper; not measured with dnas on a GPU.
"""

from dnas.run.search import method_config


def get_config(arg: str | None = None):
    flags = set((arg or "").split(",")) - {""}
    if flags - {"nb201", "smoke"}:
        raise ValueError(f"unknown config arg(s) {sorted(flags - {'nb201', 'smoke'})}; use nb201, smoke (comma-separated)")
    return method_config("snas", epochs=150, nb201="nb201" in flags, smoke="smoke" in flags)
