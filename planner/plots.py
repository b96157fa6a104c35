"""Plotly figures of planner results. Consumes curves and estimates; derives no physics.

Each function takes a result object (planner.memory.MemoryCurve, planner.speed.DecodeCurve,
BatchCurve, PerfEstimate, planner.spec.SpecEstimate, planner.compare.Comparison) and returns a
figure whose axes carry units and whose hover text names the numbers and the deployment.
`page` wraps figures in a standalone HTML page with plotly.js embedded (works offline).
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from planner.units import GB, GFLOP, MB, MS, TFLOP, GiB

KINDS = ("memory", "context", "batch", "roofline", "acceptance", "pareto", "latency", "timeline")
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D", "#BAB0AC")
CONFIG = {"displaylogo": False, "responsive": True}


def _layout(fig: go.Figure, title: str, subtitle: str, x: str, y: str, **kw) -> go.Figure:
    lines = [html.escape(x) for x in subtitle.split("; ")]
    fig.update_layout(
        template="plotly_white", height=kw.pop("height", 520), margin=dict(l=70, r=40, t=64 + 16 * len(lines), b=40),
        title=dict(text=f"{html.escape(title)}<br><sup>{'<br>'.join(lines)}</sup>", x=0.01, xanchor="left"),
        legend=dict(orientation="h", yanchor="top", y=-0.16, xanchor="left", x=0.0),
        hoverlabel=dict(namelength=-1), font=dict(family="DejaVu Sans, Arial, sans-serif", size=13), **kw)
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def memory_figure(curve, title: str, subtitle: str) -> go.Figure:
    """Stacked bytes of each kind against context, with the usable memory and the longest fit."""
    fig = go.Figure()
    x = list(curve.ctx_tokens)
    for i, (label, ys) in enumerate(curve.parts.items()):
        fig.add_trace(go.Scatter(
            x=x, y=[b / GiB for b in ys], name=label, stackgroup="mem", mode="lines",
            line=dict(width=0.5, color=COLORS[i % len(COLORS)]),
            hovertemplate=f"{label}: %{{y:.2f}} GiB<br>context %{{x:,}} tokens<extra></extra>"))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[curve.usable_bytes / GiB] * 2, name="usable GPU memory",
                             mode="lines", line=dict(color="black", dash="dash", width=2),
                             hovertemplate="usable: %{y:.2f} GiB<extra></extra>"))
    if curve.max_ctx_tokens:
        fig.add_vline(x=curve.max_ctx_tokens, line=dict(color="#E45756", dash="dot"),
                      annotation_text=f"longest fit {curve.max_ctx_tokens:,}", annotation_position="top left")
    fig.add_vline(x=curve.native_ctx_tokens, line=dict(color="gray", dash="dot"),
                  annotation_text=f"native {curve.native_ctx_tokens:,}", annotation_position="bottom right")
    fig.update_layout(hovermode="x unified")
    return _layout(fig, title, subtitle, "context per sequence (tokens)", "memory (GiB, all GPUs)")


def context_figure(curves: list[tuple[str, object]], title: str, subtitle: str) -> go.Figure:
    """Decode tok/s per stream against depth, with the physical ceiling, one line per deployment."""
    fig = go.Figure()
    for i, (label, c) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=list(c.depth_tokens), y=list(c.tok_s), name=f"{label}: predicted", mode="lines",
                                 line=dict(color=color, width=3),
                                 hovertemplate=f"{html.escape(label)}<br>depth %{{x:,}} tokens<br>"
                                               "%{y:.1f} tok/s per stream<extra>predicted</extra>"))
        fig.add_trace(go.Scatter(x=list(c.depth_tokens), y=list(c.ceiling_tok_s), name=f"{label}: physical ceiling",
                                 mode="lines", line=dict(color=color, dash="dot", width=2),
                                 hovertemplate=f"{html.escape(label)}<br>depth %{{x:,}} tokens<br>"
                                               "%{y:.1f} tok/s (every op at peak)<extra>ceiling</extra>"))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, title, subtitle, "tokens already in context (depth)", "decode speed (tok/s per stream)")


def batch_figure(curve, label: str, title: str, subtitle: str) -> go.Figure:
    """Total and per-stream decode tok/s against concurrent sequences; hollow where it does not fit."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    sym = ["circle" if f else "circle-open" for f in curve.fits]
    text = [f"batch {b}: {'fits' if f else 'does NOT fit'} at {curve.ctx_tokens:,} tokens each<br>{bd}"
            for b, f, bd in zip(curve.batch, curve.fits, curve.bound)]
    fig.add_trace(go.Scatter(x=list(curve.batch), y=list(curve.total_tok_s), name="total across the batch",
                             mode="lines+markers", marker=dict(symbol=sym, size=10), line=dict(color=COLORS[0], width=3),
                             text=text, hovertemplate="%{text}<br>%{y:,.0f} tok/s total<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=list(curve.batch), y=list(curve.tok_s), name="per stream", mode="lines+markers",
                             marker=dict(symbol=sym, size=10), line=dict(color=COLORS[1], width=3, dash="dash"),
                             text=text, hovertemplate="%{text}<br>%{y:.1f} tok/s per stream<extra></extra>"),
                  secondary_y=True)
    fig.update_xaxes(type="log", tickvals=list(curve.batch), ticktext=[str(b) for b in curve.batch])
    _layout(fig, title, subtitle, "concurrent sequences (batch)",
            "total decode (tok/s)")
    fig.update_yaxes(title_text="per-stream decode (tok/s)", secondary_y=True, rangemode="tozero", showgrid=False)
    fig.update_yaxes(rangemode="tozero", secondary_y=False)
    return fig


def roofline_figure(perf, title: str, subtitle: str) -> go.Figure:
    """Achieved FLOP/s against arithmetic intensity for each op of a decode and a prefill step,
    under the roofs min(peak FLOP/s, intensity x peak bytes/s) of the devices and kernels used."""
    fig = go.Figure()
    steps = [("decode", perf.decode_step, "circle")] + ([("prefill", perf.prefill_step, "diamond")]
                                                       if perf.prefill_step else [])
    rows = [(name, o, sym) for name, s, sym in steps for o in s.ops if o.flops > 0 and o.bytes > 0 and o.time_s > 0]
    xs = [o.flops / o.bytes for _, o, _ in rows] or [1.0]
    lo, hi = min(xs) / 4, max(xs) * 4
    roofs = sorted({(o.peak_bytes_per_s, o.peak_flops_per_s) for _, o, _ in rows
                    if o.peak_bytes_per_s and o.peak_flops_per_s})
    for i, (bw, fl) in enumerate(roofs):
        knee = fl / bw
        pts = [p for p in (lo, knee, hi) if lo <= p <= hi] or [lo, hi]
        fig.add_trace(go.Scatter(
            x=pts, y=[min(fl, p * bw) / TFLOP for p in pts], mode="lines", name=f"roof: {bw / GB:,.0f} GB/s, "
            f"{fl / TFLOP:,.0f} TFLOP/s", line=dict(color="gray", width=1.5, dash="dash" if i else "solid"),
            hovertemplate=f"peak {bw / GB:,.0f} GB/s, {fl / TFLOP:,.1f} TFLOP/s<extra>roof</extra>"))
    for k, (name, step, sym) in enumerate(steps):
        mine = [o for n, o, _ in rows if n == name]
        if not mine:
            continue
        fig.add_trace(go.Scatter(
            x=[o.flops / o.bytes for o in mine], y=[o.achieved_flops_per_s / TFLOP for o in mine], mode="markers",
            name=f"{name}: {html.escape(step.what)}", marker=dict(symbol=sym, size=[8 + 22 * o.share for o in mine],
                                                               color=COLORS[k], line=dict(width=1, color="white")),
            text=[f"{html.escape(o.op)} on {html.escape(o.stage)}<br>{o.flops / GFLOP:,.2f} GFLOP, {o.bytes / MB:,.1f} MB, "
                  f"{o.time_s / MS:.3f} ms ({o.share:.0%} of the step)<br>bound: {o.bound}" for o in mine],
            hovertemplate="%{text}<br>intensity %{x:.2f} FLOP/byte<br>achieved %{y:.2f} TFLOP/s<extra></extra>"))
    fig.update_xaxes(type="log", dtick=1)
    fig.update_yaxes(type="log", dtick=1)
    return _layout(fig, title, f"{subtitle}; marker size: share of the step's time", "arithmetic intensity (FLOP/byte)",
                   "achieved compute (TFLOP/s)", height=600)


def acceptance_figure(spec, title: str, subtitle: str) -> go.Figure:
    """Decode tok/s per stream against the per-token acceptance rate, one line per draft length."""
    fig = go.Figure()
    alphas = [row.alpha for row in spec.sweep]
    lens = spec.sweep_draft_lens
    shades = sample_colorscale("Viridis", [i / max(len(lens) - 1, 1) * 0.9 for i in range(len(lens))])
    for j, k in enumerate(lens):
        fig.add_trace(go.Scatter(
            x=alphas, y=[row.tok_s[j] for row in spec.sweep], mode="lines", name=f"draft {k}",
            line=dict(width=4 if k == spec.draft_len else 1.5, color=shades[j]),
            hovertemplate=f"draft length {k}<br>acceptance %{{x:.2f}}<br>%{{y:.1f}} tok/s per stream<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=alphas, y=[row.best_tok_s for row in spec.sweep], mode="markers", name="best draft length",
        marker=dict(size=9, color="black", symbol="circle-open"), text=[str(row.best_draft_len) for row in spec.sweep],
        hovertemplate="best at this acceptance: draft %{text}<br>%{y:.1f} tok/s<extra></extra>"))
    fig.add_trace(go.Scatter(x=[min(alphas), max(alphas)], y=[spec.plain_decode_tok_s] * 2, mode="lines",
                             name="no speculation", line=dict(color="black", dash="dash", width=2),
                             hovertemplate="plain decoding %{y:.1f} tok/s<extra></extra>"))
    fig.add_trace(go.Scatter(x=[spec.alpha], y=[spec.decode_tok_s], mode="markers", name="as planned",
                             marker=dict(symbol="star", size=16, color="#E45756"),
                             hovertemplate=f"planned: acceptance {spec.alpha:.2f}, draft {spec.draft_len}<br>"
                                           "%{y:.1f} tok/s<extra></extra>"))
    return _layout(fig, title, subtitle, "acceptance rate per drafted token (alpha)", "decode speed (tok/s per stream)")


def pareto_figure(c, title: str, subtitle: str) -> go.Figure:
    """Price against the workload's speed for the ranked sets; the front joined by a line."""
    fig = go.Figure()
    pts = [e for e in c.entries if e.rank and e.price_usd is not None]
    off = [e for e in pts if not e.pareto]
    on = sorted((e for e in pts if e.pareto), key=lambda e: e.price_usd)

    def text(es):
        return [f"<b>{html.escape(e.label)}</b> ({e.engine})<br>{e.quant} weights, {e.kv_quant} KV, max context "
                f"{e.max_ctx_tokens:,}<br>${e.price_usd:,.0f} ({html.escape(e.price_basis or '')})<br>"
                f"{e.speed_tok_s:,.1f} tok/s, {e.tok_s_per_kusd:.2f} per $1k" for e in es]

    fig.add_trace(go.Scatter(x=[e.price_usd for e in off], y=[e.speed_tok_s for e in off], mode="markers",
                             name="dominated", marker=dict(size=10, color="#BAB0AC"), text=text(off),
                             hovertemplate="%{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[e.price_usd for e in on], y=[e.speed_tok_s for e in on], mode="lines+markers+text",
                             name="price-speed front", line=dict(shape="hv", color=COLORS[0], width=2),
                             marker=dict(size=12, color=COLORS[0]), text=[e.label for e in on], cliponaxis=False,
                             textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(on))],
                             customdata=text(on), hovertemplate="%{customdata}<extra></extra>"))
    prices = [e.price_usd for e in pts] or [1000.0]
    ticks = [v * 10 ** e for e in range(1, 7) for v in (1, 2, 5) if min(prices) / 2 <= v * 10 ** e <= max(prices) * 2]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"${t:,.0f}" for t in ticks],
                     range=[math.log10(min(prices) / 1.4), math.log10(max(prices) * 1.4)])
    fig.update_yaxes(rangemode="tozero")
    unpriced = [e.label for e in c.entries if e.rank and e.price_usd is None]
    if unpriced:
        subtitle += f"; not shown (no price): {', '.join(unpriced[:6])}" + (" ..." if len(unpriced) > 6 else "")
    return _layout(fig, title, subtitle, "price of the GPUs (USD, log scale)", f"{c.metric_what.split(': ')[-1]}")


def validation_figure(secs, title: str, subtitle: str) -> go.Figure:
    """Predicted against measured for every run (planner.validate.Section list), log-log, with the
    line of perfect prediction and +-25% lines; colour = metric, marker = role."""
    from planner.validate import METRIC_NAMES

    fig = go.Figure()
    symbols = {"fit": "circle", "holdout": "diamond", "old-build": "x", "spec": "triangle-up", "harness": "square"}
    points = [(sec.cal.id, s) for sec in secs for s in sec.scored]
    lo = min(min(s.prepared.run.value, s.predicted) for _, s in points)
    hi = max(max(s.prepared.run.value, s.predicted) for _, s in points)
    for k, metric in enumerate(METRIC_NAMES):
        for role, sym in symbols.items():
            sel = [(cid, s) for cid, s in points if s.prepared.run.metric == metric and s.prepared.run.role == role]
            if not sel:
                continue
            text = [f"{html.escape(s.prepared.run.label)}<br>row {s.prepared.run.ref_row} ({role}), profile {cid}<br>"
                    f"p{s.prepared.run.prompt_tokens} d{s.prepared.run.depth_tokens} g{s.prepared.run.gen_tokens} "
                    f"b{s.prepared.run.batch}<br>error {s.error:+.1%}" for cid, s in sel]
            fig.add_trace(go.Scatter(
                x=[s.prepared.run.value for _, s in sel], y=[s.predicted for _, s in sel], mode="markers",
                name=f"{METRIC_NAMES[metric]} ({role})", text=text,
                marker=dict(symbol=sym, size=9, color=COLORS[k % len(COLORS)], line=dict(width=0.5, color="#333"),
                            opacity=0.8),
                hovertemplate="%{text}<br>measured %{x:.4g}, predicted %{y:.4g}<extra></extra>"))
    span = [lo / 1.5, hi * 1.5]
    for f, dash, name in ((1.0, "solid", "predicted = measured"), (1.25, "dash", "+25%"), (0.75, "dash", "-25%")):
        fig.add_trace(go.Scatter(x=span, y=[v * f for v in span], mode="lines", name=name, hoverinfo="skip",
                                 line=dict(color="gray", dash=dash, width=1)))
    fig.update_xaxes(type="log", minor=dict(showgrid=False), tickformat="~s")
    fig.update_yaxes(type="log", minor=dict(showgrid=False), tickformat="~s")
    return _layout(fig, title, subtitle, "measured (tok/s; s for latency; ratio for speedups, log scale)",
                   "predicted (same unit, log scale)", height=680)


def latency_figure(points: list[tuple[float, dict]], title: str, subtitle: str, slo: tuple = (None, None),
                   max_rate: float | None = None) -> go.Figure:
    """Latency percentiles of `planner simulate` against the offered arrival rate (log latency), one
    line per metric, with the SLO targets and the highest rate that meets them."""
    fig = go.Figure()
    rates = [r for r, _ in points]
    lines = (("ttft_s", "p50", "TTFT p50", "solid"), ("ttft_s", "p90", "TTFT p90", "dash"),
             ("tpot_s", "p50", "TPOT p50", "solid"), ("tpot_s", "p90", "TPOT p90", "dash"),
             ("e2e_s", "p50", "end-to-end p50", "dot"))
    for k, (key, q, name, dash) in enumerate(lines):
        ys = [s[key][q] for _, s in points]
        thr = [s["output_tok_s"] for _, s in points]
        fig.add_trace(go.Scatter(
            x=rates, y=ys, name=name, mode="lines+markers", customdata=thr,
            line=dict(color=COLORS[k // 2 * 2 % len(COLORS)] if k < 4 else COLORS[4], dash=dash, width=2),
            hovertemplate=f"{name}: %{{y:.3~s}}s at %{{x:.3g}} req/s<br>output %{{customdata:,.0f}} tok/s<extra></extra>"))
    for target, name in zip(slo, ("TTFT target", "TPOT target")):
        if target is not None:
            fig.add_hline(y=target, line=dict(color="#E45756", dash="dot", width=1), annotation_text=name,
                          annotation_position="top left")
    if max_rate:
        fig.add_vline(x=max_rate, line=dict(color="#54A24B", dash="dot"),
                      annotation_text=f"meets the SLO up to {max_rate:.3g} req/s", annotation_position="top right")
    fig.update_yaxes(type="log", minor=dict(showgrid=False))
    fig.update_layout(hovermode="x unified")
    return _layout(fig, title, subtitle, "offered load (requests/s)", "latency (s, log scale)")


def timeline_figure(timeline: list[tuple], title: str, subtitle: str) -> go.Figure:
    """A simulated run over time: requests running and waiting, and the KV cache's use."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    t = [p[0] for p in timeline]
    fig.add_trace(go.Scatter(x=t, y=[p[1] for p in timeline], name="running", mode="lines",
                             line=dict(color=COLORS[0], width=1.5), hovertemplate="%{y} running at %{x:.2f} s<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=t, y=[p[2] for p in timeline], name="waiting", mode="lines",
                             line=dict(color=COLORS[1], width=1.5), hovertemplate="%{y} waiting at %{x:.2f} s<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=t, y=[100 * p[3] for p in timeline], name="KV cache used", mode="lines",
                             line=dict(color=COLORS[2], width=1, dash="dot"),
                             hovertemplate="KV cache %{y:.0f}% used at %{x:.2f} s<extra></extra>"), secondary_y=True)
    fig.update_layout(hovermode="x unified")
    fig = _layout(fig, title, subtitle, "time (s)", "requests")
    fig.update_yaxes(title_text="KV cache used (%)", range=[0, 105], secondary_y=True)
    return fig


def div(fig: go.Figure, div_id: str) -> str:
    """The figure as an HTML fragment that expects plotly.js on the page."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def page(title: str, body: str) -> str:
    """A standalone HTML page with plotly.js inlined: nothing is fetched from the network."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<style>{CSS}</style>\n"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body></html>\n")


CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: right; } th { background: #f4f4f4; }
td.l, th.l { text-align: left; } .verdict { font-size: 1.2em; padding: 10px 14px; border-radius: 6px; display: inline-block; }
.fits { background: #e3f4e1; border: 1px solid #54A24B; } .nofit { background: #fbe3e3; border: 1px solid #E45756; }
.muted { color: #666; font-size: 0.9em; } pre { background: #f7f7f7; padding: 8px; white-space: pre-wrap; word-break: break-word; font-size: 0.85em; }
.plot { margin: 10px 0 26px 0; border: 1px solid #eee; }
"""
