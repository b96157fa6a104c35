"""Weight formats, quantization recipes and KV-cache types: schemas and the per-tensor
type assignment that turns an Architecture into weight bytes.

See docs/equations.md#weights for the rules and their source (llama.cpp's llama-quant.cpp).
"""

from __future__ import annotations

import fnmatch
import re

from dataclasses import dataclass
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
    code_bits: int | None = None  # group-quantized formats (MLX affine): bits of each code; the group is block_weights
    engines: tuple[str, ...] = ()  # engine ids (or id prefixes) that load the type (ik_llama.cpp's own); empty: any

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
    format: Literal["gguf", "safetensors", "mlx", "exl"]
    base: str
    output: str | None = None  # output.weight (and tied token_embd): K-quant mixes use Q6_K
    token_embd: str | None = None  # an untied token_embd where the mix gives it its own type (IQ1/IQ2/TQ)
    experts: str | None = None  # stacked MoE expert tensors
    keep: str | None = None  # safetensors: embeddings, lm_head, norms, routers, encoders; mlx: norms, raw parameters
    router: str | None = None  # mlx: a MoE router Linear's type (the models' own predicate: 8-bit)
    source: str
    description: str = ""
    rules: tuple[Rule, ...] = ()
    aliases: tuple[str, ...] = ()  # other names the recipe is published under (e.g. int4 for w4a16)
    engines: tuple[str, ...] = ()  # the engine ids that make and load it (mistral.rs ISQ); empty: any of its format
    # a published file's own mix (Unsloth's UD-*): the one model it is for (its key is NAME@MODEL), and its types by
    # GGUF tensor name (fnmatch patterns, first match wins; a tensor no pattern names gets `base`)
    model: str = ""
    tensor_types: tuple[tuple[str, str], ...] = ()


class RecipeTable(Strict):
    sources: dict[str, Source]
    recipes: dict[str, Recipe]


class KvRefusal(Strict):
    """Models an engine refuses this cache for: MLA attention, sliding-window layers, attention sinks."""

    feature: Literal["mla", "sliding", "sinks"]
    why: str
    cite: str


class KvType(Strict):
    block_values: int = Field(gt=0)
    block_bytes: int = Field(gt=0)
    source: str
    note: str | None = None
    # vLLM TurboQuant: the first and last N attention layers of a dense model stay at the model dtype (bf16)
    boundary_layers_bf16: int = Field(default=0, ge=0)
    code_bits: int | None = None  # group-quantized caches (MLX --kv-bits): bits of each code; the group is block_values
    refuses: tuple[KvRefusal, ...] = ()
    speed_note: str | None = None  # said with every speed of a plan on this cache, which then carries no interval
    # as V: the first and last boundary_v_layers layers of a model of boundary_v_min_layers or more store V in
    # boundary_v_type instead (the TurboQuant fork's turbo2)
    boundary_v_type: str | None = None
    boundary_v_layers: int = Field(default=0, ge=0)
    boundary_v_min_layers: int = Field(default=0, ge=0)
    pads_head_dim_to: int = Field(default=0, ge=0)  # head dims not a multiple are zero-padded: refused (not modelled)
    # as K with the same type as V: stored as same_pair_k instead where n_head / n_head_kv >= same_pair_min_gqa
    same_pair_k: str | None = None
    same_pair_min_gqa: float = Field(default=0, ge=0)

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


@dataclass(frozen=True)
class TensorClasses:
    """The tensors of an architecture grouped by everything a recipe's choice and a tensor's
    bytes depend on except the layer index: a 4,000-layer model has a few dozen classes, so a
    recipe is decided per class (per class and index only where a rule reads the index)."""

    keys: tuple[tuple[str, str, int, int, int, bool], ...]  # (group, role, experts, rows, cols, tied embedding)
    members: tuple[tuple[int, ...], ...]  # per class: positions in arch.tensors
    index: tuple[int, ...]  # per tensor: the index a rule sees (attn_v ordinal, else layer)
    n_attn_v: int
    n_layers_all: int  # llama.cpp hparams.n_layer_all: layers + MTP layers


def tensor_classes(arch: Architecture) -> TensorClasses:
    groups: dict[tuple, list[int]] = {}
    index, i_attn_v = [], 0
    for pos, t in enumerate(arch.tensors):
        tied = t.role == "token_embd" and arch.tie_word_embeddings and t.name == "token_embd.weight"
        groups.setdefault((t.group, t.role, t.n_experts, t.rows, t.cols, tied), []).append(pos)
        if t.role in ATTN_V_LIKE and t.group != "vision":
            index.append(i_attn_v)
            i_attn_v += 1
        else:
            index.append(t.layer or 0)
    return TensorClasses(tuple(groups), tuple(tuple(m) for m in groups.values()), tuple(index), i_attn_v,
                         arch.n_layers + arch.mtp_layers)


def _class_types(arch: Architecture, recipe: Recipe, types: dict[str, StorageType],
                 c: TensorClasses) -> list[str | dict[int, str]]:
    """Per class: its storage type, or {index: type} where a rule reads the layer index."""
    quantized_base = types[recipe.base].block_weights > 1
    gqa_ratio = arch.gqa_ratio  # a walk over every layer: once, not once per tensor
    rule_roles = [set(r.roles) | (set(ATTN_V_LIKE) if "attn_v" in r.roles else set()) for r in recipe.rules]
    by_layer = set().union(*[roles for rule, roles in zip(recipe.rules, rule_roles)
                             if rule.when in ("use_more_bits", "first_fraction", "first_count")])

    def fit_block(cols: int, type_name: str) -> str:  # llama.cpp's fallback when a row is not whole blocks
        if cols % types[type_name].block_weights == 0:
            return type_name
        fb = FALLBACK.get(type_name)
        return fb if fb and cols % types[fb].block_weights == 0 else "F16"

    def by_rules(role: str, idx: int, n: int) -> str:
        return next((rule.type for rule, roles in zip(recipe.rules, rule_roles)
                     if role in roles and _holds(rule, idx, n, arch, gqa_ratio)), recipe.base)

    out: list[str | dict[int, str]] = []
    for (group, role, n_exp, _rows, cols, tied), members in zip(c.keys, c.members):
        if group == "vision":  # llama.cpp keeps encoders in a separate mmproj file at F16
            out.append("F16")
        elif role in ("unquantized", "router", "conv"):
            out.append("F32")
        elif not quantized_base and role != "output":
            out.append(recipe.base)
        elif role == "output" or tied:
            chosen = recipe.output or recipe.base
            if types[chosen].block_weights > 1 and cols % types[chosen].block_weights:
                chosen = "Q8_0"
            out.append(fit_block(cols, chosen))
        elif recipe.experts and n_exp > 1:
            out.append(fit_block(cols, recipe.experts))
        elif role == "token_embd":
            out.append(fit_block(cols, recipe.token_embd or recipe.base))
        else:
            n = c.n_attn_v if role in ATTN_V_LIKE else c.n_layers_all
            if role in by_layer:
                out.append({c.index[p]: fit_block(cols, by_rules(role, c.index[p], n)) for p in members})
            else:
                out.append(fit_block(cols, by_rules(role, 0, n)))
    return out


EXL_NAME = re.compile(r"^(exl[23])-(\d+(?:\.\d+)?)bpw(?:_h(\d+))?$")
EXL_BLOCK = 128  # EXL3 pads every linear to multiples of 128 (exllamav3 modules/linear.py:50, 69-72)


def exl_recipe(name: str) -> tuple[str, Recipe, dict[str, StorageType]] | None:
    """An EXL2 / EXL3 quant as its repositories name it ("exl3-4.0bpw", "exl3-4.0bpw_H8", "exl2-4.65bpw"):
    the recipe and the storage types it needs, or None for another name. The bpw is that of the decoder's
    linear layers with its scales (exllamav2 optimize.py:71-78; exllamav3 allocation.py:31-156), held in
    whole bytes per 128 weights (the nearest 1/16 bit); the head at its own bits (default 6: EXL3 exactly 6,
    EXL2's -hb 6 mix 6.344 = 203 B per 256); embedding, norms and routers unquantized at 16 bits."""
    m = EXL_NAME.match(name.strip().lower())
    if not m:
        return None
    fmt, bpw, head = m.group(1), float(m.group(2)), int(m.group(3) or 6)
    units = round(bpw * EXL_BLOCK / 8)  # bytes per 128 weights
    if not 1 <= bpw <= 8 or units < 1:
        raise PlannerError(f"{name}: EXL bits per weight run from 1 to 8")
    if fmt == "exl3" and head not in (1, 2, 3, 4, 5, 6, 7, 8, 16):
        raise PlannerError(f"{name}: an EXL3 head takes 1 to 8 bits, or 16 (convert_model.py:140-141)")
    if fmt == "exl2" and head not in (2, 3, 4, 5, 6, 8):
        raise PlannerError(f"{name}: an EXL2 head takes 2, 3, 4, 5, 6 or 8 bits (qparams.py:338-347)")
    real = units * 8 / EXL_BLOCK
    types = {f"EXL_{real:g}": StorageType(kernel="int4", block_weights=EXL_BLOCK, block_bytes=units, source="exl_format",
                                         note=f"{fmt.upper()} decoder linears at {real:g} bpw (scales included)")}
    if head == 16:
        head_type = "F16"
    elif fmt == "exl2" and head in (6, 8):  # the -hb 6 / 8 QParams mixes with their scales (models_db/quant/formats.toml)
        head_type = f"EXL2_H{head}"
    else:
        head_type = f"EXL_{head:g}"
        types.setdefault(head_type, StorageType(kernel="int4", block_weights=EXL_BLOCK, block_bytes=head * EXL_BLOCK // 8,
                                                source="exl_format", note=f"EXL head at {head} bpw"))
    key = f"{fmt}-{bpw:.1f}bpw" if bpw * 10 % 1 == 0 else f"{fmt}-{bpw:g}bpw"  # as repositories name a branch
    key += f"_H{head}" if head != 6 else ""
    rec = Recipe(format="exl", base=f"EXL_{real:g}", output=head_type, keep="F16", source="exl_format",
                 engines=("exllamav3-cuda",) if fmt == "exl3" else ("exllamav2-cuda",),
                 description=f"{fmt.upper()} at {real:g} bpw over the decoder linears, head {head} bits"
                 + (f" (asked {bpw:g} bpw: whole bytes per 128 weights)" if real != bpw else ""))
    return key, rec, types


def _named_type(t: Tensor, recipe: Recipe) -> str:
    """A published file's mix: the first pattern naming the tensor; a vision tower at F16 (llama.cpp's separate mmproj)."""
    if t.group == "vision":
        return "F16"
    return next((typ for pat, typ in recipe.tensor_types if fnmatch.fnmatchcase(t.name, pat)), recipe.base)


def _exl_type(t: Tensor, recipe: Recipe) -> str:
    """EXL2 / EXL3: every decoder linear (experts included) at the base type, the head at its own; the token
    embedding (kept in system RAM by the engines), norms, MoE routers (exllamav3 block_sparse_mlp.py:403-408) and a
    vision tower unquantized. APPROXIMATION: a tied head gets no quantized copy of its own here (the formats untie it)."""
    if t.role == "output":
        return recipe.output or recipe.base
    if t.group == "vision" or t.role in ("token_embd", "unquantized", "router", "conv"):
        return recipe.keep or "F16"
    return recipe.base


def assign_types(arch: Architecture, recipe: Recipe, types: dict[str, StorageType],
                 classes: TensorClasses | None = None) -> list[tuple[Tensor, str]]:
    """The storage type of every tensor of `arch` under `recipe`."""
    if recipe.format == "safetensors":
        return [(t, _safetensors_type(t, recipe)) for t in arch.tensors]
    if recipe.format == "exl":
        return [(t, _exl_type(t, recipe)) for t in arch.tensors]
    if recipe.tensor_types:
        return [(t, _named_type(t, recipe)) for t in arch.tensors]
    if recipe.format == "mlx":
        return [(t, _mlx_type(t, recipe, types)) for t in arch.tensors]
    c = classes or tensor_classes(arch)
    chosen: list[str] = [""] * len(arch.tensors)
    for members, typ in zip(c.members, _class_types(arch, recipe, types, c)):
        for p in members:
            chosen[p] = typ if isinstance(typ, str) else typ[c.index[p]]
    return list(zip(arch.tensors, chosen))


def recipe_bytes(arch: Architecture, recipe: Recipe, types: dict[str, StorageType],
                 classes: TensorClasses | None = None) -> int:
    """Total weight bytes of `arch` under `recipe` (the sum of assign_types' tensors, per class)."""
    if recipe.format in ("safetensors", "mlx", "exl") or recipe.tensor_types:
        return sum(tensor_bytes(t, types[s]) for t, s in assign_types(arch, recipe, types))
    c = classes or tensor_classes(arch)
    total = 0
    for (_g, role, n_exp, rows, cols, _tied), members, typ in zip(c.keys, c.members, _class_types(arch, recipe, types, c)):
        t = Tensor("", role, rows, cols, None, n_exp)
        if isinstance(typ, str):
            total += tensor_bytes(t, types[typ]) * len(members)
        else:
            total += sum(tensor_bytes(t, types[typ[c.index[p]]]) for p in members)
    return total


def _safetensors_type(t: Tensor, recipe: Recipe) -> str:
    keep = recipe.keep or "BF16"
    if t.group == "vision" or t.role in ("token_embd", "output", "unquantized", "router", "conv"):
        return keep
    if t.n_experts > 1 and recipe.experts:
        return recipe.experts
    # safetensors rules: roles a checkpoint leaves unquantized (planner.checkpoint); only "always"
    return next((r.type for r in recipe.rules if r.when == "always" and t.role in r.roles), recipe.base)


def _mlx_type(t: Tensor, recipe: Recipe, types: dict[str, StorageType]) -> str:
    """mlx_lm.convert -q (utils.py quantize_model 1005-1090): every Linear and Embedding at the base type, the
    token embedding and the output head included (nn.QuantizedEmbedding); MoE routers at the models' own 8-bit;
    norms, convolutions, raw parameters and a vision tower stay float, and so does a layer whose input size is
    not a whole number of groups (utils.py:1058-1061)."""
    keep = recipe.keep or "BF16"
    if t.group == "vision" or t.role in ("unquantized", "conv"):
        return keep
    if t.role == "router":
        typ = recipe.router or keep
    elif t.role == "output":
        typ = recipe.output or recipe.base
    elif t.role == "token_embd":
        typ = recipe.token_embd or recipe.base
    elif t.n_experts > 1 and recipe.experts:
        typ = recipe.experts
    else:
        typ = recipe.base
    return typ if t.cols % types[typ].block_weights == 0 else keep


def tensor_bytes(t: Tensor, st: StorageType) -> int:
    """Bytes of one tensor: whole blocks per row, rows x experts."""
    blocks_per_row = -(-t.cols // st.block_weights)  # ceil
    return blocks_per_row * st.block_bytes * t.rows * t.n_experts


def check_recipe(name: str, recipe: Recipe, types: dict[str, StorageType]) -> None:
    if recipe.model and not name.endswith("@" + recipe.model):
        raise PlannerError(f"recipe {name}: a mix of one model is keyed NAME@{recipe.model}")
    for tname in [recipe.base, recipe.output, recipe.experts, recipe.keep, recipe.token_embd, recipe.router,
                  *(r.type for r in recipe.rules), *(typ for _, typ in recipe.tensor_types)]:
        if tname is not None and tname not in types:
            raise PlannerError(f"recipe {name}: unknown storage type {tname!r}")
