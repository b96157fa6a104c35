"""The live calibration harness on the CPU with a tiny model (CI has no GPU): its transformer
computes the same function by every path, the grid respects memory, a tensor split conserves
the weights, the command writes loadable rows atomically; and the engine-scoped fit recovers
known factors from synthetic harness runs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner import calibrate, harness
from planner.arch import parse_config
from planner.cli import main
from planner.runs import load_runs, predict, prepare

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 256,
        "max_position_embeddings": 4096, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def torch():
    try:
        import torch
    except ImportError:
        if os.environ.get("CI") == "true":  # CI installs the CPU build (.ci/run): never skip there
            pytest.fail("PyTorch is not installed: CI must run the harness tests")
        pytest.skip("the harness tests need PyTorch (pip install torch; a CPU build will do)")
    return torch


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


MOE = {**TINY, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
       "decoder_sparse_step": 1, "norm_topk_prob": True}


@pytest.mark.parametrize("config", [TINY, {**TINY, "sliding_window": 8,
                                           "layer_types": ["sliding_attention", "full_attention"]}, MOE])
def test_decode_after_prefill_gives_the_prefill_logits(torch, config):
    # The same 20 tokens three ways: one prefill; a prefill of 19 then one decode step; 20 decode steps
    # from an empty (ring, for sliding layers) cache; dense, sliding-window and MoE. bf16: agreement within 3%.
    arch = parse_config(config)
    m = harness.HarnessModel(arch, "bf16", "cpu", seed=1)
    tok = torch.randint(0, arch.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    m.alloc_cache(2, 20, 20)
    full = m.forward(tok, 0)
    m.alloc_cache(2, 20, 20)
    m.forward(tok[:, :19], 0)
    step = m.forward(tok[:, 19:], 19)
    m.alloc_cache(2, 20, 0)
    for i in range(20):
        out = m.forward(tok[:, i:i + 1], i)
    assert _rel(step, full) < 0.03 and _rel(out, full) < 0.03
    # the check can fail: the last token at the wrong position gives other logits
    m.alloc_cache(2, 20, 20)
    m.forward(tok[:, :19], 0)
    assert _rel(m.forward(tok[:, 19:], 18), full) > 0.1


def test_decode_attention_forms_agree(torch):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(3, 8, 1, 16, generator=g)
    k, v = torch.randn(3, 2, 37, 16, generator=g), torch.randn(3, 2, 37, 16, generator=g)
    ref = torch.softmax((q.view(3, 2, 4, 16) @ k.transpose(-1, -2)) / 4.0, -1) @ v  # float32 by hand
    for form in harness.DECODE_ATTENTION:
        assert _rel(harness.decode_attention(form, q, k, v).view(3, 2, 4, 16), ref) < 1e-4, form


def test_tensor_split_shards_conserve_the_weights(torch):
    # two shards of a layer hold exactly the full layer's matrices (heads and FFN columns divide by 2)
    arch = parse_config({**TINY, "num_key_value_heads": 4})
    full = harness.HarnessModel(arch, "bf16", "cpu", harness.Shard(range(2), first=False, last=False))
    halves = [harness.HarnessModel(arch, "bf16", "cpu", harness.Shard(range(2), r, 2, first=False, last=False))
              for r in range(2)]
    norms = 2 * arch.hidden_size * 2 * 2 + 2 * 16 * 2 * 2  # attn/ffn norms and q/k norms are replicated
    assert sum(h.weight_bytes() for h in halves) - norms == full.weight_bytes()


def test_grid_respects_memory_and_context():
    arch = parse_config({**TINY, "max_position_embeddings": 65536})
    small, dropped = harness.plan_points(arch, 50 * 2**20, depths=(128, 2048, 8192), batches=(1, 64))
    big, none = harness.plan_points(arch, 8 * 2**30, depths=(128, 2048, 8192), batches=(1, 64))
    assert dropped and not none and set(small) < set(big)
    for p in small:
        assert harness.cached_bytes(arch, p) + harness.activation_bytes(arch, p) <= 50 * 2**20 * harness.MEMORY_SHARE
    # worked example: KV per token = 2 layers x 2 heads x (16 + 16) x 2 B = 256 B; batch 64 at depth 8192
    # caches 8193 tokens each: 64 x 8193 x 256 B = 134,234,112 B
    assert harness.cached_bytes(arch, harness.Point("decode", 64, depth=8192)) == 64 * 8193 * 256
    over, gone = harness.plan_points(parse_config(TINY), 8 * 2**30, prompts=(8192,), depths=(4095,), batches=(1,))
    assert harness.Point("prefill", 1, prompt=8192) in gone and harness.Point("decode", 1, depth=4095) in over  # 4,096 cached: the maximum


def test_models_the_harness_cannot_build_are_refused(catalog):
    for name in ("qwen3.6-27b", "deepseek-v3"):  # linear attention, MLA
        with pytest.raises(Exception, match="harness"):
            harness.supported(catalog.model(name).arch)
    harness.supported(catalog.model("qwen3-30b-a3b").arch)  # routed experts: built
    with pytest.raises(Exception, match="bf16"):
        harness.supported(catalog.model("qwen3-30b-a3b").arch, "fp8")


def test_routed_experts_equal_a_loop_over_tokens(torch):
    # the grouped-GEMM path against a plain loop: each token through its top-2 experts, weighted by the
    # renormalized router probabilities (float32 arithmetic: agreement within 1e-4)
    arch = parse_config(MOE)
    m = harness.HarnessModel(arch, "bf16", "cpu", seed=2)
    L = m.layers[0]
    for key in ("exp_gate", "exp_up", "exp_down"):
        L.w[key] = L.w[key].float()
    L.w["router"].w = L.w["router"].w.float()
    y = torch.randn(2, 5, arch.hidden_size, generator=torch.Generator().manual_seed(4))
    got = harness.HarnessModel._experts(L, y)
    ref = torch.zeros_like(y)
    for b in range(2):
        for t in range(5):
            p = torch.softmax(y[b, t] @ L.w["router"].w.T, -1)
            w, i = p.topk(2)
            for wk, e in zip(w / w.sum(), i):
                a = torch.nn.functional.silu(L.w["exp_gate"][e] @ y[b, t]) * (L.w["exp_up"][e] @ y[b, t])
                ref[b, t] += wk * (L.w["exp_down"][e] @ a)
    assert _rel(got, ref) < 1e-4
    # the padded layout CUDA uses (each expert's rows aligned to 16) computes the same
    assert _rel(harness.HarnessModel._experts(L, y, align=16), ref) < 1e-4


def test_gpu_names_match_catalog_entries(catalog):
    assert harness.detect_gpu(catalog, "NVIDIA H100 80GB HBM3", 81559 * 2**20) == "h100-sxm"
    assert harness.detect_gpu(catalog, "NVIDIA H200", 143771 * 2**20) == "h200"
    assert harness.detect_gpu(catalog, "NVIDIA GeForce RTX 3090", None) == "rtx3090"
    assert harness.detect_gpu(catalog, "NVIDIA GeForce RTX 3090 Ti", None) == "rtx3090ti"
    with pytest.raises(Exception, match="--gpu"):
        harness.detect_gpu(catalog, "NVIDIA GeForce RTX 4090", 8 * 2**30)  # wrong memory size


@pytest.mark.parametrize("split,config", [(None, TINY), ("layer", TINY), ("tensor", TINY), (None, MOE),
                                          ("tensor", MOE)])
def test_calibrate_run_on_the_cpu_writes_loadable_rows(torch, tmp_path, split, config):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / "runs.csv"
    args = ["calibrate", "run", "--model", str(cfg), "--device", "cpu", "--gpu", "rtx4090", "--out", str(out),
            "--prompts", "16", "--depths", "8,64", "--batches", "1,2", "--repeats", "2"]
    if split:
        args += ["--gpus", "2", "--split", split]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = load_runs(out)
    assert len(rows) == 5  # prefill p16 + decode at 2 depths x 2 batches
    assert {r.metric for r in rows} == {"prefill_tok_s", "decode_tok_s"} and all(r.value > 0 for r in rows)
    assert all(r.engine == "torch-cuda" and r.gpu_count == (2 if split else 1) and r.split == split for r in rows)
    res = CliRunner().invoke(main, args)  # a second run appends, ids stay unique, earlier rows are kept
    again = load_runs(out)
    assert res.exit_code == 0 and again[:5] == rows and len({r.ref_row for r in again}) == 10


def test_calibrate_run_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["calibrate", "run", "--model", "qwen3.6-27b", "--device", "cpu", "--gpu", "h100"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "linear" in res.output
    res = CliRunner().invoke(main, ["calibrate", "run", "--device", "cpu"])
    assert res.exit_code == 2 and "--gpu" in res.output


def test_engine_scoped_fit_recovers_harness_factors(catalog):
    # harness runs re-generated from known torch-cuda factors plus 2% noise are fitted from reference-fit:
    # the factors come back, and every other engine keeps the reference values
    rows = [r for r in load_runs(ROOT / "hwdb" / "runs" / "harness-h100.csv") if r.role == "fit"]
    ref = catalog.calibration("reference-fit")
    prepared = prepare(catalog, rows, ref)
    params = calibrate.parameters(ref, prepared, "torch-cuda")
    truth_by_name = {("engines", "torch-cuda", "weight_bw_eff"): 0.75, ("engines", "torch-cuda", "gemm_eff"): 0.45,
                     ("engines", "torch-cuda", "layer_overhead"): 80e-6,
                     ("engines", "torch-cuda", "attention", "fa_on", "decode_bw_eff"): 0.6,
                     ("engines", "torch-cuda", "attention", "fa_on", "prefill_eff"): 0.3}
    assert set(truth_by_name) == {p.path for p in params}
    truth = np.array([truth_by_name[p.path] for p in params])
    true_cal = calibrate.with_values(ref, params, truth, "fit", "truth", "truth")
    rng = np.random.default_rng(11)
    synthetic = [type(p)(p.run.model_copy(update={"value": predict(p, true_cal) * float(np.exp(rng.normal(0, 0.02)))}),
                         p.sm, p.engine, p.fa) for p in prepared]
    fitted, _ = calibrate.fit(ref, synthetic, engine="torch-cuda")
    e = fitted.engines["torch-cuda"]
    assert e.weight_bw_eff.value == pytest.approx(0.75, rel=0.1)
    assert e.gemm_eff.value == pytest.approx(0.45, rel=0.1)
    assert e.layer_overhead.si == pytest.approx(80e-6, rel=0.3)
    assert e.attention["fa_on"].decode_bw_eff.value == pytest.approx(0.6, rel=0.2)
    assert fitted.engines["llama.cpp-cuda"] == ref.engines["llama.cpp-cuda"] and fitted.attention == ref.attention


def test_shipped_h100_profile_is_used_for_the_harness_engine(catalog):
    cal = catalog.calibration(None, "torch-cuda", "h100-sxm")
    assert cal.id == "h100-harness" and cal.fit["filter"] == {"engine": "torch-cuda", "gpu": "h100-sxm"}
    assert catalog.calibration(None, "llama.cpp-cuda", "h100-sxm").id == "reference-fit"
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "h100", "--engine", "torch-cuda", "--ctx", "8k"])
    assert res.exit_code == 0 and "calibration h100-harness" in res.output


def test_memory_plan_against_the_harness_peak_memory(catalog):
    # Reference: every harness run's measured peak device memory (hwdb/runs/harness-*.csv, 2 H100s and 2 x H200)
    # against planner's memory plan at the same context; nothing was fitted to these. Tolerance: median
    # |error| under 6%, every run within 15%.
    from planner import validate

    files = ("harness-h100.csv", "harness-h100-moe.csv", "harness-h200x2.csv")
    rows = [r for f in files for r in load_runs(ROOT / "hwdb" / "runs" / f)]
    scores = validate.memory_scores(catalog, rows)
    errs = [abs(m.error) for m in scores]
    assert len(scores) == len(rows) == 157
    assert np.median(errs) < 0.06 and max(errs) < 0.15


def test_expert_matmul_efficiency_prices_only_the_expert_flops(catalog):
    # qwen3-30b-a3b on an H100 (torch-cuda), a 4,096-token prefill step: halving the expert-matmul
    # efficiency adds exactly the expert FLOPs once more at the dense rate to the matmul's compute time:
    # f_e / (peak x m/2) - f_e / (peak x m) = f_e / (peak x m), with f_e = 2 T x expert params x k/E.
    from dataclasses import replace

    from planner.deployment import Deployment, resolve
    from planner.perf import KERNELS, step
    from planner.speed import step_model

    r = resolve(catalog, Deployment(model="qwen3-30b-a3b", gpus=("h100-sxm",), engine="torch-cuda", quant="bf16"))
    sm = step_model(catalog, r, catalog.calibration("h100-harness"))
    base = replace(sm, eff=replace(sm.eff, moe_gemm=sm.eff.gemm))
    half = replace(sm, eff=replace(sm.eff, moe_gemm=sm.eff.gemm / 2))
    T = 4096.0
    ops = [step(m, [T], [1], [T], [0]).stages[0] for m in (base, half)]
    i = ops[0].names.index("matmul float")
    st, c = sm.gpus[0], KERNELS.index("float")
    f_e = 2 * T * st.e_params[c] * sm.experts_per_tok / sm.n_experts
    added = float(ops[1].compute_time[i][0] - ops[0].compute_time[i][0])
    assert added == pytest.approx(f_e / (float(st.gemm_peak[c]) * sm.eff.gemm), rel=1e-9)


def test_ceiling_measurement_runs_and_reports_rates(torch):
    # the copy and matmul timings of `calibrate run`, small and on the CPU: positive rates in GB/s and
    # TFLOP/s; dtypes the CPU build lacks are reported as not run, not as zero
    got = harness.measure_ceilings(torch.device("cpu"), repeats=2, copy_bytes=1 << 20, n=64, log=lambda m: None)
    assert got["copy_bandwidth_GB_s"] > 0
    assert got["matmul_TFLOP_s"]["fp32"] > 0 and all(v > 0 for v in got["matmul_TFLOP_s"].values())
