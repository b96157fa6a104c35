"""The figures of `planner plot` and the one-page HTML report of `planner report`.

Consumes a FitResult and the curves of planner.memory / planner.speed; derives no physics.
"""

from __future__ import annotations

import datetime
import html
from importlib.metadata import PackageNotFoundError, version

from planner import plots
from planner.catalog import Catalog
from planner.deployment import Resolved
from planner.emit import command as emit_command
from planner.errors import PlannerError
from planner.fit import FitResult
from planner.memory import MEMORY_PARTS, memory_curve
from planner.speed import batch_curve, decode_curve
from planner.units import MS, GiB


def describe(r: Resolved, cal_id: str) -> tuple[str, str]:
    """(title, subtitle) naming the deployment a figure shows."""
    gpus = " + ".join(g.id for g in r.gpus)
    sub = (f"{r.engine.name}, {r.quant} weights, {r.kv_label} KV cache, batch {r.batch}"
           + (f", {r.split} split" if len(r.gpus) > 1 else "") + f" (planner {_version()}, calibration {cal_id})")
    return f"{r.model_name} on {gpus}", sub


def _version() -> str:
    try:
        return version("planner")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


def figure(kind: str, catalog: Catalog, res: FitResult, r: Resolved):
    """One plot kind (plots.KINDS, less pareto) for a fitted deployment."""
    cal = catalog.calibration(res.perf.calibration)
    title, sub = describe(r, cal.id)
    if kind == "memory":
        return plots.memory_figure(memory_curve(r), f"{title}: memory against context", sub)
    if kind == "context":
        c = decode_curve(catalog, r, res.ctx_tokens, cal)
        return plots.context_figure([(" + ".join(g.id for g in r.gpus), c)], f"{title}: decode speed against context", sub)
    if kind == "batch":
        ctx = min(res.ctx_tokens, res.perf.depth_tokens + res.perf.prompt_tokens + res.perf.gen_tokens)
        c = batch_curve(catalog, r, ctx, res.perf.depth_tokens + res.perf.prompt_tokens, cal)
        return plots.batch_figure(c, title, f"{title}: throughput against batch",
                                  f"{sub}; each sequence at depth {c.depth_tokens:,} with {ctx:,} tokens of context; "
                                  "hollow markers: the batch does not fit in memory")
    if kind == "roofline":
        return plots.roofline_figure(res.perf, f"{title}: roofline of one decode and one prefill step", sub)
    if kind == "acceptance":
        if res.spec is None or not res.spec.sweep:
            raise PlannerError("the acceptance plot needs --spec (mtp, dflash, eagle or draft:MODEL)")
        s = res.spec
        return plots.acceptance_figure(s, f"{title}: speculative decoding ({s.drafter_label}) against acceptance",
                                       f"{sub}; planned acceptance {s.alpha:.2f}, draft length {s.draft_len}")
    raise PlannerError(f"unknown plot kind {kind!r}; one of {', '.join(plots.KINDS)}")


def _table(head: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """An HTML table; columns in `left` hold words (left-aligned), the others numbers."""
    th = "".join(f"<th class=\"{'l' if i in left else ''}\">{html.escape(h)}</th>" for i, h in enumerate(head))
    trs = "".join("<tr>" + "".join(f"<td class=\"{'l' if i in left else ''}\">{html.escape(str(c))}</td>"
                                   for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def _rate(x: float | None, fmt: str = ",.1f") -> str:
    return "-" if x is None else format(x, fmt)


def report_html(catalog: Catalog, res: FitResult, r: Resolved) -> str:
    """One self-contained page: verdict, memory, speed, plots, commands, assumptions, sources."""
    title, sub = describe(r, res.perf.calibration)
    a, p = res.assumptions, res.perf
    out = [f"<h1>{html.escape(title)}</h1>",
           f"<p class=\"muted\">{html.escape(sub)}. Generated {datetime.date.today().isoformat()} by "
           "<code>planner report</code>; every number below is re-derivable with <code>planner fit</code>.</p>"]
    verdict = "FITS" if res.fits else "DOES NOT FIT"
    out.append(f"<p class=\"verdict {'fits' if res.fits else 'nofit'}\"><b>{verdict}</b> at {res.ctx_tokens:,} tokens of "
               f"context per sequence, batch {a['batch']}. Longest context that fits: <b>{res.max_ctx_tokens:,}</b> "
               f"tokens (native maximum {a['native_max_ctx_tokens']:,}).</p>")
    if res.warnings:
        out.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in res.warnings) + "</ul>")
    if res.suggestions:
        out.append("<h2>What makes it fit</h2>" + _table(
            ["change", "fits", "max context", "effect"],
            [[s.change, "yes" if s.fits else "no", f"{s.max_ctx_tokens:,}", s.effect] for s in res.suggestions],
            left=(0, 3)))

    out.append("<h2>Memory (GiB)</h2>")
    parts = [(k, f) for k, f in MEMORY_PARTS.items()
             if any(getattr(d, x) for d in res.memory.devices for x in f) or k == "KV cache"]
    rows = [[d.device] + [_gib(sum(getattr(d, f) for f in fields)) for _, fields in parts]
            + [_gib(d.total_bytes), _gib(d.usable_bytes), "yes" if d.fits else "NO"] for d in res.memory.devices]
    out.append(_table(["device"] + [k for k, _ in parts] + ["total", "usable", "fits"], rows))
    if res.memory.host_bytes:
        out.append(f"<p>Host RAM: {_gib(res.memory.host_bytes)} GiB (token embeddings and offloaded layers).</p>")

    out.append("<h2>Speed</h2>")
    srows = [["prefill", f"{_rate(p.prefill_tok_s, ',.0f')} tok/s", f"TTFT {_rate(p.ttft_s, '.2f')} s",
              p.prefill_bound or "-", f"{_rate(p.ceiling_prefill_tok_s, ',.0f')} tok/s"],
             ["decode", f"{p.decode_tok_s:,.1f} tok/s per stream, {p.decode_total_tok_s:,.1f} total",
              f"{p.tpot_s / MS:.1f} ms/token", p.decode_bound, f"{p.ceiling_decode_tok_s:,.1f} tok/s"]]
    out.append(f"<p>Prompt {p.prompt_tokens:,} tokens, generate {p.gen_tokens:,}, after {p.depth_tokens:,} tokens of "
               f"context, batch {p.batch}. MBU {_rate(p.mbu and p.mbu * 100, '.0f')}%, MFU "
               f"{_rate(p.mfu and p.mfu * 100, '.0f')}%.</p>")
    out.append(_table(["phase", "speed", "latency", "bound", "physical ceiling"], srows, left=(0, 3)))
    out.append(_table(["depth (tokens)", "decode tok/s per stream", "across the batch"],
                      [[f"{d.depth_tokens:,}", f"{d.tok_s:.1f}", f"{d.total_tok_s:.1f}"] for d in p.decode_at]))
    if res.spec:
        s = res.spec
        out.append(f"<p>Speculative decoding with {html.escape(s.drafter_label)}: draft length {s.draft_len}, "
                   f"acceptance {s.alpha:.2f} ({s.accept_len:.2f} tokens per step): {s.decode_tok_s:.1f} tok/s per "
                   f"stream, x{s.speedup:.2f} over plain decoding; break-even batch {s.break_even_batch or '-'}.</p>")

    out.append("<h2>Plots</h2>")
    kinds = ["memory", "context", "batch", "roofline"] + (["acceptance"] if res.spec and res.spec.sweep else [])
    for k in kinds:
        out.append(f"<div class=\"plot\">{plots.div(figure(k, catalog, res, r), f'plot-{k}')}</div>")

    out.append("<h2>Command lines</h2>")
    for eng in _engines(r):
        out.append(f"<pre>{html.escape(emit_command(r, eng, res.ctx_tokens))}</pre>")

    out.append("<h2>Assumptions</h2>")
    out.append(_table(["assumption", "value"], [[k, _show(v)] for k, v in a.items()], left=(0, 1)))
    out.append("<h2>Sources of every number used</h2>" + _sources(catalog, r, res.perf.calibration))
    return plots.page(f"{title} - planner report", "\n".join(out))


def _engines(r: Resolved) -> list[str]:
    return ["llama.cpp"] if r.engine.family == "llama.cpp" else [r.engine.family]


def _show(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return "-" if v is None else str(v)


def _sources(catalog: Catalog, r: Resolved, cal_id: str) -> str:
    """`planner show` of each entity the plan used, and its table of sources as links."""
    from planner.render import show

    out = []
    ents = list({g.id: (g.id, g) for g in r.gpus}.values()) + [(r.engine.id, r.engine)]
    if r.model_id in catalog.models:
        ents.insert(0, (r.model_id, catalog.models[r.model_id]))
    if r.host is not None:
        ents.append((r.host.id, r.host))
    for ident, ent in ents:
        out.append(f"<h3>{html.escape(ident)}</h3><pre>{html.escape(show(catalog, ident))}</pre>")
        links = "".join(f"<li><code>{html.escape(k)}</code> ({html.escape(s.kind)}): <a href=\"{html.escape(s.url)}\">"
                        f"{html.escape(s.url)}</a></li>" for k, s in ent.sources.items())
        out.append(f"<ul class=\"muted\">{links}</ul>")
    if r.spec is not None and r.spec.card is not None:
        d = r.spec.card
        links = "".join(f"<li><code>{html.escape(k)}</code> ({html.escape(s.kind)}): <a href=\"{html.escape(s.url)}\">"
                        f"{html.escape(s.url)}</a></li>" for k, s in d.sources.items())
        out.append(f"<h3>drafter {html.escape(d.id)}</h3><ul class=\"muted\">{links}</ul>")
    cal = catalog.calibration(cal_id)
    out.append(f"<h3>efficiency factors: {html.escape(cal.id)}</h3><p class=\"muted\">{html.escape(cal.name)}; "
               "prediction error against published runs: docs/validation.md.</p>")
    return "\n".join(out)
