"""Measured runs: rows of a runs CSV (hwdb/runs/) with their full conditions, turned into
deployments and predicted with the speed model.

Metrics: decode_tok_s (per stream, `gen` tokens after `prompt + depth`), prefill_tok_s
(`prompt` tokens after `depth`, over the batch), throughput_tok_s (batch x gen over prefill +
decode of the batch), e2e_latency_s (prefill + decode of one request).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.calibration import Calibration, efficiency_for
from planner.catalog import Catalog
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.perf import StepModel, decode_time, prefill_time
from planner.schema import Strict
from planner.speed import step_model

Metric = Literal["decode_tok_s", "prefill_tok_s", "throughput_tok_s", "e2e_latency_s"]


class Run(Strict):
    ref_row: str
    role: Literal["fit", "holdout", "old-build", "harness"] = "fit"
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

    def deployment(self) -> Deployment:
        return Deployment(model=self.model, gpus=(self.gpu,) * self.gpu_count, engine=self.engine, quant=self.quant,
                          kv_quant=self.kv_quant, batch=self.batch, ubatch_tokens=self.ubatch_tokens,
                          flash_attention=self.flash_attention == "on")

    @property
    def label(self) -> str:
        n = f"{self.gpu_count}x" if self.gpu_count > 1 else ""
        return f"{self.model} {self.quant} on {n}{self.gpu} ({self.engine})"


def load_runs(path: Path) -> list[Run]:
    try:
        with open(path, newline="") as f:
            lines = [ln for ln in f if not ln.startswith("#")]
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    out = []
    for i, row in enumerate(csv.DictReader(lines), start=2):
        try:
            out.append(Run.model_validate(row))
        except Exception as e:  # pydantic ValidationError: name the row and the first bad field
            err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
            raise PlannerError(f"{path}: row {i}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return out


@dataclass(frozen=True)
class Prepared:
    """A run with its deployment compiled once; efficiencies can be swapped cheaply."""

    run: Run
    sm: StepModel
    engine: str
    fa: bool


def prepare(catalog: Catalog, runs: list[Run], cal: Calibration) -> list[Prepared]:
    out = []
    for run in runs:
        r = resolve(catalog, run.deployment())
        out.append(Prepared(run, step_model(catalog, r, cal), r.engine.id, r.flash_attention))
    return out


def predict(p: Prepared, cal: Calibration | None = None) -> float:
    """The run's metric as the model predicts it (with `cal`'s efficiencies if given)."""
    sm = p.sm if cal is None else replace(p.sm, eff=efficiency_for(cal, p.engine, p.fa))
    r = p.run
    pre = float(prefill_time(sm, [r.batch], [r.prompt_tokens], [r.depth_tokens], [r.ubatch_tokens])[0]) \
        if r.prompt_tokens else 0.0
    if r.metric == "prefill_tok_s":
        return r.batch * r.prompt_tokens / pre
    dec = float(decode_time(sm, [r.batch], [r.depth_tokens + r.prompt_tokens], [r.gen_tokens])[0])
    if r.metric == "decode_tok_s":
        return r.gen_tokens / dec
    if r.metric == "throughput_tok_s":
        return r.batch * r.gen_tokens / (pre + dec)
    return pre + dec  # e2e_latency_s
