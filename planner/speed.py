"""PerfEstimate: the speed report of one deployment and workload, built on planner.perf.

Terms (docs/equations.md#speed): TTFT = time to process the prompt of every sequence in the
batch; decode tok/s per stream = generated tokens / decode time of one sequence; total =
per stream x batch; MBU = bytes moved per decode step / step time / peak bandwidth of the
GPUs; MFU = prefill FLOPs / prefill time / peak compute.
"""

from __future__ import annotations

import math

import numpy as np

from planner.calibration import Calibration, efficiency_for, engine_chain
from planner.intervals import Interval, interval
from planner.catalog import Catalog
from planner.deployment import DEFAULT_HOST, Resolved
from planner.perf import (PhaseBreakdown, StepModel, bound_of, breakdown, ceiling_step_time, compile_steps,
                          decode_step_time, decode_time, prefill_time)
from planner.schema import Strict
from planner.units import GB, US

DEFAULT_PROMPT = 512  # llama-bench's pp512 / tg128 defaults
DEFAULT_GEN = 128


class DecodeAt(Strict):
    depth_tokens: int
    tok_s: float  # per stream
    total_tok_s: float  # across the batch


class PerfEstimate(Strict):
    prompt_tokens: int
    gen_tokens: int
    depth_tokens: int
    batch: int
    prefill_tok_s: float | None
    ttft_s: float | None
    prefill_bound: str | None
    decode_tok_s: float
    decode_total_tok_s: float
    tpot_s: float
    decode_bound: str
    decode_at: tuple[DecodeAt, ...]
    ceiling_decode_tok_s: float
    ceiling_prefill_tok_s: float | None
    mbu: float | None
    mfu: float | None
    comm_s_per_step: float
    split: str
    link: str
    calibration: str
    efficiency_from: str
    decode_step: PhaseBreakdown
    prefill_step: PhaseBreakdown | None
    notes: tuple[str, ...]
    # 80% intervals from the validation residuals of the nearest runs (planner.intervals); None: no runs
    decode_interval: Interval | None = None
    prefill_interval: Interval | None = None
    kernel_paths: str = ""  # the kernel-path table the speeds were priced with (empty: the classic roofline)

    def contract(self, explain: bool = False) -> dict:
        d = self.model_dump(exclude={"decode_step", "prefill_step"})
        d["bound"] = self.decode_bound
        if explain:
            d["decode_step"] = self.decode_step.model_dump()
            d["prefill_step"] = self.prefill_step.model_dump() if self.prefill_step else None
        return d


def step_model(catalog: Catalog, r: Resolved, cal: Calibration) -> StepModel:
    host = r.host or catalog.host(DEFAULT_HOST)
    return compile_steps(r, efficiency_for(cal, r.engine.id, r.flash_attention, r.gpus[0].family), catalog.links, host,
                         catalog.paths_of(r.engine))


def estimate(catalog: Catalog, r: Resolved, ctx: int, prompt: int | None = None, gen: int | None = None,
             depth: int | None = None, cal: Calibration | None = None) -> PerfEstimate:
    cal = cal or catalog.calibration(None, r.engine.id, r.gpus[0].id)
    sm = step_model(catalog, r, cal)
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    gen = DEFAULT_GEN if gen is None else gen
    depth = 0 if depth is None else depth
    b, ub = r.batch, r.ubatch_tokens
    notes = []
    bare = sorted({g.id for g in r.gpus if g.family is None and g.status == "released"})
    if bare:
        notes.append(f"no kernel-path data for the architecture of {', '.join(bare)}: its speeds come from the generic "
                     "roofline over its peaks, not from the kernels the engine runs there (docs/kernel-paths.md); read "
                     "them as rough")
    if sm.unpathed:
        notes.append(f"the kernel-path table of {r.engine.id} (hwdb/paths) does not describe {'; '.join(sm.unpathed)}: "
                     "those weights are priced by the generic roofline, not by the kernel the engine runs; read the "
                     "speeds as rough")
    if sm.host is not None and r.host is None:
        notes.append(f"host memory not given (--host): offloaded layers assumed on {DEFAULT_HOST}")
    if sm.rpc_servers:
        notes.append(f"llama.cpp RPC over {r.network.id}: each step sends every other machine its input and waits for "
                     f"its output, {sm.rpc_servers} network round trip(s) of {2 * r.network.latency.si / US:.3g} us plus "
                     "the activations at the network's bandwidth (b11434's protocol, ggml-rpc.cpp); published RPC runs "
                     "of older builds lost more per token to the network than this (docs/multinode.md#validation): "
                     "read decode as an upper bound")
    if sm.net_boundaries or sm.tp_machines > 1:
        n = r.network
        how = (f"data-parallel attention over {sm.dp} GPUs on {sm.tp_machines} machines: every MoE layer all-gathers "
               f"all ranks' tokens and reduce-scatters the experts' outputs over {n.id}" if sm.dp > 1 else
               f"tensor-parallel groups of {sm.tp} span {sm.tp_machines} machines: each of the "
               f"{sm.syncs_per_layer * sm.gpu_layers} all-reduces per step crosses {n.id} (hierarchical: inside each "
               "machine, then a ring over the machines)" if sm.tp_machines > 1 else
               f"tensor parallel {sm.tp} inside each machine over {sm.link_name}, {sm.net_boundaries} pipeline "
               f"boundary(ies) over {n.id} ({sm.boundary_tensors} activation tensors each)")
        notes.append(f"{r.engine.family} over {len(set(r.nodes))} machines: {how}; {r.rails} link(s) of "
                     f"{n.bandwidth.si / GB:.3g} GB/s and {n.latency.si / US:.3g} us per machine, plus NCCL's "
                     f"{n.nccl_hop_overhead / US:.3g} us per hop. Congestion and NCCL's choice of algorithm are not "
                     "modelled: read decode as an upper bound (docs/multinode.md)")
    if len(r.gpus) > 1 and sm.local_boundaries != 0 and sm.tp > 1 and len(r.gpus) > sm.tp and not sm.net_boundaries:
        notes.append(f"tensor parallel {sm.tp} x pipeline {len(r.gpus) // sm.tp}: each stage's GPUs share its layers "
                     f"over {sm.link_name}; the stages run in turn")
    elif len(r.gpus) > 1 and sm.local_boundaries != 0 and not (sm.tp > 1 and len(r.gpus) > sm.tp):
        notes.append(f"GPUs linked by {sm.link_name}, {sm.link_bandwidth / GB:.1f} GB/s each way")
        if sm.split == "layer":
            notes.append("layer split: each token passes the GPUs in turn, so their times add up; "
                         "a prompt's ubatches pipeline across them" if sm.pipeline_prefill else
                         "layer split: each token passes the GPUs in turn, so their times add up")
        else:
            notes.append(f"tensor split: the GPUs share every layer and reduce {sm.syncs_per_layer}x per layer "
                         "over the link; the slowest share sets the pace")

    t_dec = float(decode_time(sm, [b], [depth + prompt], [max(gen, 1)])[0])
    tok_s = max(gen, 1) / t_dec
    dstep = breakdown(sm, f"decode step: {b} token(s) at depth {depth + prompt}", b, b, 1, depth + prompt)
    ceil_t = float(ceiling_step_time(sm, [b], [b], [1], [depth + prompt])[0])
    ceiling = 1 / ceil_t if ceil_t > 0 else math.inf

    at = []
    for d in sorted({0, ctx // 2, ctx}):
        t = float(decode_time(sm, [b], [d], [1])[0])
        at.append(DecodeAt(depth_tokens=d, tok_s=1 / t, total_tok_s=b / t))

    peak_bw = sum(g.bandwidth_bytes_per_s or 0 for g in r.gpus)
    # tensor-parallel stages are shown by one GPU each: the others move as much
    grp = sm.tp * sm.dp
    gpu_bytes = sum(o.bytes for o in dstep.ops if o.stage != "host RAM") * (grp if sm.dp > 1 or len(r.gpus) > grp > 1 else 1)
    mbu = gpu_bytes / dstep.step_s / peak_bw if peak_bw else None

    pre_tok_s = ttft = pre_bound = ceil_pre = mfu = None
    pstep = None
    if sm.compute_known and prompt > 0:
        t_pre = float(prefill_time(sm, [b], [prompt], [depth], [ub])[0])
        pre_tok_s = b * prompt / t_pre
        ttft = t_pre
        q = min(prompt, ub)
        seqs = max(1, min(b, ub // q))
        pstep = breakdown(sm, f"prefill step: {seqs * q} tokens at depth {depth}", seqs * q, seqs, q, depth)
        pre_bound = bound_of(pstep)
        c = float(ceiling_step_time(sm, [seqs * q], [seqs], [q], [depth])[0])
        ceil_pre = seqs * q / c if c > 0 else None
        peak_f = [o.peak_flops_per_s for o in pstep.ops if o.op.startswith("matmul") and o.peak_flops_per_s]
        flops = sum(o.flops for o in pstep.ops)
        if peak_f:
            mfu = flops / pstep.step_s / (max(peak_f) * (len(r.gpus) if sm.split == "tensor" else 1))
    elif prompt > 0:
        notes.append("no published compute peak for " + ", ".join(g.id for g in r.gpus)
                     + ": prefill speed not predicted")
    engines = engine_chain(cal, r.engine.id)
    src = sm.eff.engine_source
    if src != r.engine.id and src.split("-")[0] != r.engine.id.split("-")[0]:
        notes.append(f"no {r.engine.id} run is fitted in profile {cal.id}: its efficiencies are {src}'s (the profile's "
                     "fallback); held-out published runs score the result (docs/validation.md)")
    family = r.gpus[0].family
    dec_iv = interval(cal.intervals, engines, family, "decode" if b == 1 else "batched", tok_s)
    pre_iv = interval(cal.intervals, engines, family, "prefill", pre_tok_s) if pre_tok_s else None
    if r.kv_speed_note:
        dec_iv = pre_iv = None
        notes.append(r.kv_speed_note)
    caveats = [c for c in catalog.caveats if c.applies(r.engine.family, r.arch, b, r.engine.id)]  # hwdb/caveats.toml
    if any(c.metric == "prefill" for c in caveats):
        pre_iv = None
    notes += [f"{r.engine.family} {c.note}" for c in caveats]
    if any(c.metric == "decode" for c in caveats):  # published runs miss by more than any interval says: none is given
        dec_iv = None
    elif dec_iv is None and not r.kv_speed_note:  # (a KV type's caveat already said why there is none)
        notes.append(f"no measured runs behind this kind of point in profile {cal.id}: the speeds carry no interval")
    elif dec_iv is not None and "," in dec_iv.basis:  # not a bucket of this engine on this family (planner.intervals.interval)
        notes.append(f"few or no {r.engine.id} runs on {family or 'this family of'} GPUs: its speeds use the engine's "
                     "factors over the families measured, and their intervals those runs' errors")
    return PerfEstimate(
        decode_interval=dec_iv, prefill_interval=pre_iv, kernel_paths=sm.paths,
        prompt_tokens=prompt, gen_tokens=gen, depth_tokens=depth, batch=b, prefill_tok_s=pre_tok_s, ttft_s=ttft,
        prefill_bound=pre_bound, decode_tok_s=tok_s, decode_total_tok_s=tok_s * b, tpot_s=1 / tok_s,
        decode_bound=bound_of(dstep), decode_at=tuple(at), ceiling_decode_tok_s=ceiling, ceiling_prefill_tok_s=ceil_pre,
        mbu=mbu, mfu=mfu, comm_s_per_step=dstep.comm_s,
        split=(f"data-parallel attention {sm.dp}" if sm.dp > 1 else
               f"tensor {sm.tp} x pipeline {len(r.gpus) // sm.tp}" if len(r.gpus) > sm.tp > 1 else sm.split),
        link=(f"{r.network.id} between machines (llama.cpp RPC)" + (f" and {sm.link_name}" if sm.local_boundaries else "")
              if sm.rpc_servers else f"{sm.link_name} and {r.rails}x {r.network.id} between machines" if r.nodes
              else sm.link_name), calibration=cal.id,
        efficiency_from=sm.eff.engine_source, decode_step=dstep, prefill_step=pstep, notes=tuple(notes))



class DecodeCurve(Strict):
    """Decode speed by depth (tokens already in context) for one deployment."""

    batch: int
    depth_tokens: tuple[int, ...]
    tok_s: tuple[float, ...]  # per stream
    ceiling_tok_s: tuple[float, ...]  # every op at peak, no overheads (the physical bound)


def decode_curve(catalog: Catalog, r: Resolved, ctx: int, cal: Calibration, points: int = 48) -> DecodeCurve:
    sm = step_model(catalog, r, cal)
    depth = np.unique(np.linspace(0, max(ctx, 1), points).astype(int))
    b = np.full(depth.shape, float(r.batch))
    t = decode_step_time(sm, b, depth)
    c = ceiling_step_time(sm, b, b, np.ones_like(b), depth)
    return DecodeCurve(batch=r.batch, depth_tokens=tuple(int(x) for x in depth), tok_s=tuple(float(x) for x in 1 / t),
                       ceiling_tok_s=tuple(float(x) for x in 1 / c))


class BatchCurve(Strict):
    """Decode speed by number of concurrent sequences, each at `depth_tokens`."""

    depth_tokens: int
    ctx_tokens: int  # per sequence, for the memory check
    batch: tuple[int, ...]
    fits: tuple[bool, ...]
    tok_s: tuple[float, ...]  # per stream
    total_tok_s: tuple[float, ...]  # across the batch
    bound: tuple[str, ...]


BATCH_POINTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # powers of two, as batch benchmarks sweep


def batch_curve(catalog: Catalog, r: Resolved, ctx: int, depth: int, cal: Calibration) -> BatchCurve:
    from planner.memory import plan_memory, with_

    sm = step_model(catalog, r, cal)
    bs = np.array(BATCH_POINTS, dtype=float)
    t = decode_step_time(sm, bs, np.full(bs.shape, float(depth)))
    fits, bounds = [], []
    for b in BATCH_POINTS:
        fits.append(plan_memory(with_(r, batch=b), ctx).fits)
        bounds.append(bound_of(breakdown(sm, "", b, b, 1, depth)))
    return BatchCurve(depth_tokens=depth, ctx_tokens=ctx, batch=BATCH_POINTS, fits=tuple(fits),
                      tok_s=tuple(float(x) for x in 1 / t), total_tok_s=tuple(float(x) for x in bs / t),
                      bound=tuple(bounds))
