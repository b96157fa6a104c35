#!/bin/bash
# Host <-> GPU copy bandwidth on a lent GPU machine (bench/pcie_copy.cu): pinned and pageable host memory,
# both directions, 64 KiB to 128 MiB. Committed as hwdb/runs/h200-pcie-copy.csv; the pinned device-to-host
# rate prices llama.cpp's per-step logits copy (docs/kernel-paths.md#logits).
# Usage on that machine, from the repository root: bash bench/pcie_device.sh OUTDIR
set -euo pipefail
W=$1
mkdir -p "$W"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.max,pcie.link.gen.current,pcie.link.width.current --format=csv \
  > "$W/machine.txt" 2>&1 || true
nvcc -O2 -arch=sm_90 -o "$W/pcie_copy" bench/pcie_copy.cu
"$W/pcie_copy" > "$W/pcie-copy.csv"
cat "$W/machine.txt" "$W/pcie-copy.csv"
