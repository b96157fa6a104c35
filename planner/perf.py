"""PerfEstimate: prefill and decode speed of a resolved deployment, from a roofline per
operation (docs/equations.md#speed).

A step (one forward pass over `tokens` new tokens of `seqs` sequences at `depth` tokens of
context) costs, on each device stage, the sum over its operations of
max(bytes / (peak bandwidth x efficiency), FLOPs / (peak compute x efficiency)), plus a fixed
time per layer. Stages compose by split mode: a layer split adds them up (a token passes the
devices in turn), a tensor split takes the slowest share and adds the cross-GPU reductions.
Efficiencies come from a calibration profile (planner.calibration); peaks from the GPU entry;
which peak a kernel runs at from the engine profile.

`compile_steps` turns a Resolved deployment into plain numbers once; `step` evaluates numpy
arrays of workloads (sweeps of thousands of deployments cost microseconds each); `estimate`
builds the report of one deployment. Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from planner.calibration import Efficiency
from planner.deployment import Resolved
from planner.hardware import Gpu, HostMemory, LinkTable
from planner.memory import kv_gpu_factor, kv_value_bytes, layer_devices, output_device, shares
from planner.paths import FLOAT_TYPES, PathTable, attention_rule, segments
from planner.schema import Strict

KERNELS = ("float", "legacy", "kquant", "iquant", "fp8", "fp4", "int4")
K = len(KERNELS)
SIMPSON = (1 / 6, 4 / 6, 1 / 6)
F16_BYTES = 2  # a batched flash-attention kernel converts a quantized cache to f16 first
# a Mamba-2 layer's scan per token, as a share of a Gated DeltaNet layer's: on the H200 the per-token slope from
# 16 to 32 tokens is 0.534 us for Nemotron-3-Nano's ssm_scan_f32_group against 1.008 us for Qwen3.6-27B's
# gated_delta_net_cuda (hwdb/runs/llamacpp-h200.kernels.csv: (20.54 - 12.00) / 16 and (34.77 - 18.64) / 16)
MAMBA_SCAN_SHARE = 0.53
SCAN_OP = "recurrent token loop"
LOGIT_BYTES = 4  # a logit as llama.cpp copies it: f32 (llama-context.cpp:1950, n_outputs * n_vocab * sizeof(float))
MAX_VEC_TOKENS = 64  # query tokens per sequence searched for the vector attention kernel's range
MINOR_CLASS_SHARE = 0.01  # weight classes under this share of a stage's weights need no published peak  # weights of start, middle, end of a phase whose depth grows


@dataclass(frozen=True)
class Stage:
    """One device's part of every step: per-kernel-class weight bytes and parameters, and the
    per-token sizes of its attention and recurrent state. Arrays are indexed by KERNELS."""

    name: str
    kind: str  # "gpu" or "host"
    bandwidth: float  # peak bytes/s
    layers: int
    moe_layers: int  # layers with routed experts (router, top-k, gathers: extra kernels)
    linear_layers: int  # linear-attention layers (conv, gates, recurrent update: extra kernels)
    w_bytes: np.ndarray  # dense weights, read once per step
    w_params: np.ndarray
    e_bytes: np.ndarray  # all expert weights of the stage's MoE layers
    e_params: np.ndarray
    head_bytes: np.ndarray  # output head (read every step, computed for the last token of a sequence)
    head_params: np.ndarray
    kv_full: float  # KV bytes per context token, full-attention layers
    kv_window: tuple[tuple[int, float], ...]  # (window tokens, bytes per token) of sliding layers
    attn_flops_full: float  # attention FLOPs per query token per context token
    attn_flops_window: tuple[tuple[int, float], ...]
    state_bytes: float  # recurrent state per sequence (read and written each step)
    state_flops: float  # per token
    gemm_peak: np.ndarray  # FLOP/s by kernel class for steps above gemv_max_tokens (inf = unknown)
    gemv_peak: float
    attn_peak: float
    # kernel paths (hwdb/paths/): per kernel class, the kernel for every token count of the dense
    # (mul_mat) and the expert (mul_mat_id) matmuls; None where the engine has no table for the GPU
    dense_paths: tuple["ClassPaths | None", ...] | None = None
    expert_paths: tuple["ClassPaths | None", ...] | None = None
    attn_vec_max: float = -1.0  # query tokens per sequence up to which the vector FA kernel runs
    attn_convert: bool = False  # batched FA converts a quantized cache to f16 first
    attn_vec_convert: bool = False  # so does the vector kernel, for a K/V pair it was not compiled for
    kv_quant_frac: float = 1.0  # share of the cache bytes in a quantized type (a q8_0/f16 pair: part)
    kv_quantized: bool = False
    kv_f16_per_byte: float = 1.0  # f16 bytes per cache byte (2 / bytes per value)
    scan_layers: float = 0.0  # Gated DeltaNet layers + MAMBA_SCAN_SHARE x Mamba-2 layers (sequential token loops)


@dataclass(frozen=True)
class ClassPaths:
    """The kernels one weight class runs, by token count: segment i covers tokens >= cuts[i]."""

    cuts: np.ndarray
    gemm: np.ndarray  # bool per segment: a GEMM kernel (compute at the tensor/dot peak) or a mat-vec
    peak: np.ndarray  # FLOP/s per segment (GEMM: its ceiling; mat-vec: the INT8 dot or FP32 rate)
    kernels: tuple[str, ...]
    float_weights: bool  # f16/bf16/f32: float GEMM efficiency, else the quantized one

    def at(self, tokens: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.cuts, tokens, side="right") - 1, 0, len(self.cuts) - 1)


@dataclass(frozen=True)
class StepModel:
    gpus: tuple[Stage, ...]
    host: Stage | None
    split: str  # "single", "layer" or "tensor"
    eff: Efficiency
    hidden: int
    gpu_layers: int
    n_experts: int
    experts_per_tok: int
    gemv_max_tokens: int
    offload_min_batch: int
    pipeline_prefill: bool
    link_bandwidth: float  # bytes/s per direction between GPUs
    link_name: str
    pcie_bandwidth: float  # bytes/s per direction host <-> GPU 0
    activation_bytes: int
    syncs_per_layer: int
    compute_known: bool  # every GPU publishes the compute peaks its kernels use
    paths: str = ""  # the kernel-path table the GPUs run (empty: the classic roofline)
    unpathed: tuple[str, ...] = ()  # "op TYPE on family" the table does not describe (generic roofline there)
    # several machines (llama.cpp RPC): GPU boundaries inside one machine, and the other machines' RPC
    # servers, each costing per step a send of the activations and a blocking fetch of its output
    local_boundaries: int | None = None  # None: every boundary is local (one machine)
    rpc_servers: int = 0
    net_latency_s: float = 0.0  # one way
    net_bandwidth: float = math.inf  # bytes/s one direction, one link
    net_hop_s: float = 0.0  # NCCL's own time per hop between machines (vLLM / SGLang)
    # vLLM / SGLang: tensor-parallel groups of `tp` GPUs (pipeline stages, run in turn); across machines
    # a group spanning `tp_machines` machines reduces over the network, `net_boundaries` stage
    # boundaries cross it, and each machine has `rails` links
    tp: int = 1
    dp: int = 1  # data-parallel attention ranks per stage: each its 1/dp of the sequences, the experts over all
    ep: int = 1  # expert parallel: each stage's experts split whole over this many GPUs (1: sliced, as tensor parallel)
    boundary_tensors: int = 1  # activation tensors a stage boundary sends (vLLM: hidden states and residual)
    tp_machines: int = 1  # machines one stage's GPUs span
    net_boundaries: int = 0
    rails: int = 1
    # llama.cpp copies each output token's logits to pinned host memory every step (EngineKernels.logits_to_host):
    # bytes per output, and the copy's rate and fixed time (hwdb/links.toml); 0 bytes where the engine samples on
    # the GPU or the GPU shares the host's memory
    logits_bytes: float = 0.0
    logits_copy_bw: float = math.inf
    logits_copy_latency_s: float = 0.0


# --- compile ---------------------------------------------------------------------------------


def _peak(gpu: Gpu, fields: tuple[str, ...]) -> float:
    for f in fields:
        q = getattr(gpu.specs, f)
        if q is not None:
            return q.si
    return math.inf


def _attn_flops(a) -> float:
    """FLOPs per query token per context token of one layer: QK^T and PV, 2 FLOP per MAC."""
    if not a.softmax:  # recurrent and conv layers: a constant cost per token (state_flops)
        return 0.0
    if a.kind == "mla":  # absorbed MLA: scores and values over the latent (estimate)
        return 2 * a.n_heads * 2 * a.mla_cache_dim
    return 2 * a.n_heads * (a.k_head_dim + a.v_head_dim)


def _kv_read_bytes(a, kv_bytes: float, v_bytes: float | None = None) -> float:
    """KV bytes read per context token (a layer sharing another's cache still reads it); K and V
    at their own type's size."""
    if not a.softmax:
        return 0.0
    if a.kind == "mla":
        return (a.mla_cache_dim + a.indexer_cache_dim) * kv_bytes
    return a.n_kv_heads * (a.k_head_dim * kv_bytes + a.v_head_dim * (kv_bytes if v_bytes is None else v_bytes))


def link_bandwidth(gpus: tuple[Gpu, ...], links: LinkTable) -> tuple[float, str]:
    """Per-direction bandwidth between the GPUs: their shared NVLink/Infinity Fabric when all
    have one, else the slowest PCIe slot."""
    bw = [g.interconnect.link_bandwidth for g in gpus]
    if len(gpus) > 1 and all(bw) and len({g.id for g in gpus}) == 1:
        return bw[0].si / 2, gpus[0].interconnect.multi_gpu_link  # quoted as both directions
    return pcie_bandwidth(gpus, links)


def pcie_bandwidth(gpus: tuple[Gpu, ...], links: LinkTable) -> tuple[float, str]:
    best = []
    for g in gpus:
        gen, lanes = g.interconnect.pcie_gen, g.interconnect.pcie_lanes
        if gen is None or lanes is None or str(gen) not in links.pcie:
            continue
        best.append((lanes * links.pcie[str(gen)].lane_bandwidth.si, f"PCIe {gen}.0 x{lanes}"))
    if not best:
        return math.inf, "on-package (unified memory)"
    return min(best)


def _class_paths(table: PathTable, op: str, storage: str, gpu: Gpu) -> ClassPaths | None:
    if gpu.family is None or gpu.family in table.families_not_covered or table.refuses(op, storage):
        return None
    segs = segments(table, op, storage, gpu.family)
    if any(sg.rule is None for sg in segs):
        return None  # a token range no rule covers: the table does not describe this case
    floats = storage.lower() in FLOAT_TYPES

    def compute_peak(rule) -> float:
        ceiling = rule.ceiling_for(gpu.family)
        if ceiling != "memory_bandwidth":
            return _peak(gpu, (ceiling,))
        # mat-vec kernels: CUDA/HIP quantized ones quantize the activations to q8_1 and use the INT8
        # dot product (ggml-cuda mmvq.cu vec_dot_*_q8_1 -> ggml_cuda_dp4a); the table says otherwise
        return _peak(gpu, (rule.math_for(storage),))

    return ClassPaths(cuts=np.array([sg.lo for sg in segs], dtype=float),
                      gemm=np.array([sg.rule.ceiling_for(gpu.family) != "memory_bandwidth" for sg in segs]),
                      peak=np.array([compute_peak(sg.rule) for sg in segs]),
                      kernels=tuple(sg.rule.kernel for sg in segs), float_weights=floats)


def compile_steps(r: Resolved, eff: Efficiency, links: LinkTable, host: HostMemory | None,
                  table: PathTable | None = None) -> StepModel:
    """The per-stage numbers every step needs, computed once per deployment. `table`: the
    engine's kernel paths, if it has any."""
    arch, kern = r.arch, r.engine.kernels
    n_gpu = len(r.gpus)
    types = {w.tensor.name: w for w in r.weights}
    kidx = {k: i for i, k in enumerate(KERNELS)}
    split = "single" if n_gpu == 1 else r.split
    dev_of = layer_devices(r)  # -1 host, else its pipeline stage (tensor split: 0 = shared by all)
    tp, dp, grp = r.tp_size, r.dp, r.stage_gpus
    share = shares(r)  # within a tensor-parallel group: each GPU's part of its stage
    share = [share[d] / sum(share[d // grp * grp:(d // grp + 1) * grp]) if tp > 1 else 1.0 for d in range(n_gpu)]

    def blank():
        return dict(w_bytes=[0.0] * K, w_params=[0.0] * K, e_bytes=[0.0] * K, e_params=[0.0] * K,  # plain
                    head_bytes=[0.0] * K, head_params=[0.0] * K,  # floats while summing: numpy items are slow
                    kv_full=0.0, kv_window=[],
                    attn_flops_full=0.0, attn_flops_window=[], state_bytes=0.0, state_flops=0.0, layers=0,
                    moe_layers=0, linear_layers=0, scan_layers=0.0)

    n_stage = r.pp_size
    acc = [blank() for _ in range(n_stage)]
    host_acc = blank()

    out_stage = min(output_device(r), n_stage - 1)

    def where(layer: int | None) -> dict:
        if layer is None:
            return acc[out_stage]  # output head and final norm: the last GPU with a share
        d = dev_of[layer]
        return host_acc if d < 0 else acc[min(d, n_stage - 1)]

    storage_bytes: dict[tuple[int, bool], dict[str, int]] = {}  # (class, expert) -> bytes by storage type
    class_of = {st: kidx[_kernel_of(r, st)] for st in {w.storage for w in r.weights}}
    n_layers = arch.n_layers
    for w in r.weights:
        t = w.tensor
        layer = t.layer
        if t.group != "text" or t.role == "token_embd" or (layer is not None and layer >= n_layers):
            continue  # vision/MTP not run in text decode; embeddings: one row per token
        c = class_of[w.storage]
        expert = t.n_experts > 1
        by_type = storage_bytes.setdefault((c, expert), {})
        by_type[w.storage] = by_type.get(w.storage, 0) + w.bytes
        a = where(layer)
        if layer is None:
            a["head_bytes"][c] += w.bytes
            a["head_params"][c] += t.params
        elif expert:
            if layer < r.cpu_moe_layers and dev_of[layer] >= 0:
                a = host_acc  # --n-cpu-moe: the expert stacks stay in host RAM
            a["e_bytes"][c] += w.bytes
            a["e_params"][c] += t.params
        else:
            a["w_bytes"][c] += w.bytes
            a["w_params"][c] += t.params
    if arch.tie_word_embeddings:  # the head reads the tied embedding matrix
        emb = types.get("token_embd.weight")
        if emb is not None:
            a = where(None)
            a["head_bytes"][kidx[_kernel_of(r, emb.storage)]] += emb.bytes
            a["head_params"][kidx[_kernel_of(r, emb.storage)]] += emb.tensor.params

    state_dtype = 4 if r.engine.memory.recurrent_state_dtype == "f32" else 2
    for i, a in enumerate(arch.layers):
        s = where(i)
        s["layers"] += 1
        s["moe_layers"] += int(arch.moe_layers[i]) if i < len(arch.moe_layers) else 0
        s["linear_layers"] += int(a.kind in ("linear", "mamba"))  # recurrent mixers: conv, gates and scan kernels
        s["scan_layers"] += 1.0 if a.kind == "linear" else MAMBA_SCAN_SHARE if a.kind == "mamba" else 0.0
        # the cache one GPU reads is its share of the group's (KV heads replicated past tp, an MLA
        # latent whole on every GPU): scaled here so that the group share below gives kv_gpu_factor
        kvb = _kv_read_bytes(a, *kv_value_bytes(r, i)) * kv_gpu_factor(r, a) * tp
        fl = _attn_flops(a)
        if a.kind == "sliding" and a.window_tokens:
            s["kv_window"].append((a.window_tokens, kvb))
            s["attn_flops_window"].append((a.window_tokens, fl))
        else:
            s["kv_full"] += kvb
            s["attn_flops_full"] += fl
        if a.compress_ratio:  # every compressed entry read and scored (an upper bound where a top-k selects)
            s["kv_full"] += a.compressed_dim * r.kv_bytes_per_value / a.compress_ratio
            s["attn_flops_full"] += 2 * a.n_heads * 2 * a.k_head_dim / a.compress_ratio
        st = a.ssm_state_elems + a.conv_state_elems
        s["state_bytes"] += st * state_dtype
        s["state_flops"] += 4 * a.ssm_state_elems  # decay, rank-1 update and readout, ~2 MAC per element

    def main_type(c: int, expert: bool) -> str | None:  # the class's storage type with the most bytes
        by_type = storage_bytes.get((c, expert))
        return max(by_type, key=by_type.get) if by_type else None

    unpathed: set[str] = set()

    def class_paths(gpu: Gpu | None, op: str, expert: bool):
        if table is None or gpu is None:
            return None
        out = []
        for c in range(K):
            st = main_type(c, expert) or (main_type(c, not expert) if c == 0 else None)
            out.append(_class_paths(table, op, st, gpu) if st else None)
            if st and out[-1] is None and gpu.family is not None and gpu.family not in table.families_not_covered \
                    and not table.refuses(op, st) and storage_bytes.get((c, expert)):
                unpathed.add(f"{op} {st} on {gpu.family}")
        return tuple(out)

    kv_name, v_name = r.kv_quant.lower(), r.v_type.lower()
    kv_quant = kv_name not in FLOAT_TYPES or v_name not in FLOAT_TYPES

    def attn_paths(gpu: Gpu | None) -> dict:
        if table is None or gpu is None:
            return {}
        def is_vec(q: int) -> bool:
            rule = attention_rule(table, gpu.family, q, kv_name, r.flash_attention, v_name)
            return rule is not None and rule.kernel.endswith("vec")

        vec_max = 0  # the vector kernel covers 1..vec_max query tokens (a contiguous range from 1)
        while vec_max < MAX_VEC_TOKENS and is_vec(vec_max + 1):
            vec_max += 1
        vec_max = vec_max or -1
        big = attention_rule(table, gpu.family, max(r.ubatch_tokens, 2), kv_name, r.flash_attention, v_name)
        one = attention_rule(table, gpu.family, 1, kv_name, r.flash_attention, v_name)
        # the share of cache bytes held in a quantized type, and f16 bytes per such byte
        k_q, v_q = kv_name not in FLOAT_TYPES, v_name not in FLOAT_TYPES
        kb = sum(a.kv_elems_per_token - a.v_elems_per_token for a in arch.layers) * r.kv_bytes_per_value
        vb = sum(a.v_elems_per_token for a in arch.layers) * r.v_bytes_per_value
        qb = kb * k_q + vb * v_q
        q_bytes_per_value = r.kv_bytes_per_value if k_q else r.v_bytes_per_value
        return dict(attn_vec_max=float(vec_max),
                    attn_convert=bool(big is not None and kv_quant and big.kv_conversion == "to_f16"),
                    # a K/V pair the build has no vector kernel for is converted to f16 even at decode
                    attn_vec_convert=bool(one is not None and kv_quant and one.kv_conversion == "to_f16"),
                    kv_quantized=kv_quant, kv_quant_frac=qb / (kb + vb) if kb + vb else 1.0,
                    kv_f16_per_byte=F16_BYTES / max(q_bytes_per_value, 1e-9))

    def stage(name: str, kind: str, gpu: Gpu | None, bw: float, a: dict, frac: float, efrac: float | None = None) -> Stage:
        efrac = frac if efrac is None else efrac  # the routed experts' share (data-parallel attention: 1 / dp of it)
        peaks = np.array([_peak(gpu, kern.gemm_peaks.get(k, kern.gemm_peaks.get("float", ()))) if gpu else math.inf
                          for k in KERNELS])
        return Stage(
            dense_paths=class_paths(gpu, "mul_mat", False), expert_paths=class_paths(gpu, "mul_mat_id", True),
            **attn_paths(gpu),
            name=name, kind=kind, bandwidth=bw, layers=a["layers"], moe_layers=a["moe_layers"],
            linear_layers=a["linear_layers"], scan_layers=a["scan_layers"],
            w_bytes=np.array(a["w_bytes"]) * frac, w_params=np.array(a["w_params"]) * frac,
            e_bytes=np.array(a["e_bytes"]) * efrac, e_params=np.array(a["e_params"]) * efrac,
            head_bytes=np.array(a["head_bytes"]) * frac, head_params=np.array(a["head_params"]) * frac,
            kv_full=a["kv_full"] * frac, kv_window=tuple((w, b * frac) for w, b in a["kv_window"]),
            attn_flops_full=a["attn_flops_full"] * frac,
            attn_flops_window=tuple((w, f * frac) for w, f in a["attn_flops_window"]),
            state_bytes=a["state_bytes"] * frac, state_flops=a["state_flops"] * frac, gemm_peak=peaks,
            gemv_peak=_peak(gpu, kern.gemv_peaks) if gpu else math.inf,
            attn_peak=_peak(gpu, kern.attention_peaks) if gpu else math.inf)

    stages = tuple(stage(g.id, "gpu", g, g.bandwidth_bytes_per_s or math.inf, acc[d // grp], share[d], share[d] / dp)
                   for d, g in enumerate(r.gpus))
    has_host = host_acc["layers"] or any(host_acc["e_bytes"])
    host_stage = None
    if has_host:
        hbw = host.bandwidth_bytes_per_s if host else math.inf
        host_stage = stage("host RAM", "host", None, hbw, host_acc, 1.0)
    lbw, lname = link_bandwidth(r.gpus, links)
    pbw, _ = pcie_bandwidth(r.gpus[:1], links)
    out_gpu = r.gpus[min(output_device(r), n_gpu - 1)]
    obw, _ = pcie_bandwidth((out_gpu,), links)  # the GPU holding the output head
    logits = {}
    if kern.logits_to_host and math.isfinite(obw):
        logits = dict(logits_bytes=float(arch.vocab_size * LOGIT_BYTES), logits_copy_bw=obw * links.pinned_copy_eff.si,
                      logits_copy_latency_s=links.copy_latency.si)
    compute_known = all(np.isfinite(s.gemm_peak[kidx[_kernel_of(r, r.weights[0].storage)]]) or s.kind == "host"
                        for s in stages)
    compute_known = compute_known and all(any(getattr(g.specs, f) is not None for f in kern.attention_peaks) for g in r.gpus)
    pathed = table is not None and all(s.dense_paths is not None and any(p is not None for p in s.dense_paths)
                                       for s in stages)
    if pathed:  # every kernel a prefill can take must have its real peak (classes under 1% of the
        # stage's weights, such as an f32 router, are priced by their bytes where the peak is unpublished)
        def needed(s: Stage, c: int) -> bool:
            total = float(np.sum(s.w_params + s.e_params + s.head_params)) or 1.0
            return (s.w_params[c] + s.e_params[c] + s.head_params[c]) / total >= MINOR_CLASS_SHARE

        compute_known = all(np.all(np.isfinite(p.peak[p.gemm])) for s in stages
                            for c, p in (*enumerate(s.dense_paths), *enumerate(s.expert_paths))
                            if p is not None and needed(s, c)) and all(np.isfinite(s.attn_peak) for s in stages)
    return StepModel(
        gpus=stages, host=host_stage, split=split, eff=eff, hidden=arch.hidden_size, gpu_layers=r.gpu_layers,
        n_experts=max(arch.n_experts, 1), experts_per_tok=max(arch.n_experts_per_tok, 1),
        gemv_max_tokens=kern.gemv_max_tokens, offload_min_batch=kern.offload_min_batch,
        pipeline_prefill=kern.pipeline_prefill, link_bandwidth=lbw, link_name=lname, pcie_bandwidth=pbw,
        activation_bytes=kern.activation_bytes, syncs_per_layer=kern.tp_syncs_per_layer, compute_known=compute_known,
        paths=table.id if pathed else "", unpathed=tuple(sorted(unpathed)), tp=tp, dp=dp, ep=grp if r.expert_parallel else 1,
        boundary_tensors=kern.pp_boundary_tensors, **logits, **_machines_of(r))


def _machines_of(r: Resolved) -> dict:
    """The StepModel fields of a plan over several machines: the stage boundaries inside one machine
    and those over the network, and the network. llama.cpp: each other machine is an rpc-server
    the client talks to; vLLM / SGLang: tensor-parallel groups within or across machines."""
    if not r.nodes or len(set(r.nodes)) < 2:
        return {}
    tp, n = r.stage_gpus, len(r.gpus)  # GPUs per stage (its tensor-parallel group, times the dp ranks)
    first = [r.nodes[s * tp] for s in range(n // tp)]  # the machine of each stage's first GPU
    crossings = sum(1 for s in range(1, n // tp) if r.nodes[s * tp] != r.nodes[s * tp - 1])
    net = {"net_latency_s": r.network.latency.si, "net_bandwidth": r.network.bandwidth.si, "rails": r.rails}
    if r.engine.family == "llama.cpp":
        return {"local_boundaries": n - 1 - crossings, "rpc_servers": len(set(r.nodes) - {0}), **net}
    return {"local_boundaries": len(first) - 1 - crossings, "net_boundaries": crossings,
            "tp_machines": len(set(r.nodes[:tp])), "net_hop_s": r.network.latency.si + r.network.nccl_hop_overhead, **net}


def _kernel_of(r: Resolved, storage: str) -> str:
    return r.kernel_of.get(storage, "float")


# --- evaluate --------------------------------------------------------------------------------


@dataclass
class Ops:
    """Per-operation times (arrays over the workloads evaluated) of one stage."""

    stage: str
    names: list[str]
    time: list[np.ndarray]
    flops: list[np.ndarray]
    bytes: list[np.ndarray]
    memory_time: list[np.ndarray]
    compute_time: list[np.ndarray]
    peak_flops: list[float]
    peak_bw: list[float]
    shape: tuple[int, ...] = ()  # of the workload arrays

    @property
    def total(self) -> np.ndarray:
        return sum(self.time, np.zeros(self.shape))  # a stage with no operations (a GPU given a share of 0) takes no time


def _stage_ops(sm: StepModel, s: Stage, tokens, seqs, q, depth, gpu0: Stage, outputs=None) -> Ops:
    """Roofline of one stage for steps of `tokens` new tokens (`seqs` sequences of `q` each)
    at `depth` tokens of context, `outputs` of them with logits (default: one per sequence).
    Arguments are numpy arrays of equal shape."""
    e = sm.eff
    tokens = np.asarray(tokens, dtype=float)
    shape = np.broadcast(tokens, seqs, q, depth).shape
    outputs = np.asarray(_outputs(tokens, seqs, q) if outputs is None else outputs, dtype=float)
    etokens = tokens  # the tokens the routed experts see: every rank's, under data-parallel attention
    if sm.dp > 1 and s.kind == "gpu":  # this GPU's own sequences: the busiest rank holds ceil(seqs / dp)
        seqs = np.asarray(seqs, dtype=float) * np.ones(shape)
        local = np.ceil(seqs / sm.dp)
        tokens = tokens * local / np.maximum(seqs, 1)
        outputs = outputs * local / np.maximum(seqs, 1)
        seqs = local
    ops = Ops(s.name, [], [], [], [], [], [], [], [], shape)
    # which kernel path and which processor: host layers run on the CPU for small steps, on
    # GPU 0 (weights streamed over PCIe) for steps of at least offload_min_batch tokens
    on_cpu = s.kind == "host"
    streamed = on_cpu & (tokens >= max(sm.offload_min_batch, 1)) if on_cpu else np.zeros_like(tokens, dtype=bool)
    # streamed host weights are copied from the engine's (pageable, mmap'd) host buffers: host_copy_eff of the link
    bw_w = np.where(streamed, sm.pcie_bandwidth * e.host_copy, s.bandwidth * (e.host_bw if on_cpu else 1.0))
    peak_src = gpu0 if on_cpu else s
    gemv = tokens <= sm.gemv_max_tokens

    def add(name, flops, nbytes, peak, bw, bw_eff, c_eff, work=None, serial=None):
        """`work`: the FLOPs the kernel's time is priced on, where it pays for more than `flops`;
        `serial`: where true, the memory and the compute time add up instead of overlapping."""
        mt = nbytes / (bw * bw_eff)
        with np.errstate(invalid="ignore", divide="ignore"):  # an unknown peak (inf) prices no compute time
            ct = np.where(np.isfinite(peak), (flops if work is None else work) / (np.asarray(peak) * c_eff), 0.0)
        if on_cpu:
            ct = np.where(streamed, ct, 0.0)  # CPU compute of a decode step: bandwidth-bound (not modelled)
        ops.names.append(name)
        ops.time.append(np.maximum(mt, ct) if serial is None else np.where(serial, mt + ct, np.maximum(mt, ct)))
        ops.flops.append(flops)
        ops.bytes.append(nbytes)
        ops.memory_time.append(mt)
        ops.compute_time.append(ct)
        ops.peak_flops.append(float(np.max(peak)) if np.size(peak) else math.inf)
        ops.peak_bw.append(float(np.max(bw)))

    # expert stacks touched by `tokens` tokens routed uniformly: E (1 - (1 - k/E)^T)
    kE = sm.experts_per_tok / sm.n_experts
    touched = 1 - (1 - kE) ** etokens if sm.n_experts > 1 else np.ones_like(tokens)
    if sm.ep > 1 and s.kind == "gpu" and sm.n_experts > 1:  # the GPU with the most experts touched sets the pace
        imb = ep_imbalance(sm.n_experts, sm.experts_per_tok, sm.ep, etokens)
        touched, kE = touched * imb, kE * imb
    for c, kname in enumerate(KERNELS):
        wb, eb, hb = s.w_bytes[c], s.e_bytes[c], s.head_bytes[c]
        if wb == 0 and eb == 0 and hb == 0:
            continue
        if s.dense_paths is not None and not on_cpu and (s.dense_paths[c] is not None or s.expert_paths[c] is not None):
            _path_matmuls(sm, s, c, kname, tokens, outputs, touched, kE, add, etokens)
            continue
        nbytes = wb + eb * touched + hb
        flops = 2 * tokens * s.w_params[c] + 2 * etokens * s.e_params[c] * kE + 2 * outputs * s.head_params[c]
        peak = np.where(gemv, peak_src.gemv_peak, peak_src.gemm_peak[c])
        qeff = min(e.weight_bw * e.quant_bw.get(kname, 1.0), 1.0)
        label = f"matmul {kname}" + (" via PCIe" if on_cpu and np.any(streamed) else "")
        c_eff = e.gemm
        if s.e_params[c] and e.moe_gemm != e.gemm:  # expert FLOPs at their own efficiency: the harmonic blend
            fe = 2 * etokens * s.e_params[c] * kE
            c_eff = flops / ((flops - fe) / e.gemm + fe / e.moe_gemm)
        add(label, flops, nbytes, peak, bw_w, 1.0 if on_cpu else qeff, c_eff)
    # attention: read the cache of every sequence, write the new tokens' K and V
    if s.kv_full or s.kv_window:
        ctx_read = depth + q
        kv = seqs * s.kv_full * ctx_read
        fl = tokens * s.attn_flops_full * (depth + (q + 1) / 2)
        for w, b in s.kv_window:
            kv = kv + seqs * b * np.minimum(ctx_read, w)
        for w, f in s.attn_flops_window:
            fl = fl + tokens * f * np.minimum(depth + (q + 1) / 2, w)
        bw_a = s.bandwidth * (e.host_bw if on_cpu else 1.0)
        if s.dense_paths is not None and not on_cpu and s.kv_quantized:
            # kernel paths (docs/kernel-paths.md#attention): the vector kernel dequantizes a
            # quantized cache as it reads it (kv_quant_bw_eff); the batched kernels first convert
            # it to f16 in a buffer (written, then read: 2 x the f16 bytes on top)
            vec = q <= s.attn_vec_max
            # the vector kernel dequantizes the quantized part of the cache as it reads it (kv_quant_bw);
            # a conversion (batched kernels, or a K/V pair without a compiled vector kernel) streams the
            # quantized part into an f16 buffer, written then read (2 x its f16 bytes on top), and
            # everything then reads at plain cache efficiency. An f16 half of a mixed pair reads as is.
            convert = np.where(vec, s.attn_vec_convert, s.attn_convert)
            quant = kv * s.kv_quant_frac
            nbytes = kv + np.where(convert, 2 * quant * s.kv_f16_per_byte, 0.0)
            slow = np.where(convert, 0.0, quant)  # bytes read dequantizing in the kernel
            with np.errstate(invalid="ignore", divide="ignore"):
                eff = np.where(nbytes > 0, nbytes / ((nbytes - slow) / e.kv_bw + slow / (e.kv_bw * e.kv_quant_bw)),
                               e.kv_bw)
            add("attention", fl, nbytes, peak_src.attn_peak, bw_a, eff, e.attn_compute)
        else:
            add("attention", fl, kv, peak_src.attn_peak, bw_a, 1.0 if on_cpu else e.kv_bw, e.attn_compute)
    if s.state_bytes:
        nbytes = 2 * seqs * s.state_bytes  # read and write each sequence's state
        bw_s = s.bandwidth * (e.host_bw if on_cpu else 1.0)
        # llama.cpp's Gated DeltaNet and Mamba-2 kernels walk a sequence's tokens one after another
        # (ggml-cuda/gated_delta_net.cu:63, one warp per state column; sequences side by side in the grid):
        # their time is the loop's, scan_token_time per token past the first (the first is in
        # linear_layer_overhead), not their FLOPs at a compute peak (docs/kernel-paths.md#scan)
        loop = bool(e.scan_token_s and s.scan_layers and s.dense_paths is not None and not on_cpu)
        fl = tokens * s.state_flops
        add("recurrent state", np.zeros_like(tokens) if loop else fl, nbytes * np.ones_like(tokens), peak_src.gemv_peak,
            bw_s, 1.0 if on_cpu else e.weight_bw, e.gemm)
        if loop:  # its FLOPs are shown here, at the loop's pace
            t = s.scan_layers * e.scan_token_s * np.maximum(np.asarray(q, dtype=float) - 1, 0) * np.ones_like(tokens)
            ops.names.append(SCAN_OP)
            ops.time.append(t)
            ops.flops.append(fl * np.ones_like(tokens))
            ops.bytes.append(np.zeros_like(tokens))
            ops.memory_time.append(np.zeros_like(tokens))
            ops.compute_time.append(t)
            ops.peak_flops.append(math.inf)
            ops.peak_bw.append(math.inf)
    if s.layers:
        ops.names.append("per-layer overhead")
        t = np.full_like(tokens, s.layers * e.layer_overhead_s + s.moe_layers * e.moe_layer_overhead_s
                         + s.linear_layers * e.linear_layer_overhead_s)
        ops.time.append(t)
        ops.flops.append(np.zeros_like(tokens))
        ops.bytes.append(np.zeros_like(tokens))
        ops.memory_time.append(np.zeros_like(tokens))
        ops.compute_time.append(np.zeros_like(tokens))
        ops.peak_flops.append(math.inf)
        ops.peak_bw.append(math.inf)
    return ops


def ep_imbalance(n_experts: int, k: int, ep: int, tokens) -> np.ndarray:
    """Expert parallel: how many times its even share of the experts touched the busiest GPU of an
    `ep`-GPU group holds. `tokens` tokens routed uniformly touch D = E (1 - (1 - k/E)^T) experts, a
    uniform pick of D of the E; each GPU holds E/ep of them. The busiest GPU's expected count, over
    the mean D/ep: 1 once every expert is touched, 2.57 for one token of DeepSeek-V3 (8 of 256) on 8."""
    tokens = np.asarray(tokens, dtype=float)
    out = np.empty_like(tokens)
    for t in np.unique(tokens):
        out[tokens == t] = _ep_imbalance(n_experts, ep, int(round(n_experts * (1 - (1 - k / n_experts) ** t))))
    return out


@functools.lru_cache(maxsize=4096)
def _ep_imbalance(n: int, ep: int, d: int) -> float:
    """E[max count] / (d / ep) for d of n experts picked uniformly, ep groups of m = n / ep: P(every group
    holds at most x) = [z^d] (sum_{j <= x} C(m, j) z^j)^ep / C(n, d), exact; E[max] = sum_x P(max > x)."""
    m = n // ep
    d = max(1, min(d, m * ep))
    total = float(math.comb(m * ep, d))
    mean_max = 0.0
    for x in range(0, min(m, d)):
        base = np.array([math.comb(m, j) for j in range(x + 1)], dtype=float)
        poly, acc, e = np.ones(1), base, ep
        while e:  # (base)^ep by squaring, cut at degree d
            if e & 1:
                poly = np.convolve(poly, acc)[:d + 1]
            acc = np.convolve(acc, acc)[:d + 1]
            e >>= 1
        p_le = poly[d] / total if len(poly) > d else 0.0
        mean_max += 1 - min(p_le, 1.0)
    return mean_max / (d / ep)


def _path_matmuls(sm: StepModel, s: Stage, c: int, kname: str, tokens, outputs, touched, kE, add, etokens=None) -> None:
    """The matmuls of weight class `c` on a GPU stage by the kernel each token count takes
    (docs/kernel-paths.md#matmul-time):

    mat-vec (MMVQ, MMVF): bytes / (bandwidth x weight_bw x class factor) + FLOPs / (dot peak x dot_eff):
    the dequantizing dot products of each token come on top of the weight stream (on the H200
    a q4_K 4096x14336 MMVQ takes 15.9, 18.6, 27.1, 46.6 us for 1, 2, 4, 8 tokens:
    hwdb/runs/llamacpp-h200.ops.csv)
    GEMM (MMQ, cuBLAS, MMF): max(bytes / (bandwidth x weight_bw), FLOPs' / (ceiling x gemm_eff)), where
    FLOPs' counts `gemm_min_tokens` extra columns per weight matrix (a partly filled tile and the
    staging of the weights cost about as much as that many tokens); for routed experts the extra
    columns are paid once per expert touched."""
    e = sm.eff
    etokens = tokens if etokens is None else etokens  # the routed experts' tokens (all ranks' under dp attention)
    parts = []  # (name, paths, bytes, params of the matmul, tokens it runs, FLOPs, extra FLOPs of a GEMM)
    dense_params = s.w_params[c]
    head_params = s.head_params[c]
    head_tokens = outputs  # the output head runs for the tokens with logits only
    floor = 0.0 if kname == "float" else e.gemm_min_tokens  # the MMQ tile; cuBLAS / MMF pay none
    if s.w_bytes[c] or s.head_bytes[c]:
        fl = 2 * tokens * dense_params + 2 * head_tokens * head_params
        extra = 2 * floor * (dense_params + head_params)
        parts.append(("", s.dense_paths[c], s.w_bytes[c] + s.head_bytes[c], s.w_bytes[c] + s.head_bytes[c], tokens, fl,
                      extra))
    if s.e_bytes[c]:
        n_touched = touched * sm.n_experts
        fl = 2 * etokens * s.e_params[c] * kE
        extra = 2 * floor * s.e_params[c] / sm.n_experts * n_touched
        # a GEMM reads each expert touched once; the mat-vec kernel reads one expert per (token,
        # slot) pair, shared experts read again (ggml-cuda/mmvq.cu:920, channel_x = ids[...])
        parts.append((" (experts)", s.expert_paths[c] or s.dense_paths[c], s.e_bytes[c] * touched,
                      s.e_bytes[c] * kE * etokens, etokens, fl, extra))
    qeff = min(e.weight_bw * e.quant_bw.get(kname, 1.0), 1.0)
    for suffix, cp, gemm_bytes, vec_bytes, ptokens, flops, extra in parts:
        if cp is None:
            continue
        i = cp.at(ptokens)
        gemm = cp.gemm[i]
        nbytes = gemm_bytes * np.ones_like(ptokens) if e.ideal else np.where(gemm, gemm_bytes, vec_bytes)
        peak = cp.peak[i]
        c_eff = np.where(gemm, e.float_gemm if cp.float_weights else e.gemm, e.dot)
        fl_eff = np.where(gemm, flops + extra, flops)
        bw_eff = np.where(gemm, min(e.weight_bw, 1.0), qeff)
        kernels = sorted({cp.kernels[j] for j in set(i.ravel().tolist())}) if len(cp.kernels) > 1 else cp.kernels
        add(f"matmul {kname}{suffix} [{'/'.join(kernels)}]", flops, nbytes, peak,
            s.bandwidth, bw_eff, c_eff, work=None if e.ideal else fl_eff, serial=None if e.ideal else ~gemm)


@dataclass
class StepTimes:
    stages: list[Ops]  # GPU stages then the host stage
    comm: np.ndarray  # cross-GPU transfers and reductions
    total: np.ndarray  # one step, end to end
    bottleneck: np.ndarray  # the slowest stage (what a pipeline runs at)
    logits: np.ndarray | float = 0.0  # the outputs' logits copied to host memory (llama.cpp), after the step


def step(sm: StepModel, tokens, seqs, q, depth, outputs=None) -> StepTimes:
    """Time of one forward step for arrays of (tokens, seqs, q, depth); `outputs`: the tokens that
    return logits (default one per sequence; a speculative verification step: every token)."""
    tokens, seqs, q, depth = (np.asarray(x, dtype=float) for x in (tokens, seqs, q, depth))
    if outputs is None:
        outputs = _outputs(tokens, seqs, q)
    g = [_stage_ops(sm, s, tokens, seqs, q, depth, sm.gpus[0], outputs) for s in sm.gpus]
    h = [_stage_ops(sm, sm.host, tokens, seqs, q, depth, sm.gpus[0], outputs)] if sm.host else []
    e, n, tp, grp = sm.eff, len(sm.gpus), sm.tp, sm.tp * sm.dp
    act = tokens * sm.hidden * sm.activation_bytes
    stage_t = [np.maximum.reduce([o.total for o in g[i:i + grp]]) if grp > 1 else g[i].total for i in range(0, n, grp)]
    comm = np.zeros_like(tokens)
    if tp > 1:
        comm = comm + sm.gpu_layers * sm.syncs_per_layer * allreduce_time(sm, act)
    if sm.dp > 1:  # every MoE layer gathers all ranks' tokens and reduce-scatters the experts' outputs back
        moe = sum(s.moe_layers for s in sm.gpus[::grp])
        comm = comm + moe * 2 * allgather_time(sm, act)
    local = len(stage_t) - 1 if sm.local_boundaries is None else sm.local_boundaries
    bnd = sm.boundary_tensors * act  # what one stage boundary hands the next
    if local:
        comm = comm + local * (e.link_latency_s + bnd / sm.link_bandwidth)
    if sm.net_boundaries:  # each GPU of the group sends its slice (vllm parallel_state.py:1219-1223), over its rail
        comm = comm + sm.net_boundaries * (sm.net_hop_s + bnd / (min(sm.rails, grp) * sm.net_bandwidth))
    if sm.net_boundaries or sm.tp_machines > 1:
        comm = comm + sm.net_latency_s  # the scheduler's step broadcast to the other machines (ray_executor_v2.py:329-338)
    if sm.rpc_servers:  # llama.cpp RPC (ggml-rpc.cpp): the client sends each remote server its input
        # (one way) and fetches its output (a round trip that waits for the remote compute); between two
        # servers the activations pass through the client
        comm = comm + sm.rpc_servers * (3 * sm.net_latency_s + 2 * act / sm.net_bandwidth)
    gpu_t = sum(stage_t)  # stages in turn (one stage: the group's slowest GPU)
    bott = np.maximum.reduce(stage_t) if len(stage_t) > 1 else stage_t[0]
    host_t = h[0].total if h else 0.0
    if h:  # host <-> GPU hand-over of the activations
        comm = comm + e.link_latency_s + act / sm.pcie_bandwidth
    logits = np.zeros_like(tokens)
    if sm.logits_bytes:  # the outputs' logits copied to host memory after the step
        logits = logits + sm.logits_copy_latency_s + outputs * sm.logits_bytes / sm.logits_copy_bw
    total = gpu_t + host_t + comm + logits
    return StepTimes(g + h, np.asarray(comm) * np.ones_like(tokens), total, np.maximum(bott, host_t), logits)


def _outputs(tokens, seqs, q):
    """The tokens of a step that return logits, by default: the last of each sequence (a decode step:
    all of them)."""
    return np.where(np.asarray(q) > 1, np.asarray(seqs, dtype=float), np.asarray(tokens, dtype=float))


# --- phases ----------------------------------------------------------------------------------


def _gather(sm: StepModel, act, group: int):
    """The bandwidth and hop terms of one all-gather of `act` bytes over a group of `group` GPUs laid over
    sm.tp_machines machines of t GPUs each: (t-1)/t of the bytes over the link inside a machine, and over M
    machines (M-1)/M of them over min(rails, t) links after M-1 hops (the network's latency plus NCCL's)."""
    m = sm.tp_machines
    t = group // m
    inside = (t - 1) / t * act / sm.link_bandwidth if t > 1 else 0.0
    if m == 1:
        return inside
    return inside + (m - 1) * sm.net_hop_s + (m - 1) / m * act / (min(sm.rails, t) * sm.net_bandwidth)


def allreduce_time(sm: StepModel, act):
    """One all-reduce of `act` bytes over a tensor-parallel group (docs/multinode.md#traffic): a fixed latency
    plus a reduce-scatter and an all-gather (ring or two-shot, as NCCL and vLLM's custom all-reduce move per
    GPU), hierarchically over machines: twice the all-gather terms of _gather."""
    return sm.eff.link_latency_s + 2 * _gather(sm, act, sm.tp)


def allgather_time(sm: StepModel, act):
    """Data-parallel attention with expert parallelism, vLLM's default all-to-all
    (allgather_reducescatter, vllm/distributed/device_communicators/all2all.py:116-161): one all-gather
    of every rank's `act` bytes of tokens (or the reduce-scatter back) over the stage's GPUs."""
    return sm.eff.link_latency_s + _gather(sm, act, sm.tp * sm.dp)


def decode_step_time(sm: StepModel, batch, depth):
    return step(sm, batch, batch, np.ones_like(np.asarray(batch, dtype=float)), depth).total


def decode_time(sm: StepModel, batch, depth0, gen):
    """Seconds to generate `gen` tokens per sequence from `depth0`: the step time grows with
    depth (piecewise linearly), so Simpson's rule over start, middle and end is exact up to
    the kinks of the roofline."""
    batch, depth0, gen = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (batch, depth0, gen)))
    # the three depths in one evaluation (one pass over the operations for all of them)
    f = np.array((0.0, 0.5, 1.0)).reshape((3,) + (1,) * batch.ndim)
    steps = decode_step_time(sm, np.broadcast_to(batch, f.shape[:1] + batch.shape), depth0 + f * gen)
    t = sum(w * steps[i] for i, w in enumerate(SIMPSON))
    return t * gen


def prefill_time(sm: StepModel, batch, prompt, depth, ubatch):
    """Seconds to process `prompt` new tokens for each of `batch` sequences after `depth`
    tokens of context, in physical batches of `ubatch` tokens (short prompts share a batch)."""
    batch, prompt, depth, ubatch = (np.asarray(x, dtype=float) for x in (batch, prompt, depth, ubatch))
    prompt = np.maximum(prompt, 1)
    q = np.minimum(prompt, ubatch)  # tokens of one sequence per step
    per_step_seqs = np.maximum(1, np.floor(ubatch / q))
    per_step_seqs = np.minimum(per_step_seqs, batch)
    chunks = np.ceil(prompt / q)  # steps per sequence
    groups = np.ceil(batch / per_step_seqs)  # groups of sequences processed together
    q_last = prompt - (chunks - 1) * q
    tokens = per_step_seqs * q
    # full chunks j = 0 .. chunks-2 at depth depth + j q: Simpson over j
    n_full = chunks - 1
    full = 0.0
    pipe = sm.pipeline_prefill and len(sm.gpus) // (sm.tp * sm.dp) > 1  # more than one pipeline stage
    # the three Simpson points and the last chunk in one evaluation (one pass over the operations)
    shape = np.broadcast(tokens, per_step_seqs, q, depth, n_full, q_last).shape
    js = [np.floor(f * np.maximum(n_full - 1, 0)) for f in (0.0, 0.5, 1.0)]
    st = step(sm, *(np.stack([np.broadcast_to(x, shape) for x in xs]) for xs in (
        (tokens, tokens, tokens, per_step_seqs * q_last), (per_step_seqs,) * 4, (q, q, q, q_last),
        (*(depth + j * q for j in js), depth + n_full * q))))
    for i, w in enumerate(SIMPSON):
        full = full + w * (st.bottleneck[i] if pipe else st.total[i])
    last_total, last_bott = st.total[3], st.bottleneck[3]
    if pipe:  # the pipeline fills once, then runs at its slowest stage
        t = groups * (n_full * full + last_bott) + (last_total - last_bott)
    else:
        t = groups * (n_full * full + last_total)
    return t


class OpRow(Strict):
    stage: str
    op: str
    flops: float
    bytes: float
    time_s: float
    share: float  # of the step's time
    achieved_flops_per_s: float
    achieved_bytes_per_s: float
    peak_flops_per_s: float | None
    peak_bytes_per_s: float | None
    bound: str  # memory, compute, overhead or transfer (the logits copy to host memory)


class PhaseBreakdown(Strict):
    what: str  # the step shown
    step_s: float
    comm_s: float
    stage_s: dict[str, float]  # time of each device's part of the step
    parallel: bool  # GPU stages run side by side (tensor split) rather than in turn
    ops: tuple[OpRow, ...]


def breakdown(sm: StepModel, what: str, tokens: float, seqs: float, q: float, depth: float) -> PhaseBreakdown:
    """One step's operations. Tensor-parallel pipeline stages (tp > 1 over several stages) are shown
    by the GPU that sets each stage's pace: its operations, and the stage's time."""
    st = step(sm, [tokens], [seqs], [q], [depth])
    total = float(st.total[0])
    n, tp = len(sm.gpus), sm.tp * sm.dp  # GPUs per stage
    shown = list(st.stages)
    stage_s: dict[str, float] = {}
    if sm.dp > 1 or (tp > 1 and n > tp):
        shown = []
        for k, i in enumerate(range(0, n, tp)):
            grp = st.stages[i:i + tp]
            pace = max(grp, key=lambda o: float(o.total[0]))
            shown.append(pace)
            stage_s[f"stage {k + 1} ({tp}x {pace.stage})"] = float(pace.total[0])
        shown += st.stages[n:]  # the host
        for o in st.stages[n:]:
            stage_s[o.stage] = float(o.total[0])
    else:
        for o in st.stages:
            key = o.stage if o.stage not in stage_s else f"{o.stage} #{len(stage_s) + 1}"
            stage_s[key] = float(o.total[0])
    rows = []
    for o in shown:
        for i, name in enumerate(o.names):
            t = float(o.time[i][0])
            mt, ct = float(o.memory_time[i][0]), float(o.compute_time[i][0])
            f, b = float(o.flops[i][0]), float(o.bytes[i][0])
            bound = "overhead" if name in ("per-layer overhead", SCAN_OP) else ("compute" if ct > mt else "memory")
            rows.append(OpRow(
                stage=o.stage, op=name, flops=f, bytes=b, time_s=t, share=t / total if total else 0.0,
                achieved_flops_per_s=f / t if t else 0.0, achieved_bytes_per_s=b / t if t else 0.0,
                peak_flops_per_s=None if not math.isfinite(o.peak_flops[i]) else o.peak_flops[i],
                peak_bytes_per_s=None if not math.isfinite(o.peak_bw[i]) else o.peak_bw[i], bound=bound))
    t = float(np.asarray(st.logits).ravel()[0]) if np.any(st.logits) else 0.0
    if t:  # llama.cpp's copy of the outputs' logits to host memory (StepModel.logits_bytes)
        b = float(_outputs(tokens, seqs, q)) * sm.logits_bytes
        rows.append(OpRow(stage="PCIe", op="logits to host", flops=0.0, bytes=b, time_s=t, share=t / total,
                          achieved_flops_per_s=0.0, achieved_bytes_per_s=b / t, peak_flops_per_s=None,
                          peak_bytes_per_s=sm.logits_copy_bw, bound="transfer"))
    return PhaseBreakdown(what=what, step_s=total, comm_s=float(st.comm[0]), stage_s=stage_s,
                          parallel=sm.split == "tensor", ops=tuple(rows))


def bound_of(b: PhaseBreakdown) -> str:
    """What limits a step: the kind of time that dominates it."""
    kinds: dict[str, float] = {}
    ops = b.ops
    if b.parallel:  # only the slowest GPU's share (and the host part) is on the critical path
        gpu = {k: v for k, v in b.stage_s.items() if k != "host RAM"}
        slowest = max(gpu, key=gpu.get).split(" #")[0]
        ops = tuple(r for r in ops if r.stage in (slowest, "host RAM"))
        seen: set[tuple[str, str]] = set()
        ops = tuple(r for r in ops if not ((r.stage, r.op) in seen or seen.add((r.stage, r.op))))
    for r in ops:
        key = {"memory": "memory bandwidth", "compute": "compute", "overhead": "per-layer overhead",
               "transfer": "the logits copy to host memory"}[r.bound]
        if r.op == SCAN_OP:
            key = "the recurrent layers' token-by-token loop"
        if r.stage == "host RAM":
            key = "PCIe transfer of host-resident weights" if "PCIe" in r.op else "host memory"
        kinds[key] = kinds.get(key, 0.0) + r.time_s
    if b.comm_s:
        kinds["GPU-to-GPU transfers"] = b.comm_s
    top = max(kinds, key=kinds.get)
    return f"{top} ({kinds[top] / b.step_s:.0%} of the step)"


def ceiling_step_time(sm: StepModel, tokens, seqs, q, depth) -> np.ndarray:
    """The physical lower bound of a step: every operation at 100% of peak bandwidth or
    compute, no overheads, no communication (nor llama.cpp's copy of the logits to host memory)."""
    ideal = Efficiency(calibration="ideal", engine_source="ideal", weight_bw=1.0, layer_overhead_s=0.0, gemm=1.0,
                       moe_gemm=1.0,
                       kv_bw=1.0, attn_compute=1.0, quant_bw={}, host_bw=1.0, link_latency_s=0.0,
                       moe_layer_overhead_s=0.0, linear_layer_overhead_s=0.0, ideal=True)
    st = step(StepModel(**{**sm.__dict__, "eff": ideal, "link_bandwidth": math.inf}), tokens, seqs, q, depth)
    return st.total - st.comm - st.logits
