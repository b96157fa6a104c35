"""Tiny versions of catalog models for CPU runs of llama.cpp: every size field shrunk, the
structure (layer pattern, MoE, shared experts, gating, MLA, linear attention) kept."""

from __future__ import annotations

import copy
from typing import Any

# field -> shrunk value (only fields present in the config are touched)
SIZES = {
    "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256,
    "shared_expert_intermediate_size": 256, "num_attention_heads": 4, "head_dim": 64, "global_head_dim": 128,
    "vocab_size": 512, "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 64,
    "linear_value_head_dim": 64, "q_lora_rank": 256, "kv_lora_rank": 256, "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 64, "v_head_dim": 64, "sliding_window": 64, "max_position_embeddings": 4096,
    "hidden_size_per_layer_input": 64, "vocab_size_per_layer_input": 512, "index_head_dim": 64, "index_n_heads": 4,
    "swa_head_dim": 64, "swa_v_head_dim": 64,
    "mamba_num_heads": 8, "mamba_head_dim": 32, "ssm_state_size": 32, "n_groups": 2,  # Nemotron-H Mamba-2
    "moe_shared_expert_intermediate_size": 256,
}


def tiny_config(cfg: dict[str, Any], n_layers: int | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg.pop("vision_config", None)
    cfg.pop("audio_config", None)
    tc = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    n = int(tc["num_hidden_layers"])
    if n_layers is None:
        lt = tc.get("layer_types")
        period = 4 if tc.get("full_attention_interval") else 6 if lt and "sliding_attention" in lt and \
            lt.count("sliding_attention") > 2 * lt.count("full_attention") else 2
        if lt and "full_attention" in lt and lt.count("sliding_attention") > 2 * lt.count("full_attention"):
            full = [i for i, x in enumerate(lt) if x == "full_attention"]  # one whole sliding/global group
            period = full[1] - full[0] if len(full) > 1 else full[0] + 1  # (Gemma 4 E2B: 5, MiMo-V2: 6)
        if tc.get("sliding_window_pattern") and not lt:  # Gemma 3: every Nth layer is global
            period = int(tc["sliding_window_pattern"])
        if tc.get("num_kv_shared_layers"):  # two groups: one owning its KV, one sharing it
            period *= 2
        n_layers = min(n, period + (tc.get("first_k_dense_replace") or 0))
    pattern = tc.get("hybrid_override_pattern")
    if isinstance(pattern, str):  # Nemotron-H: up to the first attention block and one block past it
        n_layers = min(len(pattern), pattern.index("*") + 2 if "*" in pattern else n_layers)
        tc["hybrid_override_pattern"] = pattern[:n_layers]
    tc["num_hidden_layers"] = n_layers
    if isinstance(tc.get("layer_types"), list):
        tc["layer_types"] = tc["layer_types"][:n_layers]
    kv_ratio = max(1, int(tc.get("num_attention_heads", 1)) // int(tc.get("num_key_value_heads") or 1))
    swa_kv_ratio = max(1, int(tc.get("num_attention_heads", 1)) // int(tc.get("swa_num_key_value_heads") or 1))
    for k, v in SIZES.items():
        if k in tc and tc[k] is not None:
            tc[k] = v
    heads = tc.get("num_attention_heads", 4)
    if "num_key_value_heads" in tc:
        tc["num_key_value_heads"] = max(1, heads // min(kv_ratio, heads))
    if "swa_num_key_value_heads" in tc:  # MiMo-V2: SWA layers keep more KV heads than global ones
        tc["swa_num_key_value_heads"] = max(2, heads // min(swa_kv_ratio, heads))
    if "num_global_key_value_heads" in tc:
        tc["num_global_key_value_heads"] = 1
    for k in ("num_experts", "n_routed_experts", "num_local_experts"):
        if tc.get(k):
            tc[k] = 8
    for k in ("num_experts_per_tok", "top_k_experts"):
        if tc.get(k):
            tc[k] = 2
    if tc.get("mtp_num_hidden_layers"):
        tc["mtp_num_hidden_layers"] = 1
    if tc.get("num_kv_shared_layers"):
        tc["num_kv_shared_layers"] = min(tc["num_kv_shared_layers"], n_layers // 2)
    return cfg
