"""ik_llama.cpp as an engine (issue 16): the fork's own quant types and mixes, its KV types, its flags, and the
llama.cpp rules it shares (it is planned with family llama.cpp and mainline's kernel-path table)."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from tests.test_cli import check_words

CAT = Catalog()


def _plan(**kw):
    return resolve(CAT, Deployment(**{"model": "llama-3.1-8b", "gpus": ("rtx4090",), "engine": "ik_llama.cpp",
                                      "ctx_tokens": 8192, **kw}))


def test_iq4_ks_llama_8b_hand_worked():
    """IQ4_KS: 136 B per 256 weights (ik ggml.c:1365; row scales not counted). Llama-3.1-8B (GQA 4): attn_v is
    IQ5_K (176 B per 256; llama-quantize.cpp:617-621): 32 x 4096 x 1024 = 134,217,728 weights -> 92,274,688 B; the
    other linears and the token embedding IQ4_KS: 6,979,321,856 - 134,217,728 + 525,336,576 = 7,370,440,704 weights
    -> 3,915,546,624 B; the head Q6_K."""
    r = _plan(quant="IQ4_KS")
    by = {}
    for w in r.weights:
        by[w.storage] = by.get(w.storage, 0) + w.bytes
    assert by["IQ5_K"] == 134_217_728 * 176 // 256 == 92_274_688
    assert by["IQ4_KS"] == 7_370_440_704 * 136 // 256 == 3_915_546_624
    assert by["Q6_K"] == 525_336_576 * 210 // 256


def test_the_forks_types_are_its_own():
    """Mainline llama.cpp (and mistral.rs) cannot load IQ*_K; the fork cannot load mainline's TQ types."""
    with pytest.raises(PlannerError, match="ik_llama.cpp-cuda only"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="llama.cpp", quant="IQ4_KS"))
    with pytest.raises(PlannerError, match="TQ1_0"):
        _plan(quant="TQ1_0")


@pytest.mark.parametrize("name", ["ik_llama.cpp", "ik-llama.cpp", "ik_llama", "ikllama"])
def test_fork_names_resolve(name):
    assert _plan(engine=name).engine.id == "ik_llama.cpp-cuda"


def test_q6_0_kv_is_the_forks():
    """-ctk/-ctv q6_0 (26 B per 32 values) exists in ik_llama.cpp only."""
    assert _plan(kv_quant="q6_0").kv_bytes_per_value == 26 / 32
    with pytest.raises(PlannerError, match="no q6_0 KV cache"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="llama.cpp", kv_quant="q6_0"))


def test_the_fork_runs_mainlines_kernel_paths():
    """kernel_paths = llama.cpp-cuda: its decode is priced by mainline's MMVQ rules, not the generic roofline."""
    from planner.speed import step_model

    assert step_model(CAT, _plan(), CAT.calibration(None, "ik_llama.cpp-cuda")).paths == "llama.cpp-cuda"


def test_ik_commands_use_only_flags_the_fork_registers():
    """-ngl is an integer in the fork (common.cpp:2023: no 'all'), no -fit / -lm; every flag and value one
    ik_llama.cpp 8337e4cd registers (hwdb/flags.toml [ik-llama-server])."""
    res = CliRunner().invoke(main, ["fit", "qwen3-30b-a3b", "--gpu", "2xrtx3090", "--engine", "ik_llama.cpp", "--quant",
                                    "IQ4_KS", "--ctx", "32k", "--kv-quant", "q6_0", "--emit", "llama.cpp"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("llama-server"))
    words = shlex.split(line)
    assert words[words.index("-ngl") + 1] == "999"
    check_words(words, "ik-llama-server")
