"""Synthetic GGUF files: a catalog model written in the exact layout llama.cpp loads, with random
weights, so llama.cpp's own benchmarks can time it without downloading the model.

Owns (see docs/calibration.md#synthetic-gguf-files):
  * the GGUF metadata a model needs in llama.cpp b11434 (`general.architecture`, the
    `{arch}.*` hyperparameters its loader reads, the `test` tokenizer of llama.cpp's own
    tests/test-llama-archs.cpp);
  * the tensors: exactly planner's weight plan (planner.quant.assign_types over
    planner.arch's tensor list) — names, ggml shapes and storage types — so the file's bytes
    are the plan's bytes, and llama.cpp, which refuses a missing, extra or misshapen tensor,
    checks the plan;
  * random tensor data: speed does not depend on weight values, but NaNs would (MoE routing),
    so every block's scale fields hold finite values sized for weights of RMS ~0.02.

The tokenizer, rope base and norm epsilon do not change the work per token; they are set to
values llama.cpp accepts, not the model's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner import units
from planner.arch import Architecture, text_config
from planner.catalog import Catalog, ModelCard
from planner.deployment import WeightTensor, recipe_weights
from planner.errors import PlannerError

GGUF_ALIGNMENT = 32  # bytes: gguf's default general.alignment (gguf-py GGUF_DEFAULT_ALIGNMENT)
TARGET_RMS = 0.02  # RMS of the random weights: keeps activations finite through every layer
CHUNK_BYTES = 64 * units.MiB  # tensor data is written in pieces of this size
# Offsets of the fp16 scale fields in each block (ggml/src/ggml-common.h block_* structs); MXFP4
# has one E8M0 exponent byte at offset 0 instead.
FP16_SCALES = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,), "IQ1_S": (0,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,),
}


@dataclass(frozen=True)
class GgufTensor:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    ggml_type: str
    nbytes: int


@dataclass(frozen=True)
class GgufLayout:
    arch: str  # llama.cpp general.architecture
    kv: dict[str, Any]
    tensors: tuple[GgufTensor, ...]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


# --------------------------------------------------------------------------------------------
# metadata


def _rope_base(tc: dict[str, Any]) -> float:
    rp = tc.get("rope_parameters")
    if isinstance(rp, dict) and rp.get("rope_theta"):
        return float(rp["rope_theta"])
    return float(tc.get("rope_theta") or 10000.0)


def _common(a: Architecture, tc: dict[str, Any], arch: str) -> dict[str, Any]:
    full = next((x for x in a.layers if x.kind in ("full", "sliding", "mla")), a.layers[0])
    kv = {
        f"{arch}.context_length": a.max_position_embeddings,
        f"{arch}.embedding_length": a.hidden_size,
        f"{arch}.block_count": a.n_layers + _loaded_mtp(a, arch),
        f"{arch}.feed_forward_length": int(tc.get("intermediate_size") or 4 * a.hidden_size),
        f"{arch}.attention.head_count": full.n_heads,
        f"{arch}.attention.head_count_kv": full.n_kv_heads or full.n_heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(tc.get("rms_norm_eps") or 1e-6),
        f"{arch}.rope.freq_base": _rope_base(tc),
        f"{arch}.vocab_size": a.vocab_size,
    }
    if full.kind != "mla" and full.k_head_dim:
        kv[f"{arch}.attention.key_length"] = full.k_head_dim
        kv[f"{arch}.attention.value_length"] = full.v_head_dim
    if a.n_experts > 1:
        kv[f"{arch}.expert_count"] = a.n_experts
        kv[f"{arch}.expert_used_count"] = a.n_experts_per_tok
        kv[f"{arch}.expert_feed_forward_length"] = int(tc.get("moe_intermediate_size") or tc["intermediate_size"])
    return kv


def _loaded_mtp(a: Architecture, arch: str) -> int:
    """MTP/NextN blocks llama.cpp counts in block_count (and loads) for this architecture."""
    return a.mtp_layers if arch in MTP_IN_BLOCK_COUNT else 0


MTP_IN_BLOCK_COUNT: set[str] = set()


def _plain(a, tc, arch):
    return _common(a, tc, arch)


def _swa_flags(a: Architecture) -> list[bool]:
    """`{arch}.attention.sliding_window_pattern` as a per-layer array (1 = sliding; llama.cpp
    src/llama-hparams.cpp set_swa_pattern copies an array verbatim)."""
    return [x.kind == "sliding" for x in a.layers]


def _gpt_oss(a, tc, arch):
    """src/models/openai-moe.cpp:3-20: sliding_window and expert_feed_forward_length required."""
    kv = _common(a, tc, arch)
    kv[f"{arch}.attention.sliding_window"] = int(tc["sliding_window"])
    kv[f"{arch}.attention.sliding_window_pattern"] = _swa_flags(a)
    return kv


def _gated_deltanet(a, tc, arch):
    """src/models/qwen35.cpp:4-31 (qwen35moe, qwen3next alike): the five ssm keys are required and
    map to HF fields as conversion/qwen.py does; linear layers from full_attention_interval."""
    kv = _common(a, tc, arch)
    full = next(x for x in a.layers if x.kind == "full")
    rot = int(full.k_head_dim * float(tc.get("partial_rotary_factor") or 1.0))
    kv[f"{arch}.rope.dimension_count"] = rot
    kv[f"{arch}.ssm.conv_kernel"] = int(tc.get("linear_conv_kernel_dim") or 4)
    kv[f"{arch}.ssm.state_size"] = int(tc["linear_key_head_dim"])
    kv[f"{arch}.ssm.group_count"] = int(tc["linear_num_key_heads"])
    kv[f"{arch}.ssm.time_step_rank"] = int(tc["linear_num_value_heads"])
    kv[f"{arch}.ssm.inner_size"] = int(tc["linear_num_value_heads"]) * int(tc["linear_value_head_dim"])
    kv[f"{arch}.attention.recurrent_layers"] = [x.kind == "linear" for x in a.layers]
    if arch != "qwen3next":  # M-RoPE sections (4 entries, required); pairs summing to rot / 2
        rp = tc.get("rope_parameters") if isinstance(tc.get("rope_parameters"), dict) else {}
        sec = list(rp.get("mrope_section") or tc.get("mrope_section") or [11, 11, 10])[:4]
        kv[f"{arch}.rope.dimension_sections"] = sec + [0] * (4 - len(sec))
    if a.n_experts > 1:
        kv[f"{arch}.expert_shared_feed_forward_length"] = int(tc.get("shared_expert_intermediate_size") or 0)
    return kv


def _gemma3(a, tc, arch):
    """src/models/gemma3.cpp:3-32: sliding_window switches SWA on; the per-layer pattern is written
    as an array (overrides the default period of 6); rms eps required."""
    kv = _common(a, tc, arch)
    if any(x.kind == "sliding" for x in a.layers):
        kv[f"{arch}.attention.sliding_window"] = int(tc["sliding_window"])
        kv[f"{arch}.attention.sliding_window_pattern"] = _swa_flags(a)
    if tc.get("final_logit_softcapping"):
        kv[f"{arch}.final_logit_softcapping"] = float(tc["final_logit_softcapping"])
    return kv


def _per_layer(a: Architecture, key: Callable[[int], int]) -> list[int] | int:
    """A per-layer u32 key: a scalar where all layers agree, else an array of block_count entries
    (src/llama-model-loader.cpp get_key_or_arr)."""
    vals = [key(i) for i in range(a.n_layers)]
    return vals[0] if len(set(vals)) == 1 else vals


def _gemma4(a, tc, arch):
    """src/models/gemma4.cpp:4-35 (keys as conversion/gemma.py Gemma4Model.set_gguf_parameters writes
    them): the SWA pattern array, sliding_window, rms eps, embedding_length_per_layer_input and the
    SWA head dims are required; global and SWA layers differ in head dim and KV heads (per-layer
    head_count_kv), and double-wide MLP layers in feed_forward_length."""
    kv = _common(a, tc, arch)
    full = next((x for x in a.layers if x.kind == "full"), None)
    swa = next((x for x in a.layers if x.kind == "sliding"), None)
    if swa is None:
        raise PlannerError("gemma4: config has no sliding layers; llama.cpp's loader needs key_length_swa")
    hd_full = full.k_head_dim if full else swa.k_head_dim
    kv[f"{arch}.attention.sliding_window_pattern"] = _swa_flags(a)
    kv[f"{arch}.attention.sliding_window"] = int(tc["sliding_window"])
    kv[f"{arch}.attention.shared_kv_layers"] = sum(x.kv_shared for x in a.layers)
    kv[f"{arch}.embedding_length_per_layer_input"] = int(tc.get("hidden_size_per_layer_input") or 0)
    kv[f"{arch}.attention.key_length"] = kv[f"{arch}.attention.value_length"] = hd_full
    kv[f"{arch}.attention.key_length_swa"] = kv[f"{arch}.attention.value_length_swa"] = swa.k_head_dim
    kv[f"{arch}.rope.dimension_count"] = hd_full  # proportional RoPE goes through rope_freqs
    kv[f"{arch}.rope.dimension_count_swa"] = swa.k_head_dim
    kv[f"{arch}.attention.head_count_kv"] = _per_layer(a, lambda i: a.layers[i].n_kv_heads)
    ffn = {t.layer: t.rows for t in a.tensors if t.name.endswith(".ffn_up.weight") and t.group == "text"}
    kv[f"{arch}.feed_forward_length"] = _per_layer(a, lambda i: ffn[i])
    if tc.get("final_logit_softcapping"):
        kv[f"{arch}.final_logit_softcapping"] = float(tc["final_logit_softcapping"])
    return kv


def _mla(a, tc, arch):
    """src/models/deepseek2.cpp:3-53 and glm-dsa.cpp:29-72, with the MLA geometry written as
    conversion/deepseek.py:319-374 does (one KV head of kv_lora_rank + rope values)."""
    kv = _common(a, tc, arch)
    kv_rank, rope = int(tc["kv_lora_rank"]), int(tc["qk_rope_head_dim"])
    kv[f"{arch}.attention.head_count_kv"] = 1
    kv[f"{arch}.attention.key_length"] = kv_rank + rope
    kv[f"{arch}.attention.value_length"] = kv_rank
    kv[f"{arch}.attention.key_length_mla"] = int(tc["qk_nope_head_dim"]) + rope
    kv[f"{arch}.attention.value_length_mla"] = int(tc["v_head_dim"])
    kv[f"{arch}.rope.dimension_count"] = rope
    kv[f"{arch}.attention.q_lora_rank"] = int(tc.get("q_lora_rank") or 0)
    kv[f"{arch}.attention.kv_lora_rank"] = kv_rank
    lead = next((i for i, m in enumerate(a.moe_layers) if m), a.n_layers)
    if not all(a.moe_layers[lead:]):
        raise PlannerError(f"{arch}: llama.cpp takes dense FFN layers only before the first MoE layer "
                           "(leading_dense_block_count); this config interleaves them")
    kv[f"{arch}.leading_dense_block_count"] = lead
    kv[f"{arch}.expert_feed_forward_length"] = int(tc.get("moe_intermediate_size") or tc["intermediate_size"])
    kv[f"{arch}.expert_shared_count"] = int(tc.get("n_shared_experts") or 0)
    if tc.get("routed_scaling_factor") is not None:
        kv[f"{arch}.expert_weights_scale"] = float(tc["routed_scaling_factor"])
    if tc.get("norm_topk_prob"):
        kv[f"{arch}.expert_weights_norm"] = True
    # DeepSeek-V3, Kimi-K2 and GLM-5 route with sigmoid scores (HF scoring_func; llama_expert_gating_func_type 2)
    scoring = tc.get("scoring_func") or ("sigmoid" if tc.get("model_type") in SIGMOID_ROUTERS else "softmax")
    kv[f"{arch}.expert_gating_func"] = 2 if scoring == "sigmoid" else 1
    if int(tc.get("n_group") or 1) > 1 and tc.get("topk_group"):
        kv[f"{arch}.expert_group_count"] = int(tc["n_group"])
        kv[f"{arch}.expert_group_used_count"] = int(tc["topk_group"])
    if tc.get("index_n_heads"):  # glm-dsa.cpp:49-51: the DSA indexer keys are required
        kv[f"{arch}.attention.indexer.head_count"] = int(tc["index_n_heads"])
        kv[f"{arch}.attention.indexer.key_length"] = int(tc["index_head_dim"])
        kv[f"{arch}.attention.indexer.top_k"] = int(tc["index_topk"])
    return kv


SIGMOID_ROUTERS = ("deepseek_v3", "kimi_k2", "glm_moe_dsa")


def _mimo2(a, tc, arch):
    """src/models/mimo2.cpp:3-23 (keys as conversion/mimo.py:143-175 writes them): sliding_window and
    the SWA pattern array are required; KV heads differ between SWA and global layers."""
    kv = _common(a, tc, arch)
    full = next(x for x in a.layers if x.kind == "full")
    swa = next(x for x in a.layers if x.kind == "sliding")
    if (full.k_head_dim, full.v_head_dim) != (swa.k_head_dim, swa.v_head_dim):
        raise PlannerError("mimo2: llama.cpp's loader assumes one head geometry for SWA and global layers")
    kv[f"{arch}.attention.sliding_window"] = int(tc["sliding_window"])
    kv[f"{arch}.attention.sliding_window_pattern"] = _swa_flags(a)
    kv[f"{arch}.attention.head_count_kv"] = _per_layer(a, lambda i: a.layers[i].n_kv_heads)
    kv[f"{arch}.attention.key_length"] = kv[f"{arch}.attention.key_length_swa"] = full.k_head_dim
    kv[f"{arch}.attention.value_length"] = kv[f"{arch}.attention.value_length_swa"] = full.v_head_dim
    return kv


def _nemotron_h(a, tc, arch):
    """src/models/nemotron-h.cpp:5-30 (keys as conversion/nemotron.py + granite.py write them): the five
    ssm keys and layer_norm_epsilon are required; a block is recurrent where head_count_kv and
    feed_forward_length are both 0, attention where only feed_forward_length is, MLP/MoE otherwise."""
    kv = _common(a, tc, arch)
    moe_ff = int(tc.get("moe_intermediate_size") or 0)
    ff = int(tc.get("intermediate_size") or 0)
    kv[f"{arch}.attention.head_count_kv"] = [x.n_kv_heads if x.softmax else 0 for x in a.layers]
    kv[f"{arch}.feed_forward_length"] = [(moe_ff if moe else ff) if x.kind == "none" else 0
                                        for x, moe in zip(a.layers, a.moe_layers)]
    kv[f"{arch}.attention.layer_norm_epsilon"] = float(tc.get("layer_norm_epsilon") or 1e-5)
    heads, d_head = int(tc["mamba_num_heads"]), int(tc["mamba_head_dim"])
    kv[f"{arch}.ssm.conv_kernel"] = int(tc["conv_kernel"])
    kv[f"{arch}.ssm.inner_size"] = heads * d_head
    kv[f"{arch}.ssm.state_size"] = int(tc["ssm_state_size"])
    kv[f"{arch}.ssm.time_step_rank"] = heads
    kv[f"{arch}.ssm.group_count"] = int(tc["n_groups"])
    if a.n_experts > 1:
        kv[f"{arch}.expert_shared_feed_forward_length"] = int(tc.get("moe_shared_expert_intermediate_size") or 0)
        kv[f"{arch}.expert_shared_count"] = int(tc.get("n_shared_experts") or 1)
        kv[f"{arch}.expert_weights_norm"] = bool(tc.get("norm_topk_prob", True))
        kv[f"{arch}.expert_weights_scale"] = float(tc.get("routed_scaling_factor") or 1.0)
        if tc.get("moe_latent_size"):
            kv[f"{arch}.moe_latent_size"] = int(tc["moe_latent_size"])
    return kv


FAMILIES: dict[str, tuple[str, Callable[[Architecture, dict, str], dict[str, Any]]]] = {
    # HF model_type -> (llama.cpp arch name, src/llama-arch.cpp LLM_ARCH_NAMES; metadata builder)
    "llama": ("llama", _plain),
    "qwen2": ("qwen2", _plain),
    "qwen3": ("qwen3", _plain),
    "qwen3_moe": ("qwen3moe", _plain),
    "gpt_oss": ("gpt-oss", _gpt_oss),
    "qwen3_5": ("qwen35", _gated_deltanet),
    "qwen3_5_moe": ("qwen35moe", _gated_deltanet),
    "qwen3_next": ("qwen3next", _gated_deltanet),
    "gemma3": ("gemma3", _gemma3),
    "gemma4": ("gemma4", _gemma4),
    "deepseek_v3": ("deepseek2", _mla),
    "kimi_k2": ("deepseek2", _mla),
    "glm_moe_dsa": ("glm-dsa", _mla),
    "mimo_v2": ("mimo2", _mimo2),
    "nemotron_h": ("nemotron_h", _nemotron_h),  # nemotron_h_moe when it has experts (conversion/nemotron.py:224-226)
}


def gguf_arch(card: ModelCard) -> tuple[str, Callable]:
    tc = text_config(card.config)
    mt = str(tc.get("model_type") or card.config.get("model_type"))
    for key in (mt, mt.removesuffix("_text")):
        if key in FAMILIES:
            return FAMILIES[key]
    raise PlannerError(f"{card.id}: model_type {mt!r} has no synthetic GGUF layout yet "
                       f"(supported: {', '.join(sorted(FAMILIES))})")


# --------------------------------------------------------------------------------------------
# layout


def _ne(w: WeightTensor, a: Architecture) -> tuple[int, ...]:
    t = w.tensor
    if t.name.endswith((".attn_k_b.weight", ".attn_v_b.weight")):  # per-head stacks, {cols, rows/head, head}
        n_head = a.layers[t.layer].n_heads if t.layer is not None and t.layer < a.n_layers else a.n_heads
        return (t.cols, t.rows // n_head, n_head)
    if t.n_experts > 1:
        return (t.cols, t.rows, t.n_experts)
    return (t.cols,) if t.rows == 1 else (t.cols, t.rows)


def layout(catalog: Catalog, card: ModelCard, quant: str) -> GgufLayout:
    """The GGUF planner would write for `card` at `quant` (a GGUF recipe)."""
    name, recipe = catalog.recipe(quant, "gguf")
    if recipe.format != "gguf":
        raise PlannerError(f"quant {name!r} is not a GGUF recipe (see `planner quants`)")
    arch_name, build = gguf_arch(card)
    a = card.arch
    if arch_name == "nemotron_h" and a.n_experts > 1:
        arch_name = "nemotron_h_moe"
    tc = text_config(card.config)
    weights = [w for w in recipe_weights(catalog, a, recipe)
               if w.tensor.group == "text" or (w.tensor.group == "mtp" and arch_name in MTP_IN_BLOCK_COUNT)]
    for w in weights:
        if w.storage not in FP16_SCALES and w.storage not in ("F32", "F16", "BF16", "MXFP4"):
            raise PlannerError(f"{w.tensor.name}: storage type {w.storage} cannot be synthesised")
    kv = build(a, tc, arch_name)
    kv.update(_file_type(name))
    tensors = tuple(GgufTensor(w.tensor.name, _ne(w, a), w.storage, w.bytes) for w in weights)
    return GgufLayout(arch_name, kv, tensors)


def _file_type(recipe_name: str) -> dict[str, Any]:
    """general.file_type: llama.cpp's llama_ftype, as the gguf package enumerates it."""
    import gguf

    key = "ALL_F32" if recipe_name == "F32" else f"MOSTLY_{recipe_name.upper()}"
    ft = getattr(gguf.LlamaFileType, key, None)
    return {"general.file_type": int(ft)} if ft is not None else {}


# --------------------------------------------------------------------------------------------
# data


def _pool(ggml_type: str, nbytes: int, rng: np.random.Generator) -> np.ndarray:
    """`nbytes` of random blocks of `ggml_type` whose dequantized values have RMS ~TARGET_RMS."""
    import gguf
    from gguf.quants import dequantize

    qt = gguf.GGMLQuantizationType[ggml_type]
    if ggml_type == "F32":
        return rng.normal(0, TARGET_RMS, nbytes // 4).astype(np.float32).view(np.uint8)
    if ggml_type == "F16":
        return rng.normal(0, TARGET_RMS, nbytes // 2).astype(np.float16).view(np.uint8)
    if ggml_type == "BF16":
        f = rng.normal(0, TARGET_RMS, nbytes // 2).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block_w, block_b = gguf.GGML_QUANT_SIZES[qt]
    n_blocks = max(1, nbytes // block_b)
    raw = rng.integers(0, 256, (n_blocks, block_b), dtype=np.uint8)
    if ggml_type == "MXFP4":  # scale 2^(e-127): e2m1 values reach 6, so e = 119 gives RMS ~0.01-0.02
        raw[:, 0] = 119
        return raw.reshape(-1)
    offs = FP16_SCALES[ggml_type]

    def set_scale(x: np.ndarray, s: float) -> None:
        h = np.frombuffer(np.float16(s).tobytes(), dtype=np.uint8)
        for o in offs:
            x[:, o:o + 2] = h

    probe = raw[:64].copy()
    set_scale(probe, 1.0)
    rms = float(np.sqrt(np.mean(np.square(dequantize(probe.reshape(-1), qt).astype(np.float64)))))
    set_scale(raw, TARGET_RMS / rms if rms > 0 else TARGET_RMS)
    return raw.reshape(-1)


def write(lay: GgufLayout, path: Path, seed: int = 0, progress: Callable[[str], None] | None = None) -> None:
    """Write the layout with random data; atomically (a temp file renamed over `path`)."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(tmp), lay.arch)
    try:
        _add_kv(w, lay)
        for t in lay.tensors:
            qt = gguf.GGMLQuantizationType[t.ggml_type]
            block_w, block_b = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = (*reversed(t.ne[1:]), t.ne[0] // block_w * block_b)  # numpy order, row in bytes
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        f = w.fout[0]
        pools: dict[str, np.ndarray] = {}
        for i, t in enumerate(lay.tensors):
            if progress and (i % 50 == 0 or t.nbytes > 1 << 30):
                progress(f"{path.name}: tensor {i + 1}/{len(lay.tensors)} {t.name}")
            _pad(f)
            pool = pools.get(t.ggml_type)
            if pool is None:
                pool = pools[t.ggml_type] = _pool(t.ggml_type, CHUNK_BYTES, rng)
            block_b = _block_bytes(t.ggml_type)
            left = t.nbytes
            start = int(rng.integers(0, max(1, len(pool) // block_b))) * block_b
            while left:
                piece = pool[start:start + min(left, len(pool) - start)]
                piece.tofile(f)
                left -= len(piece)
                start = 0
        _pad(f)
        w.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            w.close()
        except Exception:
            pass
        if tmp.exists():
            tmp.unlink()
        raise


def _block_bytes(ggml_type: str) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]][1]


def _pad(f) -> None:
    n = (-f.tell()) % GGUF_ALIGNMENT
    if n:
        f.write(b"\0" * n)


def _add_kv(w, lay: GgufLayout) -> None:
    w.add_name(f"planner synthetic {lay.arch}")
    for key, v in lay.kv.items():
        if isinstance(v, bool):
            w.add_bool(key, v)
        elif isinstance(v, int):
            w.add_uint32(key, v)
        elif isinstance(v, float):
            w.add_float32(key, v)
        elif isinstance(v, str):
            w.add_string(key, v)
        elif isinstance(v, (list, tuple)):
            w.add_array(key, list(v))
        else:
            raise TypeError(f"{key}: {type(v).__name__}")
    n_vocab = int(lay.kv[f"{lay.arch}.vocab_size"])
    # llama.cpp's `test` tokenizer (src/llama-vocab.cpp; used by tests/test-llama-archs.cpp): a
    # token list and scores are all it needs; the benchmarks feed token ids directly.
    w.add_tokenizer_model("test")
    w.add_token_list([f"tok_{i}" for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
