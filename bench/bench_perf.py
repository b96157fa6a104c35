"""Benchmark of the speed model: sweep cost and prediction error against published runs.
Prints numbers with their conditions; asserts nothing.

    python bench/bench_perf.py

1. Sweep: 10,000 deployments = 20 (model, GPU set, quant) combinations x 500 workloads (batch
   1-256 x depth 0-128k x prompt 128-8k), each predicting decode and prefill speed; timed end to
   end including resolving and compiling the 20 combinations.
2. One full `estimate` (the report `planner fit` prints, with the per-op breakdown).
3. Error against hwdb/runs/published.csv (from shared/reference/measurements-train.csv): median
   and 90th percentile of |error| per metric, for the rows the fit used and the held-out rows.
"""

import itertools
import time
from pathlib import Path

import numpy as np

from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.perf import decode_time, prefill_time
from planner.runs import load_runs, prepare
from planner.speed import estimate, step_model
from planner.validate import score, summary, METRIC_NAMES

COMBOS = [
    ("qwen3.6-27b", ("rtx5090",), "Q4_K_M"), ("qwen3.6-27b", ("rtx5090", "rtx3090ti"), "Q8_0"),
    ("qwen3.6-27b", ("rtx3090",), "Q4_K_M"), ("qwen3.6-35b-a3b", ("rtx4090",), "Q4_K_M"),
    ("qwen3.6-35b-a3b", ("rtx3070ti",), "Q4_K_M"), ("llama-3.1-8b", ("rtx4090",), "Q4_K_M"),
    ("llama-3.1-8b", ("m4max",), "Q8_0"), ("llama-3.1-70b", ("rtx3090", "rtx3090"), "Q4_K_M"),
    ("gemma-4-31b", ("rx7900xtx",), "Q4_K_M"), ("gemma-4-26b-a4b", ("mi50-32gb",), "Q4_K_M"),
    ("gpt-oss-120b", ("strix-halo",), "MXFP4_MOE"), ("gpt-oss-20b", ("rtx5080",), "MXFP4_MOE"),
    ("qwen3-32b", ("rtx-a6000",), "Q5_K_M"), ("qwen3-30b-a3b", ("rtx3090ti",), "Q4_K_M"),
    ("llama-3.1-70b", ("h100-sxm",), "Q4_K_M"), ("qwen2.5-32b", ("radeon-ai-pro-r9700",), "Q4_K_M"),
    ("gemma-3-27b", ("m3max",), "Q4_K_M"), ("qwen3-8b", ("arc-pro-b60",), "Q4_K_M"),
    ("qwen3.5-27b", ("rtx4090",), "Q4_K_M"), ("llama-3.2-1b", ("rtx3070ti",), "Q8_0"),
]


def sweep(c: Catalog) -> tuple[float, int]:
    batch = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 192])
    depth = np.linspace(0, 128_000, 10)
    prompt = np.array([128, 512, 1024, 2048, 8192])
    grid = np.array(list(itertools.product(batch, depth, prompt)), dtype=float)  # 500 workloads
    t = time.perf_counter()
    n = 0
    cal = c.calibration(None)
    for model, gpus, quant in COMBOS:
        r = resolve(c, Deployment(model=model, gpus=gpus, quant=quant))
        sm = step_model(c, r, cal)
        b, d, p = grid[:, 0], grid[:, 1], grid[:, 2]
        dec = 128 / decode_time(sm, b, d + p, np.full_like(b, 128))
        pre = b * p / prefill_time(sm, b, p, d, np.full_like(b, 512))
        assert len(dec) == len(pre)
        n += len(dec)
    return time.perf_counter() - t, n


def main():
    c = Catalog()
    sweep(c)  # warm up
    best = min(sweep(c)[0] for _ in range(3))
    _, n = sweep(c)
    print(f"sweep: {n:,} deployments (20 model/GPU/quant combinations x 500 workloads), decode + prefill each: "
          f"{best * 1e3:.0f} ms ({best / n * 1e6:.1f} us per deployment), best of 3")
    r = resolve(c, Deployment(model="qwen3.6-27b", gpus=("rtx5090", "rtx3090ti"), quant="Q8_0", split="tensor"))
    t = time.perf_counter()
    for _ in range(50):
        estimate(c, r, 65536)
    print(f"estimate (full report with per-op breakdown), qwen3.6-27b Q8_0 on rtx5090+rtx3090ti tensor split: "
          f"{(time.perf_counter() - t) / 50 * 1e3:.2f} ms")
    runs = load_runs(c.root / "hwdb" / "runs" / "published.csv")
    t = time.perf_counter()
    prepared = prepare(c, runs, c.calibration(None))
    scored = score(prepared, c.calibration(None))
    print(f"validation: {len(runs)} published runs predicted in {(time.perf_counter() - t) * 1e3:.0f} ms "
          f"(calibration {c.calibration(None).id})")
    print(f"{'metric':<28}{'rows':<10}{'n':>4}{'median |err|':>14}{'p90 |err|':>11}")
    for s in summary(scored):
        print(f"{METRIC_NAMES[s['metric']]:<28}{s['role']:<10}{s['n']:>4}{s['median_abs_error']:>14.1%}"
              f"{s['p90_abs_error']:>11.1%}")


if __name__ == "__main__":
    main()
