"""`planner tune`: the server settings that serve a workload best under a latency target
(docs/simulate.md#tune).

Every candidate is a deployment `planner simulate` runs: the settings a user controls on that
engine (weight quant, KV type, concurrency limit, token budget per step, split mode, llama-server's
unified KV and prompt cache, the speculative draft length, prefix caching where the workload shares
a prefix). Each candidate that fits in memory is scored by simulation with the same seed:

  * with an arrival rate (or closed-loop clients): goodput, the requests per second that meet the
    SLO; ties by the median end-to-end latency;
  * without one: the highest Poisson rate at which 90% of requests meet the SLO (bisection).

The search is coordinate descent: starting from the engine's defaults, each knob in turn is set to
its best value with the others held, and the knobs are swept again until a pass changes nothing
(at most `passes`). Every candidate scored is kept, so the output ranks them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from planner import simulate as sim
from planner.errors import PlannerError


@dataclass(frozen=True)
class Knob:
    name: str  # Deployment field or server setting
    flag: str  # the engine's own flag, for the output
    values: tuple


@dataclass
class Candidate:
    settings: dict
    score: float  # goodput (req/s) or the highest rate meeting the SLO (req/s)
    tie: float  # median end-to-end latency (s), lower is better
    summary: dict | None
    error: str | None = None


@dataclass
class TuneResult:
    objective: str  # "goodput" or "max_rate"
    knobs: list[Knob]
    best: Candidate
    tried: list[Candidate] = field(default_factory=list)


def knobs_for(catalog, r, quants: tuple | None, kvs: tuple | None, spec: bool, prefix: bool, fixed: set[str]) -> list[Knob]:
    """The settings searched on this engine, each with its values (the user's own choices are fixed)."""
    from planner.compare import _ladder, weight_format

    eng = r.engine
    qs, ks = _ladder(catalog, eng, weight_format(eng), quants, kvs)
    out = []
    if "quant" not in fixed:
        out.append(Knob("quant", "--quant" if eng.family != "llama.cpp" else "GGUF", tuple(dict.fromkeys(qs))))
    if "kv_quant" not in fixed:
        out.append(Knob("kv_quant", "-ctk/-ctv" if eng.family == "llama.cpp" else "--kv-cache-dtype", tuple(dict.fromkeys(ks))))
    if eng.family == "llama.cpp":
        if "batch" not in fixed:
            out.append(Knob("batch", "-np", (1, 2, 4, 8, 16, 32)))
        if "ubatch_tokens" not in fixed:
            out.append(Knob("ubatch_tokens", "-ub", (512, 1024, 2048)))
        if "kv_unified" not in fixed:
            out.append(Knob("kv_unified", "-kvu", (False, True)))
        pc = eng.server.prompt_cache_default if eng.server else None
        if "cache_ram" not in fixed and pc:  # the server's default prompt cache, or none
            out.append(Knob("cache_ram", "--cache-ram", (int(pc.value), 0)))
    else:
        if "batch" not in fixed:
            out.append(Knob("batch", "--max-num-seqs" if eng.family == "vllm" else "--max-running-requests",
                            (16, 32, 64, 128, 256, 512)))
        if "ubatch_tokens" not in fixed:
            out.append(Knob("ubatch_tokens", "--max-num-batched-tokens" if eng.family == "vllm" else "--chunked-prefill-size",
                            (1024, 2048, 4096, 8192, 16384)))
    if len(r.gpus) > 1 and "split" not in fixed and len(eng.split_modes) > 1:
        out.append(Knob("split", "--split-mode" if eng.family == "llama.cpp" else "TP/PP", tuple(eng.split_modes)))
    if spec and "draft_len" not in fixed:
        out.append(Knob("draft_len", "--draft-max" if eng.family == "llama.cpp" else "num_speculative_tokens", (1, 2, 3, 4, 6, 8, 12, 16)))
    if prefix and "prefix_caching" not in fixed:
        out.append(Knob("prefix_caching", "prefix caching", (True, False)))
    return [k for k in out if len(k.values) > 1]


SERVER_KEYS = ("kv_unified", "cache_ram", "prefix_caching")


def tune(catalog, make, cal_for, workload: sim.Workload, slo: tuple, knobs: list[Knob], start: dict,
         passes: int = 2, progress=None) -> TuneResult:
    """Coordinate descent over `knobs` from the settings `start` (see the module docstring).
    `make(fields)` resolves the user's deployment with some Deployment fields changed; `cal_for(r)`
    gives a resolved deployment's calibration."""
    from planner.memory import plan_memory

    ttft, tpot = slo
    objective = "goodput" if (workload.rate or workload.concurrency or workload.replay) else "max_rate"
    seen: dict[tuple, Candidate] = {}

    def evaluate(settings: dict) -> Candidate:
        key = tuple(sorted(settings.items()))
        if key in seen:
            return seen[key]
        dep_fields = {k: v for k, v in settings.items() if k not in SERVER_KEYS}
        try:
            r = make(dep_fields)
            llama = r.engine.family == "llama.cpp"
            if llama and not plan_memory(r, r.ctx_tokens).fits:  # -np slots of --ctx tokens each
                raise PlannerError("the slots' KV cache does not fit in GPU memory")

            def factory():
                return sim.engine_for(catalog, r, cal_for(r), prefix_caching=settings.get("prefix_caching"),
                                      unified=settings.get("kv_unified", False) if llama else None,
                                      cache_ram_mib=settings.get("cache_ram") if llama else None)

            e = factory()
            if not llama and e.kv_blocks * e.block_tokens < r.ctx_tokens:
                raise PlannerError("the KV cache left after the weights holds fewer tokens than --max-model-len "
                                   "(the engine refuses to start)")

            if objective == "goodput":
                s = sim.summary(sim.run(factory(), workload), ttft, tpot)
                c = Candidate(settings, s["goodput_per_s"], s["e2e_s"]["p50"] or float("inf"), s)
            else:
                best = sim.find_max_rate(factory, replace(workload, rate=1.0, concurrency=None), ttft, tpot, iters=10)
                s = sim.summary(sim.run(factory(), replace(workload, rate=best or 0.01, concurrency=None)), ttft, tpot)
                c = Candidate(settings, best, s["e2e_s"]["p50"] or float("inf"), s)
        except PlannerError as e:
            c = Candidate(settings, -1.0, float("inf"), None, str(e))
        seen[key] = c
        if progress:
            progress(c)
        return c

    def better(a: Candidate, b: Candidate) -> bool:
        return (a.score, -a.tie) > (b.score, -b.tie)

    current = evaluate(dict(start))
    for _ in range(passes):
        changed = False
        for k in knobs:
            for v in k.values:
                if v == current.settings.get(k.name):
                    continue
                c = evaluate(dict(current.settings, **{k.name: v}))
                if better(c, current):
                    current, changed = c, True
        if not changed:
            break
    tried = sorted(seen.values(), key=lambda c: (c.score, -c.tie), reverse=True)
    if current.score < 0:
        raise PlannerError("no setting tried fits and serves the workload: " + (tried[0].error or ""))
    return TuneResult(objective, knobs, current, tried)
