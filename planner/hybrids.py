"""Readers of the families whose layers are not all attention + FFN: Nemotron-H, Falcon-H1,
Granite-4.0-H, Jamba, LFM2 and pure Mamba-2 (see planner.families for the registry).

Each reader turns the config's own description of its layer pattern into per-layer mixers
(mamba / conv / attention / none) and FFNs (dense, MoE, none), with tensors named and shaped
as llama.cpp b11434 loads them (src/models/<arch>.cpp, cited per reader).
"""

from __future__ import annotations

from typing import Any

from planner.arch import Architecture, AttnLayer, Tensor, _bool, native_context
from planner.errors import PlannerError
from planner.families import (FAMILIES, attention, ceil_div, experts, mamba2_layer, mamba_dt_rank, mlp, need, opt,
                              pattern_error)


class Builder:
    """Embedding, head and final norm; then one mixer and FFN per layer."""

    def __init__(self, cfg: dict[str, Any], tc: dict[str, Any], mt: str, family: str, tied_default: bool = False):
        self.cfg, self.tc, self.mt, self.family = cfg, tc, mt, family
        self.h = need(tc, "hidden_size", "d_model")
        self.vocab = need(tc, "vocab_size")
        # tie_word_embeddings as the config says, else the family's HF config class default
        self.tied = _bool(tc, "tie_word_embeddings", "tie_embedding",
                          default=_bool(cfg, "tie_word_embeddings", default=tied_default))
        self.tensors: list[Tensor] = []
        self.layers: list[AttnLayer] = []
        self.moe: list[bool] = []
        self.notes: list[str] = []
        self.add("token_embd.weight", "token_embd", self.vocab, self.h)
        if not self.tied:
            self.add("output.weight", "output", self.vocab, self.h)
        self.add("output_norm.weight", "unquantized", 1, self.h)

    def add(self, name: str, role: str, rows: int, cols: int, layer: int | None = None, n_experts: int = 1,
            group: str = "text") -> None:
        if rows > 0 and cols > 0:
            if layer is None and name.startswith("blk."):
                layer = int(name.split(".")[1])
            self.tensors.append(Tensor(name, role, rows, cols, layer, n_experts, group))

    def layer(self, mixer: AttnLayer, moe: bool) -> None:
        self.layers.append(mixer)
        self.moe.append(moe)

    def finish(self, n_experts: int = 0, top_k: int = 0) -> Architecture:
        return Architecture(
            model_type=self.mt, hidden_size=self.h, vocab_size=self.vocab,
            max_position_embeddings=native_context(self.tc), tie_word_embeddings=self.tied,
            layers=tuple(self.layers), moe_layers=tuple(self.moe), n_experts=n_experts, n_experts_per_tok=top_k,
            tensors=tuple(self.tensors), notes=tuple(self.notes), family=self.family)


def _n_layers(tc: dict[str, Any]) -> int:
    from planner.arch import MAX_LAYERS

    n = need(tc, "num_hidden_layers", "n_layer", "num_layers")
    if not 0 < n <= MAX_LAYERS:
        raise PlannerError(f"config key 'num_hidden_layers': {n} is not a layer count planner plans (1-{MAX_LAYERS:,})")
    return n


def _kinds_list(tc: dict[str, Any], key: str, n: int, table: dict[str, str]) -> list[str]:
    v = tc.get(key)
    if not isinstance(v, list) or len(v) != n:
        raise pattern_error(key, v, f"a list of {n} layer types")
    bad = next((x for x in v if x not in table), None)
    if bad is not None:
        raise PlannerError(f"config key {key!r}: unknown layer type {bad!r} (known: {', '.join(table)})")
    return [table[x] for x in v]


def nemotron_h(cfg, tc, mt) -> Architecture:
    """src/models/nemotron-h.cpp:48-140. hybrid_override_pattern has one character per block:
    M = Mamba-2 mixer, * = attention, - = MLP (up/down, relu^2), E = MoE (ungated experts, a
    shared expert and a score-correction bias). A block holds only that one mixer or FFN."""
    b = Builder(cfg, tc, mt, "nemotron_h")
    n = _n_layers(tc)
    pat = tc.get("hybrid_override_pattern")
    if not isinstance(pat, str) or len(pat) != n:
        raise pattern_error("hybrid_override_pattern", pat, f"a string of {n} block codes (M, *, -, E)")
    h = b.h
    d_inner = need(tc, "mamba_num_heads") * need(tc, "mamba_head_dim")
    n_heads, n_kv = need(tc, "num_attention_heads"), opt(tc, "num_key_value_heads", default=None)
    head_dim = opt(tc, "head_dim", "attention_head_dim", default=h // n_heads)
    n_exp = opt(tc, "n_routed_experts", "num_experts", default=0)
    latent = opt(tc, "moe_latent_size", default=0) or h  # Nemotron 3 Super: experts run in a latent width
    for i, c in enumerate(pat):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        if c == "M":
            b.layer(mamba2_layer(b.add, p, h, d_inner, need(tc, "mamba_num_heads"), need(tc, "ssm_state_size"),
                                 need(tc, "n_groups"), need(tc, "conv_kernel")), False)
        elif c == "*":
            b.layer(attention(b.add, p, h, n_heads, n_kv or n_heads, head_dim,
                              bias=_bool(tc, "attention_bias")), False)
        elif c == "-":
            mlp(b.add, p, h, need(tc, "intermediate_size"), gated=False)
            b.layer(AttnLayer(kind="none"), False)
        elif c == "E":
            if not n_exp:
                raise PlannerError("hybrid_override_pattern has MoE blocks (E) but the config has no n_routed_experts")
            if latent != h:
                b.add(p + "ffn_latent_down.weight", "other", latent, h)
                b.add(p + "ffn_latent_up.weight", "other", h, latent)
            experts(b.add, p, latent, need(tc, "moe_intermediate_size"), n_exp, gated=False, score_bias=True)
            shared = opt(tc, "moe_shared_expert_intermediate_size", default=0) * max(1, opt(tc, "n_shared_experts",
                                                                                          default=1))
            mlp(b.add, p, h, shared, gated=False, suffix="_shexp")
            b.layer(AttnLayer(kind="none"), True)
        else:
            raise PlannerError(f"config key 'hybrid_override_pattern': unknown block code {c!r} at layer {i} "
                               "(known: M, *, -, E)")
    if opt(tc, "num_nextn_predict_layers", "mtp_num_hidden_layers", default=0):
        b.notes.append("the checkpoint's MTP layers are not counted (planner has no Nemotron-H MTP layout)")
    return b.finish(n_exp if "E" in pat else 0, opt(tc, "num_experts_per_tok", default=0) if "E" in pat else 0)


def _mamba2_dims(tc, h: int, prefix: str = "mamba_"):
    heads = need(tc, prefix + "n_heads")
    d_head = opt(tc, prefix + "d_head", default=None)
    d_inner = opt(tc, prefix + "d_ssm", default=None) or (heads * d_head if d_head else
                                                           need(tc, prefix + "expand") * h)
    return d_inner, heads, need(tc, prefix + "d_state"), opt(tc, prefix + "n_groups", default=1), \
        need(tc, prefix + "d_conv")


def falcon_h1(cfg, tc, mt) -> Architecture:
    """src/models/falcon-h1.cpp:32-93: every layer runs a Mamba-2 mixer and attention side by side,
    then a gated MLP; so every layer holds both a KV cache and a recurrent state."""
    b = Builder(cfg, tc, mt, "falcon_h1")
    h, n = b.h, _n_layers(tc)
    d_inner, heads, d_state, groups, d_conv = _mamba2_dims(tc, h)
    n_heads = need(tc, "num_attention_heads")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    head_dim = opt(tc, "head_dim", default=h // n_heads)
    for i in range(n):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        ssm = mamba2_layer(b.add, p, h, d_inner, heads, d_state, groups, d_conv)
        attention(b.add, p, h, n_heads, n_kv, head_dim)
        mlp(b.add, p, h, need(tc, "intermediate_size"))
        b.layer(AttnLayer(kind="full", n_heads=n_heads, n_kv_heads=n_kv, k_head_dim=head_dim, v_head_dim=head_dim,
                          ssm_state_elems=ssm.ssm_state_elems, conv_state_elems=ssm.conv_state_elems), False)
    return b.finish()


def granite_hybrid(cfg, tc, mt) -> Architecture:
    """src/models/granite-hybrid.cpp:41-125: layer_types says mamba or attention per layer; every
    layer has a gated shared MLP (shared_intermediate_size) and, when num_local_experts > 0,
    gated routed experts of intermediate_size."""
    b = Builder(cfg, tc, mt, "granite_hybrid")
    h, n = b.h, _n_layers(tc)
    kinds = _kinds_list(tc, "layer_types", n, {"mamba": "mamba", "attention": "full"})
    d_inner, heads, d_state, groups, d_conv = _mamba2_dims(tc, h)
    n_heads = need(tc, "num_attention_heads")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    head_dim = opt(tc, "head_dim", default=h // n_heads)
    n_exp = opt(tc, "num_local_experts", "num_experts", default=0)
    for i, k in enumerate(kinds):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        if k == "mamba":
            mixer = mamba2_layer(b.add, p, h, d_inner, heads, d_state, groups, d_conv)
        else:
            mixer = attention(b.add, p, h, n_heads, n_kv, head_dim, bias=_bool(tc, "attention_bias"))
        if n_exp:
            experts(b.add, p, h, need(tc, "intermediate_size"), n_exp)
            mlp(b.add, p, h, opt(tc, "shared_intermediate_size", default=0), suffix="_shexp")
        else:
            mlp(b.add, p, h, opt(tc, "shared_intermediate_size", "intermediate_size", default=0))
        b.layer(mixer, bool(n_exp))
    return b.finish(n_exp, opt(tc, "num_experts_per_tok", default=0) if n_exp else 0)


def jamba(cfg, tc, mt) -> Architecture:
    """src/models/jamba.cpp:22-99: attention where i % attn_layer_period == attn_layer_offset, else a
    Mamba-1 mixer (in_proj h -> 2 d_inner, conv, x_proj, dt_proj, A {d_state, d_inner}); gated
    MoE where i % expert_layer_period == expert_layer_offset, else a gated MLP."""
    b = Builder(cfg, tc, mt, "jamba")
    h, n = b.h, _n_layers(tc)
    a_per, a_off = need(tc, "attn_layer_period"), opt(tc, "attn_layer_offset", default=0)
    e_per, e_off = opt(tc, "expert_layer_period", default=1), opt(tc, "expert_layer_offset", default=0)
    if a_per <= 0 or e_per <= 0:
        raise PlannerError("config keys 'attn_layer_period' and 'expert_layer_period' must be positive")
    d_inner = need(tc, "mamba_expand") * h
    d_state, d_conv = need(tc, "mamba_d_state"), need(tc, "mamba_d_conv")
    dt_rank = mamba_dt_rank(tc.get("mamba_dt_rank"), h)
    n_heads = need(tc, "num_attention_heads")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    n_exp = opt(tc, "num_experts", default=0)
    inter = need(tc, "intermediate_size")
    for i in range(n):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        if i % a_per == a_off:
            mixer = attention(b.add, p, h, n_heads, n_kv, h // n_heads)
        else:
            b.add(p + "ssm_in.weight", "other", 2 * d_inner, h)
            b.add(p + "ssm_conv1d.weight", "conv", d_inner, d_conv)
            b.add(p + "ssm_conv1d.bias", "unquantized", 1, d_inner)
            b.add(p + "ssm_x.weight", "other", dt_rank + 2 * d_state, d_inner)
            b.add(p + "ssm_dt.weight", "other", d_inner, dt_rank)
            b.add(p + "ssm_dt.bias", "unquantized", 1, d_inner)
            b.add(p + "ssm_a", "unquantized", d_inner, d_state)
            b.add(p + "ssm_d", "unquantized", 1, d_inner)
            for norm in ("ssm_dt_norm", "ssm_b_norm", "ssm_c_norm"):
                b.add(p + norm + ".weight", "unquantized", 1, dt_rank if norm == "ssm_dt_norm" else d_state)
            b.add(p + "ssm_out.weight", "other", h, d_inner)
            mixer = AttnLayer(kind="mamba", n_heads=1, ssm_state_elems=d_state * d_inner,
                              conv_state_elems=(d_conv - 1) * d_inner)  # src/llama-hparams.cpp:229, :257
        moe = n_exp > 1 and i % e_per == e_off
        if moe:
            experts(b.add, p, h, inter, n_exp)
        else:
            mlp(b.add, p, h, inter)
        b.layer(mixer, moe)
    return b.finish(n_exp if n_exp > 1 else 0, opt(tc, "num_experts_per_tok", default=0) if n_exp > 1 else 0)


def _lfm2_ff(tc) -> int:
    """HF Lfm2MLP: block_ff_dim, times 2/3 when block_auto_adjust_ff_dim, times
    block_ffn_dim_multiplier, rounded up to block_multiple_of."""
    ff = need(tc, "block_ff_dim", "intermediate_size")
    if _bool(tc, "block_auto_adjust_ff_dim"):
        ff = int(2 * ff / 3)
        mult = tc.get("block_ffn_dim_multiplier")
        if mult is not None:
            ff = int(float(mult) * ff)
        step = opt(tc, "block_multiple_of", default=1) or 1
        ff = step * ceil_div(ff, step)
    return ff


def lfm2(cfg, tc, mt) -> Architecture:
    """src/models/lfm2.cpp and lfm2moe.cpp: layer_types says conv or full_attention per layer. A conv
    layer is in_proj h -> 3h, a depthwise conv of conv_L_cache taps, out_proj; an attention layer
    has q/k norms. LFM2-MoE: the first num_dense_layers are dense, the rest MoE (expert bias)."""
    b = Builder(cfg, tc, mt, "lfm2", tied_default=True)  # HF Lfm2Config ties by default; llama.cpp
    # duplicates token_embd as the head when output.weight is absent (src/models/lfm2.cpp:34-37)
    h, n = b.h, _n_layers(tc)
    if "layer_types" not in tc and isinstance(tc.get("full_attn_idxs"), list):  # the first LFM2 releases
        idx = {int(x) for x in tc["full_attn_idxs"]}
        tc = dict(tc, layer_types=["full_attention" if i in idx else "conv" for i in range(n)])
    kinds = _kinds_list(tc, "layer_types", n, {"conv": "conv", "full_attention": "full"})
    l_cache = need(tc, "conv_L_cache")
    n_heads = need(tc, "num_attention_heads")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    n_exp = opt(tc, "num_experts", default=0)
    dense_lead = opt(tc, "num_dense_layers", default=0)
    for i, k in enumerate(kinds):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        if k == "conv":
            b.add(p + "shortconv.conv.weight", "conv", h, l_cache)
            b.add(p + "shortconv.in_proj.weight", "other", 3 * h, h)
            b.add(p + "shortconv.out_proj.weight", "other", h, h)
            mixer = AttnLayer(kind="conv", conv_state_elems=h * (l_cache - 1))  # src/llama-hparams.cpp:214-217
        else:
            mixer = attention(b.add, p, h, n_heads, n_kv, h // n_heads, qk_norm=True)
        moe = n_exp > 1 and i >= dense_lead
        if moe:
            experts(b.add, p, h, need(tc, "moe_intermediate_size"), n_exp, score_bias=_bool(tc, "use_expert_bias"))
        else:
            mlp(b.add, p, h, _lfm2_ff(tc) if mt == "lfm2" else need(tc, "intermediate_size"))
        b.layer(mixer, moe)
    return b.finish(n_exp if n_exp > 1 else 0, opt(tc, "num_experts_per_tok", default=0) if n_exp > 1 else 0)


def mamba2(cfg, tc, mt) -> Architecture:
    """src/models/mamba2.cpp: every layer a Mamba-2 mixer, no attention and no FFN."""
    b = Builder(cfg, tc, mt, "mamba2")
    h, n = b.h, _n_layers(tc)
    heads = need(tc, "num_heads")
    d_inner = heads * need(tc, "head_dim")
    for i in range(n):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.layer(mamba2_layer(b.add, p, h, d_inner, heads, need(tc, "state_size"), opt(tc, "n_groups", default=1),
                             need(tc, "conv_kernel")), False)
    return b.finish()


READERS = {"nemotron_h": nemotron_h, "falcon_h1": falcon_h1, "granite_hybrid": granite_hybrid, "jamba": jamba,
           "lfm2": lfm2, "mamba2": mamba2}
assert set(READERS) == {f.reader for f in FAMILIES.values()} - {"generic"}, "every family reader is defined"
