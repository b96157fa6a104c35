"""llama.cpp's -hf REPO:QUANT and -lm load modes (issue 16): what --emit prints and what the plan says."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from planner.cli import main
from tests.test_cli import check_emitted


def _fit(*args):
    res = CliRunner().invoke(main, ["fit", *args])
    return res


def _server_line(output: str) -> list[str]:
    return shlex.split(next(x for x in output.splitlines() if x.startswith("llama-server")))


def test_catalog_gguf_repo_becomes_hf_with_its_tag():
    """A quant a listed repository holds: -hf REPO:TAG; a vision model also gets --no-mmproj (the projector -hf
    would fetch and load on the GPU is not in the plan); gpt-oss's MXFP4 file is tagged MXFP4."""
    res = _fit("gemma-3-27b", "--gpu", "rtx4090", "--ctx", "8k", "--emit", "llama.cpp")
    words = _server_line(res.output)
    assert words[1:3] == ["-hf", "ggml-org/gemma-3-27b-it-GGUF:Q4_K_M"] and "--no-mmproj" in words
    check_emitted("llama.cpp", res.output)
    words = _server_line(_fit("gpt-oss-20b", "--gpu", "rtx4090", "--quant", "mxfp4", "--emit", "llama.cpp").output)
    assert words[1:3] == ["-hf", "ggml-org/gpt-oss-20b-GGUF:MXFP4"] and "--no-mmproj" not in words


def test_a_quant_no_listed_repo_holds_stays_a_file():
    words = _server_line(_fit("qwen3-8b", "--gpu", "rtx4090", "--quant", "Q5_K_M", "--emit", "llama.cpp").output)
    assert words[1:3] == ["-m", "Qwen3-8B-Q5_K_M.gguf"]


@pytest.mark.parametrize("flag, mode", [(["--no-mmap"], "none"), (["--mlock"], "mmap+mlock"),
                                        (["--load-mode", "dio"], "dio")])
def test_load_modes_are_emitted_as_b11434_takes_them(flag, mode):
    """b11434 has no --no-mmap / --mlock: -lm MODE (common/arg.cpp:2693-2711)."""
    res = _fit("qwen3.6-35b-a3b", "--gpu", "rtx3070ti", "--ctx", "16k", "--cpu-moe", "20", *flag, "--emit", "llama.cpp")
    words = _server_line(res.output)
    assert words[words.index("-lm") + 1] == mode and "--no-mmap" not in words
    check_emitted("llama.cpp", res.output)


def test_mmap_offload_says_the_weights_are_page_cache_and_none_says_pinned():
    default = _fit("qwen3.6-35b-a3b", "--gpu", "rtx3070ti", "--ctx", "16k", "--cpu-moe", "20").output
    assert "page cache" in default
    pinned = _fit("qwen3.6-35b-a3b", "--gpu", "rtx3070ti", "--ctx", "16k", "--cpu-moe", "20", "--no-mmap").output
    assert "pinned" in pinned and "page cache" not in pinned
    assert "page cache" not in _fit("qwen3-8b", "--gpu", "rtx4090", "--ctx", "8k").output  # all on the GPU


def test_load_mode_is_llama_cpps_and_one_at_a_time():
    assert _fit("qwen3-8b", "--gpu", "rtx4090", "--engine", "vllm", "--no-mmap").exit_code == 2
    res = _fit("qwen3-8b", "--gpu", "rtx4090", "--no-mmap", "--mlock")
    assert res.exit_code == 2 and "give one" in res.output


def test_ik_takes_its_old_flags():
    res = _fit("qwen3-30b-a3b", "--gpu", "rtx3090", "--engine", "ik_llama.cpp", "--ctx", "8k", "--cpu-moe", "10",
               "--no-mmap", "--emit", "llama.cpp")
    words = _server_line(res.output)
    assert "--no-mmap" in words and "-lm" not in words and words[1] == "-m"


def test_validate_json_is_the_scored_runs():
    import json

    from pathlib import Path

    runs = Path(__file__).resolve().parent.parent / "hwdb" / "runs" / "ik-published.csv"
    res = CliRunner().invoke(main, ["validate", str(runs), "--json"])
    assert res.exit_code == 0, res.output
    sec = json.loads(res.output)["sections"][0]
    assert len(sec["runs"]) == 4 and all(abs(r["predicted"] / r["measured"] - 1 - r["error"]) < 1e-9 for r in sec["runs"])
    assert {s["metric"] for s in sec["summary"]} == {"decode_tok_s", "prefill_tok_s"}
