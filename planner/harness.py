"""The live calibration harness behind `planner calibrate run` (docs/calibration.md).

It measures the card it runs on (device-to-device copy bandwidth, matmul throughput per dtype)
and then runs a real transformer built from a catalog model's architecture (planner.arch: the
same tensors and shapes the planner sizes, GQA, full and sliding-window attention layers,
attention output gates, q/k norms, biases, routed and shared experts) with random weights, timing
prefill of prompts and
decode steps at depths, over batch sizes. Each timing becomes a measured-run row
(planner.runs.Run) with engine `torch-cuda`, so `planner calibrate fit` can fit that engine's
efficiency factors on it and `planner validate` can score the model against it.

How it runs (the engine profile hwdb/engines/torch-cuda.toml describes the same):
  * weights bf16/f16 (F.linear, cuBLAS) or FP8 e4m3 with per-tensor scales (torch._scaled_mm,
    activations quantized per step); embeddings, norms and the output head stay bf16;
  * prefill: one forward of batch x prompt tokens, SDPA causal attention (flash);
  * decode: one token per sequence attending to `depth` cached tokens, in the fastest of three
    attention forms timed on the card first (decode_attention; SDPA on H100 and H200);
  * on CUDA every step is captured as a CUDA graph and the median of graph replays is taken, as
    vLLM and llama.cpp run decode (Python issuing kernels is not what is measured);
  * layer split: contiguous halves of the layers on each GPU, stages in turn, the hidden state
    copied between them; tensor split: one process per GPU (torch.distributed, NCCL), heads and
    FFN columns sharded, an all-reduce after the attention output and after the FFN.

Speed does not depend on weight values, so weights are random (normal, never zeros: zeros can
run faster). Routed experts run as grouped GEMMs over the tokens sorted by expert
(torch._grouped_mm, bf16), so each step reads the experts its tokens were routed to, as MoE
engines do. Models with MLA or linear-attention (Gated DeltaNet) layers, or per-layer embeddings,
are refused: the harness implements softmax-attention transformers.

PyTorch is an optional extra: this module is imported only by `planner calibrate run`.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from planner import units
from planner.arch import Architecture
from planner.errors import PlannerError

torch = None  # imported on first use (require_torch): `planner` itself never needs PyTorch
F = None

ENGINE = "torch-cuda"
DTYPES = {"bf16": "bfloat16", "f16": "float16", "fp8": "float8_e4m3fn"}
FP8_MAX = 448.0  # largest finite float8 e4m3fn value
ROPE_THETA = 10000.0  # rotary base; its value does not change the work, only the angles
DEFAULT_PROMPTS = (128, 512, 2048, 8192)
DEFAULT_DEPTHS = (128, 2048, 8192, 32768)
DEFAULT_BATCHES = (1, 4, 16, 64)
PREFILL_BATCHED = ((4, 512), (16, 512))  # (batch, prompt) prefill points beside batch 1
MEMORY_SHARE = 0.85  # of free memory after weights the grid may fill with KV cache and activations
COPY_BYTES = 1 << 30  # device-to-device copy size for the bandwidth measurement
MATMUL_N = 8192  # square matmul size for the throughput measurement
TP_STARTUP_S, TP_POINT_S = 120, 20
GROUP_ALIGN = 16  # rows per expert group are padded to this on CUDA (grouped GEMM alignment)  # a tensor split run is stopped after this (seconds), keeping what it measured


def require_torch():
    """PyTorch, imported here on first use, or a one-line error saying how to install it."""
    global torch, F
    if torch is None:
        try:
            import torch as _torch
            import torch.nn.functional as _F
        except ImportError:
            raise PlannerError("the harness needs PyTorch: pip install 'planner[harness]' (or a torch >= 2.4 build "
                               "for your GPU)") from None
        torch, F = _torch, _F
    return torch


# --------------------------------------------------------------------------------------------
# The measurement grid (pure logic: no torch)


@dataclass(frozen=True)
class Point:
    phase: str  # "prefill" or "decode"
    batch: int
    prompt: int = 0  # prefill: tokens per sequence processed in the step
    depth: int = 0  # decode: tokens already in each sequence's cache

    @property
    def tokens_cached(self) -> int:
        """Cache positions each sequence needs for this point."""
        return self.prompt if self.phase == "prefill" else self.depth + 1


def supported(arch: Architecture, quant: str = "bf16") -> None:
    """Refuse architectures the harness does not implement, with the reason."""
    if arch.n_experts > 1 and quant != "bf16":
        raise PlannerError("the harness runs routed experts in bf16 only (torch._grouped_mm): use --quant bf16")
    kinds = {a.kind for a in arch.layers}
    if kinds - {"full", "sliding"}:
        raise PlannerError(f"the harness builds softmax-attention transformers; this model has "
                           f"{'/'.join(sorted(kinds - {'full', 'sliding'}))} layers (not implemented)")
    if any(a.kv_shared for a in arch.layers) or any(t.name.startswith("per_layer") for t in arch.tensors):
        raise PlannerError("the harness does not implement shared-KV layers or per-layer embeddings (Gemma 'E' "
                           "models)")


def kv_bytes_per_token(arch: Architecture, dtype_bytes: int = 2) -> int:
    return sum(a.kv_elems_per_token for a in arch.layers) * dtype_bytes


def cached_bytes(arch: Architecture, p: Point, dtype_bytes: int = 2) -> int:
    """KV cache the point allocates: every sequence holds its tokens (sliding layers their window)."""
    total = 0
    for a in arch.layers:
        n = p.tokens_cached if a.window_tokens is None or p.prompt else min(p.tokens_cached, a.window_tokens)
        total += a.kv_elems_per_token * n
    return total * dtype_bytes * p.batch


def activation_bytes(arch: Architecture, p: Point, dtype_bytes: int = 2) -> int:
    """Largest live activations of a step: the FFN intermediate (gate, up, product) and the
    attention scores of one layer, plus the logits of the batch."""
    tokens = p.batch * (p.prompt if p.phase == "prefill" else 1)
    inter = max((t.rows for t in arch.tensors if t.role == "ffn_up"), default=4 * arch.hidden_size)
    heads = arch.n_heads
    scores = p.batch * heads * (p.depth + 1) * 4 if p.phase == "decode" else 0  # f32 scores per layer
    return tokens * (3 * inter + 6 * arch.hidden_size) * dtype_bytes + scores + p.batch * arch.vocab_size * 4


def plan_points(arch: Architecture, free_bytes: int, prompts=DEFAULT_PROMPTS, depths=DEFAULT_DEPTHS,
                batches=DEFAULT_BATCHES, prefill_batched=PREFILL_BATCHED) -> tuple[list[Point], list[Point]]:
    """The grid to run and the points left out because they would not fit in `free_bytes`
    (memory after weights) or exceed the model's context."""
    want = [Point("prefill", 1, prompt=p) for p in prompts]
    want += [Point("prefill", b, prompt=p) for b, p in prefill_batched if p in prompts or not prompts]
    want += [Point("decode", b, depth=d) for d in depths for b in batches]
    keep, dropped = [], []
    for p in want:
        need = cached_bytes(arch, p) + activation_bytes(arch, p)
        too_long = p.tokens_cached > arch.max_position_embeddings
        (dropped if need > free_bytes * MEMORY_SHARE or too_long else keep).append(p)
    return keep, dropped


# --------------------------------------------------------------------------------------------
# The card's ceilings


def _median_ms(fn: Callable[[], None], repeats: int, device) -> float:
    """Median wall time of fn in ms: CUDA events on a GPU, the host clock on the CPU."""
    for _ in range(2):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) / units.MS)
    return statistics.median(times)


def measure_ceilings(device, repeats: int = 10, copy_bytes: int = COPY_BYTES, n: int = MATMUL_N,
                     log: Callable[[str], None] = print) -> dict:
    """Copy bandwidth (bytes read + written per second) and dense matmul throughput per dtype the
    card runs; each the median of `repeats` timings on random data, inputs rotated over 3 sets
    so repeats do not run from cache."""
    require_torch()
    out: dict = {"copy_bandwidth_GB_s": None, "matmul_TFLOP_s": {}}
    ms = _median_ms(_copy_fn(copy_bytes, device), repeats, device)
    out["copy_bandwidth_GB_s"] = float(f"{2 * copy_bytes / (ms * units.MS) / units.GB:.4g}")
    log(f"  copy bandwidth {out['copy_bandwidth_GB_s']:.0f} GB/s ({copy_bytes / units.GiB:g} GiB copies)")
    flop = 2 * n ** 3
    for name in ("fp32", "tf32", "bf16", "f16", "fp8", "int8"):
        try:
            fn = _matmul_fn(name, n, device)
        except Exception as e:  # the dtype is not supported by this card or this torch build
            log(f"  matmul {name}: not run ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
            continue
        ms = _median_ms(fn, repeats, device)
        out["matmul_TFLOP_s"][name] = float(f"{flop / (ms * units.MS) / units.TFLOP:.4g}")
        log(f"  matmul {name} {n}^3: {out['matmul_TFLOP_s'][name]:.1f} TFLOP/s")
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def _copy_fn(nbytes: int, device) -> Callable[[], None]:
    """One device-to-device copy of `nbytes` random bytes (freed with the callable)."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _matmul_fn(name: str, n: int, device) -> Callable[[], None]:
    sets = []
    for _ in range(3):
        if name == "int8":
            a = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
            b = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device).t()
        elif name == "fp8":
            a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
            b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()
        else:
            dt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]
            a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        sets.append((a, b))
    one = torch.ones((), device=device)
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    i = [0]

    def fn():
        a, b = sets[i[0] % 3]
        i[0] += 1
        if name == "int8":
            torch._int_mm(a, b)
        elif name == "fp8":
            torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        else:
            a @ b

    fn()  # raises here if the dtype is not supported
    return fn


# --------------------------------------------------------------------------------------------
# The model


@dataclass
class Shard:
    """Which part of the model one device holds: a range of layers (layer split) and a slice of
    the heads and FFN columns (tensor split: rank of world)."""

    layers: range
    rank: int = 0
    world: int = 1
    first: bool = True  # holds the token embedding
    last: bool = True  # holds the final norm and output head
    group: object = None  # torch.distributed process group under a tensor split


@dataclass
class _Layer:
    kind: str
    heads: int
    kv_heads: int
    k_dim: int
    v_dim: int
    window: int | None
    gated: bool
    w: dict = field(default_factory=dict)
    moe_top_k: int = 0  # experts each token is routed to (0: no routed experts)


class Linear:
    """y = x W^T in bf16/f16 (F.linear) or FP8 (torch._scaled_mm with per-tensor scales)."""

    def __init__(self, rows: int, cols: int, dtype, device, fp8: bool, gen):
        w = torch.randn(rows, cols, device=device, dtype=torch.bfloat16 if fp8 else dtype, generator=gen)
        w.mul_(1 / math.sqrt(cols))
        self.fp8 = fp8
        if fp8:
            self.scale = (w.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
            self.w = (w / self.scale).to(torch.float8_e4m3fn)
        else:
            self.w = w

    def __call__(self, x):
        if not self.fp8:
            return F.linear(x, self.w)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        sx = (x2.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
        xq = (x2 / sx).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, self.w.t(), scale_a=sx, scale_b=self.scale, out_dtype=torch.bfloat16)
        return y.reshape(*shape[:-1], y.shape[-1])

    @property
    def nbytes(self) -> int:
        return self.w.numel() * self.w.element_size()


class HarnessModel:
    """A decoder built from an Architecture's tensors, for timing; holds `shard` of it."""

    def __init__(self, arch: Architecture, quant: str, device, shard: Shard | None = None, seed: int = 0):
        require_torch()
        supported(arch, quant)
        if quant not in DTYPES:
            raise PlannerError(f"--quant {quant!r}: the harness runs {', '.join(DTYPES)}")
        self.arch, self.device = arch, torch.device(device)
        self.shard = shard or Shard(range(arch.n_layers))
        self.fp8 = quant == "fp8"
        self.dtype = torch.bfloat16 if quant in ("bf16", "fp8") else torch.float16
        gen = torch.Generator(device=self.device).manual_seed(seed)
        h, sh = arch.hidden_size, self.shard
        by_name = {t.name: t for t in arch.tensors}

        def dense(rows, cols):
            return torch.randn(rows, cols, device=self.device, dtype=self.dtype, generator=gen) * (1 / math.sqrt(cols))

        def lin(rows, cols):
            return Linear(rows, cols, self.dtype, self.device, self.fp8, gen)

        def stack(n, rows, cols):  # n experts' (out, in) matrices, as checkpoints store them
            return torch.randn(n, rows, cols, device=self.device, dtype=self.dtype, generator=gen) * (
                1 / math.sqrt(cols))

        self.embed = dense(arch.vocab_size, h) if sh.first or (sh.last and arch.tie_word_embeddings) else None
        self.head = None
        if sh.last:
            self.norm = torch.ones(h, device=self.device, dtype=self.dtype)
            self.head = self.embed if arch.tie_word_embeddings else dense(arch.vocab_size // sh.world, h)
        self.layers: list[_Layer] = []
        for i in sh.layers:
            a = arch.layers[i]
            p = f"blk.{i}."
            q_rows = by_name[p + "attn_q.weight"].rows
            gated = q_rows == 2 * a.n_heads * a.k_head_dim
            heads, kv = _split(a.n_heads, sh.world), _split(a.n_kv_heads, sh.world, replicate=True)
            L = _Layer(a.kind, heads, kv, a.k_head_dim, a.v_head_dim, a.window_tokens, gated)
            L.w["q"] = lin(heads * a.k_head_dim * (2 if gated else 1), h)
            L.w["k"] = lin(kv * a.k_head_dim, h)
            L.w["v"] = lin(kv * a.v_head_dim, h) if p + "attn_v.weight" in by_name else None
            L.w["o"] = lin(h, heads * a.v_head_dim)
            if p + "attn_qkv.bias" in by_name:
                L.w["bias"] = torch.randn(by_name[p + "attn_qkv.bias"].cols // sh.world, device=self.device,
                                          dtype=self.dtype, generator=gen) * 0.02
            if p + "attn_q_norm.weight" in by_name:
                L.w["q_norm"] = torch.ones(a.k_head_dim, device=self.device, dtype=self.dtype)
                L.w["k_norm"] = torch.ones(a.k_head_dim, device=self.device, dtype=self.dtype)
            if p + "ffn_up.weight" in by_name:  # a dense FFN (beside the experts in some MoE models)
                inter = by_name[p + "ffn_up.weight"].rows // sh.world
                L.w["gate"], L.w["up"], L.w["down"] = lin(inter, h), lin(inter, h), lin(h, inter)
            if p + "ffn_up_exps.weight" in by_name:  # routed experts: stacked (E, in, out) for grouped GEMMs
                t = by_name[p + "ffn_up_exps.weight"]
                E, inter = t.n_experts, t.rows // sh.world
                L.moe_top_k = arch.n_experts_per_tok
                L.w["router"] = Linear(E, h, self.dtype, self.device, False, gen)
                L.w["exp_gate"], L.w["exp_up"] = stack(E, inter, h), stack(E, inter, h)
                L.w["exp_down"] = stack(E, h, inter)
            if p + "ffn_up_shexp.weight" in by_name:  # shared experts: a dense FFN every token takes
                inter = by_name[p + "ffn_up_shexp.weight"].rows // sh.world
                L.w["sh_gate"], L.w["sh_up"], L.w["sh_down"] = lin(inter, h), lin(inter, h), lin(h, inter)
                if p + "ffn_gate_inp_shexp.weight" in by_name:
                    L.w["sh_router"] = Linear(1, h, self.dtype, self.device, False, gen)
            L.w["attn_norm"] = torch.ones(h, device=self.device, dtype=self.dtype)
            L.w["ffn_norm"] = torch.ones(h, device=self.device, dtype=self.dtype)
            self.layers.append(L)
        self.cache: list = []
        self.decode_attn = "bmm"  # see decode_attention; choose_decode_attention picks the fastest

    # -- memory

    def weight_bytes(self) -> int:
        n = 0
        for t in [self.embed, self.head]:
            if t is not None:
                n += t.numel() * t.element_size()
        if self.head is not None and self.head is self.embed:
            n -= self.head.numel() * self.head.element_size()
        for L in self.layers:
            for v in L.w.values():
                if isinstance(v, Linear):
                    n += v.nbytes
                elif v is not None:
                    n += v.numel() * v.element_size()
        return n

    def alloc_cache(self, batch: int, tokens: int, prompt: int = 0) -> None:
        """Room for `tokens` positions per sequence. For decode (`prompt` 0) a sliding layer keeps
        a ring of its window only, as engines do; a prompt is written whole."""
        self.cache = []
        for L in self.layers:
            n = tokens if L.window is None or prompt else min(tokens, L.window)
            self.cache.append((torch.randn(batch, L.kv_heads, n, L.k_dim, device=self.device, dtype=self.dtype),
                               torch.randn(batch, L.kv_heads, n, L.v_dim, device=self.device, dtype=self.dtype)))

    # -- compute

    def _rope_tables(self, pos0: int, T: int) -> dict:
        """cos/sin of the rotary embedding for positions pos0.., once per step for each head size."""
        out = {}
        for D in {L.k_dim for L in self.layers}:
            inv = 1.0 / (ROPE_THETA ** (torch.arange(0, D, 2, device=self.device, dtype=torch.float32) / D))
            ang = torch.arange(pos0, pos0 + T, device=self.device, dtype=torch.float32)[:, None] * inv[None, :]
            out[D] = (ang.cos().to(self.dtype), ang.sin().to(self.dtype))
        return out

    @staticmethod
    def _rope(x, table):
        """Rotary embedding (rotate-half form) of x (B, H, T, D)."""
        cos, sin = table
        D = x.shape[-1]
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def _reduce(self, x):
        if self.shard.world > 1:
            torch.distributed.all_reduce(x, group=self.shard.group)
        return x

    def layer(self, j: int, x, pos0: int, rope: dict):
        """One decoder layer on x (B, T, h) whose first token sits at position pos0."""
        L, (kc, vc) = self.layers[j], self.cache[j]
        B, T, _ = x.shape
        y = F.rms_norm(x, (x.shape[-1],), L.w["attn_norm"])
        q, k = L.w["q"](y), L.w["k"](y)
        v = L.w["v"](y) if L.w["v"] is not None else k
        if "bias" in L.w:
            nq, nk = q.shape[-1], k.shape[-1]
            q = q + L.w["bias"][:nq]
            k = k + L.w["bias"][nq:nq + nk]
            v = v + L.w["bias"][nq + nk:nq + nk + v.shape[-1]]
        gate = None
        if L.gated:
            q, gate = q.view(B, T, L.heads, 2 * L.k_dim).chunk(2, dim=-1)
            gate = gate.reshape(B, T, L.heads * L.k_dim)
        q = q.reshape(B, T, L.heads, L.k_dim).transpose(1, 2)
        k = k.reshape(B, T, L.kv_heads, L.k_dim).transpose(1, 2)
        v = v.reshape(B, T, L.kv_heads, L.v_dim).transpose(1, 2)
        if "q_norm" in L.w:
            q = F.rms_norm(q, (L.k_dim,), L.w["q_norm"])
            k = F.rms_norm(k, (L.k_dim,), L.w["k_norm"])
        q, k = self._rope(q, rope[L.k_dim]), self._rope(k, rope[L.k_dim])
        n = kc.shape[2]
        ring = L.window is not None and n <= L.window  # a decode cache of the window: slot = position mod n
        start = pos0 % n if ring else pos0
        kc[:, :, start:start + T] = k
        vc[:, :, start:start + T] = v
        if T == 1:  # decode: GQA as a batched matmul over the cache, K and V read once
            lo = max(0, pos0 + 1 - L.window) if L.window is not None and not ring else 0
            hi = min(pos0 + 1, n)
            o = decode_attention(self.decode_attn, q, kc[:, :, lo:hi], vc[:, :, lo:hi])
        else:  # prefill from an empty cache: causal flash attention over the prompt itself
            kk, vv = k, v
            if L.window is not None and T > L.window:
                mask = torch.ones(T, T, device=x.device, dtype=torch.bool).tril().triu(-L.window + 1)
                o = F.scaled_dot_product_attention(q, _rep(kk, L), _rep(vv, L), attn_mask=mask)
            else:
                o = F.scaled_dot_product_attention(q, _rep(kk, L), _rep(vv, L), is_causal=True)
        o = o.transpose(1, 2).reshape(B, T, L.heads * L.v_dim)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        x = x + self._reduce(L.w["o"](o))
        y = F.rms_norm(x, (x.shape[-1],), L.w["ffn_norm"])
        out = torch.zeros_like(y)
        if "down" in L.w:
            out = out + L.w["down"](F.silu(L.w["gate"](y)) * L.w["up"](y))
        if L.moe_top_k:
            out = out + self._experts(L, y)
        if "sh_down" in L.w:
            sh = L.w["sh_down"](F.silu(L.w["sh_gate"](y)) * L.w["sh_up"](y))
            if "sh_router" in L.w:
                sh = sh * torch.sigmoid(L.w["sh_router"](y))
            out = out + sh
        return x + self._reduce(out)

    @staticmethod
    def _experts(L: _Layer, y, align: int | None = None):
        """Routed experts: top-k of a softmax router per token (weights renormalized over the k),
        tokens sorted by expert and run through grouped GEMMs (torch._grouped_mm), so each expert's
        weights are read once per step and only where tokens were routed. Shapes stay static for
        CUDA graphs: counts by scatter_add, no host round trip; on CUDA each expert's group of rows
        is padded to a multiple of GROUP_ALIGN (the grouped kernels' alignment)."""
        B, T, h = y.shape
        flat = y.reshape(B * T, h)
        E, k = L.w["exp_gate"].shape[0], L.moe_top_k
        probs = L.w["router"](flat).float().softmax(-1)
        top_w, top_i = probs.topk(k, dim=-1)
        top_w = (top_w / top_w.sum(-1, keepdim=True)).to(y.dtype)
        flat_i = top_i.reshape(-1)
        order = torch.argsort(flat_i, stable=True)
        token, expert = order // k, flat_i[order]
        counts = torch.zeros(E, dtype=torch.int64, device=y.device).scatter_add_(0, flat_i, torch.ones_like(flat_i))
        align = align or (GROUP_ALIGN if y.is_cuda else 1)
        padded = (counts + align - 1) // align * align
        ends = padded.cumsum(0)
        # row of each sorted (token, expert) pair in the padded layout: its group's start + its rank in the group
        rank = torch.arange(order.numel(), device=y.device) - (counts.cumsum(0) - counts)[expert]
        row = (ends - padded)[expert] + rank
        xs = flat.new_zeros(order.numel() + E * (align - 1), h).index_copy_(0, row, flat[token])
        offs = ends.to(torch.int32)

        def mm(a, w):  # (rows, in) x (E, out, in) -> (rows, out): the weights as a column-major (in, out) view
            return torch._grouped_mm(a, w.transpose(-2, -1), offs=offs)

        a = F.silu(mm(xs, L.w["exp_gate"])) * mm(xs, L.w["exp_up"])
        o = mm(a, L.w["exp_down"])[row] * top_w.reshape(-1)[order, None]
        return torch.zeros_like(flat).index_add_(0, token, o).reshape(B, T, h)

    def forward(self, inp, pos0: int):
        """Tokens (B, T) on the first shard, hidden states (B, T, h) otherwise; returns the
        logits of each sequence's last token on the last shard, else the hidden states."""
        x = F.embedding(inp, self.embed) if self.shard.first else inp
        rope = self._rope_tables(pos0, x.shape[1])
        for j in range(len(self.layers)):
            x = self.layer(j, x, pos0, rope)
        if not self.shard.last:
            return x
        last = F.rms_norm(x[:, -1], (x.shape[-1],), self.norm)
        return F.linear(last, self.head)


DECODE_ATTENTION = ("bmm", "kq", "sdpa")


def decode_attention(form: str, q, k, v):
    """Attention of one query token per sequence over its cache: q (B, H, 1, D), k (B, Hkv, L, D),
    v (B, Hkv, L, Dv) -> (B, H, 1, Dv). Three forms, the same function (tests check they agree):
    "bmm" scores = q K^T as a batched matmul per KV head (GQA: the group's queries together);
    "kq" the same with the cache as the tall operand (K q^T), which parallelizes over positions;
    "sdpa" torch's scaled_dot_product_attention with grouped KV heads (flash, split over the
    cache where torch does)."""
    B, H, _, D = q.shape
    hkv, Dv = k.shape[1], v.shape[-1]
    if form == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != H)
    qg = q.view(B, hkv, H // hkv, D)
    scale = 1 / math.sqrt(D)
    if form == "kq":
        s = torch.matmul(k, qg.transpose(-1, -2)).float() * scale  # (B, Hkv, L, G)
        p = s.softmax(-2).to(q.dtype)
        return torch.matmul(p.transpose(-1, -2), v).reshape(B, H, 1, Dv)
    s = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # (B, Hkv, G, L)
    return torch.matmul(s.softmax(-1).to(q.dtype), v).reshape(B, H, 1, Dv)


def choose_decode_attention(model: HarnessModel, depths: tuple[int, ...], batches: tuple[int, ...],
                            log: Callable[[str], None]) -> str:
    """The fastest decode-attention form for the model's first layer geometry on this device, timed
    at the longest depth with batch 1 and at 2,048 tokens with the largest batch (an engine picks
    its kernels the same way); "bmm" on the CPU."""
    if model.device.type != "cuda" or not model.layers:
        return "bmm"
    L = model.layers[0]
    cases = [(1, max(depths)), (max(batches), min(2048, max(depths)))]
    best, times = "bmm", {}
    for form in DECODE_ATTENTION:
        total = 0.0
        try:
            for b, n in cases:
                total += _median_ms(_attention_fn(form, L, b, n, model), 10, model.device)
        except RuntimeError as e:
            log(f"  decode attention {form}: not available ({str(e).splitlines()[0][:80]})")
            continue
        times[form] = total
    best = min(times, key=times.get) if times else best
    log("  decode attention: " + ", ".join(f"{f} {t:.3f} ms" for f, t in times.items()) + f" -> {best}")
    return best


def _attention_fn(form: str, L: _Layer, batch: int, n: int, model: HarnessModel) -> Callable[[], object]:
    """One decode-attention call of `form` for layer L's geometry over `n` cached tokens."""
    q = torch.randn(batch, L.heads, 1, L.k_dim, device=model.device, dtype=model.dtype)
    k = torch.randn(batch, L.kv_heads, n, L.k_dim, device=model.device, dtype=model.dtype)
    v = torch.randn(batch, L.kv_heads, n, L.v_dim, device=model.device, dtype=model.dtype)
    return lambda: decode_attention(form, q, k, v)


def _split(n: int, world: int, replicate: bool = False) -> int:
    if world == 1:
        return n
    if n % world:
        if replicate:  # fewer KV heads than GPUs: each GPU keeps a copy (vLLM does the same)
            return max(1, n // world) if n >= world else n
        raise PlannerError(f"{n} attention heads do not divide over {world} GPUs")
    return n // world


def _rep(t, L: _Layer):
    g = L.heads // L.kv_heads
    return t if g == 1 else t.repeat_interleave(g, dim=1)


# --------------------------------------------------------------------------------------------
# Running the grid


@dataclass
class Setup:
    """What `planner calibrate run` was asked to measure."""

    model: str  # catalog id
    arch: Architecture
    quant: str
    gpu: str  # catalog id the rows are labelled with
    devices: list[str]  # torch devices, e.g. ["cuda:0"] or ["cuda:0", "cuda:1"]
    split: str | None = None  # "layer" or "tensor" with two or more devices
    prompts: tuple[int, ...] = DEFAULT_PROMPTS
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    batches: tuple[int, ...] = DEFAULT_BATCHES
    prefill_batched: tuple[tuple[int, int], ...] = PREFILL_BATCHED
    repeats: int = 7  # timed samples per point (median taken)
    graphs: bool = True  # capture steps as CUDA graphs (CUDA only)
    seed: int = 0
    decode_attn: str = "bmm"  # decode attention form (decode_attention); measure() picks the fastest on CUDA


@dataclass(frozen=True)
class Measured:
    point: Point
    seconds: float  # one step: the prompt's forward, or one decode step
    peak_bytes: int | None  # device memory in use at the point's peak (largest over devices)
    graphs: bool

    @property
    def tok_s(self) -> float:
        p = self.point
        return p.batch * (p.prompt if p.phase == "prefill" else 1) / self.seconds


class _Pipeline:
    """One or more model shards run in turn (one device, or a layer split), with a step function
    per point that CUDA graphs replay where they can."""

    def __init__(self, s: Setup):
        n, k = s.arch.n_layers, len(s.devices)
        cuts = [round(i * n / k) for i in range(k + 1)]
        self.devices = [torch.device(d) for d in s.devices]
        self.models = [HarnessModel(s.arch, s.quant, d, Shard(range(cuts[i], cuts[i + 1]), first=i == 0,
                                                              last=i == k - 1), seed=s.seed + i)
                       for i, d in enumerate(s.devices)]
        self.s = s

    def sync(self):
        for d in self.devices:
            if d.type == "cuda":
                torch.cuda.synchronize(d)

    def prepare(self, p: Point):
        """A callable that runs one step of the point, and whether it replays CUDA graphs."""
        tokens = torch.randint(0, self.s.arch.vocab_size, (p.batch, p.prompt if p.phase == "prefill" else 1),
                               device=self.devices[0])
        pos0 = 0 if p.phase == "prefill" else p.depth
        for m in self.models:
            m.alloc_cache(p.batch, p.tokens_cached, p.prompt)
        use_graphs = self.s.graphs and all(d.type == "cuda" for d in self.devices)
        if not use_graphs:
            def step():
                x = tokens
                for m in self.models:
                    x = m.forward(x.to(m.device), pos0)
                if len(self.models) > 1 and p.phase == "decode":  # feed the token back, as decode does
                    tokens.copy_(x.argmax(-1, keepdim=True))
                return x
            return step, False
        graphs, outs, x = [], [], tokens
        for m in self.models:
            with torch.cuda.device(m.device):
                inp = x.to(m.device) if x.device != m.device else x
                inp = inp.clone()
                side = torch.cuda.Stream(m.device)
                side.wait_stream(torch.cuda.current_stream(m.device))
                with torch.cuda.stream(side):
                    for _ in range(2):
                        m.forward(inp, pos0)
                torch.cuda.current_stream(m.device).wait_stream(side)
                g = torch.cuda.CUDAGraph()
                # capture on a stream of this device: torch's default capture stream belongs to the
                # device that was current when the first graph was made
                with torch.cuda.graph(g, stream=torch.cuda.Stream(m.device)):
                    out = m.forward(inp, pos0)
                graphs.append((m.device, g, inp))
                outs.append(out)
                x = out

        feedback = len(graphs) > 1 and p.phase == "decode"

        def step():
            prev = None
            for (dev, g, inp), out in zip(graphs, outs):
                with torch.cuda.device(dev):
                    if prev is not None:
                        inp.copy_(prev, non_blocking=True)
                    g.replay()
                prev = out
            if feedback:  # the next token depends on this one: stages of successive steps cannot overlap
                graphs[0][2].copy_(prev.argmax(-1, keepdim=True))
            return prev
        return step, True

    def release(self):
        for m in self.models:
            m.cache = []
        for d in self.devices:
            if d.type == "cuda":
                with torch.cuda.device(d):
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(d)

    def peak_bytes(self, base: list[int]) -> int | None:
        if self.devices[0].type != "cuda":
            return None
        return max(b + torch.cuda.max_memory_reserved(d) for b, d in zip(base, self.devices))


def context_bytes(device) -> int:
    """Device memory in use that PyTorch's allocator does not hold (CUDA context, libraries)."""
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def time_step(step: Callable[[], object], sync: Callable[[], None], repeats: int, inner: int) -> float:
    """Median seconds of one step over `repeats` samples of `inner` back-to-back steps, after
    two warm-up steps."""
    for _ in range(2):
        step()
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            step()
        sync()
        samples.append((time.perf_counter() - t) / inner)
    return statistics.median(samples)


def measure(s: Setup, points: list[Point], log: Callable[[str], None]) -> list[Measured]:
    """Run every point on one device or a layer split (a tensor split runs in `measure_tp`)."""
    require_torch()
    pipe = _Pipeline(s)
    s.decode_attn = choose_decode_attention(pipe.models[0], s.depths, s.batches, log)
    for m in pipe.models:
        m.decode_attn = s.decode_attn
    base = [context_bytes(d) for d in pipe.devices] if pipe.devices[0].type == "cuda" else []
    out = []
    for i, p in enumerate(points, 1):
        pipe.release()
        try:
            step, graphs = pipe.prepare(p)
            sec = time_step(step, pipe.sync, s.repeats, 5 if p.phase == "decode" else 1)
        except torch.OutOfMemoryError:
            log(f"  [{i}/{len(points)}] {label(p)}: out of memory, skipped")
            continue
        except RuntimeError as e:  # a kernel this torch build or card lacks: report and go on
            log(f"  [{i}/{len(points)}] {label(p)}: failed ({str(e).splitlines()[0][:120]}), skipped")
            continue
        finally:
            step = None  # drop the captured graph (and its memory pool) before the next point
        m = Measured(p, sec, pipe.peak_bytes(base), graphs)
        out.append(m)
        log(_progress(i, len(points), m))
    pipe.release()
    return out


def label(p: Point) -> str:
    return f"prefill b={p.batch} p={p.prompt}" if p.phase == "prefill" else f"decode b={p.batch} d={p.depth}"


def _progress(i: int, n: int, m: Measured) -> str:
    mem = f", peak {m.peak_bytes / units.GiB:.1f} GiB" if m.peak_bytes else ""
    return f"  [{i}/{n}] {label(m.point)}: {m.seconds / units.MS:.3f} ms/step, {m.tok_s:,.0f} tok/s{mem}"


def measure_tp(s: Setup, points: list[Point], log: Callable[[str], None]) -> list[Measured]:
    """A tensor split: one process per device, NCCL all-reduces; rank 0 reports."""
    require_torch()
    import json
    import tempfile

    import torch.multiprocessing as mp

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast (shared hosts)
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    probe = HarnessModel(s.arch, s.quant, s.devices[0], Shard(range(1), 0, len(s.devices), first=False, last=False))
    s.decode_attn = choose_decode_attention(probe, s.depths, s.batches, log)
    del probe
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    deadline = time.monotonic() + TP_STARTUP_S + TP_POINT_S * len(points)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_tp_worker, args=(s, points, tmp), nprocs=len(s.devices), join=False,
                                 start_method="spawn")
        path = os.path.join(tmp, "result.json")

        def done() -> bool:  # every point measured: ranks may linger in NCCL teardown, stop them
            try:
                return len(json.load(open(path))) == len(points)
            except (OSError, ValueError):
                return False

        try:
            while not ctx.join(timeout=2):
                if done():
                    for proc in ctx.processes:
                        proc.terminate()
                    break
                if time.monotonic() > deadline:
                    log(f"  tensor split: stopped after {TP_STARTUP_S + TP_POINT_S * len(points)} s; keeping the "
                        "points measured so far")
                    for proc in ctx.processes:
                        proc.terminate()
                    break
        except Exception as e:  # a rank failed: keep what rank 0 had written
            log(f"  tensor split: a rank failed ({str(e).strip().splitlines()[-1][:120]})")
            for proc in ctx.processes:
                proc.terminate()
        rows = json.load(open(path)) if os.path.exists(path) else []
    return [Measured(Point(**r["point"]), r["seconds"], r["peak"], r["graphs"]) for r in rows]


def _tp_worker(rank: int, s: Setup, points: list[Point], tmp: str) -> None:
    """One rank of a tensor split: NCCL on CUDA devices (gloo on the CPU, for tests)."""
    import json

    require_torch()
    dev = torch.device(s.devices[rank])
    cuda = dev.type == "cuda"
    world = len(s.devices)
    if cuda:
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{tmp}/rendezvous",
                                         rank=rank, world_size=world, **({"device_id": dev} if cuda else {}))
    group = torch.distributed.group.WORLD
    m = HarnessModel(s.arch, s.quant, dev, Shard(range(s.arch.n_layers), rank, world, group=group), seed=s.seed)
    m.decode_attn = s.decode_attn
    base = context_bytes(dev) if cuda else 0
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for p in points:
        m.cache = []
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        m.alloc_cache(p.batch, p.tokens_cached, p.prompt)
        gen = torch.Generator(device=dev).manual_seed(1)  # the same tokens on every rank
        tokens = torch.randint(0, s.arch.vocab_size, (p.batch, p.prompt if p.phase == "prefill" else 1),
                               device=dev, generator=gen)
        pos0 = 0 if p.phase == "prefill" else p.depth
        graphs = False
        step = functools.partial(m.forward, tokens, pos0)
        if cuda and s.graphs:
            try:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        m.forward(tokens, pos0)
                torch.cuda.current_stream().wait_stream(side)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    m.forward(tokens, pos0)
                step, graphs = g.replay, True
            except RuntimeError:  # NCCL capture not available: eager steps
                sync()
        torch.distributed.barrier()
        sec = time_step(step, sync, s.repeats, 5 if p.phase == "decode" else 1)
        stats = torch.tensor([sec, float(base + torch.cuda.max_memory_reserved(dev)) if cuda else 0.0],
                             dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.MAX)  # the slowest rank, the fullest GPU
        rows.append({"point": p.__dict__, "seconds": float(stats[0]), "peak": int(stats[1]) or None, "graphs": graphs})
        if rank == 0:  # after every point, so a stopped run keeps what it measured
            with open(os.path.join(tmp, "result.part"), "w") as f:
                json.dump(rows, f)
            os.replace(os.path.join(tmp, "result.part"), os.path.join(tmp, "result.json"))
            log_stderr(_progress(len(rows), len(points), Measured(p, rows[-1]["seconds"], rows[-1]["peak"], graphs)))
        step = None
    torch.distributed.destroy_process_group()


def environment(devices: list[str]) -> dict:
    """The software and device the runs came from, for the rows' source column."""
    d = torch.device(devices[0])
    env = {"torch": torch.__version__, "python": platform.python_version(), "devices": len(devices)}
    if d.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(d)
        env["cuda"] = torch.version.cuda
        env["memory_GiB"] = round(torch.cuda.get_device_properties(d).total_memory / units.GiB, 1)
        env["sm_count"] = torch.cuda.get_device_properties(d).multi_processor_count
    else:
        env["device_name"] = platform.processor() or "cpu"
    return env


def rows(s: Setup, measured: list[Measured], env: dict, role: str, tag: str, start: int = 1) -> list[dict]:
    """Measured points as runs-CSV rows (planner.runs.Run fields)."""
    src = (f"planner calibrate run: {env['device_name']} x{env['devices']}, torch {env['torch']}"
           + (f", CUDA {env['cuda']}" if env.get("cuda") else ""))
    out = []
    for i, m in enumerate(measured, start):
        p = m.point
        pre = p.phase == "prefill"
        how = "CUDA-graph replays" if m.graphs else "eager steps"
        out.append({
            "ref_row": f"{tag}-{i:03d}", "role": role, "gpu": s.gpu, "gpu_count": len(s.devices), "engine": ENGINE,
            "model": s.model, "quant": s.quant, "kv_quant": "f16" if s.quant == "f16" else "bf16",
            "flash_attention": "on", "prompt_tokens": p.prompt, "depth_tokens": p.depth,
            "gen_tokens": 0 if pre else 1, "batch": p.batch, "ubatch_tokens": p.batch * p.prompt if pre else p.batch,
            "metric": "prefill_tok_s" if pre else "decode_tok_s",
            "value": float(f"{(m.tok_s if pre else 1 / m.seconds):.5g}"), "unit": "tok/s", "source_url": src,
            "note": f"median of {s.repeats} samples of {how}; {m.seconds / units.MS:.4g} ms/step; decode attention "
                    f"{s.decode_attn}",
            "split": s.split if len(s.devices) > 1 else None,
            "peak_memory_gib": round(m.peak_bytes / units.GiB, 3) if m.peak_bytes else None,
        })
    return out


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def detect_gpu(catalog, device_name: str, memory_bytes: int | None) -> str:
    """The catalog GPU a CUDA device name ("NVIDIA H100 80GB HBM3") is: its model token (h100,
    4090, a100) must match, memory within 10%; ties are broken by the most name tokens shared
    (memory type included: HBM3 is the SXM part, HBM2e the PCIe card)."""
    import re

    def tokens(text: str) -> set[str]:
        return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}

    dev = tokens(device_name)
    models = {t for t in dev if re.search(r"\d", t) and re.search(r"[a-z]", t) and not t.endswith("gb")}
    models |= {t for t in dev if t.isdigit() and len(t) == 4}  # 4090, 5090
    scored = []
    for g in catalog.gpus.values():
        have = tokens(g.name) | tokens(g.id) | {t for a in g.aliases for t in tokens(a)} | tokens(g.memory_type)
        if not models or not models <= have:
            continue
        if memory_bytes is not None and abs(g.memory_bytes - memory_bytes) > 0.1 * g.memory_bytes:
            continue
        extra = tokens(g.name) - dev - {"nvidia", "amd", "intel", "apple"}  # e.g. "ti" for a plain 3090
        scored.append(((len(dev & have), -len(extra)), g.id))
    scored.sort(reverse=True)
    if not scored:
        size = f" ({memory_bytes / units.GiB:.0f} GiB)" if memory_bytes else ""
        raise PlannerError(f"{device_name!r}{size} matches no catalog GPU: give "
                           "--gpu ID (see `planner gpus`), or add the card to hwdb/gpus/")
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        raise PlannerError(f"{device_name!r} could be {scored[0][1]} or {scored[1][1]}: give --gpu ID")
    return scored[0][1]


def datasheet(gpu) -> dict:
    """The catalog's peaks for the measured quantities, for the report beside them."""
    sp = gpu.specs

    def val(q, unit):
        return None if q is None else round(q.si / unit, 1)

    return {"memory_bandwidth_GB_s": val(sp.memory_bandwidth, units.GB),
            "matmul_TFLOP_s": {k: v for k, v in {
                "fp32": val(sp.fp32_vector, units.TFLOP), "bf16": val(sp.fp16_tensor_fp32acc or sp.fp16_tensor, units.TFLOP),
                "f16": val(sp.fp16_tensor_fp32acc or sp.fp16_tensor, units.TFLOP),
                "fp8": val(sp.fp8_tensor_fp32acc or sp.fp8_tensor, units.TFLOP),
                "int8": val(sp.int8_tensor, units.TFLOP)}.items() if v is not None}}


def free_bytes(s: Setup) -> int:
    """Memory the grid may use per device: free memory less the weights of the largest shard
    (on the CPU: the host's available memory)."""
    require_torch()
    arch_bytes = sum(t.params for t in s.arch.tensors if t.group == "text") * (1 if s.quant == "fp8" else 2)
    per_device = arch_bytes // len(s.devices) if len(s.devices) > 1 else arch_bytes
    d = torch.device(s.devices[0])
    if d.type == "cuda":
        free = min(torch.cuda.mem_get_info(torch.device(x))[0] for x in s.devices)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(free - per_device, 0)


def write_ceilings(runs_path, gpu_id: str, env: dict, measured: dict, sheet: dict) -> None:
    """Record the measured ceilings beside the runs (RUNS.ceilings.json, one entry per device
    name and torch version; written atomically, other entries kept)."""
    import json
    from pathlib import Path

    from planner.atomic import write_atomic

    path = Path(str(runs_path) + ".ceilings.json") if not str(runs_path).endswith(".csv") else \
        Path(str(runs_path)[:-4] + ".ceilings.json")
    data = json.loads(path.read_text()) if path.exists() else {}
    key = f"{env['device_name']} x{env['devices']} / torch {env['torch']}"
    data[key] = {"gpu": gpu_id, "environment": env, "measured": measured, "datasheet": sheet,
                 "method": "median of 10 timings on random data after 2 warm-ups; copy counts bytes read + "
                           "written (1 GiB copies); matmul 8192^3 with inputs rotated over 3 sets "
                           "(planner/harness.py measure_ceilings)"}
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
