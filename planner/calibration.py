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

from planner.schema import Quantity, Sourced, Strict

FaMode = Literal["fa_on", "fa_off"]


class AttentionEfficiency(Strict):
    decode_bw_eff: Quantity  # ratio of peak bandwidth reading the KV cache in decode
    prefill_eff: Quantity  # ratio of peak compute in prefill attention


class EngineEfficiency(Strict):
    weight_bw_eff: Quantity  # ratio of peak memory bandwidth, weights streamed by F16 kernels
    layer_overhead: Quantity  # time per layer per step
    gemm_eff: Quantity  # ratio of peak compute in large matmuls
    # the engine's own attention factors and MoE-layer time (a profile fitted with --engine); else the shared ones
    attention: dict[Literal["fa_on", "fa_off"], AttentionEfficiency] | None = None
    moe_layer_overhead: Quantity | None = None
    moe_gemm_eff: Quantity | None = None  # ratio of peak compute in routed-expert matmuls (default: gemm_eff)


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


def efficiency_for(cal: Calibration, engine_id: str, flash_attention: bool) -> Efficiency:
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
    return Efficiency(
        calibration=cal.id, engine_source=src, weight_bw=e.weight_bw_eff.si, layer_overhead_s=e.layer_overhead.si,
        gemm=e.gemm_eff.si, moe_gemm=(e.moe_gemm_eff or e.gemm_eff).si, kv_bw=att.decode_bw_eff.si, attn_compute=att.prefill_eff.si,
        quant_bw={k: q.si for k, q in cal.quant_kernels.items()}, host_bw=cal.host_bw_eff.si,
        link_latency_s=cal.link_latency.si,
        moe_layer_overhead_s=(e.moe_layer_overhead or cal.moe_layer_overhead).si,
        linear_layer_overhead_s=cal.linear_layer_overhead.si)
