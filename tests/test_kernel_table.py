"""The H200 kernel-time table (docs/kernel-paths.md#kernel-table): rebuilt from its committed raw launches,
and what it shows, which the speed model's mechanisms rest on."""
from __future__ import annotations

import csv
import importlib.util
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "hwdb" / "runs"


def _ingest_module():
    spec = importlib.util.spec_from_file_location("kernels_ingest", ROOT / "bench" / "kernels_ingest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(line for line in path.open() if not line.startswith("#")))


def test_the_tables_are_what_the_raw_launches_give(tmp_path, monkeypatch):
    """bench/kernels_ingest.py --from-raw rebuilds the three committed files from the raw launches."""
    mod = _ingest_module()
    shutil.copytree(RUNS / "llamacpp-h200.kernels.raw", tmp_path / "llamacpp-h200.kernels.raw")
    monkeypatch.setattr(mod, "RUNS", tmp_path)
    monkeypatch.setattr(mod, "RAW", tmp_path / "llamacpp-h200.kernels.raw")
    mod.main(["--from-raw"])
    for name in ("llamacpp-h200.kernels.csv", "llamacpp-h200.steps.csv", "llamacpp-h200-steps.csv"):
        assert (tmp_path / name).read_text() == (RUNS / name).read_text(), name


def test_profiled_batched_steps_add_up_to_what_llama_bench_timed():
    """A profiled step of 16 or 32 tokens (no CUDA graph) sums to llama-bench's own step time within
    15%: the launches were split into steps correctly and none is missing."""
    rows = [r for r in _rows(RUNS / "llamacpp-h200.steps.csv") if r["kernels"] and r["step_tokens"] in ("16", "32")]
    assert len(rows) == 18
    for r in rows:
        assert float(r["kernel_sum_us"]) == pytest.approx(float(r["bench_step_us"]), rel=0.15), r


def test_a_gemm_step_launches_more_per_layer_than_a_matvec_step():
    """From a 1-token step (MMVQ) to a 16-token one (MMQ) the kernels other than the matmuls (activation
    quantization, stream-k fix-ups, flash attention, norms, activations) take 36-100 us more per layer on
    every profiled quantized model (docs/kernel-paths.md#kernel-table)."""
    layers = {"llama-3.2-1b": 16, "llama-3.1-8b": 32, "llama-3.1-70b": 80, "qwen3.6-27b": 64, "qwen3-30b-a3b": 48,
              "gemma-4-26b-a4b": 30, "gpt-oss-20b": 24, "nemotron-3-nano-30b-a3b": 52}
    other: dict[tuple[str, int], float] = defaultdict(float)
    for r in _rows(RUNS / "llamacpp-h200.kernels.csv"):
        if r["model"] in layers and r["quant"] != "F16" and not r["kernel"].startswith("mul_mat_vec") \
                and r["kernel"] != "mul_mat_q":
            other[r["model"], int(r["step_tokens"])] += float(r["sum_us"])
    rise = {m: (other[m, 16] - other[m, 1]) / n for m, n in layers.items()}
    assert len(rise) == 8 and all(30 < v < 105 for v in rise.values()), rise
