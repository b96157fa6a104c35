"""MemoryPlan: bytes per device (weights, KV cache, recurrent state, compute buffers,
runtime overhead) for a resolved deployment, the longest context that fits, and placement
across devices. Pure functions; every equation is explained in docs/equations.md#memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import accumulate

from planner.deployment import LayerBytes, Resolved
from planner.schema import Strict

F32_BYTES = 4  # llama.cpp keeps activations, logits and recurrent state in f32


class DeviceMemory(Strict):
    device: str
    capacity_bytes: int
    usable_bytes: int  # what the engine may use: capacity, or capacity x gpu_memory_utilization
    weights_bytes: int
    kv_cache_bytes: int
    recurrent_state_bytes: int
    compute_buffer_bytes: int
    runtime_overhead_bytes: int
    draft_weights_bytes: int = 0  # speculative drafter (its own tensors; a shared head/embedding is not counted twice)
    draft_cache_bytes: int = 0  # the drafter's KV cache (and recurrent state) at this context
    draft_compute_bytes: int = 0  # the drafter's activation scratch
    total_bytes: int
    layers: int  # transformer layers placed here (layer split) or sharing every layer (tensor split)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes


class MemoryPlan(Strict):
    ctx_tokens: int  # per sequence
    kv_cells: int  # cache slots allocated (all sequences, padded)
    batch: int
    devices: tuple[DeviceMemory, ...]
    host_bytes: int
    host_kv_bytes: int
    fits: bool
    # the host bytes within --host-ram (True/False); without it, False when they pass the most RAM
    # the host holds (HostMemory.max_capacity), else None (not checked against a size of the user's)
    host_fits: bool | None


def kv_cells(r: Resolved, ctx: int) -> int:
    """Cache slots for `batch` sequences of `ctx` tokens, padded as the engine pads them."""
    pad = r.engine.memory.ctx_padding_tokens
    if r.engine.family == "llama.cpp":  # one unified cache of n_ctx = batch x ctx cells
        return -(-r.batch * ctx // pad) * pad
    return r.batch * (-(-ctx // pad) * pad)  # paged: whole blocks per sequence


BF16_BYTES = 2
F16_BYTES = 2  # fp16 activations and dequantized weights


def kv_value_bytes(r: Resolved, i: int) -> tuple[float, float]:
    """Bytes per K and per V value of layer i: the cache types, but bf16 in the boundary layers a vLLM
    TurboQuant cache leaves uncompressed (the first and last min(N, layers // 2) of a dense model,
    turboquant/config.py:177-213)."""
    n = min(r.kv_boundary_bf16, r.arch.n_layers // 2)
    if n and (i < n or i >= r.arch.n_layers - n):
        return (r.kv_bytes_per_value, r.kv_boundary_v) if r.kv_boundary_v else (BF16_BYTES, BF16_BYTES)
    return r.kv_bytes_per_value, r.v_bytes_per_value


def layer_kv_bytes(r: Resolved, ctx: int) -> list[int]:
    """KV bytes per layer for the whole batch (see docs/equations.md#kv-cache)."""
    cells = kv_cells(r, ctx)
    out = []
    for i, a in enumerate(r.arch.layers):
        v = a.v_elems_per_token  # K and V may be stored in different types (llama.cpp -ctk / -ctv)
        kb, vb = kv_value_bytes(r, i)
        per_cell = (a.kv_elems_per_token - v) * kb + v * vb
        if a.kind == "sliding" and a.window_tokens:
            # a sliding layer keeps `window` tokens per sequence (+ one ubatch in llama.cpp)
            extra = r.ubatch_tokens if r.engine.memory.swa_extra_ubatch else 0
            swa = r.batch * a.window_tokens + extra
            pad = r.engine.memory.ctx_padding_tokens
            nbytes = min(cells, -(-swa // pad) * pad) * per_cell
        else:
            nbytes = cells * per_cell
        if a.compress_ratio:  # one entry per ratio tokens, padded to 256 cells (src/llama-kv-cache-dsv4.cpp:1295-1312)
            nbytes += -(-max(1, -(-cells // a.compress_ratio)) // 256) * 256 * a.compressed_dim * r.kv_bytes_per_value
        out.append(int(nbytes))
    return out


def layer_state_bytes(r: Resolved) -> list[int]:
    """Recurrent (Gated DeltaNet) state per layer: constant per sequence, kept in f32."""
    dtype_bytes = 4 if r.engine.memory.recurrent_state_dtype == "f32" else 2
    return [(a.ssm_state_elems + a.conv_state_elems) * dtype_bytes * r.batch for a in r.arch.layers]


def compute_buffer_bytes(r: Resolved, ctx: int, holds_output: bool) -> int:
    """Activation scratch of one device (an estimate: docs/equations.md#compute-buffers)."""
    a = r.arch
    inter, moe = r.layer_bytes.ffn_rows
    ffn = max(inter, moe * max(a.n_experts_per_tok, 1))
    if r.engine.memory.compute_buffer_rule == "llamacpp":
        ub = min(r.ubatch_tokens, max(r.batch * ctx, 1))
        # the graph allocator reuses buffers: peak = the larger of the FFN stage and the
        # logits (ubatch x vocab f32, only on the device holding the output), plus the residual
        ffn_stage = ub * F32_BYTES * (2 * a.hidden_size + 2 * ffn)
        logits = ub * F32_BYTES * a.vocab_size if holds_output else 0
        return max(ffn_stage, logits) + ub * F32_BYTES * a.hidden_size
    if r.engine.memory.compute_buffer_rule == "exllama":
        # measured at load by a dummy forward of one chunk (exllamav3 model_ls.py:77-98): the chunk's fp16
        # activations, the largest linear dequantized to fp16 for the GEMM (up to reconstruct_max_outputs outputs),
        # logit_rows rows of f32 logits; a quantized cache adds one layer's fp16 K and V for the whole cache as
        # prefill staging (triton_paged.py:1743-1763). EXL2 is assumed alike.
        m = r.engine.memory
        act = r.ubatch_tokens * F16_BYTES * (2 * ffn + 4 * a.hidden_size)
        linear = max((t.cols * min(t.rows, m.reconstruct_max_outputs) for t in a.tensors if t.n_experts == 1
                      and t.group == "text" and t.role not in ("token_embd", "output", "unquantized", "router", "conv")),
                     default=0) * F16_BYTES
        logits = m.logit_rows * F32_BYTES * a.vocab_size if holds_output else 0
        staging = 0
        if r.kv_quant not in ("f16", "bf16"):
            staging = kv_cells(r, ctx) * max((layer.kv_elems_per_token for layer in a.layers), default=0) * F16_BYTES
        return act + linear + logits + staging
    if r.engine.memory.compute_buffer_rule == "mistralrs":
        # the activation reservation of automatic device mapping, taken from the KV pool: max_batch_size (1)
        # x attention heads x attention_reserve_tokens^2 in the model dtype (normal_loaders.rs:1068-1088);
        # prefill activations come out of the 10% headroom
        return a.n_heads * r.engine.memory.attention_reserve_tokens ** 2 * F16_BYTES
    # vllm: profiled peak of a dummy forward over max_num_batched_tokens (bf16 activations)
    # plus logits of the running sequences in f32
    tokens = r.ubatch_tokens
    act = tokens * 2 * (2 * ffn + 4 * a.hidden_size)
    logits = min(r.batch, r.engine.memory.max_num_seqs) * F32_BYTES * a.vocab_size if holds_output else 0
    graphs = int(r.engine.memory.cuda_graph_memory.si) if r.engine.memory.cuda_graph_memory else 0
    return act + logits + graphs


def shares(r: Resolved) -> list[float]:
    """Fraction of the model each GPU takes: --tensor-split, else proportional to memory
    (llama.cpp's layer split) or equal (llama.cpp's tensor split, vLLM/SGLang tensor and
    pipeline parallelism); docs/multi-gpu.md in llama.cpp."""
    if r.tensor_split:
        s = sum(r.tensor_split)
        return [x / s for x in r.tensor_split]
    if r.engine.family == "llama.cpp" and r.split == "layer":
        total = sum(g.memory_bytes for g in r.gpus)
        return [g.memory_bytes / total for g in r.gpus]
    return [1 / len(r.gpus)] * len(r.gpus)


def _assign_layers(n_gpu_layers: int, shares: list[float]) -> list[int]:
    """Contiguous layer counts per GPU by cumulative share (llama.cpp -ts semantics)."""
    counts, done, acc = [], 0, 0.0
    for s in shares:
        acc += s
        upto = round(acc * n_gpu_layers)
        counts.append(upto - done)
        done = upto
    counts[-1] += n_gpu_layers - done
    return counts


def stage_layer_counts(r: Resolved) -> list[int]:
    """GPU layers per pipeline stage. llama.cpp: by cumulative share of each GPU (-ts); vLLM: n // pp
    each, the n % pp extra layers on the stages before the last, from the second-to-last backwards
    (vllm/distributed/utils.py:225-230, get_pp_indices); SGLang: the extra layers on the last stages
    (srt/distributed/utils.py:110-149)."""
    pp, n = r.pp_size, r.gpu_layers
    if pp == 1:
        return [n]
    rule = r.engine.kernels.pp_partition
    if rule == "share":
        return _assign_layers(n, shares(r))
    counts, extra = [n // pp] * pp, n % pp
    order = list(range(pp - 2, -1, -1)) + [pp - 1] if rule == "remainder_before_last" else list(range(pp - 1, -1, -1))
    for i in order[:extra]:
        counts[i] += 1
    return counts


def output_device(r: Resolved) -> int:
    """The pipeline stage holding the output head: llama.cpp gives it the device of the position
    after the last layer (llama-model.cpp, load_tensors: dev_output), the last GPU with a non-zero
    share (a GPU given a share of 0 holds nothing); vLLM / SGLang the last stage. Under a layer
    split a stage is one GPU, so this is a GPU index too."""
    if r.pp_size == 1:
        return 0
    if r.tp_size == 1 and r.engine.kernels.pp_partition == "share":
        return max(d for d, x in enumerate(shares(r)) if x > 0)
    return r.pp_size - 1


def layer_devices(r: Resolved) -> list[int]:
    """Where each layer runs: -1 = host RAM (llama.cpp keeps the first n - ngl layers on the CPU),
    else its pipeline stage (a GPU index under a layer split; 0 under a tensor split, where every GPU
    shares every layer)."""
    out = [-1] * (r.arch.n_layers - r.gpu_layers)
    for d, c in enumerate(stage_layer_counts(r)):
        out += [d] * c
    return out


def kv_gpu_factor(r: Resolved, a) -> float:
    """The share of a layer's KV cache each GPU of a tensor-parallel group holds. vLLM / SGLang give
    each GPU max(1, kv_heads // tp) heads, replicating them when tp exceeds the KV heads
    (vllm/config/model.py:1676-1683; SGLang srt/configs/model_config.py:1700-1711), and an MLA latent
    cache whole to every GPU (model.py:1673-1675). llama.cpp's tensor split shares it out (1 / tp,
    scaled per GPU by --tensor-split)."""
    tp = r.tp_size
    if tp == 1 or not r.engine.kernels.kv_heads_replicated:
        return 1 / tp
    if a.kind == "mla" or a.compress_ratio or not a.n_kv_heads:
        return 1.0
    return max(1, a.n_kv_heads // tp) / a.n_kv_heads


@dataclass(frozen=True)
class LayerTable:
    """What plan_memory reads of a deployment at one context: per-layer bytes as prefix sums
    (p[i] = layers below i), compute buffers and the drafter. It does not depend on how many
    layers or expert stacks are offloaded, so an offload search builds it once and plans each
    candidate in O(devices) instead of O(layers + tensors)."""

    lb: LayerBytes
    weights: list[int]
    experts: list[int]
    kv: list[int]
    kv_gpu: list[int]  # the KV cache one GPU of a layer's tensor-parallel group holds (kv_gpu_factor)
    state: list[int]
    compute: tuple[int, int]  # compute buffer of a device without / with the output head
    draft: tuple[int, int, int, int]


def layer_table(r: Resolved, ctx: int) -> LayerTable:
    def prefix(xs: list[int]) -> list[int]:
        return list(accumulate(xs, initial=0))

    lb = r.layer_bytes
    kv = layer_kv_bytes(r, ctx)
    kv_gpu = [int(b * kv_gpu_factor(r, a)) for b, a in zip(kv, r.arch.layers)]
    return LayerTable(lb, prefix(lb.weights), prefix(lb.experts), prefix(kv), prefix(kv_gpu),
                      prefix(layer_state_bytes(r)),
                      (compute_buffer_bytes(r, ctx, False), compute_buffer_bytes(r, ctx, True)), draft_memory(r, ctx))


def _stage_spans(r: Resolved) -> list[tuple[int, int]]:
    """[first, end) of the GPU layers each pipeline stage holds (layer_devices as contiguous runs)."""
    n, start = r.arch.n_layers, r.arch.n_layers - r.gpu_layers
    spans = []
    for c in stage_layer_counts(r):
        end = min(start + max(c, 0), n)
        spans.append((start, end))
        start = end
    return spans


def plan_memory(r: Resolved, ctx: int, table: LayerTable | None = None) -> MemoryPlan:
    """Bytes on every device and in host RAM at `ctx` tokens per sequence. `table`: this
    deployment's layer_table at `ctx` (or that of one differing only in offload), if built."""
    t = table or layer_table(r, ctx)
    lb = t.lb
    n = r.arch.n_layers
    n_host = n - r.gpu_layers  # llama.cpp keeps the first n - ngl layers on the CPU
    moe_end = max(n_host, min(r.cpu_moe_layers, n))  # GPU layers below cpu_moe_layers: experts in host RAM
    m = r.engine.memory

    def span(p: list[int], a: int, b: int) -> int:  # sum over layers a..b-1
        return p[b] - p[a] if b > a else 0

    host = span(t.weights, 0, n_host) + span(t.kv, 0, n_host) + span(t.state, 0, n_host)
    host_kv = span(t.kv, 0, n_host)
    host += span(t.experts, n_host, moe_end)  # --n-cpu-moe
    input_on_host = m.token_embedding_on_host or r.gpu_layers < n
    if input_on_host:
        host += lb.input_bytes
    vision = lb.vision_bytes if m.loads_vision_encoder else 0

    share = shares(r)
    g, tp, dp, grp = len(r.gpus), r.tp_size, r.dp, r.stage_gpus
    spans = _stage_spans(r)
    out_stage = output_device(r)
    per = [dict(w=0, kv=0, st=0, layers=0) for _ in range(g)]
    for d in range(g):
        st_ = d // grp
        a, b = spans[st_]
        # within a stage: llama.cpp's tensor split by --tensor-split shares, vLLM / SGLang evenly; with
        # data-parallel attention (dp ranks) every GPU holds the attention and dense weights of its
        # tensor-parallel group and 1/(tp x dp) of the routed experts, and the cache of its 1/dp of the sequences
        frac = share[d] / sum(share[st_ * grp:(st_ + 1) * grp]) if tp > 1 else 1.0  # (--dp runs with tp 1)
        kv = span(t.kv_gpu, a, b) * frac * tp if not r.engine.kernels.kv_heads_replicated else span(t.kv_gpu, a, b)
        experts = span(t.experts, a, b)
        dense = span(t.weights, a, b) - experts
        on_gpu_experts = experts - span(t.experts, a, min(b, moe_end))
        per[d].update(w=int(dense * frac + on_gpu_experts * frac / dp), kv=int(kv / dp),
                      st=int(span(t.state, a, b) * frac / dp), layers=max(b - a, 0))
        # the output head on the last stage, the input embedding (unless in host RAM) and a vision
        # encoder on the first; a tensor-parallel stage shares them out (vocab-parallel embedding and head)
        if st_ == out_stage:
            per[d]["w"] += int(lb.output_bytes * frac)
        if st_ == 0:
            per[d]["w"] += int(((0 if input_on_host else lb.input_bytes) + vision) * frac)

    dw, dc, dx, dh = t.draft
    host += dh
    devices = []
    for d, gpu in enumerate(r.gpus):
        holds_output = d // grp == out_stage
        cb = t.compute[holds_output]
        oh = int(m.runtime_overhead.si)
        cap = gpu.memory_bytes
        usable = int(cap * m.gpu_memory_utilization.value) if m.gpu_memory_utilization else cap
        here = r.spec is not None and d == r.spec.device
        draft = (dw, dc, dx) if here else (0, 0, 0)
        total = per[d]["w"] + per[d]["kv"] + per[d]["st"] + cb + oh + sum(draft)
        devices.append(DeviceMemory(
            device=gpu.id, capacity_bytes=cap, usable_bytes=usable, weights_bytes=per[d]["w"],
            kv_cache_bytes=per[d]["kv"], recurrent_state_bytes=per[d]["st"], compute_buffer_bytes=cb,
            runtime_overhead_bytes=oh, draft_weights_bytes=draft[0], draft_cache_bytes=draft[1],
            draft_compute_bytes=draft[2], total_bytes=total, layers=per[d]["layers"]))
    if r.host_ram_bytes is not None:
        host_fits = host <= r.host_ram_bytes
    else:
        host_fits = False if r.host_max_bytes is not None and host > r.host_max_bytes else None
    fits = all(dv.fits for dv in devices) and host_fits is not False
    return MemoryPlan(ctx_tokens=ctx, kv_cells=kv_cells(r, ctx), batch=r.batch, devices=tuple(devices),
                      host_bytes=host, host_kv_bytes=host_kv, fits=fits, host_fits=host_fits)


def draft_memory(r: Resolved, ctx: int) -> tuple[int, int, int, int]:
    """(weights, cache, compute scratch, host bytes) of the speculative drafter at `ctx`: the
    drafter planned as a model of its own on its GPU, less the tensors it shares with the target
    (its runtime overhead is the target's process, not counted twice)."""
    s = r.spec
    if s is None:
        return 0, 0, 0, 0
    p = plan_memory(s.draft, ctx)
    d = p.devices[0]
    return (d.weights_bytes - s.shared_device_bytes, d.kv_cache_bytes + d.recurrent_state_bytes,
            d.compute_buffer_bytes, p.host_bytes - s.shared_host_bytes)


def ctx_step(r: Resolved) -> int:
    """Granularity of context sizes: the engine's padding per sequence."""
    return r.engine.memory.ctx_padding_tokens


def max_context(r: Resolved, limit: int | None = None) -> int:
    """Longest per-sequence context (a multiple of the padding step, at most `limit`, the
    model's native maximum by default) that fits; 0 if none does. Memory grows with context,
    so a binary search over padding steps finds it."""
    step = ctx_step(r)
    limit = limit or r.arch.max_position_embeddings
    hi = limit // step
    if hi == 0 or not plan_memory(r, step).fits:
        return 0
    if plan_memory(r, hi * step).fits:
        return hi * step
    lo = 1  # fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if plan_memory(r, mid * step).fits:
            lo = mid
        else:
            hi = mid
    return lo * step


def least_offload(r: Resolved, ctx: int, candidates: list[Resolved]) -> tuple[Resolved, MemoryPlan] | None:
    """The first of `candidates` (one deployment with ever more of it in host RAM: -ngl down, or
    --n-cpu-moe up) that fits at `ctx`, with its plan; None if none does.

    Bytes on the GPUs together only fall along the list and bytes on the host only grow, so a
    binary search finds the first candidate whose GPUs together could hold it, and a walk from
    there finds the first that fits (one step on one GPU; more only where a layer split's rounding
    leaves one GPU over while the total fits) and stops as soon as the host no longer fits."""
    table = layer_table(r, ctx)  # the same for every candidate: each plans in O(devices)

    def plan(i: int) -> MemoryPlan:
        return plan_memory(candidates[i], ctx, table)

    def gpus_could(p: MemoryPlan) -> bool:
        return sum(d.total_bytes for d in p.devices) <= sum(d.usable_bytes for d in p.devices)

    lo, hi = 0, len(candidates)  # the first index whose GPUs could hold it lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if gpus_could(plan(mid)):
            hi = mid
        else:
            lo = mid + 1
    for i in range(lo, len(candidates)):
        p = plan(i)
        if p.fits:
            return candidates[i], p
        if p.host_fits is False:
            return None
    return None


def with_(r: Resolved, **changes) -> Resolved:
    return replace(r, **changes)



class MemoryCurve(Strict):
    """Bytes of each kind (all devices together) by context length, for one deployment."""

    ctx_tokens: tuple[int, ...]
    parts: dict[str, tuple[int, ...]]  # weights, KV cache, ... each by context
    usable_bytes: int  # all devices
    host_bytes: tuple[int, ...]
    max_ctx_tokens: int
    native_ctx_tokens: int


MEMORY_PARTS = {  # label -> DeviceMemory fields summed for it
    "weights": ("weights_bytes",), "KV cache": ("kv_cache_bytes",), "recurrent state": ("recurrent_state_bytes",),
    "compute buffers": ("compute_buffer_bytes",), "runtime": ("runtime_overhead_bytes",),
    "drafter": ("draft_weights_bytes", "draft_cache_bytes", "draft_compute_bytes"),
}


def memory_curve(r: Resolved, points: int = 40) -> MemoryCurve:
    """From one padding step to past the longest context that fits (or the native maximum)."""
    best = max_context(r)
    native = r.arch.max_position_embeddings
    top = int(1.25 * max(native, best))  # a quarter past the native maximum or the longest fit
    step = ctx_step(r)
    ctxs = sorted({max(step, int(round(x / step)) * step) for x in
                   [top * i / (points - 1) for i in range(points)] + [best or step, native]})
    plans = [plan_memory(r, c) for c in ctxs]
    parts = {label: tuple(sum(getattr(d, f) for d in p.devices for f in fields) for p in plans)
             for label, fields in MEMORY_PARTS.items()}
    parts = {k: v for k, v in parts.items() if any(v)}
    return MemoryCurve(ctx_tokens=tuple(ctxs), parts=parts, usable_bytes=sum(d.usable_bytes for d in plans[0].devices),
                       host_bytes=tuple(p.host_bytes for p in plans), max_ctx_tokens=best, native_ctx_tokens=native)
