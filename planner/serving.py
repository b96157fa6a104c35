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
from planner.units import GB, MS, NS

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


@dataclass
class PublishedRun:
    """A published serving benchmark: its conditions and the aggregate metrics it printed (no per-request data)."""

    name: str
    meta: dict
    measured: dict

    @property
    def role(self) -> str:
        return "holdout"

    @property
    def arrivals(self) -> str:
        m = self.meta
        if m["rate"] == "inf":
            return "all at once"
        return f"Poisson {float(m['rate']):g}/s" if m["rate"] else f"{m['concurrency']} clients"

    @property
    def n(self) -> int:
        return int(self.meta["requests"])


def load_published(path: Path) -> list[PublishedRun]:
    """hwdb/runs/serving-published.csv: one published `vllm bench serve` run per row."""
    import csv

    lines = [x for x in Path(path).read_text().splitlines() if not x.startswith("#")]
    out = []
    for row in csv.DictReader(lines):
        ms = lambda k: float(row[k]) * MS  # noqa: E731
        out.append(PublishedRun(row["run"], dict(row), {
            "ttft_p50": ms("ttft_median_ms"), "tpot_p50": ms("tpot_median_ms"), "req_s": float(row["req_s"]),
            "ttft_mean": ms("ttft_mean_ms"), "output_tok_s": float(row["output_tok_s"])}))
    return out


def simulate_published(catalog, run: PublishedRun, calibration: str | None = None) -> dict[str, float]:
    """The run's deployment at the defaults of the engine release it ran, its requests (fixed prompt; outputs of the
    published mean length, floor and ceiling mixed to the published total) arriving as it sent them."""
    from planner.deployment import Deployment, default_max_seqs, resolve

    m = run.meta
    gpus = (m["gpu"],)
    engine = f"{m['engine']}@{m['engine_version']}" if m.get("engine_version") else m["engine"]  # that release's defaults
    eng = catalog.engine(engine)
    dep = Deployment(model=m["model"], gpus=gpus, engine=engine, quant=m["quant"] or None, ctx_tokens=int(m["ctx"]),
                     batch=default_max_seqs(eng, tuple(catalog.gpu(g) for g in gpus)))
    r = resolve(catalog, dep)
    e = sim.engine_for(catalog, r, catalog.calibration(calibration, r.engine.id, r.gpus[0].id))
    n, mean = run.n, float(m["gen_mean"])
    lo = int(math.floor(mean))
    k_hi = int(round((mean - lo) * n))
    gens = [lo + 1] * k_hi + [max(1, lo)] * (n - k_hi)
    p = int(m["prompt"])
    if m["rate"] == "inf":
        w = sim.Workload(n_requests=n, trace=tuple((p, g, 0.0) for g in gens))
    elif m["concurrency"]:
        w = sim.Workload(n_requests=n, concurrency=int(m["concurrency"]), trace=tuple((p, g) for g in gens))
    else:
        w = sim.Workload(n_requests=n, rate=float(m["rate"]), trace=tuple((p, g) for g in gens))
    res = sim.run(e, w)
    if res.rejected or res.failed:
        raise PlannerError(f"{run.name}: the simulation refused {res.rejected + res.failed} requests the server served")
    met = sim.request_metrics(res)
    out = metrics(res.arrival, res.first_token, res.done, res.gen)
    out["ttft_mean"] = float(met["ttft"].mean())
    out["output_tok_s"] = float(res.gen.sum()) / float(res.done.max() - res.arrival.min())
    return out


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

    def error(self, k: str) -> float | None:
        if k not in self.measured or k not in self.predicted:
            return None
        return self.predicted[k] / self.measured[k] - 1


def _with(e, r, params: dict | None):
    """The engine with the server parameters of a fit candidate: sample_ns (per vocabulary entry)
    and save_GBps (prompt-cache copy rate)."""
    if not params:
        return e
    e = replace(e, cache={})
    if "sample_ns" in params:
        e.sample_s_per_seq = params["sample_ns"] * NS * r.arch.vocab_size
    if "save_GBps" in params and e.save_limit_tokens:
        e.save_bandwidth = params["save_GBps"] * GB
    return e


def score(catalog, runs: list[ServingRun], params: dict | None = None, calibration: str | None = None) -> list[Scored]:
    """Each run simulated (with `params` overriding the profile's server parameters: the fit)."""
    out = []
    for run in runs:
        e, r = engine_of(catalog, run, calibration)
        out.append(Scored(run, measured(run), simulated(_with(e, r, params), run)))
    return out


def score_published(catalog, runs: list[PublishedRun], calibration: str | None = None) -> list[Scored]:
    return [Scored(run, run.measured, simulate_published(catalog, run, calibration)) for run in runs]


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


def default_published(root: Path) -> list[Path]:
    return sorted(p for p in (Path(root) / "hwdb" / "runs").glob("serving-published*.csv"))


def group_of(run) -> str:
    return "vLLM, published" if isinstance(run, PublishedRun) else "llama-server, H200"


def summary(scored: list[Scored]) -> list[dict]:
    rows = []
    for group in dict.fromkeys(group_of(s.run) for s in scored):
        for role in ("fit", "holdout"):
            for k in METRICS:
                sel = [s for s in scored if group_of(s.run) == group and s.run.role == role and s.error(k) is not None]
                if not sel:
                    continue
                e = np.abs([s.error(k) for s in sel])
                rows.append({"group": group, "role": role, "metric": k, "n": len(sel), "median_abs_error": float(np.median(e)),
                             "p90_abs_error": float(np.percentile(e, 90)), "max_abs_error": float(e.max())})
    return rows


def _fmt(k: str, v: float) -> str:
    if k == "req_s":
        return f"{v:.2f}"
    return f"{v / MS:.0f} ms" if v < 1 else f"{v:.2f} s"


def lines(scored: list[Scored], markdown: bool) -> list[str]:
    """The per-run table (measured / simulated per metric) and the error summary."""
    head = ["run", "role", "deployment", "prompt/gen", "arrivals", "n"] + [METRIC_LABELS[k] for k in METRICS]
    rows = []
    for s in scored:
        m = s.run.meta
        if isinstance(s.run, PublishedRun):
            dep = f"{m['model']} on {m['gpu']}, vLLM {m['engine_version']} defaults"
            pg, n = f"{m['prompt']}/{float(m['gen_mean']):.0f}", str(s.run.n)
        else:
            dep = f"{m['model']} {m['quant']} on {m['gpu']}, {m['slots']} slots"
            pg, n = f"{m['prompt']}/{m['gen']}", str(len(s.run.sent))
        rows.append([s.run.name, s.run.role, dep, pg, s.run.arrivals, n] +
                    [f"{_fmt(k, s.measured[k])} / {_fmt(k, s.predicted[k])} ({s.error(k):+.0%})" if s.error(k) is not None
                     else "-" for k in METRICS])
    summ = summary(scored)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += ["", "| runs | metric | role | n | median \\|error\\| | p90 \\|error\\| | max \\|error\\| |",
                "|---|---|---|---:|---:|---:|---:|"]
        out += [f"| {x['group']} | {METRIC_LABELS[x['metric']]} | {x['role']} | {x['n']} | {x['median_abs_error']:.1%} | "
                f"{x['p90_abs_error']:.1%} | {x['max_abs_error']:.0%} |" for x in summ]
        return out
    out = []
    for r in rows:
        out.append(f"{r[0]} ({r[1]}): {r[2]}, prompt/gen {r[3]}, {r[4]}, {r[5]} requests")
        out.append("   " + "; ".join(f"{h} {v}" for h, v in zip(head[6:], r[6:])))
    out += [f"{x['group']:<19} {x['role']:<8} {METRIC_LABELS[x['metric']]:<20} median |error| {x['median_abs_error']:6.1%}  "
            f"p90 {x['p90_abs_error']:6.1%}  max {x['max_abs_error']:5.0%}  ({x['n']} runs)" for x in summ]
    return out
