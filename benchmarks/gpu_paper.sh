#!/usr/bin/env bash
# The GPU measurements at paper scale in one go, each item under its own timeout, each
# writing JSON to OUT_DIR:
#   1. darts:  the paper's search network (C=16, 8 cells, batch 64, 32x32), first order
#              against the PyTorch peer on CUDA (two alternating runs), 300 s;
#   2. darts2: second order against first order in one process (--vs-first-order), 260 s;
#   3. proxylessnas: the ProxylessNAS supernet at width 1.0 (C=32, 4 blocks per stage) on
#              224x224 inputs, batch 32, binary gates with 2 paths (benchmarks/mobile_step.py;
#              random images: no ImageNet-folder loader in dnas yet), 240 s;
#   4. fbnet:  the FBNet supernet (22 x 9, C=16) at batch 64, 32x32, 240 s (the config's smoke
#              searches 3 of the 9 ops; this item sets all 9 back, SMOKE keeps 3);
#   5. nb201:  NB201 one-shot evaluation of 1000 cells, C=16, 5 cells per stage, batch 64
#              (benchmarks/oneshot_eval.py), 180 s.
# ITEMS picks some (default "darts darts2 proxylessnas fbnet nb201", without fbnet under SMOKE: ~20 minutes if each
# runs to its timeout, so on a 15-minute lease pick, e.g. ITEMS="darts proxylessnas nb201").
# Each JSON is rewritten as results arrive, so an item cut short keeps what finished.
#
#   bash benchmarks/gpu_paper.sh PEER [OUT_DIR]
#
# PEER: the peer script (../shared/bench/torch_darts_reference.py here; the device tool
# does not send ../shared, so copy it into an ignored folder of the checkout and carry it).
# OUT_DIR: default $OUT (the device tool's folder), else benchmarks/out.
# PEER "none" skips the PyTorch comparison. SMOKE=1 shrinks every item to seconds-to-a-few-
# minutes on a CPU (how the script is checked without a GPU); CONFIG alone overrides the
# DARTS network (default "--C 16 --layers 8 --batch 64 --hw 32"). Needs jax, flax, optax and
# ml_collections (the device image has them; dnas runs from this checkout, not installed).
set -uo pipefail
peer=${1:?usage: bash benchmarks/gpu_paper.sh PEER [OUT_DIR]}
out=${2:-${OUT:-benchmarks/out}}
items=${ITEMS:-"darts darts2 proxylessnas fbnet nb201"}
# fbnet's 3-op CPU smoke compiles in about a minute; it is left out of the SMOKE default to keep that run short.
[ "${SMOKE:-0}" = 1 ] && items=${ITEMS:-"darts darts2 proxylessnas nb201"}
if [ "${SMOKE:-0}" = 1 ]; then
  config=${CONFIG:-"--C 4 --layers 2 --batch 4 --hw 8"}
  darts_steps="--steps 2 --warmup 1 --repeats 1"; mobile_hw=32; mobile_batch=4
  proxyless_set="--set init_channels=8 --set layers=1"; fbnet_set="--set init_channels=4"
  nb201_args="--channels 4 --layers 1 --batch-size 8 --val-batches 1 --archs 8 --rejit 1 --chunk 4"
else
  config=${CONFIG:-"--C 16 --layers 8 --batch 64 --hw 32"}
  darts_steps=""; mobile_hw=224; mobile_batch=32
  proxyless_set="--set init_channels=32 --set layers=4"; fbnet_set="--set init_channels=16 --set space_kwargs.ops=k3_e1,k3_e1_g2,k3_e3,k3_e6,k5_e1,k5_e1_g2,k5_e3,k5_e6,skip"
  nb201_args="--channels 16 --layers 5 --batch-size 64 --val-batches 4 --archs 1000"
fi
want() { case " $items " in *" $1 "*) return 0;; *) return 1;; esac; }
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
torch_args=(--compare-torch "$peer")
[ "$peer" = none ] && torch_args=()
if want darts; then
  # shellcheck disable=SC2086
  timeout 300 $bench --order 1 --steps 20 --warmup 3 --repeats 2 $darts_steps "${torch_args[@]}" --json "$out/gpu_order1.json" \
    > "$out/gpu_order1.log" 2>&1 || echo "first-order run failed or timed out (rc $?): see gpu_order1.log"
fi
if want darts2; then
  # shellcheck disable=SC2086
  timeout 260 $bench --order 2 --vs-first-order --steps 10 --warmup 2 $darts_steps --json "$out/gpu_order2.json" \
    > "$out/gpu_order2.log" 2>&1 || echo "second-order run failed or timed out (rc $?): see gpu_order2.log"
fi
mobile="python3 $here/benchmarks/mobile_step.py --steps 10"
if want proxylessnas; then
  # shellcheck disable=SC2086
  timeout 240 $mobile --space proxylessnas --synthetic-hw "$mobile_hw" --set batch_size="$mobile_batch" $proxyless_set \
    --json "$out/gpu_proxylessnas.json" > "$out/gpu_proxylessnas.log" 2>&1 || echo "proxylessnas run failed or timed out (rc $?): see gpu_proxylessnas.log"
fi
if want fbnet; then
  # shellcheck disable=SC2086
  timeout 240 $mobile --space fbnet --synthetic-hw 32 --set batch_size="$((mobile_batch * 2))" $fbnet_set \
    --json "$out/gpu_fbnet.json" > "$out/gpu_fbnet.log" 2>&1 || echo "fbnet run failed or timed out (rc $?): see gpu_fbnet.log"
fi
if want nb201; then
  # shellcheck disable=SC2086
  timeout 180 python3 "$here/benchmarks/oneshot_eval.py" $nb201_args > "$out/gpu_nb201.log" 2>&1 \
    || echo "nb201 one-shot run failed or timed out (rc $?): see gpu_nb201.log"
  tail -n 1 "$out/gpu_nb201.log" > "$out/gpu_nb201.json"
fi
python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("gpu_order1.json", "gpu_order2.json"):
    p = out / name
    if not p.exists():
        print(name, "missing")
        continue
    r = json.loads(p.read_text())
    if "dnas" not in r:
        print(name, r)
        continue
    d = r["dnas"]
    keep = ("backend", "compile_s", "step_ms_median", "step_ms_min", "gpu_peak_mem_mb", "first_order_step_ms_median", "second_over_first")
    print(name, {k: d[k] for k in keep if k in d})
    if "torch" in r:
        t = r["torch"]
        print("  torch", {k: t.get(k) for k in ("device", "first_step_s", "step_ms_median", "gpu_peak_mem_mb")}, "speedup", round(r["speedup_vs_torch"], 3))
for name in ("gpu_proxylessnas.json", "gpu_fbnet.json", "gpu_nb201.json"):
    p = out / name
    try:
        print(name, json.loads(p.read_text()))
    except (OSError, ValueError):
        print(name, "missing or not JSON")
EOF
