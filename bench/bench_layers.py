"""Benchmark: `fit` time against the number of layers, and memory over repeated library calls.
Prints numbers with their conditions; asserts nothing.

    python bench/bench_layers.py [--layers 64,500,1000,2000,4000] [--calls 2000]

The model is a Llama-3-8B-shaped config.json (hidden 4096, 32 heads, 8 KV heads, FFN 14336,
vocab 128256, 128Ki native context) with N layers, planned on one H100 at its native context:
it does not fit, so fit() runs llama.cpp's --fit offload search and the suggestions (-ngl,
smaller quants, ...), the costliest path. The slope is the least-squares fit of
log(time) on log(layers): 1 is linear.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.fit import fit
from planner.localfile import load_config_json

CONFIG = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
          "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072}


def config_file(folder: Path, n_layers: int) -> Path:
    path = folder / f"llama-{n_layers}L" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(CONFIG, num_hidden_layers=n_layers)))
    return path


def fit_once(catalog: Catalog, path: Path, gpu: str) -> bool:
    card = load_config_json(path)
    r = resolve(catalog, Deployment(model=str(path), gpus=(gpu,)), card=card)
    return fit(catalog, r).fits


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="64,500,1000,2000,4000")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--gpu", default="h100")
    a = ap.parse_args()
    counts = [int(x) for x in a.layers.split(",")]
    catalog = Catalog()
    print(f"python {sys.version.split()[0]}; model: Llama-3-8B shape with N layers, on one {a.gpu}, native context")
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for n in counts:
            path = config_file(Path(tmp), n)
            fit_once(catalog, path, a.gpu)  # warm
            reps = max(1, min(5, 2000 // n))
            t = time.perf_counter()
            for _ in range(reps):
                fit_once(catalog, path, a.gpu)
            times.append((time.perf_counter() - t) / reps)
            print(f"  {n:>6} layers: fit {times[-1] * 1e3:9.1f} ms  ({times[-1] / n * 1e6:.1f} us per layer)")
        if len(counts) > 1:
            print(f"log-log slope of fit time on layers: {slope(counts, times):.2f} (1 = linear)")

        path = config_file(Path(tmp), 64)
        fit_once(catalog, path, a.gpu)
        start = rss_mib()
        marks = {}
        for i in range(1, a.calls + 1):
            fit_once(catalog, path, a.gpu)  # a fresh config read each call: a new Architecture every time
            if i in (a.calls // 4, a.calls // 2, a.calls):
                marks[i] = rss_mib()
        print(f"peak RSS over {a.calls} library fit() calls (64 layers, config re-read each call): "
              f"{start:.0f} MiB after 1, " + ", ".join(f"{v:.0f} MiB after {k}" for k, v in marks.items()))


if __name__ == "__main__":
    main()
