"""Parameter and MAC counting, and the `dnas info` command."""

import subprocess
import sys

import jax.numpy as jnp
import pytest
from flax import nnx

from dnas.hardware.counts import count_macs, count_params, model_macs
from dnas.space.ops.layers import Conv2d


class _Tiny(nnx.Module):
    def __init__(self):
        self.c1 = Conv2d(3, 8, 3, 1, 1, rngs=nnx.Rngs(0))
        self.dw = Conv2d(8, 8, 3, 2, 1, groups=8, rngs=nnx.Rngs(1))
        self.fc = nnx.Linear(8, 5, rngs=nnx.Rngs(2))

    def __call__(self, x):
        return self.fc(jnp.mean(self.dw(self.c1(x)), axis=(1, 2)))


def test_macs_match_hand_count():
    net = _Tiny()
    # conv 3x3 3->8 at 8x8: 8*8*8*3*9; depthwise 3x3 stride 2 to 4x4: 4*4*8*9; linear 8->5.
    expected = 8 * 8 * 8 * 3 * 9 + 4 * 4 * 8 * 9 + 8 * 5
    assert model_macs(net, (1, 8, 8, 3)) == expected
    assert model_macs(net, (2, 8, 8, 3)) == 2 * expected
    assert count_params(net) == 3 * 9 * 8 + 9 * 8 + 8 * 5 + 5


def test_count_macs_of_plain_function():
    assert count_macs(lambda a, b: a @ b, jnp.ones((4, 6)), jnp.ones((6, 3))) == 4 * 6 * 3


# DARTS_V2 as published in quark0/darts cnn/genotypes.py (written out here, not read from dnas).
DARTS_V2_NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]
DARTS_V2_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                   ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]


def darts_cifar_macs_by_hand(normal, reduce, C=36, layers=20, classes=10, hw=32):
    """Multiply-adds of one image through DARTS' ``NetworkCIFAR`` (quark0/darts
    ``cnn/model.py`` and ``operations.py``), from the layer shapes alone: convolutions and
    the classifier count, pools, BatchNorm, ReLU and additions do not (as dnas' counter).
    Every cell concatenates its 4 nodes; reductions at cells ``layers//3`` and ``2*layers//3``."""
    macs = hw * hw * 3 * (3 * C) * 9  # stem: 3x3 conv, 3 -> 3C channels
    c_pp = c_p = 3 * C
    c = C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c *= 2 if reduction else 1
        # preprocess0: after a reduction, FactorizedReduce = two 1x1 stride-2 convs c_pp -> c/2
        # onto this cell's hw x hw; else a 1x1 conv c_pp -> c at hw x hw: hw*hw*c_pp*c either way.
        macs += hw * hw * c_pp * c
        macs += hw * hw * c_p * c  # preprocess1: 1x1 conv c_p -> c
        out = (hw // 2 if reduction else hw) ** 2  # every op's output pixels
        for op, j in reduce if reduction else normal:
            if op == "sep_conv_3x3":  # twice (depthwise 3x3, pointwise 1x1), the first strided
                macs += 2 * (out * c * 9 + out * c * c)
            elif op == "dil_conv_3x3":  # depthwise 3x3 dilated, pointwise 1x1
                macs += out * c * 9 + out * c * c
            elif op == "skip_connect" and reduction and j < 2:  # FactorizedReduce c -> c
                macs += out * c * c
            elif op not in ("skip_connect", "max_pool_3x3", "avg_pool_3x3"):
                raise ValueError(op)
        hw = hw // 2 if reduction else hw
        c_pp, c_p = c_p, 4 * c
    return macs + c_p * classes  # global pool, then the linear classifier


@pytest.mark.slow
def test_dnas_info_reports_published_darts_v2_size():
    out = subprocess.run(
        [sys.executable, "-m", "dnas.cli", "info", "--genotype", "DARTS_V2", "--dataset", "cifar10", "--init-channels", "36", "--layers", "20"],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = dict(l.split(": ", 1) for l in out.splitlines() if ": " in l)
    assert lines["params"] == "3.349342 M"  # DARTS' own log: "param size = 3.349342MB"
    # The DARTS paper reports no CIFAR-10 MAC count (only ImageNet's 574M), so the reference
    # is a hand count of its network from the layer shapes: 528.359 M.
    hand = darts_cifar_macs_by_hand(DARTS_V2_NORMAL, DARTS_V2_REDUCE)
    assert float(lines["macs"].split()[0]) == pytest.approx(hand / 1e6, abs=5e-4)  # printed to 3 decimals


def test_dnas_info_bad_genotype_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "dnas.cli", "info", "--genotype", "NOPE"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "neither a published genotype" in proc.stderr


def test_scan_counts_every_trip_and_switch_one_branch():
    import jax

    w = jnp.ones((6, 6))
    body = lambda c, _: (c @ w, None)  # noqa: E731
    assert count_macs(lambda x: jax.lax.scan(body, x, None, length=5)[0], jnp.ones((4, 6))) == 5 * 4 * 6 * 6
    cheap, dear = (lambda x: x @ jnp.ones((6, 2))), (lambda x: (x @ w) @ jnp.ones((6, 2)))
    assert count_macs(lambda i, x: jax.lax.switch(i, [cheap, dear], x), 0, jnp.ones((4, 6))) == 4 * 6 * 6 + 4 * 6 * 2


@pytest.mark.parametrize("space_name", ["nb201", "darts"])
def test_supernet_at_one_architecture_costs_what_its_derived_network_costs(space_name):
    """A supernet called with one architecture's indices (edge scans included) counts the
    chosen ops only: exactly the MACs of that architecture's derived network, and far less
    than the supernet mixing every op."""
    import numpy as np

    from dnas.space.genotype import get
    from dnas.space.base import build_space

    if space_name == "nb201":
        space, geno = build_space("nb201", 1), get("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    else:
        space, geno = build_space("darts", 3, {"nodes": 4}), get("DARTS_V2")
    vec = space.genotype_to_vec(geno)
    net = nnx.eval_shape(lambda: space.supernet(C=4, num_classes=10, in_channels=3, rngs=nnx.Rngs(0)))
    derived = nnx.eval_shape(lambda: space.network(geno, C=4, layers=space.layers if space_name == "darts" else 1, num_classes=10,
                                                   in_channels=3, auxiliary=False, rngs=nnx.Rngs(0)))
    arch = {l: np.int32(v) for l, v in zip(space.labels, vec)}
    one = model_macs(net, (1, 16, 16, 3), arch=arch)
    assert one == model_macs(derived, (1, 16, 16, 3))
    mixed = model_macs(net, (1, 16, 16, 3), arch={l: jnp.ones(c.n) / c.n for l, c in zip(space.labels, space.choices)})
    assert mixed > 2 * one
