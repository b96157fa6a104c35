"""Architecture: a Hugging Face config.json read into layers and tensors.

Owns the mapping from config fields (HF names, see docs/equations.md#architecture) to
  * per-layer attention geometry: full, sliding-window, MLA, linear (Gated DeltaNet), shared KV;
  * the list of weight tensors with shapes, roles (for quant recipes) and groups
    (text / vision / mtp), from which parameter counts and weight bytes follow.

Pure functions of a config dict; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from planner.errors import PlannerError

# full / sliding / mla: softmax attention with a KV cache. The others hold a constant state per
# sequence instead: linear (Gated DeltaNet, KDA, lightning attention), mamba (Mamba-1/2 SSM),
# conv (LFM2 short convolution); none: a block with no token mixer (Nemotron-H MLP/MoE blocks).
AttnKind = Literal["full", "sliding", "mla", "linear", "mamba", "conv", "none"]
SOFTMAX_KINDS = ("full", "sliding", "mla")
# Roles follow llama.cpp's quantization categories (src/llama-quant.cpp tensor_get_category).
Role = Literal[
    "token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv",
    "ffn_up", "ffn_gate", "ffn_down", "other", "unquantized", "router", "conv",
]
Group = Literal["text", "vision", "audio", "mtp"]


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str  # GGUF-style name, e.g. blk.3.attn_v.weight
    role: Role
    rows: int  # output features (ne[1] in ggml)
    cols: int  # input features (ne[0]; block quants need cols % block == 0)
    layer: int | None = None
    n_experts: int = 1  # >1: a stacked expert tensor
    group: Group = "text"

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.n_experts


@dataclass(frozen=True, slots=True)
class AttnLayer:
    kind: AttnKind
    n_heads: int = 0
    n_kv_heads: int = 0
    k_head_dim: int = 0
    v_head_dim: int = 0
    window_tokens: int | None = None  # sliding layers only
    kv_shared: bool = False  # reuses another layer's cache: allocates none
    mla_cache_dim: int = 0  # MLA: kv_lora_rank + qk_rope_head_dim values per token
    indexer_cache_dim: int = 0  # DeepSeek sparse attention indexer key per token
    ssm_state_elems: int = 0  # linear attention: recurrent state per sequence
    conv_state_elems: int = 0
    # DeepSeek-V4 compressed attention: one cache entry per compress_ratio tokens, of this many
    # values (the compressed K, plus the indexer key on ratio-4 layers), beside the window cache
    compress_ratio: int = 0
    compressed_dim: int = 0

    @property
    def softmax(self) -> bool:
        """Softmax attention over cached tokens (the cost that grows with context)."""
        return self.kind in SOFTMAX_KINDS

    @property
    def v_elems_per_token(self) -> int:
        """The V part of kv_elems_per_token (MLA caches one latent, read as K; DeepSeek-V4 keeps K only)."""
        if self.kv_shared or not self.softmax or self.kind == "mla":
            return 0
        return self.n_kv_heads * self.v_head_dim

    @property
    def kv_elems_per_token(self) -> int:
        """Cached values per token in this layer: K and V for each KV head, or the MLA latent."""
        if self.kv_shared or not self.softmax:
            return 0
        if self.kind == "mla":
            return self.mla_cache_dim + self.indexer_cache_dim
        return self.n_kv_heads * (self.k_head_dim + self.v_head_dim)  # K and V


@dataclass(frozen=True, slots=True)
class Architecture:
    model_type: str
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    layers: tuple[AttnLayer, ...]
    moe_layers: tuple[bool, ...]
    n_experts: int
    n_experts_per_tok: int
    tensors: tuple[Tensor, ...]
    mtp_layers: int = 0
    n_vision_params: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    family: str = ""  # planner.families: the rules this config was read with

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_kinds(self) -> dict[str, int]:
        """How many layers of each kind (full, sliding, mla, linear, mamba, conv, none)."""
        out: dict[str, int] = {}
        for a in self.layers:
            out[a.kind] = out.get(a.kind, 0) + 1
        return out

    def params(self, groups: tuple[Group, ...] = ("text",)) -> int:
        return sum(t.params for t in self.tensors if t.group in groups)

    @property
    def n_heads(self) -> int:
        return max((a.n_heads for a in self.layers), default=0)

    @property
    def gqa_ratio(self) -> int:
        kv = [a.n_kv_heads for a in self.layers if a.kind in ("full", "sliding") and a.n_kv_heads]
        return self.n_heads // max(kv) if kv else 1

    def active_params(self) -> int:
        """Text parameters touched per token: shared weights plus top-k of each expert stack."""
        total = 0
        for t in self.tensors:
            if t.group != "text" or t.role == "token_embd":
                continue
            k = self.n_experts_per_tok if t.n_experts > 1 else 1
            total += t.rows * t.cols * k
        return total


def _get(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


def _need(cfg: dict[str, Any], name: str, *alts: str) -> Any:
    v = _get(cfg, name, *alts)
    if v is None:
        raise PlannerError(f"config has no {name!r} (needed to size the model)")
    return v


MAX_LAYERS = 10_000  # more layers than this are refused, not planned: llama.cpp itself loads at most
# LLAMA_MAX_LAYERS = 512 (src/llama-hparams.h:11, b11434); the largest released models have < 200
MAX_SIZE = 2**53  # any size above this is not a model (and would lose precision as a float)


def _as_int(key: str, v: Any) -> int:
    """A JSON integer (4096 or 4096.0) or a one-line error naming the key."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, float):
        raise PlannerError(f"config key {key!r}: {v!r} is not an integer size")
    if isinstance(v, bool) or not isinstance(v, int):
        raise PlannerError(f"config key {key!r}: expected an integer, got {v!r}")
    if abs(v) > MAX_SIZE:
        raise PlannerError(f"config key {key!r}: {v} is out of range")
    return v


def _int(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of `names` the config sets, as an int; `default` if none is set."""
    n = next((n for n in names if cfg.get(n) is not None), None)
    return default if n is None else _as_int(n, cfg[n])


def _need_int(cfg: dict[str, Any], name: str, *alts: str) -> int:
    """`_need` for sizes: the value as an int."""
    n = next((n for n in (name, *alts) if cfg.get(n) is not None), name)
    return _as_int(n, _need(cfg, name, *alts))


def _bool(cfg: dict[str, Any], *names: str, default: bool = False) -> bool:
    """true/false (also the strings "true"/"false" and 0/1, as some exporters write them)."""
    for n in names:
        v = cfg.get(n)
        if v is None:
            continue
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise PlannerError(f"config key {n!r}: expected true or false, got {v!r}")
    return default


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal checkpoints nest the language model under text_config / llm_config."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = cfg.get(key)
        if isinstance(sub, dict) and ("hidden_size" in sub or "num_hidden_layers" in sub):
            merged = {k: v for k, v in cfg.items() if k not in (key, "vision_config", "audio_config")}
            merged.update(sub)
            return merged
    return cfg


def _layer_kinds(tc: dict[str, Any], n_layers: int) -> list[str]:
    """Per-layer attention kind from the config's own description of it."""
    lt = tc.get("layer_types")
    if isinstance(lt, list) and lt:
        if len(lt) < n_layers:
            raise PlannerError(f"layer_types lists {len(lt)} layers but num_hidden_layers is {n_layers}")
        table = {"full_attention": "full", "sliding_attention": "sliding", "linear_attention": "linear",
                 "chunked_attention": "sliding"}
        bad = next((x for x in lt[:n_layers] if not isinstance(x, str) or x not in table), None)
        if bad is not None:
            raise PlannerError(f"unknown layer type {bad!r} in layer_types")
        return [table[x] for x in lt[:n_layers]]
    if tc.get("kv_lora_rank"):
        return ["mla"] * n_layers
    if tc.get("full_attention_interval"):  # Qwen3-Next / Qwen3.5: every Nth layer is full attention
        n = _int(tc, "full_attention_interval")
        if n <= 0:
            raise PlannerError(f"config key 'full_attention_interval': {n} is not positive")
        return ["full" if (i + 1) % n == 0 else "linear" for i in range(n_layers)]
    if tc.get("sliding_window_pattern") and tc.get("sliding_window"):  # Gemma 3: every Nth is global
        n = _int(tc, "sliding_window_pattern")
        if n <= 0:
            raise PlannerError(f"config key 'sliding_window_pattern': {n} is not positive")
        return ["full" if (i + 1) % n == 0 else "sliding" for i in range(n_layers)]
    if tc.get("sliding_window") and _bool(tc, "use_sliding_window", default=True) and tc.get("model_type") in (
        "mistral", "gemma2"
    ):
        return ["sliding"] * n_layers
    return ["full"] * n_layers


def _moe_layers(tc: dict[str, Any], n_layers: int, n_experts: int) -> list[bool]:
    if n_experts <= 1:
        return [False] * n_layers
    if isinstance(tc.get("moe_layer_freq"), list):
        return [bool(x) for x in tc["moe_layer_freq"][:n_layers]]
    first_dense = _int(tc, "first_k_dense_replace", default=0)
    only = tc.get("mlp_only_layers") or []
    if not isinstance(only, list):
        raise PlannerError(f"config key 'mlp_only_layers': expected a list of layer numbers, got {only!r}")
    only_mlp = {_as_int("mlp_only_layers", x) for x in only}
    step = _int(tc, "decoder_sparse_step", "moe_layer_freq", default=1) or 1
    return [i >= first_dense and i not in only_mlp and (i + 1) % step == 0 for i in range(n_layers)]


# MoE routers with a learned score-correction bias (HF e_score_correction_bias, noaux_tc routing)
SCORE_BIAS_TYPES = ("deepseek_v3", "kimi_k2", "glm_moe_dsa", "mimo_v2")


def _vision_params(vc: dict[str, Any] | None) -> int:
    """ViT encoder size from vision_config: blocks of (4 h^2 attention + 2 h i MLP), patch
    embedding and merger. An estimate (biases and norms omitted, <1% of the encoder)."""
    if not isinstance(vc, dict) or not vc:
        return 0
    h = _int(vc, "hidden_size", "width", "embed_dim")
    depth = _int(vc, "depth", "num_hidden_layers", "num_layers")
    inter = _int(vc, "intermediate_size", "mlp_dim", default=4 * (h or 0))
    if not h or not depth:
        return 0
    patch = _int(vc, "patch_size", default=14)
    temporal = _int(vc, "temporal_patch_size", default=1)
    channels = _int(vc, "in_channels", "num_channels", default=3)
    blocks = depth * (4 * h * h + 2 * h * inter)  # q,k,v,o + up,down
    patch_embed = channels * patch * patch * temporal * h
    merge = _int(vc, "spatial_merge_size", default=1)
    out_h = _int(vc, "out_hidden_size", "projection_dim", default=None)
    merger = 0
    if out_h:
        m = h * merge * merge
        merger = m * m + m * out_h  # Qwen-VL style merger MLP: (h m^2)^2 + (h m^2) out
    pos = _int(vc, "num_position_embeddings", default=0) * h
    return blocks + patch_embed + merger + pos


def parse_config(cfg: dict[str, Any]) -> Architecture:
    """Read a Hugging Face config.json (dict) into an Architecture."""
    if not isinstance(cfg, dict):
        raise PlannerError("config is not a JSON object")
    tc = text_config(cfg)
    mt = tc.get("model_type", cfg.get("model_type", "unknown"))
    if not isinstance(mt, str):
        raise PlannerError(f"config key 'model_type': expected a string, got {mt!r}")
    tc = dict(tc, model_type=mt) if "model_type" in tc else tc
    from planner.families import family_of

    fam = family_of(mt, cfg.get("architectures"), tc)
    try:
        if fam.reader != "generic":
            from planner.hybrids import READERS

            a = READERS[fam.reader](cfg, tc, mt)
        else:
            a = _parse(cfg, tc, mt, fam.id)
        return replace(a, notes=a.notes + fam.approximations) if fam.approximations else a
    except PlannerError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError) as e:
        # a value of a type the keys above do not check (a list where a number goes, ...)
        raise PlannerError(f"config has a value planner cannot read ({type(e).__name__}: {e})") from None


def _positive(cfg: dict[str, Any], value: int, *names: str) -> int:
    if value <= 0:
        key = next((n for n in names if cfg.get(n) is not None), names[0])
        raise PlannerError(f"config key {key!r}: {value} is not a positive size")
    return value


# Fields configs use for the trained context, most specific first (HF names: Llama/Qwen
# max_position_embeddings, MPT/Falcon max_seq_len / max_sequence_length, ChatGLM seq_length,
# GPT-2 n_positions, tokenizer-style model_max_length)
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "max_seq_len", "seq_length", "n_positions",
                "model_max_length")
DEFAULT_CONTEXT = 4096  # configs that state no context at all (noted in docs/data.md)


def native_context(tc: dict[str, Any]) -> int:
    """The trained context the config states (the first of CONTEXT_KEYS it sets). A rope_scaling
    extension (YaRN) is not added: llama.cpp's n_ctx_train is this value too."""
    return _int(tc, *CONTEXT_KEYS, default=DEFAULT_CONTEXT)


def _parse(cfg: dict[str, Any], tc: dict[str, Any], mt: str, family: str = "") -> Architecture:
    h = _positive(tc, _need_int(tc, "hidden_size", "d_model", "n_embd"), "hidden_size", "d_model", "n_embd")
    n_layers = _positive(tc, _need_int(tc, "num_hidden_layers", "n_layer", "num_layers"), "num_hidden_layers",
                         "n_layer", "num_layers")
    if n_layers > MAX_LAYERS:
        raise PlannerError(f"config key 'num_hidden_layers': {n_layers:,} layers is more than planner plans "
                           f"({MAX_LAYERS:,}; llama.cpp loads at most 512)")
    n_heads = _positive(tc, _need_int(tc, "num_attention_heads", "n_head"), "num_attention_heads", "n_head")
    n_kv = _positive(tc, _int(tc, "num_key_value_heads", default=n_heads), "num_key_value_heads")
    head_dim = _positive(tc, _int(tc, "head_dim", default=h // n_heads), "head_dim")
    vocab = _positive(tc, _need_int(tc, "vocab_size"), "vocab_size")
    max_pos = native_context(tc)
    tied = _bool(tc, "tie_word_embeddings", default=_bool(cfg, "tie_word_embeddings"))
    inter = _int(tc, "intermediate_size", "ffn_hidden_size", default=4 * h)
    n_experts = _int(tc, "num_experts", "n_routed_experts", "num_local_experts", default=0)
    if not _bool(tc, "enable_moe_block", default=True):
        n_experts = 0
    top_k = _int(tc, "num_experts_per_tok", "top_k_experts", "moe_topk", default=0)
    moe_inter = _int(tc, "moe_intermediate_size", default=inter)
    n_shared = _int(tc, "n_shared_experts", "num_shared_experts", default=0)
    shared_inter = _int(tc, "shared_expert_intermediate_size", default=0)
    if shared_inter == 0 and n_shared:
        shared_inter = n_shared * moe_inter
    kinds = _layer_kinds(tc, n_layers)
    moe = _moe_layers(tc, n_layers, n_experts)
    window = _int(tc, "sliding_window", default=None)
    n_shared_kv = _int(tc, "num_kv_shared_layers", default=0)
    qkv_bias = _bool(tc, "attention_bias", "qkv_bias", default=tc.get("model_type") in ("qwen2", "qwen2_moe"))
    out_gate = _bool(tc, "attn_output_gate")
    gemma4 = str(tc.get("model_type", "")).startswith("gemma4")
    notes: list[str] = []

    layers: list[AttnLayer] = []
    tensors: list[Tensor] = []

    def add(name: str, role: Role, rows: int, cols: int, layer: int | None = None, n_experts: int = 1,
            group: Group = "text") -> None:
        if rows > 0 and cols > 0:
            if layer is None and name.startswith("blk."):
                layer = int(name.split(".")[1])
            tensors.append(Tensor(name, role, rows, cols, layer, n_experts, group))

    add("token_embd.weight", "token_embd", vocab, h)
    if not tied:
        add("output.weight", "output", vocab, h)
    add("output_norm.weight", "unquantized", 1, h)

    for i in range(n_layers):
        kind = kinds[i]
        p = f"blk.{i}."
        shared = n_shared_kv > 0 and i >= n_layers - n_shared_kv
        layer = _attention(tc, i, kind, h, n_heads, n_kv, head_dim, window, shared, add, p, qkv_bias, out_gate)
        layers.append(layer)
        _ffn(tc, i, moe[i], h, inter, moe_inter, n_experts, shared_inter, shared, add, p)
        add(p + "attn_norm.weight", "unquantized", 1, h)
        for norm in _block_norms(tc):
            add(p + norm, "unquantized", 1, h)
        if gemma4:  # the learned per-layer output scalar (layer_scalar; src/models/gemma4.cpp:89)
            add(p + "layer_output_scale.weight", "unquantized", 1, 1)

    if gemma4 and "full" in kinds:  # proportional-RoPE frequency factors of the global layers, one
        # table shared by all of them (conversion/gemma.py generate_extra_tensors; src/models/gemma4.cpp:94-98)
        add("rope_freqs.weight", "unquantized", 1, _int(tc, "global_head_dim", default=head_dim) // 2)
    _per_layer_embeddings(tc, n_layers, h, add)
    mtp = _int(tc, "mtp_num_hidden_layers", "num_nextn_predict_layers", "num_mtp_layers", default=0)
    if mtp > MAX_LAYERS:
        raise PlannerError(f"config: {mtp:,} MTP layers is more than planner plans ({MAX_LAYERS:,})")
    for j in range(mtp):
        # An MTP block is one more decoder layer (shaped like the last one) plus a projection
        # of [embedding; hidden] (2h -> h). It shares the token embedding and output head.
        i = n_layers + j
        p = f"mtp.{j}."
        before = len(tensors)
        _attention(tc, n_layers - 1, kinds[-1] if kinds[-1] != "linear" else "full", h, n_heads, n_kv, head_dim,
                   window, False, add, p, qkv_bias, out_gate)
        _ffn(tc, n_layers - 1, moe[-1], h, inter, moe_inter, n_experts, shared_inter, False, add, p)
        add(p + "eh_proj.weight", "other", h, 2 * h)
        tensors[before:] = [Tensor(t.name, t.role, t.rows, t.cols, i, t.n_experts, "mtp") for t in tensors[before:]]

    vision = _vision_params(cfg.get("vision_config"))
    if vision:
        add("v.encoder.weight", "other", vision, 1, group="vision")

    return Architecture(
        model_type=mt,
        hidden_size=h,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tied,
        layers=tuple(layers),
        moe_layers=tuple(moe),
        n_experts=n_experts,
        n_experts_per_tok=top_k,
        tensors=tuple(tensors),
        mtp_layers=mtp,
        n_vision_params=vision,
        notes=tuple(notes),
        family=family,
    )


def _attention(tc, i, kind, h, n_heads, n_kv, head_dim, window, shared, add, p, qkv_bias, out_gate) -> AttnLayer:
    if kind == "linear":  # Gated DeltaNet (Qwen3-Next, Qwen3.5/3.6)
        nk = _need_int(tc, "linear_num_key_heads")
        nv = _need_int(tc, "linear_num_value_heads")
        dk = _need_int(tc, "linear_key_head_dim")
        dv = _need_int(tc, "linear_value_head_dim")
        kernel = _int(tc, "linear_conv_kernel_dim", default=4)
        conv_dim = 2 * nk * dk + nv * dv  # q, k and v go through the short convolution
        add(p + "attn_qkv.weight", "attn_qkv", conv_dim, h)
        add(p + "attn_gate.weight", "other", nv * dv, h)  # z gate
        if str(tc.get("model_type", "")).startswith("qwen3_next"):  # llama.cpp: one fused beta/alpha projection
            add(p + "ssm_ba.weight", "other", 2 * nv, h)
        else:
            add(p + "ssm_beta.weight", "other", nv, h)
            add(p + "ssm_alpha.weight", "other", nv, h)
        add(p + "ssm_conv1d.weight", "conv", conv_dim, kernel)
        add(p + "ssm_a", "unquantized", 1, nv)
        add(p + "ssm_dt.bias", "unquantized", 1, nv)
        add(p + "ssm_norm.weight", "unquantized", 1, dv)
        add(p + "ssm_out.weight", "other", h, nv * dv)
        return AttnLayer(
            kind="linear", n_heads=nv,
            ssm_state_elems=nv * dk * dv,  # one dk x dv state matrix per value head
            conv_state_elems=(kernel - 1) * conv_dim,  # last kernel-1 inputs of the convolution
        )
    if kind == "mla":  # DeepSeek-V3 / Kimi / GLM-5 multi-head latent attention
        q_rank = _int(tc, "q_lora_rank")
        kv_rank = _need_int(tc, "kv_lora_rank")
        rope = _need_int(tc, "qk_rope_head_dim")
        nope = _need_int(tc, "qk_nope_head_dim")
        v_dim = _need_int(tc, "v_head_dim")
        if q_rank:
            add(p + "attn_q_a.weight", "other", int(q_rank), h)
            add(p + "attn_q_a_norm.weight", "unquantized", 1, int(q_rank))
            # "other" to llama.cpp's quantizer: its attn_q category matches attn_q.weight only (llama-quant.cpp:138-140)
            add(p + "attn_q_b.weight", "other", n_heads * (nope + rope), int(q_rank))
        else:
            add(p + "attn_q.weight", "attn_q", n_heads * (nope + rope), h)
        add(p + "attn_kv_a_mqa.weight", "other", kv_rank + rope, h)
        add(p + "attn_kv_a_norm.weight", "unquantized", 1, kv_rank)
        # kv_b_proj split per head as llama.cpp stores it (conversion/deepseek.py:433-449; loaded as
        # {nope, kv_rank, n_heads} and {kv_rank, v_dim, n_heads}, src/models/deepseek2.cpp:115-116);
        # llama.cpp quantizes them as "other" (not attn_v: src/llama-quant.cpp:119-153)
        add(p + "attn_k_b.weight", "other", n_heads * kv_rank, nope)
        add(p + "attn_v_b.weight", "other", n_heads * v_dim, kv_rank)
        add(p + "attn_output.weight", "attn_output", h, n_heads * v_dim)
        idx_dim = 0
        if tc.get("index_n_heads"):  # DSA lightning indexer (GLM-5, DeepSeek-V3.2); src/models/glm-dsa.cpp:143-147
            ih, idim = _int(tc, "index_n_heads"), _need_int(tc, "index_head_dim")
            add(p + "indexer.attn_q_b.weight", "other", ih * idim, int(q_rank or h))  # wq_b
            add(p + "indexer.attn_k.weight", "other", idim, h)  # wk
            add(p + "indexer.proj.weight", "other", ih, h)  # weights_proj
            add(p + "indexer.k_norm.weight", "unquantized", 1, idim)  # k_norm is a LayerNorm
            add(p + "indexer.k_norm.bias", "unquantized", 1, idim)
            idx_dim = idim
        return AttnLayer(kind="mla", n_heads=n_heads, n_kv_heads=1, k_head_dim=nope + rope, v_head_dim=v_dim,
                         mla_cache_dim=kv_rank + rope, indexer_cache_dim=idx_dim)

    # full or sliding softmax attention, with per-layer geometry where the config has it
    kv, k_dim, v_dim, win = n_kv, head_dim, head_dim, None
    if kind == "sliding":
        if not window:
            raise PlannerError("config has sliding layers but no sliding_window")
        win = int(window)
        kv = _int(tc, "swa_num_key_value_heads", default=kv)
        k_dim = _int(tc, "swa_head_dim", default=k_dim)
        v_dim = _int(tc, "swa_v_head_dim", "v_head_dim", default=k_dim)
    else:
        kv = _int(tc, "num_global_key_value_heads", default=kv)
        k_dim = _int(tc, "global_head_dim", default=k_dim)
        v_dim = _int(tc, "v_head_dim", default=k_dim) if not tc.get("global_head_dim") else k_dim
    q_out = n_heads * k_dim * (2 if out_gate else 1)  # gated attention: q_proj also emits the gate
    add(p + "attn_q.weight", "attn_q", q_out, h)
    add(p + "attn_k.weight", "attn_k", kv * k_dim, h)
    k_eq_v = _bool(tc, "attention_k_eq_v") and kind == "full"
    if not k_eq_v:  # Gemma 4 global layers reuse the K projection as V
        add(p + "attn_v.weight", "attn_v", kv * v_dim, h)
    add(p + "attn_output.weight", "attn_output", h, n_heads * v_dim)
    if qkv_bias:
        add(p + "attn_q.bias", "unquantized", 1, q_out)
        add(p + "attn_k.bias", "unquantized", 1, kv * k_dim)
        if not k_eq_v:
            add(p + "attn_v.bias", "unquantized", 1, kv * v_dim)
        if tc.get("model_type") == "gpt_oss":  # o_proj has a bias too
            add(p + "attn_output.bias", "unquantized", 1, h)
    if tc.get("model_type") == "gpt_oss":  # one learned attention-sink logit per head
        add(p + "attn_sinks.weight", "unquantized", 1, n_heads)
    if tc.get("model_type", "").startswith(("qwen3", "gemma")):
        add(p + "attn_q_norm.weight", "unquantized", 1, k_dim)
        add(p + "attn_k_norm.weight", "unquantized", 1, k_dim)
    return AttnLayer(kind=kind, n_heads=n_heads, n_kv_heads=kv, k_head_dim=k_dim, v_head_dim=v_dim,
                     window_tokens=win, kv_shared=shared)


def _ffn(tc, i, is_moe, h, inter, moe_inter, n_experts, shared_inter, kv_shared, add, p) -> None:
    dense_inter = inter
    if kv_shared and _bool(tc, "use_double_wide_mlp"):  # Gemma 4 E2B: double-wide MLP on shared-KV layers
        dense_inter = 2 * inter
    has_dense = not is_moe or _bool(tc, "enable_moe_block")  # Gemma 4 26B: dense MLP beside the experts
    if has_dense:
        add(p + "ffn_gate.weight", "ffn_gate", dense_inter, h)
        add(p + "ffn_up.weight", "ffn_up", dense_inter, h)
        add(p + "ffn_down.weight", "ffn_down", h, dense_inter)
    if is_moe:
        add(p + "ffn_gate_inp.weight", "router", n_experts, h)
        if tc.get("model_type") in SCORE_BIAS_TYPES:  # e_score_correction_bias; src/models/deepseek2.cpp:131
            add(p + "exp_probs_b.bias", "unquantized", 1, n_experts)
        add(p + "ffn_gate_exps.weight", "ffn_gate", moe_inter, h, n_experts=n_experts)
        add(p + "ffn_up_exps.weight", "ffn_up", moe_inter, h, n_experts=n_experts)
        add(p + "ffn_down_exps.weight", "ffn_down", h, moe_inter, n_experts=n_experts)
        if tc.get("model_type") == "gpt_oss":  # router and expert biases
            add(p + "ffn_gate_inp.bias", "unquantized", 1, n_experts)
            add(p + "ffn_gate_exps.bias", "unquantized", n_experts, moe_inter)
            add(p + "ffn_up_exps.bias", "unquantized", n_experts, moe_inter)
            add(p + "ffn_down_exps.bias", "unquantized", n_experts, h)
        if str(tc.get("model_type", "")).startswith("gemma4"):  # router scales and the extra norms of the
            # expert branch; src/models/gemma4.cpp:108-113, conversion/gemma.py Gemma4Model.modify_tensors
            add(p + "ffn_gate_inp.scale", "unquantized", 1, h)  # router.scale
            add(p + "ffn_down_exps.scale", "unquantized", 1, n_experts)  # router.per_expert_scale
            for norm in ("pre_ffw_norm_2", "post_ffw_norm_1", "post_ffw_norm_2"):
                add(p + norm + ".weight", "unquantized", 1, h)
        if shared_inter:
            add(p + "ffn_gate_shexp.weight", "ffn_gate", shared_inter, h)
            add(p + "ffn_up_shexp.weight", "ffn_up", shared_inter, h)
            add(p + "ffn_down_shexp.weight", "ffn_down", h, shared_inter)
            if tc.get("model_type", "").startswith(("qwen3_next", "qwen3_5", "qwen2_moe")):
                add(p + "ffn_gate_inp_shexp.weight", "router", 1, h)


def _block_norms(tc: dict[str, Any]) -> tuple[str, ...]:
    """The per-block norms besides attn_norm, named as llama.cpp names them (src/llama-arch.cpp):
    the pre-FFN norm is `post_attention_norm` in gpt-oss and the Qwen3-Next/3.5 hybrids; Gemma
    also normalises each sub-block's output (post_attention_norm, post_ffw_norm)."""
    mt = str(tc.get("model_type", ""))
    if mt.startswith("gemma"):
        return ("post_attention_norm.weight", "ffn_norm.weight", "post_ffw_norm.weight")
    if mt == "gpt_oss" or mt.startswith(("qwen3_next", "qwen3_5")):
        return ("post_attention_norm.weight",)
    return ("ffn_norm.weight",)


def _per_layer_embeddings(tc, n_layers, h, add) -> None:
    """Gemma 3n/4 'E' models: a per-layer embedding table looked up per token (PLE)."""
    ple = _int(tc, "hidden_size_per_layer_input")
    if not ple:
        return
    vocab_ple = _int(tc, "vocab_size_per_layer_input", "vocab_size")
    add("per_layer_token_embd.weight", "token_embd", vocab_ple, n_layers * int(ple))
    add("per_layer_model_proj.weight", "unquantized", n_layers * int(ple), h)
    add("per_layer_proj_norm.weight", "unquantized", 1, int(ple))  # src/models/gemma4.cpp:62
    for i in range(n_layers):
        add(f"blk.{i}.inp_gate.weight", "other", int(ple), h)
        add(f"blk.{i}.proj.weight", "other", h, int(ple))
        add(f"blk.{i}.post_norm.weight", "unquantized", 1, h)  # src/models/gemma4.cpp:137
