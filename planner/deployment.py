"""Deployment: the user's intent, resolved against the catalog into frozen inputs of the
memory model. Resolution (names -> catalog objects, engine defaults, checks of unsupported
combinations) happens here; the physics in planner.memory never sees a name.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from planner.arch import Architecture, Tensor
from planner.catalog import Catalog, ModelCard
from planner.checkpoint import checkpoint_quant, checkpoint_recipe
from planner.errors import PlannerError
from planner.hardware import Engine, Gpu, HostMemory
from planner.quant import TensorClasses, assign_types, recipe_bytes, tensor_bytes, tensor_classes
from planner.schema import Strict
from planner.units import GiB

Split = Literal["layer", "tensor"]
MAX_DRAFT_LEN = 64  # input bound on tokens drafted per step (an autoregressive drafter has no block size)
DEFAULT_HOST = "ddr5-5600x2"  # a current desktop, when offloading without --host


class Deployment(Strict):
    """What the user asked for. Names are catalog ids (or paths for the model)."""

    model: str
    gpus: tuple[str, ...]
    engine: str | None = None
    quant: str | None = None
    kv_quant: str | None = None
    ctx_tokens: int | None = Field(default=None, ge=0)
    batch: int = Field(default=1, ge=1, le=65536)
    split: Split | None = None
    ubatch_tokens: int | None = Field(default=None, ge=1, le=65536)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)  # vLLM / SGLang: share of each GPU taken
    gpu_layers: int | None = Field(default=None, ge=0)  # llama.cpp -ngl: layers on GPUs (rest in host RAM)
    cpu_moe_layers: int = Field(default=0, ge=0)  # llama.cpp --n-cpu-moe: expert tensors of the first N layers in host RAM
    host: str | None = None
    host_ram_bytes: int | None = Field(default=None, gt=0)
    tensor_split: tuple[float, ...] | None = None
    balance: Literal["memory", "speed"] | None = None  # shares by memory or by bandwidth when no tensor_split
    flash_attention: bool | None = None  # default: the engine's
    load_mode: Literal["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"] | None = None  # llama.cpp -lm
    spec: str | None = None  # speculative drafter: mtp, dflash[:ID], eagle[:ID], draft:MODEL
    draft_len: int | None = Field(default=None, ge=1, le=MAX_DRAFT_LEN)
    accept: float | None = None  # per drafted token (Leviathan's alpha)
    accept_len: float | None = None  # tokens per verification step
    draft_quant: str | None = None
    # several machines: the machine of each GPU (0 = the one that runs the server), and the network
    nodes: tuple[int, ...] = ()
    network: str | None = None
    # vLLM / SGLang parallel layout: GPUs per pipeline stage (--tensor-parallel-size) and stages
    # (--pipeline-parallel-size); tp x pp = the GPUs. Unset: --split, else one stage per machine
    tp: int | None = Field(default=None, ge=1)
    pp: int | None = Field(default=None, ge=1)
    expert_parallel: bool = False  # vLLM --enable-expert-parallel, SGLang --ep-size = tp
    # data-parallel attention ("wide EP"): every GPU its own attention and dense layers and its share of
    # the sequences, the routed experts split over all of them (vLLM --data-parallel-size with
    # --enable-expert-parallel, SGLang --attn-dp-size)
    dp: int | None = Field(default=None, ge=1)


_GPU_TERM = re.compile(r"^\s*(?:(\d+)(\s*[x*]\s*|x)(?=\S))?([A-Za-z0-9_.:+\- ]+?)\s*$")
MAX_GPUS = 64


def parse_gpus(text: str) -> tuple[str, ...]:
    """'rtx5090' -> (rtx5090,); '2xrtx3090', '2x 3090', '2 x RTX 3090' -> two; 'rtx5090,rtx3090ti'
    -> both. A leading number beyond MAX_GPUS is part of the name ('7900xtx'), not a count."""
    out: list[str] = []
    for term in text.split(","):
        if not term.strip():
            raise PlannerError(f"empty GPU name in {text!r}; write e.g. rtx5090,rtx3090ti or 2xrtx3090")
        m = _GPU_TERM.match(term)
        if not m:
            raise PlannerError(f"cannot read GPU {term!r}; write e.g. rtx5090, 2xrtx3090, 2x RTX 3090")
        n, name = int(m.group(1) or 1), m.group(3)
        if n > MAX_GPUS:  # "7900xtx", "5070 xt": a model number, not a count
            n, name = 1, term.strip()
        if not 1 <= n <= MAX_GPUS:
            raise PlannerError(f"GPU count {n} in {term!r} is out of range (1-{MAX_GPUS})")
        out += [name] * n
    return tuple(out)


_MACHINES = re.compile(r"^\s*(\d+)\s*[x*]\s*\((.*)\)\s*$")
MAX_NODES = 16


def parse_machines(text: str) -> tuple[tuple[str, ...], ...]:
    """GPUs by machine: machines separated by '/', each written as --gpu writes one machine
    ('rtx4090,rtx3090 / rtx3090'), optionally in parentheses; 'N x (GPUS)' is N machines alike
    ('2x(8xh200)'). Without '/' or 'x(...)' it is one machine."""
    machines: list[tuple[str, ...]] = []
    for part in text.split("/"):
        if not part.strip():
            raise PlannerError(f"empty machine in {text!r}; write e.g. rtx4090,rtx3090 / rtx3090 or 2x(8xh200)")
        m = _MACHINES.match(part)
        n, body = (int(m.group(1)), m.group(2)) if m else (1, part.strip())
        if body.startswith("(") and body.endswith(")"):
            body = body[1:-1]
        if "(" in body or ")" in body:
            raise PlannerError(f"cannot read machine {part.strip()!r}; write e.g. 2x(8xh200) or (rtx4090,rtx3090)")
        if not 1 <= n <= MAX_NODES:
            raise PlannerError(f"machine count {n} in {part.strip()!r} is out of range (1-{MAX_NODES})")
        machines += [parse_gpus(body)] * n
    if len(machines) > MAX_NODES:
        raise PlannerError(f"{len(machines)} machines: at most {MAX_NODES}")
    return tuple(machines)


def gpus_label(ids: list[str] | tuple[str, ...], nodes: tuple[int, ...] = ()) -> str:
    """GPUs as --gpu writes them: runs of one GPU as 8xh100-sxm, machines apart with ' / ', alike
    machines as 2x(8xh100-sxm)."""
    def runs(xs: list[str]) -> list[str]:
        out: list[list] = []
        for x in xs:
            if out and out[-1][0] == x:
                out[-1][1] += 1
            else:
                out.append([x, 1])
        return [f"{k}x{x}" if k > 1 else x for x, k in out]

    if not nodes:
        return " + ".join(runs(list(ids)))
    per: dict[int, list[str]] = {}
    for g, k in zip(ids, nodes):
        per.setdefault(k, []).append(g)
    machines = [",".join(runs(v)) for _, v in sorted(per.items())]
    if len(set(machines)) == 1:
        return f"{len(machines)}x({machines[0]})"
    return " / ".join(machines)


@dataclass(frozen=True)
class WeightTensor:
    tensor: Tensor
    storage: str
    bytes: int


def weight_format(engine: Engine) -> str:
    """The weight file format an engine loads: GGUF for llama.cpp, safetensors for the servers."""
    return {"llama.cpp": "gguf", "mlx": "mlx", "mistralrs": "gguf", "exllama": "exl"}.get(engine.family, "safetensors")


MEMO_ENTRIES = 256  # derived values kept: every catalog model x its usual quants


def _memo(catalog: Catalog, key: tuple, owners: tuple, make):
    """catalog.memo[key], made by make() unless it was made for these very objects (`owners`:
    ids in a key can be reused once an object is gone, so the entry keeps them and checks)."""
    hit = catalog.memo.pop(key, None)
    if hit is None or any(a is not b for a, b in zip(hit[0], owners)):
        hit = (owners, make())
    catalog.memo[key] = hit  # most recently used last
    while len(catalog.memo) > MEMO_ENTRIES:  # a new Architecture per call (a local file) must not grow it
        catalog.memo.pop(next(iter(catalog.memo)))
    return hit[1]


def _classes(catalog: Catalog, arch: Architecture) -> TensorClasses:
    return _memo(catalog, ("tensor_classes", id(arch)), (arch,), lambda: tensor_classes(arch))


def recipe_weights(catalog: Catalog, arch: Architecture, recipe) -> tuple[WeightTensor, ...]:
    """Every tensor of `arch` with the storage type the quant recipe gives it, and its bytes.
    Memoised on the catalog: comparisons resolve the same model and recipe many times."""
    def make() -> tuple[WeightTensor, ...]:
        types = catalog.formats.types
        sizes: dict[tuple[int, int, int, str], int] = {}  # many tensors share a shape and type

        def size(t: Tensor, s: str) -> int:
            key = (t.rows, t.cols, t.n_experts, s)
            if key not in sizes:
                sizes[key] = tensor_bytes(t, types[s])
            return sizes[key]

        return tuple(WeightTensor(t, s, size(t, s)) for t, s in assign_types(arch, recipe, types, _classes(catalog, arch)))

    return _memo(catalog, ("recipe_weights", id(arch), id(recipe)), (arch, recipe), make)


def recipe_total(catalog: Catalog, arch: Architecture, recipe) -> int:
    """The bytes of recipe_weights, summed per tensor class without building the tensor list."""
    return _memo(catalog, ("recipe_total", id(arch), id(recipe)), (arch, recipe),
                 lambda: recipe_bytes(arch, recipe, catalog.formats.types, _classes(catalog, arch)))


@dataclass(frozen=True)
class LayerBytes:
    """Weight bytes of a resolved deployment by where they sit: each layer (and its expert
    part), the input embedding, the output head, MTP layers, a vision encoder."""

    weights: tuple[int, ...]  # per layer, on the layer's device
    experts: tuple[int, ...]  # per layer, the expert part of weights
    input_bytes: int  # token embeddings (and per-layer embedding tables)
    output_bytes: int  # output head + final norm
    mtp_bytes: int
    vision_bytes: int
    ffn_rows: tuple[int, int]  # rows of the widest dense and the widest expert FFN up-projection (0: none)


@dataclass(frozen=True)
class Resolved:
    """Everything the memory model needs, as catalog objects and numbers."""

    model_id: str
    model_name: str
    arch: Architecture
    weights: tuple[WeightTensor, ...]
    gpus: tuple[Gpu, ...]
    engine: Engine
    quant: str
    kv_quant: str  # the K cache type (and the V type unless kv_quant_v says otherwise)
    kv_bytes_per_value: float
    ctx_tokens: int | None
    batch: int
    split: Split
    ubatch_tokens: int
    gpu_layers: int
    cpu_moe_layers: int
    host: HostMemory | None
    host_ram_bytes: int | None
    tensor_split: tuple[float, ...] | None
    exact_weights: bool  # weights read from a GGUF file rather than computed from a recipe
    flash_attention: bool = True
    kernel_of: dict[str, str] = field(default_factory=dict)  # storage type -> matmul kernel class
    hf_repo: str = ""
    auto_offload: bool = False  # llama.cpp --fit (default on) may choose -ngl / --n-cpu-moe itself
    spec: Any = None  # planner.spec.SpecPlan: the drafter (itself a Resolved) and the acceptance assumed
    # without --host-ram: the most RAM the host (--host, else DEFAULT_HOST) holds, and that host's id
    host_max_bytes: int | None = None
    host_max_from: str = ""
    notes: tuple[str, ...] = ()  # said with every answer about this deployment (a what-if quant, ...)
    checkpoint_quant: str = ""  # the checkpoint's quant_method where the plan loads it as stored (vLLM reads it)
    kv_quant_v: str = ""  # the V cache type where it differs from K (llama.cpp -ctv)
    kv_v_bytes_per_value: float = 0.0
    nodes: tuple[int, ...] = ()  # per GPU: its machine (0 runs the server); () = one machine
    network: Any = None  # planner.hardware.Network between the machines
    kv_boundary_bf16: int = 0  # the first and last N attention layers keep a bf16 cache (vLLM TurboQuant)
    kv_speed_note: str = ""  # the KV type's caveat on speed (quant.KvType.speed_note)
    kv_boundary_v: float = 0.0  # bytes per V value in those boundary layers, K unchanged (0: both bf16)
    rails: int = 1  # network links per machine (--network 8xib-ndr400: one NIC per GPU)
    tp: int = 0  # GPUs per pipeline stage; 0 = by split (tensor: all of them, layer: one)
    expert_parallel: bool = False  # MoE layers split by whole experts over each stage's GPUs
    dp: int = 1  # data-parallel attention ranks (each tp GPUs) per stage, the experts split over all
    load_mode: str = ""  # llama.cpp -lm (b11434 common/arg.cpp:2693-2711); "" = the engine's default (auto)

    @property
    def tp_size(self) -> int:
        """GPUs sharing each layer (tensor parallel): tp x dp x pp_size = the GPUs."""
        return self.tp or (len(self.gpus) if self.split == "tensor" else 1)

    @property
    def stage_gpus(self) -> int:
        """GPUs of one pipeline stage: its tensor-parallel group, times the data-parallel ranks."""
        return self.tp_size * self.dp

    @property
    def pp_size(self) -> int:
        """Pipeline stages: groups of stage_gpus GPUs holding consecutive layers."""
        return len(self.gpus) // self.stage_gpus

    @property
    def v_type(self) -> str:
        return self.kv_quant_v or self.kv_quant

    @property
    def v_bytes_per_value(self) -> float:
        return self.kv_v_bytes_per_value or self.kv_bytes_per_value

    @property
    def kv_label(self) -> str:
        """'q8_0', or 'q8_0/q4_0' for K and V of different types."""
        return self.kv_quant if self.v_type == self.kv_quant else f"{self.kv_quant}/{self.v_type}"

    @cached_property
    def layer_bytes(self) -> LayerBytes:
        """Summed once per deployment: the memory plan reads it for every context and offload tried."""
        n = self.arch.n_layers
        weights, experts = [0] * n, [0] * n
        inp = out = mtp = vis = 0
        for w in self.weights:
            t = w.tensor
            if t.group == "vision":
                vis += w.bytes
            elif t.group == "mtp":
                mtp += w.bytes
            elif t.layer is not None and t.layer < n:
                weights[t.layer] += w.bytes
                if t.n_experts > 1:
                    experts[t.layer] += w.bytes
            elif t.role == "token_embd":
                inp += w.bytes
            else:
                out += w.bytes
        if self.arch.tie_word_embeddings:
            # the output head reads the (tied) token embedding; an engine that keeps the input
            # layer in host RAM loads a second copy next to the output (llama.cpp TENSOR_DUPLICATED)
            out += next(w.bytes for w in self.weights if w.tensor.name == "token_embd.weight")
        up = [t for t in self.arch.tensors if t.role == "ffn_up"]  # the plan's shapes (a GGUF's tensors carry no roles)
        ffn = (max([t.rows for t in up if t.n_experts == 1], default=0), max([t.rows for t in up if t.n_experts > 1], default=0))
        return LayerBytes(tuple(weights), tuple(experts), inp, out, mtp, vis, ffn)


# what people call the engines: a family name resolves to that family's backend for the GPUs' vendor
ENGINE_FAMILIES = {"llama.cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "ollama": "llama.cpp",
                   "lm studio": "llama.cpp", "lmstudio": "llama.cpp", "lm-studio": "llama.cpp", "vllm": "vllm",
                   "sglang": "sglang", "mlx": "mlx", "mlx-lm": "mlx", "mlx_lm": "mlx", "mistral.rs": "mistralrs",
                   "mistralrs": "mistralrs", "mistral-rs": "mistralrs"}
# engines named as people write them whose profile ids are PREFIX-BACKEND (llama.cpp forks, ExLlamaV2/V3):
# the family does not pick them, the name does
ENGINE_PROFILE_NAMES = {"ik_llama.cpp": "ik_llama.cpp", "ik-llama.cpp": "ik_llama.cpp", "ik_llama": "ik_llama.cpp",
                "ik-llama": "ik_llama.cpp", "ikllama": "ik_llama.cpp", "exllamav3": "exllamav3", "exl3": "exllamav3",
                "tabbyapi": "exllamav3", "tabby": "exllamav3", "exllama": "exllamav3", "exllamav2": "exllamav2",
                "exl2": "exllamav2", "llama.cpp-turboquant": "llama.cpp-turboquant", "llama-cpp-turboquant":
                "llama.cpp-turboquant", "turboquant": "llama.cpp-turboquant", "turboquant_plus": "llama.cpp-turboquant"}
BACKEND_OF_VENDOR = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "intel": "vulkan"}
# engines people name that planner has no profile of, and what to do instead
ENGINES_NOT_MODELLED = {
    "koboldcpp": "KoboldCpp runs llama.cpp: plan it as --engine llama.cpp (KoboldCpp's own defaults are not modelled)",
    "jan": "Jan runs llama.cpp: plan it as --engine llama.cpp",
    "gpt4all": "GPT4All runs llama.cpp: plan it as --engine llama.cpp",
    "tensorrt-llm": "TensorRT-LLM is not modelled; vLLM (--engine vllm) is the closest planned server",
    "trt-llm": "TensorRT-LLM is not modelled; vLLM (--engine vllm) is the closest planned server",
    "lmdeploy": "LMDeploy is not modelled; vLLM (--engine vllm) is the closest planned server",
    "tgi": "Text Generation Inference is not modelled; vLLM (--engine vllm) is the closest planned server",
}


def engine_name(catalog: Catalog, text: str | None) -> str | None:
    """An --engine value checked: an engine id, or a family name (kept as a family: it resolves
    per GPU set, in pick_engine)."""
    if not text:
        return None
    base, at, pin = text.strip().lower().partition("@")  # a release pin: vllm@0.11, vllm-cuda@0.11.0
    if base.strip() in ENGINES_NOT_MODELLED:
        raise PlannerError(f"--engine {text.strip()}: {ENGINES_NOT_MODELLED[base.strip()]}")
    if at and not pin.strip():
        raise PlannerError(f"--engine {text.strip()}: give a release after '@', e.g. vllm@0.11")
    if base.strip() in ENGINE_FAMILIES or base.strip() in ENGINE_PROFILE_NAMES:
        return text.strip().lower()
    e = catalog.engine(text)  # an unknown pin fails here, with the releases planner holds
    return f"{e.id}@{pin.strip()}" if at else e.id


def default_ubatch(engine: Engine, gpus) -> int:
    """The engine's tokens per forward step where the user gives none: the first of its ubatch_tiers
    every GPU meets (vLLM: by device memory), else default_ubatch_tokens."""
    for t in engine.memory.ubatch_tiers:
        if all(g.memory_bytes >= t.min_memory_gib * GiB and g.id not in t.except_gpus for g in gpus):
            return t.tokens
    return engine.memory.default_ubatch_tokens


def default_max_seqs(engine: Engine, gpus) -> int:
    """The engine's concurrency limit where the user gives none: the max_num_seqs of the first of its
    ubatch_tiers every GPU meets (vLLM: 1,024 from 70 GiB), else memory.max_num_seqs."""
    for t in engine.memory.ubatch_tiers:
        if all(g.memory_bytes >= t.min_memory_gib * GiB and g.id not in t.except_gpus for g in gpus):
            return t.max_num_seqs or engine.memory.max_num_seqs
    return engine.memory.max_num_seqs


def pick_engine(catalog: Catalog, gpus: tuple[Gpu, ...], name: str | None, model_is_gguf: bool) -> Engine:
    """The engine named (an id, or a family such as llama.cpp, vllm, sglang, ollama, LM Studio:
    that family's backend for the GPUs' vendor), else llama.cpp's backend for the vendor."""
    vendors = {g.vendor for g in gpus}
    base, at, pin = (name or "").strip().lower().partition("@")
    if name and base.strip() in ENGINE_FAMILIES:
        family = ENGINE_FAMILIES[base.strip()]
        backend = ("metal" if family == "mlx" else "vulkan" if len(vendors) > 1
                   else BACKEND_OF_VENDOR[next(iter(vendors))])
        # the family's own engine (llama.cpp-cuda), not a fork planned with its rules (ik_llama.cpp-cuda)
        same = [e for e in catalog.engines.values() if e.family == family and e.backend == backend]
        engine = next((e for e in same if e.id == f"{family}-{backend}"), same[0] if same else None)
        if engine is None:
            have = ", ".join(e.id for e in catalog.engines.values() if e.family == family)
            raise PlannerError(f"{name.strip()} has no {backend} backend for {', '.join(sorted(vendors))} GPUs here "
                               f"(planned: {have})")
        return catalog.engine(f"{engine.id}@{pin}") if at else engine
    if name and base.strip() in ENGINES_NOT_MODELLED:
        raise PlannerError(f"--engine {name.strip()}: {ENGINES_NOT_MODELLED[base.strip()]}")
    if name and base.strip() in ENGINE_PROFILE_NAMES:
        prefix = ENGINE_PROFILE_NAMES[base.strip()]
        backend = BACKEND_OF_VENDOR[next(iter(vendors))] if len(vendors) == 1 else "vulkan"
        if f"{prefix}-{backend}" not in catalog.engines:
            have = ", ".join(e for e in catalog.engines if e.startswith(prefix))
            raise PlannerError(f"{name.strip()} has no {backend} backend planned here (planned: {have})")
        return catalog.engine(f"{prefix}-{backend}" + (f"@{pin}" if at else ""))  # a pin it has no release of fails
    if name:
        return catalog.engine(name)
    if len(vendors) > 1:
        return catalog.engine("llama.cpp-vulkan")  # the one backend that drives mixed vendors
    vendor = vendors.pop()
    backend = {"nvidia": "llama.cpp-cuda", "amd": "llama.cpp-rocm", "apple": "llama.cpp-metal", "intel": "llama.cpp-vulkan"}
    return catalog.engine(backend[vendor])


def check_engine_rules(engine: Engine, split: str, n_gpus: int, kv_name: str, fa: bool, arch: Architecture,
                       v_name: str | None = None) -> None:
    """The combinations the engine refuses at startup (docs/multi-gpu.md): resolve() applies them,
    and so does every edited deployment a suggestion proposes (planner.fit), so that a suggested
    fix is never one `planner fit` would then refuse."""
    if engine.family == "llama.cpp" and split == "tensor" and n_gpus > 1:
        if not fa:
            raise PlannerError("llama.cpp --split-mode tensor requires flash attention; drop --no-flash-attn or use --split layer")
        if kv_name not in ("f32", "f16", "bf16") or (v_name or kv_name) not in ("f32", "f16", "bf16"):
            raise PlannerError(f"llama.cpp --split-mode tensor does not support a quantized KV cache "
                               f"({kv_name if v_name in (None, kv_name) else kv_name + '/' + v_name}); "
                               "use --kv-quant f16 or --split layer")
        if arch.model_type in engine.kernels.tensor_split_excluded:
            raise PlannerError(f"llama.cpp --split-mode tensor is not implemented for {arch.model_type}; use --split layer")
    if engine.family == "llama.cpp" and (v_name or kv_name) not in ("f32", "f16", "bf16") and not fa:
        raise PlannerError(f"a quantized V cache ({v_name or kv_name}) needs flash attention in llama.cpp; "
                           "drop --no-flash-attn")


def check_tp(engine: Engine, arch: Architecture, tp: int, n: int) -> None:
    """vLLM / SGLang tensor parallelism: the attention heads divisible by tp (vllm/config/model.py:1557-1563;
    SGLang srt/models/llama.py:183-194) and the KV heads split or replicated evenly (linear.py:1064-1071)."""
    if engine.family == "llama.cpp" or tp <= 1:
        return
    heads = next((a.n_heads for a in arch.layers if a.softmax and a.n_heads), 0)
    if heads and heads % tp:
        raise PlannerError(f"{engine.family} needs the attention heads ({heads}) divisible by the tensor-parallel "
                           f"size ({tp}); try --tp {max(d for d in range(1, tp + 1) if heads % d == 0 and n % d == 0)}")
    kv = next((a.n_kv_heads for a in arch.layers if a.softmax and a.kind != "mla" and a.n_kv_heads), 0)
    if kv and (kv % tp if kv >= tp else tp % kv):
        raise PlannerError(f"{engine.family} cannot share {kv} KV heads evenly over {tp} GPUs (tensor parallel)")


def allowed(r: Resolved) -> bool:
    """Whether the engine accepts this (possibly edited) resolved deployment."""
    try:
        check_engine_rules(r.engine, r.split, len(r.gpus), r.kv_quant, r.flash_attention, r.arch, r.v_type)
        check_tp(r.engine, r.arch, r.tp_size, len(r.gpus))
        if len(r.gpus) % r.stage_gpus:
            return False
    except PlannerError:
        return False
    return True


_RAILS = re.compile(r"^\s*(\d+)\s*[x*]\s*(\S.*)$")


def network_of(catalog: Catalog, text: str):
    """--network ID, or N x ID: N links of that network per machine (one NIC per GPU, as on an
    8-GPU server with a rail-optimised fabric). Returns (network, rails)."""
    m = _RAILS.match(text)
    rails, name = (int(m.group(1)), m.group(2)) if m else (1, text)
    if not 1 <= rails <= MAX_GPUS:
        raise PlannerError(f"--network {text!r}: {rails} links per machine is out of range (1-{MAX_GPUS})")
    return catalog.network(name.strip()), rails


def _machines(catalog: Catalog, engine: Engine, dep: Deployment, nodes: tuple[int, ...]):
    """A plan over several machines. llama.cpp: its RPC backend (rpc-server on each other machine,
    llama-server --rpc on machine 0); its devices come first, as llama.cpp puts the RPC devices ahead
    of the local ones (src/llama.cpp:276), so the other machines hold the first layers and machine 0
    the last layers and the output. vLLM / SGLang: one torch.distributed world over the machines in
    order (Ray or --nnodes), pipeline stages and tensor-parallel groups laid over consecutive ranks.
    Returns the network, links per machine and the GPUs' order."""
    if not dep.network:
        raise PlannerError("GPUs on several machines need --network (the link between them: 10gbe, tb5, tb5-rdma, "
                           "ib-ndr400, 8xib-ndr400, ...; see `planner networks`)")
    network, rails = network_of(catalog, dep.network)
    if engine.family not in ("llama.cpp", "vllm", "sglang"):
        raise PlannerError(f"{engine.id} across machines is not modelled (llama.cpp RPC, vLLM and SGLang are); "
                           "plan one machine")
    if engine.family == "llama.cpp":
        if (dep.split or engine.default_split) != "layer" or (dep.tp or 1) > 1:
            raise PlannerError("llama.cpp's RPC backend takes a layer split only: -sm row has no RPC buffer type "
                               "(src/llama-model.cpp:1146-1167) and -sm tensor over RPC is not in b11434")
        return network, rails, sorted(range(len(nodes)), key=lambda i: (nodes[i] == 0, nodes[i], i))
    counts = [nodes.count(k) for k in sorted(set(nodes))]
    if len(set(counts)) > 1:
        # vLLM: world size divisible by --nnodes, the same GPUs per node (vllm/engine/arg_utils.py:2399-2413);
        # SGLang: (tp x pp) % nnodes == 0 (srt/arg_groups/validation_hook.py:178-181)
        raise PlannerError(f"{engine.family} across machines runs the same number of GPUs on each "
                           f"(--nnodes divides the world size); these machines have {', '.join(map(str, counts))}")
    return network, rails, sorted(range(len(nodes)), key=lambda i: (nodes[i], i))


def _layout(engine: Engine, dep: Deployment, arch: Architecture, n: int, nodes: tuple[int, ...],
            split: str) -> tuple[int, str]:
    """GPUs per pipeline stage (tp) and the split it amounts to, from --tp / --pp, else --split,
    else one stage per machine (vLLM's own advice: tensor parallel inside a node, pipeline parallel
    across nodes, docs/serving/parallelism_scaling.md). Refuses the layouts the engine refuses."""
    machines = len(set(nodes)) or 1
    if dep.dp and dep.dp > 1:
        if engine.family == "llama.cpp":
            raise PlannerError("data-parallel attention (--dp) is vLLM's and SGLang's")
        if arch.n_experts <= 1:  # vllm/config/parallel.py:1191-1200: dense DP ranks are independent replicas
            raise PlannerError("data parallelism of a dense model is independent replicas of it: plan one replica "
                               "(its GPUs) and multiply its throughput")
        if not dep.expert_parallel:
            raise PlannerError("--dp plans data-parallel attention with expert parallelism (wide EP): add --ep")
        if (dep.tp or 1) > 1 or (dep.pp or 1) > 1 or dep.dp != n:
            raise PlannerError(f"--dp is planned with every GPU its own rank: --dp {n} without --tp / --pp")
        return 1, "layer"
    if dep.tp or dep.pp:
        tp = dep.tp or max(n // dep.pp, 1)
        pp = dep.pp or max(n // tp, 1)
        if tp * pp != n:
            raise PlannerError(f"--tp {tp} x --pp {pp} = {tp * pp} GPUs, but --gpu gives {n}")
    elif machines > 1 and engine.family != "llama.cpp":
        tp = 1 if dep.split == "layer" else n if dep.split == "tensor" else n // machines
    else:
        tp = n if split == "tensor" else 1
    if engine.family == "llama.cpp" and 1 < tp < n:
        raise PlannerError("llama.cpp splits every layer over all GPUs (-sm tensor) or layers over GPUs "
                           "(-sm layer); tensor groups inside pipeline stages are vLLM's and SGLang's")
    check_tp(engine, arch, tp, n)  # vLLM / SGLang only
    return tp, ("tensor" if tp == n and n > 1 else "layer")


def _stored_kv(catalog: Catalog, arch: Architecture, k, v):
    """The K and V types an engine really stores for the types asked, where a type says the engine changes
    them (models_db/quant/kv_types.toml: the TurboQuant fork's turbo types): head dims it would pad are refused,
    and K of a same-type pair past a GQA ratio is stored as another type. Returns the pair and notes."""
    (kn, kk), (vn, vk) = k, v
    for name, t in ((kn, kk), (vn, vk)):
        if t.pads_head_dim_to:
            dims = {d for a in arch.layers for d in (a.k_head_dim, a.v_head_dim, a.mla_cache_dim) if d}
            if any(d % t.pads_head_dim_to for d in dims):
                raise PlannerError(f"a {name} cache pads head dims that are not a multiple of {t.pads_head_dim_to} "
                                   f"(this model has {', '.join(map(str, sorted(dims)))}; {t.source}): not modelled; "
                                   "use q8_0 or q4_0")
    notes = []
    gqa = max((a.n_heads / a.n_kv_heads for a in arch.layers if a.n_kv_heads), default=1)
    if kk.same_pair_k and kn == vn and gqa >= kk.same_pair_min_gqa:
        notes.append(f"K and V both {kn} with n_head/n_head_kv = {gqa:g} (>= {kk.same_pair_min_gqa:g}): the engine "
                     f"stores K as {kk.same_pair_k} ({kk.source}), planned so")
        kn, kk = catalog.kv_type(kk.same_pair_k)
    return (kn, kk), (vn, vk), notes


def refuse_weight_types(catalog: Catalog, engine: Engine, weights) -> None:
    """Refuse storage types the engine cannot load: its own refused patterns (mistral.rs has no IQ
    types), and types only other engines load (ik_llama.cpp's IQ*_K)."""
    for st in sorted({w.storage for w in weights}):
        t = catalog.formats.types.get(st)
        if t is not None and t.engines and not any(engine.id.startswith(e) for e in t.engines):
            raise PlannerError(f"{st} weights are {', '.join(t.engines)}'s own type; {engine.id} cannot load them")
        if any(fnmatch.fnmatchcase(st, p) for p in engine.refused_types):
            raise PlannerError(f"{engine.id} cannot load {st} weights: {engine.refused_types_why}")


def resolve(catalog: Catalog, dep: Deployment, card: ModelCard | None = None, file_weights=None) -> Resolved:
    """Names to objects, engine defaults filled in, unsupported combinations refused."""
    card = card or catalog.model(dep.model)
    arch = card.arch
    if not dep.gpus:
        raise PlannerError("no GPU given; use --gpu, e.g. --gpu rtx5090")
    gpus = tuple(catalog.gpu(g) for g in dep.gpus)
    engine = pick_engine(catalog, gpus, dep.engine, file_weights is not None)
    for g in gpus:
        if g.vendor not in engine.vendors:
            raise PlannerError(f"engine {engine.id} does not run on {g.id} ({g.vendor}); try one of "
                               + ", ".join(e.id for e in catalog.engines.values() if g.vendor in e.vendors))
    nodes, network, dep_ts = tuple(dep.nodes), None, dep.tensor_split
    if nodes and len(nodes) != len(gpus):
        raise PlannerError("internal: one machine index per GPU expected")
    rails = 1
    if len(set(nodes)) > 1:
        network, rails, order = _machines(catalog, engine, dep, nodes)
        gpus, nodes = tuple(gpus[i] for i in order), tuple(nodes[i] for i in order)
        dep_ts = tuple(dep.tensor_split[i] for i in order) if dep.tensor_split else None
    else:
        if dep.network:
            raise PlannerError(f"--network {dep.network} joins machines: give GPUs on several, e.g. --gpu 'm4max / m4max'")
        nodes = ()
    per_node = [[g for g, n in zip(gpus, nodes or (0,) * len(gpus)) if n == k] for k in sorted(set(nodes or (0,)))]
    if len({g.memory_kind for g in gpus}) > 1 or any(len(m) > 1 and m[0].memory_kind == "unified" for m in per_node):
        raise PlannerError("unified-memory machines cannot be combined with other GPUs in one machine")

    # weights: exact from a GGUF file, or computed from a recipe
    what_if, stored = None, ""
    if file_weights is not None:
        quant = dep.quant or "as-file"
        weights = tuple(file_weights)
        exact = True
    else:
        fmt = weight_format(engine)
        cq = checkpoint_quant(card.config) if fmt == "safetensors" else None
        if cq is not None and dep.quant is None:  # the checkpoint's own format, as vLLM / SGLang load it
            quant, recipe = catalog.recipe(cq.require(), fmt)
            recipe = checkpoint_recipe(recipe, cq)
            stored = cq.method
        else:
            q = dep.quant or engine.default_quant
            if fmt == "exl" and re.fullmatch(r"\d+(\.\d+)?bpw(_h\d+)?", q.strip().lower()):  # a bare branch name, 4.0bpw
                q = f"{engine.default_quant.partition('-')[0]}-{q.strip()}"
            quant, recipe = catalog.recipe(q, fmt, card.id)
        if cq is not None and dep.quant is not None and quant != cq.recipe:
            what_if = (f"what-if: the checkpoint is stored as {cq.detail}; --quant {quant} plans a checkpoint of "
                       "this model in another format, which you would have to find or make")
        if recipe.format != fmt:
            options = [k for k, r in catalog.recipes.recipes.items() if r.format == fmt]
            raise PlannerError(f"{engine.id} does not load {quant} ({recipe.format}) weights; use one of: {', '.join(options)}")
        if recipe.engines and engine.id not in recipe.engines:
            raise PlannerError(f"{quant} is made and loaded by {', '.join(recipe.engines)} only; {engine.id} cannot "
                               "plan it")
        weights = recipe_weights(catalog, arch, recipe)
        exact = False
    refuse_weight_types(catalog, engine, weights)

    kv_text = (dep.kv_quant or engine.default_kv_type).lower()
    k_text, _, v_text = kv_text.partition("/")  # K/V types as llama.cpp takes them (-ctk, -ctv)
    kv_types = []
    for t in (k_text, v_text or k_text):
        t = engine.default_kv_type if t.strip() in ("auto", "") else t
        name, kv = catalog.kv_type(t)
        if name not in engine.kv_types:
            others = [e for e, eng in catalog.engines.items() if name in eng.kv_types]
            raise PlannerError(f"{engine.id} has no {name} KV cache; it offers: {', '.join(engine.kv_types)}"
                               + (f" ({name} is {', '.join(others)}'s)" if others else ""))
        kv_types.append((name, kv))
    (kv_name, kv), (v_name, v_kv) = kv_types
    (kv_name, kv), (v_name, v_kv), fork_notes = _stored_kv(catalog, arch, (kv_name, kv), (v_name, v_kv))
    features = {"mla": any(a.kind == "mla" for a in arch.layers), "sliding": any(a.kind == "sliding" for a in arch.layers),
                "sinks": any(t.name.endswith("attn_sinks.weight") for t in arch.tensors)}
    for t in {kv_name: kv, v_name: v_kv}.values():
        for no in t.refuses:
            if features[no.feature]:
                raise PlannerError(f"{engine.id} refuses this model with a {kv_name} KV cache: {no.why} ({no.cite})")
    table = catalog.paths_of(engine)
    for op, storage in sorted({("mul_mat_id" if w.tensor.n_experts > 1 else "mul_mat", w.storage)
                               for w in weights}) if table else ():
        why = table.refused_load(op, storage)
        if why:
            raise PlannerError(f"{engine.id} cannot load {card.name} as {quant}: {why}")
    for g in gpus:
        why = table.refuses_kv(g.family, kv_name) if table else None
        if why:
            raise PlannerError(f"{engine.id} has no {kv_name} KV cache on {g.id}: {why}")
    if v_name != kv_name and engine.family != "llama.cpp" and engine.id != "exllamav3-cuda":
        raise PlannerError(f"{engine.id} takes one KV-cache type for K and V (--kv-cache-dtype); K/V pairs like "
                           f"{kv_name}/{v_name} are llama.cpp's (-ctk / -ctv)")

    if dep.load_mode and engine.family != "llama.cpp":
        raise PlannerError(f"--load-mode is llama.cpp's -lm; {engine.id} loads its weights its own way")
    if dep.load_mode in ("mlock", "dio") and engine.id.startswith("ik_llama.cpp"):
        raise PlannerError(f"ik_llama.cpp has no load mode {dep.load_mode}: it takes --no-mmap (= none) and --mlock "
                           "(= mmap+mlock) (common/common.cpp:2019, 2221)")
    split = dep.split or engine.default_split
    if split not in engine.split_modes:
        raise PlannerError(f"{engine.id} has no {split} split; it offers: {', '.join(engine.split_modes)}")
    tp, split = _layout(engine, dep, arch, len(gpus), nodes, split)
    if (tp > 1 or (dep.dp or 1) > 1) and engine.family != "llama.cpp" and len({g.id for g in gpus}) > 1:
        raise PlannerError(f"{engine.id} tensor parallelism needs identical GPUs; use --split layer or --engine llama.cpp-*")
    if dep.expert_parallel:
        if engine.family == "llama.cpp":
            raise PlannerError("expert parallelism (--ep) is vLLM's and SGLang's; llama.cpp splits experts with the layers")
        if arch.n_experts <= 1:  # vllm/config/model.py:1498-1503
            raise PlannerError(f"{card.id} is not a mixture-of-experts model: expert parallelism does not apply")
        if tp == 1 and not (dep.dp and dep.dp > 1):
            raise PlannerError("expert parallelism shares each stage's experts over its tensor-parallel GPUs: "
                               "it needs --tp 2 or more (or --dp, data-parallel attention)")
    tensor_split = dep_ts
    if tensor_split is not None:
        if len(tensor_split) != len(gpus) or not all(0 <= x < math.inf for x in tensor_split):
            raise PlannerError(f"--tensor-split needs {len(gpus)} non-negative numbers, one per GPU")
        # a share of 0 leaves that GPU without layers, as llama.cpp does (llama-model.cpp, load_tensors)
    elif dep.balance == "speed" and len(gpus) > 1:
        tensor_split = tuple(g.bandwidth_bytes_per_s or 0.0 for g in gpus)  # decode speed follows bandwidth
    elif dep.balance == "memory" and len(gpus) > 1:
        tensor_split = tuple(float(g.memory_bytes) for g in gpus)
    if tensor_split is not None and not any(tensor_split):
        tensor_split = None  # llama.cpp: all zero = the default split (by memory)
    fa = engine.flash_attention_default if dep.flash_attention is None else dep.flash_attention
    if engine.family != "llama.cpp" and (dep.gpu_layers is not None or dep.cpu_moe_layers):
        raise PlannerError(f"{engine.id} plans no layer offload to host RAM here; use a llama.cpp engine for -ngl / --n-cpu-moe")
    if dep.gpu_layers is not None and dep.gpu_layers > arch.n_layers:
        raise PlannerError(f"--gpu-layers {dep.gpu_layers} is more than the model's {arch.n_layers} layers")
    if dep.cpu_moe_layers > arch.n_layers:
        raise PlannerError(f"--cpu-moe {dep.cpu_moe_layers} is more than the model's {arch.n_layers} layers")
    if dep.cpu_moe_layers and arch.n_experts <= 1:
        raise PlannerError(f"{card.id} is not a mixture-of-experts model: --cpu-moe does not apply")
    check_engine_rules(engine, split, len(gpus), kv_name, fa, arch, v_name)
    if dep.gpu_memory_utilization is not None:
        if engine.memory.gpu_memory_utilization is None:
            raise PlannerError(f"{engine.id} takes the memory its context needs; --gpu-memory-utilization is vLLM's "
                               "(SGLang: --mem-fraction-static)")
        from planner.schema import Quantity

        given = Quantity(value=dep.gpu_memory_utilization, unit="ratio", source="user",
                         note="--gpu-memory-utilization as given")
        engine = engine.model_copy(update={"memory": engine.memory.model_copy(update={"gpu_memory_utilization": given})})
    host = catalog.host(dep.host) if dep.host else None
    assumed_host = host or catalog.hosts.get(DEFAULT_HOST)

    ctx_tokens, notes = dep.ctx_tokens, [what_if] if what_if else []
    fe = catalog.frontends.get((dep.engine or "").split("@")[0].strip().lower().replace(" ", "").replace("-", "")
                               .replace("_", ""))
    if fe is not None and ctx_tokens is None:  # e.g. Ollama: a default context by VRAM, not the model's maximum
        default = fe.default_ctx(sum(g.memory_bytes for g in gpus))
        if default:
            ctx_tokens = min(default, arch.max_position_embeddings)
            where = (f" on {sum(g.memory_bytes for g in gpus) / GiB:.0f} GiB of VRAM"
                     if any(t.below_vram_gib is not None for t in fe.ctx_tiers) else "")
            notes.append(f"{fe.name}'s default context{where}: {ctx_tokens:,} tokens (set {fe.ctx_setting}, or --ctx "
                         "here, for more)")
    notes += fork_notes
    boundary_v = bool(v_kv.boundary_v_type) and arch.n_layers >= v_kv.boundary_v_min_layers
    r = Resolved(
        model_id=card.id, model_name=card.name, arch=arch, weights=weights, gpus=gpus, engine=engine,
        quant=quant, kv_quant=kv_name, kv_bytes_per_value=kv.bytes_per_value, ctx_tokens=ctx_tokens,
        batch=dep.batch, split=split,
        ubatch_tokens=dep.ubatch_tokens or default_ubatch(engine, gpus),
        gpu_layers=arch.n_layers if dep.gpu_layers is None else dep.gpu_layers,
        cpu_moe_layers=dep.cpu_moe_layers, host=host, host_ram_bytes=dep.host_ram_bytes,
        kv_boundary_bf16=(0 if any(a.kind in ("linear", "mamba", "conv") for a in arch.layers) else kv.boundary_layers_bf16)
        or (v_kv.boundary_v_layers if boundary_v else 0),
        kv_boundary_v=catalog.kv_type(v_kv.boundary_v_type)[1].bytes_per_value if boundary_v else 0.0,
        kv_speed_note=kv.speed_note or v_kv.speed_note or "",
        tensor_split=tensor_split, nodes=nodes, network=network, rails=rails, tp=tp,
        expert_parallel=dep.expert_parallel, dp=dep.dp or 1, exact_weights=exact, flash_attention=fa,
        load_mode=dep.load_mode or "",
        kernel_of={k: t.kernel for k, t in catalog.formats.types.items()}, hf_repo=card.hf_repo,
        auto_offload=(engine.family == "llama.cpp" and dep.gpu_layers is None and not dep.cpu_moe_layers
                      and gpus[0].memory_kind == "dedicated" and tp == 1),
        host_max_bytes=assumed_host.max_capacity_bytes if assumed_host else None,
        host_max_from=assumed_host.id if assumed_host else "",
        notes=tuple(notes), checkpoint_quant=stored,
        kv_quant_v=v_name if v_name != kv_name else "", kv_v_bytes_per_value=v_kv.bytes_per_value if v_name != kv_name else 0.0,
    )
    if dep.spec:
        from planner.spec import resolve_spec

        r = replace(r, spec=resolve_spec(catalog, r, dep.spec, dep.draft_len, dep.accept, dep.accept_len, dep.draft_quant))
    elif any(x is not None for x in (dep.draft_len, dep.accept, dep.accept_len, dep.draft_quant)):
        raise PlannerError("--draft-len, --accept, --accept-len and --draft-quant need --spec (mtp, dflash, eagle or draft:MODEL)")
    return r

