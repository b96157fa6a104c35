"""Measured runs: rows of a runs CSV (hwdb/runs/) with their full conditions, turned into
deployments and predicted with the speed model.

Metrics: decode_tok_s (per stream, `gen` tokens after `prompt + depth`), prefill_tok_s
(`prompt` tokens after `depth`, over the batch), throughput_tok_s (batch x gen over prefill +
decode of the batch), e2e_latency_s (prefill + decode of one request); with speculative
decoding (`spec` column): spec_decode_speedup (decode tok/s with speculation / without, same
deployment and workload) and spec_throughput_speedup (the same for batch throughput, prefill
included).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.atomic import locked, write_atomic
from planner.calibration import Calibration, efficiency_for
from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.perf import StepModel, decode_time, prefill_time
from planner.schema import Strict
from planner.speed import step_model

Metric = Literal["decode_tok_s", "prefill_tok_s", "throughput_tok_s", "e2e_latency_s", "spec_decode_speedup",
                 "spec_throughput_speedup"]
RUN_FILES = ("published.csv", "mlx-published.csv", "mistralrs-published.csv", "ik-published.csv", "exllama-published.csv", "spec-published.csv", "harness-h100.csv", "harness-h100-moe.csv", "harness-h200x2.csv",
             "llamacpp-h200.csv", "llamacpp-h200-steps.csv")  # `planner validate`'s default


class Run(Strict):
    ref_row: str
    role: Literal["fit", "holdout", "old-build", "harness", "spec"] = "fit"
    gpu: str
    gpu_count: int = Field(ge=1)
    engine: str
    model: str
    quant: str
    kv_quant: str
    flash_attention: Literal["on", "off"]
    prompt_tokens: int = Field(ge=0)
    depth_tokens: int = Field(ge=0)
    gen_tokens: int = Field(ge=0)
    batch: int = Field(ge=1)
    ubatch_tokens: int = Field(ge=1)
    metric: Metric
    value: float = Field(gt=0)
    unit: str
    source_url: str
    note: str = ""
    spec: str | None = None  # speculative method as --spec takes it
    draft_len: int | None = Field(default=None, ge=1)
    accept: float | None = Field(default=None, ge=0, le=1)
    accept_len: float | None = Field(default=None, ge=1)
    split: Literal["layer", "tensor"] | None = None  # several GPUs: how the model was split (default: the engine's)
    peak_memory_gib: float | None = Field(default=None, gt=0)  # device memory in use at the run's peak (harness)
    kv_quant_v: str | None = None  # V cache type where it differs from K (llama.cpp -ctv)
    gpu_layers: int | None = Field(default=None, ge=0)  # llama.cpp -ngl (None: every layer on the GPUs)
    cpu_moe_layers: int | None = Field(default=None, ge=0)  # llama.cpp --n-cpu-moe

    @property
    def expressible(self) -> bool:
        """Whether a Deployment can state the run's conditions (all can since K/V pairs can)."""
        return True

    def deployment(self) -> Deployment:
        return Deployment(model=self.model, gpus=(self.gpu,) * self.gpu_count, engine=self.engine, quant=self.quant,
                          kv_quant=self.kv_quant if self.kv_quant_v in (None, self.kv_quant)
                          else f"{self.kv_quant}/{self.kv_quant_v}", batch=self.batch, ubatch_tokens=self.ubatch_tokens,
                          flash_attention=self.flash_attention == "on", split=self.split, spec=self.spec,
                          draft_len=self.draft_len, accept=self.accept, accept_len=self.accept_len,
                          gpu_layers=self.gpu_layers, cpu_moe_layers=self.cpu_moe_layers or 0)

    @property
    def label(self) -> str:
        n = f"{self.gpu_count}x" if self.gpu_count > 1 else ""
        if self.split and self.gpu_count > 1:
            n = f"{self.split} split {n}"
        sp = f" + {self.spec} k={self.draft_len}" if self.spec else ""
        return f"{self.model} {self.quant} on {n}{self.gpu} ({self.engine}){sp}"


def default_run_files(root: Path) -> list[Path]:
    return [root / "hwdb" / "runs" / f for f in RUN_FILES]


def read_text(path: Path) -> tuple[str, str]:
    """A runs CSV's text and its encoding: UTF-8 (a BOM, as spreadsheets write it, is dropped and
    kept on rewrite), else Windows-1252 (a spreadsheet's "CSV" on Windows)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    else:
        try:
            raw.decode("utf-8")
            enc = "utf-8"
        except UnicodeDecodeError:
            enc = "cp1252"
    try:
        return raw.decode(enc), enc
    except UnicodeDecodeError as e:
        raise PlannerError(f"{path}: not UTF-8 or Windows-1252 text (byte 0x{raw[e.start]:02x} at offset "
                           f"{e.start}); save it as UTF-8") from None


def _lines(text: str) -> list[str]:
    """The text's lines, line ends kept (\n, \r\n or \r; not the other breaks str.splitlines knows)."""
    return list(io.StringIO(text, newline=""))


def load_runs(path: Path) -> list[Run]:
    lines = [ln for ln in _lines(read_text(path)[0]) if not ln.startswith("#")]
    out: list[Run] = []
    seen: dict[str, int] = {}
    try:
        rows = list(csv.DictReader(lines))
    except csv.Error as e:
        raise PlannerError(f"{path}: not a CSV file: {e}") from None
    for i, row in enumerate(rows, start=2):
        try:
            run = Run.model_validate({k: v for k, v in row.items() if v != "" or k == "note"})
        except Exception as e:  # pydantic ValidationError: name the row and the first bad field
            err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
            raise PlannerError(f"{path}: row {i}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        why = _unusable(run)
        if why:
            raise PlannerError(f"{path}: row {i} ({run.ref_row}): {why}")
        try:  # conditions a deployment refuses (a batch beyond its bound, ...) are named here, not later
            run.deployment()
        except Exception as e:
            err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
            raise PlannerError(f"{path}: row {i} ({run.ref_row}): {'.'.join(map(str, err['loc']))}: "
                               f"{err['msg']}") from None
        if run.ref_row in seen:
            raise PlannerError(f"{path}: row {i}: ref_row {run.ref_row!r} is already row {seen[run.ref_row]}")
        seen[run.ref_row] = i
        out.append(run)
    return out


MAX_TOK_S = 1e7  # tok/s: ~100x the fastest batched throughput of one 8-GPU node (as planner.ingest refuses)


def _unusable(run: Run) -> str | None:
    """Why the speed model cannot score the row (it would divide by zero or fit to infinity), if so."""
    if not math.isfinite(run.value):
        return f"value {run.value} is not finite"
    if run.metric.endswith("tok_s") and run.value > MAX_TOK_S:
        return f"value {run.value:.4g} tok/s is not believable (more than {MAX_TOK_S:.0e})"
    if run.metric in ("decode_tok_s", "throughput_tok_s", "spec_decode_speedup", "spec_throughput_speedup") \
            and not run.gen_tokens:
        return f"{run.metric} with gen_tokens 0"
    if run.metric == "prefill_tok_s" and not run.prompt_tokens:
        return "prefill_tok_s with prompt_tokens 0"
    if run.metric == "e2e_latency_s" and not (run.prompt_tokens or run.gen_tokens):
        return "e2e_latency_s with no prompt and no generated tokens"
    return None


@dataclass(frozen=True)
class Prepared:
    """A run with its deployment compiled once; efficiencies can be swapped cheaply."""

    run: Run
    sm: StepModel
    engine: str
    fa: bool
    spec: object = None  # planner.spec.SpecModel for speculative runs
    family: str | None = None  # the GPU's architecture family (its own fitted factors, if any)


def prepare(catalog: Catalog, runs: list[Run], cal: Calibration) -> list[Prepared]:
    from planner.spec import compile_spec

    out = []
    for run in runs:
        r = resolve(catalog, run.deployment())
        out.append(Prepared(run, step_model(catalog, r, cal), r.engine.id, r.flash_attention,
                            compile_spec(catalog, r, cal) if r.spec is not None else None, r.gpus[0].family))
    return out


def predict(p: Prepared, cal: Calibration | None = None) -> float:
    """The run's metric as the model predicts it (with `cal`'s efficiencies if given)."""
    sm = p.sm if cal is None else replace(p.sm, eff=efficiency_for(cal, p.engine, p.fa, p.family))
    r = p.run
    pre = float(prefill_time(sm, [r.batch], [r.prompt_tokens], [r.depth_tokens], [r.ubatch_tokens])[0]) \
        if r.prompt_tokens else 0.0
    if r.metric == "prefill_tok_s":
        return r.batch * r.prompt_tokens / pre
    dec = float(decode_time(sm, [r.batch], [r.depth_tokens + r.prompt_tokens], [r.gen_tokens])[0])
    if p.spec is not None:
        from planner.spec import SpecModel, spec_decode_time

        m = p.spec
        if cal is not None:
            m = SpecModel(sm, replace(m.draft, eff=sm.eff), m.spec)  # the drafter runs in the same engine
        s = m.spec
        d0 = r.depth_tokens + r.prompt_tokens
        dec_spec = float(spec_decode_time(m, [r.batch], [d0], [r.gen_tokens], [s.gamma], [s.alpha])[0])
        pre_spec = pre + (float(prefill_time(m.draft, [r.batch], [r.prompt_tokens], [r.depth_tokens],
                                             [r.ubatch_tokens])[0]) if r.prompt_tokens else 0.0)
        if r.metric == "spec_decode_speedup":
            return dec / dec_spec
        if r.metric == "spec_throughput_speedup":
            return (pre + dec) / (pre_spec + dec_spec)
        pre, dec = pre_spec, dec_spec
    if r.metric == "decode_tok_s":
        return r.gen_tokens / dec
    if r.metric == "throughput_tok_s":
        return r.batch * r.gen_tokens / (pre + dec)
    return pre + dec  # e2e_latency_s


def write_runs(path: Path, new_rows: list[dict], header: str = "", replace_prefix: str | None = None) -> int:
    """Append rows to a runs CSV, atomically and under an exclusive lock (planner.atomic.locked),
    so concurrent writers each see the other's rows: the file is read and rewritten whole with its
    comment lines, existing rows, encoding and line ends kept (columns the new rows add are
    appended; rows whose ref_row starts with `replace_prefix` are dropped first: a step measured
    again). Returns the number of rows now in the file."""
    for r in new_rows:
        Run.model_validate({k: v for k, v in r.items() if v is not None})  # never write a row load_runs rejects
    path = Path(path)
    with locked(path):
        comments, old, fields, enc, nl = [], [], list(Run.model_fields), "utf-8", "\n"
        if path.exists():
            text, enc = read_text(path)
            nl = "\r\n" if "\r\n" in text else "\n"
            lines = _lines(text)
            comments = [ln for ln in lines if ln.startswith("#")]
            try:
                reader = csv.DictReader([ln for ln in lines if not ln.startswith("#")])
                old = [r for r in reader if not (replace_prefix and r.get("ref_row", "").startswith(replace_prefix))]
            except csv.Error as e:
                raise PlannerError(f"{path}: not a CSV file: {e}") from None
            fields = list(reader.fieldnames or []) + [k for k in fields if k not in (reader.fieldnames or [])]
        elif header:
            comments = [ln + "\n" for ln in header.rstrip("\n").split("\n")]
        buf = io.StringIO(newline="")
        buf.writelines(comments)
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator=nl)
        w.writeheader()
        for r in old + new_rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
        text = buf.getvalue()
        try:
            text.encode(enc)
        except UnicodeEncodeError:  # a Windows-1252 file gains a character it cannot hold
            enc = "utf-8-sig"
        write_atomic(path, text, encoding=enc)
    return len(old) + len(new_rows)
