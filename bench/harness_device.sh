#!/bin/bash
# Runs the live calibration harness (`planner calibrate run`) on a lent GPU machine, as committed
# under hwdb/runs/harness-*.csv. Usage on that machine, from the repository root:
#   bash bench/harness_device.sh single OUTDIR   # one GPU: ceilings + the model grid
#   bash bench/harness_device.sh moe OUTDIR      # one GPU: MoE models (routed experts as grouped GEMMs)
#   bash bench/harness_device.sh split OUTDIR    # two GPUs: one GPU, layer split and tensor split
# Needs PyTorch with CUDA there; planner's own dependencies may come as wheels in .whl/.
set -uo pipefail
mode=$1; out=$2
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
run() { python3 -m planner.cli calibrate run "$@" 2>&1 | tee -a "$out/log.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  nvidia-smi topo -m; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
if [ "$mode" = single ]; then
  f="$out/harness-h100.csv"
  run --model llama-3.1-8b --out "$f" --tag h100-llama8b
  run --model qwen3-0.6b --out "$f" --tag h100-qwen06b --no-ceilings
  run --model qwen3-8b --out "$f" --tag h100-qwen8b --no-ceilings
  run --model gemma-3-27b --out "$f" --tag h100-gemma27b --role holdout --no-ceilings --depths 128,2048,8192 --batches 1,4,16
  run --model llama-3.1-8b --quant fp8 --out "$f" --tag h100-llama8b-fp8 --role holdout --no-ceilings
elif [ "$mode" = moe ]; then
  f="$out/harness-h100-moe.csv"
  run --model qwen3-30b-a3b --out "$f" --tag h100-qwen30ba3b --no-ceilings
  run --model gpt-oss-20b --out "$f" --tag h100-gptoss20b --role holdout --no-ceilings
else
  f="$out/harness-h200x2.csv"
  grid="--depths 128,8192 --batches 1,16 --prompts 512,4096"
  [ "${SKIP_TENSOR:-}" ] || run --model qwen3-32b --gpus 2 --split tensor --out "$f" --tag h200x2-tensor --role holdout --no-ceilings $grid
  [ "${SKIP_SINGLE:-}" ] || run --model qwen3-32b --out "$f" --tag h200-qwen32b --role holdout $grid
  [ "${SKIP_LAYER:-}" ] || timeout 200 python3 -m planner.cli calibrate run --model qwen3-32b --gpus 2 --split layer --out "$f" --tag h200x2-layer --role holdout --no-ceilings $grid 2>&1 | tee -a "$out/log.txt"
fi
ls -la "$out"
