"""Published runs over several machines against planner's plans (docs/validation.md#multinode).

hwdb/runs/multinode-published.csv holds one measured speed per row: llama.cpp RPC across Macs and
Strix Halo boxes, SGLang across two 8-GPU machines, and for scale the same models on one machine.
Each row is planned as `planner fit` plans it (the GPUs and network as written, the engine's
defaults otherwise) and the speed compared. Every row is held out: none was fitted.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from planner.deployment import Deployment, parse_machines, resolve
from planner.errors import PlannerError
from planner.speed import estimate

FILE = "multinode-published.csv"


@dataclass(frozen=True)
class Scored:
    row: dict
    machines: int
    predicted: float
    error: float  # (predicted - measured) / measured


def default_path(root: Path) -> Path:
    return Path(root) / "hwdb" / "runs" / FILE


def load(path: Path) -> list[dict]:
    lines = [x for x in Path(path).read_text().splitlines() if x.strip() and not x.startswith("#")]
    return list(csv.DictReader(lines))


def predict(catalog, row: dict) -> tuple[float, int]:
    """The row's speed as planned, and how many machines it spans."""
    machines = parse_machines(row["gpu"])
    gpus = tuple(g for m in machines for g in m)
    nodes = tuple(k for k, m in enumerate(machines) for _ in m) if len(machines) > 1 else ()
    prompt, gen, batch = int(row["prompt"]), int(row["gen"]), int(row["batch"])
    dep = Deployment(model=row["model"], gpus=gpus, nodes=nodes, network=row["network"] or None, engine=row["engine"],
                     quant=row["quant"] or None, ctx_tokens=max(4096, prompt + gen), batch=batch,
                     tp=int(row["tp"]) if row["tp"] else None, pp=int(row["pp"]) if row["pp"] else None)
    r = resolve(catalog, dep)
    p = estimate(catalog, r, dep.ctx_tokens, prompt, gen, 0)
    value = p.decode_tok_s if row["metric"] == "decode" else p.prefill_tok_s
    if value is None:
        raise PlannerError(f"{row['run']}: planner predicts no {row['metric']} speed for it")
    return value, len(machines)


def score(catalog, rows: list[dict]) -> list[Scored]:
    out = []
    for row in rows:
        v, m = predict(catalog, row)
        out.append(Scored(row, m, v, (v - float(row["measured"])) / float(row["measured"])))
    return out


def lines(scored: list[Scored], markdown: bool) -> list[str]:
    """The table of every row, the median error of the rows over several machines by engine, and how
    the measured and planned speeds change from one machine to several where a source measured both."""
    multi = [s for s in scored if s.machines > 1]
    by_engine: dict[str, list[float]] = {}
    for s in multi:
        by_engine.setdefault(s.row["engine"].split("-")[0], []).append(abs(s.error))
    summary = [f"{e}: {len(v)} rows over several machines, median |error| {statistics.median(v):.0%}, worst "
               f"{max(v):.0%}" for e, v in sorted(by_engine.items())]
    base = {(s.row["source"], s.row["model"], s.row["metric"]): s for s in scored if s.machines == 1}
    scaling = []
    for s in multi:
        b = base.get((s.row["source"], s.row["model"], s.row["metric"]))
        if b is not None:
            scaling.append(f"{s.row['run']}: {s.machines} machines against one, measured "
                           f"{float(s.row['measured']) / float(b.row['measured']) - 1:+.0%}, planned "
                           f"{s.predicted / b.predicted - 1:+.0%}")
    if not markdown:
        out = [f"  {s.row['run']:<18} {s.row['gpu']:<18} {s.row['network'] or '-':<12} {s.row['metric']:<8} "
               f"measured {float(s.row['measured']):>8,.1f}  planned {s.predicted:>8,.1f}  {s.error:+.0%}" for s in scored]
        return out + ["  " + x for x in summary + scaling]
    out = ["| run | engine | machines | network | model | metric | measured | planned | error | what planner assumed |",
           "|---|---|---|---|---|---|---:|---:|---:|---|"]
    for s in scored:
        r = s.row
        out.append(f"| [{r['run']}]({r['source']}) ({r['date']}) | {r['engine']} {r['engine_version']} | `{r['gpu']}` | "
                   f"{r['network'] or '-'} | {r['model']} | {r['metric']} | {float(r['measured']):,.1f} | "
                   f"{s.predicted:,.1f} | {s.error:+.0%} | {r['assumed'] or '-'} |")
    return out + [""] + [f"- {x}" for x in summary + scaling]
