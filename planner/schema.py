"""Strict, frozen data schemas for every file under hwdb/ and models_db/.

Every number in a data file is a `Quantity`: a value, its unit, and where it came from
(a key into the file's [sources] table) or, for estimates, how it was estimated. The
loader rejects a number without provenance.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner import units

SourceKind = Literal[
    "datasheet",  # vendor datasheet / spec page
    "whitepaper",  # vendor architecture whitepaper
    "vendor-page",  # vendor product or documentation page
    "press",  # trade press reporting vendor statements
    "spec-database",  # third-party spec aggregators
    "model-card",  # Hugging Face model card
    "hf-config",  # a config.json (official or a verbatim copy)
    "source-code",  # an engine's source code (file and commit named)
    "engine-docs",  # an engine's documentation
    "measured",  # a measurement (who, how and where said in the note)
    "retailer",  # a price observation
    "paper",
    "forum",  # user reports (issues, discussions)
    "fit",  # fitted by planner from measured runs (the note names the runs and the procedure)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    url: str
    kind: SourceKind
    note: str | None = None
    accessed: str | None = None


class Quantity(Strict):
    """A sourced number. `source` names a key of the file's [sources]; an `estimate` says how
    the value was estimated (and may also name the sources it started from); `derived` says
    what arithmetic produced it from sourced values."""

    value: float
    unit: str
    source: str | None = None
    derived: str | None = None
    estimate: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _provenance(self) -> "Quantity":
        if not units.known_unit(self.unit):
            raise ValueError(f"unknown unit {self.unit!r}")
        if self.source is None and self.estimate is None:
            raise ValueError("value has no provenance: give `source` (a [sources] key) or `estimate`")
        return self

    @property
    def si(self) -> float:
        return units.to_si(self.value, self.unit)

    @property
    def is_estimate(self) -> bool:
        return self.estimate is not None

    def provenance(self, sources: dict[str, Source]) -> str:
        parts = []
        if self.source:
            src = sources.get(self.source)
            parts.append(f"{src.kind}: {src.url}" if src else self.source)
        if self.derived:
            parts.append(f"derived: {self.derived}")
        if self.estimate:
            parts.append(f"ESTIMATE: {self.estimate}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def check_source_keys(obj: Any, sources: dict[str, Source], where: str = "") -> list[str]:
    """Every `source` named by a Quantity anywhere inside `obj` must exist in `sources`."""
    bad: list[str] = []
    if isinstance(obj, Quantity):
        if obj.source is not None and obj.source not in sources:
            bad.append(f"{where}: source {obj.source!r} is not in [sources]")
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            bad += check_source_keys(getattr(obj, name), sources, f"{where}.{name}".strip("."))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += check_source_keys(v, sources, f"{where}.{k}".strip("."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += check_source_keys(v, sources, f"{where}[{i}]")
    return bad


class Sourced(Strict):
    """Base of every data-file entity: a table of sources that its quantities cite."""

    sources: dict[str, Source] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sources_exist(self) -> "Sourced":
        bad = check_source_keys(self, self.sources)
        if bad:
            raise ValueError("; ".join(bad))
        return self
