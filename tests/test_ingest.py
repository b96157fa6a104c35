"""`planner calibrate ingest` on sample outputs written from each engine's documented format
(tests/samples/README.md says where each comes from): conditions and values come through, the
arithmetic of derived metrics is right, and what cannot be expressed is refused in one line."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.ingest import Given, detect, ingest, match_model
from planner.runs import Run, load_runs, predict, prepare

SAMPLES = Path(__file__).resolve().parent / "samples"


@pytest.mark.parametrize("name", ["llama-bench.json", "llama-bench.jsonl"])
def test_llama_bench_rows_carry_their_conditions(catalog, name):
    fmt, rows = ingest(catalog, SAMPLES / name, Given(tag="lb"))
    assert fmt == "llama-bench" and len(rows) == 2  # the -pg object has no metric here and is skipped
    pp, tg = (Run.model_validate({k: v for k, v in r.items() if v is not None}) for r in rows)
    assert (pp.gpu, pp.engine, pp.model, pp.quant, pp.kv_quant, pp.flash_attention) == \
        ("rtx4090", "llama.cpp-cuda", "llama-2-7b", "Q4_0", "f16", "off")
    assert (pp.metric, pp.prompt_tokens, pp.value, pp.ubatch_tokens) == ("prefill_tok_s", 512, 11992.7, 512)
    assert (tg.metric, tg.gen_tokens, tg.value) == ("decode_tok_s", 128, 186.21)
    # the ingested tg128 row predicts like the scoreboard row of hwdb/runs/published.csv (within 10%)
    p = prepare(catalog, [tg], catalog.calibration(None))[0]
    assert predict(p) == pytest.approx(186.21, rel=0.10)


def test_batched_bench_table_per_stream_arithmetic(catalog):
    _, rows = ingest(catalog, SAMPLES / "batched-bench.txt", Given(model="llama-2-7b", quant="F16", gpu="rtx4090"))
    assert len(rows) == 10
    dec = [r for r in rows if r["metric"] == "decode_tok_s"]
    pre = [r for r in rows if r["metric"] == "prefill_tok_s"]
    # B = 16: S_TG 242.23 t/s over 16 streams = 15.139375 t/s each, after the 128-token prompt
    b16 = next(r for r in dec if r["batch"] == 16)
    assert b16["value"] == pytest.approx(242.23 / 16, abs=1e-4) and b16["depth_tokens"] == 128
    assert next(r for r in pre if r["batch"] == 4)["value"] == 1373.96  # S_PP: 4 x 128 / 0.373 s
    assert {r["flash_attention"] for r in rows} == {"off"} and {r["ubatch_tokens"] for r in rows} == {512}


def test_batched_bench_shared_prompt_has_no_prefill_rows(catalog, tmp_path):
    f = tmp_path / "shared.txt"
    f.write_text((SAMPLES / "batched-bench.txt").read_text().replace("is_pp_shared = 0", "is_pp_shared = 1"))
    _, rows = ingest(catalog, f, Given(model="llama-2-7b", quant="F16", gpu="rtx4090"))
    assert {r["metric"] for r in rows} == {"decode_tok_s"} and len(rows) == 5


def test_batched_bench_jsonl(catalog):
    fmt, rows = ingest(catalog, SAMPLES / "batched-bench.jsonl", Given(model="llama-2-7b", quant="F16", gpu="rtx4090"))
    assert fmt == "batched-bench" and len(rows) == 4
    assert [r["value"] for r in rows if r["metric"] == "decode_tok_s"] == [36.533, pytest.approx(23.050371 / 2, abs=1e-4)]


def test_vllm_serve_throughput_and_tpot(catalog):
    fmt, rows = ingest(catalog, SAMPLES / "vllm-serve.json", Given(gpu="h100"))
    assert fmt == "vllm-serve"
    thr, dec = rows
    # 65,536 tokens in and out over 32 requests = 2,048 each; concurrency 32
    assert (thr["metric"], thr["batch"], thr["prompt_tokens"], thr["gen_tokens"], thr["value"]) == \
        ("throughput_tok_s", 32, 2048, 2048, 434.4)
    assert (thr["model"], thr["engine"], thr["gpu"]) == ("llama-3.1-8b", "vllm-cuda", "h100-sxm")
    assert dec["value"] == pytest.approx(1000 / 70.14, abs=1e-3) and dec["depth_tokens"] == 2048


def test_vllm_open_loop_run_is_refused(catalog, tmp_path):
    d = json.loads((SAMPLES / "vllm-serve.json").read_text())
    d.update(request_rate=4.0, max_concurrency=None)
    f = tmp_path / "open.json"
    f.write_text(json.dumps(d))
    res = CliRunner().invoke(main, ["calibrate", "ingest", str(f), "--gpu", "h100"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "concurrency" in res.output


def test_model_names_match_the_catalog(catalog):
    assert match_model(catalog, "models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf") == "llama-3.1-8b"
    assert match_model(catalog, "Qwen3-8B-Q8_0.gguf") == "qwen3-8b"
    assert match_model(catalog, "google/gemma-3-27b-it") == "gemma-3-27b"
    with pytest.raises(Exception, match="--model"):
        match_model(catalog, "mystery-13b.Q4_0.gguf")


def test_detect_refuses_other_files():
    with pytest.raises(Exception, match="not a format"):
        detect("hello\nworld\n")
    with pytest.raises(Exception, match="not a format"):
        detect('{"foo": 1}')


def test_ingest_cli_appends_and_keeps_ids_apart(tmp_path):
    out = tmp_path / "runs.csv"
    r = CliRunner()
    res = r.invoke(main, ["calibrate", "ingest", str(SAMPLES / "llama-bench.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["calibrate", "ingest", str(SAMPLES / "llama-bench.json"), "-o", str(out)])
    assert res.exit_code == 2 and "--tag" in res.output and len(load_runs(out)) == 2  # nothing lost
    res = r.invoke(main, ["calibrate", "ingest", str(SAMPLES / "batched-bench.txt"), "--model", "llama-2-7b",
                          "--quant", "F16", "--gpu", "rtx4090", "-o", str(out)])
    assert res.exit_code == 0 and len(load_runs(out)) == 12
    res = r.invoke(main, ["calibrate", "ingest", str(SAMPLES / "batched-bench.txt")])
    assert res.exit_code == 2 and "--model" in res.output
    res = r.invoke(main, ["validate", str(out)])
    assert res.exit_code == 0 and "prefill tok/s" in res.output


def test_a_profile_file_of_ones_own_is_used_and_named(tmp_path):
    # ingest -> fit an engine-scoped profile to a file -> plan and validate with that file
    runs, prof, page = tmp_path / "runs.csv", tmp_path / "mine.toml", tmp_path / "v.html"
    r = CliRunner()
    assert r.invoke(main, ["calibrate", "ingest", str(SAMPLES / "batched-bench.txt"), "--model", "llama-2-7b",
                           "--quant", "F16", "--gpu", "rtx4090", "-o", str(runs)]).exit_code == 0
    res = r.invoke(main, ["calibrate", "fit", str(runs), "--engine", "llama.cpp-cuda", "--gpu", "rtx4090", "-o", str(prof)])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["fit", "llama-2-7b", "--gpu", "rtx4090", "--quant", "F16", "--calibration", str(prof)])
    assert res.exit_code == 0 and "calibration mine" in res.output
    res = r.invoke(main, ["validate", str(runs), "--calibration", str(prof), "--html", str(page)])
    assert res.exit_code == 0 and "profile mine" in res.output and page.read_text().startswith("<!DOCTYPE html>")
    res = r.invoke(main, ["validate", str(runs), "--html", str(tmp_path / "v.txt")])
    assert res.exit_code == 2 and "--html" in res.output
