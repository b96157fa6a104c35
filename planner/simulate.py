"""`simulate`: a deployment serving a stream of requests, step by step (docs/simulate.md).

A discrete-time simulation of the engine's scheduler over requests drawn from length
distributions (or a trace) arriving as a Poisson process or from closed-loop clients. Each
engine step is priced by the speed model (planner.perf.step) for the batch the scheduler forms;
KV capacity comes from the memory plan. Deterministic for a seed.

Schedulers, as the engines run them:
  * vLLM V1 (vllm/v1/core/sched/scheduler.py, 0.33.0): a token budget per step
    (max_num_batched_tokens) filled by the running requests first (one token per decoding
    request, then the rest of partially prefilled prompts), then by waiting requests in arrival
    order, prompts chunked to fit (chunked prefill); at most max_num_seqs running; KV in blocks of
    16 tokens allocated as tokens are scheduled; when a block cannot be allocated the most
    recently admitted running request is preempted and recomputed later (its blocks freed).
  * llama.cpp server (tools/server/server.cpp, b11434): -np slots of `ctx` tokens each; a request
    waits for a free slot; every step batches one token per generating slot and prompt tokens of
    the slots still prefilling, up to n_batch (-b) tokens; no preemption.

A mixed step (decodes plus prompt chunks) is priced as one forward of all its tokens over all its
sequences at their mean depth (the weight traffic, GEMM work and attention reads of every sequence
exactly), and at least the time of its prompt chunks alone and of its decodes alone (the mean depth
understates a prompt chunk's own causal attention: docs/simulate.md).
"""

from __future__ import annotations

import heapq
import json
from collections import deque
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.errors import PlannerError

BLOCK_TOKENS = 16  # vLLM's default KV block (vllm/config/cache.py block_size)
DEPTH_BIN = 64  # step times are cached at depths rounded to this many tokens


# --- workload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthDist:
    kind: str  # fixed | uniform | lognormal
    a: float
    b: float = 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            out = np.full(n, self.a)
        elif self.kind == "uniform":
            out = rng.integers(int(self.a), int(self.b) + 1, n)
        else:  # lognormal: median a, sigma b (of the log)
            out = np.exp(rng.normal(math.log(self.a), self.b, n))
        return np.maximum(1, np.round(out)).astype(int)


def parse_dist(text: str, what: str) -> LengthDist:
    """fixed:512, uniform:100-2000, lognormal:600,1.0 (median, sigma of the log)."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+", t):
        t = "fixed:" + t
    m = re.fullmatch(r"fixed:(\d+)", t) or re.fullmatch(r"uniform:(\d+)-(\d+)", t) or \
        re.fullmatch(r"lognormal:(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)", t)
    if not m:
        raise PlannerError(f"{what} {text!r}: write fixed:512, uniform:100-2000 or lognormal:600,1.0")
    kind = t.split(":")[0]
    vals = [float(x) for x in m.groups()]
    if kind == "uniform" and vals[0] > vals[1]:
        raise PlannerError(f"{what} {text!r}: the lower bound is above the upper one")
    if any(v <= 0 for v in vals[:1]):
        raise PlannerError(f"{what} {text!r}: lengths must be positive")
    return LengthDist(kind, *vals)


def read_trace(path: Path) -> list[tuple[int, int]]:
    """(prompt, output) tokens per request from a JSONL file: one object per line with
    prompt_tokens / output_tokens (also input_len / output_len, as vllm bench serve datasets
    reduce to)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            p = int(d.get("prompt_tokens", d.get("input_len")))
            g = int(d.get("output_tokens", d.get("output_len")))
        except (ValueError, TypeError, AttributeError):
            raise PlannerError(f"{path}:{n}: expected {{\"prompt_tokens\": N, \"output_tokens\": M}}") from None
        if p < 1 or g < 1:
            raise PlannerError(f"{path}:{n}: token counts must be positive")
        out.append((p, g))
    if not out:
        raise PlannerError(f"{path}: no requests")
    return out


@dataclass(frozen=True)
class Workload:
    n_requests: int
    rate: float | None = None  # requests/s (Poisson); None: closed loop
    concurrency: int | None = None  # closed-loop clients, each sending its next request on completion
    prompt: LengthDist = LengthDist("fixed", 512)
    gen: LengthDist = LengthDist("fixed", 128)
    trace: tuple[tuple[int, int], ...] = ()
    seed: int = 0


@dataclass
class Request:
    id: int
    arrival: float
    prompt: int
    gen: int
    target: int = 0  # tokens to prefill: the prompt, or prompt + output so far after a preemption (recompute)
    prefilled: int = 0  # of target, computed
    generated: int = 0  # output tokens emitted
    decoded: int = 0  # tokens decoded since the last prefill (in the cache after it)
    first_token: float | None = None
    done: float | None = None
    admitted: float | None = None
    preemptions: int = 0
    blocks: int = 0
    active: bool = False  # in the running set

    def __post_init__(self):
        self.target = self.target or self.prompt

    @property
    def context(self) -> int:
        return self.prefilled + self.decoded


# --- the engine ----------------------------------------------------------------------------------


@dataclass
class Engine:
    """What the scheduler needs from the deployment: limits, KV capacity and step times."""

    kind: str  # "vllm" or "llama.cpp"
    max_seqs: int
    token_budget: int
    kv_blocks: int  # vLLM: KV blocks of BLOCK_TOKENS in all
    slot_ctx: int  # llama.cpp: tokens per slot
    step_fn: object  # (tokens, seqs, q, depth) -> seconds
    cache: dict = field(default_factory=dict)

    def step_time(self, tokens: int, seqs: int, depth_tokens: float) -> float:
        d = int(round(depth_tokens / DEPTH_BIN)) * DEPTH_BIN
        key = (tokens, seqs, d)
        t = self.cache.get(key)
        if t is None:
            t = float(self.step_fn(tokens, seqs, tokens / seqs, d))
            self.cache[key] = t
        return t


def engine_for(catalog, r, cal) -> Engine:
    """The scheduler limits and step times of a resolved deployment."""
    from planner.memory import plan_memory
    from planner.perf import step
    from planner.speed import step_model

    sm = step_model(catalog, r, cal)
    ctx = r.ctx_tokens or r.arch.max_position_embeddings

    def fn(tokens, seqs, q, depth):
        return step(sm, tokens, seqs, q, depth).total

    if r.engine.family == "llama.cpp":
        return Engine("llama.cpp", r.batch, max(r.engine.memory.default_batch_tokens, r.ubatch_tokens), 0, ctx, fn)
    # vLLM / SGLang: what the memory plan leaves under gpu_memory_utilization, in blocks
    plan = plan_memory(r, ctx)
    kv_now = sum(d.kv_cache_bytes for d in plan.devices)
    free = sum(d.usable_bytes - (d.total_bytes - d.kv_cache_bytes) for d in plan.devices)
    per_token = kv_now / max(1, r.batch * ctx)
    blocks = int(free / max(per_token, 1e-9) / BLOCK_TOKENS) if per_token else 10**9
    return Engine(r.engine.family, r.batch, r.ubatch_tokens, max(blocks, 0), ctx, fn)


# --- the simulation ------------------------------------------------------------------------------


@dataclass
class SimResult:
    requests: list[Request]
    duration_s: float
    steps: int
    preemptions: int
    rejected: int
    kv_peak_fraction: float
    timeline: list[tuple[float, int, int, float]]  # (time, running, waiting, KV fraction used)


def _arrivals(w: Workload) -> list[Request]:
    rng = np.random.default_rng(w.seed)
    n = w.n_requests
    if w.trace:
        pairs = [w.trace[i % len(w.trace)] for i in range(n)]
        prompts, gens = np.array([p for p, _ in pairs]), np.array([g for _, g in pairs])
    else:
        prompts, gens = w.prompt.sample(rng, n), w.gen.sample(rng, n)
    if w.rate:
        times = np.cumsum(rng.exponential(1.0 / w.rate, n))
    else:
        times = np.full(n, np.inf)  # closed loop: released as clients finish
        times[: min(n, w.concurrency or 1)] = 0.0
    return [Request(i, float(times[i]), int(prompts[i]), int(gens[i])) for i in range(n)]


def run(engine: Engine, w: Workload, max_steps: int = 50_000_000) -> SimResult:
    """Simulate until every request has finished (or was rejected)."""
    reqs = _arrivals(w)
    pending = [(r.arrival, r.id) for r in reqs if math.isfinite(r.arrival)]
    heapq.heapify(pending)
    closed_next = min(w.n_requests, w.concurrency or 0) if not w.rate else w.n_requests
    waiting: deque[Request] = deque()
    running: list[Request] = []
    t, steps, preempt, rejected, free_blocks = 0.0, 0, 0, 0, engine.kv_blocks
    peak_used, timeline = 0.0, []
    finished = 0
    while finished + rejected < w.n_requests:
        while pending and pending[0][0] <= t:
            _, i = heapq.heappop(pending)
            q = reqs[i]
            need = q.prompt + q.gen  # longer than a slot / --max-model-len, or than the whole cache
            if need > engine.slot_ctx or (engine.kind != "llama.cpp" and -(-need // BLOCK_TOKENS) > engine.kv_blocks):
                q.done = math.nan
                rejected += 1
                if not w.rate and closed_next < w.n_requests:  # its client sends the next one
                    reqs[closed_next].arrival = t
                    heapq.heappush(pending, (t, closed_next))
                    closed_next += 1
                continue
            waiting.append(q)
        if not waiting and not running:
            if not pending:
                break
            t = pending[0][0]
            continue
        batch, tokens = _schedule(engine, running, waiting, reqs, t)
        if engine.kind != "llama.cpp":
            free_blocks, n_pre = _allocate(engine, running, waiting, batch, free_blocks, t)
            preempt += n_pre
            batch = [(q, n) for q, n in batch if q.active]
            tokens = sum(n for _, n in batch)
        if not batch:
            if pending:
                t = max(t, pending[0][0])
                continue
            if waiting and not running:
                raise PlannerError("the simulation stalled: a waiting request can never be scheduled")
            continue
        dt = _mixed_step_time(engine, batch, tokens)
        t += dt
        steps += 1
        for q, n in batch:
            if q.prefilled < q.target:
                q.prefilled += n
                if q.prefilled >= q.target:  # the step that ends the prompt also samples a token
                    q.generated += 1
                    q.first_token = q.first_token or t
            else:
                q.generated += 1
                q.decoded += 1
            if q.generated >= q.gen:
                q.done = t
                q.active = False
                running.remove(q)
                free_blocks += q.blocks
                q.blocks = 0
                finished += 1
                if not w.rate and closed_next < w.n_requests:  # the client sends its next request
                    reqs[closed_next].arrival = t
                    heapq.heappush(pending, (t, closed_next))
                    closed_next += 1
        used = 1 - free_blocks / engine.kv_blocks if engine.kv_blocks else len(running) / engine.max_seqs
        peak_used = max(peak_used, used)
        if steps % 16 == 0 or not running:
            timeline.append((t, len(running), len(waiting), used))
        if steps >= max_steps:
            raise PlannerError(f"the simulation passed {max_steps:,} steps; simulate fewer requests")
    return SimResult(reqs, t, steps, preempt, rejected, peak_used, timeline)


def _mixed_step_time(engine: Engine, batch, tokens: int) -> float:
    """One forward of every token of the step over all its sequences at their mean depth, and at
    least what its prompt chunks alone and its decodes alone take (the mean depth understates a
    prompt chunk's own causal attention; adding work never makes a step faster)."""
    t = engine.step_time(tokens, len(batch), sum(q.context for q, _ in batch) / len(batch))
    pre = [(q, n) for q, n in batch if q.prefilled < q.target]
    dec = [q for q, n in batch if q.prefilled >= q.target]
    if pre and dec:
        t = max(t, engine.step_time(sum(n for _, n in pre), len(pre), sum(q.context for q, _ in pre) / len(pre)),
                engine.step_time(len(dec), len(dec), sum(q.context for q in dec) / len(dec)))
    return t


def _schedule(engine: Engine, running: list[Request], waiting: list[Request], reqs, t: float):
    """The requests this step serves and how many tokens each: running first (decodes one token,
    prefills the rest of its prompt in chunks), then waiting requests in arrival order."""
    budget = engine.token_budget
    batch = []
    for q in running:
        if budget <= 0:
            break
        n = 1 if q.prefilled >= q.target else min(q.target - q.prefilled, budget)
        batch.append((q, n))
        budget -= n
    while waiting and budget > 0 and len(running) < engine.max_seqs:
        q = waiting.popleft()
        q.admitted = q.admitted or t
        q.active = True
        running.append(q)
        n = min(q.target - q.prefilled, budget)
        batch.append((q, n))
        budget -= n
    return batch, engine.token_budget - budget


def _allocate(engine: Engine, running, waiting, batch, free_blocks: int, t: float):
    """vLLM: blocks for the tokens scheduled; when they run out, preempt the most recently admitted
    running request (recompute: it rejoins the head of the queue with its KV dropped)."""
    preempted = 0
    for q, n in batch:
        if not q.active:
            continue
        need = -(-(q.context + n) // BLOCK_TOKENS) - q.blocks
        while need > free_blocks:
            victim = max((x for x in running if x is not q), key=lambda x: x.admitted or 0, default=None)
            if victim is None:
                break
            running.remove(victim)
            victim.active = False
            free_blocks += victim.blocks
            victim.blocks = 0
            victim.target = victim.prompt + victim.generated  # recompute the prompt and what it generated
            victim.prefilled = victim.decoded = 0
            victim.preemptions += 1
            waiting.appendleft(victim)
            preempted += 1
        if need <= free_blocks:
            free_blocks -= max(need, 0)
            q.blocks += max(need, 0)
    return free_blocks, preempted


# --- metrics ---------------------------------------------------------------------------------------


def percentiles(x) -> dict[str, float | None]:
    x = np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=float)
    if not len(x):
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99)), "mean": float(x.mean())}


def summary(res: SimResult, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict:
    done = [q for q in res.requests if q.done is not None and math.isfinite(q.done)]
    ttft = [q.first_token - q.arrival for q in done]
    tpot = [(q.done - q.first_token) / (q.gen - 1) if q.gen > 1 else None for q in done]
    e2e = [q.done - q.arrival for q in done]
    queue = [(q.admitted or q.arrival) - q.arrival for q in done]
    ok = [q for q, a, b in zip(done, ttft, tpot)
          if (slo_ttft_s is None or a <= slo_ttft_s) and (slo_tpot_s is None or b is None or b <= slo_tpot_s)]
    span = res.duration_s or 1e-9
    out_tokens = sum(q.gen for q in done)
    return {
        "requests": len(res.requests), "completed": len(done), "rejected": res.rejected,
        "duration_s": res.duration_s, "steps": res.steps, "preemptions": res.preemptions,
        "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot), "e2e_s": percentiles(e2e),
        "queue_s": percentiles(queue),
        "request_throughput_per_s": len(done) / span, "output_tok_s": out_tokens / span,
        "goodput_per_s": len(ok) / span, "slo_attained": len(ok) / len(done) if done else 0.0,
        "kv_peak_fraction": res.kv_peak_fraction,
    }


def find_max_rate(engine_factory, w: Workload, slo_ttft_s, slo_tpot_s, attain: float = 0.9,
                  lo: float = 0.01, hi: float = 64.0, iters: int = 12) -> float:
    """The highest Poisson rate at which `attain` of the requests meet the SLO (bisection on the
    log of the rate; each point simulated with the same seed)."""
    from dataclasses import replace

    def ok(rate):
        s = summary(run(engine_factory(), replace(w, rate=rate, concurrency=None)), slo_ttft_s, slo_tpot_s)
        return s["completed"] and s["slo_attained"] >= attain

    if not ok(lo):
        return 0.0
    while ok(hi) and hi < 1e6:
        lo, hi = hi, hi * 4
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def parse_slo(text: str | None) -> tuple[float | None, float | None]:
    """ttft=2s,tpot=40ms -> (2.0, 0.04)."""
    if not text:
        return None, None
    from planner.units import parse_duration

    got = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        k = k.strip().lower()
        if k not in ("ttft", "tpot") or not v:
            raise PlannerError(f"--slo {text!r}: write ttft=2s,tpot=40ms")
        got[k] = parse_duration(v.strip(), f"--slo {k}")
    return got.get("ttft"), got.get("tpot")
