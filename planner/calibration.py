"""Calibration profiles: the fitted efficiency factors of the speed model (hwdb/calibrations/).

A profile holds, per engine, the fraction of peak memory bandwidth its weight-streaming
kernels reach, the fixed time each layer adds to a step (kernel launches, synchronization),
and the fraction of peak compute its large matmuls reach; per flash-attention mode, the
efficiency of attention; per weight kernel class, the bandwidth efficiency relative to F16.
Vendor facts never live here. Every value is either fitted (source = the fit) or a prior
(an `estimate` that says how it was set). docs/validation.md#procedure says how the fit runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from planner.intervals import Bucket
from planner.schema import Quantity, Sourced, Strict

FaMode = Literal["fa_on", "fa_off"]


class AttentionEfficiency(Strict):
    decode_bw_eff: Quantity  # ratio of peak bandwidth reading the KV cache in decode
    prefill_eff: Quantity  # ratio of peak compute in prefill attention


class FamilyEfficiency(Strict):
    """One engine's factors on one GPU architecture family (kernel-path engines)."""

    weight_bw_eff: Quantity | None = None
    layer_overhead: Quantity | None = None
    gemm_eff: Quantity | None = None
    float_gemm_eff: Quantity | None = None
    gemm_min_tokens: Quantity | None = None
    dot_eff: Quantity | None = None
    kv_quant_bw_eff: Quantity | None = None
    scan_token_time: Quantity | None = None
    moe_layer_overhead: Quantity | None = None
    linear_layer_overhead: Quantity | None = None


class EngineEfficiency(Strict):
    weight_bw_eff: Quantity  # ratio of peak memory bandwidth, weights streamed by F16 kernels
    layer_overhead: Quantity  # time per layer per step
    gemm_eff: Quantity  # ratio of peak compute in large matmuls
    # the engine's own attention factors and MoE-layer time (a profile fitted with --engine); else the shared ones
    attention: dict[Literal["fa_on", "fa_off"], AttentionEfficiency] | None = None
    moe_layer_overhead: Quantity | None = None
    moe_gemm_eff: Quantity | None = None  # ratio of peak compute in routed-expert matmuls (default: gemm_eff)
    # kernel-path engines: the path factors at engine level (shared by families) and per family
    float_gemm_eff: Quantity | None = None
    gemm_min_tokens: Quantity | None = None
    dot_eff: Quantity | None = None
    kv_quant_bw_eff: Quantity | None = None
    linear_layer_overhead: Quantity | None = None
    host_copy_eff: Quantity | None = None
    # llama.cpp's recurrent-layer kernels loop over a sequence's tokens one after another: time per token past
    # the first, per Gated DeltaNet layer (a Mamba-2 layer at MAMBA_SCAN_SHARE of it); default 0
    scan_token_time: Quantity | None = None
    families: dict[str, FamilyEfficiency] = Field(default_factory=dict)


class Calibration(Sourced):
    id: str = ""
    name: str
    description: str
    procedure: str  # where the fitting procedure is written down
    runs_file: str = ""  # measured runs it was fitted on (relative to the data root)
    fallback: dict[str, str] = Field(default_factory=dict)  # engine id -> engine id whose factors it borrows
    engines: dict[str, EngineEfficiency]
    attention: dict[FaMode, AttentionEfficiency]
    quant_kernels: dict[str, Quantity]  # bandwidth efficiency of each weight kernel class, relative to float
    moe_layer_overhead: Quantity  # extra time per step of a layer with routed experts
    linear_layer_overhead: Quantity  # extra time per step of a linear-attention (Gated DeltaNet) layer
    host_bw_eff: Quantity  # ratio of peak host (DDR) bandwidth reached by CPU-side layers
    link_latency: Quantity  # one cross-GPU transfer or reduction, fixed part
    fit: dict[str, Any] = Field(default_factory=dict)  # what the fit used and the error it got
    # residuals of the fitted profile by engine | family | kind of point (planner.intervals)
    intervals: dict[str, Bucket] = Field(default_factory=dict)


@dataclass(frozen=True)
class Efficiency:
    """The factors one deployment runs with, as plain floats (SI)."""

    calibration: str
    engine_source: str  # which engine's factors (itself, or the one it falls back on)
    weight_bw: float
    layer_overhead_s: float
    gemm: float
    moe_gemm: float  # routed-expert matmuls (grouped GEMMs over small groups)
    kv_bw: float
    attn_compute: float
    quant_bw: dict[str, float]
    host_bw: float
    link_latency_s: float
    moe_layer_overhead_s: float
    linear_layer_overhead_s: float
    float_gemm: float = 1.0  # kernel-path factors (docs/kernel-paths.md#efficiencies)
    gemm_min_tokens: float = 0.0
    dot: float = 1.0
    kv_quant_bw: float = 1.0
    host_copy: float = 1.0  # host-RAM weights streamed over PCIe: ratio of the link
    scan_token_s: float = 0.0  # a recurrent layer's sequential loop: seconds per token of a sequence past the first
    ideal: bool = False  # the physical bound: every kernel's memory and arithmetic overlap perfectly


# defaults of the kernel-path factors no profile sets (estimates; docs/kernel-paths.md#efficiencies)
PATH_DEFAULTS = {"gemm_min_tokens": 32.0, "dot_eff": 0.25, "kv_quant_bw_eff": 1.0, "host_copy_eff": 1.0,
                 "scan_token_time": 0.0}


def engine_chain(cal: Calibration, engine_id: str) -> list[str]:
    """The engine, then the engines whose factors it borrows (the profile's fallback chain)."""
    out = [engine_id]
    while out[-1] in cal.fallback and cal.fallback[out[-1]] not in out:
        out.append(cal.fallback[out[-1]])
    return out


def efficiency_for(cal: Calibration, engine_id: str, flash_attention: bool, family: str | None = None) -> Efficiency:
    src = engine_id
    seen = set()
    while src not in cal.engines:
        if src in seen or src not in cal.fallback:
            src = next(iter(cal.engines))
            break
        seen.add(src)
        src = cal.fallback[src]
    e = cal.engines[src]
    fa = "fa_on" if flash_attention else "fa_off"
    att = e.attention[fa] if e.attention and fa in e.attention else cal.attention[fa]
    fam = e.families.get(family) if family else None

    def factor(name: str, engine_default: Quantity | None = None) -> float:
        """The family's value, else the engine's, else `engine_default`, else PATH_DEFAULTS."""
        for holder in (fam, e):
            q = getattr(holder, name, None) if holder is not None else None
            if q is not None:
                return q.si
        return engine_default.si if engine_default is not None else PATH_DEFAULTS[name]

    return Efficiency(
        calibration=cal.id, engine_source=src, weight_bw=factor("weight_bw_eff"), layer_overhead_s=factor("layer_overhead"),
        gemm=factor("gemm_eff"), moe_gemm=(e.moe_gemm_eff.si if e.moe_gemm_eff else factor("gemm_eff")),
        kv_bw=att.decode_bw_eff.si, attn_compute=att.prefill_eff.si,
        quant_bw={k: q.si for k, q in cal.quant_kernels.items()}, host_bw=cal.host_bw_eff.si,
        link_latency_s=cal.link_latency.si,
        moe_layer_overhead_s=factor("moe_layer_overhead", cal.moe_layer_overhead),
        linear_layer_overhead_s=factor("linear_layer_overhead", cal.linear_layer_overhead),
        float_gemm=factor("float_gemm_eff", e.gemm_eff), gemm_min_tokens=factor("gemm_min_tokens"),
        dot=factor("dot_eff"), kv_quant_bw=factor("kv_quant_bw_eff"), host_copy=factor("host_copy_eff"),
        scan_token_s=factor("scan_token_time"))
