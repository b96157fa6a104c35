"""Worked examples of KV bytes per token and recurrent state per sequence, one per family.
The arithmetic is written out; configs are the catalog's (models_db/)."""

import pytest


def kv16(arch, kinds=("full", "mla")):
    """KV bytes per token at 16 bits for layers whose cache grows with context."""
    return sum(a.kv_elems_per_token for a in arch.layers if a.kind in kinds and not a.kv_shared) * 2


def test_dense_gqa_llama31_8b(catalog):
    a = catalog.model("llama-3.1-8b").arch
    # 32 layers x 8 KV heads x (128 K + 128 V) x 2 bytes = 131,072 B/token
    assert kv16(a) == 32 * 8 * (128 + 128) * 2 == 131_072


def test_head_dim_is_read_not_derived_qwen3_06b(catalog):
    a = catalog.model("qwen3-0.6b").arch
    # head_dim 128 although hidden/heads = 1024/16 = 64: 28 x 8 x 256 x 2 = 114,688
    assert kv16(a) == 28 * 8 * (128 + 128) * 2 == 114_688


def test_hybrid_gated_deltanet_qwen36_27b(catalog):
    a = catalog.model("qwen3.6-27b").arch
    # only every 4th of 64 layers is full attention: 16 x 4 KV heads x (256+256) x 2 = 65,536
    assert kv16(a) == 16 * 4 * 512 * 2 == 65_536
    # state per sequence, 48 linear layers, f32:
    #   ssm  = 48 value heads x 128 x 128           = 786,432 values
    #   conv = (kernel 4 - 1) x (2x16x128 + 48x128)  =  30,720 values
    state = sum((x.ssm_state_elems + x.conv_state_elems) * 4 for x in a.layers)
    assert state == 48 * (786_432 + 30_720) * 4 == 156_893_184


def test_hybrid_moe_qwen36_35b(catalog):
    a = catalog.model("qwen3.6-35b-a3b").arch
    assert kv16(a) == 10 * 2 * 512 * 2 == 20_480
    state = sum((x.ssm_state_elems + x.conv_state_elems) * 4 for x in a.layers)
    # 30 layers x (32x128x128 + 3x(2x16x128 + 32x128)) x 4 B
    assert state == 30 * (524_288 + 24_576) * 4 == 65_863_680


def test_mla_deepseek_v3(catalog):
    a = catalog.model("deepseek-v3").arch
    # latent 512 + RoPE key 64 = 576 values per layer, 61 layers, 2 bytes = 70,272 B/token
    assert kv16(a) == 61 * 576 * 2 == 70_272
    # a naive MHA formula would say 61 x 128 heads x (192 + 128) x 2 = 4,997,120: ~71x more
    assert 61 * 128 * (192 + 128) * 2 / kv16(a) > 70


def test_mla_with_indexer_glm51(catalog):
    a = catalog.model("glm-5.1").arch
    # 78 layers x (576 latent + 128 indexer key) x 2 bytes
    assert kv16(a) == 78 * (576 + 128) * 2 == 109_824


def test_sliding_and_two_head_geometries_gemma4_31b(catalog):
    a = catalog.model("gemma-4-31b").arch
    full = [x for x in a.layers if x.kind == "full"]
    sliding = [x for x in a.layers if x.kind == "sliding"]
    assert len(full) == 10 and len(sliding) == 50
    # global: 10 x 4 KV heads x (512+512) x 2 = 81,920 B/token, growing with context
    assert kv16(a) == 10 * 4 * 1024 * 2 == 81_920
    # sliding: 50 x 16 x (256+256) x 2 = 819,200 B/token, but only for the last 1024 tokens
    assert sum(x.kv_elems_per_token for x in sliding) * 2 == 819_200
    assert {x.window_tokens for x in sliding} == {1024}


def test_shared_kv_gemma4_e2b(catalog):
    a = catalog.model("gemma-4-e2b").arch
    owners = [x for x in a.layers if not x.kv_shared]
    assert len(owners) == 15  # the last 20 of 35 layers reuse earlier KV
    # 3 global owners x 1 KV head x (512+512) x 2 = 6,144 B/token
    assert kv16(a) == 3 * 1 * 1024 * 2 == 6_144


def test_sliding_gpt_oss(catalog):
    a = catalog.model("gpt-oss-20b").arch
    assert kv16(a) == 12 * 8 * 128 * 2 == 24_576  # 12 full layers of 24


def test_moe_qwen3_30b(catalog):
    a = catalog.model("qwen3-30b-a3b").arch
    assert a.n_experts == 128 and a.n_experts_per_tok == 8
    assert kv16(a) == 48 * 4 * 256 * 2 == 98_304


# Published parameter counts (model cards, checkpoint index files). Within 1%.
PUBLISHED = [
    ("llama-3.1-8b", ("text",)), ("llama-3.1-70b", ("text",)), ("llama-2-7b", ("text",)), ("llama-3.2-1b", ("text",)),
    ("qwen3-32b", ("text",)), ("qwen3-8b", ("text",)), ("qwen3-0.6b", ("text",)), ("qwen3-30b-a3b", ("text",)),
    ("qwen2.5-32b", ("text",)), ("qwen3.6-27b", ("text", "mtp", "vision")), ("qwen3.6-35b-a3b", ("text", "mtp", "vision")),
    ("qwen3.5-397b-a17b", ("text",)), ("qwen3-next-80b-a3b", ("text",)), ("gpt-oss-120b", ("text",)),
    ("gpt-oss-20b", ("text",)), ("deepseek-v3", ("text", "mtp")), ("glm-5.1", ("text",)), ("gemma-3-27b", ("text", "vision")),
    ("gemma-4-31b", ("text",)), ("gemma-4-26b-a4b", ("text",)), ("mimo-v2.5", ("text",)),
]


@pytest.mark.parametrize("model,groups", PUBLISHED)
def test_total_params_within_1pct(catalog, model, groups):
    m = catalog.model(model)
    published = m.published["total_params"].value
    assert m.arch.params(groups) == pytest.approx(published, rel=0.01)


def test_config_json_with_nested_text_config_maps_1to1(catalog):
    from planner.arch import parse_config
    flat = dict(catalog.model("qwen3.6-27b").config["text_config"])
    nested = {"architectures": ["X"], "text_config": flat}
    assert parse_config(nested).params() == parse_config(flat).params()
