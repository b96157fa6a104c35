"""Speculative decoding: Leviathan et al.'s formulas, the roofline of a speculation cycle,
drafter memory in fit, the claim check, and published reference cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import validate
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.fit import fit
from planner.memory import plan_memory, max_context
from planner.runs import load_runs, prepare
from planner.spec import (alpha_for_accept_len, alpha_for_drafted_rate, compile_spec, cycle_times, drafted_accept_rate,
                          drafter_params, expected_tokens, leviathan_speedup, spec_decode_time)
from planner.units import GB

ROOT = Path(__file__).resolve().parent.parent


def _r(catalog, model="qwen3.6-27b", gpu="rtx5090", **kw):
    kw.setdefault("ctx_tokens", 32768)
    return resolve(catalog, Deployment(model=model, gpus=(gpu,), **kw))


# --- Leviathan, Kalman & Matias (arXiv:2211.17192), worked by hand ------------------------------


def test_expected_tokens_worked_example():
    # alpha 0.8, gamma 4: (1 - 0.8^5) / (1 - 0.8) = (1 - 0.32768) / 0.2 = 3.3616 tokens per step
    assert float(expected_tokens(0.8, 4)) == pytest.approx(3.3616)
    # alpha 0.6, gamma 2: (1 - 0.216) / 0.4 = 1.96
    assert float(expected_tokens(0.6, 2)) == pytest.approx(1.96)
    # the limits: alpha 0 -> 1 token (the target's own), alpha 1 -> gamma + 1
    assert float(expected_tokens(0.0, 5)) == 1.0
    assert float(expected_tokens(1.0, 5)) == 6.0


def test_leviathan_speedup_worked_example():
    # alpha 0.8, gamma 4, c 0.05: 3.3616 / (4 x 0.05 + 1) = 3.3616 / 1.2 = 2.80133
    assert float(leviathan_speedup(0.8, 4, 0.05)) == pytest.approx(2.801333, rel=1e-6)
    # alpha 0.7, gamma 3, c 0.1: (1 - 0.7^4) / 0.3 = 0.7599 / 0.3 = 2.533; / 1.3 = 1.94846
    assert float(leviathan_speedup(0.7, 3, 0.1)) == pytest.approx(1.948462, rel=1e-6)


def test_acceptance_conversions_invert():
    assert alpha_for_accept_len(3.3616, 4) == pytest.approx(0.8, abs=1e-9)
    # engines print accepted / drafted: (3.3616 - 1) / 4 = 0.5904
    assert drafted_accept_rate(0.8, 4) == pytest.approx(0.5904)
    assert alpha_for_drafted_rate(0.5904, 4) == pytest.approx(0.8, abs=1e-9)


@given(st.floats(0.0, 0.999), st.integers(1, 16), st.floats(0.0, 1.0))
def test_closed_form_speedup_never_exceeds_draft_len_plus_one(alpha, gamma, c):
    assert float(leviathan_speedup(alpha, gamma, c)) <= gamma + 1 + 1e-9


# --- the roofline of a speculation cycle -----------------------------------------------------


SETUPS = [  # (model, gpu, engine, --spec, draft length)
    ("qwen3.6-27b", "rtx5090", None, "dflash", 15),
    ("qwen3.6-27b", "rtx5090", None, "mtp", 3),
    ("qwen3.6-35b-a3b", "rtx3090", None, "mtp", 2),
    ("llama-3.1-8b", "h100-sxm", "sglang-cuda", "eagle", 6),
    ("llama-3.1-8b", "rtx4090", None, "draft:llama-3.2-1b", 4),
]


def _speedup(catalog, model, gpu, engine, spec, g, alpha, batch=1):
    r = _r(catalog, model, gpu, engine=engine, spec=spec, draft_len=g, accept=alpha, batch=batch)
    m = compile_spec(catalog, r, catalog.calibration(None))
    from planner.perf import decode_time
    plain = float(decode_time(m.target, [batch], [512], [128])[0])
    sp = float(spec_decode_time(m, [batch], [512], [128], [g], [alpha])[0])
    return plain / sp


@pytest.mark.parametrize("setup", SETUPS, ids=[s[3] + "-" + s[0] for s in SETUPS])
def test_acceptance_zero_is_a_slowdown(catalog, setup):
    # nothing accepted: one token per cycle, and the draft and a longer verification cost extra
    assert _speedup(catalog, *setup, alpha=0.0) < 1


@pytest.mark.parametrize("setup", SETUPS, ids=[s[3] + "-" + s[0] for s in SETUPS])
def test_speedup_rises_with_acceptance_and_stays_under_draft_len_plus_one(catalog, setup):
    s = [_speedup(catalog, *setup, alpha=a) for a in (0.0, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0)]
    assert all(b > a for a, b in zip(s, s[1:])), s
    assert max(s) <= setup[4] + 1


@pytest.mark.parametrize("setup", SETUPS, ids=[s[3] + "-" + s[0] for s in SETUPS])
def test_speculation_stops_paying_at_large_batch(catalog, setup):
    r = _r(catalog, setup[0], setup[1], engine=setup[2], spec=setup[3], draft_len=setup[4], accept=0.8)
    cal = catalog.calibration(None)
    res = fit(catalog, r, calibration=cal)
    if res.spec.break_even_batch is None:
        # speculation pays at every batch searched only where reading the KV cache bounds the step:
        # a verify pass reads each sequence's cache once for all its draft tokens
        from planner.perf import breakdown
        from planner.speed import step_model

        b = float(res.spec.max_batch_searched)
        ops = breakdown(step_model(catalog, r, cal), "", b, b, 1, 600).ops
        assert max(ops, key=lambda o: o.time_s).op == "attention"
        return
    assert _speedup(catalog, *setup, alpha=0.8, batch=res.spec.break_even_batch) < 1
    if res.spec.break_even_batch > 1:
        assert _speedup(catalog, *setup, alpha=0.8, batch=res.spec.break_even_batch - 1) >= 1


def test_block_drafter_cost_does_not_grow_with_draft_length(catalog):
    cal = catalog.calibration(None)
    dfl = compile_spec(catalog, _r(catalog, spec="dflash", accept=0.8), cal)
    mtp = compile_spec(catalog, _r(catalog, spec="mtp", accept=0.8), cal)
    d1, _, _ = cycle_times(dfl, [1], [1024], [1])
    d15, _, _ = cycle_times(dfl, [1], [1024], [15])
    m1, _, _ = cycle_times(mtp, [1], [1024], [1])
    m15, _, _ = cycle_times(mtp, [1], [1024], [15])
    # one forward of 16 tokens reads the drafter's weights once, like one of a single token; it is
    # dearer only by the arithmetic of its kernel: llama.cpp runs MMQ beyond 8 tokens, whose tile
    # floor (gemm_min_tokens, ~61) makes 16 tokens cost like ~77 (docs/kernel-paths.md#matmul-time),
    # so far less than the 16 forwards a sequential drafter pays
    assert float(d15[0] / d1[0]) < 2.0
    assert float(m15[0] / m1[0]) == pytest.approx(15.0)  # 15 forwards of one MTP layer


def test_physics_reproduces_leviathan_when_verification_is_free(catalog):
    # With the verify pass priced as one plain step (its memory-bound limit), the cycle model is
    # exactly Leviathan's formula with c = draft forward / plain step.
    cal = catalog.calibration(None)
    m = compile_spec(catalog, _r(catalog, spec="mtp", accept=0.75), cal)
    from dataclasses import replace

    from planner.perf import decode_step_time
    # free verification: the per-token dot products of the mat-vec kernels and the copy of every
    # verified token's logits to host memory priced at nothing (on a real GPU they are not:
    # docs/kernel-paths.md#matmul-time, #logits)
    m = replace(m, target=replace(m.target, eff=replace(m.target.eff, dot=1e12), logits_bytes=0.0))
    g, a = 3, 0.75
    draft, verify, keep = cycle_times(m, [1], [512], [g], [a])
    plain = float(decode_step_time(m.target, [1], [512])[0])
    # memory-bound at batch 1: verifying 4 tokens reads the same weights as one plain step
    assert float(verify[0]) == pytest.approx(plain, rel=0.01)
    c = float(draft[0]) / g / plain
    ours = float(expected_tokens(a, g)) * plain / (float(draft[0]) + plain)
    assert ours == pytest.approx(float(leviathan_speedup(a, g, c)))


# --- memory ------------------------------------------------------------------------------------


def test_mtp_cache_is_one_full_attention_layer(catalog):
    # Qwen3.6-27B full-attention layer: 4 KV heads x (256 + 256) values x 2 bytes (f16) = 4096 B per token;
    # 32,768 cells (32k padded to 256) -> 134,217,728 bytes
    r = _r(catalog, spec="mtp", accept=0.8)
    d = plan_memory(r, 32768).devices[0]
    assert d.draft_cache_bytes == 4 * 512 * 2 * 32768


def test_draft_memory_counts_in_fit_and_max_context(catalog):
    for spec in ("dflash", "mtp"):
        base = _r(catalog)
        r = _r(catalog, spec=spec, accept=0.8)
        p0, p1 = plan_memory(base, 32768).devices[0], plan_memory(r, 32768).devices[0]
        extra = p1.draft_weights_bytes + p1.draft_cache_bytes + p1.draft_compute_bytes
        assert extra > 0
        assert p1.total_bytes == p0.total_bytes + extra
        assert max_context(r) < max_context(base)


def test_drafter_weights_match_published_files(catalog):
    # z-lab/Qwen3.6-35B-A3B-DFlash bf16: "~905 MB" (MiB, see the data file) = 949 MB; 474M params x 2 B.
    card = catalog.draft("qwen3.6-35b-a3b-dflash")
    assert drafter_params(catalog, card) * 2 == pytest.approx(905 * 2**20, rel=0.01)
    # spiritbuun's GGUFs of the 3.6-27B drafter: Q8_0 1.75 GB, Q4_K_M 1.03 GB; within 6% (the card rounds, and
    # its fc / norm tensor types are not stated)
    for quant, size in (("Q8_0", 1.75), ("Q4_K_M", 1.03)):
        d = plan_memory(_r(catalog, spec="dflash", accept=0.8, draft_quant=quant), 4096).devices[0]
        assert d.draft_weights_bytes == pytest.approx(size * GB, rel=0.06), quant


# --- claim check -------------------------------------------------------------------------------


def _claim(catalog, observed, **kw):
    r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("rtx5090", "rtx3090ti"), quant="Q8_0",
                                    ctx_tokens=32768, **kw))
    return fit(catalog, r, observed=observed).claim


def test_claim_verdicts_follow_the_physics(catalog):
    low = _claim(catalog, 20)
    assert low.verdict == "plausible"
    need = _claim(catalog, 100)  # the "100 t/s for a 27B at Q8_0 on a 5090 + 3090 Ti"
    assert need.verdict == "needs-speculation" and need.observed_tok_s > need.ceiling_tok_s
    assert 1 < need.min_accept_len_at_ceiling <= need.min_accept_len_predicted
    # the smallest accept length at 100% of peak: claim x ceiling time of the verification step, which is at
    # least one plain step (claim / ceiling) and, memory-bound at batch 1, hardly more
    assert need.min_accept_len_at_ceiling >= 100 / need.ceiling_tok_s
    assert need.min_accept_len_at_ceiling == pytest.approx(100 / need.ceiling_tok_s, rel=0.01)
    far = _claim(catalog, 10 * need.max_spec_tok_s_at_ceiling)
    assert far.verdict == "impossible" and far.min_accept_len_at_ceiling is None


@settings(max_examples=25, deadline=None)
@given(st.floats(60, 400))
def test_more_claimed_speed_needs_more_accepted_tokens(catalog, tok_s):
    a, b = _claim(catalog, tok_s), _claim(catalog, tok_s * 1.2)
    if a.min_accept_len_at_ceiling and b.min_accept_len_at_ceiling:
        assert b.min_accept_len_at_ceiling > a.min_accept_len_at_ceiling


# --- CLI ---------------------------------------------------------------------------------------


def test_fit_json_has_spec_and_claim_sections():
    r = CliRunner().invoke(main, ["fit", "qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "32k", "--spec", "mtp",
                                  "--accept-len", "2.5", "--observed", "150", "--sweep-accept", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    s = out["spec"]
    assert s["method"] == "mtp" and s["draft_len"] == 2 and s["accept_len"] == pytest.approx(2.5)
    assert s["decode_tok_s"] == pytest.approx(s["speedup"] * s["plain_decode_tok_s"])
    assert out["memory"]["devices"][0]["draft_cache_bytes"] > 0
    assert out["claim"]["observed_tok_s"] == 150 and out["claim"]["verdict"] in (
        "plausible", "above-prediction", "needs-speculation", "impossible")
    best = max(s["sweep"], key=lambda row: row["alpha"])
    assert best["best_tok_s"] == max(best["tok_s"])


@pytest.mark.parametrize("args, needle", [
    (["--accept", "0.7"], "need --spec"),
    (["--spec", "mtp", "--accept-len", "9", "--draft-len", "3"], "more than draft length + 1"),
    (["--spec", "mtpp", "--accept", "0.7"], "did you mean"),
    (["--spec", "draft:llama-3.2-1b", "--accept", "0.7"], "same tokenizer"),
    (["--spec", "eagle", "--accept", "0.7"], "no eagle drafter"),
    (["--spec", "dflash"], "needs an acceptance"),
    (["--spec", "dflash", "--accept", "0.7", "--draft-len", "20"], "out of range"),
])
def test_bad_spec_input_is_one_line(args, needle):
    r = CliRunner().invoke(main, ["fit", "qwen3.6-27b", "--gpu", "rtx5090", *args])
    assert r.exit_code == 2
    assert needle in r.output and "Traceback" not in r.output


def test_drafts_listing_names_targets():
    r = CliRunner().invoke(main, ["drafts", "qwen3.6-35b-a3b"])
    assert r.exit_code == 0
    assert "qwen3.6-35b-a3b-dflash" in r.output and "qwen3.6-mtp" in r.output


# --- published reference cases (hwdb/runs/spec-published.csv) ----------------------------------


def test_published_speculative_results(catalog):
    # Tolerance 30% on each published speedup (sources: each row's source_url; the errors are in
    # docs/validation.md). The model has no per-cycle engine overhead, so it should not under-predict by much.
    # The plain-decode baseline the speedups are measured against (spec-1: Qwen3.6-35B-A3B on an RTX 3090,
    # held out of every fit) is a decode row like the validation's others: 35%. It is +30.2% (+29.4% before
    # the refit with the recurrent token loop and the logits copy): planner over-prices no kernel of it but
    # under-prices the ~30 kernels per layer a Qwen3.6 layer launches (docs/kernel-paths.md#kernel-table).
    cal = catalog.calibration(None)
    rows = prepare(catalog, load_runs(ROOT / "hwdb" / "runs" / "spec-published.csv"), cal)
    for s in validate.score(rows, cal):
        tol = 0.35 if s.prepared.run.metric == "decode_tok_s" else 0.30
        assert abs(s.error) < tol, (s.prepared.run.ref_row, s.predicted, s.prepared.run.value)


@pytest.mark.xfail(strict=False, reason="known miss since the kernel-path refit (issue 14): the model puts the "
                   "break-even at 2 concurrent requests, the report between 4 (+0.4%) and 8 (-74%); the verify pass "
                   "of 3 tokens per sequence now pays MMVQ's per-token dp4a arithmetic, which the fit prices from "
                   "the H200's kernel table and may overstate on an RTX 3090")
def test_hybrid_break_even_matches_the_rtx3090_report(catalog):
    # thc1006 (RTX 3090, llama.cpp, Qwen3.6-35B-A3B, DFlash): +0.4% at 4 concurrent requests, -74% at 8.
    # Draft length 2 at the single-request acceptance (72.3% of drafted): the break-even batch lies in 3..8.
    a = alpha_for_drafted_rate(0.723, 2)
    r = _r(catalog, "qwen3.6-35b-a3b", "rtx3090", spec="dflash", draft_len=2, accept=a)
    res = fit(catalog, r)
    assert 3 <= res.spec.break_even_batch <= 8


@pytest.mark.parametrize("family, engine, expect", [
    ("vllm", "vllm", '"method": "mtp", "model": "google/gemma-4-31B-it-assistant"'),
    ("sglang", "sglang", "--speculative-algorithm NEXTN --speculative-draft-model-path google/gemma-4-31B-it-assistant"),
    ("llama.cpp", "llama.cpp", "--spec-type draft-mtp -md"),
])
def test_a_separate_mtp_drafter_is_launched_as_the_engines_mtp(family, engine, expect):
    """Gemma 4's MTP assistant is a checkpoint of its own: `--spec mtp` finds it (the target has no MTP layers),
    planner prices it as a small autoregressive head, and the command names it as each engine does: vLLM method
    mtp with its model (vllm/config/speculative.py:1106-1115), SGLang NEXTN with the draft path (promoted to
    FROZEN_KV_MTP, srt/arg_groups/speculative_hook.py:86-115), llama.cpp draft-mtp with -md."""
    from click.testing import CliRunner

    from planner.cli import main
    from test_cli import check_emitted

    gpu = "rtx5090" if family == "llama.cpp" else "h100-sxm"
    res = CliRunner().invoke(main, ["fit", "gemma-4-31b", "--gpu", gpu, "--engine", engine, "--spec", "mtp", "--accept",
                                    "0.8", "--ctx", "8k", "--emit", family])
    assert res.exit_code == 0, res.output
    assert expect in res.output
    check_emitted(family, res.output)
