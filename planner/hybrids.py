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

    def finish(self, n_experts: int = 0, top_k: int = 0, mtp_layers: int = 0) -> Architecture:
        return Architecture(
            model_type=self.mt, hidden_size=self.h, vocab_size=self.vocab,
            max_position_embeddings=native_context(self.tc), tie_word_embeddings=self.tied,
            layers=tuple(self.layers), moe_layers=tuple(self.moe), n_experts=n_experts, n_experts_per_tok=top_k,
            tensors=tuple(self.tensors), notes=tuple(self.notes), family=self.family, mtp_layers=mtp_layers)


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
    shared expert and a score-correction bias); newer configs list the same as layers_block_type.
    A block holds only that one mixer or FFN. MTP layers (num_nextn_predict_layers) are the
    blocks of mtp_layers_block_type after an eh_proj of [embedding; hidden]."""
    b = Builder(cfg, tc, mt, "nemotron_h")
    pat = _nemotron_pattern(tc)
    h = b.h
    d_inner = need(tc, "mamba_num_heads") * need(tc, "mamba_head_dim")
    n_heads, n_kv = need(tc, "num_attention_heads"), opt(tc, "num_key_value_heads", default=None)
    head_dim = opt(tc, "head_dim", "attention_head_dim", default=h // n_heads)
    n_exp = opt(tc, "n_routed_experts", "num_experts", default=0)
    latent = opt(tc, "moe_latent_size", default=0) or h  # Nemotron 3 Super: experts run in a latent width
    mtp = opt(tc, "num_nextn_predict_layers", "mtp_num_hidden_layers", default=0)
    mtp_pat = _nemotron_pattern(tc, "mtp_layers_block_type") if mtp else ""
    blocks = [(i, f"blk.{i}.", c, "text") for i, c in enumerate(pat)]
    # an MTP layer: its own blocks (mtp_layers_block_type) after a projection of [embedding; hidden]
    blocks += [(len(pat) + j, f"mtp.{j}.{k}.", c, "mtp") for j in range(mtp) for k, c in enumerate(mtp_pat)]
    for i, p, c, group in blocks:
        before = len(b.tensors)
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        if group == "mtp":
            _nemotron_block(b, tc, p, c, i, h, d_inner, n_heads, n_kv, head_dim, n_exp, latent)
            b.tensors[before:] = [Tensor(t.name, t.role, t.rows, t.cols, i, t.n_experts, "mtp") for t in b.tensors[before:]]
            continue
        _nemotron_block(b, tc, p, c, i, h, d_inner, n_heads, n_kv, head_dim, n_exp, latent)
    for j in range(mtp):
        i = len(pat) + j
        for name, rows, cols in (("eh_proj.weight", h, 2 * h), ("enorm.weight", 1, h), ("hnorm.weight", 1, h)):
            b.tensors.append(Tensor(f"mtp.{j}.{name}", "other" if rows > 1 else "unquantized", rows, cols, i, 1, "mtp"))
    return b.finish(n_exp if "E" in pat else 0, opt(tc, "num_experts_per_tok", default=0) if "E" in pat else 0, mtp)


NEMOTRON_BLOCKS = {"mamba": "M", "attention": "*", "mlp": "-", "moe": "E"}


def _nemotron_pattern(tc, key: str = "layers_block_type") -> str:
    """One code per block: hybrid_override_pattern ("M*-E..."), or the layers_block_type list
    (mamba / attention / mlp / moe) newer configs write instead; for MTP layers their
    mtp_hybrid_override_pattern / mtp_layers_block_type."""
    pattern_key = "hybrid_override_pattern" if key == "layers_block_type" else "mtp_hybrid_override_pattern"
    if isinstance(tc.get(pattern_key), str):
        pat = tc[pattern_key]
    elif isinstance(tc.get(key), list):
        bad = next((x for x in tc[key] if x not in NEMOTRON_BLOCKS), None)
        if bad is not None:
            raise PlannerError(f"config key {key!r}: unknown block type {bad!r} (known: {', '.join(NEMOTRON_BLOCKS)})")
        pat = "".join(NEMOTRON_BLOCKS[x] for x in tc[key])
    else:
        raise pattern_error(pattern_key, tc.get(pattern_key),
                            f"a string of block codes (M, *, -, E), and there is no {key} list")
    n = opt(tc, "num_hidden_layers", default=None)
    if key == "layers_block_type" and n is not None and n != len(pat):
        raise pattern_error("hybrid_override_pattern", pat, f"a string of {n} block codes (M, *, -, E)")
    return pat


def _nemotron_block(b, tc, p, c, i, h, d_inner, n_heads, n_kv, head_dim, n_exp, latent) -> None:
    """One block's tensors; a decoder block (blk.*) also becomes a layer."""
    layer = b.layer if p.startswith("blk.") else (lambda mixer, moe: None)
    if c == "M":
        layer(mamba2_layer(b.add, p, h, d_inner, need(tc, "mamba_num_heads"), need(tc, "ssm_state_size"),
                           need(tc, "n_groups"), need(tc, "conv_kernel")), False)
    elif c == "*":
        layer(attention(b.add, p, h, n_heads, n_kv or n_heads, head_dim, bias=_bool(tc, "attention_bias")), False)
    elif c == "-":
        mlp(b.add, p, h, need(tc, "intermediate_size"), gated=False)
        layer(AttnLayer(kind="none"), False)
    elif c == "E":
        if not n_exp:
            raise PlannerError("the block pattern has MoE blocks but the config has no n_routed_experts")
        if latent != h:  # Nemotron 3 Super/Ultra: experts run in moe_latent_size (src/models/nemotron-h.cpp:116-117)
            b.add(p + "ffn_latent_down.weight", "other", latent, h)
            b.add(p + "ffn_latent_up.weight", "other", h, latent)
        experts(b.add, p, latent, need(tc, "moe_intermediate_size"), n_exp, gated=False, score_bias=True)
        shared = opt(tc, "moe_shared_expert_intermediate_size", default=0) * max(1, opt(tc, "n_shared_experts",
                                                                                      default=1))
        mlp(b.add, p, h, shared, gated=False, suffix="_shexp")
        layer(AttnLayer(kind="none"), True)
    else:
        raise PlannerError(f"config key 'hybrid_override_pattern': unknown block code {c!r} at layer {i} "
                           "(known: M, *, -, E)")


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


def llama4(cfg, tc, mt) -> Architecture:
    """src/models/llama4.cpp:3-92: MoE on every interleave_moe_layer_step-th layer ((i + 1) % step
    == 0), each with a gated shared expert as wide as a routed one (n_ff_shexp = n_ff_exp,
    :84); the other layers a dense MLP of intermediate_size_mlp. Attention is chunked
    (attention_chunk_size) on 3 of every 4 layers, global on the 4th (load_swa_pattern(ml, 4),
    :19): a chunked layer never looks further back than one chunk, so it caches at most that."""
    from planner.arch import _vision_params

    b = Builder(cfg, tc, mt, "llama4")
    h, n = b.h, _n_layers(tc)
    n_heads = need(tc, "num_attention_heads")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    head_dim = opt(tc, "head_dim", default=h // n_heads)
    step = opt(tc, "interleave_moe_layer_step", default=1) or 1
    n_exp = need(tc, "num_local_experts")
    chunk = opt(tc, "attention_chunk_size", default=None)
    for i in range(n):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        chunked = chunk is not None and i % 4 < 3
        mixer = attention(b.add, p, h, n_heads, n_kv, head_dim, bias=_bool(tc, "attention_bias"),
                          kind="sliding" if chunked else "full", window=chunk if chunked else None)
        moe = (i + 1) % step == 0
        if moe:
            experts(b.add, p, h, need(tc, "intermediate_size"), n_exp)
            mlp(b.add, p, h, need(tc, "intermediate_size"), suffix="_shexp")
        else:
            mlp(b.add, p, h, need(tc, "intermediate_size_mlp", "intermediate_size"))
        b.layer(mixer, moe)
    vision = _vision_params(cfg.get("vision_config"))
    if vision:
        b.add("v.encoder.weight", "other", vision, 1, group="vision")
    return b.finish(n_exp, opt(tc, "num_experts_per_tok", default=1))


def kimi_linear(cfg, tc, mt) -> Architecture:
    """src/models/kimi-linear.cpp:37-130: linear_attn_config lists the (1-based) KDA and MLA layers.
    A KDA layer: q, k, v projections each with a short conv, low-rank forget (f_a, f_b) and output
    gates (g_a, g_b), beta, A, dt bias, a gated norm and o_proj; its state per sequence is
    head_dim^2 x heads, conv 3 x (kernel - 1) x heads x head_dim (src/llama-hparams.cpp:219-247).
    The MLA layers and the MoE (first_k_dense_replace, shared experts) read as DeepSeek's."""
    from planner.arch import _attention, _ffn

    b = Builder(cfg, tc, mt, "kimi_linear")
    h, n = b.h, _n_layers(tc)
    la = tc.get("linear_attn_config")
    if not isinstance(la, dict):
        raise pattern_error("linear_attn_config", la, "an object with kda_layers and full_attn_layers")
    kda = {int(x) - 1 for x in la.get("kda_layers") or []}
    full = {int(x) - 1 for x in la.get("full_attn_layers") or []}
    if kda & full or kda | full != set(range(n)):
        raise PlannerError(f"config key 'linear_attn_config': kda_layers and full_attn_layers must split the {n} layers")
    hd, nh, k = need(la, "head_dim"), need(la, "num_heads"), opt(la, "short_conv_kernel_size", default=4)
    n_heads = need(tc, "num_attention_heads")
    n_exp = opt(tc, "num_experts", "n_routed_experts", default=0)
    moe_inter = need(tc, "moe_intermediate_size")
    shared = opt(tc, "num_shared_experts", "n_shared_experts", default=0) * moe_inter
    first_dense = opt(tc, "first_k_dense_replace", default=0)
    d = nh * hd
    for i in range(n):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        if i in kda:
            for t in ("q", "k", "v"):
                b.add(p + f"attn_{t}.weight", f"attn_{t}", d, h)
                b.add(p + f"ssm_conv1d_{t}.weight", "conv", d, k)
            for g in ("f", "g"):  # forget and output gates, low rank through head_dim
                b.add(p + f"ssm_{g}_a.weight", "other", hd, h)
                b.add(p + f"ssm_{g}_b.weight", "other", d, hd)
            b.add(p + "ssm_beta.weight", "other", nh, h)
            b.add(p + "ssm_a", "unquantized", 1, nh)
            b.add(p + "ssm_dt.bias", "unquantized", 1, d)
            b.add(p + "ssm_norm.weight", "unquantized", 1, hd)
            b.add(p + "attn_output.weight", "attn_output", h, d)
            mixer = AttnLayer(kind="linear", n_heads=nh, ssm_state_elems=hd * hd * nh,
                              conv_state_elems=3 * (k - 1) * d)
        else:
            mixer = _attention(tc, i, "mla", h, n_heads, n_heads, hd, None, False, b.add, p, False, False)
        moe = n_exp > 1 and i >= first_dense
        _ffn(tc, i, moe, h, need(tc, "intermediate_size"), moe_inter, n_exp, shared, False, b.add, p)
        b.layer(mixer, moe)
    return b.finish(n_exp, opt(tc, "num_experts_per_token", "num_experts_per_tok", default=0))


def deepseek_v4(cfg, tc, mt) -> Architecture:
    """src/models/deepseek4.cpp:19-165 and src/llama-kv-cache-dsv4.cpp:1215-1330. Every layer attends
    over a 128-token window of one shared 512-wide K (= V) head, and, where compress_ratios[i] is 4
    (CSA) or 128 (HCA), over one compressed entry per ratio tokens; CSA layers also keep a
    lightning-indexer key (index_head_dim) per entry. Low-rank q (q_lora_rank), grouped low-rank
    output (o_groups x o_lora_rank), hyper-connections (hc_mult streams), attention sinks; MoE on
    every layer, hash-routed (a token -> expert table) on the first num_hash_layers."""
    b = Builder(cfg, tc, mt, "deepseek_v4")
    h, n = b.h, _n_layers(tc)
    ratios = tc.get("compress_ratios")
    mtp = opt(tc, "num_nextn_predict_layers", default=0)
    if not isinstance(ratios, list) or len(ratios) < n + mtp or any(r not in (0, 4, 128) for r in ratios):
        raise pattern_error("compress_ratios", ratios, f"a list of {n + mtp} ratios, each 0, 4 or 128 (the only "
                            "ones llama.cpp loads, src/models/deepseek4.cpp:139)")
    hd, n_heads, q_rank = need(tc, "head_dim"), need(tc, "num_attention_heads"), need(tc, "q_lora_rank")
    o_groups, o_rank, hc = need(tc, "o_groups"), need(tc, "o_lora_rank"), need(tc, "hc_mult")
    idx_heads, idx_dim = need(tc, "index_n_heads"), need(tc, "index_head_dim")
    window = need(tc, "sliding_window")
    n_exp, moe_inter = need(tc, "n_routed_experts"), need(tc, "moe_intermediate_size")
    shared = opt(tc, "n_shared_experts", default=0) * moe_inter
    top_k = need(tc, "num_experts_per_tok")
    hash_layers = opt(tc, "num_hash_layers", default=0)
    hc_mix = (2 + hc) * hc
    b.add("output_hc_head_fn.weight", "unquantized", hc, hc * h)
    b.add("output_hc_head_base.weight", "unquantized", 1, hc)
    for i in range(n + mtp):
        p = f"blk.{i}."
        before = len(b.tensors)
        for norm in ("attn_norm", "ffn_norm", "attn_q_a_norm"):
            b.add(p + norm + ".weight", "unquantized", 1, q_rank if norm == "attn_q_a_norm" else h)
        b.add(p + "attn_sinks.weight", "unquantized", 1, n_heads)
        b.add(p + "attn_q_a.weight", "other", q_rank, h)
        b.add(p + "attn_q_b.weight", "attn_q", n_heads * hd, q_rank)
        b.add(p + "attn_kv.weight", "attn_k", hd, h)
        b.add(p + "attn_kv_norm.weight", "unquantized", 1, hd)
        b.add(p + "attn_output_a.weight", "other", o_groups * o_rank, n_heads * hd // o_groups)
        b.add(p + "attn_output_b.weight", "attn_output", h, o_groups * o_rank)
        for part in ("attn", "ffn"):  # hyper-connection mixers
            b.add(p + f"hc_{part}_fn.weight", "unquantized", hc_mix, hc * h)
            b.add(p + f"hc_{part}_base.weight", "unquantized", 1, hc_mix + 3)
        ratio = ratios[i]
        if ratio:
            coff = 2 if ratio == 4 else 1
            b.add(p + "attn_compressor_wkv.weight", "other", coff * hd, h)
            b.add(p + "attn_compressor_wgate.weight", "other", coff * hd, h)
            b.add(p + "attn_compressor_ape.weight", "unquantized", ratio, coff * hd)
            b.add(p + "attn_compressor_norm.weight", "unquantized", 1, hd)
            if ratio == 4:
                b.add(p + "indexer.proj.weight", "other", idx_heads, h)
                b.add(p + "indexer.attn_q_b.weight", "other", idx_heads * idx_dim, q_rank)
                b.add(p + "indexer_compressor_wkv.weight", "other", 2 * idx_dim, h)
                b.add(p + "indexer_compressor_wgate.weight", "other", 2 * idx_dim, h)
                b.add(p + "indexer_compressor_ape.weight", "unquantized", 4, 2 * idx_dim)
                b.add(p + "indexer_compressor_norm.weight", "unquantized", 1, idx_dim)
        if i < hash_layers:  # token id -> expert ids table (src/models/deepseek4.cpp:148)
            b.add(p + "ffn_gate_tid2eid.weight", "unquantized", b.vocab, top_k)
        else:
            b.add(p + "exp_probs_b.bias", "unquantized", 1, n_exp)
        experts(b.add, p, h, moe_inter, n_exp)
        mlp(b.add, p, h, shared, suffix="_shexp")
        if i >= n:  # NextN: [embedding; hidden] projection and its norms
            b.add(p + "nextn.eh_proj.weight", "other", h, 2 * h)
            b.add(p + "nextn.enorm.weight", "unquantized", 1, h)
            b.add(p + "nextn.hnorm.weight", "unquantized", 1, h)
            b.tensors[before:] = [Tensor(t.name, t.role, t.rows, t.cols, i, t.n_experts, "mtp") for t in b.tensors[before:]]
            continue
        b.layer(AttnLayer(kind="sliding", n_heads=n_heads, n_kv_heads=1, k_head_dim=hd, v_head_dim=0,
                          window_tokens=window, compress_ratio=ratio,
                          compressed_dim=(hd + (idx_dim if ratio == 4 else 0)) if ratio else 0), True)
    return b.finish(n_exp, top_k, mtp)


def minimax_01(cfg, tc, mt) -> Architecture:
    """src/models/minimax-01.cpp:3-60: attn_type_list says per layer 1 = softmax attention (GQA q, k,
    v, o), 0 = lightning (linear) attention over all heads (fused qkv h -> 3 heads x head_dim, an
    output gate, a norm, o); its state per sequence is head_dim^2 x heads (src/llama-hparams.cpp:
    249-254), no conv state. Every layer is MoE (gated experts, no shared expert)."""
    b = Builder(cfg, tc, mt, "minimax_01")
    h, n = b.h, _n_layers(tc)
    types = tc.get("attn_type_list")
    if not isinstance(types, list) or len(types) != n or any(t not in (0, 1) for t in types):
        raise pattern_error("attn_type_list", types, f"a list of {n} entries, 1 (softmax) or 0 (lightning)")
    n_heads, hd = need(tc, "num_attention_heads"), need(tc, "head_dim")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    n_exp = need(tc, "num_local_experts")
    if opt(tc, "shared_intermediate_size", default=0):
        raise PlannerError("config key 'shared_intermediate_size': MiniMax-01 with a shared expert is not a layout "
                           "llama.cpp or planner reads")
    for i, t in enumerate(types):
        p = f"blk.{i}."
        b.add(p + "attn_norm.weight", "unquantized", 1, h)
        b.add(p + "ffn_norm.weight", "unquantized", 1, h)
        if t == 1:
            mixer = attention(b.add, p, h, n_heads, n_kv, hd)
        else:
            b.add(p + "attn_qkv.weight", "attn_qkv", 3 * n_heads * hd, h)
            b.add(p + "attn_gate.weight", "other", n_heads * hd, h)
            b.add(p + "attn_norm_2.weight", "unquantized", 1, n_heads * hd)
            b.add(p + "attn_output.weight", "attn_output", h, n_heads * hd)
            mixer = AttnLayer(kind="linear", n_heads=n_heads, ssm_state_elems=hd * hd * n_heads)
        experts(b.add, p, h, need(tc, "intermediate_size"), n_exp)
        b.layer(mixer, True)
    return b.finish(n_exp, need(tc, "num_experts_per_tok"))


def gemma3n(cfg, tc, mt) -> Architecture:
    """src/models/gemma3n.cpp:3-75. Per layer: attention with q/k norms and a post norm, a gated
    MLP (intermediate_size, per layer where a list), the per-layer-embedding gate and projection
    (hidden_size_per_layer_input), AltUp (altup_num_inputs streams: router, predict and correct
    coefficients) and LAuReL (laurel_rank). Outside: the per-layer embedding table and its
    projection, the AltUp projections. Layers from num_hidden_layers - num_kv_shared_layers on
    reuse an earlier layer's KV (llama.cpp hard-codes the first 20 as the ones with a cache,
    gemma3n.cpp:7, which is that count for E2B and E4B). Sliding where layer_types says, else
    4 of every 5 layers (load_swa_pattern(ml, 5), :5)."""
    b = Builder(cfg, tc, mt, "gemma3n", tied_default=True)
    h, n = b.h, _n_layers(tc)
    n_heads, hd = need(tc, "num_attention_heads"), need(tc, "head_dim")
    n_kv = opt(tc, "num_key_value_heads", default=n_heads)
    ple, n_alt, rank = need(tc, "hidden_size_per_layer_input"), need(tc, "altup_num_inputs"), need(tc, "laurel_rank")
    inter = tc.get("intermediate_size")
    inter = [int(x) for x in inter] if isinstance(inter, list) else [need(tc, "intermediate_size")] * n
    if len(inter) != n:
        raise pattern_error("intermediate_size", tc.get("intermediate_size"), f"one size or a list of {n}")
    if len(set(inter)) > 1:
        b.notes.append("llama.cpp b11434 sizes every layer's MLP as layer 0's (gemma3n.cpp uses n_ff), so a GGUF of "
                       "this model differs from its config")
    if isinstance(tc.get("layer_types"), list):
        kinds = _kinds_list(tc, "layer_types", n, {"sliding_attention": "sliding", "full_attention": "full"})
    else:
        kinds = ["sliding" if i % 5 < 4 else "full" for i in range(n)]
    window = need(tc, "sliding_window")
    first_shared = n - opt(tc, "num_kv_shared_layers", default=0)
    b.add("per_layer_token_embd.weight", "token_embd", need(tc, "vocab_size_per_layer_input", "vocab_size"), n * ple)
    b.add("per_layer_model_proj.weight", "other", n * ple, h)
    b.add("per_layer_proj_norm.weight", "unquantized", 1, ple)
    for name in ("altup_proj.weight", "altup_unembd_proj.weight"):
        b.add(name, "other", h, h * (n_alt - 1))
    for i in range(n):
        p = f"blk.{i}."
        for norm in ("attn_norm", "attn_post_norm", "ffn_norm", "ffn_post_norm", "per_layer_post_norm",
                     "altup_router_norm", "laurel_post_norm"):
            b.add(p + norm + ".weight", "unquantized", 1, h)
        mixer = attention(b.add, p, h, n_heads, n_kv, hd, qk_norm=True, kind=kinds[i],
                          window=window if kinds[i] == "sliding" else None)
        if i >= first_shared:
            mixer = AttnLayer(kind=mixer.kind, n_heads=n_heads, n_kv_heads=n_kv, k_head_dim=hd, v_head_dim=hd,
                              window_tokens=mixer.window_tokens, kv_shared=True)
        mlp(b.add, p, h, inter[i])
        b.add(p + "inp_gate.weight", "other", ple, h)
        b.add(p + "proj.weight", "other", h, ple)
        b.add(p + "altup_correct_coef.weight", "unquantized", n_alt, n_alt)
        b.add(p + "altup_correct_scale.weight", "unquantized", 1, h)
        b.add(p + "altup_predict_coef.weight", "unquantized", n_alt * n_alt, n_alt)
        b.add(p + "altup_router.weight", "other", n_alt, h)
        b.add(p + "laurel_l.weight", "other", rank, h)
        b.add(p + "laurel_r.weight", "other", h, rank)
        b.layer(mixer, False)
    return b.finish()


READERS = {"nemotron_h": nemotron_h, "falcon_h1": falcon_h1, "granite_hybrid": granite_hybrid, "jamba": jamba,
           "lfm2": lfm2, "mamba2": mamba2, "llama4": llama4,
           "kimi_linear": kimi_linear, "deepseek_v4": deepseek_v4,
           "minimax_01": minimax_01, "gemma3n": gemma3n}
assert set(READERS) == {f.reader for f in FAMILIES.values()} - {"generic"}, "every family reader is defined"
