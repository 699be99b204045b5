"""FBNet (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable
Neural Architecture Search", CVPR 2019) on the HW-NAS-Bench FBNet space and its per-layer
latency table of one device.

Command:
  dnas search --config experiments/fbnet/config.py --workdir runs/fbnet \
      --config.data_dir=/path/to/cifar-10-batches-py [--config.latency.device=pixel3]
  dnas search --config experiments/fbnet/config.py:smoke --workdir /tmp/w

Setting: 22 layers x 9 ops (HW-NAS-Bench's CIFAR setting: stem stride 1, 1504-channel
head), Gumbel-softmax mixing with FBNet's temperature 5.0 decayed by exp(-0.045) per epoch,
the loss ``CE * 0.2 * log(LAT) ** 0.6`` of the Gumbel-weighted latency (``estimate=relaxed``,
the paper's Eq. 5), table ``fbnet_layer_lut_hwnasbench.csv`` (raspi4 by default). α Adam
lr 1e-2, wd 5e-4 (the paper's); weights SGD 0.1 -> cosine, 90 epochs in the paper.
CIFAR-10 stands in for the paper's ImageNet-100 search, so accuracies are not the paper's.
Expected result (paper): FBNet-B 74.1 % ImageNet top-1 at 23.1 ms on a Samsung S8; no
raspi4 figure exists, so compare the derived net's table latency with the all-k3_e1 net's
(17.6 ms on raspi4).
``smoke``: all 22 layers, 3 candidates (k3_e1, k5_e6, skip) priced by the same table, C=4,
2 steps on the embedded 8x8 digits.
Run time: smoke 88-97 s end to end on a loaded 2-core CPU (its step compiles in 49-68 s,
build 13-24 s, then ~0.1 s per step; 27 s with a warm compilation cache; ``benchmarks/mobile_step.py --space fbnet``, numbers and
the 9-op before in ``benchmarks/RESULTS.md``).
"""

from dnas.run.config import apply_smoke

from dnas.run.search import search_defaults

from dnas.data.datasets import shared_data


def get_config(arg: str | None = None):
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config arg {arg!r}; use smoke or nothing")
    c = search_defaults()
    c.space = "fbnet"
    c.layers = 22
    c.init_channels = 16
    c.relax = "gumbel"
    c.relax_kwargs.tau0 = 5.0
    c.relax_kwargs.decay = 0.956
    c.a_lr, c.a_weight_decay = 1e-2, 5e-4
    c.w_lr, c.epochs = 0.1, 90
    c.latency.table = shared_data("luts", "fbnet_layer_lut_hwnasbench.csv")
    c.latency.device = "raspi4"
    c.latency.penalty = "fbnet"
    c.latency.penalty_kwargs.alpha = 0.2
    c.latency.penalty_kwargs.beta = 0.6
    c.latency.estimate = "relaxed"
    if arg == "smoke":
        apply_smoke(c, init_channels=4, max_steps=2, dataset="digits", data_dir="", augment=False)
        # All 22 layers, but three candidates: the reference k3_e1, the costliest k5_e6 (the
        # 5x5 depthwise, the expansion) and skip (FBNet's depth choice). The step program
        # holds every candidate of every layer, so this is what a CPU compiles in about a
        # minute; the table prices the subset (all-skip 7.8 ms .. all-k5_e6 79.2 ms on raspi4).
        c.space_kwargs.ops = ["k3_e1", "k5_e6", "skip"]
    return c
