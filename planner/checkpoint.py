"""The checkpoint's own quantization: a config.json `quantization_config` read into the
safetensors recipe (models_db/quant/recipes.toml) a vLLM or SGLang deployment loads by default.

Field names follow the producers' configs: transformers `quant_method` (fp8, mxfp4, awq, gptq,
bitsandbytes, compressed-tensors, modelopt), `weight_block_size` (fp8), `bits` / `group_size`
(AWQ/GPTQ), `load_in_4bit` / `bnb_4bit_quant_type` (bitsandbytes), compressed-tensors
`config_groups.<g>.weights.{num_bits,type,strategy,group_size}`, modelopt `quant_algo`.
A format planner has no recipe for is named in a one-line error rather than planned as BF16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.errors import PlannerError


ATTN_ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv", "other")  # "other": MLA / linear-attention
# projections, which the producers' ignore lists leave with the attention they belong to
FFN_ROLES = ("ffn_gate", "ffn_up", "ffn_down")  # dense and shared-expert MLPs (stacked experts are apart)


@dataclass(frozen=True)
class CheckpointQuant:
    method: str  # quant_method as the config writes it
    recipe: str | None  # the safetensors recipe that stores it; None: planner has none
    detail: str  # what the config says, in words
    bf16_roles: tuple[str, ...] = ()  # roles the config's ignore list keeps unquantized (beyond lm_head etc.)

    def require(self) -> str:
        if self.recipe is None:
            raise PlannerError(f"the checkpoint is quantized as {self.detail}, which planner has no storage format for; "
                               "pass --quant to plan another checkpoint of the model (a what-if)")
        return self.recipe


def _ignored(qc: dict[str, Any]) -> list[str]:
    """The module patterns left unquantized: compressed-tensors / modelopt `ignore`, FP8
    `ignored_layers`, transformers `modules_to_not_convert`, modelopt `exclude_modules`."""
    out: list[str] = []
    for key in ("ignore", "ignored_layers", "modules_to_not_convert", "exclude_modules"):
        v = qc.get(key)
        if isinstance(v, list):
            out += [str(x) for x in v]
    return out


def _bf16_roles(qc: dict[str, Any]) -> tuple[str, ...]:
    """Roles kept in BF16 by the ignore list: attention (self_attn / linear_attn modules), and the
    dense and shared MLPs (shared_expert, mlp.gate/up/down_proj). Routers, norms, embeddings and
    lm_head stay BF16 in every recipe already."""
    pats = [p.lower() for p in _ignored(qc) if "norm" not in p.lower()]  # layernorms are never quantized
    roles: tuple[str, ...] = ()
    if any(("attn" in p or "attention" in p) for p in pats):
        roles += ATTN_ROLES
    if any("shared_expert" in p or "mlp\\.(gate" in p or "mlp.(gate" in p or "mlp.gate_proj" in p
           or "mlp.up_proj" in p or "mlp.down_proj" in p for p in pats):
        roles += FFN_ROLES
    return roles


def _qc(cfg: dict[str, Any]) -> dict[str, Any] | None:
    qc = cfg.get("quantization_config")
    if qc is None:
        for key in ("text_config", "llm_config", "language_config"):
            sub = cfg.get(key)
            if isinstance(sub, dict) and isinstance(sub.get("quantization_config"), dict):
                qc = sub["quantization_config"]
    return qc if isinstance(qc, dict) else None


def _compressed_tensors(qc: dict[str, Any]) -> CheckpointQuant:
    groups = qc.get("config_groups")
    w = None
    if isinstance(groups, dict):
        w = next((g.get("weights") for g in groups.values() if isinstance(g, dict) and isinstance(g.get("weights"), dict)),
                 None)
    if not isinstance(w, dict):
        return CheckpointQuant("compressed-tensors", None, "compressed-tensors without a weights scheme")
    bits, kind = w.get("num_bits"), str(w.get("type", "int")).lower()
    group, strategy = w.get("group_size"), str(w.get("strategy", ""))
    fmt = str(qc.get("format", ""))
    detail = f"compressed-tensors {kind}{bits} ({strategy}{f', group {group}' if group else ''}, format {fmt})"
    if kind == "float" and bits == 8:
        return CheckpointQuant("compressed-tensors", "fp8", detail)
    if kind == "float" and bits == 4 and group == 16:
        return CheckpointQuant("compressed-tensors", "nvfp4", detail)
    if kind == "int" and bits == 4 and strategy == "group" and w.get("symmetric", True) and group in (128, 32):
        return CheckpointQuant("compressed-tensors", "w4a16" if group == 128 else "w4a16-g32", detail)
    return CheckpointQuant("compressed-tensors", None, detail)


def checkpoint_quant(cfg: dict[str, Any]) -> CheckpointQuant | None:
    """The checkpoint's quantization, or None for an unquantized (BF16/FP16) checkpoint."""
    qc = _qc(cfg)
    if qc is None:
        return None
    cq = _method(qc)
    roles = _bf16_roles(qc)
    if not roles:
        return cq
    kept = [w for w, r in (("attention", "attn_q"), ("dense/shared MLPs", "ffn_up")) if r in roles]
    kept = " and ".join(kept)
    return CheckpointQuant(cq.method, cq.recipe, f"{cq.detail}; {kept} kept in BF16 by its ignore list", roles)


def _method(qc: dict[str, Any]) -> CheckpointQuant:
    method = str(qc.get("quant_method") or qc.get("quant_algo") or "").lower()
    if method == "fp8":
        block = qc.get("weight_block_size")
        return CheckpointQuant(method, "fp8", f"FP8 e4m3{f' with {block} block scales' if block else ''}")
    if method == "mxfp4":
        return CheckpointQuant(method, "mxfp4", "MXFP4 experts")
    if method in ("awq", "gptq"):
        bits, group = qc.get("bits", qc.get("w_bit")), qc.get("group_size", qc.get("q_group_size"))
        detail = f"{method.upper()} {bits}-bit, group {group}"
        return CheckpointQuant(method, method if bits == 4 and group == 128 else None, detail)
    if method == "bitsandbytes":  # vLLM 0.33.0 lists no bitsandbytes method
        # (vllm/model_executor/layers/quantization/__init__.py QUANTIZATION_METHODS)
        kind = (f"4-bit {str(qc.get('bnb_4bit_quant_type', 'fp4')).lower()}" if qc.get("load_in_4bit")
                else "LLM.int8()" if qc.get("load_in_8bit") else "")
        return CheckpointQuant(method, None, f"bitsandbytes {kind} (which vLLM 0.33.0 does not load)".replace("  ", " "))
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo") or "").upper()
        recipe = {"FP8": "fp8", "NVFP4": "nvfp4"}.get(algo)
        return CheckpointQuant(method, recipe, f"ModelOpt {algo or 'unknown'}")
    return CheckpointQuant(method or "unknown", None, f"quant_method {method or '(none)'!r}")


def checkpoint_recipe(recipe, cq: CheckpointQuant):
    """The catalog recipe as this checkpoint stores it: MoE experts in the recipe's type too,
    and the roles its ignore list keeps in BF16."""
    from planner.quant import Rule

    rules = (Rule(roles=cq.bf16_roles, when="always", type="BF16"),) if cq.bf16_roles else ()
    experts = recipe.experts or recipe.base
    return recipe.model_copy(update={"experts": experts, "rules": recipe.rules + rules})
