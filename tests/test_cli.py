"""The CLI: the JSON contract, exit codes, one-line errors, docs in line with --help."""

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_fit_json_contract():
    r = run("fit", "qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "200k", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["fits"] is True and isinstance(d["max_ctx_tokens"], int)
    dev = d["memory"]["devices"][0]
    for k in ("device", "capacity_bytes", "weights_bytes", "kv_cache_bytes", "recurrent_state_bytes",
              "compute_buffer_bytes", "runtime_overhead_bytes", "total_bytes"):
        assert k in dev
    for k, v in dev.items():
        if k.endswith("_bytes"):
            assert isinstance(v, int), k
    assert isinstance(d["memory"]["host_bytes"], int)
    assert {"engine", "quant", "kv_quant", "calibration"} <= set(d["assumptions"])
    assert isinstance(d["warnings"], list)


def test_fit_json_is_pinned():
    """Pinned output for one deployment; regenerate on purpose with
    `planner fit llama-3.1-8b --gpu rtx4090 --ctx 32k --json > tests/pinned/fit_llama31_8b_rtx4090.json`."""
    r = run("fit", "llama-3.1-8b", "--gpu", "rtx4090", "--ctx", "32k", "--json")
    pinned = json.loads((ROOT / "tests/pinned/fit_llama31_8b_rtx4090.json").read_text())
    assert json.loads(r.output) == pinned


def test_does_not_fit_exit_1_with_suggestions():
    # every layer on the GPU asked for explicitly: llama.cpp's --fit does not step in
    r = run("fit", "qwen3.6-27b", "--gpu", "rtx3070ti", "--ctx", "32k", "-ngl", "64")
    assert r.exit_code == 1
    assert "DOES NOT FIT" in r.output and ("--quant" in r.output or "-ngl" in r.output)


def test_llamacpp_fit_offloads_when_no_layer_count_given():
    r = run("fit", "qwen3.6-27b", "--gpu", "rtx3070ti", "--ctx", "32k", "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["fits"]
    assert out["assumptions"]["gpu_layers"] < 64 and out["memory"]["host_bytes"] > 10 * 2**30
    assert any("--fit would" in w for w in out["warnings"])


@pytest.mark.parametrize("args,msg", [
    (["fit", "qwen3.6-27bb", "--gpu", "rtx5090"], "did you mean qwen3.6-27b"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5900"], "did you mean"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "-5"], "--ctx"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "99999999999"], "absurdly large"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--kv-quant", "fp8"], "has no fp8 KV cache"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--engine", "vllm-cuda", "--quant", "Q4_K_M"], "does not load"),
    (["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--engine", "llama.cpp-metal"], "does not run on"),
    (["fit", "/nonexistent/config.json", "--gpu", "rtx5090"], "no such file"),
])
def test_bad_input_is_one_line_and_nonzero(args, msg):
    r = run(*args)
    assert r.exit_code == 2
    assert msg in r.output
    assert "Traceback" not in r.output


def test_malformed_config_and_gguf(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    r = run("fit", str(bad), "--gpu", "rtx5090")
    assert r.exit_code == 2 and "not a JSON config" in r.output
    bad.write_text('{"model_type": "llama"}')
    r = run("fit", str(bad), "--gpu", "rtx5090")
    assert r.exit_code == 2 and "hidden_size" in r.output
    g = tmp_path / "x.gguf"
    g.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    r = run("fit", str(g), "--gpu", "rtx5090")
    assert r.exit_code == 2 and "GGUF" in r.output


def test_local_config_json(tmp_path, catalog):
    cfg = dict(catalog.model("qwen3-8b").config)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    a = json.loads(run("fit", str(p), "--gpu", "rtx4090", "--ctx", "8k", "--json").output)
    b = json.loads(run("fit", "qwen3-8b", "--gpu", "rtx4090", "--ctx", "8k", "--json").output)
    assert a["memory"]["devices"] == b["memory"]["devices"]


def test_gguf_file_exact_sizes(tmp_path):
    """Write a tiny real GGUF with the gguf package and read it back."""
    import gguf
    import numpy as np
    p = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(1024)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((100, 64), dtype=np.float32))
    w.add_tensor("output.weight", rng.standard_normal((100, 64), dtype=np.float32).astype(np.float16))
    for i in range(2):
        for n, shape in (("attn_q", (64, 64)), ("attn_k", (32, 64)), ("attn_v", (32, 64)), ("attn_output", (64, 64)),
                         ("ffn_gate", (128, 64)), ("ffn_up", (128, 64)), ("ffn_down", (64, 128))):
            w.add_tensor(f"blk.{i}.{n}.weight", rng.standard_normal(shape, dtype=np.float32).astype(np.float16))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    d = json.loads(run("fit", str(p), "--gpu", "rtx4090", "--ctx", "1024", "--json").output)
    dev = d["memory"]["devices"][0]
    # GPU weights: output 100x64 f16 + 2 layers x (64*64*2 + 32*64*2 + 128*64*3) f16
    assert dev["weights_bytes"] == 100 * 64 * 2 + 2 * (4096 * 2 + 2048 * 2 + 8192 * 3) * 2
    assert d["memory"]["host_bytes"] == 100 * 64 * 4  # token embedding (f32) in host RAM
    # KV: 1024 cells x 2 layers x 2 heads x (16+16) x 2 bytes
    assert dev["kv_cache_bytes"] == 1024 * 2 * 2 * 32 * 2


def test_listing_commands():
    for cmd in ("gpus", "models", "engines", "hosts", "quants"):
        r = run(cmd)
        assert r.exit_code == 0 and len(r.output.splitlines()) > 3
    r = run("show", "rtx5090")
    assert "memory_bandwidth" in r.output and "http" in r.output
    r = run("show", "crescent-island-160gb")
    assert "ESTIMATE" in r.output
    assert run("show", "rtx509").exit_code == 2


def test_docs_list_every_fit_option():
    doc = (ROOT / "docs/cli.md").read_text()
    help_text = run("fit", "--help").output
    for opt in re.findall(r"(--[a-z][a-z-]+)", help_text):
        if opt != "--help":
            assert opt in doc, f"docs/cli.md does not mention {opt}"


@pytest.mark.parametrize("args, kind", [(["gpus"], "gpu"), (["engines"], "engine"), (["hosts"], "host"),
                                        (["drafts"], "draft"), (["drafts", "qwen3.6-27b"], "draft")])
def test_listing_commands_print_json(args, kind):
    from planner.catalog import Catalog

    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)
    assert entries and all(e["kind"] == kind for e in entries)
    table = {"gpu": Catalog().gpus, "engine": Catalog().engines, "host": Catalog().hosts, "draft": Catalog().drafts}[kind]
    assert {e["id"] for e in entries} <= set(table)


def test_show_and_quants_json():
    m = json.loads(CliRunner().invoke(main, ["show", "qwen3.6-27b", "--json"]).output)
    assert m["kind"] == "model" and m["architecture"]["family"] == "qwen_hybrid"
    assert m["architecture"]["layer_kinds"] == {"linear": 48, "full": 16}
    q = json.loads(CliRunner().invoke(main, ["quants", "--json"]).output)
    assert q["storage_types"]["Q4_K"]["bits_per_weight"] == 4.5 and "IQ2_XXS" in q["recipes"]


def test_fit_text_fits_an_80_column_terminal(monkeypatch):
    """With a terminal width (PLANNER_WIDTH, or the terminal's), tables are narrow enough and prose
    wraps: no line of fit's text passes 80 columns."""
    monkeypatch.setenv("PLANNER_WIDTH", "80")
    for args in (["qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "200k"],
                 ["qwen3.6-27b", "--gpu", "rtx5090,rtx3090ti", "--spec", "mtp", "--accept", "0.7"]):
        out = CliRunner().invoke(main, ["fit", *args]).output
        assert max(len(x) for x in out.splitlines()) <= 80, max(out.splitlines(), key=len)


def _flags_table():
    import tomllib

    return tomllib.loads((ROOT / "hwdb" / "flags.toml").read_text())


EMIT_CASES = [
    ("llama.cpp", ["qwen3.6-27b", "--gpu", "rtx5090,rtx3090ti", "--quant", "Q8_0", "--split", "tensor"]),
    ("llama.cpp", ["qwen3.6-35b-a3b", "--gpu", "rtx3070ti", "--ctx", "64k", "--cpu-moe", "20", "--kv-quant", "q8_0/q4_0",
                   "--batch", "4", "--ubatch", "1024"]),
    ("llama.cpp", ["qwen3.6-27b", "--gpu", "rtx5090", "--spec", "dflash", "--accept", "0.7"]),
    ("llama.cpp", ["qwen3-32b", "--gpu", "rtx5090", "--spec", "draft:qwen3-0.6b", "--draft-len", "8", "--accept", "0.7"]),
    ("vllm", ["llama-3.1-70b", "--gpu", "2xh100-sxm", "--engine", "vllm", "--quant", "fp8", "--kv-quant", "fp8",
              "--batch", "32", "--ubatch", "4096", "--gpu-memory-utilization", "0.8"]),
    ("vllm", ["llama-3.1-70b", "--gpu", "2xh100-sxm", "--engine", "vllm", "--quant", "awq", "--split", "layer"]),
    ("vllm", ["qwen3.6-27b", "--gpu", "h100-sxm", "--engine", "vllm", "--spec", "mtp", "--accept", "0.7",
              "--draft-len", "2"]),
    ("sglang", ["qwen3.6-27b", "--gpu", "2xh100-sxm", "--engine", "sglang", "--spec", "dflash", "--accept", "0.7",
                "--kv-quant", "fp8_e4m3"]),
    ("sglang", ["llama-3.1-70b", "--gpu", "2xh100-sxm", "--engine", "sglang", "--quant", "gptq", "--split", "layer"]),
]


@pytest.mark.parametrize("family, args", EMIT_CASES)
def test_emitted_commands_use_only_flags_the_engines_accept(family, args):
    """Every flag (and restricted value) of an emitted command is one the engine version registers
    (hwdb/flags.toml, each with the file:line of llama.cpp b11434, vLLM 0.33.0 or SGLang 0.5.23)."""
    res = CliRunner().invoke(main, ["fit", *args, "--emit", family])
    check_emitted(family, res.output)


def check_words(words: list[str], table: str) -> None:
    """Every flag in `words` (a command split by shlex, the program removed) is one hwdb/flags.toml's `table`
    lists (or an alias of one), and a restricted flag's value one it allows ("<k,v ...>": a k,v bit pair)."""
    t = _flags_table()[table]
    known = set(t["flags"]) | set(t.get("aliases", {}).values())
    for i, w in enumerate(words):
        if w.startswith("-") and not w.lstrip("-").replace(".", "").isdigit():
            assert w in known, f"{table} does not take {w}: {shlex.join(words)}"
            allowed = t.get("values", {}).get(w)
            if allowed and i + 1 < len(words) and "<int>" not in allowed:
                v = words[i + 1]
                assert v in allowed or (any(a.startswith("<k,v") for a in allowed) and re.fullmatch(r"[2-8],[2-8]", v)), \
                    f"{table} {w} takes {allowed}, not {v}"


def check_emitted(family: str, output: str) -> None:
    """The engine command line in `output` uses only flags and values hwdb/flags.toml lists."""
    name = {"llama.cpp": "llama-server", "vllm": "vllm-serve", "sglang": "sglang-launch-server"}[family]
    table = _flags_table()[name]
    cmd = next(line for line in output.splitlines() if line.startswith(("llama-server", "vllm serve", "python")))
    words = shlex.split(cmd)
    if family == "sglang":
        words = words[words.index("sglang.launch_server") + 1:]
    check_words(words, name)
    if family == "vllm" and "--speculative-config" in words:
        cfg = json.loads(words[words.index("--speculative-config") + 1])
        assert set(cfg) <= set(table["speculative_config_keys"])
        assert cfg["method"] in table["values"]["speculative-config.method"]


def test_sglang_refuses_dflash_with_a_pipeline_split():
    res = CliRunner().invoke(main, ["fit", "qwen3.6-27b", "--gpu", "2xh100-sxm", "--engine", "sglang", "--split", "layer",
                                    "--spec", "dflash", "--accept", "0.7"])
    assert res.exit_code == 2 and "pp_size 1" in res.output


def test_shell_completion_offers_catalog_names():
    """docs/cli.md#shell-completion: bash completion of a model and of the last GPU of a comma list."""
    import os
    import subprocess
    import sys

    def complete(words: str, cword: int) -> list[str]:
        env = dict(os.environ, COMP_WORDS=words, COMP_CWORD=str(cword), _PLANNER_COMPLETE="bash_complete")
        out = subprocess.run([sys.executable, "-m", "planner"], env=env, capture_output=True, text=True).stdout
        return [line.split(",", 1)[1] for line in out.splitlines() if "," in line]

    assert "qwen3.6-27b" in complete("planner fit qwen3.6", 2)
    gpus = complete("planner fit qwen3-8b --gpu rtx4090,rtx50", 4)
    assert "rtx4090,rtx5090" in gpus and all(g.startswith("rtx4090,rtx50") for g in gpus)
    assert "fit" in complete("planner fi", 1)
