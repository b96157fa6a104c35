"""`fit`: does a deployment fit, how long a context, and what to change when it does not.

The library call behind `planner fit`. Builds on planner.memory; ranks alternatives by
re-planning them (never by rules of thumb).
"""

from __future__ import annotations

from typing import Any

from planner.calibration import Calibration
from planner.catalog import Catalog
from planner.deployment import Resolved, allowed
from planner.memory import MemoryPlan, least_offload, max_context, plan_memory, with_
from planner.schema import Strict
from planner.speed import PerfEstimate, estimate
from planner.spec import Claim, SpecEstimate, check_claim, estimate_spec
from planner.units import GiB, fmt_tokens

MIN_USEFUL_CTX = 4096  # a context shorter than this is not offered as a fix


class Suggestion(Strict):
    change: str  # what to do, as a flag or plain words
    fits: bool
    max_ctx_tokens: int
    effect: str  # what it buys


class FitResult(Strict):
    model: str
    model_name: str = ""
    architecture: dict[str, Any] = {}  # family, model_type, parameter counts, layer kinds (architecture_summary)
    fits: bool
    ctx_tokens: int
    max_ctx_tokens: int
    memory: MemoryPlan
    perf: PerfEstimate | None = None
    spec: SpecEstimate | None = None
    claim: Claim | None = None
    assumptions: dict[str, Any]
    warnings: tuple[str, ...]
    suggestions: tuple[Suggestion, ...]

    @property
    def host_ram_needed_bytes(self) -> int | None:
        """Host RAM the plan relies on for model weights or KV (offloaded layers or experts), when
        nobody stated how much the host has; None when the plan does not lean on host RAM or
        --host-ram was given (then `fits` checked it)."""
        return self.assumptions.get("host_ram_needed_bytes")

    @property
    def verdict(self) -> str:
        """fits / fits-if-host-ram (the GPUs hold their share; the rest needs host RAM nobody
        stated) / does-not-fit."""
        if not self.fits:
            return "does-not-fit"
        return "fits-if-host-ram" if self.host_ram_needed_bytes else "fits"

    def contract(self, explain: bool = False) -> dict[str, Any]:
        """The stable `fit --json` object (DESIGN.md): byte fields are integers."""
        mem = self.memory
        return {
            "model": self.model,
            "model_name": self.model_name,
            "architecture": self.architecture,
            "fits": self.fits,
            "verdict": self.verdict,
            "host_ram_needed_bytes": self.host_ram_needed_bytes,
            "ctx_tokens": self.ctx_tokens,
            "max_ctx_tokens": self.max_ctx_tokens,
            "memory": {
                "devices": [d.model_dump() for d in mem.devices],
                "host_bytes": mem.host_bytes,
                "kv_cells": mem.kv_cells,
            },
            "perf": self.perf.contract(explain) if self.perf else None,
            "spec": self.spec.model_dump() if self.spec else None,
            "claim": self.claim.model_dump() if self.claim else None,
            "assumptions": self.assumptions,
            "warnings": list(self.warnings),
            "suggestions": [s.model_dump() for s in self.suggestions],
        }


def architecture_summary(a) -> dict[str, Any]:
    """What planner read the model as: its family, parameter counts and layer kinds."""
    from planner.families import FAMILIES

    fam = FAMILIES.get(a.family)
    return {
        "family": a.family, "family_label": fam.label if fam else "", "model_type": a.model_type,
        "total_params": a.params(), "active_params": a.active_params() + _embedding_params(a),
        "mtp_params": a.params(("mtp",)), "vision_params": a.params(("vision",)),
        "layers": a.n_layers, "layer_kinds": a.layer_kinds(),
        "n_experts": a.n_experts, "n_experts_per_tok": a.n_experts_per_tok,
        "kv_values_per_token": sum(x.kv_elems_per_token for x in a.layers),
        "state_values_per_sequence": sum(x.ssm_state_elems + x.conv_state_elems for x in a.layers),
        "approximations": list(a.notes),
    }


def _embedding_params(a) -> int:
    return sum(t.params for t in a.tensors if t.group == "text" and t.role == "token_embd")


def _target_ctx(r: Resolved) -> int:
    """The context asked for, or the model's native maximum."""
    return r.ctx_tokens if r.ctx_tokens is not None else r.arch.max_position_embeddings


def fit(catalog: Catalog, r: Resolved, prompt: int | None = None, gen: int | None = None, depth: int | None = None,
        calibration: Calibration | None = None, sweep_accept: bool = False, observed: float | None = None) -> FitResult:
    ctx = _target_ctx(r)
    plan = plan_memory(r, ctx)
    auto_note = None
    if not plan.fits and r.auto_offload:
        r, auto_note = _auto_offload(r, ctx)
        plan = plan_memory(r, ctx)
    best = max_context(r)
    warnings = list(r.notes) + [f"{r.arch.model_type}: {n}" for n in r.arch.notes] + _warnings(r, ctx, plan)
    if auto_note:
        warnings.insert(0, auto_note)
    suggestions = () if plan.fits else tuple(_suggest(catalog, r, ctx, best))
    cal = calibration or catalog.calibration(None, r.engine.id, r.gpus[0].id)
    perf = estimate(catalog, r, ctx, prompt, gen, depth, cal)
    if not plan.fits:
        warnings.append("it does not fit as configured: the speeds shown are what it would run at if it did")
    if perf.depth_tokens + perf.prompt_tokens + perf.gen_tokens > ctx:
        warnings.append(f"depth + prompt + gen = {perf.depth_tokens + perf.prompt_tokens + perf.gen_tokens:,} tokens "
                        f"is more than the context of {ctx:,}")
    spec = estimate_spec(catalog, r, perf, cal, sweep=sweep_accept) if r.spec is not None else None
    claim = check_claim(catalog, r, perf, cal, observed, spec) if observed is not None else None
    if spec is not None:
        warnings += list(spec.notes)
    a = _assumptions(r)
    offloaded = r.gpu_layers < r.arch.n_layers or r.cpu_moe_layers > 0
    a["host_ram_needed_bytes"] = plan.host_bytes if offloaded and r.host_ram_bytes is None else None
    a["calibration"] = f"{cal.id}: {cal.name}"
    a["efficiency_factors_from"] = perf.efficiency_from
    return FitResult(
        model=r.model_id, model_name=r.model_name, architecture=architecture_summary(r.arch), fits=plan.fits, ctx_tokens=ctx, max_ctx_tokens=best, memory=plan, perf=perf, spec=spec,
        claim=claim, assumptions=a, warnings=tuple(dict.fromkeys(warnings + list(perf.notes))), suggestions=suggestions)


def _auto_offload(r: Resolved, ctx: int) -> tuple[Resolved, str | None]:
    """What llama.cpp's --fit (on by default since 2025) does when the model does not fit: keep
    the expert tensors of the first layers in host RAM (MoE), else the first layers. The least
    offload that fits; none if even the most does not."""
    n = r.arch.n_layers
    if r.arch.n_experts > 1:
        hit = least_offload(r, ctx, [with_(r, cpu_moe_layers=k, auto_offload=False) for k in range(1, n + 1)])
        if hit:
            k = hit[0].cpu_moe_layers
            return hit[0], (f"planned as llama.cpp's --fit would: the experts of the first {k} of {n} layers stay in "
                            f"host RAM (--n-cpu-moe {k}); pass --cpu-moe or -ngl to choose yourself")
    hit = least_offload(r, ctx, [with_(r, gpu_layers=ngl, auto_offload=False) for ngl in range(n - 1, -1, -1)])
    if hit:
        ngl = hit[0].gpu_layers
        return hit[0], (f"planned as llama.cpp's --fit would: {n - ngl} of {n} layers stay in host RAM (-ngl {ngl}); "
                        "pass -ngl to choose yourself")
    return r, None


def _assumptions(r: Resolved) -> dict[str, Any]:
    m = r.engine.memory
    a: dict[str, Any] = {
        "engine": r.engine.id,
        "engine_name": r.engine.name,
        "engine_version": r.engine.pinned or r.engine.version or None,  # the release whose defaults are planned
        "quant": r.quant,
        "kv_quant": r.kv_quant,
        "kv_quant_v": r.v_type,
        "split": r.split if len(r.gpus) > 1 else "none",
        # GPUs per pipeline stage (tensor parallel) and stages; expert parallel over each stage's GPUs
        "parallel": {"tp": r.tp_size, "pp": r.pp_size, "dp": r.dp, "expert_parallel": r.expert_parallel},
        "machines": None if not r.nodes else {
            "network": r.network.id,
            "transport": "llama.cpp RPC" if r.engine.family == "llama.cpp" else "torch.distributed (NCCL)",
            "gpu_machine": list(r.nodes),  # per device of `memory.devices`, in that order (llama.cpp RPC: other machines first)
            "links_per_machine": r.rails,
            "bandwidth_bytes_per_s": r.network.bandwidth.si, "latency_one_way_s": r.network.latency.si},
        "batch": r.batch,
        "ubatch_tokens": r.ubatch_tokens,
        "flash_attention": r.flash_attention,
        "ctx_padding_tokens": m.ctx_padding_tokens,
        "gpu_layers": r.gpu_layers,
        "cpu_moe_layers": r.cpu_moe_layers,
        "token_embedding_on_host": m.token_embedding_on_host,
        "recurrent_state_dtype": m.recurrent_state_dtype,
        "vision_encoder_loaded": bool(m.loads_vision_encoder and r.arch.n_vision_params),
        "mtp_layers_loaded": bool(r.spec is not None and r.spec.method == "mtp"),
        "speculative": None if r.spec is None else {
            "method": r.spec.method, "drafter": r.spec.name, "draft_len": r.spec.gamma,
            "draft_quant": r.spec.draft.quant, "drafter_device": r.gpus[r.spec.device].id},
        "weights_source": "gguf file (exact)" if r.exact_weights else "computed from the recipe",
        "calibration": "none (memory model: engine rules, no fitted factors)",
        "native_max_ctx_tokens": r.arch.max_position_embeddings,
    }
    if r.engine.family == "llama.cpp":
        a["load_mode"] = r.load_mode or "auto"
    if m.gpu_memory_utilization:
        a["gpu_memory_utilization"] = m.gpu_memory_utilization.value
    return a


def _load_mode_warnings(r: Resolved, plan: MemoryPlan) -> list[str]:
    """How llama.cpp's -lm (b11434 common/arg.cpp:2693-2711) holds the weights planned in host RAM."""
    if r.engine.family != "llama.cpp" or r.engine.backend == "metal":
        return []
    offloaded = r.gpu_layers < r.arch.n_layers or r.cpu_moe_layers > 0
    mode = r.load_mode or "auto"
    integrated = all(g.memory_kind == "unified" for g in r.gpus)
    if mode == "auto" and integrated:
        mode = "none"  # auto turns mmap off on integrated CUDA/HIP/Vulkan GPUs (llama-model.cpp:1514-1523)
    w = []
    if offloaded and mode in ("auto", "mmap"):
        w.append(f"host-RAM weights ({plan.host_bytes / GiB:,.1f} GiB) are the GGUF's page cache under -lm {mode} "
                 "(mmap; llama-model-loader.cpp:1269-1277): under memory pressure the kernel drops them and rereads "
                 "them from disk, at disk speed; -lm none copies them into pinned RAM that must hold them, "
                 "-lm mmap+mlock keeps them resident")
    elif offloaded and mode in ("none", "mlock"):
        w.append(f"-lm {mode}: the host-RAM weights are copied into pinned memory (the GPU's host buffer, "
                 "llama-model.cpp:1080-1135), which the host must hold whole and nothing else can use")
    if mode in ("mlock", "mmap+mlock"):
        w.append(f"-lm {mode} locks the host-RAM weights: with RLIMIT_MEMLOCK (ulimit -l) below their size llama.cpp "
                 "only warns and loads them unlocked")
    if mode == "dio" and not integrated:
        w.append("-lm dio reads the file with direct I/O into plain host buffers (no page cache); llama.cpp's own use "
                 "for it is integrated GPUs")
    return w


def _warnings(r: Resolved, ctx: int, plan: MemoryPlan) -> list[str]:
    w = []
    if ctx > r.arch.max_position_embeddings:
        w.append(f"context {ctx:,} is beyond the model's native {r.arch.max_position_embeddings:,} tokens "
                 "(needs RoPE scaling such as YaRN; quality may drop)")
    for g in r.gpus:
        if g.status == "unreleased":
            w.append(f"{g.id} is unreleased: its figures include estimates (see `planner show {g.id}`)")
        if g.specs.gpu_allocatable is not None:
            w.append(f"{g.id}: the GPU may use {g.memory_bytes / GiB:.1f} GiB of {g.specs.memory.si / GiB:.0f} GiB unified "
                     "memory by default")
    turbo = r.engine.id.startswith("llama.cpp-turboquant") and "turbo" in r.kv_label
    if r.engine.family == "llama.cpp" and r.v_type != r.kv_quant and r.engine.backend == "cuda" and not turbo:
        w.append(f"K/V cache types {r.kv_label}: llama.cpp's default CUDA build compiles flash-attention vector kernels "
                 "only for f16/f16, q8_0/q8_0, q4_0/q4_0 and bf16/bf16 (GGML_CUDA_FA_QUANTS), so every attention step "
                 "converts K and V to f16 first (ggml-cuda/fattn.cu:500-510; priced here); a build with "
                 f"-DGGML_CUDA_FA_QUANTS=\"{r.kv_quant}-{r.v_type}\" reads them in the kernel")
    elif r.engine.family == "llama.cpp" and r.v_type not in ("f16", "bf16", "f32") and not turbo:
        w.append("a quantized V cache needs flash attention (on by default); on CUDA, K/V type pairs other than "
                 "q8_0/q8_0 and q4_0/q4_0 need a GGML_CUDA_FA_ALL_QUANTS build")
    w += _load_mode_warnings(r, plan)
    if r.engine.memory.gpu_memory_utilization is not None:
        w.append(f"{r.engine.id} preallocates the KV cache: it takes all memory under gpu_memory_utilization, "
                 "whatever the context asked for")
    if plan.host_fits is False and r.host_ram_bytes is None:
        w.append(f"host RAM: the plan needs {plan.host_bytes / GiB:,.1f} GiB, more than the {r.host_max_bytes / GiB:,.0f} GiB "
                 f"a {r.host_max_from} host holds at most; give --host-ram (or --host) if yours holds more")
    elif plan.host_fits is False:
        w.append(f"host RAM: the plan needs {plan.host_bytes / GiB:,.1f} GiB, more than --host-ram "
                 f"{r.host_ram_bytes / GiB:,.1f} GiB")
    elif plan.host_bytes and r.host_ram_bytes is None and (r.gpu_layers < r.arch.n_layers or r.cpu_moe_layers):
        w.append("host RAM size not given (--host-ram): "
                 + (f"checked only against the most a {r.host_max_from} host holds ({r.host_max_bytes / GiB:,.0f} GiB)"
                    if r.host_max_bytes is not None else "not checked"))
    unused = [f"{d.device} #{i + 1}" for i, d in enumerate(plan.devices)
              if r.split == "layer" and len(plan.devices) > 1 and d.layers == 0 and d.weights_bytes == 0]
    if unused:
        w.append(f"{', '.join(unused)} hold(s) no layers (a --tensor-split share of 0, or more GPUs than layers): "
                 "only runtime memory is spent there")
    if r.arch.mtp_layers and not (r.spec is not None and r.spec.method == "mtp"):
        why = ("no speculative decoding; --spec mtp --accept A plans with them" if r.spec is None
               else f"speculation uses {r.spec.method}")
        w.append(f"{r.arch.mtp_layers} MTP layer(s) in the checkpoint are not loaded ({why})")
    return w


def _try(r: Resolved, ctx: int) -> tuple[bool, int]:
    return plan_memory(r, ctx).fits, max_context(r)


def _suggest(catalog: Catalog, r: Resolved, ctx: int, best: int) -> list[Suggestion]:
    """Alternatives that fit, each re-planned: the cheapest change first."""
    out: list[Suggestion] = []
    if best >= MIN_USEFUL_CTX:
        out.append(Suggestion(change=f"--ctx {best}", fits=True, max_ctx_tokens=best,
                              effect=f"the longest context that fits as configured: {fmt_tokens(best)} tokens"))
    # quantized KV cache
    kv_order = ["q8_0", "q5_1", "q5_0", "q4_0"] if r.engine.family == "llama.cpp" else ["fp8"]
    base_kv = plan_memory(r, ctx).devices
    for kv in kv_order:
        if kv not in r.engine.kv_types or (kv == r.kv_quant and kv == r.v_type):
            continue
        alt = with_(r, kv_quant=kv, kv_bytes_per_value=catalog.kv_types.types[kv].bytes_per_value, kv_quant_v="",
                    kv_v_bytes_per_value=0.0)
        if not allowed(alt):  # e.g. llama.cpp's tensor split takes no quantized cache
            continue
        ok, m = _try(alt, ctx)
        if ok or m > best:
            saved = sum(d.kv_cache_bytes for d in base_kv) - sum(d.kv_cache_bytes for d in plan_memory(alt, ctx).devices)
            out.append(Suggestion(change=f"--kv-quant {kv}", fits=ok, max_ctx_tokens=m,
                                  effect=f"KV cache {saved / GiB:.1f} GiB smaller; max context {fmt_tokens(m)}"))
            if ok:
                break
    # smaller weights (same format, in order of size)
    if not r.exact_weights:
        from planner.deployment import recipe_total, recipe_weights, weight_format

        fmt = weight_format(r.engine)
        cur = sum(w.bytes for w in r.weights)
        usable = sum(d.usable_bytes for d in base_kv)
        # bytes that may sit off the GPUs whatever the recipe (at most F32, 4 bytes a weight):
        # a recipe whose other weights pass every GPU's usable memory cannot fit, so it is not built
        off_gpu = (4 * sum(t.params for t in r.arch.tensors if t.role == "token_embd" or t.group in ("vision", "mtp"))
                   if r.gpu_layers == r.arch.n_layers and not r.cpu_moe_layers else None)
        options = []
        for name, rec in catalog.recipes.recipes.items():
            if rec.format != fmt or name == r.quant:
                continue
            total = recipe_total(catalog, r.arch, rec)
            if total < cur and (off_gpu is None or total - off_gpu <= usable):
                options.append((total, name, rec))
        for total, name, rec in sorted(options, reverse=True):  # the largest (best quality) that fits
            alt = with_(r, quant=name, weights=recipe_weights(catalog, r.arch, rec))
            ok, m = _try(alt, ctx)
            if ok:
                out.append(Suggestion(change=f"--quant {name}", fits=True, max_ctx_tokens=m,
                                      effect=f"weights {(cur - total) / GiB:.1f} GiB smaller; max context {fmt_tokens(m)}"))
                break
    # host-RAM offload (llama.cpp)
    if r.engine.family == "llama.cpp" and r.gpus[0].memory_kind == "dedicated":
        if r.arch.n_experts > 1:
            hit = least_offload(r, ctx, [with_(r, cpu_moe_layers=k) for k in range(1, r.arch.n_layers + 1)])
            if hit:
                alt, p = hit
                out.append(Suggestion(change=f"--n-cpu-moe {alt.cpu_moe_layers}", fits=True, max_ctx_tokens=max_context(alt),
                                      effect=f"experts of the first {alt.cpu_moe_layers} layers in host RAM ({p.host_bytes / GiB:.1f} GiB on the host)"))
        hit = least_offload(r, ctx, [with_(r, gpu_layers=ngl) for ngl in range(r.gpu_layers - 1, -1, -1)])
        if hit:
            alt, p = hit
            out.append(Suggestion(change=f"-ngl {alt.gpu_layers}", fits=True, max_ctx_tokens=max_context(alt),
                                  effect=f"{r.arch.n_layers - alt.gpu_layers} of {r.arch.n_layers} layers in host RAM "
                                         f"({p.host_bytes / GiB:.1f} GiB on the host); decode slows to host-memory speed"))
    # one more GPU of the same kind
    if len(r.gpus) < 8 and r.gpus[0].memory_kind == "dedicated" and not r.nodes and r.pp_size * r.tp_size == len(r.gpus) \
            and (r.tp_size == 1 or r.pp_size == 1):
        alt = with_(r, gpus=r.gpus + (r.gpus[-1],), tensor_split=None, tp=0)
        ok, m = _try(alt, ctx) if allowed(alt) else (False, 0)
        if ok:
            out.append(Suggestion(change=f"--gpu {','.join(g.id for g in alt.gpus)}", fits=True, max_ctx_tokens=m,
                                  effect=f"one more {r.gpus[-1].id} ({r.split} split); max context {fmt_tokens(m)}"))
    return out
