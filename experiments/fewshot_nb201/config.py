"""Few-shot supernets on NAS-Bench-201 (Zhao, Wang, Chen, Jin, Kaul, Rao & Tian, "Few-shot
Neural Architecture Search", ICML 2021), CIFAR-10: the RSPS/SPOS one-shot supernet split by
the op of one edge into K = 5 sub-supernets, each started from the trained one-shot weights
and trained on its fifth of the space; ``dnas eval`` routes every cell to its sub-supernet
(one compiled program) and ranks the cells by its one-shot accuracy.

Command (two runs: the one-shot supernet, then its few-shot split; then the searches):
  dnas search --config experiments/fewshot_nb201/config.py:oneshot_cpu --workdir runs/os_cpu
  dnas search --config experiments/fewshot_nb201/config.py:cpu --workdir runs/fs_cpu \
      --config.fewshot.init_from=runs/os_cpu
  dnas eval runs/fs_cpu --archs 1000 --table ../shared/data/nb201/nb201_table.csv
  export DNAS_NB201_TABLE=../shared/data/nb201/nb201_table.csv
  dnas search --config experiments/fewshot_nb201/config.py:spos=runs/fs_cpu --workdir runs/spos_fs
  dnas search --config experiments/fewshot_nb201/config.py:rea_combined=runs/fs_cpu --workdir runs/rea_comb
  dnas search --config experiments/fewshot_nb201/config.py:smoke --workdir /tmp/f && dnas eval /tmp/f --archs 20

Setting: the one-shot supernet as ``experiments/rsps_nb201`` (uniform single paths, SGD
Nesterov 0.9, wd 5e-4, cosine lr 0.025 -> 0.001, batch 64); the split edge is
``cell/edge_1_0`` (the paper splits NB201 on one edge, K = 5, and found one split enough);
each sub-supernet is then trained with its own optimizer (fresh momentum, the cosine schedule
restarted), every step training all K on the same batch, each on its own sampled path.
``fair=True`` (``get_config("cpu,fair")``) trains the sub-supernets by FairNAS' strictly fair
paths instead. ``dnas eval`` normalises each validation batch by its own statistics
(``config.eval_bn = "batch"``: the best mode for the RSPS supernet, experiments/README.md)
and scores every cell on the whole held-out half (``config.eval_val_batches = 0``).
Measured (experiments/README.md, "A supernet that ranks"): ``:oneshot_cpu`` 17.0 CPU-minutes,
``:cpu`` 39.3 more (56.3 in all); the few-shot supernet ranks 1,000 cells at Kendall τ 0.26
on the whole held-out half (0.40 on the 512 of its images first used; the 100-epoch one-shot
supernet it starts from: −0.18); ``:spos`` and ``:rea_combined``
are 10 seeded runs of 100 queries whose chosen cells the table reports.
``:rea_combined`` needs xgboost (``pip install 'dnas[predictors]'``).
``:smoke`` starts the sub-supernets fresh (no init run) and runs in seconds after compiling.
Expected result (paper, NB201 CIFAR-10): few-shot supernets raise the ranking correlation of
one-shot NAS markedly (Kendall τ of the sub-supernets above the one-shot supernet's).
"""

from dnas.run.config import apply_smoke
from dnas.run.search import search_defaults
from dnas.search.methods import apply_method
from dnas.space.genotype import NB201_OPS

SPLIT = ["cell/edge_1_0"]


# The features of the combined estimator (``:rea_combined``): the supernet's one-shot
# accuracy and loss, four zero-cost proxies at C=8 on one cell per stage, parameters and
# MACs, and the cell's one-hot encoding; T = 100 cells of known accuracy.
ZC_PROXIES = "synflow,jacob_cov,snip,naswot"


def _discrete(variant: str, run_dir: str):
    """``spos``: SPOS' second step, evolution over the supernet's one-shot accuracy;
    ``rea_combined``: REA over the combined estimator. 10 seeded runs of 100 queries each
    (the benchmark's REA makes ~100); each chosen cell is reported by its table accuracy,
    read after the search for that cell only (``config.table``). ``run_dir``: the supernet's
    search run (``spos=RUN`` / ``rea_combined=RUN`` on the command line)."""
    import ml_collections

    from dnas.data.datasets import shared_data
    from dnas.run.multitrial import multitrial_defaults

    c = multitrial_defaults()
    c.space = "nb201"
    c.space_kwargs = ml_collections.ConfigDict({"layers": 1})  # the cell's labels are the supernet's for any N
    c.strategy, c.strategy_kwargs = "rea", ml_collections.ConfigDict({"population": 10, "sample_size": 3})
    oneshot = {"run_dir": run_dir, "batch_stats": True, "val_batches": 8}
    if variant == "spos":
        c.estimator, c.estimator_kwargs = "oneshot", ml_collections.ConfigDict(oneshot)
        metric = "oneshot_acc"
    else:
        c.estimator = "combined"
        c.estimator_kwargs = ml_collections.ConfigDict({
            "features": [{"name": "oneshot", "kwargs": oneshot},
                         {"name": "zero_cost", "kwargs": {"proxies": ZC_PROXIES, "C": 8, "data_dir": shared_data("images", "cifar10_subset")}},
                         {"name": "hardware", "kwargs": {"resolution": 32, "counts_kwargs": {"C": 16, "num_classes": 10}}}],
            "train_archs": 100, "table": ""})
        metric = "combined_acc"
    c.objective, c.objective_kwargs = "accuracy", ml_collections.ConfigDict({"metric": metric})
    c.valid_metric, c.report_metric = metric, "cifar10_test_200ep"
    c.budget_s, c.max_evals, c.runs, c.runs_per_chunk = 1e9, 100, 10, 1
    return c


def get_config(arg: str | None = None):
    variant, _, run_dir = (arg or "").partition("=")
    if variant in ("spos", "rea_combined"):
        return _discrete(variant, run_dir)
    parts = [p for p in (arg or "").split(",") if p]
    variant = next((p for p in parts if p != "fair"), "")
    if variant not in ("", "smoke", "cpu", "oneshot_cpu") or parts.count("fair") > 1 or len(parts) > 2:
        raise ValueError(f"unknown config arg {arg!r}; use smoke, cpu, oneshot_cpu, spos, rea_combined or nothing "
                         "(the first four optionally with ',fair')")
    c = search_defaults()
    apply_method(c, "rsps")
    c.space = "nb201"
    c.space_kwargs.ops = list(NB201_OPS)
    c.layers, c.init_channels, c.epochs = 5, 16, 250
    c.w_weight_decay, c.w_nesterov = 5e-4, True
    c.eval_bn = "batch"
    c.eval_val_batches = 0  # the whole held-out half: 512 images decided a ranking by ±0.1 in τ
    c.fair_sampling = "fair" in parts
    if variant != "oneshot_cpu":
        c.fewshot.split = list(SPLIT)
    if variant in ("cpu", "oneshot_cpu"):
        from dnas.data.datasets import shared_data

        c.data_dir = shared_data("images", "cifar10_subset")
        c.layers, c.init_channels, c.batch_size = 2, 8, 64
        c.epochs = 60 if variant == "cpu" else 100
        c.log_every_steps, c.checkpoint_every_steps = 20, 200
    if variant == "smoke":
        apply_smoke(c, init_channels=4, layers=1)
    return c
