"""Real config.json files (tests/configs/, sourced in tests/configs/sources-*.toml): each is read
by its family's rules and matches the published parameter counts, or is refused by name.
Hand-worked KV and recurrent-state sizes for one model per family; synthetic configs for the
hybrid families no real config of which is stored yet (Nemotron-H, Falcon-H1, Granite-4.0-H,
Mamba-2), with the arithmetic written out."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from planner.arch import parse_config
from planner.checkpoint import checkpoint_quant
from planner.errors import PlannerError

HERE = Path(__file__).parent / "configs"
INDEX = {v["file"]: v for f in sorted(HERE.glob("sources-*.toml")) for v in tomllib.loads(f.read_text()).values()}
REFUSED = {"refused"}  # architectures planner has no rules for yet: refused, not guessed
TOLERANCE = 0.015  # the bar: 1.5% of the published count (or half its last digit, if coarser)


def _cfg(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def test_every_fixture_is_indexed_with_a_source():
    files = {p.name for p in HERE.glob("*.json") if not p.name.endswith(".hf_quant_config.json")}
    assert files == set(INDEX), "every fixture has an index entry and every entry a file"
    for name, meta in INDEX.items():
        assert meta["source"] and meta["repo"] and meta["retrieved"], name
        if "total_params" in meta or "active_params" in meta:
            assert meta.get("params_source"), f"{name}: a published count names where it was published"


def _tolerance(meta: dict, published: float) -> float:
    """max(1.5%, half the unit of the figure's last digit): '80B' pins 79.5-80.5B, '3B' 2.5-3.5B."""
    unit = meta.get("params_rounded_to")
    return max(TOLERANCE * published, unit / 2 if unit else 0.0)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=m["known_miss"])) if "known_miss" in m else n
    for n, m in sorted(INDEX.items()) if m["family"] not in REFUSED])
def test_parameter_counts_match_the_published_figures(name):
    meta = INDEX[name]
    a = parse_config(_cfg(name))
    if "total_params" in meta:
        # text model without MTP/NextN layers and vision encoder, as model cards count it
        total = a.params(("text", "mtp") if meta.get("total_includes_mtp") else ("text",))
        assert abs(total - meta["total_params"]) <= _tolerance(meta, meta["total_params"]), \
            f"{name}: {total / 1e9:.3f}B vs published {meta['total_params'] / 1e9:g}B ({meta['params_source']})"
    if "active_params" in meta:
        emb = sum(t.params for t in a.tensors if t.group == "text" and t.role == "token_embd")
        head = sum(t.params for t in a.tensors if t.group == "text" and t.role == "output")
        # cards differ on what counts as active: with the input embedding (Qwen), without it (DeepSeek,
        # OpenAI), or neither embedding nor head ("non-embedding", MiniMax); the closest reading is checked
        readings = (a.active_params(), a.active_params() + emb, a.active_params() - head)
        active = min(readings, key=lambda x: abs(x - meta["active_params"]))
        assert abs(active - meta["active_params"]) <= _tolerance(meta, meta["active_params"]), \
            f"{name}: active {active / 1e9:.3f}B vs published {meta['active_params'] / 1e9:g}B"


@pytest.mark.parametrize("name", sorted(n for n, m in INDEX.items() if m["family"] in REFUSED))
def test_unknown_architectures_are_refused_by_name(name):
    cfg = _cfg(name)
    mt = (cfg.get("text_config") or {}).get("model_type") or cfg["model_type"]
    with pytest.raises(PlannerError, match=f"model_type '{mt}'"):
        parse_config(cfg)


@pytest.mark.parametrize("model_type", ["nemotron-nas", "qwen2_audio", "minimax_m3", "falcon", "gpt_neox", "rwkv7", "",
                                        "LLAMA"])
def test_model_types_without_rules_are_refused(model_type):
    cfg = {"model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "vocab_size": 100}
    with pytest.raises(PlannerError, match="unknown architecture"):
        parse_config(cfg)


def test_config_without_model_type_is_refused():
    with pytest.raises(PlannerError, match="model_type 'unknown'"):
        parse_config({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})


# --- hand-worked sizes, one model per family ----------------------------------------------------


def _kv(a) -> int:
    return sum(x.kv_elems_per_token for x in a.layers)


def _state(a) -> int:
    return sum(x.ssm_state_elems + x.conv_state_elems for x in a.layers)


def test_jamba_v01_layers_kv_and_mamba_state():
    a = parse_config(_cfg("jamba-v0.1.json"))
    # attn_layer_period 8, offset 4: layers 4, 12, 20, 28 attend; the other 28 are Mamba-1
    assert [i for i, x in enumerate(a.layers) if x.kind == "full"] == [4, 12, 20, 28]
    assert sum(a.moe_layers) == 16  # expert_layer_period 2, offset 1: every odd layer
    # KV: 4 layers x 8 KV heads x 128 x 2 (K and V) = 8,192 values per token
    assert _kv(a) == 4 * 8 * 128 * 2 == 8192
    # Mamba-1: d_inner = expand 2 x 4096 = 8192; SSM d_state 16 x 8192 = 131,072; conv (4 - 1) x 8192 = 24,576
    assert _state(a) == 28 * (16 * 8192 + 3 * 8192) == 4_358_144


def test_lfm2_700m_conv_and_attention_layers():
    a = parse_config(_cfg("lfm2-700m.json"))
    assert a.layer_kinds() == {"conv": 10, "full": 6}  # full_attn_idxs [2, 5, 8, 10, 12, 14]
    assert _kv(a) == 6 * 8 * 64 * 2  # 8 KV heads x head 1536 / 24 = 64
    assert _state(a) == 10 * 1536 * (3 - 1)  # conv_L_cache 3: the last 2 inputs per channel
    # FFN: block_ff_dim 10240 x 2/3 = 6826, x 1.0, up to a multiple of 256 = 6912
    assert next(t for t in a.tensors if t.name == "blk.0.ffn_up.weight").rows == 6912
    assert a.tie_word_embeddings  # no tie field: Lfm2Config ties by default


def test_deepseek_v3_mla_latent_per_token():
    a = parse_config(_cfg("deepseek-v3.json"))
    assert _kv(a) == 61 * (512 + 64)  # kv_lora_rank + qk_rope_head_dim per layer
    assert a.mtp_layers == 1 and sum(a.moe_layers) == 58  # first_k_dense_replace 3


def test_gpt_oss_20b_alternating_window():
    a = parse_config(_cfg("gpt-oss-20b.json"))
    assert [x.kind for x in a.layers[:2]] == ["sliding", "full"] and a.layers[0].window_tokens == 128
    assert _kv(a) == 24 * 8 * 64 * 2


def test_qwen3_next_gated_deltanet_state():
    a = parse_config(_cfg("qwen3-next-80b-a3b-instruct.json"))
    assert a.layer_kinds() == {"linear": 36, "full": 12}
    assert _kv(a) == 12 * 2 * 256 * 2
    # per linear layer: 32 value heads x 128 x 128 state + (4 - 1) x (2 x 16 x 128 + 32 x 128) conv
    assert _state(a) == 36 * (32 * 128 * 128 + 3 * (2 * 16 * 128 + 32 * 128))


def test_mixtral_gqa_and_experts():
    a = parse_config(_cfg("mixtral-8x7b-v0.1.json"))
    assert _kv(a) == 32 * 8 * 128 * 2 and (a.n_experts, a.n_experts_per_tok) == (8, 2)


def test_nemotron_3_nano_blocks_and_state():
    a = parse_config(_cfg("nemotron-3-nano-30b-a3b-bf16.json"))
    assert a.layer_kinds() == {"mamba": 23, "none": 23, "full": 6} and sum(a.moe_layers) == 23
    # Mamba-2: d_inner = 64 heads x 64 = 4096, d_state 128, 8 groups, conv 4:
    # SSM 128 x 4096 = 524,288; conv (4 - 1) x (4096 + 2 x 8 x 128) = 18,432 per layer
    assert _state(a) == 23 * (128 * 4096 + 3 * (4096 + 2 * 8 * 128))
    assert _kv(a) == 6 * 2 * 128 * 2  # 2 KV heads x head_dim 128


def test_nemotron_layers_block_type_and_mtp_blocks():
    a = parse_config(_cfg("nemotron-3-ultra-550b-a55b-bf16.json"))  # no num_hidden_layers: the list's length
    assert a.n_layers == 108 and a.mtp_layers == 1
    assert {t.name.split(".")[2] for t in a.tensors if t.group == "mtp" and t.name.count(".") > 2} >= {"0", "1"}


def test_llama4_chunked_layers_and_shared_expert():
    a = parse_config(_cfg("llama-4-maverick-17b-128e-instruct.json"))
    # chunked attention on layers i % 4 < 3 (window 8192), global on every 4th
    assert [x.kind for x in a.layers[:4]] == ["sliding"] * 3 + ["full"] and a.layers[0].window_tokens == 8192
    assert a.moe_layers[:4] == (False, True, False, True)  # interleave_moe_layer_step 2
    assert any(t.name == "blk.1.ffn_up_shexp.weight" and t.rows == 8192 for t in a.tensors)
    assert next(t for t in a.tensors if t.name == "blk.0.ffn_up.weight").rows == 16384  # intermediate_size_mlp


def test_kimi_linear_kda_and_mla_layers():
    a = parse_config(_cfg("kimi-linear-48b-a3b-instruct.json"))
    assert a.layer_kinds() == {"linear": 20, "mla": 7} and a.max_position_embeddings == 1_048_576  # model_max_length
    assert _kv(a) == 7 * (512 + 64)  # the MLA latent
    # KDA: 32 heads of 128: state 128 x 128 x 32 = 524,288; conv 3 x (4 - 1) x 4096 = 36,864 (q, k, v)
    assert _state(a) == 20 * (128 * 128 * 32 + 3 * 3 * 32 * 128)


def test_deepseek_v4_compressed_cache_by_hand():
    """64k tokens, batch 1, f16, llama.cpp (ubatch 512, context padded to 256):
    window, every layer: 128 + 512 tokens -> 768 cells x 512 x 2 B          =    786,432 B  x 43
    CSA (ratio 4, 21 layers): 65,536 / 4 = 16,384 entries x (512 + 128) x 2 = 20,971,520 B  x 21
    HCA (ratio 128, 20 layers): 512 entries x 512 x 2                       =    524,288 B  x 20
    = 484,704,256 B, a tenth of DeepSeek-V3's 61 x 576 x 2 x 65,536 = 4,605,345,792 B."""
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve
    from planner.localfile import load_config_json
    from planner.memory import layer_kv_bytes

    card = load_config_json(HERE / "deepseek-v4-flash.json")
    r = resolve(Catalog(), Deployment(model=card.id, gpus=("h200",), engine="llama.cpp-cuda", kv_quant="f16"), card)
    assert sum(layer_kv_bytes(r, 65_536)) == 43 * 786_432 + 21 * 20_971_520 + 20 * 524_288 == 484_704_256


def test_minimax_m1_lightning_state():
    a = parse_config(_cfg("minimax-m1-80k.json"))
    assert a.layer_kinds() == {"linear": 70, "full": 10}  # attn_type_list: softmax on every 8th layer
    assert _kv(a) == 10 * 8 * 128 * 2
    assert _state(a) == 70 * 128 * 128 * 64  # head_dim^2 x 64 heads: 4 MiB per layer in f32, 280 MiB


# --- synthetic configs of the hybrid families (field names as their HF config classes use) -------


NEMOTRON_H = {"model_type": "nemotron_h", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
              "hybrid_override_pattern": "M*-E", "mamba_num_heads": 4, "mamba_head_dim": 16, "ssm_state_size": 8,
              "n_groups": 2, "conv_kernel": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "intermediate_size": 128, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
              "moe_shared_expert_intermediate_size": 48, "tie_word_embeddings": False}


FALCON_H1 = {"model_type": "falcon_h1", "hidden_size": 64, "num_hidden_layers": 3, "vocab_size": 100,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96,
             "mamba_d_ssm": 128, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_n_groups": 1,
             "mamba_d_conv": 4, "tie_word_embeddings": True}
GRANITE_H = {"model_type": "granitemoehybrid", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
             "layer_types": ["mamba", "mamba", "mamba", "attention"], "num_attention_heads": 4,
             "num_key_value_heads": 1, "mamba_n_heads": 4, "mamba_d_head": 32, "mamba_d_state": 16,
             "mamba_n_groups": 1, "mamba_d_conv": 4, "mamba_expand": 2, "num_local_experts": 8,
             "num_experts_per_tok": 2, "intermediate_size": 32, "shared_intermediate_size": 64,
             "tie_word_embeddings": True}
MAMBA2 = {"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_heads": 8,
          "head_dim": 16, "state_size": 32, "n_groups": 1, "conv_kernel": 4, "tie_word_embeddings": True}


def test_nemotron_h_blocks_by_hand():
    a = parse_config(NEMOTRON_H)
    assert [x.kind for x in a.layers] == ["mamba", "full", "none", "none"] and a.moe_layers == (False,) * 3 + (True,)
    # embeddings 100 x 64 twice (untied) + output norm 64 = 12,864
    # M: norm 64; in_proj (2 x 64 + 2 x 2 x 8 + 4) x 64 = 10,496; conv (64 + 32) x 4 = 384 + bias 96;
    #    dt bias, A, D 3 x 4; norm 64; out_proj 64 x 64 = 4,096                       -> 15,212
    # *: norm 64; q 64 x 64; k, v 32 x 64 each; o 64 x 64                              -> 12,352
    # -: norm 64; up, down 128 x 64 each (relu^2, no gate)                             -> 16,448
    # E: norm 64; router 4 x 64 + bias 4; up, down 4 x 32 x 64 each; shared 48 x 64 x 2 -> 22,852
    assert a.params() == 12_864 + 15_212 + 12_352 + 16_448 + 22_852 == 79_728
    assert _kv(a) == 2 * 16 * 2  # one attention layer
    assert _state(a) == 8 * 64 + 3 * (64 + 2 * 2 * 8)  # d_state x d_inner + (d_conv - 1) x conv_dim
    # active: all but the input embedding, with 2 of 4 experts: 79,728 - 6,400 - 16,384 / 2
    assert a.active_params() == 79_728 - 6_400 - 8_192


def test_nemotron_h_bad_pattern_is_refused():
    with pytest.raises(PlannerError, match="unknown block code 'X'"):
        parse_config(dict(NEMOTRON_H, hybrid_override_pattern="M*-X"))
    with pytest.raises(PlannerError, match="hybrid_override_pattern"):
        parse_config(dict(NEMOTRON_H, hybrid_override_pattern="M*"))


def test_falcon_h1_every_layer_has_kv_and_state():
    a = parse_config(FALCON_H1)
    assert all(x.kind == "full" for x in a.layers)
    assert _kv(a) == 3 * 2 * 16 * 2
    assert _state(a) == 3 * (8 * 128 + 3 * (128 + 2 * 8))


def test_granite_hybrid_layer_types_and_shared_mlp():
    cfg = GRANITE_H
    a = parse_config(cfg)
    assert a.layer_kinds() == {"mamba": 3, "full": 1} and all(a.moe_layers)
    assert _state(a) == 3 * (16 * 128 + 3 * (128 + 2 * 16))  # d_inner = 4 heads x 32 = expand 2 x 64
    assert sum(1 for t in a.tensors if t.name.endswith("ffn_up_shexp.weight")) == 4
    with pytest.raises(PlannerError, match="unknown layer type 'moe'"):
        parse_config(dict(cfg, layer_types=["mamba", "moe", "mamba", "attention"]))


def test_gemma3n_by_hand():
    """Field names of transformers' Gemma3nTextConfig; 5 layers, the last 2 sharing KV. Per layer:
    7 norms x 32; q 64 x 32 + k, v 2 x 16 x 32 + o 32 x 64 + q/k norms 2 x 16 = 5,152; MLP 3 x 32 x 48 =
    4,608; PLE gate + proj 2 x 8 x 32 = 512; AltUp 4x4 + 32 + 16x4 + 4x32 = 240; LAuReL 2 x 32 x 4 = 256
    -> 224 + 5,152 + 4,608 + 512 + 240 + 256 = 10,992. Outside: embedding 100 x 32 (tied) + norm 32;
    per-layer table 100 x 5 x 8 = 4,000, its projection 40 x 32 = 1,280 and norm 8; AltUp projections
    2 x 32 x 96 = 6,144 -> 14,664. Total 5 x 10,992 + 14,664 = 69,624."""
    cfg = {"model_type": "gemma3n", "text_config": {
        "model_type": "gemma3n_text", "hidden_size": 32, "num_hidden_layers": 5, "vocab_size": 100,
        "vocab_size_per_layer_input": 100, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
        "intermediate_size": [48] * 5, "hidden_size_per_layer_input": 8, "altup_num_inputs": 4, "laurel_rank": 4,
        "num_kv_shared_layers": 2, "sliding_window": 64}}
    a = parse_config(cfg)
    assert a.params() == 69_624
    assert [x.kind for x in a.layers] == ["sliding"] * 4 + ["full"]  # 4 of every 5 slide
    assert [x.kv_shared for x in a.layers] == [False] * 3 + [True] * 2
    assert _kv(a) == 3 * 16 * 2  # only the first 3 layers hold a cache


def test_mamba2_pure_ssm():
    a = parse_config(MAMBA2)
    assert a.layer_kinds() == {"mamba": 2} and _kv(a) == 0
    assert _state(a) == 2 * (32 * 128 + 3 * (128 + 2 * 32))


# --- the checkpoint's own quantization -----------------------------------------------------------


@pytest.mark.parametrize("name, recipe, bf16_attention", [
    ("gpt-oss-20b.json", "mxfp4", True),
    ("qwen3-30b-a3b-fp8.json", "fp8", False),
    ("kimi-k2-instruct.json", "fp8", False),
    ("kimi-k2.5.json", "w4a16-g32", True),
    ("qwen3.5-122b-a10b-nvfp4.json", "nvfp4", True),
    ("gemma-4-31b-it-nvfp4.json", "nvfp4", True),
])
def test_quantization_config_picks_the_recipe(name, recipe, bf16_attention):
    cq = checkpoint_quant(_cfg(name))
    assert cq is not None and cq.recipe == recipe
    assert ("attn_q" in cq.bf16_roles) == bf16_attention or recipe == "mxfp4"


def test_unquantized_and_unsupported_checkpoints():
    assert checkpoint_quant(_cfg("qwen3-8b.json")) is None
    bnb = checkpoint_quant({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}})
    with pytest.raises(PlannerError, match="LLM.int8"):
        bnb.require()
    gptq8 = checkpoint_quant({"quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 128}})
    assert gptq8.recipe is None


# --- the registry itself -------------------------------------------------------------------------

GGUF_NAMES = {"qwen3moe", "gpt-oss", "deepseek2", "glm-dsa", "qwen3next", "qwen35", "qwen35moe", "mimo2",
              "nemotron_h_moe", "falcon-h1", "granitehybrid", "lfm2moe", "kimi-linear", "deepseek4", "minimax-01"}  # llama.cpp's names
SYNTHETIC_ONLY = {"falcon_h1", "granitemoehybrid", "mamba2", "lfm2_moe", "gemma3n", "gemma3n_text"}  # hand-worked


def test_every_registered_model_type_is_backed_by_a_real_config():
    """A model_type is read without a warning only where a real config of it is in the tests
    (tests/configs/ or the catalog) or, for the synthetic-only readers, a hand-worked test."""
    from planner.catalog import Catalog
    from planner.families import FAMILY_OF

    seen = set()
    for cfg in [_cfg(n) for n in INDEX] + [m.config for m in Catalog().models.values()]:
        seen.add(cfg.get("model_type"))
        seen.add((cfg.get("text_config") or {}).get("model_type"))
    missing = set(FAMILY_OF) - seen - GGUF_NAMES - SYNTHETIC_ONLY
    assert not missing, f"registered without a real config: {sorted(missing)}"


def test_unverified_model_types_are_planned_with_a_warning():
    cfg = {"model_type": "glm4_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "vocab_size": 100, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    a = parse_config(cfg)
    assert a.n_experts == 4 and any("unverified" in n for n in a.notes)
