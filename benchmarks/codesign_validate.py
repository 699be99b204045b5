"""The analytical accelerator model (dnas.hardware.accelerator) against SCALE-Sim 3.0.

Layers from the three families codesign NAS searches over, at batch 1 and small feature
maps (SCALE-Sim simulates every cycle in Python, so the layer sizes keep the whole run
under ~15 minutes on one core): NAS-Bench-201 cell convolutions at C = 16/32/64, ProxylessNAS /
MobileNetV2 MBConv expand / depthwise / project layers, ResNet-style 3x3 and 1x1 layers, and
a classifier. Each runs on every dataflow x array shape x buffer size, in both SCALE-Sim
(dnas.hardware.scalesim_ref) and the model; the model's GEMM of each layer is read from a
traced flax convolution (dnas.hardware.accelerator.gemm_layers), so the extraction is
validated with it.

Prints one line per configuration group, then one JSON line last:
{"layers", "configs", "mape_compute_cycles", "spearman_total_cycles", "model_us_per_layer",
 "scalesim_s_per_layer"} (+ a few diagnostics).

    PYTHONPATH=$PWD python benchmarks/codesign_validate.py [--quick] [--raw out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from dnas.hardware.accelerator import gemm_array, gemm_layers, layer_costs
from dnas.hardware.scalesim_ref import scalesim_conv
from dnas.space.spaces.hardware import make_accelerator

# (name, input H = W before padding, kernel, Cin, Cout, stride, padding, groups)
LAYERS = [
    # NAS-Bench-201 cells (ReLUConvBN 3x3 / 1x1, stride 1) at the three stage widths, and the
    # residual reduction block's stride-2 3x3
    ("nb201_c16_conv3x3", 8, 3, 16, 16, 1, 1, 1),
    ("nb201_c16_conv1x1", 8, 1, 16, 16, 1, 0, 1),
    ("nb201_c32_conv3x3", 6, 3, 32, 32, 1, 1, 1),
    ("nb201_c32_conv1x1", 6, 1, 32, 32, 1, 0, 1),
    ("nb201_c64_conv3x3", 4, 3, 64, 64, 1, 1, 1),
    ("nb201_c64_conv1x1", 4, 1, 64, 64, 1, 0, 1),
    ("nb201_red_c16_c32", 8, 3, 16, 32, 2, 1, 1),
    ("nb201_red_c32_c64", 8, 3, 32, 64, 2, 1, 1),
    ("nb201_stem", 8, 3, 3, 16, 1, 1, 1),
    # MobileNetV2 / ProxylessNAS MBConv: 1x1 expand, k x k depthwise, 1x1 project
    ("mb_e3_expand_16_48", 8, 1, 16, 48, 1, 0, 1),
    ("mb_e3_dw3_48", 8, 3, 48, 48, 1, 1, 48),
    ("mb_e3_project_48_24", 8, 1, 48, 24, 1, 0, 1),
    ("mb_e6_expand_24_144", 6, 1, 24, 144, 1, 0, 1),
    ("mb_e6_dw5_144", 6, 5, 144, 144, 1, 2, 144),
    ("mb_e6_project_144_32", 6, 1, 144, 32, 1, 0, 1),
    ("mb_dw7_s2_96", 8, 7, 96, 96, 2, 3, 96),
    ("mb_dw3_s2_64", 8, 3, 64, 64, 2, 1, 64),
    ("mb_expand_32_192", 4, 1, 32, 192, 1, 0, 1),
    ("mb_dw3_192", 4, 3, 192, 192, 1, 1, 192),
    ("mb_project_192_64", 4, 1, 192, 64, 1, 0, 1),
    ("mb_first_dw3_32", 8, 3, 32, 32, 1, 1, 32),
    ("mb_first_project_32_16", 8, 1, 32, 16, 1, 0, 1),
    # ResNet-style basic and bottleneck blocks
    ("res_basic_3x3_32", 6, 3, 32, 32, 1, 1, 1),
    ("res_basic_3x3_64", 4, 3, 64, 64, 1, 1, 1),
    ("res_down_3x3_s2_32_64", 8, 3, 32, 64, 2, 1, 1),
    ("res_shortcut_1x1_s2", 8, 1, 32, 64, 2, 0, 1),
    ("res_bottleneck_reduce_128_32", 4, 1, 128, 32, 1, 0, 1),
    ("res_bottleneck_3x3_32", 4, 3, 32, 32, 1, 1, 1),
    ("res_bottleneck_expand_32_128", 4, 1, 32, 128, 1, 0, 1),
    ("res_stem_3x3_s2", 12, 3, 3, 24, 2, 1, 1),
    # classifiers (a dense layer is a 1x1 convolution of a 1x1 map)
    ("classifier_64_10", 1, 1, 64, 10, 1, 0, 1),
    ("classifier_256_100", 1, 1, 256, 100, 1, 0, 1),
]
ARRAYS = [(8, 8), (16, 16), (32, 8)]
BUFFERS_KB = [2, 32]  # every SRAM; 2 KB spills the larger layers' operands, 32 KB holds most
DRAM_BW = 4
SCALESIM_TIMEOUT_S = 20
"""SCALE-Sim's read buffer can thrash (re-stream an operand on every miss, quadratic in its
size) when an operand spills a small buffer; a run past this many seconds is left out and
counted in the JSON (``scalesim_timeouts``)."""


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def traced_gemm(h: int, k: int, cin: int, cout: int, stride: int, pad: int, groups: int) -> np.ndarray:
    """The layer's ``(Np, K, M, G)`` read from a traced convolution (what the cost model does)."""

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=groups)

    found = gemm_layers(conv, jax.ShapeDtypeStruct((1, h, h, cin), jnp.float32), jax.ShapeDtypeStruct((k, k, cin // groups, cout), jnp.float32))
    return gemm_array(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a third of the layers (a smoke run)")
    ap.add_argument("--raw", default="", help="write every (layer, config) pair's numbers to this JSON file")
    args = ap.parse_args()
    layers = LAYERS[::3] if args.quick else LAYERS
    configs = [dict(rows=r, cols=c, dataflow=df, ifmap_kb=kb, filter_kb=kb, ofmap_kb=kb, dram_bw=DRAM_BW)
               for (r, c), df, kb in itertools.product(ARRAYS, ("os", "ws", "is"), BUFFERS_KB)]
    gemms = np.concatenate([traced_gemm(h, k, cin, cout, s, p, g) for _, h, k, cin, cout, s, p, g in layers])
    assert gemms.shape[0] == len(layers), "one GEMM per layer"

    # The model: every layer under every accelerator in one jitted call (the accelerator
    # fields batched over the configurations).
    hws = [make_accelerator(clock_mhz=500, **cfg) for cfg in configs]
    batched = jax.tree.map(lambda *xs: jnp.stack(xs), *hws)
    cost = jax.jit(layer_costs)
    c = jax.block_until_ready(cost(gemms, batched))
    model = list(zip(np.asarray(c.compute_cycles), np.asarray(c.cycles)))
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(cost(gemms, batched))
    model_us = (time.perf_counter() - t0) / (reps * len(configs) * len(layers)) * 1e6

    rows, sim_time, timeouts = [], 0.0, []
    for ci, cfg in enumerate(configs):
        for li, (name, h, k, cin, cout, s, p, g) in enumerate(layers):
            t0 = time.perf_counter()
            # SCALE-Sim sizes its output ceil((H - k + s) / s), one more than a convolution's
            # floor((H + 2p - k) / s) + 1 when s does not divide H + 2p - k: give it the input
            # extent the convolution reads, (Hout - 1)·s + k, so both compute the same layer.
            extent = ((h + 2 * p - k) // s) * s + k
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(SCALESIM_TIMEOUT_S)
            try:
                ref = scalesim_conv(extent, extent, k, k, cin, cout, s, cfg, groups=g)
            except _Timeout:
                timeouts.append(f"{name} {cfg['rows']}x{cfg['cols']} {cfg['dataflow']} {cfg['ifmap_kb']}KB")
                print(f"  SCALE-Sim timed out: {timeouts[-1]}", flush=True)
                continue
            finally:
                signal.alarm(0)
                sim_time += time.perf_counter() - t0
            rows.append(dict(layer=name, gemm=gemms[li].tolist(), **cfg, model_compute=float(model[ci][0][li]),
                             model_cycles=float(model[ci][1][li]), **{f"ss_{k_}": v for k_, v in ref.items()}))
        done = [r for r in rows if (r["rows"], r["cols"], r["dataflow"], r["ifmap_kb"]) == (cfg["rows"], cfg["cols"], cfg["dataflow"], cfg["ifmap_kb"])]
        print(f"{cfg['rows']}x{cfg['cols']} {cfg['dataflow']} {cfg['ifmap_kb']}KB: compute APE max "
              f"{max(abs(r['model_compute'] - r['ss_compute_cycles']) / r['ss_compute_cycles'] for r in done):.4f}, "
              f"stalled layers {sum(r['ss_stall_cycles'] > 0 for r in done)}/{len(done)}, scalesim {sim_time:.0f}s so far", flush=True)

    mc = np.array([r["model_compute"] for r in rows])
    sc = np.array([r["ss_compute_cycles"] for r in rows])
    mt = np.array([r["model_cycles"] for r in rows])
    st = np.array([r["ss_cycles"] for r in rows])
    stalled = st > sc
    out = {
        "layers": len(layers),
        "configs": len(configs),
        "mape_compute_cycles": round(float(np.mean(np.abs(mc - sc) / sc) * 100), 4),
        "spearman_total_cycles": round(float(spearmanr(mt, st).statistic), 4),
        "model_us_per_layer": round(model_us, 3),
        "scalesim_s_per_layer": round(sim_time / (len(rows) + len(timeouts)), 4),
        "pairs": len(rows),
        "scalesim_timeouts": len(timeouts),
        "mape_total_cycles": round(float(np.mean(np.abs(mt - st) / st) * 100), 2),
        "stalled_pairs": int(stalled.sum()),
        "spearman_total_cycles_stalled_only": round(float(spearmanr(mt[stalled], st[stalled]).statistic), 4) if stalled.sum() > 2 else None,
    }
    if args.raw:
        with open(args.raw, "w") as f:
            json.dump(rows, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
