"""Kernel paths: which kernel an engine runs for each operation on each GPU architecture
family, as data read from the engine's source (hwdb/paths/<engine>.toml, every rule cited by
file and line; docs/kernel-paths.md).

A table lists rules per operation, tried in order; the first whose conditions hold (op, weight
type, tokens in the step, architecture family) is the kernel that runs, and it names the
hardware peak the kernel is bound by (`ceiling`). `segments` turns the rules that apply to one
weight type and family into token ranges, so the speed model picks a kernel for arrays of
token counts with one `searchsorted`. Pure functions of the loaded table; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from planner.schema import Sourced, Strict

# the GpuSpecs field a kernel is bound by (memory_bandwidth: the memory system)
Ceiling = Literal["memory_bandwidth", "int8_tensor", "int8_dot", "fp16_tensor", "fp16_tensor_fp32acc", "fp32_vector",
                  "fp16_vector", "fp8_tensor", "fp4_tensor"]
FLOAT_TYPES = ("f32", "f16", "bf16")


class MatmulRule(Strict):
    kernel: str
    op: tuple[Literal["mul_mat", "mul_mat_id"], ...]
    weights: tuple[str, ...]  # "quantized", "f16", "bf16", "f32" or ggml type names
    families: tuple[str, ...] | None = None  # None: every family of the backend
    max_tokens: int | None = Field(default=None, ge=0)
    min_tokens: int = Field(default=0, ge=0)
    ceiling: Ceiling
    ceiling_by_family: dict[str, Ceiling] = Field(default_factory=dict)  # where one rule's families differ
    # the peak a memory-bound kernel's arithmetic runs on (CUDA/HIP MMVQ: INT8 dot; float mat-vec: FP32)
    math: Ceiling | None = None
    dequant: Literal["none", "in_kernel", "to_f16_buffer"] = "none"
    tile_tokens: int | None = Field(default=None, ge=1)
    cite: str
    note: str = ""

    def ceiling_for(self, family: str | None) -> str:
        return self.ceiling_by_family.get(family or "", self.ceiling)

    def math_for(self, storage: str) -> str:
        """The peak the arithmetic of a memory-bound kernel runs on."""
        if self.math:
            return self.math
        return "fp32_vector" if storage.lower() in FLOAT_TYPES else "int8_dot"


class AttentionRule(Strict):
    kernel: str
    fa: bool = True
    max_tokens: int | None = Field(default=None, ge=0)
    min_tokens: int = Field(default=0, ge=0)
    kv: tuple[str, ...] = ()
    kv_pair: tuple[str, ...] = ()
    families: tuple[str, ...] | None = None
    head_dims: tuple[int, ...] = ()
    kv_conversion: str = "none"
    ceiling: Ceiling
    cite: str
    note: str = ""


class OpRule(Strict):
    name: str
    kernel: str
    families: tuple[str, ...] | None = None
    ceiling: Ceiling
    cite: str
    note: str = ""


class MultiGpuRule(Strict):
    split: str
    transport: str
    condition: str = ""
    per: str = ""
    cite: str
    note: str = ""


class Unsupported(Strict):
    """A weight type the engine cannot run for an op: planner prices no kernel for it."""

    op: tuple[Literal["mul_mat", "mul_mat_id"], ...]
    weights: tuple[str, ...]
    why: str
    cite: str
    refuse: bool = False  # the engine fails to load such a model: resolve() refuses the plan


class UnsupportedKv(Strict):
    """A KV-cache type the engine's attention refuses on a GPU family: resolve() refuses the plan."""

    families: tuple[str, ...]
    kv: tuple[str, ...]
    why: str
    cite: str


class PathTable(Sourced):
    id: str = ""
    engine: str
    build: str
    source_tree: str
    matmul: tuple[MatmulRule, ...]
    attention: tuple[AttentionRule, ...] = ()
    op: tuple[OpRule, ...] = ()
    multi_gpu: tuple[MultiGpuRule, ...] = ()
    families_not_covered: dict[str, str] = Field(default_factory=dict)  # family -> why the backend does not run it
    unsupported: tuple[Unsupported, ...] = ()
    unsupported_kv: tuple[UnsupportedKv, ...] = ()

    def refuses_kv(self, family: str | None, kv: str) -> str | None:
        """Why the engine's attention refuses a `kv` cache on `family` GPUs, if it does."""
        return next((u.why for u in self.unsupported_kv if family in u.families and kv.lower() in u.kv), None)

    def refuses(self, op: str, storage: str) -> str | None:
        """Why the engine has no kernel for `op` on `storage` weights, if it has none."""
        return next((u.why for u in self.unsupported if op in u.op and type_matches(u.weights, storage)), None)

    def refused_load(self, op: str, storage: str) -> str | None:
        """Why the engine fails to load `op` on `storage` weights, where it refuses rather than runs slowly."""
        return next((f"{u.why} ({u.cite})" for u in self.unsupported
                     if u.refuse and op in u.op and type_matches(u.weights, storage)), None)

    def families(self) -> set[str]:
        out: set[str] = set()
        for r in (*self.matmul, *self.attention, *self.op):
            out |= set(r.families or ())
        return out


def type_matches(weights: tuple[str, ...], storage: str) -> bool:
    """Whether a rule's weight list covers a storage type (GGUF names, any case)."""
    s = storage.lower()
    return s in (w.lower() for w in weights) or ("quantized" in weights and s not in FLOAT_TYPES)


def _applies(rule, family: str | None) -> bool:
    return rule.families is None or (family is not None and family in rule.families)


@dataclass(frozen=True)
class Segment:
    """Tokens in [lo, hi) run `rule` (None: no rule of the table covers them)."""

    lo: int
    hi: float
    rule: MatmulRule | None


def segments(table: PathTable, op: str, storage: str, family: str | None) -> tuple[Segment, ...]:
    """The kernel for every token count, as ranges: first-match over the rules that apply."""
    rules = [r for r in table.matmul if op in r.op and type_matches(r.weights, storage) and _applies(r, family)]
    cuts = sorted({0} | {r.min_tokens for r in rules} | {r.max_tokens + 1 for r in rules if r.max_tokens is not None})
    out: list[Segment] = []
    for i, lo in enumerate(cuts):
        hi = cuts[i + 1] if i + 1 < len(cuts) else math.inf
        rule = next((r for r in rules if r.min_tokens <= lo and (r.max_tokens is None or lo <= r.max_tokens)), None)
        if out and out[-1].rule is rule:
            out[-1] = Segment(out[-1].lo, hi, rule)
        else:
            out.append(Segment(lo, hi, rule))
    return tuple(out)


def matmul_rule(table: PathTable, op: str, storage: str, family: str | None, tokens: int) -> MatmulRule | None:
    """The rule (kernel) that runs `op` on weights of type `storage` for a step of `tokens` columns."""
    for s in segments(table, op, storage, family):
        if s.lo <= tokens < s.hi:
            return s.rule
    return None


def attention_rule(table: PathTable, family: str | None, tokens: int, kv: str, fa: bool,
                   v: str | None = None) -> AttentionRule | None:
    """The attention kernel for `tokens` query tokens per sequence with a `kv` cache type (K), and
    `v` for V where it differs: a mixed pair takes the rules that list it in kv_pair (the vector
    kernels compiled only for some pairs), else the rules of its K type."""
    k = kv.lower()
    pair = f"{k}-{v.lower()}" if v and v.lower() != k else None
    candidates = []
    for r in table.attention:
        if r.fa != fa or not _applies(r, family):
            continue
        if tokens < r.min_tokens or (r.max_tokens is not None and tokens > r.max_tokens):
            continue
        if pair and pair in {x.lower() for x in r.kv_pair}:
            return r
        kinds = {x.lower() for x in r.kv}
        if kinds and k not in kinds and not ("quantized" in kinds and k not in FLOAT_TYPES):
            continue
        if pair is None:
            return r
        candidates.append(r)
    return candidates[0] if candidates else None
