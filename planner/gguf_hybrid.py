"""GGUF headers of the hybrid families read into the config.json fields their readers take.

llama.cpp's converters (conversion/*.py, b11434) write the layer pattern of these families
implicitly: per-layer arrays (attention.head_count_kv 0 on recurrent layers, feed_forward_length)
and which tensors each block holds. The pattern is read back from the tensors a block holds
(ssm_in: Mamba; shortconv.*: short conv; ssm_conv1d_q: KDA; attn_kv_a_mqa: MLA; attn_k / attn_qkv:
attention; ffn_gate_inp: MoE) and the sizes from the {arch}.ssm.* / shortconv / kda keys, so a
GGUF and its config give the same memory plan (tests/test_model_inputs.py).
"""

from __future__ import annotations

from typing import Any, Callable

from planner.errors import PlannerError

# GGUF general.architecture -> the HF model_type whose reader takes the fields built here
HYBRID_ARCHS = {"nemotron_h": "nemotron_h", "nemotron_h_moe": "nemotron_h", "jamba": "jamba", "lfm2": "lfm2",
                "lfm2moe": "lfm2_moe", "granitehybrid": "granitemoehybrid", "falcon-h1": "falcon_h1",
                "mamba2": "mamba2", "llama4": "llama4_text", "kimi-linear": "kimi_linear", "deepseek4": "deepseek_v4",
                "minimax-01": "minimax_m1", "gemma3n": "gemma3n_text"}


def _blocks(names: set[str], n: int) -> list[set[str]]:
    """Per layer, the tensor names of blk.i without the prefix."""
    out: list[set[str]] = [set() for _ in range(n)]
    for name in names:
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and int(parts[1]) < n:
            out[int(parts[1])].add(parts[2])
    return out


def _mixer(b: set[str]) -> str:
    if "ssm_conv1d_q.weight" in b:
        return "kda"
    if "ssm_in.weight" in b:
        return "mamba"
    if "shortconv.conv.weight" in b:
        return "conv"
    if "attn_kv_a_mqa.weight" in b:
        return "mla"
    if "attn_k.weight" in b or "attn_qkv.weight" in b:
        return "attention"
    return "none"


def _ffn(b: set[str]) -> str:
    if "ffn_gate_inp.weight" in b:
        return "moe"
    return "mlp" if "ffn_up.weight" in b else "none"


def hybrid_config(arch: str, field: Callable[[str], Any], names: set[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` (the keys every GGUF maps, see localfile._GGUF_KEYS) completed with the fields the
    family's reader needs, in its HF config's names."""
    n = cfg.get("num_hidden_layers")
    if not isinstance(n, int) or n <= 0:
        raise PlannerError(f"GGUF has no {arch}.block_count")
    blocks = _blocks(names, n)
    mixers, ffns = [_mixer(b) for b in blocks], [_ffn(b) for b in blocks]

    def key(k: str, default: Any = None) -> Any:
        v = field(f"{arch}.{k}")
        return default if v is None else v

    def need(k: str) -> int:
        v = field(f"{arch}.{k}")
        if not isinstance(v, int) or v <= 0:
            raise PlannerError(f"GGUF has no {arch}.{k} (needed to size its {'recurrent' if 'ssm' in k else ''} layers)"
                               .replace("  ", " "))
        return v

    h = cfg["hidden_size"]
    inner = d_state = d_conv = heads = None
    groups = key("ssm.group_count", 1)
    if "mamba" in mixers:
        inner, d_state, d_conv, heads = (need("ssm.inner_size"), need("ssm.state_size"), need("ssm.conv_kernel"),
                                         need("ssm.time_step_rank"))
    elif "kda" in mixers:
        d_conv = need("ssm.conv_kernel")
        need("kda.head_dim")
    elif "conv" in mixers:
        need("shortconv.l_cache")
    out = dict(cfg, model_type=HYBRID_ARCHS[arch])
    out.pop("num_key_value_heads", None)
    kv = field(f"{arch}.attention.head_count_kv")
    kv_heads = [x for x in kv if x] if isinstance(kv, list) else [kv] if kv else []
    if kv_heads:
        out["num_key_value_heads"] = max(kv_heads)
    ff = field(f"{arch}.feed_forward_length")
    ff_max = max((x for x in ff if x), default=0) if isinstance(ff, list) else ff
    if ff_max:
        out["intermediate_size"] = ff_max
    mt = out["model_type"]
    if mt == "nemotron_h":
        code = {"mamba": "M", "attention": "*"}
        out["hybrid_override_pattern"] = "".join(code.get(m) or {"moe": "E", "mlp": "-"}.get(f, "-")
                                                 for m, f in zip(mixers, ffns))
        out.update(mamba_num_heads=heads, mamba_head_dim=inner // heads if inner else None, ssm_state_size=d_state, n_groups=groups,
                   conv_kernel=d_conv, n_routed_experts=cfg.get("num_experts"),
                   moe_shared_expert_intermediate_size=cfg.get("shared_expert_intermediate_size"),
                   moe_latent_size=key("moe_latent_size"))
    elif mt in ("granitemoehybrid", "falcon_h1"):
        out["layer_types"] = ["mamba" if m == "mamba" else "attention" for m in mixers]
        out.update(mamba_n_heads=heads, mamba_d_head=inner // heads if inner else None, mamba_d_ssm=inner, mamba_d_state=d_state,
                   mamba_n_groups=groups, mamba_d_conv=d_conv)
        if mt == "granitemoehybrid":
            out["num_local_experts"] = cfg.get("num_experts", 0)
            if cfg.get("num_experts"):
                out["intermediate_size"] = cfg.get("moe_intermediate_size")
            out["shared_intermediate_size"] = cfg.get("shared_expert_intermediate_size") or ff_max
    elif mt == "jamba":
        att = [i for i, m in enumerate(mixers) if m == "attention"]
        moe = [i for i, f in enumerate(ffns) if f == "moe"]
        out.update(attn_layer_period=_period(att, n), attn_layer_offset=att[0] if att else n,
                   expert_layer_period=_period(moe, n), expert_layer_offset=moe[0] if moe else n,
                   mamba_expand=inner // h if inner else None, mamba_d_state=d_state, mamba_d_conv=d_conv, mamba_dt_rank=heads)
    elif mt in ("lfm2", "lfm2_moe"):
        out["layer_types"] = ["conv" if m == "conv" else "full_attention" for m in mixers]
        out["conv_L_cache"] = key("shortconv.l_cache")
        out["block_ff_dim"] = ff_max  # as converted: already the adjusted width (block_auto_adjust_ff_dim off)
        out["tie_word_embeddings"] = cfg.get("tie_word_embeddings", True)
        if mt == "lfm2_moe":
            out["num_dense_layers"] = next((i for i, f in enumerate(ffns) if f == "moe"), n)
    elif mt == "mamba2":
        out.update(num_heads=heads, head_dim=inner // heads if inner else None, state_size=d_state, n_groups=groups, conv_kernel=d_conv)
    elif mt == "llama4_text":
        moe = [i for i, f in enumerate(ffns) if f == "moe"]
        out.update(interleave_moe_layer_step=key("interleave_moe_layer_step", 1), num_local_experts=cfg.get("num_experts"),
                   intermediate_size=cfg.get("moe_intermediate_size"), intermediate_size_mlp=ff_max)
        swa = key("attention.sliding_window")
        out["attention_chunk_size"] = None if swa == 0 else 8192  # src/models/llama4.cpp:8-19: 8192 unless 0
        del moe
    elif mt == "kimi_linear":
        out["linear_attn_config"] = {
            "kda_layers": [i + 1 for i, m in enumerate(mixers) if m == "kda"],
            "full_attn_layers": [i + 1 for i, m in enumerate(mixers) if m != "kda"],
            "head_dim": key("kda.head_dim"), "num_heads": cfg.get("num_attention_heads"), "short_conv_kernel_size": d_conv}
        out["first_k_dense_replace"] = next((i for i, f in enumerate(ffns) if f == "moe"), n)
        out["n_shared_experts"] = key("expert_shared_count", 0)
    elif mt == "gemma3n_text":  # src/models/gemma3n.cpp:3-27 and llama-hparams.h:265-268 hard-code these
        out.update(altup_num_inputs=4, laurel_rank=64, hidden_size_per_layer_input=key("embedding_length_per_layer_input", 256),
                   num_kv_shared_layers=max(0, n - 20), vocab_size_per_layer_input=None)
        pattern = key("attention.sliding_window_pattern")
        if isinstance(pattern, list) and len(pattern) >= n:
            out["layer_types"] = ["sliding_attention" if x else "full_attention" for x in pattern[:n]]
        out["intermediate_size"] = ff[0] if isinstance(ff, list) else ff  # llama.cpp: layer 0's for every layer
    elif mt == "minimax_m1":  # softmax layers hold attn_k; lightning layers a fused attn_qkv and a gate
        out["attn_type_list"] = [1 if "attn_k.weight" in b else 0 for b in blocks]
        out["num_local_experts"] = cfg.get("num_experts")
    elif mt == "deepseek_v4":  # keys as src/models/deepseek4.cpp:28-56 reads them (src/llama-arch.cpp names)
        out.update(compress_ratios=key("attention.compress_ratios"), head_dim=cfg.get("head_dim"),
                   q_lora_rank=cfg.get("q_lora_rank"), o_groups=key("attention.output_group_count"),
                   o_lora_rank=key("attention.output_lora_rank"), hc_mult=key("hyper_connection.count"),
                   index_n_heads=key("attention.indexer.head_count"), index_head_dim=key("attention.indexer.key_length"),
                   n_routed_experts=cfg.get("num_experts"), n_shared_experts=key("expert_shared_count", 0),
                   num_hash_layers=key("hash_layer_count", 0), num_nextn_predict_layers=cfg.get("num_nextn_predict_layers", 0))
    return {k: v for k, v in out.items() if v is not None}


def _period(idx: list[int], n: int) -> int:
    """The layer period of an evenly spaced index list (one index: the layer count)."""
    if len(idx) < 2:
        return n
    step = idx[1] - idx[0]
    if any(b - a != step for a, b in zip(idx, idx[1:])):
        raise PlannerError(f"GGUF layers {idx} are not evenly spaced, as this family's config says they are")
    return step
