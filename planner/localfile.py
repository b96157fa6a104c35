"""Models from local files: a Hugging Face config.json or a .gguf header. No network.

A GGUF file gives exact tensor types and sizes (read with the `gguf` package); its
metadata is mapped onto config.json names so the same architecture code sizes the KV cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from planner.catalog import ModelCard
from planner.deployment import WeightTensor
from planner.errors import PlannerError


def is_local(model: str) -> bool:
    return model.endswith((".json", ".gguf")) or "/" in model and Path(model).exists()


def _card(name: str, cfg: dict[str, Any], path: Path) -> ModelCard:
    card = ModelCard(id=name, name=name, hf_repo=str(path), config_source="file",
                     sources={"file": {"url": path.resolve().as_uri(), "kind": "hf-config"}}, config=cfg)
    _ = card.arch  # fail here, with the file named, if the config cannot be sized
    return card


def load_config_json(path: Path) -> ModelCard:
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlannerError(f"{path}: not a JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise PlannerError(f"{path}: not a config.json object")
    try:
        return _card(path.parent.name or path.stem, cfg, path)
    except PlannerError as e:
        raise PlannerError(f"{path}: {e}") from None


# GGUF metadata key (after "<arch>.") -> config.json field
_GGUF_KEYS = {
    "block_count": "num_hidden_layers", "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim", "attention.value_length": "v_head_dim", "context_length": "max_position_embeddings",
    "expert_count": "num_experts", "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size", "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "attention.sliding_window": "sliding_window", "full_attention_interval": "full_attention_interval",
    "attention.kv_lora_rank": "kv_lora_rank", "attention.q_lora_rank": "q_lora_rank",
    "rope.dimension_count": "qk_rope_head_dim", "leading_dense_block_count": "first_k_dense_replace",
    "ssm.conv_kernel": "linear_conv_kernel_dim", "ssm.state_size": "linear_key_head_dim",
    "ssm.group_count": "linear_num_key_heads", "ssm.time_step_rank": "linear_num_value_heads",
}


def load_gguf(path: Path) -> tuple[ModelCard, list[WeightTensor]]:
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise PlannerError("reading .gguf files needs the `gguf` package (pip install gguf)") from None
    try:
        reader = GGUFReader(str(path), "r")
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    except Exception as e:  # the gguf package raises ValueError/struct errors on bad files
        raise PlannerError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    arch = field("general.architecture")
    if not arch:
        raise PlannerError(f"{path}: GGUF has no general.architecture")
    cfg: dict[str, Any] = {"model_type": arch}
    for k, name in _GGUF_KEYS.items():
        v = field(f"{arch}.{k}")
        if isinstance(v, list):  # per-layer arrays (e.g. head_count_kv): keep the largest
            v = max(v) if v else None
        if v is not None:
            cfg[name] = v
    names = {t.name for t in reader.tensors}
    tok = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if tok is None:
        raise PlannerError(f"{path}: GGUF has no token_embd.weight")
    cfg["vocab_size"] = int(tok.shape[1]) if len(tok.shape) > 1 else int(tok.shape[0])
    cfg["tie_word_embeddings"] = "output.weight" not in names
    if "ssm.time_step_rank" in str(reader.fields.keys()) and cfg.get("linear_num_value_heads"):
        cfg.setdefault("linear_value_head_dim", cfg.get("linear_key_head_dim"))
    if cfg.get("kv_lora_rank"):
        cfg.setdefault("qk_nope_head_dim", int(cfg.get("head_dim", 192)) - int(cfg.get("qk_rope_head_dim", 64)))
    card = _card(field("general.name") or path.stem, cfg, path)
    arch_obj = card.arch
    weights = []
    for t in reader.tensors:
        layer = None
        if t.name.startswith("blk."):
            try:
                layer = int(t.name.split(".")[1])
            except ValueError:
                layer = None
        n_exp = int(t.shape[2]) if len(t.shape) > 2 else 1
        role = "token_embd" if t.name in ("token_embd.weight", "per_layer_token_embd.weight") else (
            "output" if t.name == "output.weight" else "other")
        from planner.arch import Tensor

        tensor = Tensor(t.name, role, int(t.shape[1]) if len(t.shape) > 1 else 1, int(t.shape[0]),
                        layer if layer is not None and layer < arch_obj.n_layers else None, n_exp,
                        "mtp" if layer is not None and layer >= arch_obj.n_layers else "text")
        weights.append(WeightTensor(tensor, t.tensor_type.name, int(t.n_bytes)))
    return card, weights
