"""Kernel paths (hwdb/paths/, planner.paths; docs/kernel-paths.md): every catalog GPU resolves
every path its engines can take to a real peak, and the mechanisms the paths carry change the
speed where the engine changes kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.catalog import Catalog
from planner.paths import attention_rule, matmul_rule, segments

TOKENS = (1, 2, 3, 4, 8, 9, 16, 17, 32, 64, 65, 128, 512, 2048)
# peaks no vendor publishes and no sourced rule gives (docs/hardware-peaks.md): a deployment that
# needs one gets no prefill speed (test_a_missing_peak_refuses_prefill)
KNOWN_GAPS = {("gb10", "fp16_tensor_fp32acc"): "NVIDIA publishes no FP32-accumulate tensor rate for GB10"}


@pytest.fixture(scope="module")
def catalog():
    return Catalog()


def _engine_types(catalog, engine) -> set[str]:
    """Every storage type a recipe of the engine's weight format can give a tensor."""
    out = set()
    for rec in catalog.recipes.recipes.values():
        if rec.format in engine.weight_formats:
            out |= {t for t in (rec.base, rec.output, rec.experts, *(r.type for r in rec.rules)) if t}
    return out


def test_every_catalog_gpu_resolves_every_path_to_a_real_peak(catalog):
    assert catalog.paths, "no kernel-path tables in hwdb/paths"
    missing = []
    for eid, table in catalog.paths.items():
        engine = catalog.engines[eid]
        types = _engine_types(catalog, engine)
        for gpu in catalog.gpus.values():
            if gpu.vendor not in engine.vendors or gpu.family in table.families_not_covered:
                continue
            if gpu.status == "unreleased":
                continue  # no published peaks yet: test_unreleased_gpus_are_not_priced_silently
            for op in ("mul_mat", "mul_mat_id"):
                for st in sorted(types):
                    for n in TOKENS:
                        rule = matmul_rule(table, op, st, gpu.family, n)
                        if rule is None:
                            missing.append(f"{eid} {gpu.id} ({gpu.family}) {op} {st} at {n} tokens: no rule")
                            continue
                        fields = [rule.ceiling_for(gpu.family)]
                        if fields[0] == "memory_bandwidth":
                            fields.append(rule.math_for(st))
                        for f in fields:
                            if getattr(gpu.specs, f) is None and (gpu.id, f) not in KNOWN_GAPS:
                                missing.append(f"{eid} {gpu.id} ({gpu.family}) {op} {st} at {n} tokens: "
                                               f"{rule.kernel} needs {f}, which the entry lacks")
            for kv in engine.kv_types:
                for q in (1, 512):
                    if attention_rule(table, gpu.family, q, kv, True) is None:
                        missing.append(f"{eid} {gpu.id} ({gpu.family}) flash attention, {q} tokens, KV {kv}: no rule")
            if not any(getattr(gpu.specs, f) is not None for f in engine.kernels.attention_peaks):
                missing.append(f"{eid} {gpu.id}: none of the attention peaks {engine.kernels.attention_peaks}")
    assert not missing, f"{len(missing)} unresolved paths, e.g.:\n" + "\n".join(sorted(set(missing))[:40])


def test_segments_cover_every_token_count_once(catalog):
    for table in catalog.paths.values():
        for fam in sorted(table.families()):
            for st in ("Q4_K", "Q8_0", "F16", "BF16", "IQ4_XS", "MXFP4"):
                for op in ("mul_mat", "mul_mat_id"):
                    segs = segments(table, op, st, fam)
                    assert segs[0].lo == 0 and math.isinf(segs[-1].hi)
                    assert all(a.hi == b.lo for a, b in zip(segs, segs[1:]))


def test_unreleased_gpus_are_not_priced_silently(catalog):
    """A GPU without the peaks its kernels use gets no prefill speed, and says so."""
    from planner.deployment import Deployment, resolve
    from planner.speed import estimate

    for gpu in (g for g in catalog.gpus.values() if g.status == "unreleased"):
        r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=(gpu.id,)))
        p = estimate(catalog, r, 4096)
        if p.prefill_tok_s is None:
            assert any("prefill speed not predicted" in n for n in p.notes), (gpu.id, p.notes)


def test_a_missing_peak_refuses_prefill(catalog):
    """GB10 has no published FP32-accumulate tensor rate, which cuBLAS BF16 GEMMs run at: a BF16
    model gets no prefill speed there (and says so); a Q4_K_M one (MMQ at the INT8 peak) does."""
    from planner.deployment import Deployment, resolve
    from planner.speed import estimate

    bf16 = estimate(catalog, resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("gb10",), quant="BF16")), 4096)
    assert bf16.prefill_tok_s is None and any("prefill speed not predicted" in n for n in bf16.notes)
    q4 = estimate(catalog, resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("gb10",), quant="Q4_K_M")), 4096)
    assert q4.prefill_tok_s is not None and q4.kernel_paths == "llama.cpp-cuda"
