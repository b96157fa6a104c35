"""How models arrive: Hugging Face ids from the local cache (offline), GGUF headers read with
llama.cpp's per-architecture rules, checkpoint quantization on safetensors engines, and a host
RAM verdict that never rests on RAM nobody stated."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import PlannerError
from planner.localfile import hf_cached_config, load_gguf

ROOT = Path(__file__).parent.parent
CONFIGS = Path(__file__).parent / "configs"


def _fit_json(*args: str, env: dict | None = None) -> dict:
    res = CliRunner().invoke(main, ["fit", *args, "--json"], env=env)
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.output)


def _cache(tmp_path: Path, repo: str, cfg: dict, ref: bool = True) -> Path:
    snap = tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(cfg))
    if ref:
        (snap.parent.parent / "refs").mkdir()
        (snap.parent.parent / "refs" / "main").write_text("0123abc")
    return tmp_path


LLAMA_CFG = tomllib.loads((ROOT / "models_db/models/llama-3.1-8b.toml").read_text())["config"]


def test_hf_id_reads_the_local_cache(tmp_path, monkeypatch):
    home = _cache(tmp_path, "SomeOrg/Some-8B", LLAMA_CFG)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert hf_cached_config("SomeOrg/Some-8B").name == "config.json"
    out = _fit_json("SomeOrg/Some-8B", "--gpu", "rtx4090", "--ctx", "8k", env={"HF_HOME": str(home)})
    assert out["model"] == "SomeOrg/Some-8B" and out["model_name"] == "SomeOrg/Some-8B"
    # the same config from the catalog plans the same memory
    ref = _fit_json("llama-3.1-8b", "--gpu", "rtx4090", "--ctx", "8k")
    assert out["memory"]["devices"] == ref["memory"]["devices"]


def test_hf_hub_cache_wins_over_hf_home(tmp_path, monkeypatch):
    a = _cache(tmp_path / "a", "Org/M", LLAMA_CFG, ref=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HUB_CACHE", str(a / "hub"))
    assert hf_cached_config("Org/M") is not None  # no refs/main: the snapshot that has a config


def test_hf_id_not_cached_says_what_to_download(tmp_path):
    res = CliRunner().invoke(main, ["fit", "NoSuchOrg/No-Model", "--gpu", "rtx4090"], env={"HF_HOME": str(tmp_path)})
    assert res.exit_code == 2
    assert "hf download NoSuchOrg/No-Model config.json" in res.output and "Traceback" not in res.output


def test_catalog_models_answer_to_their_hf_ids():
    a = _fit_json("Qwen/Qwen3-8B", "--gpu", "rtx4090", "--ctx", "8k")
    assert a["model"] == "qwen3-8b"
    b = _fit_json("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "rtx4090", "--ctx", "8k")
    assert b["model"] == "llama-3.1-8b"


def test_fit_json_says_what_it_planned():
    out = _fit_json(str(CONFIGS / "jamba-v0.1.json"), "--gpu", "h100-sxm", "--ctx", "8k")
    a = out["architecture"]
    assert (a["family"], a["model_type"], a["layers"]) == ("jamba", "jamba", 32)
    assert a["layer_kinds"] == {"mamba": 28, "full": 4}
    assert abs(a["total_params"] / 52e9 - 1) < 0.015 and a["kv_values_per_token"] == 8192
    assert out["model_name"] == "jamba-v0.1"  # the file's name, not its folder's (configs)


def test_host_ram_verdict_is_conditional_when_unstated():
    out = _fit_json("qwen3.5-397b-a17b", "--gpu", "rtx4090", "--ctx", "8k")
    assert out["fits"] is True and out["verdict"] == "fits-if-host-ram"
    assert out["host_ram_needed_bytes"] == out["memory"]["host_bytes"] > 100 * 2**30
    stated = _fit_json("qwen3.5-397b-a17b", "--gpu", "rtx4090", "--ctx", "8k", "--host-ram", "256GiB")
    assert stated["verdict"] == "fits" and stated["host_ram_needed_bytes"] is None
    short = _fit_json("qwen3.5-397b-a17b", "--gpu", "rtx4090", "--ctx", "8k", "--host-ram", "64GiB")
    assert short["verdict"] == "does-not-fit"
    plain = _fit_json("llama-3.1-8b", "--gpu", "rtx4090", "--ctx", "8k")
    assert plain["verdict"] == "fits" and plain["host_ram_needed_bytes"] is None


def test_text_verdict_names_the_host_ram():
    res = CliRunner().invoke(main, ["fit", "qwen3.5-397b-a17b", "--gpu", "rtx4090", "--ctx", "8k"])
    assert "FITS if the host has" in res.output and "--host-ram" in res.output


# --- the checkpoint's quantization on safetensors engines -------------------------------------


def test_safetensors_engine_plans_the_checkpoint_format():
    out = _fit_json(str(CONFIGS / "qwen3-235b-a22b-fp8.json"), "--gpu", "8xh100-sxm", "--engine", "vllm",
                    "--ctx", "32k")
    assert out["assumptions"]["quant"] == "fp8"
    bf16 = _fit_json(str(CONFIGS / "qwen3-235b-a22b.json"), "--gpu", "8xh100-sxm", "--engine", "vllm", "--ctx", "32k")
    assert bf16["assumptions"]["quant"] == "bf16"
    w_fp8 = out["memory"]["devices"][0]["weights_bytes"]
    w_bf16 = bf16["memory"]["devices"][0]["weights_bytes"]
    assert 0.5 < w_fp8 / w_bf16 < 0.52  # 1 byte vs 2 per weight; embeddings, head and norms stay BF16


def test_contradicting_quant_is_a_labelled_what_if():
    out = _fit_json(str(CONFIGS / "qwen3-235b-a22b-fp8.json"), "--gpu", "8xh100-sxm", "--engine", "vllm",
                    "--quant", "bf16", "--ctx", "32k")
    assert any(w.startswith("what-if: the checkpoint is stored as FP8") for w in out["warnings"])


def test_ignore_list_keeps_attention_in_bf16():
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve
    from planner.localfile import load_config_json

    card = load_config_json(CONFIGS / "kimi-k2.5.json")
    r = resolve(Catalog(), Deployment(model=card.id, gpus=("h200",) * 8, engine="vllm-cuda"), card)
    types = {w.tensor.name: w.storage for w in r.weights}
    assert types["blk.5.attn_q_b.weight"] == "BF16" and types["blk.5.ffn_up_shexp.weight"] == "BF16"
    assert types["blk.5.ffn_up_exps.weight"] == "INT4_G32_SYM"


def test_modelopt_sidecar_is_read(tmp_path):
    from planner.localfile import load_config_json

    card = load_config_json(CONFIGS / "llama-3.1-70b-instruct-fp8.json")
    assert card.config["quantization_config"]["quant_algo"] == "FP8"


# --- GGUF headers and llama.cpp's per-architecture rules --------------------------------------


def _gguf(path: Path, arch: str, n_blocks: int, extra: dict) -> Path:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(n_blocks)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_key_length(16)
    w.add_value_length(16)
    for k, v in extra.items():
        if isinstance(v, list):
            w.add_array(f"{arch}.{k}", v)
        else:
            w.add_uint32(f"{arch}.{k}", v)
    w.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch, n, want_full", [
    ("gemma3", 12, [5, 11]),  # every 6th layer is global (src/models/gemma3.cpp:7)
    ("gpt-oss", 4, [1, 3]),  # alternating, sliding first (src/models/openai-moe.cpp:9)
    ("gemma2", 4, [1, 3]),
])
def test_gguf_sliding_window_patterns(tmp_path, arch, n, want_full):
    card, _ = load_gguf(_gguf(tmp_path / "m.gguf", arch, n, {"attention.sliding_window": 32}))
    assert [i for i, x in enumerate(card.arch.layers) if x.kind == "full"] == want_full
    assert all(x.window_tokens == 32 for x in card.arch.layers if x.kind == "sliding")


def test_gguf_pattern_key_overrides_the_default(tmp_path):
    path = _gguf(tmp_path / "m.gguf", "gemma3", 4, {"attention.sliding_window": 32, "attention.sliding_window_pattern": 2})
    assert [x.kind for x in load_gguf(path)[0].arch.layers] == ["sliding", "full"] * 2


def test_gguf_nextn_layers_are_not_decoder_layers(tmp_path):
    card, _ = load_gguf(_gguf(tmp_path / "m.gguf", "glm4moe", 5, {"nextn_predict_layers": 1}))
    assert card.arch.n_layers == 4 and card.arch.mtp_layers == 1


def test_gguf_of_unknown_or_unread_families_is_refused(tmp_path):
    with pytest.raises(PlannerError, match="unknown architecture: model_type 'rwkv7'"):
        load_gguf(_gguf(tmp_path / "a.gguf", "rwkv7", 2, {}))
    # a hybrid GGUF whose layers hold Mamba tensors but whose header lacks the SSM sizes
    from tests.test_configs import NEMOTRON_H

    with pytest.raises(PlannerError, match="GGUF has no nemotron_h.ssm.inner_size"):
        load_gguf(_family_gguf(tmp_path / "b.gguf", "nemotron_h", NEMOTRON_H, {}))


# --- GGUF headers of the hybrid families: the same plan as their config ------------------------


def _family_gguf(path: Path, arch_name: str, cfg: dict, extra: dict) -> Path:
    """A GGUF as llama.cpp's converter lays it out for `cfg` (tensors as planner names them, which
    are llama.cpp's; per-layer head_count_kv with 0 on recurrent layers, conversion/*.py), tiny F32
    zeros for the weights."""
    gguf = pytest.importorskip("gguf")
    from planner.arch import parse_config

    a = parse_config(cfg)
    w = gguf.GGUFWriter(str(path), arch_name)
    w.add_block_count(a.n_layers + a.mtp_layers)
    w.add_context_length(a.max_position_embeddings)
    w.add_embedding_length(a.hidden_size)
    w.add_head_count(max(x.n_heads for x in a.layers if x.softmax) if any(x.softmax for x in a.layers) else 0)
    w.add_head_count_kv([x.n_kv_heads if x.softmax else 0 for x in a.layers])
    soft = [x for x in a.layers if x.softmax and x.kind != "mla"]
    if soft:
        w.add_key_length(soft[0].k_head_dim)
        w.add_value_length(soft[0].v_head_dim)
    for k, v in extra.items():
        if isinstance(v, list):
            w.add_array(f"{arch_name}.{k}", v)
        else:
            w.add_uint32(f"{arch_name}.{k}", v)
    for t in a.tensors:
        if t.group != "text":
            continue
        shape = (t.n_experts, t.rows, t.cols) if t.n_experts > 1 else (t.rows, t.cols)
        w.add_tensor(t.name, np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _same_cache(gguf_arch, cfg_arch):
    assert gguf_arch.n_layers == cfg_arch.n_layers
    for i, (g, c) in enumerate(zip(gguf_arch.layers, cfg_arch.layers)):
        assert (g.kind, g.kv_elems_per_token, g.window_tokens, g.ssm_state_elems, g.conv_state_elems) == \
            (c.kind, c.kv_elems_per_token, c.window_tokens, c.ssm_state_elems, c.conv_state_elems), f"layer {i}"
    assert gguf_arch.moe_layers == cfg_arch.moe_layers


def _ssm(inner, state, heads, groups, conv):  # {arch}.ssm.* as conversion/mamba.py & co write them
    return {"ssm.inner_size": inner, "ssm.state_size": state, "ssm.time_step_rank": heads, "ssm.group_count": groups,
            "ssm.conv_kernel": conv}


def _cfgs():
    from tests.test_configs import FALCON_H1, GRANITE_H, MAMBA2, NEMOTRON_H

    falcon, granite, mamba2 = FALCON_H1, GRANITE_H, MAMBA2  # the hand-worked configs of tests/test_configs.py
    jamba = {"model_type": "jamba", "hidden_size": 64, "num_hidden_layers": 8, "vocab_size": 100,
             "num_attention_heads": 4, "num_key_value_heads": 2, "attn_layer_period": 4, "attn_layer_offset": 2,
             "expert_layer_period": 2, "expert_layer_offset": 1, "num_experts": 4, "num_experts_per_tok": 2,
             "intermediate_size": 96, "mamba_expand": 2, "mamba_d_state": 8, "mamba_d_conv": 4, "mamba_dt_rank": 4}
    lfm2 = {"model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
            "num_attention_heads": 4, "num_key_value_heads": 2, "conv_L_cache": 3, "block_ff_dim": 96,
            "layer_types": ["conv", "conv", "full_attention", "conv"]}
    llama4 = {"model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 8, "vocab_size": 100,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "interleave_moe_layer_step": 2,
              "num_local_experts": 4, "num_experts_per_tok": 1, "intermediate_size": 32,
              "intermediate_size_mlp": 96, "attention_chunk_size": 8192}
    kimi = {"model_type": "kimi_linear", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
            "num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 32, "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 16, "v_head_dim": 16, "q_lora_rank": None, "intermediate_size": 96,
            "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_token": 2, "num_shared_experts": 1,
            "first_k_dense_replace": 1, "linear_attn_config": {"kda_layers": [1, 2, 3], "full_attn_layers": [4],
                                                               "head_dim": 16, "num_heads": 4,
                                                               "short_conv_kernel_size": 4}}
    dsv4 = {"model_type": "deepseek_v4", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "q_lora_rank": 16, "o_groups": 2,
            "o_lora_rank": 8, "hc_mult": 2, "index_n_heads": 2, "index_head_dim": 8, "sliding_window": 16,
            "n_routed_experts": 4, "moe_intermediate_size": 16, "n_shared_experts": 1, "num_experts_per_tok": 2,
            "num_hash_layers": 1, "compress_ratios": [0, 4, 128, 4], "num_nextn_predict_layers": 0}
    minimax = {"model_type": "minimax_m1", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "attn_type_list": [0, 0, 0, 1],
               "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32}
    gemma3n = {"model_type": "gemma3n_text", "hidden_size": 32, "num_hidden_layers": 22, "vocab_size": 100,
               "vocab_size_per_layer_input": 100, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
               "intermediate_size": 48, "hidden_size_per_layer_input": 8, "altup_num_inputs": 4, "laurel_rank": 64,
               "num_kv_shared_layers": 2, "sliding_window": 64}  # 22 layers: llama.cpp gives the first 20 a cache
    return [
        ("gemma3n", gemma3n, {"embedding_length_per_layer_input": 8, "attention.sliding_window": 64,
                              "feed_forward_length": 48}),
        ("minimax-01", minimax, {"expert_count": 4, "expert_used_count": 2, "feed_forward_length": 32}),  # n_ff: experts
        ("deepseek4", dsv4, {"attention.compress_ratios": [0, 4, 128, 4], "attention.output_group_count": 2,
                             "attention.output_lora_rank": 8, "hyper_connection.count": 2,
                             "attention.indexer.head_count": 2, "attention.indexer.key_length": 8,
                             "attention.q_lora_rank": 16, "attention.sliding_window": 16, "expert_count": 4,
                             "expert_used_count": 2, "expert_feed_forward_length": 16, "expert_shared_count": 1,
                             "hash_layer_count": 1}),
        ("nemotron_h_moe", NEMOTRON_H, {**_ssm(64, 8, 4, 2, 4), "expert_count": 4, "expert_used_count": 2,
                                        "expert_feed_forward_length": 32, "expert_shared_feed_forward_length": 48,
                                        "feed_forward_length": [0, 0, 128, 0]}),
        ("falcon-h1", falcon, {**_ssm(128, 8, 8, 1, 4), "feed_forward_length": 96}),
        ("granitehybrid", granite, {**_ssm(128, 16, 4, 1, 4), "expert_count": 8, "expert_used_count": 2,
                                    "expert_feed_forward_length": 32, "expert_shared_feed_forward_length": 64}),
        ("jamba", jamba, {**_ssm(128, 8, 4, 1, 4), "expert_count": 4, "expert_used_count": 2,
                          "feed_forward_length": 96}),
        ("lfm2", lfm2, {"shortconv.l_cache": 3, "feed_forward_length": 64}),
        ("mamba2", mamba2, _ssm(128, 32, 8, 1, 4)),
        ("llama4", llama4, {"expert_count": 4, "expert_used_count": 1, "expert_feed_forward_length": 32,
                            "interleave_moe_layer_step": 2, "feed_forward_length": 96}),
        ("kimi-linear", kimi, {"kda.head_dim": 16, "ssm.conv_kernel": 4, "attention.kv_lora_rank": 32,
                               "rope.dimension_count": 8, "attention.key_length_mla": 24, "attention.value_length_mla": 16,
                               "expert_count": 4,
                               "expert_used_count": 2, "expert_feed_forward_length": 32, "expert_shared_count": 1,
                               "feed_forward_length": 96, "leading_dense_block_count": 1}),
    ]


@pytest.mark.parametrize("arch_name, cfg, extra", _cfgs(), ids=[c[0] for c in _cfgs()])
def test_hybrid_gguf_plans_as_its_config(tmp_path, arch_name, cfg, extra):
    from planner.arch import parse_config

    card, weights = load_gguf(_family_gguf(tmp_path / "m.gguf", arch_name, cfg, extra))
    _same_cache(card.arch, parse_config(cfg))
    assert sum(w.tensor.params for w in weights) == parse_config(cfg).params()
