"""How fast `planner simulate` runs: requests simulated per second of wall time, and step times
priced (cache misses of the step-time memo). Run: python bench/bench_simulate.py"""

import time

from planner import simulate as sim
from planner.catalog import Catalog
from planner.deployment import Deployment, resolve


def main() -> None:
    cat = Catalog()
    for engine, gpu, batch, rate, sizes in (("vllm-cuda", "h100-sxm", 256, 20.0, (1_000, 10_000, 100_000)),
                                            ("llama.cpp-cuda", "rtx4090", 4, 1.0, (1_000, 10_000))):
        r = resolve(cat, Deployment(model="qwen3-8b", gpus=(gpu,), engine=engine, batch=batch, ctx_tokens=8192))
        for n in sizes:
            e = sim.engine_for(cat, r, cat.calibration(None))
            w = sim.Workload(n_requests=n, rate=rate, prompt=sim.parse_dist("lognormal:800,0.8", "p"),
                             gen=sim.parse_dist("lognormal:200,0.6", "g"), seed=1)
            t0 = time.perf_counter()
            res = sim.run(e, w)
            dt = time.perf_counter() - t0
            print(f"{engine:15s} {gpu:9s} max_seqs {batch:3d} rate {rate:5.1f}/s  {n:7,d} requests: {dt:6.2f} s "
                  f"({n / dt:8,.0f} req/s, {res.steps:9,d} steps, {len(e.cache):6,d} step times priced)", flush=True)


if __name__ == "__main__":
    main()
