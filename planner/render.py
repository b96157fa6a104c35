"""Text rendering of results and catalog listings. Consumes results; derives no physics."""

from __future__ import annotations

from planner.catalog import Catalog
from planner.deployment import Resolved, gpus_label
from planner.errors import did_you_mean
from planner.fit import FitResult
from planner.schema import Quantity
from planner.units import GB, GFLOP, MB, MS, TFLOP, US, GiB, fmt_params, fmt_tokens


def _g(n: float) -> str:
    return f"{n / GiB:6.2f}"


def wrap(text: str, width: int) -> str:
    """Prose lines longer than `width` wrapped at word boundaries, with a hanging indent under
    their label ("note: ", "  decode  ", ...); table rows (runs of several spaces inside) are kept."""
    import textwrap

    out = []
    for line in text.splitlines():
        body = line.lstrip()
        if len(line) <= width or "   " in body.split(": ", 1)[-1][:40] and line.count("  ") > 3:
            out.append(line)
            continue
        lead = len(line) - len(body)
        label = body.split(": ", 1)[0] + ": " if ": " in body[:40] else ""
        out.append(textwrap.fill(body, width, initial_indent=" " * lead,
                                 subsequent_indent=" " * (lead + min(len(label), 12)), break_on_hyphens=False))
    return "\n".join(out)


def _machines_line(r: Resolved) -> str:
    per: dict[int, list[str]] = {}
    for g, k in zip(r.gpus, r.nodes):
        per.setdefault(k, []).append(g.id)
    n = r.network
    link = f"over {r.rails}x {n.id}" if r.rails > 1 else f"over {n.id}"
    link += f" ({n.bandwidth.si / GB:.3g} GB/s, {n.latency.si / US:.3g} us one way)"
    if r.engine.family == "llama.cpp":
        ms = "; ".join(f"{k}: {' + '.join(v)}{' (server)' if k == 0 else ''}" for k, v in sorted(per.items()))
        return f"machines {ms}; {link}, llama.cpp RPC: the other machines hold the first layers"
    tp, pp = r.tp_size, r.pp_size
    lay = (f"data-parallel attention {r.dp}" if r.dp > 1 else
           f"tensor parallel {tp} x pipeline parallel {pp}" if pp > 1 and tp > 1 else
           f"tensor parallel {tp}" if tp > 1 else f"pipeline parallel {pp}")
    ep = ((", experts split whole over all GPUs (expert parallel)" if r.dp > 1 else
           ", experts split whole over each stage's GPUs (expert parallel)") if r.expert_parallel else "")
    return f"machines {len(per)} x {gpus_label(per[0])} {link}: {lay}{ep}; machine 0 runs the server"


def fit_text(res: FitResult, r: Resolved) -> str:
    a = res.assumptions
    gpus = gpus_label([d.device for d in res.memory.devices], r.nodes)
    lines = [
        f"{r.model_name} on {gpus}  [{a['engine_name']}, weights {a['quant']}, KV {r.kv_label}, batch {a['batch']}]",
        *([_machines_line(r)] if r.nodes else []),
        f"context {fmt_tokens(res.ctx_tokens)} tokens per sequence: "
        + {"fits": "FITS", "does-not-fit": "DOES NOT FIT",
           "fits-if-host-ram": f"FITS if the host has {(res.host_ram_needed_bytes or 0) / GiB:,.1f} GiB of RAM free "
                               "for the offloaded part (not checked: give --host-ram)"}[res.verdict],
        "",
    ]
    # as narrow as the names: an 80-column terminal holds the table (device names up to 20 characters)
    rows: list[list] = []  # alike devices in a row (a 16-GPU plan prints a few lines)
    for d in res.memory.devices:
        key = d.model_dump(exclude={"device"}) | {"name": d.device}
        if rows and rows[-1][1] == key:
            rows[-1][2] += 1
        else:
            rows.append([d, key, 1])
    dw = max(10, 2 + max(len(d.device if k == 1 else f"{k}x{d.device}") for d, _, k in rows))
    lines.append(f"{'device':<{dw}}{'weights':>8}{'KV':>8}{'state':>8}{'compute':>8}{'runtime':>8}"
                 + (f"{'draft':>8}" if res.spec else "") + f"{'total':>8}{'usable':>8}  GiB")
    for d, _, k in rows:
        mark = "" if d.fits else "  over by " + f"{(d.total_bytes - d.usable_bytes) / GiB:.2f} GiB"
        draft = d.draft_weights_bytes + d.draft_cache_bytes + d.draft_compute_bytes
        name = d.device if k == 1 else f"{k}x{d.device}"
        lines.append(f"{name:<{dw}}{_g(d.weights_bytes):>8}{_g(d.kv_cache_bytes):>8}{_g(d.recurrent_state_bytes):>8}"
                     f"{_g(d.compute_buffer_bytes):>8}{_g(d.runtime_overhead_bytes):>8}"
                     + (f"{_g(draft):>8}" if res.spec else "") + f"{_g(d.total_bytes):>8}"
                     f"{_g(d.usable_bytes):>8}{mark}")
    if any(k > 1 for *_, k in rows):
        lines.append("(NxGPU: each of N alike GPUs)")
    if res.spec:
        d = next(x for x in res.memory.devices if x.draft_weights_bytes + x.draft_cache_bytes + x.draft_compute_bytes)
        lines.append(f"  draft on {d.device}: weights {d.draft_weights_bytes / GiB:.2f} + cache "
                     f"{d.draft_cache_bytes / GiB:.2f} + compute {d.draft_compute_bytes / GiB:.2f} GiB "
                     f"({res.spec.drafter_label})")
    if res.memory.host_bytes:
        lines.append(f"{'host RAM':<{dw}}{_g(res.memory.host_bytes):>8}   (token embeddings and offloaded layers"
                     + ("" if res.memory.host_fits is None else ", fits" if res.memory.host_fits else ", DOES NOT FIT") + ")")
    lines.append("")
    if res.max_ctx_tokens:
        native = a["native_max_ctx_tokens"]
        tail = " (the model's native maximum)" if res.max_ctx_tokens >= native else ""
        lines.append(f"longest context that fits at batch {a['batch']}: {fmt_tokens(res.max_ctx_tokens)} tokens{tail}")
    else:
        lines.append("no context fits as configured")
    if res.suggestions:
        lines.append("")
        lines.append("to make it fit (each re-planned):")
        for s in res.suggestions:
            lines.append(f"  {s.change:<34} {s.effect}")
    if res.warnings:
        lines.append("")
        lines += [f"note: {w}" for w in res.warnings]
    if res.perf:
        lines.append("")
        lines += perf_text(res.perf, res.ctx_tokens)
    if res.spec:
        lines.append("")
        lines += spec_text(res.spec, res.perf.batch)
    if res.claim:
        lines.append("")
        lines += claim_text(res.claim)
    lines.append("")
    ver = f" {a['engine_version']}" if a.get("engine_version") else ""
    lines.append(f"assumptions: {a['engine']}{ver} defaults (ubatch {a['ubatch_tokens']}, context padded to "
                 f"{a['ctx_padding_tokens']}, flash attention {'on' if a['flash_attention'] else 'off'}"
                 + (", token embeddings in host RAM" if a["token_embedding_on_host"] else "")
                 + f"); weights {a['weights_source']}; speed: calibration {a['calibration']}")
    return "\n".join(lines)


def _span(iv) -> str:
    return f"{_rate(iv.low)}-{_rate(iv.high)}"


def _rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def perf_text(p, ctx: int) -> list[str]:
    b = p.batch
    out = [f"speed (prompt {fmt_tokens(p.prompt_tokens)}, generate {fmt_tokens(p.gen_tokens)}, "
           f"after {fmt_tokens(p.depth_tokens)} tokens of context, batch {b}):"]
    if p.prefill_tok_s is not None:
        out.append(f"  prefill  {_rate(p.prefill_tok_s):>9} tok/s   time to first token {p.ttft_s:.2f} s   "
                   f"bound: {p.prefill_bound}")
        if p.prefill_interval:
            out.append(f"           80% interval {_span(p.prefill_interval)} tok/s ({p.prefill_interval.basis})")
    out.append(f"  decode   {_rate(p.decode_tok_s):>9} tok/s per stream, {_rate(p.decode_total_tok_s)} across the batch, "
               f"{p.tpot_s / MS:.1f} ms/token   bound: {p.decode_bound}")
    if p.decode_interval:
        out.append(f"           80% interval {_span(p.decode_interval)} tok/s per stream ({p.decode_interval.basis})")
    ceil = f"  physical ceiling: decode {_rate(p.ceiling_decode_tok_s)} tok/s"
    if p.ceiling_prefill_tok_s:
        ceil += f", prefill {_rate(p.ceiling_prefill_tok_s)} tok/s"
    if p.mbu is not None:
        ceil += f"; decode moves {p.mbu:.0%} of peak bandwidth (MBU)"
    if p.mfu is not None:
        ceil += f", prefill uses {p.mfu:.0%} of peak compute (MFU)"
    out.append(ceil)
    out.append("  decode speed by depth: " + "   ".join(
        f"{fmt_tokens(d.depth_tokens)}: {_rate(d.tok_s)}" for d in p.decode_at) + " tok/s per stream")
    if len(p.decode_step.stage_s) > 1:
        how = "side by side" if p.decode_step.parallel else "in turn"
        out.append(f"  per decode step the devices work {how}: " + ", ".join(
            f"{k} {v / MS:.2f} ms" for k, v in p.decode_step.stage_s.items()))
    if p.comm_s_per_step:
        what = ("host-to-GPU" if p.split == "single" else f"{p.split}, GPU-to-GPU" if " x " in p.split or p.split.startswith("data-parallel")
                else f"{p.split} split, GPU-to-GPU")
        out.append(f"  {what} transfers over {p.link}: {p.comm_s_per_step / MS:.2f} ms per decode step "
                   f"({p.comm_s_per_step / p.decode_step.step_s:.0%} of it)")
    return out


def explain_text(p) -> str:
    """The per-operation roofline behind the numbers."""
    out = []
    for ph in (p.decode_step, p.prefill_step):
        if ph is None:
            continue
        out.append(f"{ph.what}: {ph.step_s / MS:.3f} ms"
                   + (f" (of which GPU-to-GPU {ph.comm_s / MS:.3f} ms)" if ph.comm_s else ""))
        out.append(f"  {'stage':<14}{'operation':<20}{'GFLOP':>10}{'MB':>10}{'ms':>9}{'share':>7}"
                   f"{'TFLOP/s':>9}{'of peak':>8}{'GB/s':>8}{'of peak':>8}  bound")
        for o in ph.ops:
            pf = f"{o.achieved_flops_per_s / o.peak_flops_per_s:.0%}" if o.peak_flops_per_s and o.flops else "-"
            pb = f"{o.achieved_bytes_per_s / o.peak_bytes_per_s:.0%}" if o.peak_bytes_per_s and o.bytes else "-"
            out.append(f"  {o.stage[:13]:<14}{o.op:<20}{o.flops / GFLOP:>10.2f}{o.bytes / MB:>10.1f}{o.time_s / MS:>9.3f}"
                       f"{o.share:>7.0%}{o.achieved_flops_per_s / TFLOP:>9.2f}{pf:>8}{o.achieved_bytes_per_s / GB:>8.0f}"
                       f"{pb:>8}  {o.bound}")
        out.append("")
    out.append("Each operation takes max(bytes / (peak bandwidth x efficiency), FLOPs / (peak compute x efficiency)); "
               "stages add up under a layer split and run side by side under a tensor split (docs/equations.md#speed).")
    return "\n".join(out)


def gpu_table(c: Catalog) -> str:
    rows = [f"{'id':<24}{'memory':>10}{'GB/s':>8}{'FP16 TF':>9}{'TDP W':>7}{'price USD':>11}  name"]
    for gid, g in sorted(c.gpus.items()):
        s = g.specs
        bw = f"{s.memory_bandwidth.value:.0f}" if s.memory_bandwidth else "?"
        bw += "*" if s.memory_bandwidth and s.memory_bandwidth.is_estimate else ""
        fp16 = s.fp16_tensor_fp32acc or s.fp16_tensor or s.fp16_vector
        price = g.price_usd()
        rows.append(f"{gid:<24}{s.memory.value:>7.0f}GiB{bw:>8}{(f'{fp16.value:.0f}' if fp16 else '-'):>9}"
                    f"{(f'{s.tdp.value:.0f}' if s.tdp else '-'):>7}{(f'{price[0]:.0f}' if price else '-'):>11}  {g.name}")
    rows.append("* estimate. FP16 TF: dense tensor peak at FP32 accumulate where the card halves it. `planner show ID` for sources.")
    return "\n".join(rows)


def model_table(c: Catalog) -> str:
    rows = [f"{'id':<22}{'params':>9}{'active':>9}{'layers':>7}{'KV layers':>10}{'native ctx':>12}  attention"]
    for mid, m in sorted(c.models.items()):
        a = m.arch
        kinds = sorted({x.kind for x in a.layers})
        kv_layers = sum(1 for x in a.layers if x.kv_elems_per_token)
        active = fmt_params(a.active_params()) if a.n_experts > 1 else "-"
        rows.append(f"{mid:<22}{fmt_params(a.params()):>9}{active:>9}{a.n_layers:>7}{kv_layers:>10}"
                    f"{a.max_position_embeddings:>12,}  {'+'.join(kinds)}{' MoE' if a.n_experts > 1 else ''}")
    rows.append("params: text model as computed from the config (`planner show ID` compares with the published count).")
    return "\n".join(rows)


def runnable_table(rows, w, show_all: bool) -> str:
    """`planner models --gpu`: the models that fit, fastest first (and with --all, the others)."""
    fits = [m for m in rows if m.entry.status == "fits"]
    label = rows[0].entry.label if rows else ""
    qw = max([8] + [len(m.entry.quant or "") + 1 for m in fits])  # mlx-8bit and the like need more than 8
    out = [f"catalog models on {label} at {fmt_tokens(w.ctx_tokens)} tokens of context, batch {w.batch} "
           f"(best quant that fits; decode tok/s per stream):", "",
           f"{'rank':>4}  {'model':<22}{'params':>8}  {'quant':<{qw}}{'KV':<6}{'max ctx':>10}{'decode':>8}{'prefill':>9}"]
    for m in fits:
        e = m.entry
        out.append(f"{e.rank:>4}  {m.model:<22}{fmt_params(m.params):>8}  {e.quant:<{qw}}{e.kv_quant:<6}"
                   f"{e.max_ctx_tokens or 0:>10,}{_num(e.decode_tok_s, '.1f'):>8}{_num(e.prefill_tok_s, ',.0f'):>9}")
    if not fits:
        out.append("  (none fits: try a shorter --ctx, more GPUs, or --all for the reasons)")
    rest = [m for m in rows if m.entry.status != "fits"]
    if show_all and rest:
        out += ["", "do not run here:"] + [f"  {m.model:<22}{fmt_params(m.params):>8}  {m.entry.reason}" for m in rest]
    elif rest:
        out += ["", f"{len(rest)} more do not fit at this context (--all lists them, with why)"]
    return "\n".join(out)


def engine_table(c: Catalog) -> str:
    w = max(18, max(len(eid) for eid in c.engines) + 2)
    rows = [f"{'id':<{w}}{'formats':<13}{'default quant':<15}{'KV types'}"]
    for eid, e in sorted(c.engines.items()):
        rows.append(f"{eid:<{w}}{','.join(e.weight_formats):<13}{e.default_quant:<15}{', '.join(e.kv_types)}")
    return "\n".join(rows)


def host_table(c: Catalog) -> str:
    rows = [f"{'id':<16}{'peak GB/s':>10}  name"]
    for hid, h in sorted(c.hosts.items()):
        rows.append(f"{hid:<16}{h.bandwidth_bytes_per_s / GB:>10.1f}  {h.name}")
    return "\n".join(rows)


def network_table(c: Catalog) -> str:
    """Each network: what one transfer achieves, a small message's one-way latency, and whether the
    numbers were measured (m) or estimated (e)."""
    rows = [f"{'id':<11}{'stack':<6}{'GB/s':>10}{'one way':>13}  name"]
    for nid, n in sorted(c.networks.items(), key=lambda kv: (kv[1].transport, kv[1].bandwidth.si)):
        tag = lambda q: "(e)" if q.is_estimate else "(m)"  # noqa: E731
        rows.append(f"{nid:<11}{n.transport:<6}{n.bandwidth.si / GB:>6.3g} {tag(n.bandwidth)}"
                    f"{n.latency.si / US:>6.3g} us {tag(n.latency)}  {n.name}")
    rows.append("(m) measured or a datasheet figure, (e) estimated; `planner networks --json` gives the sources")
    return "\n".join(rows)


def quant_table(c: Catalog) -> str:
    rows = ["weight recipes (bits/weight of the base type; mixes raise some tensors):"]
    for name, r in c.recipes.recipes.items():
        st = c.formats.types[r.base]
        rows.append(f"  {name:<11}{r.format:<12}{st.bits_per_weight:6.3f}  {r.description}")
    rows.append("  exl3-<B>bpw[_H<h>], exl2-<B>bpw[_H<h>]  EXL3 / EXL2 at B bits per decoder weight, head h bits "
                "(default 6), e.g. exl3-4.0bpw, exl2-4.65bpw_H8 (ExLlamaV3 / ExLlamaV2 engines)")
    rows.append("KV-cache types (bytes per cached value):")
    for name, k in c.kv_types.types.items():
        engines = [e for e, eng in c.engines.items() if name in eng.kv_types]
        rows.append(f"  {name:<10}{k.bytes_per_value:7.4f}  {', '.join(engines)}")
    return "\n".join(rows)


def _q(name: str, q: Quantity | None, sources) -> str | None:
    if q is None:
        return None
    return f"  {name:<22}{q.value:>10g} {q.unit:<8} {q.provenance(sources)}"


def find_entry(c: Catalog, ident: str):
    """(kind, entry) of a GPU, model, engine or host profile by id or alias."""
    key = ident.strip().lower()
    for table, kind in ((c.gpus, "gpu"), (c.models, "model"), (c.engines, "engine"), (c.hosts, "host")):
        for k, v in table.items():
            if k == key or key in (a.lower() for a in getattr(v, "aliases", ())):
                return kind, v
    names = [*c.gpus, *c.models, *c.engines, *c.hosts]
    raise did_you_mean(ident, names, "id")


def show(c: Catalog, ident: str) -> str:
    kind, v = find_entry(c, ident)
    return {"gpu": _show_gpu, "model": _show_model, "engine": _show_engine, "host": _show_host}[kind](c, v)


def entry_json(c: Catalog, kind: str, v) -> dict:
    """A catalog entry as its data file holds it (with its id), for the --json of the listing commands;
    a model also says how planner read its architecture."""
    out = {"kind": kind, **v.model_dump(mode="json")}
    if kind == "network":
        cited = {q.source for q in (v.line_rate, v.bandwidth, v.latency) if q.source}
        out["sources"] = {k: c.network_sources[k].model_dump(mode="json") for k in sorted(cited)}
    if kind == "model":
        from planner.fit import architecture_summary

        out["architecture"] = architecture_summary(v.arch)
    return out


def _show_gpu(c: Catalog, g) -> str:
    out = [f"{g.id}: {g.name} ({g.vendor}, {g.architecture}, {g.memory_type}, {g.status})"]
    for name in type(g.specs).model_fields:
        line = _q(name, getattr(g.specs, name), g.sources)
        if line:
            out.append(line)
    ic = g.interconnect
    out.append(f"  interconnect: PCIe {ic.pcie_gen or '?'}.0 x{ic.pcie_lanes or '?'}; {ic.multi_gpu_link or 'none'}")
    for p in g.prices:
        out.append(f"  price ({p.kind}{' ' + p.date if p.date else ''}): {p.usd.value:.0f} USD  {p.usd.provenance(g.sources)}")
    if g.notes:
        out.append(f"  notes: {g.notes}")
    return "\n".join(out)


def _show_model(c: Catalog, m) -> str:
    a = m.arch
    out = [f"{m.id}: {m.name} ({m.hf_repo}), config from {m.sources[m.config_source].url}",
           f"  architecture: {a.family} (model_type {a.model_type})"]
    out.append(f"  {a.n_layers} layers, hidden {a.hidden_size}, vocab {a.vocab_size:,}, native context {a.max_position_embeddings:,}"
               f", {'tied' if a.tie_word_embeddings else 'untied'} embeddings")
    groups = {}
    for layer in a.layers:
        key = (layer.kind, layer.n_kv_heads, layer.k_head_dim, layer.v_head_dim, layer.window_tokens, layer.kv_shared)
        groups[key] = groups.get(key, 0) + 1
    for (kind, kv, kd, vd, win, shared), n in groups.items():
        desc = {"linear": "linear attention (recurrent state, no KV)", "mla": "MLA latent cache",
                "mamba": "Mamba SSM (recurrent state, no KV)", "conv": "short convolution (conv state, no KV)",
                "none": "MLP/MoE block (no token mixer)"}.get(kind, f"{kind} attention")
        extra = f", window {win}" if win else ""
        extra += ", reuses earlier KV" if shared else ""
        out.append(f"  {n:3d} x {desc}: {kv} KV heads x {kd}/{vd}{extra}")
    kv_tok = sum(x.kv_elems_per_token for x in a.layers if x.kind in ("full", "mla") and not x.kv_shared) * 2
    out.append(f"  KV per token (16-bit, growing layers): {kv_tok:,} bytes; recurrent state per sequence (f32): "
               f"{sum((x.ssm_state_elems + x.conv_state_elems) * 4 for x in a.layers) / 2**20:.1f} MiB")
    if a.n_experts > 1:
        out.append(f"  MoE: {a.n_experts} experts, {a.n_experts_per_tok} per token, {sum(a.moe_layers)} MoE layers")
    out.append(f"  params: text {fmt_params(a.params())}, + MTP {fmt_params(a.params(('mtp',)))}, + vision "
               f"{fmt_params(a.params(('vision',)))} (estimate from vision_config); active {fmt_params(a.active_params())}")
    for k, q in m.published.items():
        out.append(_q(f"published {k}", q, m.sources))
    for f in m.files:
        out.append(f"  file {f.quant}: {f.size.value:g} {f.size.unit} {f.what}  ({f.size.provenance(m.sources)})")
    if m.notes:
        out.append(f"  notes: {m.notes}")
    return "\n".join(out)


def _show_engine(c: Catalog, e) -> str:
    mm = e.memory
    out = [f"{e.id}: {e.name}; weights {', '.join(e.weight_formats)} (default {e.default_quant}); "
           f"KV {', '.join(e.kv_types)} (default {e.default_kv_type}); splits {', '.join(e.split_modes)}"]
    for name in ("runtime_overhead", "gpu_memory_utilization", "cuda_graph_memory"):
        line = _q(name, getattr(mm, name), e.sources)
        if line:
            out.append(line)
    out.append(f"  ubatch {mm.default_ubatch_tokens}, context padding {mm.ctx_padding_tokens}, token embedding on host: "
               f"{mm.token_embedding_on_host}, recurrent state {mm.recurrent_state_dtype}")
    out.append(f"  notes: {e.notes}")
    return "\n".join(out)


def _show_host(c: Catalog, h) -> str:
    return "\n".join([f"{h.id}: {h.name}, peak {h.bandwidth_bytes_per_s / GB:.1f} GB/s",
                      _q("transfer_rate", h.transfer_rate, h.sources) or "", f"  notes: {h.notes}"])


def spec_text(s, batch: int) -> list[str]:
    blk = "one forward drafts the block" if s.method == "dflash" else f"{s.draft_len} draft forwards"
    out = [f"speculative decoding: {s.method} ({s.drafter_label}), draft length {s.draft_len}, {blk}",
           f"  acceptance {s.alpha:.3f} per drafted token ({s.accept_from}) -> {s.accept_len:.2f} tokens per "
           f"verification step; engines would report {s.drafted_accept_rate:.0%} of drafted tokens accepted",
           f"  per cycle: draft {s.draft_s_per_step / MS:.2f} ms + verify {s.draft_len + 1} tokens/sequence "
           f"{s.verify_s_per_step / MS:.2f} ms"
           + (f" + state checkpoints {s.state_keep_s_per_step / MS:.2f} ms" if s.state_keep_s_per_step else "")
           + f"; plain step {s.plain_step_s / MS:.2f} ms (draft cost c = {s.draft_cost_ratio:.3f})",
           f"  decode   {_rate(s.decode_tok_s):>9} tok/s per stream, {_rate(s.decode_total_tok_s)} across the batch: "
           f"x{s.speedup:.2f} over plain decoding ({_rate(s.plain_decode_tok_s)} tok/s); "
           f"Leviathan's formula with this c: x{s.leviathan_speedup:.2f}"]
    if s.ttft_s is not None:
        out.append(f"  time to first token {s.ttft_s:.2f} s (the drafter's prefill adds {s.draft_prefill_s / MS:.1f} ms)")
    out.append(f"  verification at batch {batch}: {s.verify_bound}-bound; "
               + (f"compute-bound from batch {s.compute_bound_batch}" if s.compute_bound_batch else
                  f"memory-bound up to batch {s.max_batch_searched}"))
    out.append("  speculation stops paying at batch " + (f">= {s.break_even_batch}" if s.break_even_batch else
               f"> {s.max_batch_searched} (not reached)") + " at this acceptance and draft length")
    if s.sweep:
        out.append("")
        out += sweep_text(s)
    return out


def sweep_text(s) -> list[str]:
    lens = s.sweep_draft_lens
    out = [f"decode tok/s per stream by per-token acceptance (rows) and draft length (columns); plain "
           f"{_rate(s.plain_decode_tok_s)} tok/s",
           f"{'accept':>7}" + "".join(f"{g:>7}" for g in lens) + "   best"]
    for row in s.sweep:
        out.append(f"{row.alpha:>7.2f}" + "".join(f"{_rate(x):>7}" for x in row.tok_s)
                   + f"   {row.best_draft_len} (x{row.best_speedup:.2f})")
    return out


def claim_text(c) -> list[str]:
    out = [f"claim check: {c.observed_tok_s:g} tok/s per stream",
           f"  physical ceiling (plain decoding, 100% of peak): {_rate(c.ceiling_tok_s)} tok/s -> claim is "
           f"{c.ratio_to_ceiling:.2f}x the ceiling; planner predicts {_rate(c.predicted_tok_s)} tok/s "
           f"({c.ratio_to_predicted:.2f}x)",
           f"  verdict: {c.verdict}: {c.message}"]
    if c.verdict in ("needs-speculation", "impossible"):
        out.append(f"  the most speculation could give here ({c.max_tokens_per_step} tokens per step, 100% of peak): "
                   f"{_rate(c.max_spec_tok_s_at_ceiling)} tok/s")
    return out


def draft_table(catalog, model_id: str | None) -> str:
    """Drafters by target, with size and published acceptance."""
    from planner.spec import drafter_params

    rows = [f"{'drafter':<26}{'method':<8}{'params':>8}  {'for':<52}  published acceptance"]
    cards = [d for d in catalog.drafts.values() if model_id is None or model_id in d.targets]
    for d in cards:
        acc = "; ".join((f"{x.accept_len:g} tokens/step" if x.accept_len else f"{x.drafted_accept_rate:.0%} of drafted")
                        + (f" at draft length {x.draft_len}" if x.draft_len else "") + f" ({x.where})"
                        for x in d.reported) or "-"
        size = "1 layer" if d.method == "mtp" else fmt_params(drafter_params(catalog, d))
        rows.append(f"{d.id:<26}{d.method:<8}{size:>8}  {', '.join(d.targets):<52}  {acc}")
    if model_id and not any(d.method == "mtp" for d in cards) and catalog.model(model_id).arch.mtp_layers:
        rows.append(f"{model_id + '-mtp':<26}{'mtp':<8}{'1 layer':>8}  {model_id:<52}  -  (built-in MTP layers)")
    if len(rows) == 1:
        rows.append("(none in the catalog: --spec draft:MODEL takes any catalog model of the same tokenizer)")
    rows.append("")
    rows.append("use: planner fit MODEL --gpu GPU --spec mtp|dflash|eagle|draft:ID --accept 0.7 (or --accept-len 3.5)")
    return "\n".join(rows)


def _money(x: float | None) -> str:
    return "?" if x is None else f"${x:,.0f}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def compare_text(c, show_all: bool, top: int | None) -> str:
    """The ranking of `planner compare` (a planner.compare.Comparison)."""
    head = (f"{c.model_name}: GPU sets for the {c.workload} workload ({c.metric_what}); context {fmt_tokens(c.ctx_tokens)} "
            f"per sequence, batch {c.batch}, prompt {c.prompt_tokens}, gen {c.gen_tokens}"
            + (f", budget ${c.budget_usd:,.0f}" if c.budget_usd is not None else ""))
    ranked = [e for e in c.entries if e.status == "fits"]
    qw = max([7] + [len(e.quant or "") + 1 for e in ranked])  # mlx-8bit and the like need more than 7
    cols = (f"{'rank':>4}  {'GPUs':<26}{'price':>9}  {'quant':<{qw}}{'KV':<6}{'max ctx':>9}{'decode':>8}{'total':>8}"
            f"{'prefill':>9}{'TTFT s':>7}{'tok/s/k$':>9}{'tok/s/W':>8}  front")
    lines = [head, "", cols]
    for e in ranked[:top] if top else ranked:
        lines.append(f"{e.rank:>4}  {e.label:<26}{_money(e.price_usd):>9}  {e.quant:<{qw}}{e.kv_quant:<6}"
                     f"{e.max_ctx_tokens:>9,}{e.decode_tok_s:>8.1f}{e.decode_total_tok_s:>8.1f}"
                     f"{_num(e.prefill_tok_s, ',.0f'):>9}{_num(e.ttft_s, '.2f'):>7}{_num(e.tok_s_per_kusd, '.2f'):>9}"
                     f"{_num(e.tok_s_per_w, '.3f'):>8}  {'*' if e.pareto else ''}")
    if not ranked:
        lines.append("   (no GPU set fits)")
    elif top and len(ranked) > top:
        lines.append(f"   ... {len(ranked) - top} more that fit (--top N or --json for all)")
    rest = [e for e in c.entries if e.status != "fits"]
    if rest:
        lines.append("")
        if show_all:
            lines.append("not ranked:")
            lines += [f"  {e.label:<26}{e.status:<12}{e.reason}" for e in rest]
        else:
            counts = {}
            for e in rest:
                counts[e.status] = counts.get(e.status, 0) + 1
            lines.append("not ranked: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + " (--all lists them)")
    front = [e for e in ranked if e.pareto]
    if front:
        lines.append("")
        lines.append("price-speed front (* above: no cheaper set is as fast): "
                     + ", ".join(f"{e.label} {_money(e.price_usd)} {e.speed_tok_s:.1f} tok/s" for e in
                                 sorted(front, key=lambda e: e.price_usd)))
    basis = sorted({b for e in (ranked[:top] if top else ranked) if e.price_basis for b in e.price_basis.split("; ")})
    if basis:
        lines.append("prices: " + "; ".join(basis))
    lines.append("")
    lines.append("decode/total: tok/s per stream / across the batch at the start of the context; "
                 "tok/s/k$ and tok/s/W use the ranked metric")
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)


COMPARE_CSV_FIELDS = ("rank", "label", "status", "reason", "engine", "quant", "kv_quant", "max_ctx_tokens", "vram_bytes",
                      "decode_tok_s", "decode_total_tok_s", "decode_full_ctx_tok_s", "prefill_tok_s", "ttft_s",
                      "decode_bound", "speed_tok_s", "price_usd", "price_basis", "tok_s_per_kusd", "power_w",
                      "tok_s_per_w", "pareto")


def compare_csv(c) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COMPARE_CSV_FIELDS)
    for e in c.entries:
        w.writerow(["" if getattr(e, f) is None else getattr(e, f) for f in COMPARE_CSV_FIELDS])
    return buf.getvalue()


def simulate_text(out: dict) -> str:
    """`planner simulate`: the workload, then latency percentiles, throughput and goodput."""
    s, w = out["result"], out["workload"]
    if w.get("replayed_arrivals"):
        arr = f"arrivals replayed from {w['trace']}"
    elif w["rate"]:
        arr = (f"Poisson {w['rate']:.3g} req/s" if w.get("burstiness", 1.0) == 1.0
               else f"gamma arrivals {w['rate']:.3g} req/s (burstiness {w['burstiness']:g})")
    else:
        arr = f"{w['concurrency']} closed-loop clients"
    lengths = f"lengths from {w['trace']}" if w.get("trace") else f"prompt {w['prompt']}, output {w['gen']}"
    lim = out.get("engine_limits", {})
    server = [f"max {out['max_seqs']} sequences", f"token budget {lim['token_budget']:,}" if lim.get("token_budget") else None,
              f"{lim['kv_blocks']:,} KV blocks" if lim.get("kv_blocks") else None,
              ("unified KV pool" if lim.get("kv_unified") else "KV per slot") if "kv_unified" in lim else None,
              f"--cache-ram {lim['cache_ram_mib']:g} MiB" if "cache_ram_mib" in lim else None,
              f"prefix caching {'on' if lim.get('prefix_caching') else 'off'}" if "prefix_caching" in lim else None,
              f"{lim['spec']} drafting {lim['draft_len']}, acceptance {lim['acceptance']:.2f}" if lim.get("spec") else None]
    lines = [f"{out['model']} on {gpus_label(out['gpus'], tuple(out.get('gpu_machine') or ()))}  [{out['engine']}, weights {out['quant']}, KV {out['kv_quant']}]",
             "server: " + ", ".join(x for x in server if x),
             f"workload: {w['requests']} requests, {arr}, {lengths}"
             + (f", shared prefix {w['prefix_tokens']:,} tokens" if w.get("prefix_tokens") else "") + f", seed {w['seed']}"]
    if "max_rate_per_s" in out:
        lines.append(f"highest rate meeting the SLO for 90% of requests: {out['max_rate_per_s']:.3g} req/s" if out["max_rate_per_s"]
                     else "no arrival rate meets the SLO for 90% of requests; below, one client at a time")
    lines += ["", f"{'':<14}{'p50':>10}{'p90':>10}{'p99':>10}{'mean':>10}"]
    for key, label, scale, unit in (("ttft_s", "TTFT", 1, "s"), ("tpot_s", "TPOT", 1000, "ms"),
                                    ("e2e_s", "end-to-end", 1, "s"), ("queue_s", "queued", 1, "s")):
        p = s[key]
        cells = "".join(f"{p[k] * scale:>10.3g}" if p[k] is not None else f"{'-':>10}" for k in ("p50", "p90", "p99", "mean"))
        lines.append(f"{label + ' (' + unit + ')':<14}{cells}")
    failed = (f"; {s['failed']} failed: the unified KV pool overflowed, which ends every running request"
              if s.get("failed") else "")
    lines += ["", f"completed {s['completed']} of {s['requests']} ({s['rejected']} rejected: longer than a slot or the "
                  f"cache{failed}) in {s['duration_s']:.1f} s: {s['request_throughput_per_s']:.3g} req/s, "
                  f"{s['output_tok_s']:.0f} output tok/s",
              f"preemptions {s['preemptions']}, KV cache peak {s['kv_peak_fraction']:.0%}"]
    slo = out["slo"]
    if slo["ttft_s"] is not None or slo["tpot_s"] is not None:
        lines.append(f"SLO (TTFT <= {slo['ttft_s']} s, TPOT <= {slo['tpot_s']} s): {s['slo_attained']:.0%} of "
                     f"requests, goodput {s['goodput_per_s']:.3g} req/s")
    lines += [f"note: {n}" for n in out.get("notes", [])]
    return "\n".join(lines)
