"""Benchmark: synthetic GGUF files (planner.synth) on this machine.

Prints the time to lay out each full-size catalog model's GGUF (tensor list, types, metadata; no
data) and the write speed of real files: a full-size llama-3.2-1b at Q4_K_M and F16, and the data
rate of the random-block pool per type. On the project's H200 machine the harness wrote
qwen3.6-27b Q8_0 (26.6 GiB) in 8 s and qwen3-32b Q4_K_M (18.4 GiB) in 5 s (hwdb/runs/llamacpp-h200.raw).

    python bench/bench_synth.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from planner import synth, units
from planner.catalog import Catalog


def main() -> None:
    catalog = Catalog()
    print("layout (full size, no data):")
    for mid, q in [("llama-3.1-8b", "Q4_K_M"), ("qwen3.6-27b", "Q4_K_M"), ("qwen3.6-35b-a3b", "Q4_K_M"),
                   ("gpt-oss-20b", "MXFP4_MOE"), ("gemma-4-31b", "Q4_K_M"), ("deepseek-v3", "Q4_K_M")]:
        t = time.perf_counter()
        lay = synth.layout(catalog, catalog.model(mid), q)
        dt = time.perf_counter() - t
        print(f"  {mid:<18} {q:<10} {len(lay.tensors):>6} tensors {lay.tensor_bytes / units.GiB:>8.2f} GiB  {dt * 1e3:7.1f} ms")
    print("random block pools (64 MiB each):")
    for ty in ("F16", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "MXFP4"):
        t = time.perf_counter()
        synth._pool(ty, synth.CHUNK_BYTES, np.random.default_rng(0))
        dt = time.perf_counter() - t
        print(f"  {ty:<7} {synth.CHUNK_BYTES / units.MiB / dt:8.0f} MiB/s")
    print("writing full-size files:")
    with tempfile.TemporaryDirectory() as d:
        for q in ("Q4_K_M", "F16"):
            lay = synth.layout(catalog, catalog.model("llama-3.2-1b"), q)
            path = Path(d) / f"m-{q}.gguf"
            t = time.perf_counter()
            synth.write(lay, path)
            dt = time.perf_counter() - t
            print(f"  llama-3.2-1b {q:<7} {lay.tensor_bytes / units.GiB:6.2f} GiB in {dt:6.2f} s = "
                  f"{lay.tensor_bytes / units.GiB / dt:6.2f} GiB/s")
            path.unlink()


if __name__ == "__main__":
    main()
