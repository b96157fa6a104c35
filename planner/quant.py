"""Weight formats, quantization recipes and KV-cache types: schemas and the per-tensor
type assignment that turns an Architecture into weight bytes.

See docs/equations.md#weights for the rules and their source (llama.cpp's llama-quant.cpp).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from planner.arch import Architecture, Tensor
from planner.errors import PlannerError
from planner.schema import Source, Strict


KernelClass = Literal["float", "legacy", "kquant", "iquant", "fp8", "fp4", "int4"]


class StorageType(Strict):
    kernel: KernelClass  # family of matmul kernels that reads it (speed model)
    block_weights: int = Field(gt=0)
    block_bytes: int = Field(gt=0)
    source: str
    ggml: bool = False
    note: str | None = None

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / self.block_weights


class FormatTable(Strict):
    sources: dict[str, Source]
    types: dict[str, StorageType]


Condition = Literal["always", "use_more_bits", "first_fraction", "first_count", "gqa_ge", "n_expert_eq"]


class Rule(Strict):
    roles: tuple[str, ...]
    when: Condition
    value: float | None = None
    type: str


class Recipe(Strict):
    format: Literal["gguf", "safetensors"]
    base: str
    output: str | None = None  # output.weight (and tied token_embd): K-quant mixes use Q6_K
    experts: str | None = None  # stacked MoE expert tensors
    keep: str | None = None  # safetensors: embeddings, lm_head, norms, routers, encoders
    source: str
    description: str = ""
    rules: tuple[Rule, ...] = ()


class RecipeTable(Strict):
    sources: dict[str, Source]
    recipes: dict[str, Recipe]


class KvType(Strict):
    block_values: int = Field(gt=0)
    block_bytes: int = Field(gt=0)
    source: str
    note: str | None = None

    @property
    def bytes_per_value(self) -> float:
        return self.block_bytes / self.block_values


class KvTypeTable(Strict):
    sources: dict[str, Source]
    types: dict[str, KvType]


ATTN_V_LIKE = ("attn_v", "attn_qkv")  # llama.cpp category_is_attn_v (MLA stores attn_k_b/attn_v_b, category "other")
# llama.cpp's fallback when a row is not a multiple of the block (tensor_type_fallback)
FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp: the first and last eighth of layers, and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _holds(rule: Rule, i: int, n: int, arch: Architecture, gqa_ratio: int) -> bool:
    if rule.when == "always":
        return True
    if rule.when == "use_more_bits":
        return use_more_bits(i, n)
    if rule.when == "first_fraction":
        return i < int(n * (rule.value or 0))
    if rule.when == "first_count":
        return i < int(rule.value or 0)
    if rule.when == "gqa_ge":
        return gqa_ratio >= (rule.value or 0)
    if rule.when == "n_expert_eq":
        return arch.n_experts == int(rule.value or -1)
    raise AssertionError(rule.when)


def _fit_block(t: Tensor, type_name: str, types: dict[str, StorageType]) -> str:
    """Fall back to a compatible type when the row length is not a multiple of the block."""
    st = types[type_name]
    if t.cols % st.block_weights == 0:
        return type_name
    fb = FALLBACK.get(type_name)
    if fb and t.cols % types[fb].block_weights == 0:
        return fb
    return "F16"


def assign_types(arch: Architecture, recipe: Recipe, types: dict[str, StorageType]) -> list[tuple[Tensor, str]]:
    """The storage type of every tensor of `arch` under `recipe`."""
    if recipe.format == "safetensors":
        return [(t, _safetensors_type(t, recipe)) for t in arch.tensors]
    out: list[tuple[Tensor, str]] = []
    n_attn_v = sum(1 for t in arch.tensors if t.role in ATTN_V_LIKE and t.group != "vision")
    n_layers_all = arch.n_layers + arch.mtp_layers  # llama.cpp hparams.n_layer_all
    i_attn_v = 0
    quantized_base = types[recipe.base].block_weights > 1
    gqa_ratio = arch.gqa_ratio  # a walk over every layer: once, not once per tensor
    for t in arch.tensors:
        if t.group == "vision":  # llama.cpp keeps encoders in a separate mmproj file at F16
            out.append((t, "F16"))
            continue
        if t.role in ("unquantized", "router", "conv") or not quantized_base and t.role != "output":
            out.append((t, "F32" if t.role in ("unquantized", "router", "conv") else recipe.base))
            continue
        if t.role == "output" or (t.role == "token_embd" and arch.tie_word_embeddings and t.name == "token_embd.weight"):
            chosen = recipe.output or recipe.base
            if types[chosen].block_weights > 1 and t.cols % types[chosen].block_weights:
                chosen = "Q8_0"
            out.append((t, _fit_block(t, chosen, types)))
            continue
        chosen = recipe.base
        if recipe.experts and t.n_experts > 1:
            chosen = recipe.experts
        elif t.role != "token_embd":
            idx, n = (i_attn_v, n_attn_v) if t.role in ATTN_V_LIKE else (t.layer or 0, n_layers_all)
            for rule in recipe.rules:
                roles = set(rule.roles)
                if "attn_v" in roles:
                    roles.update(ATTN_V_LIKE)
                if t.role in roles and _holds(rule, idx, n, arch, gqa_ratio):
                    chosen = rule.type
                    break
        if t.role in ATTN_V_LIKE:
            i_attn_v += 1
        out.append((t, _fit_block(t, chosen, types)))
    return out


def _safetensors_type(t: Tensor, recipe: Recipe) -> str:
    keep = recipe.keep or "BF16"
    if t.group == "vision" or t.role in ("token_embd", "output", "unquantized", "router", "conv"):
        return keep
    if t.n_experts > 1 and recipe.experts:
        return recipe.experts
    return recipe.base


def tensor_bytes(t: Tensor, st: StorageType) -> int:
    """Bytes of one tensor: whole blocks per row, rows x experts."""
    blocks_per_row = -(-t.cols // st.block_weights)  # ceil
    return blocks_per_row * st.block_bytes * t.rows * t.n_experts


def check_recipe(name: str, recipe: Recipe, types: dict[str, StorageType]) -> None:
    for tname in [recipe.base, recipe.output, recipe.experts, recipe.keep, *(r.type for r in recipe.rules)]:
        if tname is not None and tname not in types:
            raise PlannerError(f"recipe {name}: unknown storage type {tname!r}")
