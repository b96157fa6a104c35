"""MLX (mlx-lm) as an engine: its weight format, names, memory, commands and refusals (hwdb/engines/mlx-metal.toml)."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from test_cli import check_words

CAT = Catalog()


def test_mlx_4bit_llama_8b_weights_hand_worked():
    """mlx_lm.convert -q (4-bit, group 64: 32 B of codes + 2 B scale + 2 B bias per 64 weights = 0.5625 B per
    weight) quantizes every Linear and the embedding, lm_head too. Llama-3.1-8B: embedding and lm_head
    128,256 x 4,096 each; per layer q, o 4,096 x 4,096, k, v 1,024 x 4,096, gate, up, down 14,336 x 4,096:
    2 x 525,336,576 + 32 x 218,103,808 = 8,029,995,008 weights x 0.5625 = 4,516,872,192 B; the 65 RMSNorm
    vectors of 4,096 stay bf16: 532,480 B. Total 4,517,404,672 B (mlx-community's file: about 4.52 GB)."""
    r = resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("m4max",), engine="mlx", ctx_tokens=4096))
    assert r.engine.id == "mlx-metal" and r.quant == "mlx-4bit"
    assert sum(w.bytes for w in r.weights) == 8_029_995_008 * 9 // 16 + 65 * 4096 * 2 == 4_517_404_672


def test_mlx_moe_routers_at_8_bit():
    """The models' own predicate keeps MoE routers at 8-bit group 64 (mlx_lm models/qwen3_moe.py:326-331)."""
    r = resolve(CAT, Deployment(model="qwen3-30b-a3b", gpus=("m4max",), engine="mlx", ctx_tokens=4096))
    routers = {w.storage for w in r.weights if w.tensor.role == "router"}
    assert routers == {"MLX_Q8_G64"}


@pytest.mark.parametrize("gpu", ["rtx4090", "h100-sxm"])
def test_mlx_runs_on_apple_only(gpu):
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", gpu, "--engine", "mlx"])
    assert res.exit_code == 2 and "metal" in res.output.lower()


def test_mlx_quantized_kv_refuses_sinks():
    """mlx_lm's quantized attention has no attention sinks (models/base.py:119-122): gpt-oss with --kv-bits fails."""
    with pytest.raises(PlannerError, match="sinks"):
        resolve(CAT, Deployment(model="gpt-oss-20b", gpus=("m4max",), engine="mlx", kv_quant="mlx_q8", ctx_tokens=4096))


def test_mlx_commands_use_only_flags_mlx_lm_registers():
    """--emit mlx: mlx_lm.convert to the planned quant, then mlx_lm.server, every flag and value one mlx-lm 0.32.2
    registers (hwdb/flags.toml [mlx_lm-convert], [mlx_lm-server])."""
    res = CliRunner().invoke(main, ["fit", "qwen3-30b-a3b", "--gpu", "m4max", "--engine", "mlx", "--quant", "mlx-6bit",
                                    "--kv-quant", "mlx_q8", "--batch", "4", "--ctx", "16k", "--emit", "mlx"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("mlx_lm.")]
    assert [x.split()[0] for x in lines] == ["mlx_lm.convert", "mlx_lm.server"]
    assert "-q --q-bits 6 --q-group-size 64" in lines[0] and "--kv-bits 8" in lines[1] and "--decode-concurrency 4" in lines[1]
    for line, table in zip(lines, ("mlx_lm-convert", "mlx_lm-server")):
        check_words(shlex.split(line), table)


def test_compare_and_models_take_mlx():
    """compare and models rank MLX plans over MLX's own quants (8, 6, 4 bits), labelled so the columns stay apart."""
    import json

    res = CliRunner().invoke(main, ["compare", "qwen3-8b", "--gpus", "m4max,m3max", "--engine", "mlx", "--json"])
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)["entries"]
    assert {e["quant"] for e in entries} <= {"mlx-8bit", "mlx-6bit", "mlx-4bit"}
    text = CliRunner().invoke(main, ["compare", "qwen3-8b", "--gpus", "m4max", "--engine", "mlx"]).output
    assert "mlx-8bit bf16" in text


def test_mlx_across_machines_is_refused():
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "2x(m4max)", "--network", "tb5", "--engine", "mlx"])
    assert res.exit_code == 2 and "across machines is not modelled" in res.output


def test_mlx_code_bits_agree_with_the_block_sizes():
    """An MLX group is its codes plus a 2-byte scale and a 2-byte bias (mlx ops.cpp:5088-5095): block_bytes =
    group x code_bits / 8 + 4, for every weight and KV type that states code_bits."""
    types = list(CAT.formats.types.values()) + list(CAT.kv_types.types.values())
    stated = [t for t in types if t.code_bits]
    assert len(stated) >= 8
    for t in stated:
        group = getattr(t, "block_weights", None) or t.block_values
        assert t.block_bytes == group * t.code_bits // 8 + 4
