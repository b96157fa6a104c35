"""Speed of the speculative-decoding model: one fit with --spec (incl. break-even search over
4,096 batch sizes), the --sweep-accept table, and a claim check. Run: python bench/bench_spec.py"""

from __future__ import annotations

import time

from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.fit import fit


def timed(label, f, n):
    f()  # warm
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    dt = (time.perf_counter() - t0) / n
    print(f"{label:<64}{dt * 1e3:8.1f} ms")


def main():
    c = Catalog()
    cal = c.calibration(None)
    cases = [("qwen3.6-27b", "rtx5090", "dflash"), ("qwen3.6-27b", "rtx5090", "mtp"),
             ("llama-3.1-8b", "rtx4090", "draft:llama-3.2-1b")]
    for model, gpu, spec in cases:
        r = resolve(c, Deployment(model=model, gpus=(gpu,), ctx_tokens=32768, spec=spec, accept=0.7))
        timed(f"resolve {model} --spec {spec}", lambda: resolve(
            c, Deployment(model=model, gpus=(gpu,), ctx_tokens=32768, spec=spec, accept=0.7)), 20)
        timed(f"fit (memory, max ctx, speed, spec, break-even) {spec}", lambda: fit(c, r, calibration=cal), 10)
        timed(f"fit + --sweep-accept {spec}", lambda: fit(c, r, calibration=cal, sweep_accept=True), 10)
        timed(f"fit + --observed {spec}", lambda: fit(c, r, calibration=cal, observed=150.0), 10)


if __name__ == "__main__":
    main()
