"""Measured serving runs against `planner simulate` (docs/simulate.md#validation).

A serving run is one load of a real server (bench/serve_load.py against llama-server on the
project's H200, bench/serve_device.sh): a JSONL file whose first line holds the conditions and
each further line one request as the client saw it (sent, first token, last token, tokens). Each
run is simulated with the same deployment, the same request lengths and the same arrivals (the
measured send times replayed for open-loop runs; the same number of closed-loop clients for
closed-loop runs), and the latency percentiles and throughput are compared.

The one serving parameter the speed model lacks, llama-server's CPU time to sample one sequence's
next token (proportional to the vocabulary: the sampler chain runs over every entry), is fitted
here on the runs marked `fit` in ROLES and stored in the engine profiles
(`[server].sample_per_vocab_entry`); every other run is held out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from planner import simulate as sim
from planner.errors import PlannerError

# closed-loop runs of llama-3.1-8b at 8 and 32 clients: steady decode batches, where the per-slot sampling
# time shows most plainly; the other 10 runs (Poisson arrivals, other models and vocabularies) are held out
ROLES = {"l8-np32.1": "fit", "l8-np32.2": "fit"}
METRICS = ("ttft_p50", "ttft_p90", "tpot_p50", "e2e_p50", "req_s")
METRIC_LABELS = {"ttft_p50": "TTFT p50", "ttft_p90": "TTFT p90", "tpot_p50": "TPOT p50", "e2e_p50": "e2e p50",
                 "req_s": "throughput (req/s)"}


@dataclass
class ServingRun:
    name: str
    meta: dict
    sent: np.ndarray  # seconds from the first request sent
    prompt: np.ndarray
    gen: np.ndarray
    first: np.ndarray
    done: np.ndarray

    @property
    def role(self) -> str:
        return ROLES.get(self.name, "holdout")

    @property
    def arrivals(self) -> str:
        m = self.meta
        return f"Poisson {m['rate']:g}/s" if m.get("rate") else f"{m['concurrency']} clients"


def load_runs(raw_dir: Path) -> list[ServingRun]:
    runs = []
    for f in sorted(Path(raw_dir).glob("*.jsonl")):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if not lines or "run" not in lines[0]:
            raise PlannerError(f"{f}: the first line must hold the run's conditions ({{\"run\": {{...}}}})")
        meta, recs = lines[0]["run"], [r for r in lines[1:] if "first_token_s" in r and "error" not in r]
        if len(recs) < len(lines) - 1:
            raise PlannerError(f"{f}: {len(lines) - 1 - len(recs)} requests failed; a run with failures is not scored")
        recs.sort(key=lambda r: r["sent_s"])
        t0 = recs[0]["sent_s"]
        a = lambda k: np.array([r[k] for r in recs], dtype=float)  # noqa: E731
        runs.append(ServingRun(f.stem, meta, a("sent_s") - t0, a("prompt_tokens").astype(int),
                               np.array([r["chunks"] for r in recs]), a("first_token_s") - t0, a("done_s") - t0))
    return runs


def metrics(sent, first, done, gen) -> dict[str, float]:
    ttft, e2e = first - sent, done - sent
    tpot = (done - first)[gen > 1] / (gen[gen > 1] - 1)
    return {"ttft_p50": float(np.percentile(ttft, 50)), "ttft_p90": float(np.percentile(ttft, 90)),
            "tpot_p50": float(np.percentile(tpot, 50)), "e2e_p50": float(np.percentile(e2e, 50)),
            "req_s": len(sent) / float(done.max() - sent.min())}


def measured(run: ServingRun) -> dict[str, float]:
    return metrics(run.sent, run.first, run.done, run.gen)


def engine_of(catalog, run: ServingRun, calibration: str | None = None):
    """The simulated server of a run: its deployment resolved as `planner simulate` would."""
    from planner.deployment import Deployment, resolve

    m = run.meta
    dep = Deployment(model=m["model"], gpus=(m["gpu"],), engine=m["engine"], quant=m["quant"], kv_quant=m["kv"],
                     ctx_tokens=int(m["ctx_per_slot"]), batch=int(m["slots"]), ubatch_tokens=int(m["n_ubatch"]),
                     flash_attention=True)
    r = resolve(catalog, dep)
    return sim.engine_for(catalog, r, catalog.calibration(calibration, r.engine.id, r.gpus[0].id)), r


def simulated(engine, run: ServingRun) -> dict[str, float]:
    m = run.meta
    if m.get("rate"):
        trace = tuple((int(p), int(g), float(a)) for p, g, a in zip(run.prompt, run.gen, run.sent))
        w = sim.Workload(n_requests=len(trace), trace=trace)
    else:
        trace = tuple((int(p), int(g)) for p, g in zip(run.prompt, run.gen))
        w = sim.Workload(n_requests=len(trace), concurrency=int(m["concurrency"]), trace=trace)
    res = sim.run(engine, w)
    if res.rejected or res.failed:
        raise PlannerError(f"{run.name}: the simulation refused {res.rejected + res.failed} requests the server served")
    ok = np.isfinite(res.done)
    return metrics(res.arrival[ok], res.first_token[ok], res.done[ok], res.gen[ok])


@dataclass
class Scored:
    run: ServingRun
    measured: dict
    predicted: dict

    def error(self, k: str) -> float:
        return self.predicted[k] / self.measured[k] - 1


def _with(e, r, params: dict | None):
    """The engine with the server parameters of a fit candidate: sample_ns (per vocabulary entry)
    and save_GBps (prompt-cache copy rate)."""
    if not params:
        return e
    e = replace(e, cache={})
    if "sample_ns" in params:
        e.sample_s_per_seq = params["sample_ns"] * 1e-9 * r.arch.vocab_size
    if "save_GBps" in params and e.save_limit_tokens:
        e.save_bandwidth = params["save_GBps"] * 1e9
    return e


def score(catalog, runs: list[ServingRun], params: dict | None = None, calibration: str | None = None) -> list[Scored]:
    """Each run simulated (with `params` overriding the profile's server parameters: the fit)."""
    out = []
    for run in runs:
        e, r = engine_of(catalog, run, calibration)
        out.append(Scored(run, measured(run), simulated(_with(e, r, params), run)))
    return out


FIT_METRICS = ("ttft_p50", "tpot_p50", "req_s")


def fit_server(catalog, runs: list[ServingRun]) -> dict:
    """llama-server's sampling time per vocabulary entry (ns) and prompt-cache save rate (GB/s) that
    minimize the squared log error of median TTFT, median TPOT and throughput over the fit runs
    (Nelder-Mead on the logs of the two, from 10 ns and 5 GB/s)."""
    from scipy.optimize import minimize

    fit = [r for r in runs if r.role == "fit"]
    if not fit:
        raise PlannerError("no serving runs are marked for the fit")
    engines = [engine_of(catalog, r) for r in fit]
    meas = [measured(r) for r in fit]

    def loss(x):
        p = {"sample_ns": math.exp(x[0]), "save_GBps": math.exp(x[1])}
        s = 0.0
        for (e, r), run, m in zip(engines, fit, meas):
            got = simulated(_with(e, r, p), run)
            s += sum(math.log(got[k] / m[k]) ** 2 for k in FIT_METRICS)
        return s

    res = minimize(loss, [math.log(10.0), math.log(5.0)], method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400})
    return {"sample_ns": math.exp(res.x[0]), "save_GBps": math.exp(res.x[1]), "loss": float(res.fun),
            "runs": [r.name for r in fit]}


def fit_note() -> str:
    """The fitted values as the engine profile holds them."""
    from planner.catalog import Catalog

    srv = Catalog().engine("llama.cpp-cuda").server
    return (f"{srv.sample_per_vocab_entry.value:g} ns per entry and {srv.prompt_cache_save_bandwidth.value:g} GB/s, "
            "stored in `hwdb/engines/llama.cpp-*.toml` `[server]`")


def default_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (Path(root) / "hwdb" / "runs").glob("serving-*.raw") if p.is_dir())


def summary(scored: list[Scored]) -> list[dict]:
    rows = []
    for role in ("fit", "holdout"):
        sel = [s for s in scored if s.run.role == role]
        if not sel:
            continue
        for k in METRICS:
            e = np.abs([s.error(k) for s in sel])
            rows.append({"role": role, "metric": k, "n": len(sel), "median_abs_error": float(np.median(e)),
                         "p90_abs_error": float(np.percentile(e, 90)), "max_abs_error": float(e.max())})
    return rows


def _fmt(k: str, v: float) -> str:
    if k == "req_s":
        return f"{v:.2f}"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def lines(scored: list[Scored], markdown: bool) -> list[str]:
    """The per-run table (measured / simulated per metric) and the error summary."""
    head = ["run", "role", "model", "slots", "prompt/gen", "arrivals", "n"] + [METRIC_LABELS[k] for k in METRICS]
    rows = []
    for s in scored:
        m = s.run.meta
        rows.append([s.run.name, s.run.role, f"{m['model']} {m['quant']}", str(m["slots"]), f"{m['prompt']}/{m['gen']}",
                     s.run.arrivals, str(len(s.run.sent))] +
                    [f"{_fmt(k, s.measured[k])} / {_fmt(k, s.predicted[k])} ({s.error(k):+.0%})" for k in METRICS])
    summ = summary(scored)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += ["", "| metric | runs | n | median \\|error\\| | p90 \\|error\\| | max \\|error\\| |", "|---|---|---:|---:|---:|---:|"]
        out += [f"| {METRIC_LABELS[x['metric']]} | {x['role']} | {x['n']} | {x['median_abs_error']:.1%} | "
                f"{x['p90_abs_error']:.1%} | {x['max_abs_error']:.0%} |" for x in summ]
        return out
    out = [f"{r[0]:<12} {r[1]:<8} {r[2]:<24} np {r[3]:>3}  {r[4]:>9}  {r[5]:<14}" for r in rows]
    out = []
    for r in rows:
        out.append(f"{r[0]} ({r[1]}): {r[2]}, {r[3]} slots, prompt/gen {r[4]}, {r[5]}, {r[6]} requests")
        out.append("   " + "; ".join(f"{h} {v}" for h, v in zip(head[7:], r[7:])))
    out += [f"{x['role']:<8} {METRIC_LABELS[x['metric']]:<20} median |error| {x['median_abs_error']:6.1%}  "
            f"p90 {x['p90_abs_error']:6.1%}  max {x['max_abs_error']:5.0%}  ({x['n']} runs)" for x in summ]
    return out
