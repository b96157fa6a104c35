"""`planner simulate`: the scheduler simulation against hand-checked limits and properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import simulate as sim
from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError

CAT = Catalog()


def _engine(engine="vllm-cuda", batch=16, ctx=8192, model="qwen3-8b"):
    r = resolve(CAT, Deployment(model=model, gpus=("rtx4090",), engine=engine, batch=batch, ctx_tokens=ctx))
    return r, (lambda: sim.engine_for(CAT, r, CAT.calibration(None)))


def _w(**kw):
    base = dict(n_requests=60, rate=0.5, prompt=sim.LengthDist("fixed", 1024), gen=sim.LengthDist("fixed", 64), seed=3)
    base.update(kw)
    return sim.Workload(**base)


@pytest.mark.parametrize("engine", ["vllm-cuda", "llama.cpp-cuda"])
def test_alone_a_request_sees_the_single_request_latencies(engine):
    """At a vanishing rate nothing queues: TTFT is one prefill step of the whole prompt (it fits the
    token budget: 1,024 <= 2,048) and TPOT the decode step at the request's own depth, each plus the
    host's sampling of the one sequence (llama-server; vLLM samples on the GPU, inside the step)."""
    _, make = _engine(engine)
    e = make()
    assert (e.sample_s_per_seq > 0) == (engine == "llama.cpp-cuda")
    s = sim.summary(sim.run(e, _w(rate=0.001, n_requests=3)))  # 3 requests: each on a fresh slot (no save)
    assert s["ttft_s"]["p50"] == pytest.approx(e.step_time(1024, 1, 0) + e.sample_s_per_seq, rel=1e-9)
    mid = e.step_time(1, 1, 1024 + 32)  # decode steps at depths 1,025 .. 1,087: the middle one
    assert s["tpot_s"]["p50"] == pytest.approx(mid + e.sample_s_per_seq, rel=0.02)
    assert s["queue_s"]["p99"] == pytest.approx(0, abs=1e-9)


def test_same_seed_same_run_other_seed_other_run():
    _, make = _engine()
    w = _w(prompt=sim.parse_dist("lognormal:800,0.8", "p"), rate=2.0)
    a, b = sim.summary(sim.run(make(), w)), sim.summary(sim.run(make(), w))
    c = sim.summary(sim.run(make(), _w(prompt=sim.parse_dist("lognormal:800,0.8", "p"), rate=2.0, seed=4)))
    assert a == b and a != c


def test_llamacpp_never_runs_more_than_its_slots():
    _, make = _engine("llama.cpp-cuda", batch=3)
    res = sim.run(make(), _w(rate=20.0))
    assert max(p[1] for p in res.timeline) <= 3 and sim.summary(res)["completed"] == 60


def test_closed_loop_of_one_client_runs_requests_back_to_back():
    _, make = _engine()
    res = sim.run(make(), _w(rate=None, concurrency=1, n_requests=8))
    e2e = sum(q.done - q.arrival for q in res.requests)
    assert e2e == pytest.approx(res.duration_s, rel=1e-9)  # no overlap, no idle time


def test_a_small_cache_preempts_and_a_large_one_does_not():
    _, make = _engine()
    small, large = make(), make()
    small.kv_blocks = 200  # 3,200 tokens: three 1,088-token requests at most
    w = _w(rate=50.0, n_requests=40)
    s_small, s_large = sim.summary(sim.run(small, w)), sim.summary(sim.run(large, w))
    assert s_small["preemptions"] > 0 and s_large["preemptions"] == 0
    assert s_small["completed"] == s_large["completed"] == 40


def test_requests_longer_than_the_context_are_rejected_not_run():
    _, make = _engine(ctx=1024)
    s = sim.summary(sim.run(make(), _w(n_requests=10)))  # 1,024 + 64 > 1,024
    assert s["rejected"] == 10 and s["completed"] == 0


@settings(max_examples=12, deadline=None)
@given(st.floats(0.05, 2.0), st.floats(1.5, 4.0))
def test_more_load_never_lowers_latency(rate, factor):
    """Property: with the same seed (same lengths, arrival gaps scaled), a higher rate never gives a
    lower median end-to-end latency, nor a p90 TTFT lower by more than one prompt step: a request
    that arrives during another's step waits for it to end, so where an arrival falls within a step
    moves TTFT by up to a step either way (hypothesis found 0.4% at rate 0.35 x 1.5)."""
    _, make = _engine()
    e = make()
    lo = sim.summary(sim.run(e, _w(rate=rate, n_requests=40)))
    hi = sim.summary(sim.run(make(), _w(rate=rate * factor, n_requests=40)))
    assert hi["e2e_s"]["p50"] >= lo["e2e_s"]["p50"] * (1 - 1e-9)
    assert hi["ttft_s"]["p90"] >= lo["ttft_s"]["p90"] - e.step_time(1024, 1, 0)


def test_output_throughput_follows_the_offered_load_below_saturation():
    """Below saturation every request completes and output tok/s = rate x output tokens (within the
    Poisson sample's own rate: n / (last arrival + last latency))."""
    _, make = _engine()
    s = sim.summary(sim.run(make(), _w(rate=0.5, n_requests=200)))
    assert s["output_tok_s"] == pytest.approx(0.5 * 64, rel=0.15)


def test_find_max_rate_meets_the_slo_there_and_not_at_twice_it():
    _, make = _engine("llama.cpp-cuda", batch=4)
    w = _w(n_requests=80)
    best = sim.find_max_rate(make, w, 2.0, 0.05, iters=8)
    assert best > 0
    assert sim.summary(sim.run(make(), _w(n_requests=80, rate=best)), 2.0, 0.05)["slo_attained"] >= 0.9
    assert sim.summary(sim.run(make(), _w(n_requests=80, rate=best * 2)), 2.0, 0.05)["slo_attained"] < 0.9


@pytest.mark.parametrize("text, bad", [("fixed:0", True), ("uniform:9-3", True), ("normal:5", True),
                                       ("lognormal:600,1.0", False), ("512", False)])
def test_length_distributions(text, bad):
    if bad:
        with pytest.raises(PlannerError):
            sim.parse_dist(text, "--prompt-dist")
    else:
        assert sim.parse_dist(text, "--prompt-dist").sample(__import__("numpy").random.default_rng(0), 5).min() >= 1


def test_trace_and_cli_json(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt_tokens": 300, "output_tokens": 20}\n{"input_len": 900, "output_len": 40}\n')
    assert sim.read_trace(trace) == [(300, 20), (900, 40)]
    res = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090", "--ctx", "8k", "--rate", "1",
                                    "--trace", str(trace), "--requests", "20", "--slo", "ttft=2s,tpot=50ms", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["max_seqs"] == 4 and out["result"]["completed"] == 20 and 0 <= out["result"]["slo_attained"] <= 1
    tl = out["timeline"]
    assert 0 < len(tl) <= 201 and all(0 <= p["kv_used"] <= 1 and p["running"] <= 4 for p in tl)
    assert [p["t_s"] for p in tl] == sorted(p["t_s"] for p in tl)
    bad = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090", "--slo", "ttft=fast", "--rate", "1"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    neither = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090"])
    assert neither.exit_code == 2 and "--rate" in neither.output
    depth = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090", "--rate", "1", "--depth", "4096"])
    assert depth.exit_code == 2 and "--depth" in depth.output
    missing = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090", "--rate", "1", "--trace", "nope.jsonl"])
    assert missing.exit_code == 2 and "cannot read" in missing.output


# --- issue 18, second part: the properties it names, prefix caching, speculation, llama-server's slots --------------


def _ff_off(e):
    e.fast_forward = False
    return e


@pytest.mark.parametrize("engine, batch, rate", [("vllm-cuda", 64, 6.0), ("llama.cpp-cuda", 4, 1.0), ("vllm-cuda", 8, 40.0)])
def test_runs_of_identical_decode_steps_priced_at_once_match_step_by_step(engine, batch, rate):
    """The fast path (a stretch of identical decode steps priced in one go) is an optimisation only:
    every request's first token and end are the same as stepping one step at a time (the last case
    preempts: a full cache)."""
    _, make = _engine(engine, batch=batch)
    w = _w(rate=rate, n_requests=80, gen=sim.parse_dist("lognormal:120,0.6", "g"),
           prompt=sim.parse_dist("lognormal:700,0.7", "p"))
    fast, slow = make(), _ff_off(make())
    if engine == "vllm-cuda" and batch == 8:
        fast.kv_blocks = slow.kv_blocks = 300
    a, b = sim.run(fast, w), sim.run(slow, w)
    assert a.steps == b.steps and a.preemptions == b.preemptions
    np.testing.assert_allclose(a.first_token, b.first_token, rtol=1e-9)
    np.testing.assert_allclose(a.done, b.done, rtol=1e-9)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["vllm-cuda", "llama.cpp-cuda"]), st.floats(0.2, 30.0), st.integers(0, 1000))
def test_no_request_is_lost_or_served_twice(engine, rate, seed):
    _, make = _engine(engine, batch=8)
    e = make()
    if engine == "vllm-cuda":
        e.kv_blocks = 400  # a small cache: preemptions and recomputes
    res = sim.run(e, _w(rate=rate, n_requests=50, seed=seed, prompt=sim.parse_dist("uniform:100-2000", "p"),
                        gen=sim.parse_dist("uniform:1-300", "g")))
    served = np.isfinite(res.done)
    assert served.sum() + res.rejected + res.failed == 50
    assert (res.tokens_out[served] == res.gen[served]).all()  # each served request got exactly its tokens
    assert (res.first_token[served] <= res.done[served]).all() and (res.first_token[served] >= res.arrival[served]).all()


@settings(max_examples=10, deadline=None)
@given(st.floats(0.5, 40.0), st.integers(0, 1000))
def test_throughput_never_exceeds_the_best_step_throughput(rate, seed):
    """Output tokens per second never beat the engine's fastest decode: its best tokens per second
    over every batch it may form, at no context at all."""
    _, make = _engine(batch=32)
    e = make()
    best = max(b / e.step_time(b, b, 0) for b in range(1, 33))
    s = sim.summary(sim.run(e, _w(rate=rate, n_requests=60, seed=seed)))
    assert s["output_tok_s"] <= best


@pytest.mark.parametrize("rate", [0.5, 3.0, 12.0])
def test_littles_law_holds_for_the_schedulers_own_counts(rate):
    """Little's law on the scheduler's own bookkeeping: the time integral of its queue (the requests
    each step runs, and those waiting, over the step's duration) equals the sum of the requests' times
    in the system, within two steps per request (a request arriving inside a step joins the queue at
    that step's end)."""
    _, make = _engine(batch=16)
    res = sim.run(_ff_off(make()), _w(rate=rate, n_requests=60))
    tl = res.timeline
    # each step's own running set and queue for its duration; idle gaps hold nobody
    integral = sum(dt * (r + q) for _, r, q, _, dt in tl)
    sojourn = float(np.nansum(res.done - res.arrival))
    mean_step = res.duration_s / res.steps
    assert integral == pytest.approx(sojourn, abs=60 * 2 * mean_step + 0.02 * sojourn)


@settings(max_examples=8, deadline=None)
@given(st.floats(1.0, 60.0), st.integers(0, 1000), st.integers(0, 3))
def test_more_kv_capacity_never_raises_preemptions(rate, seed, extra):
    """A cache that holds every running request whole (max_seqs x the longest prompt + output) never
    preempts, at any load, and neither does any larger one. (Below that, more capacity is not monotone
    in vLLM: its admission gate lets a larger cache admit more requests that later outgrow it;
    hypothesis found 120 blocks preempting 3 times and 240 blocks 5 times on one workload.)"""
    _, make = _engine(batch=16)
    w = _w(rate=rate, n_requests=60, seed=seed, prompt=sim.parse_dist("uniform:200-1500", "p"))
    e = make()
    e.kv_blocks = 16 * (-(-(1500 + 64) // 16)) * (1 + extra)
    assert sim.run(e, w).preemptions == 0
    tight = make()
    tight.kv_blocks = 300  # 4,800 tokens for up to 16 requests of up to 1,564: preempts under load
    if rate > 20:
        assert sim.run(tight, w).preemptions > 0


@settings(max_examples=8, deadline=None)
@given(st.floats(0.5, 20.0), st.floats(1.3, 3.0), st.integers(0, 1000))
def test_a_faster_gpu_never_lowers_goodput(rate, speedup, seed):
    """Every step `speedup` times faster (a faster GPU): goodput under an SLO is never lower, within one
    request over the run (where an arrival falls within a step moves single requests either way)."""
    _, make = _engine(batch=16)
    slow, fast = make(), make()
    f = fast.step_fn
    fast.step_fn = lambda *a: f(*a) / speedup
    w = _w(rate=rate, n_requests=60, seed=seed)
    a, b = sim.run(slow, w), sim.run(fast, w)
    ga, gb = sim.summary(a, 1.0, 0.03), sim.summary(b, 1.0, 0.03)
    assert gb["goodput_per_s"] * b.duration_s >= ga["goodput_per_s"] * a.duration_s - 1


def test_gamma_arrivals_keep_the_rate_and_burstier_ones_wait_longer():
    """vllm bench serve's gamma gaps: shape k, mean 1/rate, so the rate holds; k < 1 is burstier and
    queues more than Poisson at the same load."""
    times = {}
    for k in (0.25, 1.0, 4.0):
        arr, _, _ = sim._arrivals(_w(rate=2.0, n_requests=4000, burstiness=k))
        gaps = np.diff(arr)
        assert gaps.mean() == pytest.approx(0.5, rel=0.06)
        assert gaps.var() == pytest.approx(0.25 / k, rel=0.2)  # gamma: variance k * theta^2 = 1 / (k rate^2)
        _, make = _engine("llama.cpp-cuda", batch=2)
        times[k] = sim.summary(sim.run(make(), _w(rate=1.0, n_requests=200, burstiness=k)))["queue_s"]["mean"]
    assert times[0.25] > times[1.0] > times[4.0]


def test_a_trace_with_arrival_times_is_replayed(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt_tokens": 300, "output_tokens": 20, "arrival_s": 0.0}\n'
                     '{"prompt_tokens": 900, "output_tokens": 40, "arrival_s": 5.0}\n')
    got = sim.read_trace(trace)
    assert got == [(300, 20, 0.0), (900, 40, 5.0)]
    _, make = _engine()
    res = sim.run(make(), sim.Workload(n_requests=2, trace=tuple(got)))
    assert list(res.arrival) == [0.0, 5.0] and np.isfinite(res.done).all()
    mixed = tmp_path / "m.jsonl"
    mixed.write_text('{"prompt_tokens": 3, "output_tokens": 2, "arrival_s": 1}\n{"prompt_tokens": 3, "output_tokens": 2}\n')
    with pytest.raises(PlannerError, match="every line or on none"):
        sim.read_trace(mixed)


def test_a_shared_prefix_is_served_from_the_prefix_cache():
    """vLLM: once one request has computed the 1,000-token system prompt, later ones prefill only the
    rest (62 full blocks = 992 tokens reused), so TTFT at light load drops to the remaining 208 tokens'
    step; the prefix blocks are held once, not per request. Off, every prompt is computed whole."""
    _, make = _engine(batch=64)
    w = _w(rate=0.2, n_requests=12, prompt=sim.LengthDist("fixed", 1200), prefix=1000)
    on, e = sim.run(make(), w), make()
    off = sim.run(sim.engine_for(CAT, _engine(batch=64)[0], CAT.calibration(None), prefix_caching=False), w)
    t_on, t_off = sim.request_metrics(on)["ttft"], sim.request_metrics(off)["ttft"]
    assert t_off[0] == pytest.approx(e.step_time(1200, 1, 0), rel=1e-9)
    assert t_on[0] == pytest.approx(t_off[0], rel=1e-9)  # the first request computes the prefix
    assert np.median(t_on[1:]) == pytest.approx(e.step_time(1200 - 992, 1, 992), rel=1e-6)


def test_llama_server_reuses_a_slots_prefix_and_saves_the_old_context_to_its_prompt_cache():
    """llama-server: a slot that holds the shared prefix serves it again (the request picks that slot
    by prompt similarity); a slot taken by LRU first copies its old context to the host prompt cache
    (--cache-ram), which stalls the step: (KV bytes per token x tokens) / the save rate."""
    r, make = _engine("llama.cpp-cuda", batch=1)
    e = make()
    assert e.save_bandwidth > 0 and e.save_bytes_per_token > 0
    w = _w(rate=0.05, n_requests=3, prompt=sim.LengthDist("fixed", 1024), gen=sim.LengthDist("fixed", 64))
    plain = sim.request_metrics(sim.run(make(), w))["ttft"]
    stall = e.slot_save_s(1024 + 63)  # the previous request's prompt and all but its last token
    assert plain[0] == pytest.approx(e.step_time(1024, 1, 0) + e.sample_s_per_seq, rel=1e-9)
    assert plain[1] == pytest.approx(plain[0] + stall, rel=1e-6)
    no_cache = sim.engine_for(CAT, r, CAT.calibration(None), cache_ram_mib=0)
    assert sim.request_metrics(sim.run(no_cache, w))["ttft"][1] == pytest.approx(plain[0], rel=1e-9)
    pw = _w(rate=0.05, n_requests=3, prompt=sim.LengthDist("fixed", 1024), gen=sim.LengthDist("fixed", 64), prefix=900)
    hit = sim.request_metrics(sim.run(make(), pw))["ttft"]
    # 900 of 1,087 cached tokens kept (over half: no save); 124 tokens computed at depth 900
    assert hit[1] == pytest.approx(e.step_time(124, 1, 900) + e.sample_s_per_seq, rel=1e-6)


def test_a_unified_kv_pool_that_overflows_fails_every_running_request():
    """llama-server -kvu: slots share one pool of slots x ctx tokens; a request may grow past its
    share, and when the pool overflows every running request fails (server-context.cpp:4016-4051)."""
    r, _ = _engine("llama.cpp-cuda", batch=2, ctx=2048)
    uni = sim.engine_for(CAT, r, CAT.calibration(None), unified=True)
    per_slot = sim.engine_for(CAT, r, CAT.calibration(None), unified=False)
    w = _w(rate=5.0, n_requests=6, prompt=sim.LengthDist("fixed", 2500), gen=sim.LengthDist("fixed", 200))
    assert sim.run(per_slot, w).rejected == 6  # 2,700 tokens > a 2,048-token slot
    res = sim.run(uni, w)  # fits the 4,096-token pool alone, not two at once
    assert res.rejected == 0 and res.failed > 0 and np.isfinite(res.done).sum() + res.failed == 6


@pytest.mark.parametrize("alpha", [0.0, 0.6, 0.9])
def test_speculation_in_the_simulation_matches_the_planned_cycle(alpha):
    """At a vanishing rate, a request's TPOT under speculation is the cycle time (draft + verify of
    gamma + 1 tokens + state keeping) over the expected tokens per cycle, within sampling error of
    the accepted runs drawn (seeded)."""
    from planner.spec import compile_spec, cycle_times, expected_tokens

    r = resolve(CAT, Deployment(model="qwen3-8b", gpus=("h100-sxm",), engine="vllm-cuda", batch=4, ctx_tokens=8192,
                                spec="draft:qwen3-0.6b", accept=max(alpha, 0.01), draft_len=4))
    e = sim.engine_for(CAT, r, CAT.calibration(None))
    g, a = e.spec.gamma, e.spec.alpha
    res = sim.run(e, _w(rate=0.001, n_requests=6, gen=sim.LengthDist("fixed", 400)))
    m = compile_spec(CAT, r, CAT.calibration(None))
    draft, verify, keep = cycle_times(m, 1, 1024 + 200, g, a)
    expect = float(draft + verify + keep) / expected_tokens(a, g)
    got = np.median(sim.request_metrics(res)["tpot"])
    assert got == pytest.approx(expect, rel=0.12)


def test_sglang_admits_while_prompt_and_expected_output_fit():
    """SGLang's budget, hand-worked: 10,000 free tokens, requests of 1,000 prompt + 1,000 output all at
    once. Each admission needs 1,000 + 1,000 x 0.7 = 1,700 tokens (+ a 1-token page): room 10,000 ->
    8,299 -> 6,598 -> 4,897 -> 3,196 -> 1,495, and 1,700 < 1,495 fails: 5 run in the first step (the
    token budget, 8,192, would have taken 8)."""
    r = resolve(CAT, Deployment(model="qwen3-8b", gpus=("h100-sxm",), engine="sglang-cuda", batch=64, ctx_tokens=4096))
    e = sim.engine_for(CAT, r, CAT.calibration(None))
    e.kv_blocks = 10_000
    w = sim.Workload(n_requests=12, trace=tuple((1000, 1000, 0.0) for _ in range(12)))
    assert sim.run(e, w).timeline[0][1] == 5


def test_the_cached_depth_is_the_same_for_one_value_and_many():
    depths = np.array([0, 31, 33, 4000, 4095, 4096, 5000, 70_000, 1_000_000.5])
    assert list(sim._depth_bins(depths)) == [sim._depth_bin(float(d)) for d in depths]
