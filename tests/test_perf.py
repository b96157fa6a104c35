"""The speed model: hand-worked examples, physical properties and the roofline ceiling."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.calibration import Efficiency
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.perf import ceiling_step_time, decode_time, prefill_time, step
from planner.speed import estimate, step_model

IDEAL = Efficiency(calibration="ideal", engine_source="ideal", weight_bw=1.0, layer_overhead_s=0.0, gemm=1.0,
                   moe_gemm=1.0, kv_bw=1.0, attn_compute=1.0, quant_bw={}, host_bw=1.0, link_latency_s=0.0, moe_layer_overhead_s=0.0,
                   linear_layer_overhead_s=0.0, ideal=True)


def _sm(catalog, model, gpus, cal="reference-fit", **kw):
    r = resolve(catalog, Deployment(model=model, gpus=tuple(gpus), **kw))
    return r, step_model(catalog, r, catalog.calibration(cal))


def test_decode_worked_example_llama2_7b_q4_0_rtx4090(catalog):
    # Bytes read by one decode step on the GPU (token_embd stays in host RAM in llama.cpp):
    #   32 layers x (4 x 4096^2 attention + 3 x 4096 x 11008 MLP) weights in Q4_0 (18 B per 32)
    #     = 32 x 202,375,168 x 0.5625          = 3,642,753,024 B
    #   norms: 32 x 2 x 4096 x 4 B (f32)        =     1,048,576 B
    #   output 32000 x 4096 in Q6_K (210 B / 256) = 107,520,000 B; final norm 16,384 B
    #   KV of the one token in context: 32 layers x 32 heads x (128 + 128) x 2 B = 524,288 B
    #   total 3,751,862,272 B over 1008e9 B/s = 3.722 ms (compute 13.5 GFLOP at 82.6 TFLOP/s is 0.16 ms)
    r, sm = _sm(catalog, "llama-2-7b", ["rtx4090"], quant="Q4_0")
    t = ceiling_step_time(sm, [1], [1], [1], [0])[0]
    assert t == pytest.approx(3_751_862_272 / 1008e9, rel=1e-3)
    # with the ideal efficiencies the full model's step equals the ceiling plus llama.cpp's copy of the
    # token's logits to host memory, which the ceiling leaves out: 32000 x 4 B over PCIe 4.0 x16
    # (16 x 1.969 GB/s) at the pinned-copy share 0.873, plus the copy's 3.6 us: 128,000 / 27.503e9 + 3.6 us
    logits = 128_000 / (16 * 1.969e9 * 0.873) + 3.6e-6
    t_ideal = step(replace(sm, eff=IDEAL), [1], [1], [1], [0]).total[0]
    assert t_ideal == pytest.approx(t + logits, rel=1e-9)


def test_prefill_worked_example_is_compute_bound(catalog):
    # 512 tokens, each weight class on its own roofline, ideal efficiencies:
    #   Q4_0 matmuls: 2 x 512 x (32 x 202,375,168) FLOP at the int8 MMA peak 660.6 TOP/s = 10.03 ms
    #     (their 3.64 GB would take only 3.6 ms to read)
    #   f32 norms: 2 x 512 x (32 x 8192 + 4096) FLOP at the FP16/FP32-acc peak 165.2 TFLOP/s = 1.6 us
    #   Q6_K head: logits for the last token only, so reading its 107.52 MB (0.107 ms) bounds it
    #   attention: 32 layers x 2 x 32 heads x 256 x 512 queries x 256.5 mean context = 68.9 GFLOP
    #     at 165.2 TFLOP/s = 0.42 ms.
    #   the last token's logits to host memory: 8.25 us (above).  Total 10.57 ms.
    r, sm = _sm(catalog, "llama-2-7b", ["rtx4090"], quant="Q4_0")
    q4 = 2 * 512 * 32 * 202_375_168 / 660.6e12
    norms = max((32 * 8192 + 4096) * 4 / 1008e9, 2 * 512 * (32 * 8192 + 4096) / 165.2e12)
    head = max(107_520_000 / 1008e9, 2 * 131_072_000 / 660.6e12)
    attention = 32 * 2 * 32 * 256 * 512 * (0 + 513 / 2) / 165.2e12
    logits = 128_000 / (16 * 1.969e9 * 0.873) + 3.6e-6
    t = step(replace(sm, eff=IDEAL), [512], [1], [512], [0]).total[0]
    assert t == pytest.approx(q4 + norms + head + attention + logits, rel=2e-3)


def test_llamacpp_copies_every_outputs_logits_to_host_memory(catalog):
    """llama.cpp copies each output token's logits (n_vocab f32) to pinned host memory after every
    step (src/llama-context.cpp:1940-1950): a decode step of 64 sequences of Llama-3.2-1B (vocab
    128,256) on the H200 (PCIe 5.0 x16, 16 x 3.938 = 63.008 GB/s, pinned copies at 0.873 of it =
    55.006 GB/s, measured 55.0: hwdb/runs/h200-pcie-copy.csv) moves 64 x 128,256 x 4 = 32,833,536 B:
    32,833,536 / 55.006e9 + 3.6 us = 600.5 us, 9 us for one sequence. vLLM samples on the GPU (no
    copy); an Apple GPU shares the host's memory (no copy)."""
    def logits(model, gpus, engine, batch):
        _, sm = _sm(catalog, model, gpus, engine=engine)
        return float(np.asarray(step(sm, [batch], [batch], [1], [0]).logits).ravel()[0])

    assert logits("llama-3.2-1b", ["h200"], "llama.cpp-cuda", 64) == pytest.approx(600.5e-6, rel=1e-3)
    assert logits("llama-3.2-1b", ["h200"], "llama.cpp-cuda", 1) == pytest.approx(
        128_256 * 4 / 55.006e9 + 3.6e-6, rel=1e-3)
    assert logits("llama-3.2-1b", ["h200"], "vllm-cuda", 64) == 0.0
    assert logits("llama-3.2-1b", ["m4max"], "llama.cpp-metal", 64) == 0.0


def test_prediction_never_beats_the_physical_ceiling_on_any_catalog_pair(catalog):
    checked = 0
    for gid, gpu in catalog.gpus.items():
        for mid in catalog.models:
            try:
                r = resolve(catalog, Deployment(model=mid, gpus=(gid,)))
            except PlannerError:
                continue
            p = estimate(catalog, r, 8192)
            assert p.decode_tok_s <= p.ceiling_decode_tok_s * (1 + 1e-9), (gid, mid)
            if p.prefill_tok_s is not None and p.ceiling_prefill_tok_s:
                assert p.prefill_tok_s <= p.ceiling_prefill_tok_s * 1.001, (gid, mid)
            checked += 1
    assert checked > 500


def _scaled_gpu(catalog, gid, bw=1.0, compute=1.0):
    g = catalog.gpu(gid)
    specs = {}
    for name, q in g.specs:
        if q is None:
            continue
        f = bw if name == "memory_bandwidth" else compute if ("tensor" in name or "vector" in name or name == "int8_dot") else 1
        specs[name] = q.model_copy(update={"value": q.value * f})
    return g.model_copy(update={"specs": g.specs.model_copy(update=specs)})


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(["llama-3.1-8b", "qwen3.6-27b", "qwen3.6-35b-a3b", "gemma-4-26b-a4b"]),
       bw=st.floats(1.0, 4.0), compute=st.floats(1.0, 4.0), batch=st.sampled_from([1, 4, 64]),
       depth=st.integers(0, 30000))
def test_more_bandwidth_or_compute_is_never_slower(catalog, model, bw, compute, batch, depth):
    r = resolve(catalog, Deployment(model=model, gpus=("rtx4090",), batch=batch))
    base = step_model(catalog, r, catalog.calibration(None))
    fast = step_model(catalog, replace(r, gpus=(_scaled_gpu(catalog, "rtx4090", bw, compute),)), catalog.calibration(None))
    for sm_a, sm_b in ((base, fast),):
        assert decode_time(sm_b, [batch], [depth], [64])[0] <= decode_time(sm_a, [batch], [depth], [64])[0] * (1 + 1e-12)
        assert prefill_time(sm_b, [batch], [512], [depth], [512])[0] <= prefill_time(sm_a, [batch], [512], [depth], [512])[0] * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(["llama-3.1-8b", "qwen3.6-27b", "gemma-4-31b", "gpt-oss-20b"]),
       gpu=st.sampled_from(["rtx3090", "m4max", "mi50-32gb", "h100-sxm"]),
       d1=st.integers(0, 60000), extra=st.integers(1, 60000), batch=st.sampled_from([1, 8]))
def test_more_context_is_never_faster(catalog, model, gpu, d1, extra, batch):
    r, sm = _sm(catalog, model, [gpu], batch=batch)
    assert decode_time(sm, [batch], [d1 + extra], [16])[0] >= decode_time(sm, [batch], [d1], [16])[0]
    assert prefill_time(sm, [1], [1024], [d1 + extra], [512])[0] >= prefill_time(sm, [1], [1024], [d1], [512])[0]


def test_aggregate_decode_grows_with_batch_and_turns_compute_bound(catalog):
    r, sm = _sm(catalog, "llama-3.1-8b", ["h100-sxm"], engine="vllm-cuda", quant="bf16")
    batches = np.array([1, 2, 8, 32, 128, 512, 2048])
    agg = batches / decode_time(sm, batches, np.full(7, 1000), np.full(7, 1)) * 1
    assert np.all(np.diff(agg) > 0)
    small = estimate(catalog, r, 4096)
    big = estimate(catalog, replace(r, batch=2048), 4096, prompt=128, gen=16)
    assert small.decode_bound.startswith("memory")
    assert any(o.bound == "compute" and o.op.startswith("matmul") for o in big.decode_step.ops)


def test_moe_experts_touched_grow_with_batch_up_to_all(catalog):
    r, sm = _sm(catalog, "qwen3.6-35b-a3b", ["rtx5090"])
    g = sm.gpus[0]
    every = float(g.w_bytes.sum() + g.e_bytes.sum() + g.head_bytes.sum())

    def matmul_bytes(t):
        ops = step(sm, [t], [t], [1], [0]).stages[0]
        return sum(float(b[0]) for n, b in zip(ops.names, ops.bytes) if n.startswith("matmul"))

    read = [matmul_bytes(t) for t in (1, 8, 64, 4096)]
    assert read == sorted(read) and read[-1] > 5 * read[0]
    assert read[-1] == pytest.approx(every, rel=1e-6)  # 4096 tokens touch every expert


def test_tensor_split_on_two_fast_linked_gpus_beats_one_and_reports_communication(catalog):
    one, sm1 = _sm(catalog, "llama-3.1-70b", ["h100-sxm"], engine="vllm-cuda", quant="fp8")
    two, sm2 = _sm(catalog, "llama-3.1-70b", ["h100-sxm", "h100-sxm"], engine="vllm-cuda", quant="fp8", split="tensor")
    t1 = decode_time(sm1, [1], [512], [128])[0]
    t2 = decode_time(sm2, [1], [512], [128])[0]
    assert t2 < t1
    st2 = step(sm2, [1], [1], [1], [512])
    assert st2.comm[0] > 0
    p = estimate(catalog, two, 8192)
    assert p.comm_s_per_step > 0 and "NVLink" in p.link


def test_layer_split_single_stream_is_never_faster_than_its_slowest_share(catalog):
    for gpus in (["rtx5090", "rtx3090ti"], ["rtx3090", "rtx3090"], ["rtx4090", "rtx3070ti"]):
        r, sm = _sm(catalog, "qwen3.6-27b", gpus, quant="Q4_K_M", split="layer")
        st_ = step(sm, [1], [1], [1], [4096])
        shares = [o.total[0] for o in st_.stages]
        assert st_.total[0] >= max(shares) and st_.total[0] >= sum(shares)


def test_tensor_and_layer_split_of_the_issue_example_both_answer(catalog):
    for split in ("tensor", "layer"):
        r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("rtx5090", "rtx3090ti"), quant="Q8_0", split=split,
                                        ctx_tokens=32768))
        p = estimate(catalog, r, 32768)
        assert p.decode_tok_s > 0 and p.prefill_tok_s > 0
        assert p.decode_step.parallel == (split == "tensor")
        assert set(p.decode_step.stage_s) == {"rtx5090", "rtx3090ti"}


def test_expert_offload_runs_at_host_memory_speed(catalog):
    host = catalog.host("ddr4-3200x2")
    r = resolve(catalog, Deployment(model="qwen3.6-35b-a3b", gpus=("rtx3070ti",), cpu_moe_layers=40, host="ddr4-3200x2"))
    p = estimate(catalog, r, 65536)
    host_ops = [o for o in p.decode_step.ops if o.stage == "host RAM"]
    assert host_ops and all(o.achieved_bytes_per_s <= host.bandwidth_bytes_per_s for o in host_ops if o.bytes)
    assert p.decode_bound.startswith("host memory")


def test_unknown_compute_peak_gives_no_prefill_but_a_decode(catalog):
    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("crescent-island-160gb",)))
    p = estimate(catalog, r, 8192)
    assert p.prefill_tok_s is None and p.decode_tok_s > 0
    assert any("compute peak" in n for n in p.notes)


def test_recurrent_layers_walk_a_prompt_token_by_token(catalog):
    """llama.cpp's Gated DeltaNet kernel loops over a sequence's tokens one after another
    (ggml-cuda/gated_delta_net.cu:63), so each token of a prompt past the first costs a recurrent
    layer `scan_token_time` (1.008 us on the H200 by the kernel-time table) whatever the GPU's
    width, and the layer's FLOPs are not priced at a compute peak. Qwen3.6-27B has 48 Gated
    DeltaNet layers of 64: a 512-token prompt step spends 48 x 511 x 1.008 us = 24.72 ms in the
    loop; a decode step of 64 sequences (one token each, side by side in the grid) nothing.
    Nemotron-3-Nano's 23 Mamba-2 layers count 0.53 each (its scan's measured share):
    23 x 0.53 x 511 x 1.008 us = 6.28 ms."""
    from planner.perf import breakdown

    def loop(model, tokens, seqs, q):
        _, sm = _sm(catalog, model, ["h200"])
        b = breakdown(replace(sm, eff=replace(sm.eff, scan_token_s=1.008e-6)), "step", tokens, seqs, q, 0)
        rows = {o.op: o for o in b.ops}
        if "recurrent state" in rows:
            assert rows["recurrent state"].time_s == pytest.approx(
                rows["recurrent state"].bytes / (4.8e12 * sm.eff.weight_bw), rel=1e-6)  # its bytes only
        return rows["recurrent token loop"].time_s if "recurrent token loop" in rows else None

    assert loop("qwen3.6-27b", 512, 1, 512) == pytest.approx(48 * 511 * 1.008e-6, rel=1e-9)
    assert loop("qwen3.6-27b", 64, 64, 1) == 0.0
    assert loop("nemotron-3-nano-30b-a3b", 512, 1, 512) == pytest.approx(23 * 0.53 * 511 * 1.008e-6, rel=1e-9)
    assert loop("llama-3.1-8b", 512, 1, 512) is None
