"""Benchmark: calibration and validation work on this machine (no GPU needed).

Prints wall times of: ingesting each sample format; preparing and predicting every committed run;
the engine-scoped harness fit; the reference fit; the harness on the CPU with a tiny model (a
layer forward, to show the harness's own overhead is not what a GPU run measures).

    python bench/bench_calibrate.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from planner import calibrate, validate
from planner.catalog import Catalog
from planner.ingest import Given, ingest
from planner.runs import default_run_files, load_runs, prepare

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    catalog = Catalog()
    samples = ROOT / "tests" / "samples"
    for name, given in [("llama-bench.json", Given()), ("batched-bench.txt", Given(model="llama-2-7b", quant="F16",
                                                                                      gpu="rtx4090")),
                        ("vllm-serve.json", Given(gpu="h100"))]:
        t, (_, rows) = timed(lambda: ingest(catalog, samples / name, given))
        print(f"ingest {name:<22} {len(rows):>3} rows  {t * 1e3:8.1f} ms")
    rows = [r for p in default_run_files(catalog.root) for r in load_runs(p)]
    t, secs = timed(lambda: validate.sections(catalog, rows, None), repeat=1)
    print(f"validate: {len(rows)} runs prepared and predicted with their profiles  {t * 1e3:8.1f} ms")
    t, mem = timed(lambda: validate.memory_scores(catalog, rows), repeat=1)
    print(f"memory plans of {len(mem)} harness runs  {t * 1e3:8.1f} ms")
    ref = catalog.calibration("reference-fit")
    h = [r for r in load_runs(ROOT / "hwdb" / "runs" / "harness-h100.csv") if r.role == "fit"]
    prep = prepare(catalog, h, ref)
    t, (_, info) = timed(lambda: calibrate.fit(ref, prep, engine="torch-cuda"), repeat=1)
    print(f"engine-scoped fit: {len(h)} harness rows, {info['parameters']} factors, {info['evaluations']} "
          f"evaluations  {t:8.2f} s")
    pub = [r for r in load_runs(ROOT / "hwdb" / "runs" / "published.csv") if r.role == "fit"]
    pri = catalog.calibration("priors")
    prep = prepare(catalog, pub, pri)
    t, (_, info) = timed(lambda: calibrate.fit(pri, prep), repeat=1)
    print(f"reference fit: {len(pub)} published rows, {info['parameters']} factors, {info['evaluations']} "
          f"evaluations  {t:8.2f} s")
    from planner import harness
    from planner.errors import PlannerError

    try:
        harness.require_torch()
    except PlannerError:
        print("harness on the CPU: skipped (no torch)")
        return
    from planner.arch import parse_config

    arch = parse_config({"model_type": "qwen3", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                         "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 768, "vocab_size": 4096,
                         "max_position_embeddings": 8192, "tie_word_embeddings": False})
    s = harness.Setup(model="tiny", arch=arch, quant="bf16", gpu="rtx4090", devices=["cpu"], prompts=(64, 256),
                      depths=(64, 1024), batches=(1, 8), prefill_batched=(), repeats=3)
    points, _ = harness.plan_points(arch, 2**30, s.prompts, s.depths, s.batches, ())
    with tempfile.TemporaryDirectory():
        t, ms = timed(lambda: harness.measure(s, points, lambda m: None), repeat=1)
    steps = ", ".join(f"{harness.label(m.point)} {m.seconds * 1e3:.2f} ms" for m in ms)
    print(f"harness on the CPU, 4-layer 256-wide model, {len(points)} points in {t:.2f} s: {steps}")


if __name__ == "__main__":
    main()
