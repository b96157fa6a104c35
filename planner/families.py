"""Architecture families: which rules read a config.json of each `model_type`, and the readers
of the families the generic transformer reading gets wrong (hybrid SSM, short-conv, ...).

A model_type not listed here is refused (`unknown_architecture`): the generic reading is a
guess for an architecture planner has not checked, and a confident wrong size is worse than
none. Each family listed is checked against at least one real config.json in tests/configs/
(total and active parameters against the published count, tests/test_configs.py).

The layer rules of the hybrid readers follow llama.cpp b11434's loaders (src/models/<arch>.cpp,
load_arch_tensors) and its recurrent-state sizes (src/llama-hparams.cpp:208-258, n_embd_r /
n_embd_s): a Mamba-2 layer keeps d_state x d_inner SSM values and (d_conv - 1) x (d_inner +
2 n_groups d_state) conv values per sequence; Mamba-1 (Jamba) d_state x d_inner and
(d_conv - 1) x d_inner; an LFM2 short-conv layer (L_cache - 1) x hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from planner.errors import PlannerError


@dataclass(frozen=True)
class Family:
    id: str
    label: str
    reader: str = "generic"  # "generic" (planner.arch._parse) or a key of READERS
    approximations: tuple[str, ...] = ()
    # config keys of variants the reader does not model: a config that sets one is refused
    refuse_keys: tuple[str, ...] = ()


# model_type (HF config.json, or general.architecture of a GGUF) -> family. Every HF model_type
# here is read from at least one real config.json in tests/configs/ or models_db/models/ (tested
# against its published parameter count), or, for falcon_h1 / granitemoehybrid / mamba2 /
# lfm2_moe, from hand-worked synthetic configs with the field names of their HF config classes.
_FAMILIES: list[tuple[Family, tuple[str, ...]]] = [
    (Family("llama", "Llama-style decoder (GQA attention, gated MLP)"),
     ("llama", "qwen2", "qwen3", "qwen3_vl", "qwen3_vl_text")),
    (Family("moe", "MoE decoder (routed experts, optional shared expert)"),
     ("mixtral", "qwen3_moe", "qwen3moe", "minimax_m2", "qwen3_vl_moe", "qwen3_vl_moe_text")),
    (Family("gemma", "Gemma 3 (interleaved sliding-window attention)"), ("gemma3", "gemma3_text")),
    (Family("gemma4", "Gemma 4 (sliding/global attention, per-layer embeddings, shared KV)"), ("gemma4", "gemma4_text")),
    (Family("gpt_oss", "gpt-oss (alternating sliding/full attention, MXFP4 MoE)"), ("gpt_oss", "gpt-oss")),
    (Family("mla", "DeepSeek-V3 style MLA + MoE (Kimi-K2, GLM-5: + DSA indexer)"),
     ("deepseek_v3", "deepseek_v32", "kimi_k2", "glm_moe_dsa", "deepseek2", "glm-dsa")),
    (Family("qwen_hybrid", "Qwen3-Next / Qwen3.5 hybrid (Gated DeltaNet + gated attention)"),
     ("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3next", "qwen35", "qwen35moe")),
    (Family("mimo_v2", "MiMo-V2 (sliding/global attention MoE)"), ("mimo_v2", "mimo2")),
    (Family("nemotron_h", "Nemotron-H hybrid (Mamba-2, attention, MLP/MoE blocks)", "nemotron_h",
            ("Mamba-2 layer speed priced from its state size with the recurrent-layer overhead fitted on Gated "
             "DeltaNet runs",
             "each block (one mixer or one FFN) is charged a whole transformer layer's fitted fixed overhead: "
             "measured on an H200 (Nemotron-3-Nano Q4_K_M, llama.cpp b11434, 24 runs no fit used), decode at "
             "batch 1 runs 30% faster than predicted and prefill 14% faster (docs/validation.md)",)), ("nemotron_h", "nemotron_h_moe")),
    (Family("falcon_h1", "Falcon-H1 (Mamba-2 and attention in parallel in every layer)", "falcon_h1",
            ("Mamba-2 layer speed priced from its state size with the recurrent-layer overhead fitted on Gated "
             "DeltaNet runs",)), ("falcon_h1", "falcon-h1")),
    (Family("granite_hybrid", "Granite-4.0-H (Mamba-2 and attention layers, MoE + shared MLP)", "granite_hybrid",
            ("Mamba-2 layer speed priced from its state size with the recurrent-layer overhead fitted on Gated "
             "DeltaNet runs",)), ("granitemoehybrid", "granitehybrid")),
    (Family("jamba", "Jamba (Mamba-1 and attention layers, MoE every other layer)", "jamba",
            ("Mamba-1 layer speed priced from its state size with the recurrent-layer overhead fitted on Gated "
             "DeltaNet runs",)), ("jamba",)),
    (Family("lfm2", "LFM2 (short-convolution and attention layers)", "lfm2",
            ("short-conv layers priced by their weights only (the 3-tap convolution is negligible)",)),
     ("lfm2", "lfm2_moe", "lfm2moe")),
    (Family("llama4", "Llama 4 (chunked attention on 3 of 4 layers, MoE with a shared expert)", "llama4"),
     ("llama4", "llama4_text")),
    (Family("kimi_linear", "Kimi-Linear (KDA linear attention + MLA, MoE)", "kimi_linear",
            ("KDA layer speed priced from its state size with the recurrent-layer overhead fitted on Gated DeltaNet "
             "runs",),
            # Kimi-K3 reuses model_type kimi_linear with a latent MoE, full-rank gates and gated MLA
            ("routed_expert_hidden_size", "use_full_rank_gate", "mla_use_output_gate", "attn_res_block_size")),
     ("kimi_linear", "kimi-linear")),
    (Family("deepseek_v4", "DeepSeek-V4 (windowed attention + compressed CSA/HCA caches, hyper-connections, MoE)",
            "deepseek_v4",
            ("the top-k selection over compressed entries (index_topk) is priced as a read of every entry: decode "
             "time at long context is an upper bound",)), ("deepseek_v4", "deepseek4")),
    (Family("minimax_01", "MiniMax-Text-01 / M1 (lightning linear attention, softmax every 8th layer, MoE)",
            "minimax_01",
            ("lightning-attention layer speed priced from its state size with the recurrent-layer overhead fitted "
             "on Gated DeltaNet runs",)), ("minimax_m1", "minimax-01")),
    (Family("gemma3n", "Gemma 3n (per-layer embeddings, AltUp, LAuReL, KV shared by the last layers)", "gemma3n",
            ("no real Gemma 3n config.json is in the tests: sized from the field names of transformers' "
             "Gemma3nTextConfig and llama.cpp's tensors, unchecked against a published text-model count",
             "its vision (MobileNet-V5) and audio encoders are not counted (llama.cpp loads the text model only; "
             "vLLM would load them too)")),
     ("gemma3n", "gemma3n_text")),
    (Family("mamba2", "Mamba-2 (attention-free SSM)", "mamba2",
            ("Mamba-2 layer speed priced from its state size with the recurrent-layer overhead fitted on Gated "
             "DeltaNet runs",)), ("mamba2",)),
]

# Read with the generic transformer rules but backed by no real config in the tests: planned, with
# a warning that says so (their field names match the generic reader's as far as their HF config
# classes show, but no published count has checked them). GGUF names are llama.cpp's.
UNVERIFIED: dict[str, str] = {
    "mistral": "llama", "mistral3": "llama", "olmo2": "llama", "olmo3": "llama", "granite": "llama",
    "smollm3": "llama", "seed_oss": "llama", "exaone4": "llama", "hunyuan_v1_dense": "llama", "glm4": "llama",
    "phi3": "llama", "qwen2_vl": "llama", "qwen2_5_vl": "llama", "cohere": "llama", "cohere2": "llama",
    "qwen2_moe": "moe", "qwen2moe": "moe", "olmoe": "moe", "granitemoe": "moe", "phimoe": "moe",
    "hunyuan_v1_moe": "moe", "glm4_moe": "moe", "glm4moe": "moe", "dots1": "moe",
    "gemma2": "gemma", "deepseek_v2": "mla",
    "minimax_text_01": "minimax_01",  # the M1 config's layout under another name (Hub card), not checked
}

FAMILY_OF: dict[str, Family] = {mt: fam for fam, types in _FAMILIES for mt in types}
FAMILIES: dict[str, Family] = {fam.id: fam for fam, _ in _FAMILIES}


def family_of(model_type: str, architectures: Any = None, tc: dict[str, Any] | None = None) -> Family:
    """The family that reads `model_type`, or a one-line refusal naming it (also for a config of
    the family that sets a key of a variant its reader does not model)."""
    fam = FAMILY_OF.get(model_type)
    if fam is None and model_type in UNVERIFIED:
        base = FAMILIES[UNVERIFIED[model_type]]
        fam = Family(base.id, base.label, base.reader, base.approximations + (
            f"model_type {model_type!r} is read with the {base.label} rules, unverified: no real config of it is in "
            "planner's tests, so its parameter count has not been checked against a published one",))
    if fam is not None:
        nested = [v for v in (tc or {}).values() if isinstance(v, dict)]
        bad = [k for k in fam.refuse_keys if any(k in d for d in [tc or {}, *nested])]
        if bad:
            raise PlannerError(f"model_type {model_type!r} with {', '.join(bad)}: a variant of the {fam.label} family "
                               "planner has no rules for, so it cannot size it without guessing")
        return fam
    arch = f" ({', '.join(map(str, architectures))})" if isinstance(architectures, list) and architectures else ""
    raise PlannerError(f"unknown architecture: model_type {model_type!r}{arch}. planner reads only the families it "
                       "has rules for, so it cannot size this model without guessing; supported architectures are "
                       "listed in docs/data.md")


# --- shared pieces of the hybrid readers --------------------------------------------------------


def need(cfg: dict[str, Any], *names: str) -> int:
    from planner.arch import _need_int

    return _need_int(cfg, *names)


def opt(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    from planner.arch import _int

    return _int(cfg, *names, default=default)


def mamba2_layer(add: Callable, p: str, h: int, d_inner: int, n_heads: int, d_state: int, n_groups: int,
                 d_conv: int):
    """A Mamba-2 mixer (src/models/nemotron-h.cpp, granite-hybrid.cpp, falcon-h1.cpp load_arch_tensors):
    in_proj h -> 2 d_inner + 2 G N + H (z, x, B, C, dt), a depthwise conv over x, B, C, per-head
    A/D/dt bias, a grouped RMSNorm and out_proj d_inner -> h."""
    from planner.arch import AttnLayer

    conv_dim = d_inner + 2 * n_groups * d_state
    add(p + "ssm_in.weight", "other", 2 * d_inner + 2 * n_groups * d_state + n_heads, h)
    add(p + "ssm_conv1d.weight", "conv", conv_dim, d_conv)
    add(p + "ssm_conv1d.bias", "unquantized", 1, conv_dim)
    add(p + "ssm_dt.bias", "unquantized", 1, n_heads)
    add(p + "ssm_a", "unquantized", n_heads, 1)  # ggml {1, n_head}
    add(p + "ssm_d", "unquantized", n_heads, 1)
    add(p + "ssm_norm.weight", "unquantized", n_groups, d_inner // n_groups)  # grouped RMSNorm {d_inner/G, G}
    add(p + "ssm_out.weight", "other", h, d_inner)
    return AttnLayer(kind="mamba", n_heads=n_heads, ssm_state_elems=d_state * d_inner,
                     conv_state_elems=(d_conv - 1) * conv_dim)  # src/llama-hparams.cpp:229, :257


def attention(add: Callable, p: str, h: int, n_heads: int, n_kv: int, head_dim: int, bias: bool = False,
              qk_norm: bool = False, kind: str = "full", window: int | None = None):
    """Plain GQA attention: q, k, v, o (+ biases, q/k norms)."""
    from planner.arch import AttnLayer

    add(p + "attn_q.weight", "attn_q", n_heads * head_dim, h)
    add(p + "attn_k.weight", "attn_k", n_kv * head_dim, h)
    add(p + "attn_v.weight", "attn_v", n_kv * head_dim, h)
    add(p + "attn_output.weight", "attn_output", h, n_heads * head_dim)
    if bias:
        for t, n in (("q", n_heads), ("k", n_kv), ("v", n_kv)):
            add(p + f"attn_{t}.bias", "unquantized", 1, n * head_dim)
    if qk_norm:
        add(p + "attn_q_norm.weight", "unquantized", 1, head_dim)
        add(p + "attn_k_norm.weight", "unquantized", 1, head_dim)
    return AttnLayer(kind=kind, n_heads=n_heads, n_kv_heads=n_kv, k_head_dim=head_dim, v_head_dim=head_dim,
                     window_tokens=window)


def mlp(add: Callable, p: str, h: int, inter: int, gated: bool = True, suffix: str = "") -> None:
    """A dense MLP (gate/up/down, or up/down where the activation is ungated, e.g. relu^2)."""
    if inter <= 0:
        return
    if gated:
        add(p + f"ffn_gate{suffix}.weight", "ffn_gate", inter, h)
    add(p + f"ffn_up{suffix}.weight", "ffn_up", inter, h)
    add(p + f"ffn_down{suffix}.weight", "ffn_down", h, inter)


def experts(add: Callable, p: str, h: int, inter: int, n: int, gated: bool = True, score_bias: bool = False) -> None:
    """Routed experts stacked per tensor, with their router."""
    add(p + "ffn_gate_inp.weight", "router", n, h)
    if score_bias:
        add(p + "exp_probs_b.bias", "unquantized", 1, n)
    if gated:
        add(p + "ffn_gate_exps.weight", "ffn_gate", inter, h, n_experts=n)
    add(p + "ffn_up_exps.weight", "ffn_up", inter, h, n_experts=n)
    add(p + "ffn_down_exps.weight", "ffn_down", h, inter, n_experts=n)


def pattern_error(key: str, value: Any, want: str) -> PlannerError:
    return PlannerError(f"config key {key!r}: {value!r} is not {want}")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def mamba_dt_rank(value: Any, h: int) -> int:
    """Mamba-1 dt_rank: an int, or "auto" = ceil(hidden / 16) (HF JambaConfig / MambaConfig)."""
    return math.ceil(h / 16) if value in (None, "auto") else int(value)
