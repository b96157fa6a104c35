"""`compare`: rank GPU sets for one model and workload by fit, speed, price and power.

Consumes planner.memory and planner.speed: every option is re-planned, never estimated by rule
of thumb. The ranking, the budget filter and the Pareto front are defined in
docs/compare.md; this module owns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from planner.calibration import Calibration
from planner.catalog import Catalog, ModelCard
from planner.deployment import Deployment, pick_engine, resolve, weight_format
from planner.errors import PlannerError
from planner.memory import max_context, plan_memory
from planner.schema import Strict
from planner.speed import estimate
from planner.units import GiB

# Policy, not physics: the weight quants people choose between, best quality first (llama.cpp's
# common K-quant ladder; for the servers the released checkpoint, FP8 and a 4-bit W4A16).
QUANT_LADDER = {"gguf": ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"), "safetensors": ("bf16", "fp8", "awq"),
                "mlx": ("mlx-8bit", "mlx-6bit", "mlx-4bit")}
# KV-cache types, best quality first; each engine offers a subset (its profile's kv_types).
KV_LADDER = ("f16", "bf16", "q8_0", "fp8", "fp8_e4m3", "q4_0")
KV_PER_ENGINE = 3  # the ladder is cut to this many per engine


@dataclass(frozen=True)
class Workload:
    """What the ranking optimises. Defaults are the engines' own benchmark defaults."""

    name: str
    batch: int
    ctx_tokens: int  # per sequence
    prompt_tokens: int
    gen_tokens: int
    metric: Literal["decode_tok_s", "decode_total_tok_s"]
    what: str


WORKLOADS = {
    # llama-bench's pp512/tg128, one stream, a 32k chat context
    "chat": Workload("chat", 1, 32768, 512, 128, "decode_tok_s", "one stream: decode tok/s per stream"),
    # vllm bench serve's random dataset (input 1024, output 128), 16 concurrent 8k-context sequences
    "batch": Workload("batch", 16, 8192, 1024, 128, "decode_total_tok_s", "16 streams: decode tok/s across the batch"),
}

Status = Literal["fits", "no-fit", "over-budget", "no-price", "unsupported"]


class Option(Strict):
    quant: str
    kv_quant: str
    fits: bool
    total_bytes: int  # all devices
    usable_bytes: int


class Entry(Strict):
    gpus: tuple[str, ...]
    label: str  # e.g. 2xrtx3090, or m4max / m4max for several machines
    nodes: tuple[int, ...] = ()  # several machines: each GPU's (in `gpus` order); () = one machine
    engine: str | None
    status: Status
    reason: str  # why it is not ranked, or ""
    rank: int | None  # 1 = fastest of the sets that fit (within budget); None when not ranked
    quant: str | None  # best quality that fits
    kv_quant: str | None
    max_ctx_tokens: int | None
    vram_bytes: int
    decode_tok_s: float | None  # per stream
    decode_total_tok_s: float | None
    decode_full_ctx_tok_s: float | None  # per stream, at the end of the context
    prefill_tok_s: float | None
    ttft_s: float | None
    decode_bound: str | None
    speed_tok_s: float | None  # the workload's metric, what the ranking sorts by
    price_usd: float | None
    price_basis: str | None  # e.g. "street 2026-06-22" per GPU kind
    tok_s_per_kusd: float | None  # speed per 1,000 USD
    power_w: float | None  # board power (TDP) of the GPUs
    tok_s_per_w: float | None
    pareto: bool  # on the price-speed front
    options: tuple[Option, ...]


class Comparison(Strict):
    model: str
    model_name: str
    workload: str
    metric: str
    metric_what: str
    ctx_tokens: int
    batch: int
    prompt_tokens: int
    gen_tokens: int
    budget_usd: float | None
    calibration: str
    entries: tuple[Entry, ...]
    notes: tuple[str, ...]


def candidate_sets(catalog: Catalog, max_gpus: int) -> list[tuple[str, ...]]:
    """Every catalog GPU alone, and each dedicated-memory card in counts 2..max_gpus."""
    out = []
    for g in sorted(catalog.gpus.values(), key=lambda g: g.id):
        out.append((g.id,))
        if g.memory_kind == "dedicated":
            out += [(g.id,) * n for n in range(2, max_gpus + 1)]
    return out


def set_label(gpus: tuple[str, ...]) -> str:
    """(a, a, b) -> '2xa,b' (the --gpu syntax)."""
    parts, i = [], 0
    while i < len(gpus):
        j = i
        while j < len(gpus) and gpus[j] == gpus[i]:
            j += 1
        parts.append(gpus[i] if j - i == 1 else f"{j - i}x{gpus[i]}")
        i = j
    return ",".join(parts)


def set_price(catalog: Catalog, gpus: tuple[str, ...]) -> tuple[float | None, str | None]:
    """Sum of the GPUs' prices (street where known, else launch) and the basis of each kind."""
    total, basis = 0.0, []
    for gid in dict.fromkeys(gpus):
        p = catalog.gpu(gid).price_usd()
        if p is None:
            return None, None
        total += p[0] * gpus.count(gid)
        basis.append(f"{gid}: {p[1]}")
    return total, "; ".join(basis)


def set_power(catalog: Catalog, gpus: tuple[str, ...]) -> float | None:
    tdps = [catalog.gpu(g).specs.tdp for g in gpus]
    return None if any(t is None for t in tdps) else sum(t.si for t in tdps)


def _ladder(catalog: Catalog, engine, fmt: str, quants: tuple[str, ...] | None, kvs: tuple[str, ...] | None):
    """Quants and KV types to try, best first. The default KV ladder starts at the engine's
    default and keeps each next type only if it is smaller (bf16 after f16 would buy nothing)."""
    if kvs:
        return quants or QUANT_LADDER[fmt], kvs
    out, size = [], float("inf")
    for k in (engine.default_kv_type,) + KV_LADDER:
        b = catalog.kv_types.types[k].bytes_per_value
        if k in engine.kv_types and b < size and len(out) < KV_PER_ENGINE:
            out.append(k)
            size = b
    return quants or QUANT_LADDER[fmt], tuple(out)


def compare(catalog: Catalog, card: ModelCard, sets: list[tuple[str, ...]], workload: Workload,
            cal: Calibration, quants: tuple[str, ...] | None = None, kvs: tuple[str, ...] | None = None,
            engine: str | None = None, split: str | None = None, budget_usd: float | None = None,
            auto: bool = False, machines: dict[int, tuple[int, ...]] | None = None,
            network: str | None = None) -> Comparison:
    """Plan `card` on every GPU set; rank the sets that fit by the workload's metric.

    `auto` (sets from candidate_sets): more of one card is only tried while fewer of them do not
    already run the best quant and KV type of the ladder; a layer split of more cards would only
    cost more (docs/compare.md)."""
    entries: list[Entry] = []
    saturated: set[str] = set()  # cards that already run the best quant and KV type with fewer of them
    for i, gpus in enumerate(sets):
        if auto and len(set(gpus)) == 1 and gpus[0] in saturated:
            continue
        nodes = (machines or {}).get(i, ())
        e = _plan_set(catalog, card, gpus, workload, cal, quants, kvs, engine, split, budget_usd, nodes,
                      network if nodes else None)
        if auto and e.status == "fits" and split != "tensor" and e.options[0].fits:
            saturated.add(gpus[0])
        entries.append(e)
    ranked = sorted((e for e in entries if e.status == "fits"), key=lambda e: -(e.speed_tok_s or 0.0))
    front = pareto_front([(e.price_usd, e.speed_tok_s) for e in ranked])
    ranked = [e.model_copy(update={"rank": i + 1, "pareto": i in front}) for i, e in enumerate(ranked)]
    rest = sorted((e for e in entries if e.status != "fits"), key=lambda e: (_STATUS_ORDER[e.status], e.label))
    notes = []
    chosen = {e.quant for e in ranked}
    if len(chosen) > 1:
        notes.append("rows run different quants (the best each set fits); --quant Q compares like for like")
    if any(e.price_basis and "launch" in e.price_basis for e in ranked):
        notes.append("launch prices are used where no street price is known")
    notes.append("power is board power (TDP) of the GPUs, not measured draw; host, CPU and PSU are not counted")
    if machines:
        how = ("llama.cpp RPC" if all(e.engine.startswith("llama.cpp") for e in ranked if e.nodes) else
               "llama.cpp RPC, or vLLM / SGLang with a pipeline stage per machine")
        notes.append(f"sets over several machines ({how} over {network}): the GPUs are priced, not the other "
                     "machines they sit in; their decode is an upper bound (published runs over several machines lost "
                     "more per token than planned, docs/multinode.md#validation)")
    notes.append("GPU memory only: `planner fit` plans host-RAM offload for sets that do not fit")
    return Comparison(
        model=card.id, model_name=card.name, workload=workload.name, metric=workload.metric, metric_what=workload.what,
        ctx_tokens=workload.ctx_tokens, batch=workload.batch, prompt_tokens=workload.prompt_tokens,
        gen_tokens=workload.gen_tokens, budget_usd=budget_usd, calibration=cal.id, entries=tuple(ranked + rest),
        notes=tuple(notes))


_STATUS_ORDER = {"fits": 0, "no-fit": 1, "over-budget": 2, "no-price": 3, "unsupported": 4}


def pareto_front(points: list[tuple[float | None, float | None]]) -> set[int]:
    """Indices of the points no other point dominates (price no higher and speed no lower, one
    of them strictly). Points without a price or speed are never on the front."""
    front = set()
    for i, (p, s) in enumerate(points):
        if p is None or s is None:
            continue
        dominated = any(q is not None and t is not None and q <= p and t >= s and (q < p or t > s)
                        for j, (q, t) in enumerate(points) if j != i)
        if not dominated:
            front.add(i)
    return front


def machines_label(gpus: tuple[str, ...], nodes: tuple[int, ...]) -> str:
    """(a, b, b), (0, 0, 1) -> 'a,b / b' (the --gpu syntax for several machines)."""
    return " / ".join(set_label(tuple(g for g, n in zip(gpus, nodes) if n == k)) for k in sorted(set(nodes)))


def _empty(gpus, label, engine, status, reason, vram, price, basis, power, options=(), nodes=()) -> Entry:
    return Entry(gpus=gpus, label=label, nodes=nodes, engine=engine, status=status, reason=reason, rank=None, quant=None,
                 kv_quant=None, max_ctx_tokens=None, vram_bytes=vram, decode_tok_s=None, decode_total_tok_s=None,
                 decode_full_ctx_tok_s=None, prefill_tok_s=None, ttft_s=None, decode_bound=None, speed_tok_s=None,
                 price_usd=price, price_basis=basis, tok_s_per_kusd=None, power_w=power, tok_s_per_w=None,
                 pareto=False, options=tuple(options))


def _plan_set(catalog, card, gpus, w: Workload, cal, quants, kvs, engine_name, split, budget, nodes=(), network=None):
    label = machines_label(gpus, nodes) if nodes else set_label(gpus)
    unranked = partial(_empty, nodes=nodes)  # every unranked row says which machines it was
    objs = tuple(catalog.gpu(g) for g in gpus)
    vram = sum(g.memory_bytes for g in objs)
    price, basis = set_price(catalog, gpus)
    power = set_power(catalog, gpus)
    try:
        eng = pick_engine(catalog, objs, engine_name, False)
    except PlannerError as e:
        return unranked(gpus, label, None, "unsupported", str(e), vram, price, basis, power)
    if budget is not None:
        if price is None:
            return unranked(gpus, label, eng.id, "no-price", "no price in the catalog: cannot check the budget",
                          vram, price, basis, power)
        if price > budget:
            return unranked(gpus, label, eng.id, "over-budget", f"${price:,.0f} is over the budget of ${budget:,.0f}",
                          vram, price, basis, power)
    fmt = weight_format(eng)
    qs, ks = _ladder(catalog, eng, fmt, quants, kvs)
    options, chosen, last_err = [], None, ""
    for q in qs:
        try:
            dep = Deployment(model=card.id, gpus=gpus, engine=eng.id, quant=q, kv_quant=ks[0],
                             ctx_tokens=w.ctx_tokens, batch=w.batch, split=split, nodes=nodes, network=network)
            base = resolve(catalog, dep, card=card)
        except PlannerError as e:
            last_err = str(e)
            continue
        for k in ks:
            try:
                r = base if k == ks[0] else resolve(catalog, dep.model_copy(update={"kv_quant": k}), card=card)
            except PlannerError as e:
                last_err = str(e)
                continue
            plan = plan_memory(r, w.ctx_tokens)
            total = sum(d.total_bytes for d in plan.devices)
            options.append(Option(quant=r.quant, kv_quant=r.kv_quant, fits=plan.fits, total_bytes=total,
                                  usable_bytes=sum(d.usable_bytes for d in plan.devices)))
            if plan.fits and chosen is None:
                chosen = r
    if not options:
        return unranked(gpus, label, eng.id, "unsupported", last_err, vram, price, basis, power)
    if chosen is None:
        least = min(options, key=lambda o: o.total_bytes - o.usable_bytes)
        short = (least.total_bytes - least.usable_bytes) / GiB
        return unranked(gpus, label, eng.id, "no-fit",
                      f"needs {short:.1f} GiB more even at {least.quant} with a {least.kv_quant} KV cache",
                      vram, price, basis, power, options)
    p = estimate(catalog, chosen, w.ctx_tokens, w.prompt_tokens, w.gen_tokens, 0, cal)
    speed = getattr(p, w.metric)
    return Entry(
        gpus=gpus, label=label, nodes=nodes, engine=eng.id, status="fits", reason="", rank=None, quant=chosen.quant,
        kv_quant=chosen.kv_quant, max_ctx_tokens=max_context(chosen), vram_bytes=vram, decode_tok_s=p.decode_tok_s,
        decode_total_tok_s=p.decode_total_tok_s, decode_full_ctx_tok_s=p.decode_at[-1].tok_s,
        prefill_tok_s=p.prefill_tok_s, ttft_s=p.ttft_s, decode_bound=p.decode_bound, speed_tok_s=speed,
        price_usd=price, price_basis=basis, tok_s_per_kusd=speed / price * 1000 if price else None, power_w=power,
        tok_s_per_w=speed / power if power else None, pareto=False, options=tuple(options))


class ModelFit(Strict):
    """One catalog model on a given GPU set: its best quant and KV type that fit, and their speed."""

    model: str
    name: str
    params: int
    entry: Entry


def runnable_models(catalog: Catalog, gpus: tuple[str, ...], workload: Workload, cal, engine: str | None = None,
                    split: str | None = None) -> list[ModelFit]:
    """Every catalog model planned on `gpus` as `compare` plans a GPU set (the best quant of the
    engine's ladder that fits with the best KV type at it), fastest first by the workload's
    metric; models that do not fit follow, largest last."""
    out = []
    for card in sorted(catalog.models.values(), key=lambda m: m.id):
        e = _plan_set(catalog, card, gpus, workload, cal, None, None, engine, split, None)
        native = card.arch.max_position_embeddings
        if e.status == "fits" and native < workload.ctx_tokens:  # it cannot hold the context asked at all
            e = e.model_copy(update={"status": "no-fit", "reason": f"its native context is {native:,} tokens, "
                                     f"shorter than the {workload.ctx_tokens:,} asked"})
        out.append(ModelFit(model=card.id, name=card.name, params=card.arch.params(), entry=e))
    fits = sorted((m for m in out if m.entry.status == "fits"), key=lambda m: -(m.entry.speed_tok_s or 0))
    rest = sorted((m for m in out if m.entry.status != "fits"), key=lambda m: m.params)
    ranked = [m.model_copy(update={"entry": m.entry.model_copy(update={"rank": i})}) for i, m in enumerate(fits, 1)]
    return ranked + rest
