"""Schemas of hwdb/: GPUs, host-memory profiles and engine profiles.

One TOML file per entity; the file stem is its id. Vendor facts live here; fitted
efficiencies (calibration profiles) never share a file with them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from planner import units
from planner.schema import Quantity, Sourced, Strict


class GpuSpecs(Strict):
    memory: Quantity
    memory_bandwidth: Quantity | None = None
    # Dense tensor peaks. `fp16_tensor` is the FP16-accumulate rate; GeForce cards run
    # FP32-accumulate (what BF16 and most inference kernels use) at half of it.
    fp16_tensor: Quantity | None = None
    fp16_tensor_fp32acc: Quantity | None = None
    fp8_tensor: Quantity | None = None
    fp8_tensor_fp32acc: Quantity | None = None
    fp4_tensor: Quantity | None = None
    int8_tensor: Quantity | None = None
    fp32_vector: Quantity | None = None
    fp16_vector: Quantity | None = None  # packed-math FP16 on cards without matrix units (MI50/MI60)
    int8_dot: Quantity | None = None  # dot4 INT8 on cards without matrix units
    l2_cache: Quantity | None = None
    tdp: Quantity | None = None
    boost_clock: Quantity | None = None
    sm_count: Quantity | None = None
    bus_width_bits: Quantity | None = None
    # Unified-memory machines: how much of `memory` the GPU may use by default.
    gpu_allocatable: Quantity | None = None


class PcieGen(Strict):
    lane_bandwidth: Quantity  # per lane, per direction, after line encoding


class CtxTier(Strict):
    below_vram_gib: float | None = None  # None: every larger VRAM
    ctx_tokens: int = Field(gt=0)


class Frontend(Strict):
    """A program that runs llama.cpp with its own defaults (hwdb/frontends.toml)."""

    name: str
    ctx_setting: str
    source: str
    ctx_tiers: tuple[CtxTier, ...] = ()

    def default_ctx(self, vram_bytes: int) -> int | None:
        for t in self.ctx_tiers:
            if t.below_vram_gib is None or vram_bytes < t.below_vram_gib * units.GiB:
                return t.ctx_tokens
        return None


class FrontendTable(Sourced):
    frontends: dict[str, Frontend]


class SpeedCaveat(Strict):
    """A class of plans whose published runs miss planner's speed by more than its intervals say
    (hwdb/caveats.toml): engine families, and the model's attention kind and MoE, up to a batch."""

    families: tuple[str, ...]
    engines: tuple[str, ...] = ()  # only these engine ids of the families (empty: all)
    attention: Literal["mla"] | None = None
    moe: bool = False
    max_batch: int = Field(ge=1)
    metric: Literal["decode", "prefill"] = "decode"  # the speed whose interval the caveat withdraws
    source: str
    note: str

    def applies(self, family: str, arch, batch: int, engine_id: str = "") -> bool:
        return (family in self.families and (not self.engines or engine_id in self.engines) and batch <= self.max_batch and (not self.moe or arch.n_experts > 1)
                and (self.attention is None or any(a.kind == self.attention for a in arch.layers)))


class CaveatTable(Sourced):
    caveats: tuple[SpeedCaveat, ...]


class Network(Strict):
    """A network between machines (hwdb/networks.toml): one transfer's bandwidth in one direction and a
    small message's one-way latency, through the stack the engine uses."""

    id: str = ""
    name: str
    aliases: tuple[str, ...] = ()
    transport: Literal["tcp", "rdma"]
    line_rate: Quantity
    bandwidth: Quantity
    latency: Quantity
    nccl_hop_overhead: float = 0.0  # seconds (NetworkTable.nccl), set when the catalog loads


class Nccl(Strict):
    hop_overhead: Quantity  # per hop between machines, on top of the network's latency


class NetworkTable(Sourced):
    networks: dict[str, Network]
    nccl: Nccl


class LinkTable(Sourced):
    """hwdb/links.toml: PCIe generations (PCI-SIG figures)."""

    pcie: dict[str, PcieGen]
    # a cudaMemcpyAsync between the GPU and pinned host memory: its share of the link's rate, and its
    # fixed time (measured: hwdb/runs/h200-pcie-copy.csv)
    pinned_copy_eff: Quantity
    copy_latency: Quantity


class Interconnect(Strict):
    pcie_gen: int | None = None
    pcie_lanes: int | None = None
    multi_gpu_link: str = ""
    link_bandwidth: Quantity | None = None


class Price(Strict):
    kind: Literal["launch", "street", "used"]
    date: str | None = None
    usd: Quantity


class Gpu(Sourced):
    id: str = ""
    name: str
    vendor: Literal["nvidia", "amd", "intel", "apple"]
    architecture: str
    # the architecture family kernels and fitted efficiencies are keyed by (docs/kernel-paths.md)
    family: Literal["volta", "turing", "ampere", "ada", "hopper", "blackwell", "blackwell-dc", "gcn5", "cdna3",
                    "rdna3", "rdna3.5", "rdna4", "apple-m", "xe"] | None = None  # None: no kernel data, said so
    compute_capability: str
    memory_type: str
    memory_kind: Literal["dedicated", "unified"]
    status: Literal["released", "unreleased"]
    aliases: tuple[str, ...] = ()
    notes: str = ""
    specs: GpuSpecs
    interconnect: Interconnect = Interconnect()
    prices: tuple[Price, ...] = ()

    @model_validator(mode="after")
    def _unified_has_allocatable(self) -> "Gpu":
        if self.memory_kind == "unified" and self.specs.gpu_allocatable is None:
            raise ValueError("a unified-memory entry needs specs.gpu_allocatable (what the GPU may use)")
        return self

    @property
    def memory_bytes(self) -> int:
        """Bytes the GPU can allocate: the card's memory, or the GPU's default share of a
        unified-memory machine."""
        if self.specs.gpu_allocatable is not None:
            return int(self.specs.gpu_allocatable.si)
        return int(self.specs.memory.si)

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        q = self.specs.memory_bandwidth
        return q.si if q else None

    def price_usd(self) -> tuple[float, str] | None:
        """Street price where known, else launch price: (usd, 'street 2026-06-22')."""
        for kind in ("street", "used", "launch"):
            for p in self.prices:
                if p.kind == kind:
                    return p.usd.value, f"{kind} {p.date or ''}".strip()
        return None


class HostMemory(Sourced):
    """Host RAM for offloaded layers/experts: DDR channels, or a unified-memory machine."""

    id: str = ""
    name: str
    memory_type: str
    channels: int = Field(ge=1)
    transfer_rate: Quantity  # MT/s
    bus_width_bits_per_channel: int = 64
    # the most RAM a host of this kind holds (DIMM slots x the largest DIMM): the host-RAM check
    # when --host-ram is not given; a bound, so that an absurd plan never passes unchecked
    max_capacity: Quantity | None = None
    notes: str = ""

    @property
    def max_capacity_bytes(self) -> int | None:
        return int(self.max_capacity.si) if self.max_capacity is not None else None

    @property
    def bandwidth_bytes_per_s(self) -> float:
        # peak = channels x bus width (bytes) x transfers/s; JEDEC DDR channels are 64 bit wide
        return self.channels * (self.bus_width_bits_per_channel / 8) * self.transfer_rate.si


ComputeBufferRule = Literal["llamacpp", "vllm", "mistralrs", "exllama"]


class UbatchTier(Strict):
    """An engine default that depends on the GPU: at least `min_memory_gib` per device (and not one of
    `except_gpus`) gives `tokens` (vLLM's max_num_batched_tokens for `vllm serve`)."""

    min_memory_gib: float = Field(ge=0)
    tokens: int = Field(gt=0)
    max_num_seqs: int | None = None  # the tier's default concurrency limit, where the engine sets one too
    except_gpus: tuple[str, ...] = ()
    source: str


class EngineMemoryRules(Strict):
    """How an engine spends device memory beyond weights and KV cache."""

    runtime_overhead: Quantity  # per device: driver context, library handles, allocator slack
    compute_buffer_rule: ComputeBufferRule
    default_ubatch_tokens: int = 512
    ubatch_tiers: tuple[UbatchTier, ...] = ()  # first tier the GPU meets replaces default_ubatch_tokens
    default_batch_tokens: int = 2048
    ctx_padding_tokens: int = 1
    token_embedding_on_host: bool = False
    # vLLM: fraction of each GPU's memory the engine may take in all
    gpu_memory_utilization: Quantity | None = None
    cuda_graph_memory: Quantity | None = None
    max_num_seqs: int = 256  # vLLM/SGLang: running sequences whose logits the profiler sizes
    # Sliding-window layers keep window x sequences (+ one ubatch) unless the engine keeps full cache
    swa_extra_ubatch: bool = True
    recurrent_state_dtype: str = "f32"
    # vLLM loads a multimodal checkpoint's encoders; llama.cpp needs a separate --mmproj file
    loads_vision_encoder: bool = False
    # compute_buffer_rule "exllama": the widest output a linear is dequantized to fp16 for at once, and the logit
    # rows reserved; "mistralrs": the square of the attention-chunk tokens reserved per head
    reconstruct_max_outputs: int = Field(default=0, ge=0)
    logit_rows: int = Field(default=0, ge=0)
    attention_reserve_tokens: int = Field(default=0, ge=0)


SpecField = Literal["fp16_tensor", "fp16_tensor_fp32acc", "fp8_tensor", "fp8_tensor_fp32acc", "fp4_tensor",
                    "int8_tensor", "fp32_vector", "fp16_vector", "int8_dot"]


class EngineKernels(Strict):
    """Which compute peak each kernel path of the engine runs at (the first spec the GPU has),
    and how it moves data between GPUs. Engine behaviour, read from its source; efficiencies
    are fitted separately (hwdb/calibrations/)."""

    gemv_max_tokens: int = Field(ge=0)  # steps of at most this many tokens use mat-vec kernels
    gemv_peaks: tuple[SpecField, ...]
    gemm_peaks: dict[str, tuple[SpecField, ...]]  # by weight kernel class (formats.toml `kernel`)
    attention_peaks: tuple[SpecField, ...]
    tp_syncs_per_layer: int = Field(ge=1)  # cross-GPU reductions per layer under tensor split
    activation_bytes: int = Field(ge=1)  # bytes per activation value sent between GPUs
    pipeline_prefill: bool  # layer split overlaps ubatches of a prompt across GPUs
    offload_min_batch: int = Field(ge=0)  # steps of at least this many tokens run host-resident layers on the GPU
    tensor_split_excluded: tuple[str, ...] = ()  # HF model_type values the tensor split refuses
    # how a pipeline (layer) split spreads layers over stages: by each GPU's share (llama.cpp -ts), or
    # n // pp each with the extra layers on the stages before the last (vLLM) or on the last (SGLang)
    pp_partition: Literal["share", "remainder_before_last", "remainder_last"] = "share"
    pp_boundary_tensors: int = Field(default=1, ge=1)  # activation tensors sent per stage boundary
    kv_heads_replicated: bool = False  # tensor parallel: max(1, kv_heads // tp) KV heads per GPU, MLA whole
    # every step copies each output token's logits (vocab x 4 B of f32) to host memory, where sampling runs
    logits_to_host: bool = False
    source: str


SpecMethod = Literal["draft", "mtp", "dflash", "eagle"]


class EngineSpeculative(Strict):
    """Which speculative methods the engine runs and its default draft length (tokens drafted
    per verification step), where it has one."""

    methods: tuple[SpecMethod, ...]
    default_draft_len: Quantity | None = None
    # how a hybrid (recurrent) target returns to the last accepted token: "host" = a copy of each
    # sequence's state in host memory every cycle, restored after a rejection; "device" = one
    # state slot per drafted position on the GPU
    recurrent_checkpoint: Literal["host", "device"] = "device"
    # how far a draft model's vocabulary may differ in size from the target's (llama.cpp checks the
    # tokens themselves past that); unset: the sizes must be equal
    max_vocab_difference: int | None = None
    # methods the engine refuses with a pipeline (layer) split over several GPUs
    no_pipeline_methods: tuple[SpecMethod, ...] = ()
    method_notes: dict[str, str] = {}
    source: str


class AdmissionBudget(Strict):
    """SGLang's admission of waiting requests: running requests' remaining outputs (at most
    `clip_new_tokens` each) are reserved at new_token_ratio, which starts at `ratio_init` and falls to
    ratio_init x `ratio_min_factor` over `decay_steps` steps."""

    ratio_init: float = Field(gt=0, le=1)
    ratio_min_factor: float = Field(gt=0, le=1)
    decay_steps: int = Field(ge=1)
    clip_new_tokens: int = Field(ge=1)
    source: str


class EngineServer(Strict):
    """How the engine's server schedules requests, for `planner simulate` (docs/simulate.md)."""

    block_tokens: int = Field(ge=1)  # KV allocation (and prefix-cache hit) granularity, tokens
    prefix_caching_default: bool  # prefix caching / radix cache / cache_prompt on unless turned off
    # host time per sequence whose next token is sampled in a step, per vocabulary entry
    # (llama-server samples on the CPU, slot after slot); unset: sampled on the GPU, in the step
    sample_per_vocab_entry: Quantity | None = None
    # llama-server's host prompt cache (--cache-ram): its default size, and how fast a slot's state (KV
    # and recurrent state) is copied into it when the slot takes a new request (blocking every slot)
    prompt_cache_default: Quantity | None = None
    prompt_cache_save_bandwidth: Quantity | None = None
    admission_budget: AdmissionBudget | None = None  # SGLang; unset: vLLM's whole-prompt gate
    source: str


class EngineVersionPin(Strict):
    """The defaults of an earlier release where they differ from the profile's (`--engine vllm@0.11`):
    EngineMemoryRules fields, read from that release's source (`source`: file:line)."""

    source: str
    memory: dict[str, Any] = {}
    kv_types: tuple[str, ...] | None = None  # the KV-cache types that release takes, where it took fewer


class Engine(Sourced):
    id: str = ""
    name: str
    version: str = ""  # the release whose defaults the profile holds
    versions: dict[str, EngineVersionPin] = {}  # earlier releases by "major.minor", where defaults moved
    pinned: str = ""  # set by a pin (--engine vllm@0.11): the release planned
    family: Literal["llama.cpp", "vllm", "sglang", "torch", "mlx", "mistralrs", "exllama"]
    backend: Literal["cuda", "rocm", "vulkan", "metal", "sycl"]
    vendors: tuple[str, ...]
    weight_formats: tuple[str, ...]
    kv_types: tuple[str, ...]
    default_kv_type: str
    default_quant: str
    split_modes: tuple[Literal["layer", "tensor"], ...] = ("layer",)
    default_split: Literal["layer", "tensor"] = "layer"
    flash_attention_default: bool = True
    # weight storage types the engine cannot load (fnmatch patterns, e.g. "IQ*"), and why
    # a fork that runs its parent's kernels takes the parent's kernel-path table (hwdb/paths/ID.toml)
    kernel_paths: str = ""
    refused_types: tuple[str, ...] = ()
    refused_types_why: str = ""
    memory: EngineMemoryRules
    kernels: EngineKernels
    speculative: EngineSpeculative | None = None
    server: EngineServer | None = None
    notes: str = ""
