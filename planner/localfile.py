"""Models from local files: a Hugging Face config.json or a .gguf header. No network.

A GGUF file gives exact tensor types and sizes (read with the `gguf` package); its
metadata is mapped onto config.json names so the same architecture code sizes the KV cache.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from planner.arch import MAX_LAYERS
from planner.catalog import ModelCard
from planner.deployment import WeightTensor
from planner.errors import PlannerError
from planner.gguf_hybrid import HYBRID_ARCHS, hybrid_config


def is_local(model: str) -> bool:
    return model.endswith((".json", ".gguf")) or "/" in model and Path(model).exists()


HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hf_id(name: str) -> bool:
    """'Org/Name' as Hugging Face writes repository ids (and not a file that exists here)."""
    return bool(HF_ID_RE.match(name)) and not Path(name).exists()


def hf_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads, in its own order of precedence: HF_HUB_CACHE, then
    HF_HOME/hub, then ~/.cache/huggingface/hub (XDG_CACHE_HOME replaces ~/.cache)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]).expanduser() / "hub"]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return [base / "huggingface" / "hub"]


def hf_cached_config(repo_id: str) -> Path | None:
    """The config.json of `repo_id` in the local Hugging Face cache: the snapshot refs/main points
    to, else the most recently written snapshot that has one. No network."""
    for cache in hf_cache_dirs():
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snaps = repo / "snapshots"
        if not snaps.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            p = snaps / ref.read_text().strip() / "config.json"
            if p.is_file():
                return p
        found = [p for p in snaps.glob("*/config.json") if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return None


def load_hf_id(repo_id: str) -> ModelCard:
    """A model named by its Hugging Face id, from the local cache, or a one-line error that says
    what to download."""
    p = hf_cached_config(repo_id)
    if p is None:
        where = ", ".join(str(d) for d in hf_cache_dirs())
        raise PlannerError(f"{repo_id} is not in the catalog and its config.json is not in the local Hugging Face "
                           f"cache ({where}); planner does not download: run `hf download {repo_id} config.json` "
                           "(or give a path to a config.json / .gguf)")
    card = load_config_json(p)
    return card.model_copy(update={"id": repo_id, "name": repo_id, "hf_repo": repo_id})


def _with_modelopt(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """NVIDIA ModelOpt checkpoints keep their quantization in hf_quant_config.json beside
    config.json ({"quantization": {"quant_algo", "exclude_modules", ...}}); read it as the
    quantization_config vLLM builds from it (modelopt.py)."""
    if "quantization_config" in cfg:
        return cfg
    for side in (path.with_name("hf_quant_config.json"), path.with_name(path.stem + ".hf_quant_config.json")):
        if side.is_file():
            try:
                q = json.loads(side.read_text()).get("quantization")
            except (OSError, ValueError, AttributeError):
                raise PlannerError(f"{side}: not a readable hf_quant_config.json") from None
            if isinstance(q, dict):
                return dict(cfg, quantization_config={"quant_method": "modelopt", **q})
    return cfg


def _config_name(cfg: dict[str, Any], path: Path) -> str:
    """The model's name: the config's own _name_or_path where it is a repository id, else the
    file's name (a config.json is named for its folder)."""
    n = cfg.get("_name_or_path")
    if isinstance(n, str) and HF_ID_RE.match(n.strip()):
        return n.strip()
    if path.name != "config.json":
        return path.stem
    return path.resolve().parent.name or path.stem


def _card(name: str, cfg: dict[str, Any], path: Path) -> ModelCard:
    # what an engine is pointed at: the repository id the config names, else the model's folder (a
    # config.json's directory; a .gguf is the file itself)
    repo = name if HF_ID_RE.match(name) else str(path) if path.suffix == ".gguf" else str(path.parent)
    card = ModelCard(id=name, name=name, hf_repo=repo, config_source="file",
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
    cfg = _with_modelopt(cfg, path)
    try:
        return _card(_config_name(cfg, path), cfg, path)
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
    "attention.shared_kv_layers": "num_kv_shared_layers",  # Gemma 4 E-models: the last N reuse earlier KV
}


# llama.cpp's shard names (llama_split_path, src/llama.cpp: "%s-%05d-of-%05d.gguf"); gguf-py SHARD_NAME_FORMAT
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_GGUF_TENSORS = 64 * MAX_LAYERS  # header tensor counts above this are refused before reading
MAX_GGUF_KV = 1_000_000  # metadata entries (a vocabulary array is one entry)


def _check_header(path: Path) -> None:
    """Refuse absurd counts from the 24-byte header (magic, version, tensors, metadata entries)
    before the gguf package walks them one by one."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    if len(head) < 24 or head[:4] != b"GGUF":
        raise PlannerError(f"{path}: not a GGUF file (no GGUF magic)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    if version > 0xFFFF:  # a big-endian file
        version, n_tensors, n_kv = struct.unpack(">IQQ", head[4:])
    if n_tensors > MAX_GGUF_TENSORS or n_kv > MAX_GGUF_KV:
        raise PlannerError(f"{path}: GGUF header lists {n_tensors:,} tensors and {n_kv:,} metadata entries: more than "
                           f"planner reads ({MAX_GGUF_TENSORS:,} tensors, {MAX_GGUF_KV:,} entries)")


def _reader(path: Path):
    from gguf import GGUFReader

    _check_header(path)
    try:
        return GGUFReader(str(path), "r")
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    except Exception as e:  # the gguf package raises ValueError/struct errors on bad files
        raise PlannerError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:
        return None


def _shards(path: Path, reader) -> list:
    """The readers of every shard of a split GGUF, `path` (the first) included; [reader] if not split.
    The first shard holds the metadata; the tensors are spread over all of them."""
    count = _field(reader, "split.count")
    if not isinstance(count, int) or count <= 1:
        return [reader]
    no = _field(reader, "split.no")
    m = SHARD_RE.match(path.name)
    if no not in (0, None) or (m and int(m["no"]) != 1):
        first = f"{m['prefix']}-00001-of-{count:05d}.gguf" if m else "the -00001-of- file"
        raise PlannerError(f"{path}: shard {(no or 0) + 1} of a {count}-shard GGUF: give the first one ({first})")
    if not m or int(m["count"]) != count:
        raise PlannerError(f"{path}: the header says a split GGUF of {count} shards, but the name does not follow "
                           f"<name>-00001-of-{count:05d}.gguf, so the other shards cannot be found")
    names = [path.with_name(f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in names if not p.is_file()]
    if missing:
        raise PlannerError(f"{path}: split GGUF of {count} shards; missing {len(missing)} in {path.parent}: "
                           f"{', '.join(missing)}")
    readers = [reader] + [_reader(p) for p in names[1:]]
    for i, (p, r) in enumerate(zip(names, readers)):
        if _field(r, "split.count") != count or _field(r, "split.no") not in (i, None):
            raise PlannerError(f"{p}: not shard {i + 1} of {count} (its header says split.no "
                               f"{_field(r, 'split.no')}, split.count {_field(r, 'split.count')})")
    want = _field(reader, "split.tensors.count")
    got = sum(len(r.tensors) for r in readers)
    if isinstance(want, int) and want != got:
        raise PlannerError(f"{path}: the shards hold {got} tensors but split.tensors.count is {want}")
    return readers


# llama.cpp b11434's hard-coded sliding-window patterns, used when the GGUF has no
# {arch}.attention.sliding_window_pattern key (load_swa_pattern, src/llama-model.cpp:3451-3458):
# layer i slides unless i % n == n - 1 (llama_hparams::set_swa_pattern, src/llama-hparams.cpp:8-22)
SWA_PATTERNS = {
    "gemma2": 2,  # src/models/gemma2.cpp:6
    "gemma3": 6,  # src/models/gemma3.cpp:7 (only when the GGUF has a sliding window)
    "gpt-oss": 2,  # src/models/openai-moe.cpp:9
    "cohere2": 4,  # src/models/cohere2.cpp:5
}


def _gguf_rules(cfg: dict[str, Any], arch: str, field) -> None:
    """What llama.cpp decides per architecture rather than reads from config-style keys: the
    sliding-window layer pattern and NextN/MTP layers counted inside block_count."""
    from planner.families import family_of

    family_of(arch)  # an unknown architecture is refused here, by name
    n = cfg.get("num_hidden_layers")
    nextn = field(f"{arch}.nextn_predict_layers")
    if isinstance(nextn, int) and nextn > 0 and isinstance(n, int) and n > nextn:
        cfg["num_hidden_layers"] = n - nextn  # block_count includes them (src/llama-model.cpp:1331)
        cfg["num_nextn_predict_layers"] = nextn
        n -= nextn
    rec = field(f"{arch}.attention.recurrent_layers")  # Qwen3.5/3.6: which layers are Gated DeltaNet
    if isinstance(rec, list) and isinstance(n, int) and len(rec) >= n:
        cfg["layer_types"] = ["linear_attention" if x else "full_attention" for x in rec[:n]]
    inner, heads = field(f"{arch}.ssm.inner_size"), field(f"{arch}.ssm.time_step_rank")
    if isinstance(inner, int) and isinstance(heads, int) and heads and "linear_num_value_heads" in cfg:
        cfg["linear_value_head_dim"] = inner // heads  # ssm.inner_size = value heads x value head dim
    if not cfg.get("sliding_window") or not isinstance(n, int):
        return
    pat = field(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pat, list) and len(pat) >= n:
        cfg["layer_types"] = ["sliding_attention" if x else "full_attention" for x in pat[:n]]
        return
    every = pat if isinstance(pat, int) and pat > 0 else SWA_PATTERNS.get(arch)
    if every:
        cfg["layer_types"] = ["full_attention" if i % every == every - 1 else "sliding_attention" for i in range(n)]


def _per_layer_truth(a, arch: str, field, names: set[str]):
    """The architecture read from the config-style keys, corrected layer by layer by what a GGUF
    states exactly: KV heads per layer (head_count_kv arrays), the sliding layers' own head sizes
    (key_length_swa / value_length_swa), the DSA indexer key (indexer.key_length), and which layers
    route to experts (the ffn_gate_inp tensors)."""
    from dataclasses import replace

    kv = field(f"{arch}.attention.head_count_kv")
    k_swa, v_swa = field(f"{arch}.attention.key_length_swa"), field(f"{arch}.attention.value_length_swa")
    k_full, v_full = field(f"{arch}.attention.key_length"), field(f"{arch}.attention.value_length")
    idx = field(f"{arch}.attention.indexer.key_length")
    layers = []
    for i, x in enumerate(a.layers):
        if x.kind in ("full", "sliding"):
            upd: dict[str, Any] = {}
            if isinstance(kv, list) and i < len(kv) and isinstance(kv[i], int) and kv[i] > 0:
                upd["n_kv_heads"] = kv[i]
            if x.kind == "sliding" and isinstance(k_swa, int):
                upd.update(k_head_dim=k_swa, v_head_dim=v_swa if isinstance(v_swa, int) else k_swa)
            elif x.kind == "full" and isinstance(k_full, int):
                upd.update(k_head_dim=k_full, v_head_dim=v_full if isinstance(v_full, int) else k_full)
            x = replace(x, **upd) if upd else x
        elif x.kind == "mla" and isinstance(idx, int) and f"blk.{i}.indexer.attn_k.weight" in names:
            x = replace(x, indexer_cache_dim=idx)
        layers.append(x)
    moe = tuple(f"blk.{i}.ffn_gate_inp.weight" in names for i in range(a.n_layers))
    return replace(a, layers=tuple(layers), moe_layers=moe if any(moe) or not any(a.moe_layers) else a.moe_layers)


def load_gguf(path: Path) -> tuple[ModelCard, list[WeightTensor]]:
    """A model from a .gguf file; for a split GGUF, from its first shard with all shards read."""
    try:
        import gguf  # noqa: F401
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise PlannerError("reading .gguf files needs the `gguf` package (pip install gguf)") from None
    reader = _reader(path)
    readers = _shards(path, reader)
    tensors = [t for r in readers for t in r.tensors]

    def field(key: str) -> Any:
        return _field(reader, key)

    arch = field("general.architecture")
    if not arch:
        raise PlannerError(f"{path}: GGUF has no general.architecture")
    cfg: dict[str, Any] = {"model_type": arch}
    for k, name in _GGUF_KEYS.items():
        v = field(f"{arch}.{k}")
        if isinstance(v, list):  # per-layer arrays (e.g. head_count_kv): keep the largest
            nums = [x for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
            v = max(nums) if nums and len(nums) == len(v) else (v or None)
        if v is not None:
            cfg[name] = v
    _gguf_rules(cfg, arch, field)
    names = {t.name for t in tensors}
    if arch in HYBRID_ARCHS:  # layer pattern from the tensors each block holds (planner.gguf_hybrid)
        cfg = hybrid_config(arch, field, names, cfg)
    tok = next((t for t in tensors if t.name == "token_embd.weight"), None)
    if tok is None:
        raise PlannerError(f"{path}: GGUF has no token_embd.weight")
    cfg["vocab_size"] = int(tok.shape[1]) if len(tok.shape) > 1 else int(tok.shape[0])
    cfg["tie_word_embeddings"] = "output.weight" not in names
    if "ssm.time_step_rank" in str(reader.fields.keys()) and cfg.get("linear_num_value_heads"):
        cfg.setdefault("linear_value_head_dim", cfg.get("linear_key_head_dim"))
    hd, rope = cfg.get("head_dim", 192), cfg.get("qk_rope_head_dim", 64)
    k_mla, v_mla = field(f"{arch}.attention.key_length_mla"), field(f"{arch}.attention.value_length_mla")
    if cfg.get("kv_lora_rank") and isinstance(k_mla, int) and isinstance(rope, int):
        # MLA with the latent cache: key_length is kv_lora_rank + rope, the per-head sizes are the *_mla
        # keys (conversion/deepseek.py; src/models/deepseek2.cpp n_embd_head_k_mla)
        cfg["qk_nope_head_dim"] = k_mla - rope
        if isinstance(v_mla, int):
            cfg["v_head_dim"] = v_mla
    elif cfg.get("kv_lora_rank") and isinstance(hd, int) and isinstance(rope, int):
        cfg.setdefault("qk_nope_head_dim", hd - rope)
    shard = SHARD_RE.match(path.name)
    name = field("general.name")
    try:
        card = _card(name if isinstance(name, str) and name else shard["prefix"] if shard else path.stem, cfg, path)
    except PlannerError as e:  # name the GGUF key the config field came from
        msg = str(e)
        for k, cfg_key in _GGUF_KEYS.items():
            msg = msg.replace(f"'{cfg_key}'", f"'{arch}.{k}'")
        raise PlannerError(f"{path}: {msg}") from None
    arch_obj = _per_layer_truth(card.arch, arch, field, names)
    card.__dict__["arch"] = arch_obj  # the cached Architecture, corrected by what the file states per layer
    weights = []
    for t in tensors:
        layer = None
        if t.name.startswith("blk."):
            try:
                layer = int(t.name.split(".")[1])
            except ValueError:
                layer = None
            if layer is not None and layer < 0:
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
