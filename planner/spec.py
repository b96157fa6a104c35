"""Speculative decoding: a drafter proposes `gamma` tokens, the target verifies them in one
forward pass of gamma + 1 tokens per sequence (docs/speculative.md).

Accepted tokens per verification step follow Leviathan, Kalman & Matias (ICML 2023,
arXiv:2211.17192): with per-token acceptance alpha, E[tokens] = (1 - alpha^(gamma+1)) / (1 - alpha).
Their speedup (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1)) assumes verifying gamma + 1
tokens costs one plain step; here both the drafter and the verification pass are priced by
the roofline of planner.perf, so verification grows with batch x (gamma + 1) tokens and turns
compute-bound, which is where speculation stops paying.

Drafters: `draft` (a small model of the same tokenizer, run autoregressively), `mtp` (the
target's built-in multi-token-prediction layer, autoregressive), `eagle` (an EAGLE-3 head: one
layer on fused target features, autoregressive) and `dflash` (a block drafter: one forward
drafts the whole block). Each becomes a Resolved model on the GPU that holds the target's
output head, so memory and speed reuse planner.memory and planner.perf unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from planner.arch import Architecture, Tensor
from planner.catalog import Catalog, DraftCard
from planner.errors import PlannerError, did_you_mean
from planner.memory import output_device
from planner.schema import Strict
from planner.units import MS

Method = Literal["draft", "mtp", "dflash", "eagle"]
METHODS: tuple[str, ...] = ("draft", "mtp", "dflash", "eagle")
BLOCK_METHODS = ("dflash",)  # one forward drafts the whole block
SWEEP_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SWEEP_DRAFT_LENS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 16)
BREAK_EVEN_MAX_BATCH = 4096  # the largest batch searched for the break-even point


# --- Leviathan et al. closed forms -------------------------------------------------------------


def expected_tokens(alpha, gamma):
    """Tokens produced per verification step (accepted drafts + the target's own token) for
    per-token acceptance `alpha` and draft length `gamma`: (1 - alpha^(gamma+1)) / (1 - alpha)."""
    a = np.asarray(alpha, dtype=float)
    g = np.asarray(gamma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = (1 - a ** (g + 1)) / (1 - a)
    return np.where(a >= 1, g + 1, e)


def leviathan_speedup(alpha, gamma, c):
    """Walltime speedup when one draft forward costs `c` target steps and verification costs
    one target step: E[tokens] / (gamma c + 1)."""
    return expected_tokens(alpha, gamma) / (np.asarray(gamma, dtype=float) * np.asarray(c, dtype=float) + 1)


def drafted_accept_rate(alpha: float, gamma: int) -> float:
    """Share of drafted tokens accepted, as llama.cpp and vLLM print it: (E[tokens] - 1) / gamma."""
    return float((expected_tokens(alpha, gamma) - 1) / gamma)


def alpha_for_accept_len(accept_len: float, gamma: int) -> float:
    """The per-token acceptance that gives `accept_len` tokens per step at draft length gamma."""
    if accept_len < 1:
        raise PlannerError(f"--accept-len {accept_len} is below 1: every verification step yields at least one token")
    if accept_len > gamma + 1 + 1e-9:
        raise PlannerError(f"--accept-len {accept_len} is more than draft length + 1 = {gamma + 1}: "
                           "raise --draft-len or lower --accept-len")
    if accept_len >= gamma + 1 - 1e-12:
        return 1.0
    if accept_len <= 1 + 1e-12:
        return 0.0
    return float(_brentq(lambda a: float(expected_tokens(a, gamma)) - accept_len, 0.0, 1.0 - 1e-15, xtol=1e-12))


def alpha_for_drafted_rate(rate: float, gamma: int) -> float:
    """Per-token acceptance from an engine's 'accepted / drafted' figure at draft length gamma."""
    return alpha_for_accept_len(1 + rate * gamma, gamma)


# --- resolving a drafter -----------------------------------------------------------------------


@dataclass(frozen=True)
class SpecPlan:
    """A resolved speculative setup: the drafter as a model, and the acceptance assumed."""

    method: Method
    name: str  # drafter id
    label: str
    block: bool
    draft: object  # planner.deployment.Resolved of the drafter (on one GPU)
    device: int  # index of the target GPU that holds the drafter
    shared_device_bytes: int  # drafter tensors that are the target's (head, embedding): not loaded twice
    shared_host_bytes: int
    gamma: int
    max_draft_len: int
    alpha: float
    accept_len: float
    accept_from: str  # what the user gave
    card: DraftCard | None
    notes: tuple[str, ...]


def parse_method(text: str) -> tuple[str, str | None]:
    """'mtp' -> ('mtp', None); 'draft:qwen3-0.6b' -> ('draft', 'qwen3-0.6b'); 'dflash:ID' picks a drafter."""
    method, _, ident = text.strip().partition(":")
    method = method.lower()
    if method not in METHODS:
        raise did_you_mean(method, list(METHODS), "speculative method")
    if method == "draft" and not ident:
        raise PlannerError("--spec draft needs a draft model: --spec draft:qwen3-0.6b (see `planner drafts`)")
    return method, ident or None


def _pick_card(catalog: Catalog, model_id: str, method: str, ident: str | None) -> DraftCard | None:
    if ident:
        if ident.lower() in (k.lower() for k in catalog.drafts):
            card = catalog.draft(ident)
            if card.method != method:
                raise PlannerError(f"{card.id} is a {card.method} drafter, not {method}; use --spec {card.method}:{card.id}")
            return card
        if method == "draft":
            return None  # a catalog model used as the draft
        raise did_you_mean(ident, list(catalog.drafts), "draft")
    cards = [d for d in catalog.drafts_for(model_id) if d.method == method]
    if cards:
        return cards[0]
    if method == "mtp":
        return None
    have = ", ".join(f"{d.method}:{d.id}" for d in catalog.drafts_for(model_id)) or "none"
    raise PlannerError(f"no {method} drafter for {model_id} in the catalog (drafts for it: {have}); see `planner drafts`")


def _weights(catalog: Catalog, arch: Architecture, quant: str, fmt: str):
    from planner.deployment import recipe_weights

    name, recipe = catalog.recipe(quant, fmt)
    if recipe.format != fmt:
        raise PlannerError(f"draft quant {name} is {recipe.format}; this engine loads {fmt}")
    return name, recipe_weights(catalog, arch, recipe)


def _mtp_drafter(r):
    """The target's first MTP block as a one-layer model with the target's head."""
    from planner.deployment import WeightTensor

    a = r.arch
    if not a.mtp_layers:
        raise PlannerError(f"{r.model_id} has no MTP layers (its config has no mtp_num_hidden_layers / "
                           "num_nextn_predict_layers); try --spec dflash, eagle or draft:MODEL")
    first = a.n_layers
    mtp = [w for w in r.weights if w.tensor.group == "mtp" and w.tensor.layer == first]
    if not mtp:
        raise PlannerError("these weights carry no MTP tensors (most GGUFs drop them); use an MTP-preserving file")
    head = [w for w in r.weights if w.tensor.role == "output" and w.tensor.group == "text"]
    if not head:  # tied: the head is the embedding matrix
        head = [w for w in r.weights if w.tensor.role == "token_embd"]
    norm = [w for w in r.weights if w.tensor.name == "output_norm.weight"]
    weights = tuple(WeightTensor(replace(w.tensor, layer=0, group="text"), w.storage, w.bytes) for w in mtp)
    weights += tuple(WeightTensor(replace(w.tensor, name="output.weight", role="output", layer=None), w.storage, w.bytes)
                     for w in head[:1]) + tuple(norm)
    layer = next(x for x in reversed(a.layers) if x.kind != "linear")
    arch = replace(a, layers=(layer,), moe_layers=(a.moe_layers[-1] if a.moe_layers else False,),
                   tensors=tuple(w.tensor for w in weights), mtp_layers=0, n_vision_params=0, tie_word_embeddings=False)
    return arch, weights


def _head_drafter(card: DraftCard):
    """A DFlash / EAGLE drafter's architecture: its config's layers, the fc projection of the
    tapped target hidden states, and its head (the target's, or its own draft vocabulary)."""
    from planner.arch import parse_config

    cfg = dict(card.config or {})
    if card.draft_vocab is not None:
        cfg["vocab_size"] = int(card.draft_vocab.value)  # EAGLE-3: the head predicts a reduced vocabulary
    arch = parse_config(cfg)
    taps = int(card.target_layers_tapped.value) if card.target_layers_tapped else 1
    h = arch.hidden_size
    fc = Tensor("blk.0.fc.weight", "other", h, taps * h, 0, 1, "text")
    return replace(arch, tensors=arch.tensors + (fc,))


def resolve_spec(catalog: Catalog, r, method_text: str, draft_len: int | None, accept: float | None,
                 accept_len: float | None, draft_quant: str | None):
    """The SpecPlan of a resolved target deployment `r`."""
    from planner.deployment import MAX_DRAFT_LEN, Deployment, resolve, weight_format

    method, ident = parse_method(method_text)
    if method == "mtp" and not r.arch.mtp_layers:  # no MTP layers of its own: a separate MTP drafter (Gemma 4's)
        named = [catalog.draft(ident)] if ident and ident.lower() in (k.lower() for k in catalog.drafts) else \
            [d for d in catalog.drafts_for(r.model_id) if d.engine_method == "mtp"]
        if named and named[0].engine_method == "mtp":
            method, ident = named[0].method, named[0].id
    eng = r.engine.speculative
    if eng is None or method not in eng.methods:
        raise PlannerError(f"{r.engine.id} has no {method} speculative decoding")
    if method in eng.no_pipeline_methods and r.split == "layer" and len(r.gpus) > 1:
        raise PlannerError(f"{r.engine.id} runs {method} speculative decoding only without a pipeline split "
                           f"(pp_size 1); use --split tensor")
    notes = [eng.method_notes[method]] if method in eng.method_notes else []
    card = _pick_card(catalog, r.model_id, method, ident)
    fmt = weight_format(r.engine)
    dev = output_device(r) * r.stage_gpus  # the drafter sits with the target's output head (its stage's first GPU)
    gpu = r.gpus[dev]
    common = dict(gpus=(gpu,), split="layer", tp=0, nodes=(), expert_parallel=False, cpu_moe_layers=0, tensor_split=None,
                  auto_offload=False, exact_weights=False, host_ram_bytes=None)
    if method == "draft":
        model_id = card.model if card else ident
        dcard = catalog.model(model_id)
        if dcard.id == r.model_id:
            raise PlannerError("the draft model is the target itself; pick a smaller model of the same tokenizer")
        diff = abs(dcard.arch.vocab_size - r.arch.vocab_size)
        if diff > (eng.max_vocab_difference or 0):
            raise PlannerError(f"{dcard.id} (vocab {dcard.arch.vocab_size:,}) cannot draft for {r.model_id} "
                               f"(vocab {r.arch.vocab_size:,}): engines need the same tokenizer")
        dq = draft_quant or (r.quant if r.quant != "as-file" else r.engine.default_quant)
        d = resolve(catalog, Deployment(model=dcard.id, gpus=(gpu.id,), engine=r.engine.id, quant=dq,
                                        kv_quant=r.kv_quant, batch=r.batch, ubatch_tokens=r.ubatch_tokens,
                                        flash_attention=r.flash_attention, host=r.host.id if r.host else None))
        name, label = (card.id if card else dcard.id), f"draft model {dcard.name} {d.quant}"
        shares_head = shares_emb = False
    elif method == "mtp":
        if draft_quant:
            raise PlannerError("--draft-quant does not apply to MTP: the MTP layer comes with the target's weights")
        arch, weights = _mtp_drafter(r)
        d = replace(r, model_id=f"{r.model_id}-mtp", model_name=f"{r.model_name} MTP", arch=arch, weights=weights,
                    gpu_layers=1, **common)
        name, label = (card.id if card else f"{r.model_id}-mtp"), f"built-in MTP layer ({r.quant})"
        shares_head, shares_emb = True, True
    else:
        arch = _head_drafter(card)
        dq = draft_quant or card.default_quant.get(fmt) or r.engine.default_quant
        dq, weights = _weights(catalog, arch, dq, fmt)
        d = replace(r, model_id=card.id, model_name=card.name, arch=arch, weights=weights, quant=dq,
                    gpu_layers=arch.n_layers, **common)
        name, label = card.id, f"{card.name} {dq}"
        shares_head, shares_emb = card.shares_head, card.shares_embedding
        vocab = (card.config or {}).get("vocab_size")
        if card.draft_vocab is None and vocab not in (None, r.arch.vocab_size):
            notes.append(f"{card.id} was built for a vocabulary of {vocab:,} tokens, not {r.arch.vocab_size:,}")

    lb = d.layer_bytes
    emb_on_host = d.engine.memory.token_embedding_on_host
    shared_dev = (lb.output_bytes if shares_head else 0) + (lb.input_bytes if shares_emb and not emb_on_host else 0)
    shared_host = lb.input_bytes if shares_emb and emb_on_host else 0

    block = int(card.block_size.value) if card and card.block_size else None
    max_len = block - 1 if block else MAX_DRAFT_LEN
    if draft_len is None:
        if card and card.recommended_draft_len:
            draft_len = int(card.recommended_draft_len.value)
        elif eng.default_draft_len:
            draft_len = int(eng.default_draft_len.value)
        else:
            raise PlannerError(f"{r.engine.id} has no default draft length for {method}; give --draft-len")
    if not 1 <= draft_len <= max_len:
        raise PlannerError(f"--draft-len {draft_len} is out of range for {name}: 1 to {max_len}"
                           + (f" (block size {block})" if block else ""))
    if accept is not None and accept_len is not None:
        raise PlannerError("give --accept or --accept-len, not both")
    if accept is None and accept_len is None:
        raise PlannerError("speculative decoding needs an acceptance: --accept 0.7 (per drafted token) "
                           "or --accept-len 3.5 (tokens per verification step)"
                           + _reported_hint(card))
    if accept is not None:
        if not 0 <= accept <= 1:
            raise PlannerError(f"--accept {accept} must be between 0 and 1")
        alpha, how = accept, f"--accept {accept:g}"
    else:
        alpha, how = alpha_for_accept_len(accept_len, draft_len), f"--accept-len {accept_len:g}"
    return SpecPlan(method=method, name=name, label=label, block=method in BLOCK_METHODS, draft=d, device=dev,
                    shared_device_bytes=shared_dev, shared_host_bytes=shared_host, gamma=draft_len,
                    max_draft_len=max_len, alpha=alpha, accept_len=float(expected_tokens(alpha, draft_len)),
                    accept_from=how, card=card, notes=tuple(notes))


def _reported_hint(card: DraftCard | None) -> str:
    if not card or not card.reported:
        return ""
    r = card.reported[0]
    fig = f"accept length {r.accept_len:g}" if r.accept_len else f"{r.drafted_accept_rate:.0%} of drafted tokens accepted"
    return f"; {card.id} reports {fig} ({r.where})"


def drafter_params(catalog: Catalog, card: DraftCard) -> int:
    """Parameters of a drafter's own tensors (shared embedding / head excluded); 0 for MTP
    (it depends on the target)."""
    if card.method == "draft":
        return catalog.model(card.model).arch.params()
    if card.method == "mtp":
        return 0
    arch = _head_drafter(card)
    skip = {"token_embd"} if card.shares_embedding else set()
    if card.shares_head:
        skip.add("output")
    return sum(t.params for t in arch.tensors if t.role not in skip)


def with_acceptance(spec: SpecPlan, alpha: float, gamma: int) -> SpecPlan:
    return replace(spec, alpha=alpha, gamma=gamma, accept_len=float(expected_tokens(alpha, gamma)))


# --- speed -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecModel:
    """Compiled target and drafter step models."""

    target: object  # planner.perf.StepModel
    draft: object
    spec: SpecPlan


def compile_spec(catalog: Catalog, r, cal) -> SpecModel:
    from planner.speed import step_model

    return SpecModel(step_model(catalog, r, cal), step_model(catalog, r.spec.draft, cal), r.spec)


def cycle_times(m: SpecModel, batch, depth, gamma, alpha=None):
    """(draft, verify, state-keeping) seconds of one speculation cycle for arrays of batch,
    depth, gamma (and alpha, which sets how often a rejected draft rolls the state back).

    A hybrid target (linear-attention layers) must be able to return its recurrent state to
    the last accepted token: llama.cpp copies each sequence's state to a host-memory checkpoint
    every cycle and back after a rejection (over PCIe); vLLM/SGLang keep one state slot per
    drafted position on the GPU (gamma extra state writes per sequence)."""
    from planner.perf import step

    b, d, g = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (batch, depth, gamma)))
    q = g + 1
    # every token of the verification batch returns logits (the server adds each with output = true:
    # tools/server/server-context.cpp:569-572), so the output head and the logits copy run for all of them
    verify = step(m.target, b * q, b, q, d, outputs=b * q).total
    if m.spec.block:
        draft = step(m.draft, b * q, b, q, d).total
    else:
        draft = g * step(m.draft, b, b, np.ones_like(b), d).total
    t = m.target
    state = sum(s.state_bytes for s in t.gpus)  # per sequence, bytes
    keep = np.zeros_like(b)
    if state:
        mode = m.spec.draft.engine.speculative.recurrent_checkpoint if m.spec.draft.engine.speculative else "device"
        if mode == "host":
            a = np.asarray(0.0 if alpha is None else alpha, dtype=float)
            reject = 1 - a ** g  # some draft token rejected: restore the checkpoint
            keep = b * state * (1 + reject) / t.pcie_bandwidth
        else:
            bw = min(s.bandwidth for s in t.gpus) * t.eff.weight_bw
            keep = b * state * g / bw
    return draft, verify, keep


def token_time(m: SpecModel, batch, depth, gamma, alpha):
    """Seconds per generated token of one sequence with speculation."""
    draft, verify, keep = cycle_times(m, batch, depth, gamma, alpha)
    return (draft + verify + keep) / expected_tokens(alpha, gamma)


def spec_decode_time(m: SpecModel, batch, depth0, gen, gamma, alpha):
    """Seconds to generate `gen` tokens per sequence from depth0 (Simpson over depth, as
    planner.perf.decode_time)."""
    from planner.perf import SIMPSON

    gen = np.asarray(gen, dtype=float)
    t = sum(w * token_time(m, batch, np.asarray(depth0, dtype=float) + f * gen, gamma, alpha)
            for w, f in zip(SIMPSON, (0.0, 0.5, 1.0)))
    return t * gen


def _compute_bound(sm, tokens, seqs, q, depth) -> np.ndarray:
    """Whether a step spends more time computing than moving bytes on its GPUs."""
    from planner.perf import step

    st = step(sm, tokens, seqs, q, depth)
    gpu = [o for o in st.stages if o.stage != "host RAM"]
    # time of the operations each roofline side limits (per-layer overhead counts for neither)
    comp = sum(sum(np.where(c > mt, t, 0.0) for c, mt, t in zip(o.compute_time, o.memory_time, o.time)) for o in gpu)
    mem = sum(sum(np.where(mt >= c, np.where(mt > 0, t, 0.0), 0.0)
                  for c, mt, t in zip(o.compute_time, o.memory_time, o.time)) for o in gpu)
    return comp > mem


class SweepRow(Strict):
    alpha: float
    tok_s: tuple[float, ...]  # per stream, one per draft length
    best_draft_len: int
    best_tok_s: float
    best_speedup: float


class SpecEstimate(Strict):
    method: str
    drafter: str
    drafter_label: str
    draft_len: int
    alpha: float
    accept_len: float  # tokens per verification step
    drafted_accept_rate: float  # accepted / drafted, as engines print it
    accept_from: str
    draft_s_per_step: float  # drafting for one cycle
    verify_s_per_step: float
    state_keep_s_per_step: float  # hybrid targets: recurrent-state checkpoints / per-position slots
    plain_step_s: float
    draft_cost_ratio: float  # c: one draft forward / one plain target step
    leviathan_speedup: float  # closed form with that c (verification priced as one plain step)
    decode_tok_s: float  # per stream
    decode_total_tok_s: float
    plain_decode_tok_s: float
    speedup: float
    ttft_s: float | None
    draft_prefill_s: float | None
    verify_bound: str
    break_even_batch: int | None  # smallest batch where speculation is slower than plain decoding
    compute_bound_batch: int | None  # smallest batch where the verification pass is compute-bound
    max_batch_searched: int
    sweep_draft_lens: tuple[int, ...] = ()
    sweep: tuple[SweepRow, ...] = ()
    notes: tuple[str, ...]


def _first(mask: np.ndarray, values: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(values[idx[0]]) if idx.size else None


def estimate_spec(catalog: Catalog, r, base, cal, sweep: bool = False) -> SpecEstimate:
    """Speculative decoding speed of deployment `r` (with r.spec) next to its plain estimate `base`."""
    from planner.perf import decode_step_time, prefill_time

    s: SpecPlan = r.spec
    m = compile_spec(catalog, r, cal)
    b, g, a = r.batch, s.gamma, s.alpha
    d0 = base.depth_tokens + base.prompt_tokens
    gen = max(base.gen_tokens, 1)
    t_spec = float(spec_decode_time(m, [b], [d0], [gen], [g], [a])[0])
    tok_s = gen / t_spec
    dmid = d0 + gen / 2
    draft_s, verify_s, keep_s = (float(x[0]) for x in cycle_times(m, [b], [dmid], [g], [a]))
    plain_s = float(decode_step_time(m.target, [b], [dmid])[0])
    one_draft = draft_s if s.block else draft_s / g
    c = one_draft / plain_s
    lev = float(leviathan_speedup(a, g, c)) if not s.block else float(expected_tokens(a, g) / (c + 1))

    # where speculation stops paying, at this acceptance and draft length
    bs = np.arange(1, BREAK_EVEN_MAX_BATCH + 1, dtype=float)
    dd = np.full_like(bs, dmid)
    t_sp = token_time(m, bs, dd, np.full_like(bs, g), np.full_like(bs, a))
    t_pl = decode_step_time(m.target, bs, dd)
    even = _first(t_sp > t_pl, bs)
    q = g + 1
    cb = _first(_compute_bound(m.target, bs * q, bs, np.full_like(bs, q), dd), bs)
    vb = "compute" if _compute_bound(m.target, [b * q], [b], [q], [dmid])[0] else "memory bandwidth"

    ttft = dpre = None
    if base.ttft_s is not None and base.prompt_tokens > 0:
        dpre = float(prefill_time(m.draft, [b], [base.prompt_tokens], [base.depth_tokens], [r.ubatch_tokens])[0])
        ttft = base.ttft_s + dpre
    notes = list(s.notes)
    if keep_s:
        notes.append(f"hybrid model: keeping the recurrent state for rollback costs {keep_s / MS:.2f} ms per cycle")
    if r.engine.family == "llama.cpp" and s.method != "dflash":
        notes.append("llama.cpp stops a draft early when the drafter's confidence falls under --draft-p-min; "
                     "planner drafts the full draft length every step")

    rows, lens = (), ()
    if sweep:
        lens = tuple(x for x in SWEEP_DRAFT_LENS if x <= s.max_draft_len)
        alphas = sorted(set(SWEEP_ALPHAS) | {round(a, 4)})
        A, G = np.meshgrid(np.array(alphas), np.array(lens, dtype=float), indexing="ij")
        T = spec_decode_time(m, np.full(A.shape, b, dtype=float), np.full(A.shape, d0, dtype=float),
                             np.full(A.shape, gen, dtype=float), G, A)
        tok = gen / T
        plain_tok = base.decode_tok_s
        out = []
        for i, al in enumerate(alphas):
            j = int(np.argmax(tok[i]))
            out.append(SweepRow(alpha=al, tok_s=tuple(float(x) for x in tok[i]), best_draft_len=lens[j],
                                best_tok_s=float(tok[i, j]), best_speedup=float(tok[i, j] / plain_tok)))
        rows = tuple(out)
    return SpecEstimate(
        method=s.method, drafter=s.name, drafter_label=s.label, draft_len=g, alpha=a, accept_len=s.accept_len,
        drafted_accept_rate=drafted_accept_rate(a, g), accept_from=s.accept_from, draft_s_per_step=draft_s,
        verify_s_per_step=verify_s, state_keep_s_per_step=keep_s, plain_step_s=plain_s, draft_cost_ratio=c, leviathan_speedup=lev,
        decode_tok_s=tok_s, decode_total_tok_s=tok_s * b, plain_decode_tok_s=base.decode_tok_s,
        speedup=tok_s / base.decode_tok_s, ttft_s=ttft, draft_prefill_s=dpre, verify_bound=vb,
        break_even_batch=even, compute_bound_batch=cb, max_batch_searched=BREAK_EVEN_MAX_BATCH,
        sweep_draft_lens=lens, sweep=rows, notes=tuple(notes))


# --- checking a published claim ----------------------------------------------------------------


class Claim(Strict):
    observed_tok_s: float  # decode tokens/s per stream, as claimed
    ceiling_tok_s: float  # plain decoding with every operation at 100% of peak
    ratio_to_ceiling: float
    predicted_tok_s: float  # what planner predicts for plain decoding (or the --spec setup given)
    ratio_to_predicted: float
    verdict: Literal["plausible", "above-prediction", "needs-speculation", "impossible"]
    min_accept_len_at_ceiling: float | None  # tokens per verification step, with a free drafter at 100% of peak
    min_accept_len_predicted: float | None  # at the calibrated efficiencies (and the --spec drafter's cost)
    draft_len_for_min: int | None
    min_alpha: float | None  # per-token acceptance that gives min_accept_len_predicted at that draft length
    max_tokens_per_step: int  # the longest verification the check allows (largest catalog block / engine draft + 1)
    max_spec_tok_s_at_ceiling: float  # the most speculation could give, at 100% of peak
    message: str


def max_tokens_per_step(catalog: Catalog, r) -> int:
    """The longest verification any catalog drafter or engine default makes: block size, or
    draft length + 1."""
    lens = [int(d.block_size.value) for d in catalog.drafts.values() if d.block_size]
    eng = r.engine.speculative
    if eng and eng.default_draft_len:
        lens.append(int(eng.default_draft_len.value) + 1)
    return max(lens + [2])


def check_claim(catalog: Catalog, r, base, cal, observed: float, spec_est: SpecEstimate | None = None) -> Claim:
    """Is `observed` decode tok/s (per stream) possible for deployment `r`, and what would it take?"""
    from planner.perf import ceiling_step_time, step
    from planner.speed import step_model

    if not observed > 0 or not math.isfinite(observed):
        raise PlannerError(f"--observed {observed} must be a positive speed in tokens/s")
    sm = step_model(catalog, r, cal)
    b = r.batch
    d = base.depth_tokens + base.prompt_tokens + max(base.gen_tokens, 1) / 2
    lmax = max_tokens_per_step(catalog, r)
    qs = np.arange(1, lmax + 1, dtype=float)
    bb = np.full_like(qs, b)
    dd = np.full_like(qs, d)
    t_ceil = ceiling_step_time(sm, bb * qs, bb, qs, dd)
    ceiling = 1 / float(t_ceil[0])
    if r.spec is not None:
        m = compile_spec(catalog, r, cal)
        draft, verify, keep = cycle_times(m, bb, dd, qs - 1, r.spec.alpha)
        t_pred = draft + verify + keep
        t_pred[0] = step(sm, [b], [b], [1], [d]).total[0]
    else:
        t_pred = step(sm, bb * qs, bb, qs, dd).total
    predicted = spec_est.decode_tok_s if spec_est else base.decode_tok_s

    def need(times):
        L = observed * times  # tokens per step needed at each verification length q
        ok = L <= qs + 1e-9
        if not ok.any():
            return None, None
        i = int(np.flatnonzero(ok)[0])
        return float(max(L[i], 1.0)), int(qs[i])

    l_ceil, _ = need(t_ceil)
    l_pred, q_pred = need(t_pred)
    max_spec = float(np.max(qs / t_ceil))
    ratio_c, ratio_p = observed / ceiling, observed / predicted
    alpha = None
    if l_pred is not None and q_pred and q_pred > 1:
        alpha = alpha_for_accept_len(min(l_pred, q_pred), q_pred - 1)
    if observed <= predicted:
        verdict = "plausible"
        msg = (f"{observed:g} tok/s is {ratio_p:.0%} of the {predicted:.1f} tok/s planner predicts "
               + ("for this speculative setup" if spec_est else "for plain decoding") + ": nothing unusual")
    elif observed <= ceiling:
        verdict = "above-prediction"
        msg = (f"{observed:g} tok/s is above the predicted {predicted:.1f} tok/s but under the physical ceiling "
               f"of {ceiling:.1f} tok/s: possible with a more efficient engine"
               + (f", or with speculation yielding at least {l_pred:.2f} tokens per step" if l_pred else ""))
    elif l_ceil is None:
        verdict = "impossible"
        msg = (f"impossible on this hardware: even {lmax} tokens accepted per verification step at 100% of peak "
               f"bandwidth and compute give at most {max_spec:.1f} tok/s")
    else:
        verdict = "needs-speculation"
        msg = (f"{observed:g} tok/s is {ratio_c:.2f}x the plain-decoding ceiling of {ceiling:.1f} tok/s: it needs "
               f"speculative decoding with at least {l_ceil:.2f} tokens per verification step at 100% of peak")
        if l_pred is not None:
            msg += (f", or {l_pred:.2f} at the efficiencies planner predicts (draft length {q_pred - 1}"
                    + (f", per-token acceptance {alpha:.2f}" if alpha is not None else "") + ")")
        else:
            msg += f"; at the efficiencies planner predicts no draft length up to {lmax - 1} reaches it"
    return Claim(observed_tok_s=observed, ceiling_tok_s=ceiling, ratio_to_ceiling=ratio_c, predicted_tok_s=predicted,
                 ratio_to_predicted=ratio_p, verdict=verdict, min_accept_len_at_ceiling=l_ceil,
                 min_accept_len_predicted=l_pred, draft_len_for_min=(q_pred - 1) if q_pred else None, min_alpha=alpha,
                 max_tokens_per_step=lmax, max_spec_tok_s_at_ceiling=max_spec, message=msg)


def _brentq(*a, **kw):
    """scipy's root finder, imported on first use (scipy.optimize costs ~0.35 s to import)."""
    from scipy.optimize import brentq

    return brentq(*a, **kw)
