#!/usr/bin/env bash
# The GPU measurement of the speed issue in one go, sized for a lent device's 15 minutes:
# the paper's search network (C=16, 8 cells, batch 64, 32x32), first order against the
# PyTorch peer on CUDA (two alternating runs each), then second order against first order
# in one process (--vs-first-order). Each JSON is rewritten after every repeat, so a run
# cut short by its timeout (300 s, 260 s; 9.5 minutes in all) still returns what finished.
#
#   bash benchmarks/gpu_paper.sh PEER [OUT_DIR]
#
# PEER: the peer script (../shared/bench/torch_darts_reference.py here; the device tool
# does not send ../shared, so copy it into an ignored folder of the checkout and carry it).
# OUT_DIR: default $OUT (the device tool's folder), else benchmarks/out.
# CONFIG overrides the network, e.g. CONFIG="--C 4 --layers 2 --batch 4 --hw 8" for a
# smoke run on CPU. Needs jax, flax and optax (the device image has them; dnas itself
# runs from this checkout, not installed).
set -uo pipefail
peer=${1:?usage: bash benchmarks/gpu_paper.sh PEER [OUT_DIR]}
out=${2:-${OUT:-benchmarks/out}}
config=${CONFIG:-"--C 16 --layers 8 --batch 64 --hw 32"}
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
} | tee "$out/gpu_env.txt"
bench="python3 $here/benchmarks/search_step.py $config"
# shellcheck disable=SC2086
timeout 300 $bench --order 1 --steps 20 --warmup 3 --repeats 2 --compare-torch "$peer" --json "$out/gpu_order1.json" \
  > "$out/gpu_order1.log" 2>&1 || echo "first-order run failed or timed out (rc $?): see gpu_order1.log"
# shellcheck disable=SC2086
timeout 260 $bench --order 2 --vs-first-order --steps 10 --warmup 2 --json "$out/gpu_order2.json" \
  > "$out/gpu_order2.log" 2>&1 || echo "second-order run failed or timed out (rc $?): see gpu_order2.log"
python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("gpu_order1.json", "gpu_order2.json"):
    p = out / name
    if not p.exists():
        print(name, "missing")
        continue
    r = json.loads(p.read_text())
    d = r["dnas"]
    keep = ("backend", "compile_s", "step_ms_median", "step_ms_min", "gpu_peak_mem_mb", "first_order_step_ms_median", "second_over_first")
    print(name, {k: d[k] for k in keep if k in d})
    if "torch" in r:
        t = r["torch"]
        print("  torch", {k: t.get(k) for k in ("device", "first_step_s", "step_ms_median", "gpu_peak_mem_mb")}, "speedup", round(r["speedup_vs_torch"], 3))
EOF
