"""Turns the output of bench/kernels_device.sh (Nsight Compute CSVs and llama-bench JSONL) into the
committed kernel-time table of llama.cpp b11434 on the H200 (docs/kernel-paths.md#kernel-table):

  hwdb/runs/llamacpp-h200.kernels.raw/<model>.<quant>.csv  every kernel launch: step, kernel, grid, block, time
  hwdb/runs/llamacpp-h200.kernels.csv                      per model, quant, step tokens and kernel: launches, time
  hwdb/runs/llamacpp-h200.steps.csv                        per model, quant and step tokens: llama-bench's step
                                                           time next to the sum of the kernels Nsight timed
  hwdb/runs/llamacpp-h200-steps.csv                        the same step times as held-out runs for validate

Usage: python bench/kernels_ingest.py OUT_DIR   (OUT_DIR holds ncu/ and bench/ as the device script left them)
       python bench/kernels_ingest.py --from-raw (rebuild the two tables from the committed raw launches)

A profiled run of `llama-bench -p 1,16,32 -n 0 -r 1 --no-warmup` holds one forward step per token count;
a step ends with the output head, the widest mat-vec launch of the run (MMVQ, or MMVF for float weights) (the head runs on the last token only).
"""
from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "hwdb" / "runs"
RAW = RUNS / "llamacpp-h200.kernels.raw"
PROFILED = (1, 16, 32)  # the token counts bench/kernels_device.sh profiles, in order
SOURCE = ("bench/kernels_device.sh; llama.cpp b11434 (CUDA 13.0, sm_90) on 1 x NVIDIA H200 (driver 580.159.04); "
          "Nsight Compute 2025.3.1 gpu__time_duration.sum, --clock-control none --cache-control none; "
          "synthetic GGUFs with each model's exact tensors (planner calibrate gguf)")


def short_name(name: str) -> str:
    """`void mul_mat_q<12, 32, 0, 30>(const char *, ...)` -> `mul_mat_q`."""
    name = re.sub(r"\(.*", "", name)
    name = re.sub(r"<.*", "", name)
    return name.replace("void ", "").strip()


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def read_ncu(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines(keepends=True) if not line.startswith("==")]
    out = []
    for row in csv.DictReader(lines):
        if not row["ID"].strip().isdigit():
            continue  # the units row
        out.append({"kernel": short_name(row["Kernel Name"]), "grid": int(_num(row["launch__grid_size"])),
                    "block": row["Block Size"].replace(" ", ""), "time_ns": _num(row["gpu__time_duration.sum"])})
    return out


def split_steps(launches: list[dict]) -> list[list[dict]]:
    """One list per forward step: a step ends with the output head, the widest mat-vec of the run, and
    the launches that follow the run's last head."""
    matvec = ("mul_mat_vec_q", "mul_mat_vec_f")
    head = max(r["grid"] for r in launches if r["kernel"] in matvec)
    heads = [i for i, r in enumerate(launches) if r["kernel"] in matvec and r["grid"] == head]
    # what follows the last head (Gemma's logit soft-capping) follows every head
    tail = [r["kernel"] for r in launches[heads[-1] + 1:]]
    steps, start = [], 0
    for i in heads:
        end = i + 1
        while end - i - 1 < len(tail) and end < len(launches) and launches[end]["kernel"] == tail[end - i - 1]:
            end += 1
        steps.append(launches[start:end])
        start = end
    return steps


def write_raw(tag: str, launches: list[dict]) -> None:
    steps = split_steps(launches)
    if len(steps) != len(PROFILED):
        raise SystemExit(f"{tag}: {len(steps)} steps, expected {len(PROFILED)}")
    RAW.mkdir(exist_ok=True)
    path = RAW / f"{tag}.csv"
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step_tokens", "kernel", "grid", "block", "time_ns"])
        for n, step in zip(PROFILED, steps):
            for r in step:
                w.writerow([n, r["kernel"], r["grid"], r["block"], f"{r['time_ns']:.0f}"])
    tmp.replace(path)


def read_raw(path: Path) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    with path.open() as f:
        for r in csv.DictReader(f):
            out[int(r["step_tokens"])].append({"kernel": r["kernel"], "grid": int(r["grid"]), "time_ns": float(r["time_ns"])})
    return out


def read_bench(path: Path) -> dict[int, tuple[float, float]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            j = json.loads(line)
            samples = sorted(x / 1e3 for x in j["samples_ns"])  # the first repetition is often an outlier
            out[int(j["n_prompt"])] = (statistics.median(samples), samples[-1] - samples[0])
    return out


def _write_csv(path: Path, header: str, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        f.write(header)
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def tables(bench_dir: Path) -> None:
    kernel_rows, step_rows = [], []
    for raw in sorted(RAW.glob("*.csv")):
        tag = raw.stem
        model, quant = tag.rsplit(".", 1)
        bench = read_bench(bench_dir / f"{tag}.jsonl")
        for n, step in sorted(read_raw(raw).items()):
            agg: dict[str, list[float]] = defaultdict(list)
            for r in step:
                agg[r["kernel"]].append(r["time_ns"] / 1e3)
            for k, ts in sorted(agg.items(), key=lambda kv: -sum(kv[1])):
                kernel_rows.append({"model": model, "quant": quant, "step_tokens": n, "kernel": k, "launches": len(ts),
                                    "sum_us": f"{sum(ts):.1f}", "mean_us": f"{sum(ts) / len(ts):.2f}",
                                    "min_us": f"{min(ts):.2f}"})
            total = sum(r["time_ns"] for r in step) / 1e3
            b, sd = bench.get(n, (float("nan"), float("nan")))
            step_rows.append({"model": model, "quant": quant, "step_tokens": n, "kernels": len(step),
                              "kernel_sum_us": f"{total:.1f}", "bench_step_us": f"{b:.1f}", "bench_range_us": f"{sd:.1f}"})
        for n, (b, sd) in sorted(bench.items()):
            if n not in PROFILED:
                step_rows.append({"model": model, "quant": quant, "step_tokens": n, "kernels": "", "kernel_sum_us": "",
                                  "bench_step_us": f"{b:.1f}", "bench_range_us": f"{sd:.1f}"})
    step_rows.sort(key=lambda r: (r["model"], r["quant"], int(r["step_tokens"])))
    head = f"# {SOURCE}.\n"
    _write_csv(RUNS / "llamacpp-h200.kernels.csv",
               head + "# One row per model, quant, forward step of step_tokens tokens and kernel: launches and their time"
               " (us). Raw launches: llamacpp-h200.kernels.raw/.\n",
               ["model", "quant", "step_tokens", "kernel", "launches", "sum_us", "mean_us", "min_us"], kernel_rows)
    _write_csv(RUNS / "llamacpp-h200.steps.csv",
               head + "# One forward step of step_tokens tokens (one sequence, llama-bench pp<N>, -fa 1, 5 repetitions): "
               "the median of llama-bench's 5 step times and their range, max - min (us; the first repetition is often slow), next to the number and summed time of the"
               " kernels Nsight Compute timed in one profiled step (empty where that token count was not profiled).\n",
               ["model", "quant", "step_tokens", "kernels", "kernel_sum_us", "bench_step_us", "bench_range_us"], step_rows)


STEPS_SOURCE = ("bench/kernels_device.sh; llama-bench of llama.cpp b11434 (CUDA 13.0, sm_90) on 1 x NVIDIA H200 "
                "(driver 580.159.04); synthetic GGUFs with each model's exact tensors (planner calibrate gguf)")
RUN_FIELDS = ["ref_row", "role", "gpu", "gpu_count", "engine", "model", "quant", "kv_quant", "flash_attention",
              "prompt_tokens", "depth_tokens", "gen_tokens", "batch", "ubatch_tokens", "metric", "value", "unit",
              "source_url", "note"]


def runs(bench_dir: Path) -> None:
    """llama-bench's step times as held-out runs for `planner validate` (hwdb/runs/llamacpp-h200-steps.csv):
    one prompt of N tokens is one step of N tokens, so prefill_tok_s = N / step time."""
    rows = []
    for bench in sorted(bench_dir.glob("*.jsonl")):
        model, quant = bench.stem.rsplit(".", 1)
        for n, (t, rng) in sorted(read_bench(bench).items()):
            rows.append({"ref_row": f"h200k.{model}.{quant}.pp{n}", "role": "holdout", "gpu": "h200", "gpu_count": 1,
                         "engine": "llama.cpp-cuda", "model": model, "quant": quant, "kv_quant": "f16",
                         "flash_attention": "on", "prompt_tokens": n, "depth_tokens": 0, "gen_tokens": 0, "batch": 1,
                         "ubatch_tokens": 512, "metric": "prefill_tok_s", "value": f"{n / (t * 1e-6):.3f}",
                         "unit": "tok/s", "source_url": STEPS_SOURCE,
                         "note": f"llama-bench pp{n} -r 5, median step {t:.1f} us (range {rng:.1f} us)"})
    _write_csv(RUNS / "llamacpp-h200-steps.csv",
               "# One forward step of N tokens (llama-bench pp<N>: one sequence, no cache before it) as a prefill run"
               " of N tokens; written by bench/kernels_ingest.py from llamacpp-h200.kernels.raw/bench/. Held out:"
               " no fit uses these rows.\n", RUN_FIELDS, rows)


def main(argv: list[str]) -> None:
    if argv == ["--from-raw"]:
        tables(RAW / "bench")
        runs(RAW / "bench")
        return
    if len(argv) != 1:
        raise SystemExit(__doc__)
    out = Path(argv[0])
    RAW.mkdir(exist_ok=True)
    (RAW / "bench").mkdir(exist_ok=True)
    for ncu in sorted((out / "ncu").glob("*.csv")):
        write_raw(ncu.stem, read_ncu(ncu))
        bench = out / "bench" / f"{ncu.stem}.jsonl"
        (RAW / "bench" / bench.name).write_text(bench.read_text())
    tables(RAW / "bench")
    runs(RAW / "bench")


if __name__ == "__main__":
    main(sys.argv[1:])
