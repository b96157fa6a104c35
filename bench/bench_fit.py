"""Benchmark: how long the main job takes. Prints numbers with their conditions; asserts nothing.

    python bench/bench_fit.py
"""

import subprocess
import sys
import time

from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.fit import fit
from planner.memory import plan_memory


def timed(f, n):
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def main():
    load = timed(Catalog, 5)
    c = Catalog()
    r = resolve(c, Deployment(model="qwen3.6-27b", gpus=("rtx5090",), ctx_tokens=200_000))
    plan = timed(lambda: plan_memory(r, 200_000), 200)
    full = timed(lambda: fit(c, r), 20)
    t = time.perf_counter()
    subprocess.run(["planner", "fit", "qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "200k"], capture_output=True, check=False)
    cli = time.perf_counter() - t
    print(f"python {sys.version.split()[0]}")
    print(f"catalog load (31 GPUs, 25 models, 7 engines):    {load * 1e3:8.1f} ms")
    print(f"plan_memory, qwen3.6-27b on rtx5090 @200k:       {plan * 1e3:8.2f} ms")
    print(f"fit (plan + max-context search), same:           {full * 1e3:8.1f} ms")
    print(f"`planner fit qwen3.6-27b --gpu rtx5090 --ctx 200k` wall time: {cli * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
