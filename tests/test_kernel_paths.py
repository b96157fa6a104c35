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
            if gpu.family is None:
                continue  # no kernel data for its architecture (Pascal, CDNA1): the plan says so (test below)
            if gpu.status == "unreleased":
                continue  # no published peaks yet: test_unreleased_gpus_are_not_priced_silently
            for op in ("mul_mat", "mul_mat_id"):
                for st in sorted(types):
                    if table.refuses(op, st):
                        continue  # the engine has no kernel for it (the table says why)
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
                if table.refuses_kv(gpu.family, kv):
                    continue  # the engine refuses that cache there, and so does resolve() (the table says why)
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
        assert p.prefill_tok_s is None and any("prefill speed not predicted" in n for n in p.notes), (gpu.id, p.notes)


def test_a_missing_peak_refuses_prefill(catalog):
    """GB10 has no published FP32-accumulate tensor rate, which cuBLAS BF16 GEMMs run at: a BF16
    model gets no prefill speed there (and says so); a Q4_K_M one (MMQ at the INT8 peak) does."""
    from planner.deployment import Deployment, resolve
    from planner.speed import estimate

    bf16 = estimate(catalog, resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("gb10",), quant="BF16")), 4096)
    assert bf16.prefill_tok_s is None and any("prefill speed not predicted" in n for n in bf16.notes)
    q4 = estimate(catalog, resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("gb10",), quant="Q4_K_M")), 4096)
    assert q4.prefill_tok_s is not None and q4.kernel_paths == "llama.cpp-cuda"


# --- mechanisms, worked by hand ----------------------------------------------------------------

def _one_matrix(catalog, storage: str, kv: float = 0.0, kv_quant: str | None = None, vec_max: float = -1.0):
    """A stage holding one 4096 x 14336 weight matrix of `storage` on the H200 (and `kv` bytes of
    cache per context token), with hand-set factors, and its step model."""
    from planner.calibration import Efficiency
    from planner.perf import KERNELS, Stage, StepModel, _class_paths

    h200, table = catalog.gpus["h200"], catalog.paths["llama.cpp-cuda"]
    c = KERNELS.index("kquant" if storage.startswith("Q") and "_K" in storage else "float")
    st = catalog.formats.types[storage]
    nbytes = 14336 // st.block_weights * st.block_bytes * 4096
    w_bytes, w_params = np.zeros(len(KERNELS)), np.zeros(len(KERNELS))
    w_bytes[c], w_params[c] = nbytes, 4096 * 14336
    paths = tuple(_class_paths(table, "mul_mat", storage, h200) if i == c else None for i in range(len(KERNELS)))
    stage = Stage(name="h200", kind="gpu", bandwidth=4800e9, layers=0, moe_layers=0, linear_layers=0,
                  w_bytes=w_bytes, w_params=w_params, e_bytes=np.zeros(len(KERNELS)), e_params=np.zeros(len(KERNELS)),
                  head_bytes=np.zeros(len(KERNELS)), head_params=np.zeros(len(KERNELS)), kv_full=kv, kv_window=(),
                  attn_flops_full=0.0, attn_flops_window=(), state_bytes=0.0, state_flops=0.0,
                  gemm_peak=np.full(len(KERNELS), np.inf), gemv_peak=np.inf, attn_peak=989.4e12,
                  dense_paths=paths, expert_paths=(None,) * len(KERNELS), attn_vec_max=vec_max,
                  attn_convert=kv_quant is not None, kv_quantized=kv_quant is not None,
                  kv_f16_per_byte=2 / (34 / 32) if kv_quant == "q8_0" else 1.0)
    eff = Efficiency(calibration="hand", engine_source="hand", weight_bw=0.5, layer_overhead_s=0.0, gemm=0.1,
                     moe_gemm=0.1, kv_bw=0.8, attn_compute=0.5, quant_bw={"kquant": 1.0}, host_bw=1.0,
                     link_latency_s=0.0, moe_layer_overhead_s=0.0, linear_layer_overhead_s=0.0, float_gemm=0.5,
                     gemm_min_tokens=32.0, dot=0.25, kv_quant_bw=0.6)
    sm = StepModel(gpus=(stage,), host=None, split="single", eff=eff, hidden=4096, gpu_layers=1, n_experts=1,
                   experts_per_tok=1, gemv_max_tokens=8, offload_min_batch=32, pipeline_prefill=False,
                   link_bandwidth=np.inf, link_name="", pcie_bandwidth=64e9, activation_bytes=4, syncs_per_layer=2,
                   compute_known=True, paths="llama.cpp-cuda")
    return stage, sm, nbytes


def _matmul_time(stage, sm, tokens: int) -> tuple[float, str]:
    from planner.perf import _stage_ops

    ops = _stage_ops(sm, stage, *(np.array([x], dtype=float) for x in (tokens, tokens, 1, 0)), stage)
    i = next(i for i, n in enumerate(ops.names) if n.startswith("matmul"))
    return float(ops.time[i][0]), ops.names[i]


def test_mmvq_prices_the_weight_stream_plus_the_dot_products(catalog):
    """A q4_K 4096 x 14336 matrix: 56 blocks of 144 B per row x 4096 rows = 33,030,144 B and
    58,720,256 weights. MMVQ (up to 8 tokens on Hopper, ggml-cuda.cu:1923-1926) at weight_bw 0.5
    and dot_eff 0.25 on the H200 (4.8 TB/s, INT8 dot 133.8 TOP/s):
      1 token:  33,030,144 / 2.4e12 = 13.763 us + 2 x 58,720,256 / 33.45e12 = 3.511 us -> 17.27 us
      8 tokens: 13.763 us + 8 x 3.511 us = 41.85 us
    (test-backend-ops on the H200: 15.9 and 46.6 us, hwdb/runs/llamacpp-h200.ops.csv)."""
    stage, sm, nbytes = _one_matrix(catalog, "Q4_K")
    assert nbytes == 33_030_144
    t1, name = _matmul_time(stage, sm, 1)
    assert "mmvq" in name and t1 == pytest.approx(17.27e-6, rel=2e-3)
    t8, _ = _matmul_time(stage, sm, 8)
    assert t8 == pytest.approx(41.85e-6, rel=2e-3)


def test_mmq_takes_over_at_nine_tokens_and_pays_its_tile(catalog):
    """9 tokens: MMQ (int8 mma.sync, every size from 9 on Hopper, mmq.cu:371) at the INT8 tensor
    peak 1978.9 TOP/s x gemm_eff 0.1, with gemm_min_tokens 32 extra columns:
      max(13.763 us, 2 x 58,720,256 x (9 + 32) / 197.89e12 = 24.33 us) = 24.33 us
    512 tokens: 2 x 58,720,256 x 544 / 197.89e12 = 322.8 us (test-backend-ops: 350.9 us).
    The step's slope changes where the kernel does: 8 -> 9 tokens costs less than 7 -> 8 on MMVQ
    (the tile is paid once), and from there each token adds 0.59 us instead of 3.5 us."""
    stage, sm, _ = _one_matrix(catalog, "Q4_K")
    t9, name = _matmul_time(stage, sm, 9)
    assert "mmq" in name and t9 == pytest.approx(24.33e-6, rel=2e-3)
    t512, _ = _matmul_time(stage, sm, 512)
    assert t512 == pytest.approx(322.8e-6, rel=2e-3)
    t7, t8 = _matmul_time(stage, sm, 7)[0], _matmul_time(stage, sm, 8)[0]
    t10 = _matmul_time(stage, sm, 10)[0]
    assert t10 - t9 < (t8 - t7) / 4


def test_f16_weights_take_cublas_at_the_fp16_tensor_peak(catalog):
    """F16 4096 x 14336 (117,440,512 B): 17 tokens and up run cuBLAS (ggml-cuda.cu:1931) at
    989.4 TFLOP/s x float_gemm_eff 0.5, with no tile floor (cuBLAS picks its tiles per shape):
    512 tokens = max(48.93 us, 2 x 58,720,256 x 512 / 494.7e12 = 121.55 us) = 121.55 us
    (test-backend-ops: 116.7 us)."""
    stage, sm, nbytes = _one_matrix(catalog, "F16")
    assert nbytes == 117_440_512
    t, name = _matmul_time(stage, sm, 512)
    assert "cublas" in name and t == pytest.approx(121.55e-6, rel=2e-3)


def test_a_quantized_cache_costs_dequantization_in_the_vector_kernel_and_a_conversion_in_batches(catalog):
    """1,000 bytes of q8_0 cache per context token, 8,192 tokens deep (8,192,000 B). Decode (the
    vector kernel, up to 2 query tokens on Hopper for q8_0, fattn.cu:650-656) reads it at
    kv_bw 0.8 x kv_quant_bw 0.6 of 4.8 TB/s: 8,193,000 B / 2.304e12 = 3.556 us. A 512-token prompt
    step (the MMA kernel) first converts it to f16: + 2 x (2 / 1.0625) x the bytes =
    8,704,000 x 4.7647 = 41.47 MB at 0.8 x 4.8 TB/s = 10.80 us."""
    from planner.perf import _stage_ops

    stage, sm, _ = _one_matrix(catalog, "Q4_K", kv=1000.0, kv_quant="q8_0", vec_max=2)
    ops = _stage_ops(sm, stage, *(np.array([x], dtype=float) for x in (1, 1, 1, 8192)), stage)
    att = ops.names.index("attention")
    assert float(ops.memory_time[att][0]) == pytest.approx(8_193_000 / (4.8e12 * 0.8 * 0.6), rel=1e-6)
    ops = _stage_ops(sm, stage, *(np.array([x], dtype=float) for x in (512, 1, 512, 8192)), stage)
    att = ops.names.index("attention")
    assert float(ops.bytes[att][0]) == pytest.approx(8_704_000 * (1 + 2 * 2 / 1.0625), rel=1e-9)
    assert float(ops.memory_time[att][0]) == pytest.approx(10.80e-6, rel=2e-3)


def test_batched_decode_changes_slope_where_llamacpp_changes_kernel(catalog):
    """The whole model: Llama-3.1-8B Q4_K_M on the H200, decode steps of 1..16 sequences. The
    step names MMVQ up to 8 and MMQ from 9; the time per added sequence drops after the switch."""
    from planner.deployment import Deployment, resolve
    from planner.perf import breakdown, decode_step_time
    from planner.speed import step_model

    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("h200",), quant="Q4_K_M"))
    sm = step_model(catalog, r, catalog.calibration(None, r.engine.id, "h200"))
    t = decode_step_time(sm, np.arange(1, 17, dtype=float), np.full(16, 512.0))
    assert any("mmvq" in o.op for o in breakdown(sm, "", 8, 8, 1, 512).ops)
    assert any("mmq" in o.op for o in breakdown(sm, "", 9, 9, 1, 512).ops)
    before, after = t[7] - t[6], t[12] - t[11]  # 7 -> 8 on MMVQ; 12 -> 13 on MMQ
    assert after < before


# --- K and V of different types (llama.cpp -ctk / -ctv) -----------------------------------------


def test_kv_pair_memory_by_hand(catalog):
    """llama-3.1-8b, 32 layers x 8 KV heads x 128: K in q8_0 (34 B per 32 values), V in f16 (2 B):
    per token 32 x 1024 x (34 / 32 + 2) = 100,352 B; 8,192 cells -> 822,083,584 B."""
    from planner.deployment import Deployment, resolve
    from planner.memory import layer_kv_bytes

    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), kv_quant="q8_0/f16"))
    assert (r.kv_quant, r.v_type, r.kv_label) == ("q8_0", "f16", "q8_0/f16")
    assert sum(layer_kv_bytes(r, 8192)) == 32 * 1024 * (34 * 8192 // 32 + 2 * 8192) == 822_083_584


def test_kv_pair_emits_ctk_ctv_and_only_llamacpp_takes_it(catalog):
    from planner.deployment import Deployment, resolve
    from planner.emit import command
    from planner.errors import PlannerError

    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), kv_quant="q8_0/q4_0"))
    assert "-ctk q8_0 -ctv q4_0" in command(r, "llama.cpp", 8192)
    with pytest.raises(PlannerError, match="one KV-cache type"):
        resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("h100-sxm",), engine="vllm-cuda", kv_quant="fp8/bf16"))
    with pytest.raises(PlannerError, match="needs flash attention"):
        resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), kv_quant="f16/q8_0", flash_attention=False))


def test_kv_pair_decode_matches_the_h200_runs(catalog):
    """The 8 llama.cpp b11434 runs on the H200 with -ctk q8_0 -ctv f16 (hwdb/runs/llamacpp-h200.csv; no
    fit used them: a deployment could not state them when reference-fit was fitted). q8_0-f16 has no
    default-compiled vector kernel, so K is converted to f16 (ggml-cuda/fattn.cu:500-510). Decode is
    predicted within 15% (measured: +4% to +9%), and between the q8_0/q8_0 and f16/f16 runs' speeds
    as measured (the conversion streams at full bandwidth; the q8_0 vector kernel dequantizes slowly)."""
    from pathlib import Path

    from planner.runs import load_runs, predict, prepare

    cal = catalog.calibrations["reference-fit"]
    runs = [r for r in load_runs(Path(__file__).parent.parent / "hwdb/runs/llamacpp-h200.csv")
            if r.kv_quant_v == "f16" and r.kv_quant == "q8_0" and r.metric == "decode_tok_s"]
    assert len(runs) == 4
    for p in prepare(catalog, runs, cal):
        assert abs(predict(p, cal) / p.run.value - 1) < 0.15, (p.run.quant, p.run.depth_tokens)


def test_a_gpu_without_kernel_data_says_so(catalog):
    """A GPU of an architecture the kernel-path tables do not cover (family None: Pascal P40) is priced
    with the generic roofline, and the plan says so; a KV cache the engine refuses there is refused."""
    from planner.deployment import Deployment, resolve
    from planner.errors import PlannerError
    from planner.speed import estimate

    gpus = [g for g in catalog.gpus.values() if g.family is None and g.status == "released"]
    assert gpus, "no released GPU without a family to check"
    cat = catalog
    p = estimate(cat, resolve(cat, Deployment(model="llama-3.1-8b", gpus=(gpus[0].id,), ctx_tokens=8192)), 8192)
    assert any("no kernel-path data" in n for n in p.notes)
    with pytest.raises(PlannerError, match="FP8 KV cache is not supported"):
        resolve(cat, Deployment(model="llama-3.1-8b", gpus=("rtx2080ti",), engine="vllm-cuda", kv_quant="fp8",
                                ctx_tokens=8192))
