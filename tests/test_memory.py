"""Memory model: a hand-worked example and physical properties (hypothesis)."""

import pytest
from hypothesis import given, settings, strategies as st

from planner.deployment import Deployment, resolve
from planner.memory import max_context, plan_memory
from planner.units import MiB


def R(catalog, **kw):
    kw.setdefault("gpus", ("rtx5090",))
    return resolve(catalog, Deployment(**kw))


def test_worked_example_llama31_8b_on_rtx4090(catalog):
    r = R(catalog, model="llama-3.1-8b", gpus=("rtx4090",), quant="Q8_0", ctx_tokens=8192)
    p = plan_memory(r, 8192).devices[0]
    # KV: 8192 cells x 131,072 B/token (32 layers x 8 heads x 256 x 2 B) = 1 GiB exactly
    assert p.kv_cache_bytes == 8192 * 131_072 == 1024 * MiB
    # compute buffer (llama.cpp, ubatch 512): max(FFN stage, logits) + residual
    #   FFN stage = 512 x 4 B x (2 x 4096 + 2 x 14336) = 75,497,472
    #   logits    = 512 x 4 B x 128,256               = 262,668,288
    #   residual  = 512 x 4 B x 4096                  =   8,388,608
    assert p.compute_buffer_bytes == 262_668_288 + 8_388_608
    # weights on the GPU: everything but the token embedding, which llama.cpp keeps in host RAM
    embd = 128_256 * 4096 * 34 // 32
    assert plan_memory(r, 8192).host_bytes == embd
    assert p.runtime_overhead_bytes == 749 * MiB
    assert p.total_bytes == p.weights_bytes + p.kv_cache_bytes + p.recurrent_state_bytes + p.compute_buffer_bytes + p.runtime_overhead_bytes


def test_hybrid_state_is_constant_in_context(catalog):
    r = R(catalog, model="qwen3.6-27b")
    a, b = plan_memory(r, 4096).devices[0], plan_memory(r, 65536).devices[0]
    assert a.recurrent_state_bytes == b.recurrent_state_bytes == 156_893_184
    assert b.kv_cache_bytes == 16 * a.kv_cache_bytes


def test_sliding_window_cache_is_bounded(catalog):
    r = R(catalog, model="gpt-oss-20b")
    # full layers grow, sliding layers stop at window(128) + ubatch(512) = 640 -> padded 768 cells
    k1 = plan_memory(r, 32768).devices[0].kv_cache_bytes
    k2 = plan_memory(r, 65536).devices[0].kv_cache_bytes
    full_per_token = 12 * 8 * 128 * 2
    assert k2 - k1 == 32768 * full_per_token


MODELS = ["qwen3.6-27b", "llama-3.1-8b", "gemma-4-31b", "gpt-oss-20b", "qwen3-30b-a3b", "qwen3.6-35b-a3b"]


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), ctx=st.integers(256, 100_000), extra=st.integers(1, 50_000),
       batch=st.integers(1, 8))
def test_memory_grows_with_context_and_batch(catalog, model, ctx, extra, batch):
    r = R(catalog, model=model, batch=batch)
    a, b = plan_memory(r, ctx), plan_memory(r, ctx + extra)
    for x, y in zip(a.devices, b.devices):
        assert y.total_bytes >= x.total_bytes
    r2 = R(catalog, model=model, batch=batch + 1)
    assert sum(d.total_bytes for d in plan_memory(r2, ctx).devices) >= sum(d.total_bytes for d in a.devices)


@settings(max_examples=20, deadline=None)
# gpt-oss is left out of the weight ordering: its 2880-wide rows do not fit 256-blocks, so llama.cpp
# falls back per tensor (Q4_K->Q5_0, Q6_K->Q8_0) and the mixes' sizes interleave - really.
@given(model=st.sampled_from([m for m in MODELS if m != "gpt-oss-20b"]), ctx=st.integers(1024, 100_000))
def test_smaller_quant_and_kv_type_never_use_more(catalog, model, ctx):
    order = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K"]
    totals = [sum(d.weights_bytes for d in plan_memory(R(catalog, model=model, quant=q), ctx).devices) for q in order]
    assert totals == sorted(totals, reverse=True)
    kvs = ["f16", "q8_0", "q5_1", "q5_0", "q4_0"]
    kv = [sum(d.kv_cache_bytes for d in plan_memory(R(catalog, model=model, kv_quant=k), ctx).devices) for k in kvs]
    assert kv == sorted(kv, reverse=True)


@settings(max_examples=20, deadline=None)
@given(model=st.sampled_from(MODELS), ctx=st.integers(1024, 60_000), split=st.sampled_from(["layer", "tensor"]))
def test_split_conserves_weights_kv_and_state(catalog, model, ctx, split):
    one = plan_memory(R(catalog, model=model, gpus=("rtx3090",)), ctx)
    two = plan_memory(R(catalog, model=model, gpus=("rtx5090", "rtx3090"), split=split), ctx)
    for field in ("weights_bytes", "kv_cache_bytes", "recurrent_state_bytes"):
        s1 = sum(getattr(d, field) for d in one.devices)
        s2 = sum(getattr(d, field) for d in two.devices)
        assert s2 == pytest.approx(s1, abs=4)  # integer shares may drop a byte per device
    assert two.host_bytes == one.host_bytes


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(MODELS), gpu=st.sampled_from(["rtx3090", "rtx5090", "rtx3070ti", "m4max"]),
       batch=st.integers(1, 4))
def test_max_context_fits_and_one_step_more_does_not(catalog, model, gpu, batch):
    r = R(catalog, model=model, gpus=(gpu,), batch=batch)
    best = max_context(r)
    step = r.engine.memory.ctx_padding_tokens
    if best:
        assert plan_memory(r, best).fits
    if best < r.arch.max_position_embeddings:
        assert not plan_memory(r, best + step).fits


def test_offload_moves_bytes_to_host(catalog):
    r = R(catalog, model="qwen3.6-35b-a3b", gpus=("rtx3070ti",), cpu_moe_layers=40, ctx_tokens=32768)
    p = plan_memory(r, 32768)
    assert p.host_bytes > 15e9 and p.devices[0].weights_bytes < 3e9
