"""`simulate`: a deployment serving a stream of requests, step by step (docs/simulate.md).

A discrete-time simulation of the engine's scheduler over requests drawn from length
distributions (or a trace) arriving as a Poisson or gamma process, at replayed times, or from
closed-loop clients. Each engine step is priced by the speed model (planner.perf.step) for the
batch the scheduler forms; KV capacity comes from the memory plan. Deterministic for a seed.

Schedulers, as the engines run them:
  * vLLM V1 (vllm/v1/core/sched/scheduler.py, 0.33.0): a token budget per step
    (max_num_batched_tokens) filled by the running requests first (one token per decoding
    request, plus its draft tokens under speculation, then the rest of partially prefilled
    prompts), then by waiting requests in arrival order, prompts chunked to fit (chunked
    prefill); at most max_num_seqs running; KV in blocks of 16 tokens allocated as tokens are
    scheduled; when a block cannot be allocated the most recently admitted running request is
    preempted and recomputed later (its blocks freed). Prefix caching (on by default,
    vllm/config/cache.py:257) serves the full blocks of a prompt's cached prefix without
    computing them, never the whole prompt (vllm/v1/core/kv_cache_manager.py:296-302).
    SGLang: the same loop, its radix cache at a page of 1 token, and its own admission budget (the
    profile's [server].admission_budget): a waiting request joins while its prompt plus its remaining
    output x new_token_ratio fits in the free tokens less the running requests' remaining outputs x
    the same ratio (0.7 decaying to 0.098 over 600 steps; back to the start after a preemption).
  * llama.cpp server (tools/server/server.cpp, b11434): -np slots; a request waits for a free
    slot; every step batches one token per generating slot (plus its drafts) and prompt tokens
    of the slots still prefilling, up to n_batch (-b) tokens; each slot's next token is sampled
    on the CPU, one slot after another (server-context.cpp:4190-4194; the sampler chain runs over
    the whole vocabulary, common/sampling.cpp:134-166). Per-slot KV (`ctx` tokens each, no
    preemption), or with --kv-unified one pool that any slot may fill: when it overflows every
    running request fails with "Context size has been exceeded" (server-context.cpp:4016-4051).
    A slot keeps its last prompt, so a request that shares a prefix with it reuses that KV
    (cache_prompt, on by default).

A mixed step (decodes plus prompt chunks) is priced as one forward of all its tokens over all its
sequences at their mean depth (the weight traffic, GEMM work and attention reads of every sequence
exactly), and at least the time of its prompt chunks alone and of its decodes alone (the mean depth
understates a prompt chunk's own causal attention: docs/simulate.md).
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from planner.errors import PlannerError
from planner.units import MiB as MIB

BLOCK_TOKENS = 16  # vLLM's default KV block (vllm/config/cache.py block_size)
DEPTH_BIN = 64  # step times are cached at depths rounded to this many tokens up to DEPTH_EXACT,
DEPTH_EXACT = 4096  # past it to 1/64 of the depth's octave (a step of 2^(bit_length - DEPTH_REL_BITS))
DEPTH_REL_BITS = 7
GRID_EXACT = 64  # token and sequence counts up to this are priced exactly; above, on a grid of 1/32 per octave


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


def read_trace(path: Path) -> list[tuple]:
    """(prompt, output) tokens per request from a JSONL file: one object per line with
    prompt_tokens / output_tokens (also input_len / output_len, as vllm bench serve datasets
    reduce to), and optionally arrival_s (seconds from the start) to replay the arrival times:
    then every line must have one, and (prompt, output, arrival) is returned."""
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
            a = d.get("arrival_s")
            a = None if a is None else float(a)
        except (ValueError, TypeError, AttributeError):
            raise PlannerError(f"{path}:{n}: expected {{\"prompt_tokens\": N, \"output_tokens\": M}}") from None
        if p < 1 or g < 1:
            raise PlannerError(f"{path}:{n}: token counts must be positive")
        if a is not None and not (math.isfinite(a) and a >= 0):
            raise PlannerError(f"{path}:{n}: arrival_s must be a time in seconds, >= 0")
        out.append((p, g) if a is None else (p, g, a))
    if not out:
        raise PlannerError(f"{path}: no requests")
    if len({len(x) for x in out}) > 1:
        raise PlannerError(f"{path}: give arrival_s on every line or on none")
    return out


@dataclass(frozen=True)
class Workload:
    n_requests: int
    rate: float | None = None  # requests/s (Poisson, or gamma with burstiness); None: closed loop
    concurrency: int | None = None  # closed-loop clients, each sending its next request on completion
    prompt: LengthDist = LengthDist("fixed", 512)
    gen: LengthDist = LengthDist("fixed", 128)
    trace: tuple[tuple, ...] = ()  # (prompt, output) or (prompt, output, arrival_s) per request
    seed: int = 0
    # gamma-distributed gaps of shape `burstiness` and mean 1/rate, as `vllm bench serve
    # --burstiness` draws them (vllm/benchmarks/serve.py:504-508): 1 is Poisson, < 1 burstier
    burstiness: float = 1.0
    prefix: int = 0  # tokens every prompt begins with (a shared system prompt), servable from a prefix cache

    @property
    def replay(self) -> bool:
        return bool(self.trace) and len(self.trace[0]) == 3


# --- the engine ----------------------------------------------------------------------------------


@dataclass
class SpecSim:
    """Speculative decoding inside the simulation: each decoding sequence drafts `gamma` tokens,
    the target verifies gamma + 1 per sequence in the step, and `alpha` is the chance each drafted
    token is accepted (the accepted run stops at the first rejection)."""

    gamma: int
    alpha: float
    extra_fn: object  # (decoding seqs, depth) -> seconds of drafting and state-keeping per step
    draft_prefill_fn: object | None = None  # (prompt tokens, seqs, depth) -> seconds: a separate draft model's prefill
    cache: dict = field(default_factory=dict)

    def extra(self, seqs: int, depth: float) -> float:
        key = (seqs, _depth_bin(depth))
        t = self.cache.get(key)
        if t is None:
            t = self.cache[key] = float(self.extra_fn(seqs, key[1]))
        return t


def _depth_bin(depth: float) -> int:
    """The cached depth of a step (_depth_bins for one value, without numpy: it runs every step)."""
    if depth < DEPTH_EXACT:
        return int(round(depth / DEPTH_BIN)) * DEPTH_BIN
    step = 1 << max(0, int(depth).bit_length() - DEPTH_REL_BITS)
    return int(round(depth / step)) * step


def _depth_bins(depth: np.ndarray) -> np.ndarray:
    """_depth_bin of every element (frexp's exponent is the integer part's bit length)."""
    e = np.frexp(np.maximum(depth, 1.0))[1]
    step = np.where(depth < DEPTH_EXACT, DEPTH_BIN, np.exp2(np.maximum(e - DEPTH_REL_BITS, 0)))
    return (np.round(depth / step) * step).astype(np.int64)


def _grid(x: int) -> tuple[int, int]:
    """The grid points around a token or sequence count: exact to GRID_EXACT, then 32 per octave."""
    if x <= GRID_EXACT:
        return x, x
    step = 1 << max(0, x.bit_length() - 6)
    lo = (x // step) * step
    return lo, lo + step if lo != x else lo


@dataclass
class Engine:
    """What the scheduler needs from the deployment: limits, KV capacity and step times."""

    kind: str  # "vllm", "sglang" or "llama.cpp"
    max_seqs: int
    token_budget: int
    kv_blocks: int  # vLLM/SGLang: KV blocks of block_tokens in all
    slot_ctx: int  # llama.cpp: tokens per slot; vLLM/SGLang: --max-model-len
    step_fn: object  # (tokens, seqs, q, depth) -> seconds
    block_tokens: int = BLOCK_TOKENS
    state_blocks: int = 0  # vLLM/SGLang: blocks a request's recurrent state takes from the pool while it runs
    kv_per_token: bool = True  # False: no attention KV (a pure recurrent model): only the state takes blocks
    unified: bool = False  # llama.cpp --kv-unified: one pool of max_seqs * slot_ctx tokens
    prefix_caching: bool = True
    sample_s_per_seq: float = 0.0  # host time per sequence sampled in a step (llama-server: CPU sampling)
    # llama-server --cache-ram: a slot's old context saved to host RAM when the slot takes a new request
    save_bandwidth: float = 0.0  # bytes/s; 0: no prompt cache
    save_bytes_per_token: float = 0.0  # KV
    save_bytes_fixed: float = 0.0  # recurrent state
    save_limit_tokens: int = 0  # contexts above this are not saved (larger than the whole cache)
    spec: SpecSim | None = None
    budget: object = None  # planner.hardware.AdmissionBudget: SGLang's admission; None: vLLM's whole-prompt gate
    fast_forward: bool = True  # price runs of identical decode steps at once (False: step by step; same result)
    cache: dict = field(default_factory=dict)

    def slot_save_s(self, tokens: int) -> float:
        if not self.save_bandwidth or tokens > self.save_limit_tokens:
            return 0.0
        return (self.save_bytes_fixed + self.save_bytes_per_token * tokens) / self.save_bandwidth

    def _priced(self, tokens: int, seqs: int, depth: int) -> float:
        key = (tokens, seqs, depth)
        t = self.cache.get(key)
        if t is None:
            t = self.cache[key] = float(self.step_fn(tokens, seqs, tokens / seqs, depth))
        return t

    def step_time(self, tokens: int, seqs: int, depth_tokens: float) -> float:
        """Seconds of one forward of `tokens` over `seqs` sequences at a mean depth: priced exactly
        for small counts, else interpolated between the grid points around the token count (the
        step time is piecewise linear in tokens) at the nearest grid point of sequences and depth."""
        d = _depth_bin(depth_tokens)
        s_lo, s_hi = _grid(seqs)
        s = s_lo if seqs - s_lo <= s_hi - seqs else s_hi
        lo, hi = _grid(tokens)
        if lo == hi:
            return self._priced(tokens, min(s, tokens), d)
        a, b = self._priced(lo, min(s, lo), d), self._priced(hi, min(s, hi), d)
        return a + (b - a) * (tokens - lo) / (hi - lo)


LLAMA_SERVER_AUTO_SLOTS = 4  # -np -1 (auto) becomes 4 slots with a unified KV (tools/server/server.cpp:168-171)


def engine_for(catalog, r, cal, prefix_caching: bool | None = None, unified: bool | None = None,
               cache_ram_mib: float | None = None) -> Engine:
    """The scheduler limits and step times of a resolved deployment (with its speculative setup)."""
    from planner.memory import plan_memory
    from planner.perf import step
    from planner.speed import step_model

    sm = step_model(catalog, r, cal)
    ctx = r.ctx_tokens or r.arch.max_position_embeddings
    srv = r.engine.server
    if srv is None:
        raise PlannerError(f"{r.engine.id}: serving under load is not simulated (its scheduler is not modelled); "
                           "simulate takes llama.cpp, vLLM or SGLang")

    def fn(tokens, seqs, q, depth):
        return step(sm, tokens, seqs, q, depth).total

    spec = None
    if r.spec is not None:
        from planner.spec import compile_spec, cycle_times

        m = compile_spec(catalog, r, cal)
        g, a = r.spec.gamma, min(r.spec.alpha, 0.999)

        def extra(seqs, depth):
            draft, _verify, keep = cycle_times(m, seqs, depth, g, a)
            return float(draft + keep)

        def draft_prefill(tokens, seqs, depth):
            return float(step(m.draft, tokens, seqs, tokens / seqs, depth).total)

        # a separate draft model prefills the prompts too
        spec = SpecSim(g, a, extra, draft_prefill if not r.spec.block and r.spec.method != "mtp" else None)
    pc = srv.prefix_caching_default if prefix_caching is None else prefix_caching
    plan = plan_memory(r, ctx)
    kv_now = sum(d.kv_cache_bytes for d in plan.devices)
    if r.engine.family == "llama.cpp":
        sample = srv.sample_per_vocab_entry.si * r.arch.vocab_size if srv.sample_per_vocab_entry else 0.0
        e = Engine("llama.cpp", r.batch, max(r.engine.memory.default_batch_tokens, r.ubatch_tokens), 0, ctx, fn,
                   block_tokens=1, unified=bool(unified), prefix_caching=pc, sample_s_per_seq=sample, spec=spec)
        ram = cache_ram_mib if cache_ram_mib is not None else \
            (srv.prompt_cache_default.si / MIB if srv.prompt_cache_default else 0)
        if ram:
            per_tok = kv_now / max(1, r.batch * ctx)
            state = sum(d.recurrent_state_bytes for d in plan.devices) / max(1, r.batch)
            e.save_bandwidth = srv.prompt_cache_save_bandwidth.si if srv.prompt_cache_save_bandwidth else 0.0
            e.save_bytes_per_token, e.save_bytes_fixed = per_tok, state
            e.save_limit_tokens = int((ram * MIB - state) / per_tok) if ram > 0 else 10**12  # -1: no limit
        return e
    # vLLM / SGLang: what the memory plan leaves under gpu_memory_utilization, in blocks. The KV cache and
    # the recurrent states share it (vLLM V1 allocates both from one pool as requests run, not
    # max_num_seqs states up front)
    state_all = sum(d.recurrent_state_bytes for d in plan.devices)
    free = sum(d.usable_bytes - (d.total_bytes - d.kv_cache_bytes - d.recurrent_state_bytes) for d in plan.devices)
    per_token = kv_now / max(1, r.batch * ctx)
    state = state_all / max(1, r.batch)
    bt = srv.block_tokens
    block_bytes = per_token * bt if per_token else state
    blocks = int(free / block_bytes) if block_bytes else 10**9
    sb = -(-int(state) // max(1, int(block_bytes))) if state else 0
    return Engine(r.engine.family, r.batch, r.ubatch_tokens, max(blocks, 0), ctx, fn, block_tokens=bt,
                  state_blocks=sb, kv_per_token=per_token > 0, prefix_caching=pc, spec=spec, budget=srv.admission_budget)


# --- the simulation ------------------------------------------------------------------------------


@dataclass
class SimResult:
    arrival: np.ndarray
    prompt: np.ndarray
    gen: np.ndarray
    first_token: np.ndarray  # NaN: none
    done: np.ndarray  # NaN: not served (rejected or failed)
    admitted: np.ndarray
    preempted: np.ndarray  # times each request was preempted
    tokens_out: np.ndarray  # output tokens each served request received
    duration_s: float
    steps: int
    preemptions: int
    rejected: int  # refused at arrival: longer than a slot / --max-model-len or than the whole cache
    failed: int  # llama.cpp unified KV: dropped when the pool overflowed
    kv_peak_fraction: float
    # per step (or run of identical decode steps): (end time, requests in it, waiting, KV fraction used, seconds)
    timeline: list[tuple[float, int, int, float, float]]

    @property
    def requests(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(id=i, arrival=float(self.arrival[i]), prompt=int(self.prompt[i]), gen=int(self.gen[i]),
                                first_token=float(self.first_token[i]), done=float(self.done[i]),
                                admitted=float(self.admitted[i]), preemptions=int(self.preempted[i]))
                for i in range(len(self.arrival))]


def _arrivals(w: Workload):
    rng = np.random.default_rng(w.seed)
    n = w.n_requests
    if w.trace:
        pairs = [w.trace[i % len(w.trace)] for i in range(n)]
        prompts = np.array([p[0] for p in pairs], dtype=np.int64)
        gens = np.array([p[1] for p in pairs], dtype=np.int64)
    else:
        prompts, gens = w.prompt.sample(rng, n).astype(np.int64), w.gen.sample(rng, n).astype(np.int64)
    if w.replay:
        times = np.array([p[2] for p in pairs], dtype=float)
    elif w.rate:
        if w.burstiness == 1.0:
            gaps = rng.exponential(1.0 / w.rate, n)
        else:
            gaps = rng.gamma(w.burstiness, 1.0 / (w.rate * w.burstiness), n)
        times = np.cumsum(gaps)
    else:
        times = np.full(n, np.inf)  # closed loop: released as clients finish
        times[: min(n, w.concurrency or 1)] = 0.0
    return times, prompts, gens


class _Running:
    """The running set in admission order (the order the scheduler serves them): one int64 row per
    column of a preallocated matrix, each exposed as a view of its first n entries (in-place updates
    of a column write through)."""

    COLS = ("rid", "tgt", "pf", "gen", "gmax", "dec", "blk", "shr", "slot")

    def __init__(self):
        self.blk_freed = 0
        self.n = 0
        self.M = np.zeros((len(self.COLS), 64), dtype=np.int64)
        self._views()

    def _views(self) -> None:
        for i, c in enumerate(self.COLS):
            setattr(self, c, self.M[i, : self.n])

    def __len__(self):
        return self.n

    def append(self, rows: list[tuple]) -> None:
        k = len(rows)
        if self.n + k > self.M.shape[1]:
            grown = np.zeros((len(self.COLS), max(2 * self.M.shape[1], self.n + k)), dtype=np.int64)
            grown[:, : self.n] = self.M[:, : self.n]
            self.M = grown
        self.M[:, self.n: self.n + k] = np.asarray(rows, dtype=np.int64).T
        self.n += k
        self._views()

    def keep(self, mask: np.ndarray) -> None:
        kept = self.M[:, : self.n][:, mask]
        self.n = kept.shape[1]
        self.M[:, : self.n] = kept
        self._views()


def run(engine: Engine, w: Workload, max_steps: int = 50_000_000) -> SimResult:
    """Simulate until every request has finished (or was rejected or failed)."""
    arrival, prompt, gmax = _arrivals(w)
    n = len(arrival)
    first = np.full(n, np.nan)
    done = np.full(n, np.nan)
    admitted = np.full(n, np.nan)
    preempted = np.zeros(n, dtype=np.int64)
    target = prompt.copy()  # tokens to prefill: the prompt, or prompt + output so far after a recompute
    generated = np.zeros(n, dtype=np.int64)
    pending = [(float(arrival[i]), i) for i in range(n) if math.isfinite(arrival[i])]
    heapq.heapify(pending)
    closed = not w.rate and not w.replay
    closed_next = min(n, w.concurrency or 1) if closed else n
    waiting: deque[int] = deque()
    R = _Running()
    llama = engine.kind == "llama.cpp"
    B = engine.block_tokens
    pool = engine.max_seqs * engine.slot_ctx if llama else 0
    limit = pool if (llama and engine.unified) else engine.slot_ctx
    free = engine.kv_blocks
    spec = engine.spec
    g_extra = spec.gamma if spec else 0
    acc_rng = np.random.default_rng(w.seed + 7919)
    # prefix caching: vLLM/SGLang serve the cached prefix's full blocks to every later request once one
    # request has computed them (kept resident); a llama-server slot reuses its own last prompt
    prefix = w.prefix if engine.prefix_caching else 0
    pblocks = prefix // B if not llama else 0
    prefix_ready = False
    # llama-server slots: when a slot last finished, the tokens it still holds, whether they begin with the prefix
    slot_last = np.full(engine.max_seqs if llama else 0, -1.0)
    slot_tokens = np.zeros(engine.max_seqs if llama else 0, dtype=np.int64)
    slot_busy = np.zeros(engine.max_seqs if llama else 0, dtype=bool)
    t, steps, n_pre, rejected, failed, finished = 0.0, 0, 0, 0, 0, 0
    peak, timeline = 0.0, []
    sgl = engine.budget is not None and not llama
    if sgl:
        ab = engine.budget
        ratio_init, ratio_min, clip = ab.ratio_init, ab.ratio_init * ab.ratio_min_factor, ab.clip_new_tokens
        decay = (ratio_init - ratio_min) / ab.decay_steps
        ratio = ratio_init

    def release_next(at: float) -> None:
        nonlocal closed_next
        if closed and closed_next < n:
            arrival[closed_next] = at
            heapq.heappush(pending, (at, closed_next))
            closed_next += 1

    def admit_llama(i: int) -> tuple[int, int, float]:
        """llama-server's slot choice for request i (server-context.cpp:1690-1790): an idle slot whose
        cached tokens share more than 10% of the prompt (the shared prefix), else the least recently
        used idle slot. Returns (slot, tokens reused, seconds spent saving the slot's old context to
        the host prompt cache, which happens when it was picked by LRU, or keeps under half of it)."""
        idle = np.flatnonzero(~slot_busy)
        cap = min(prefix, int(target[i]) - 1) if prefix else 0
        warm = idle[slot_tokens[idle] > 0] if cap and cap > 0.1 * int(target[i]) else idle[:0]
        if len(warm):
            sl, hit = int(warm[0]), cap
            save = cap / slot_tokens[sl] < 0.5
        else:
            sl, hit = int(idle[np.argmin(slot_last[idle])]), 0
            save = True
        old = int(slot_tokens[sl])
        slot_busy[sl] = True
        cost = engine.slot_save_s(old) if save and old else 0.0
        return sl, hit, cost

    def hit_for(i: int) -> tuple[int, int]:
        """vLLM/SGLang: (tokens served from the prefix cache, shared blocks) for request i."""
        if not prefix or not prefix_ready:
            return 0, 0
        cap = min(prefix, int(target[i]) - 1)
        hb = min(pblocks, cap // B)
        return hb * B, hb

    while finished + rejected + failed < n:
        while pending and pending[0][0] <= t:
            _, i = heapq.heappop(pending)
            need = int(prompt[i] + gmax[i])
            if need > limit or (not llama and _blocks(engine, need) > engine.kv_blocks):
                rejected += 1
                release_next(t)
                continue
            waiting.append(i)
        if not waiting and not len(R):
            if not pending:
                break
            t = pending[0][0]
            continue
        # --- schedule: running requests first, in admission order, then waiting ones
        budget = engine.token_budget
        decoding = R.pf >= R.tgt
        want = np.where(decoding, 1 + g_extra, R.tgt - R.pf)
        cum = np.cumsum(want)
        take = np.minimum(np.maximum(budget - (cum - want), 0), want)
        ctx = R.pf + R.dec
        preempted_now = 0
        if not llama and len(R):
            # vLLM/SGLang: blocks for the running requests' tokens, preempting the newest when they run out
            need = np.maximum(_blocks(engine, ctx + take) - R.blk - R.shr, 0)
            total = int(need.sum())
            if total <= free:
                R.blk += need
                free -= total
            else:
                free, take, preempted_now = _allocate_preempting(engine, R, take, ctx, free, prompt, target, generated,
                                                                 preempted, waiting)
                n_pre += preempted_now
                decoding = R.pf >= R.tgt
                ctx = R.pf + R.dec
        left = budget - int(take.sum())
        new, stall = [], 0.0
        if sgl:
            # SGLang's admission budget (mem_cache/prefill_budget.py:99-170): the free tokens less what the
            # running requests may still decode (remaining output, at most 4,096, x new_token_ratio)
            if preempted_now:
                ratio = ratio_init
            sgl_room = free * B - float((np.minimum(R.gmax - R.gen, clip) * ratio).sum())
        # waiting requests: none in a step that preempted (scheduler.py:1050); vLLM admits one only if the
        # free blocks hold its whole prompt (full_sequence_must_fit, kv_cache_manager.py:531-548), and stops
        # at the first that does not fit (scheduler.py:1455-1461)
        while waiting and left > 0 and len(R) + len(new) < engine.max_seqs and not preempted_now:
            i = waiting[0]
            if llama:
                sl, hit, cost = admit_llama(i)
                shr, stall, blk = 0, stall + cost, 0
                k = min(int(target[i]) - hit, left)
            else:
                (hit, shr), sl = hit_for(i), -1
                if sgl:
                    need_tokens = (int(target[i]) - hit) + min(int(gmax[i] - generated[i]), clip) * ratio
                    if not need_tokens < sgl_room:
                        break
                    sgl_room -= need_tokens + B
                elif _blocks(engine, int(target[i])) - shr > free:
                    break
                k = min(int(target[i]) - hit, left)
                blk = int(_blocks(engine, hit + k)) - shr
                free -= blk
            waiting.popleft()
            if math.isnan(admitted[i]):
                admitted[i] = t
            left -= k
            new.append((i, int(target[i]), hit, int(generated[i]), int(gmax[i]), 0, blk, shr, sl, k))
        if new:
            R.append([row[:9] for row in new])
            decoding = np.concatenate([decoding, np.zeros(len(new), dtype=bool)])
            take = np.concatenate([take, np.array([row[9] for row in new], dtype=np.int64)])
            ctx = R.pf + R.dec
        if llama and engine.unified and int((ctx + take).sum()) > pool:
            # the pool overflowed: every running request gets "Context size has been exceeded"
            for i in R.rid:
                failed += 1
                release_next(t)
            slot_busy[R.slot] = False
            slot_tokens[R.slot] = 0  # the server clears every processing slot's prompt
            R.keep(np.zeros(len(R), dtype=bool))
            continue
        batch = take > 0
        if not batch.any():
            if pending:
                t = max(t, pending[0][0])
                continue
            if waiting and not len(R):
                raise PlannerError("the simulation stalled: a waiting request can never be scheduled")
            continue
        # --- price the step (the prompt chunks are few: index them, and take the decodes' sums by difference)
        tokens = int(take.sum())
        seqs = int(np.count_nonzero(batch))
        allin = seqs == len(R)
        csum = float(ctx.sum()) if allin else float(ctx[batch].sum())
        pidx = np.flatnonzero(batch & ~decoding)
        npf = len(pidx)
        nd = seqs - npf
        dt = engine.step_time(tokens, seqs, csum / seqs)
        if nd and npf:
            ptok, pctx = int(take[pidx].sum()), float(ctx[pidx].sum())
            dt = max(dt, engine.step_time(ptok, npf, pctx / npf),
                     engine.step_time(tokens - ptok, nd, (csum - pctx) / nd))
        dt += stall  # llama-server saved slots to its prompt cache before the batch (blocking)
        comp = pidx[R.pf[pidx] + take[pidx] >= R.tgt[pidx]] if npf else pidx
        if engine.fast_forward and spec is None and nd == len(R) and not new and (not waiting or len(R) >= engine.max_seqs):
            # a decode-only batch of every running request repeats unchanged until one finishes, an
            # arrival could join, or the cache runs short: price that run of steps at once
            k = _steady_steps(engine, R, ctx, free, pool, pending, t)
            if k > 1:
                times = _decode_run_times(engine, len(R), float(ctx.mean()), k)
                t += float(times.sum())
                steps += k
                if sgl:
                    ratio = max(ratio - k * decay, ratio_min)
                if not llama:
                    need = np.maximum(_blocks(engine, ctx + k) - R.blk - R.shr, 0)
                    R.blk += need
                    free -= int(need.sum())
                R.gen += k
                R.dec += k
                fin = R.gen >= R.gmax
                n_run, span = len(R), float(times.sum())
                used = float((R.pf + R.dec).sum()) / pool if llama else (1 - free / engine.kv_blocks if engine.kv_blocks else 0.0)
                finished += _finish(R, fin, t, done, generated, release_next, slot_busy, slot_last, slot_tokens)
                free += R.blk_freed
                peak = max(peak, used)
                timeline.append((t, n_run, len(waiting), used, span))
                continue
        # emitted tokens per decoding sequence: 1, or 1 + the accepted drafts under speculation
        dmask = batch & decoding
        emit = dmask.astype(np.int64)
        if spec is not None:
            if nd:
                dt += spec.extra(nd, float(ctx[dmask].mean()))
                acc = np.minimum(acc_rng.geometric(1 - spec.alpha, nd) - 1, spec.gamma)
                emit[dmask] += acc
                emit = np.minimum(emit, R.gmax - R.gen)
            if spec.draft_prefill_fn is not None and npf:
                dt += spec.draft_prefill_fn(int(take[pidx].sum()), npf, float(ctx[pidx].mean()))
        if engine.sample_s_per_seq:
            dt += engine.sample_s_per_seq * (int(emit.sum()) + len(comp))
        t += dt
        steps += 1
        if sgl:
            ratio = max(ratio - decay, ratio_min)
        # --- advance
        if npf:
            R.pf[pidx] += take[pidx]
        R.gen += emit
        R.dec += emit
        if len(comp):
            R.gen[comp] += 1  # the step that ends a prompt also samples its first token
            ids = R.rid[comp]
            first[ids[np.isnan(first[ids])]] = t
        if prefix and not llama and not prefix_ready and pblocks:
            owner = np.flatnonzero(R.pf >= pblocks * B)
            if len(owner):  # its prefix blocks become the cache's (shared, resident)
                o = owner[0]
                prefix_ready = True
                R.blk[o] -= pblocks - R.shr[o]
                R.shr[o] = pblocks
        if llama:
            used = float((R.pf + R.dec).sum()) / pool if pool else 0.0
        else:
            used = 1 - free / engine.kv_blocks if engine.kv_blocks else 0.0
        peak = max(peak, used)
        timeline.append((t, len(R), len(waiting), used, dt))  # the step's own running set and how long it took
        finished += _finish(R, R.gen >= R.gmax, t, done, generated, release_next, slot_busy, slot_last, slot_tokens)
        free += R.blk_freed
        if steps >= max_steps:
            raise PlannerError(f"the simulation passed {max_steps:,} steps; simulate fewer requests")
    if len(timeline) > 4000:  # keep the plot's worth: every k-th step, and the last
        k = -(-len(timeline) // 4000)
        timeline = timeline[::k] + [timeline[-1]]
    return SimResult(arrival, prompt, gmax, first, done, admitted, preempted, generated, t, steps, n_pre, rejected,
                     failed, peak, timeline)


def _blocks(engine: Engine, tokens):
    """Blocks a request holding `tokens` of context needs: its KV blocks and its recurrent state's."""
    kv = -(-tokens // engine.block_tokens) if engine.kv_per_token else 0 * tokens
    return kv + engine.state_blocks


def _finish(R: _Running, fin: np.ndarray, t: float, done, generated, release_next, slot_busy, slot_last,
            slot_tokens) -> int:
    """Retire the running requests in `fin` at time t; R.blk_freed says how many blocks they held.
    A llama-server slot keeps the finished request's tokens (its prompt and all but the last output)."""
    R.blk_freed = 0
    if not fin.any():
        return 0
    ids = R.rid[fin]
    if len(slot_busy):
        sl = R.slot[fin]
        slot_busy[sl] = False
        slot_last[sl] = t
        slot_tokens[sl] = R.pf[fin] + R.dec[fin]
    done[ids] = t
    generated[ids] = R.gen[fin]
    R.blk_freed = int(R.blk[fin].sum())
    R.keep(~fin)
    for _ in ids:
        release_next(t)
    return len(ids)


def _steady_steps(engine: Engine, R: _Running, ctx, free: int, pool: int, pending, t: float) -> int:
    """How many identical decode steps can run before the schedule could change: until the first
    request finishes, while the cache holds the new tokens (vLLM blocks; llama.cpp's unified pool)."""
    k = int((R.gmax - R.gen).min())
    if k <= 1:
        return k
    if engine.kind != "llama.cpp":
        def fits(j):
            return int(np.maximum(_blocks(engine, ctx + j) - R.blk - R.shr, 0).sum()) <= free
        if not fits(k):
            lo, hi = 1, k  # fits(lo), not fits(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            k = lo
    elif engine.unified:
        k = min(k, max(1, (pool - int(ctx.sum())) // len(R)))
    if pending and len(R) < engine.max_seqs and k > 1:  # stop at the step that ends past the next arrival
        times = _decode_run_times(engine, len(R), float(ctx.mean()), k)
        k = min(k, int(np.searchsorted(np.cumsum(times), pending[0][0] - t)) + 1)
    return k


def _decode_run_times(engine: Engine, seqs: int, depth0: float, k: int) -> np.ndarray:
    """Step times of k decode steps of `seqs` sequences from mean depth depth0 (one token deeper each)."""
    uniq, inv = np.unique(_depth_bins(depth0 + np.arange(k)), return_inverse=True)
    per = np.array([engine.step_time(seqs, seqs, float(b)) for b in uniq])[inv]
    return per + engine.sample_s_per_seq * seqs


def _allocate_preempting(engine: Engine, R: _Running, take, ctx, free, prompt, target, generated, preempted, waiting):
    """vLLM: blocks for the tokens scheduled, in order; when they run out, preempt the most recently
    admitted running request (recompute: it rejoins the head of the queue with its KV dropped)."""
    alive = np.ones(len(R), dtype=bool)
    n_pre = 0
    for j in range(len(R)):
        if not alive[j]:
            continue
        need = max(int(_blocks(engine, int(ctx[j]) + int(take[j]))) - int(R.blk[j]) - int(R.shr[j]), 0)
        while need > free:
            victims = [v for v in range(len(R) - 1, -1, -1) if alive[v] and v != j]
            if not victims:
                break
            v = victims[0]
            alive[v] = False
            free += int(R.blk[v])
            i = int(R.rid[v])
            generated[i] = int(R.gen[v])
            target[i] = int(prompt[i] + R.gen[v])  # recompute the prompt and what it generated
            preempted[i] += 1
            waiting.appendleft(i)
            n_pre += 1
        if need <= free:
            free -= need
            R.blk[j] += need
        else:
            take[j] = 0
    R.keep(alive)
    return free, take[alive], n_pre


# --- metrics ---------------------------------------------------------------------------------------


def percentiles(x) -> dict[str, float | None]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(x.mean())}


def request_metrics(res: SimResult) -> dict[str, np.ndarray]:
    """Per served request: ttft, tpot (NaN for one-token outputs), e2e, queue (seconds)."""
    ok = np.isfinite(res.done)
    a, f, d, g = res.arrival[ok], res.first_token[ok], res.done[ok], res.gen[ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(g > 1, (d - f) / (g - 1), np.nan)
    adm = np.where(np.isnan(res.admitted[ok]), a, res.admitted[ok])
    return {"ttft": f - a, "tpot": tpot, "e2e": d - a, "queue": adm - a, "gen": g}


def summary(res: SimResult, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict:
    m = request_metrics(res)
    ok = np.ones(len(m["ttft"]), dtype=bool)
    if slo_ttft_s is not None:
        ok &= m["ttft"] <= slo_ttft_s
    if slo_tpot_s is not None:
        ok &= ~(m["tpot"] > slo_tpot_s)  # NaN (one-token outputs) passes
    span = res.duration_s or 1e-9
    done = len(m["ttft"])
    return {
        "requests": len(res.arrival), "completed": done, "rejected": res.rejected, "failed": res.failed,
        "duration_s": res.duration_s, "steps": res.steps, "preemptions": res.preemptions,
        "ttft_s": percentiles(m["ttft"]), "tpot_s": percentiles(m["tpot"]), "e2e_s": percentiles(m["e2e"]),
        "queue_s": percentiles(m["queue"]),
        "request_throughput_per_s": done / span, "output_tok_s": float(m["gen"].sum()) / span,
        "goodput_per_s": int(ok.sum()) / span, "slo_attained": float(ok.mean()) if done else 0.0,
        "kv_peak_fraction": res.kv_peak_fraction,
    }


def find_max_rate(engine_factory, w: Workload, slo_ttft_s, slo_tpot_s, attain: float = 0.9,
                  lo: float = 0.01, hi: float = 64.0, iters: int = 12) -> float:
    """The highest arrival rate at which `attain` of the requests meet the SLO (bisection on the
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
