"""The TurboQuant llama.cpp fork's KV caches (issue 16): turbo2/3/4 sized as the fork stores them, its silent
type changes, its refusals and its flags."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.memory import plan_memory
from tests.test_cli import check_words

CAT = Catalog()


def _plan(model="qwen3-8b", **kw):
    return resolve(CAT, Deployment(**{"model": model, "gpus": ("rtx4090",), "engine": "turboquant",
                                      "ctx_tokens": 32000, **kw}))


def test_turbo2_v_with_q8_0_boundary_layers_hand_worked():
    """Qwen3-8B, 36 layers x 8 KV heads x 128 = 1,024 K and 1,024 V values per token and layer, 32,000 cells:
    K q8_0 = 1,088 B; V turbo2 = 1,024 x 34 / 128 = 272 B, but q8_0 (1,088 B) in layers 0, 1, 34, 35
    (llama-kv-cache.cpp:267-327). 32,000 x (36 x 1,088 + 32 x 272 + 4 x 1,088) = 1,671,168,000 B."""
    r = _plan(kv_quant="q8_0/turbo2")
    assert plan_memory(r, 32000).devices[0].kv_cache_bytes == 1_671_168_000


def test_same_turbo_k_and_v_store_k_as_q8_0_past_gqa_6():
    """TURBO_AUTO_ASYMMETRIC (llama-kv-cache.cpp:122-146): Qwen3.6-27B (24 heads / 4 KV heads = 6) with turbo3/turbo3
    keeps K at q8_0; Qwen3-8B (32 / 8 = 4) keeps turbo3."""
    assert _plan("qwen3.6-27b", kv_quant="turbo3").kv_label == "q8_0/turbo3"
    assert _plan(kv_quant="turbo3").kv_label == "turbo3"


def test_head_dims_the_fork_pads_are_refused_and_mainline_has_no_turbo():
    with pytest.raises(PlannerError, match="multiple of 128"):
        _plan("gpt-oss-20b", kv_quant="turbo4")  # head dim 64
    with pytest.raises(PlannerError, match="no turbo3 KV cache"):
        resolve(CAT, Deployment(model="qwen3-8b", gpus=("rtx4090",), engine="llama.cpp", kv_quant="turbo3"))


def test_turbo_speeds_carry_the_caveat_and_no_interval():
    from planner.speed import estimate

    e = estimate(CAT, _plan(kv_quant="turbo4"), 32000)
    assert e.decode_interval is None and e.prefill_interval is None
    assert any("planned for memory only" in n for n in e.notes)
    assert not any("no measured runs behind" in n for n in e.notes)


def test_fork_commands_use_its_flags():
    res = CliRunner().invoke(main, ["fit", "qwen3.6-35b-a3b", "--gpu", "rtx3070ti", "--engine", "turboquant",
                                    "--kv-quant", "q8_0/turbo4", "--ctx", "32k", "--cpu-moe", "32", "--no-mmap",
                                    "--emit", "llama.cpp"])
    assert res.exit_code == 0, res.output
    words = shlex.split(next(x for x in res.output.splitlines() if x.startswith("llama-server")))
    assert "--no-mmap" in words and "-lm" not in words and words[words.index("-ctv") + 1] == "turbo4"
    check_words(words, "turboquant-llama-server")
