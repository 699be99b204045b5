"""ProxylessNAS (Cai, Zhu & Han, "ProxylessNAS: Direct Neural Architecture Search on Target
Task and Hardware", ICLR 2019): the mobile space priced by the Pixel 1 latency table.

Command:
  dnas search --config experiments/proxylessnas/config.py --workdir runs/proxyless \
      --config.data_dir=/path/to/cifar-10-batches-py
  dnas search --config experiments/proxylessnas/config.py:smoke --workdir /tmp/w
  dnas search --config experiments/proxylessnas/config.py:target_smoke --workdir /tmp/t \
      --config.latency.target_ms=40      # ends with derived_latency_ms within 10 % of 40

Setting: 21 searched blocks, MBConv k{3,5,7} x e{3,6} (+ zero where the block has a
shortcut), width 1.0; binary gates with two sampled paths (``binary_gate(paths=2)``); α Adam
lr 1e-3, betas (0, 0.999), no decay; the ``mul#log`` latency loss (alpha 0.2, beta 0.3) of the
expected latency against the 80 ms reference of their Pixel 1 search
(``search/imagenet_arch_search.py``), table ``proxylessnas_mobile_pixel1.yaml`` (224x224).
CIFAR-10 stands in for ImageNet here (the paper searches ImageNet; a dnas ImageNet loader
does not exist), so accuracies are not comparable; the latency side is the paper's.
Expected result (paper): ProxylessNAS-Mobile, 74.6 % ImageNet top-1 at 78 ms on Pixel 1;
the published net prices at 82.5 ms on this table (stage 1 at the space's 24 channels).
``target_smoke``: the tiny 11-block proxy (layers=2, C=8, 3 candidates + zero, one sampled
path) on the embedded digits with the target mode (penalty ``target``, band 5 %, derived
architecture chosen within 5 % of T); its table latencies span 29.6-104.8 ms.
``smoke``: one block per stage, 3 candidates (+ zero), two sampled paths, the CIFAR-10 subset.
Run time: smoke 87 s end to end on a loaded 2-core CPU (its step compiles in ~40 s;
``benchmarks/mobile_step.py``), target_smoke a few minutes (mostly compilation).
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults

from dnas.data.datasets import shared_data

PIXEL1 = shared_data("luts", "proxylessnas_mobile_pixel1.yaml")


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke", "target_smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke, target_smoke or nothing")
    c = search_defaults()
    c.space = "proxylessnas"
    c.layers = 4  # the paper's 4 blocks per stage
    c.init_channels = 32
    c.relax = "binary_gate"
    c.relax_kwargs.paths = 2
    c.a_lr, c.a_b1, c.a_b2, c.a_weight_decay = 1e-3, 0.0, 0.999, 0.0
    c.w_weight_decay = 4e-5
    c.latency.table = PIXEL1
    c.latency.penalty = "mul#log"
    c.latency.penalty_kwargs.alpha = 0.2
    c.latency.penalty_kwargs.beta = 0.3
    c.latency.target_ms = 80.0
    if arg == "smoke":
        apply_smoke(c, init_channels=8, layers=1)
        # Three candidates (cheapest, middle, costliest; + zero) keep the two sampled paths'
        # switches at 4 branches instead of 7: the step program is that much smaller to compile.
        c.space_kwargs.ops = ["mb_k3_e3", "mb_k5_e3", "mb_k7_e6"]
    if arg == "target_smoke":
        c.dataset, c.augment = "digits", False
        c.layers, c.init_channels = 2, 8
        # Three candidates (the cheapest, a middle and the costliest op) and one sampled path
        # keep the compiled step small on a CPU; the table still spans 29.6-104.8 ms.
        c.space_kwargs.ops = ["mb_k3_e3", "mb_k5_e3", "mb_k7_e6"]
        c.relax_kwargs.paths = 1
        c.max_train_examples, c.batch_size, c.epochs = 256, 32, 4
        c.log_every_steps, c.checkpoint_every_steps = 4, 100
        c.a_lr = 0.05  # α must move within 16 steps
        c.latency.penalty = "target"
        c.latency.penalty_kwargs = {"lam": 1.0, "tol": 0.05}
        c.latency.target_ms = 50.0
        c.latency.derive_tolerance = 0.05
    return c
