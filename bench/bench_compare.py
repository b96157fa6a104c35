"""Speed of `planner compare`: 20 GPU sets x 4 quants x 3 KV types (the issue's yardstick), the
whole catalog search, and the HTML outputs. Run: python bench/bench_compare.py"""

from __future__ import annotations

import time

from planner.catalog import Catalog
from planner.compare import WORKLOADS, candidate_sets, compare

SETS = [("rtx5090",), ("rtx4090",), ("rtx3090",), ("rtx3090", "rtx3090"), ("rtx3090ti",), ("rx7900xtx",),
        ("rx7900xtx", "rx7900xtx"), ("mi50-32gb",), ("mi50-32gb", "mi50-32gb"), ("mi50-16gb", "mi50-16gb"),
        ("m4max",), ("strix-halo",), ("crescent-island-160gb",), ("arc-pro-b60",), ("arc-pro-b60", "arc-pro-b60"),
        ("radeon-ai-pro-r9700",), ("rtx5080", "rtx5080"), ("rtx-pro-6000-blackwell",), ("rtx5090", "rtx3090ti"),
        ("rtx3070ti", "rtx3070ti", "rtx3070ti")]


def timed(label, f, n):
    out = f()  # warm (and the first, cold, call is reported too)
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    dt = (time.perf_counter() - t0) / n
    print(f"{label:<72}{dt * 1e3:8.0f} ms")
    return out


def main():
    c = Catalog()
    cal = c.calibration(None)
    assert len(SETS) == 20
    for model in ("qwen3.6-27b", "llama-3.1-70b", "qwen3.6-35b-a3b"):
        card = c.model(model)
        t0 = time.perf_counter()
        res = compare(Catalog(), card, SETS, WORKLOADS["chat"], cal)
        cold = time.perf_counter() - t0
        n_opt = sum(len(e.options) for e in res.entries)
        print(f"{model}: 20 sets, {n_opt} quant x KV options planned; first call incl. loading the catalog {cold * 1e3:.0f} ms")
        timed(f"  compare {model}, 20 sets x 4 quants x 3 KV, chat", lambda: compare(c, card, SETS, WORKLOADS["chat"], cal), 5)
        timed(f"  compare {model}, 20 sets x 4 quants x 3 KV, batch", lambda: compare(c, card, SETS, WORKLOADS["batch"], cal), 5)
    card = c.model("qwen3.6-27b")
    sets = candidate_sets(c, 4)
    res = timed(f"compare qwen3.6-27b, whole catalog ({len(sets)} candidate sets, --max-gpus 4)",
                lambda: compare(c, card, sets, WORKLOADS["chat"], cal, auto=True), 2)
    print(f"  planned {len(res.entries)} sets (more of one card stops once fewer run the best quant)")


if __name__ == "__main__":
    main()
