"""The catalog: loads hwdb/ and models_db/ (the only module that reads data files).

Each entity is one TOML file whose stem is its id. A validation error names the file, the
key and the value. Ids are matched case-insensitively, with aliases; an unknown id gets
"did you mean" suggestions.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from planner.arch import Architecture, parse_config
from planner.errors import PlannerError, did_you_mean
from planner.calibration import Calibration
from planner.hardware import CaveatTable, Engine, EngineMemoryRules, FrontendTable, Gpu, HostMemory, LinkTable, NetworkTable
from planner.paths import PathTable
from planner.quant import FormatTable, KvTypeTable, RecipeTable, check_recipe, exl_recipe
from planner.schema import Quantity, Sourced, Strict

T = TypeVar("T", bound=BaseModel)
DEFAULT_CALIBRATION = "reference-fit"  # fitted on hwdb/runs/published.csv (docs/validation.md)


class PublishedFile(Strict):
    """A real file of this model whose size we can check our weight arithmetic against."""

    quant: str
    size: Quantity
    what: str = ""


class GgufRepo(Strict):
    """A Hugging Face repository of a model's GGUFs: llama.cpp's -hf REPO:QUANT takes the first file whose
    path holds the quant's tag (common/download.cpp:644-688)."""

    repo: str
    quants: tuple[str, ...]  # recipes the repository holds a file of
    tags: dict[str, str] = Field(default_factory=dict)  # recipe -> the tag its file name spells (gpt-oss: MXFP4)
    source: str


class ModelCard(Sourced):
    id: str = ""
    name: str
    hf_repo: str
    aliases: tuple[str, ...] = ()
    notes: str = ""
    config_source: str
    config: dict[str, Any]
    published: dict[str, Quantity] = Field(default_factory=dict)
    files: tuple[PublishedFile, ...] = ()
    gguf_repos: tuple[GgufRepo, ...] = ()

    @cached_property
    def arch(self) -> Architecture:
        return parse_config(self.config)


class ReportedAcceptance(Strict):
    """A published acceptance figure: tokens per verification step (incl. the bonus token) or
    the share of drafted tokens accepted, as engines print it."""

    accept_len: float | None = Field(default=None, ge=1)
    drafted_accept_rate: float | None = Field(default=None, ge=0, le=1)
    draft_len: int | None = Field(default=None, ge=1)
    where: str
    source: str


class DraftCard(Sourced):
    """A drafter for speculative decoding and the targets it serves (models_db/drafts/)."""

    id: str = ""
    name: str
    method: Literal["draft", "mtp", "dflash", "eagle"]
    targets: tuple[str, ...]
    hf_repo: str = ""
    model: str | None = None  # method draft: a catalog model id
    config: dict[str, Any] | None = None  # dflash / eagle: the drafter's own config.json fields
    config_source: str | None = None
    block_size: Quantity | None = None  # dflash: tokens drafted by one forward
    target_layers_tapped: Quantity | None = None  # dflash / eagle: hidden states fed to the fc projection
    draft_vocab: Quantity | None = None  # eagle: the draft head's own vocabulary
    shares_embedding: bool = False
    shares_head: bool = False
    # how the engines name it where that differs from the method it is priced as: "mtp" = a separate MTP
    # drafter checkpoint (Gemma 4's assistants: priced as eagle, K forwards of a small head; launched as
    # vLLM method mtp with its model, llama.cpp --spec-type draft-mtp -md, SGLang NEXTN with the draft path)
    engine_method: Literal["mtp"] | None = None
    recommended_draft_len: Quantity | None = None
    default_quant: dict[str, str] = Field(default_factory=dict)  # by weight format
    files: tuple["PublishedFile", ...] = ()
    reported: tuple[ReportedAcceptance, ...] = ()
    notes: str = ""

    @model_validator(mode="after")
    def _complete(self) -> "DraftCard":
        if self.method == "draft" and not self.model:
            raise ValueError("a draft-model entry names its catalog `model`")
        if self.method in ("dflash", "eagle") and (not self.config or not self.config_source):
            raise ValueError(f"a {self.method} entry needs its drafter `config` and `config_source`")
        if self.config_source and self.config_source not in self.sources:
            raise ValueError(f"config_source {self.config_source!r} is not in [sources]")
        for r in self.reported:
            if r.source not in self.sources:
                raise ValueError(f"reported source {r.source!r} is not in [sources]")
        return self


def default_data_dir() -> Path:
    """PLANNER_DATA_DIR, else the source tree beside the package, else the installed share/."""
    env = os.environ.get("PLANNER_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    if (here / "hwdb").is_dir():
        return here
    return Path(sys.prefix) / "share" / "planner"


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc)


def load_toml(path: Path, model: type[T], **extra: Any) -> T:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PlannerError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise PlannerError(f"{path}: cannot read: {e.strerror}") from None
    raw.update(extra)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _fmt_loc(err["loc"]) or "(top level)"
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise PlannerError(f"{path}: key {loc}: {err['msg']} (value {shown})") from None


def _check_names(table: dict[str, Any], rel: str) -> None:
    """Every id and alias of a folder names one entity: an alias equal to another entry's id or
    alias (case-insensitively) would let a lookup silently pick the wrong file."""
    owner: dict[str, str] = {}  # lower-case name -> the id whose file claims it
    for k in table:
        if k.lower() in owner:
            raise PlannerError(f"{rel}/{k}.toml and {rel}/{owner[k.lower()]}.toml: ids differ only in case")
        owner[k.lower()] = k
    for k, v in table.items():
        for a in getattr(v, "aliases", ()):
            other = owner.setdefault(a.strip().lower(), k)
            if other != k:
                what = "id" if other.lower() == a.strip().lower() else "alias"
                raise PlannerError(f"{rel}/{k}.toml: alias {a!r} is also the {what} of {rel}/{other}.toml; "
                                   "an alias must name one entry")


_BRAND_WORDS = ("nvidia", "geforce", "amd", "radeon", "apple", "intel")


def _gpu_key(text: str) -> str:
    """A GPU name as typed, reduced to letters and digits without vendor and brand words."""
    words = re.split(r"[^a-z0-9+]+", text.lower())
    return "".join(w for w in words if w and w not in _BRAND_WORDS).replace("+", "")


_REPO_TAILS = ("-gguf", "-mlx", "-instruct", "-it", "-chat", "-hf")


def _model_keys(text: str) -> set[str]:
    """A model name as typed, reduced: lower case, no owner, spaces and underscores as dashes,
    without the tails repositories add (-GGUF, -MLX, -Instruct, -it, -Chat, -hf); a bartowski-style
    "Owner_Name" also as "Name"."""
    name = text.strip().lower().rpartition("/")[2]
    out = set()
    for n in (name, name.partition("_")[2]):
        n = re.sub(r"[\s_]+", "-", n.strip())
        while n.endswith(_REPO_TAILS):
            n = n[: n.rfind("-")]
        if n:
            out.add(n)
    return out


def _gpu_keys(g: Gpu) -> set[str]:
    """The keys a GPU answers to: its id, aliases and name (before and inside its parentheses),
    each also without a leading RTX/RX/GTX."""
    head, _, rest = g.name.partition("(")
    names = [g.id, *g.aliases, head, rest.split(",")[0].split(";")[0].rstrip(")")]
    keys = {_gpu_key(n) for n in names if n.strip()}
    keys |= {k[len(p):] for k in keys for p in ("rtx", "rx", "gtx") if k.startswith(p) and len(k) > len(p) + 2}
    return {k for k in keys if k}


def pin_engine(e: Engine, pin: str) -> Engine:
    """The profile with the defaults of release `pin` (major.minor, or a full version of it)."""
    pin = pin.strip().lower().lstrip("v")
    if e.version and (pin == e.version or e.version.startswith(pin + ".") or pin.startswith(_minor(e.version) + ".")
                      or pin == _minor(e.version)):
        return e.model_copy(update={"pinned": pin})
    for key, v in e.versions.items():
        if pin == key or pin.startswith(key + "."):
            memory = EngineMemoryRules.model_validate({**e.memory.model_dump(), **v.memory})
            kv = v.kv_types if v.kv_types is not None else e.kv_types
            return e.model_copy(update={"memory": memory, "pinned": pin, "kv_types": kv})
    if not e.versions:
        raise PlannerError(f"{e.id} {pin}: planner holds the defaults of {e.id} {e.version or '(its profile)'} only; "
                           "plan without a pin")
    known = ", ".join(sorted([_minor(e.version)] + list(e.versions)))
    raise PlannerError(f"{e.id} {pin}: planner holds the defaults of releases {known} only; pin one of those, or "
                       f"none for {e.version}")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class Catalog:
    """Everything in the databases, validated. Construct once; lookups are dict hits."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_data_dir()
        self.memo: dict = {}  # derived values reused within one run (see deployment.recipe_weights)
        if not (self.root / "hwdb").is_dir() or not (self.root / "models_db").is_dir():
            raise PlannerError(
                f"no planner databases under {self.root} (expected hwdb/ and models_db/); "
                "set PLANNER_DATA_DIR or reinstall"
            )
        self.gpus = self._load_dir("hwdb/gpus", Gpu)
        self.hosts = self._load_dir("hwdb/hosts", HostMemory)
        self.engines = self._load_dir("hwdb/engines", Engine)
        self.models = self._load_dir("models_db/models", ModelCard)
        self.drafts = self._load_dir("models_db/drafts", DraftCard)
        self.links = load_toml(self.root / "hwdb" / "links.toml", LinkTable)
        nets = load_toml(self.root / "hwdb" / "networks.toml", NetworkTable)
        self.networks = {k: v.model_copy(update={"id": k, "nccl_hop_overhead": nets.nccl.hop_overhead.si})
                         for k, v in nets.networks.items()}
        self.network_sources = nets.sources
        self.caveats = load_toml(self.root / "hwdb" / "caveats.toml", CaveatTable).caveats
        fe = self.root / "hwdb" / "frontends.toml"
        self.frontends = load_toml(fe, FrontendTable).frontends if fe.is_file() else {}
        self.calibrations = self._load_dir("hwdb/calibrations", Calibration)
        self.paths = self._load_dir("hwdb/paths", PathTable) if (self.root / "hwdb" / "paths").is_dir() else {}
        for k, t in self.paths.items():
            if t.engine != k or k not in self.engines:
                raise PlannerError(f"hwdb/paths/{k}.toml: engine {t.engine!r} must be the file's name and an engine of hwdb/engines")
        if DEFAULT_CALIBRATION not in self.calibrations or "priors" not in self.calibrations:
            raise PlannerError(f"hwdb/calibrations needs {DEFAULT_CALIBRATION}.toml and priors.toml")
        q = self.root / "models_db" / "quant"
        self.formats = load_toml(q / "formats.toml", FormatTable)
        self.recipes = load_toml(q / "recipes.toml", RecipeTable)
        self.kv_types = load_toml(q / "kv_types.toml", KvTypeTable)
        for name, r in self.recipes.recipes.items():
            check_recipe(name, r, self.formats.types)
        for e in self.engines.values():
            for kv in e.kv_types:
                if kv not in self.kv_types.types:
                    raise PlannerError(f"hwdb/engines/{e.id}.toml: unknown kv type {kv!r}")
        for m in self.models.values():
            if m.config_source not in m.sources:
                raise PlannerError(f"models_db/models/{m.id}.toml: config_source {m.config_source!r} not in [sources]")
        for d in self.drafts.values():
            for t in d.targets + ((d.model,) if d.model else ()):
                if t not in self.models:
                    raise PlannerError(f"models_db/drafts/{d.id}.toml: unknown model {t!r}")

    def _load_dir(self, rel: str, model: type[T]) -> dict[str, T]:
        d = self.root / rel
        out: dict[str, T] = {}
        for path in sorted(d.glob("*.toml")):
            out[path.stem] = load_toml(path, model, id=path.stem)
        _check_names(out, rel)
        return out

    # --- lookups -------------------------------------------------------------------------

    @staticmethod
    def _find(table: dict[str, T], name: str, what: str) -> T:
        key = name.strip().lower()
        for k, v in table.items():
            if k.lower() == key or key in (a.lower() for a in getattr(v, "aliases", ())):
                return v
        names = list(table) + [a for v in table.values() for a in getattr(v, "aliases", ())]
        raise did_you_mean(name, names, what)

    def gpu(self, name: str) -> Gpu:
        """A GPU by id or alias, or as people write it: any case, spaces or dashes, vendor and
        brand words (NVIDIA, GeForce, AMD, Radeon, Apple, Intel) and the RTX/RX prefix optional,
        or the name in the entry's parentheses ("RTX 5090", "7900 XTX", "M4 Max", "DGX Spark",
        "Strix Halo", "H100 PCIe")."""
        try:
            return self._find(self.gpus, name, "gpu")
        except PlannerError as unknown:
            key = _gpu_key(name)
            hits = {g.id for g in self.gpus.values() if key and key in _gpu_keys(g)}
            if len(hits) == 1:
                return self.gpus[hits.pop()]
            if hits:
                raise PlannerError(f"GPU {name!r} could be any of {', '.join(sorted(hits))}; name one") from None
            raise unknown

    def model(self, name: str) -> ModelCard:
        """A model by id, alias or Hugging Face repository id (any case), or as people write it:
        spaces for dashes ("Llama 3.1 8B"), a GGUF or MLX repository of it ("unsloth/Qwen3.6-27B-GGUF",
        bartowski's "Qwen_Qwen3-30B-A3B-GGUF"), an -Instruct / -it / -Chat tune of the architecture."""
        key = name.strip().lower()
        hit = next((m for m in self.models.values() if m.hf_repo.lower() == key), None)
        if hit is not None:
            return hit
        try:
            return self._find(self.models, name, "model")
        except PlannerError as unknown:
            keys = _model_keys(name)
            hits = {m.id for m in self.models.values()
                    if keys & {k for n in (m.id, m.hf_repo, *m.aliases) if n for k in _model_keys(n)}}
            if len(hits) == 1:
                return self.models[hits.pop()]
            if hits:
                raise PlannerError(f"model {name!r} could be any of {', '.join(sorted(hits))}; name one") from None
            raise unknown

    def has_model(self, name: str) -> bool:
        try:
            self.model(name)
        except PlannerError:
            return False
        return True

    def draft(self, name: str) -> DraftCard:
        return self._find(self.drafts, name, "draft")

    def drafts_for(self, model_id: str) -> list[DraftCard]:
        """Catalog drafters that serve `model_id`, in file order."""
        return [d for d in self.drafts.values() if model_id in d.targets]

    def engine(self, name: str) -> Engine:
        """An engine profile by id, or pinned to an earlier release's defaults: 'vllm-cuda@0.11'."""
        base, at, pin = name.partition("@")
        e = self._find(self.engines, base, "engine")
        if at and not pin.strip():
            raise PlannerError(f"--engine {name.strip()}: give a release after '@', e.g. {e.id}@{_minor(e.version) or 'X.Y'}")
        return pin_engine(e, pin) if pin.strip() else e

    def host(self, name: str) -> HostMemory:
        return self._find(self.hosts, name, "host")

    def network(self, name: str):
        return self._find(self.networks, name, "network")

    def calibration(self, name: str | None, engine: str | None = None, gpu: str | None = None) -> Calibration:
        """A calibration profile by id; 'none' = the priors alone; None = the default for the
        deployment: a profile fitted for its engine alone (`calibrate fit --engine`), the one
        fitted on its GPU first, else the shipped reference-fit."""
        if name is None:
            own = [c for c in self.calibrations.values() if engine and c.fit.get("filter", {}).get("engine") == engine]
            own.sort(key=lambda c: (c.fit.get("filter", {}).get("gpu") != gpu, c.id))
            return own[0] if own else self.calibrations[DEFAULT_CALIBRATION]
        if name.strip().lower() == "none":
            return self.calibrations["priors"]
        if name.endswith(".toml") and name not in self.calibrations:  # a profile file of the user's own
            path = Path(name)
            if not path.is_file():
                raise PlannerError(f"no such calibration file: {name}")
            return load_toml(path, Calibration, id=path.stem)
        return self._find(self.calibrations, name, "calibration")

    def paths_of(self, engine):
        """The kernel-path table an engine runs: its own, else the one its profile names (`kernel_paths`)."""
        return self.paths.get(engine.id) or (self.paths.get(engine.kernel_paths) if engine.kernel_paths else None)

    def recipe(self, name: str, fmt: str | None = None, model: str | None = None):
        """A quant recipe by name, case-insensitively; where names differ only in case (BF16 GGUF,
        bf16 safetensors) the one of format `fmt` wins. A published file's own mix (NAME@MODEL, Unsloth's
        UD-*) is found for its model."""
        key = name.strip().lower()
        if model:
            own = next(((k, r) for k, r in self.recipes.recipes.items() if k.lower() == f"{key}@{model.lower()}"), None)
            if own is not None:
                return own[0].partition("@")[0], own[1]
        hits = [(k, r) for k, r in self.recipes.recipes.items()
                if (k.lower() == key or key in (a.lower() for a in r.aliases)) and not r.model]
        hits.sort(key=lambda kr: (kr[1].format != fmt, kr[0] != name.strip()))
        if hits:
            return hits[0]
        exl = exl_recipe(key)
        if exl is not None:  # EXL2 / EXL3 at any bpw: made once, then held like a file's recipe
            name_, rec, types = exl
            for t, st in types.items():
                self.formats.types.setdefault(t, st)
            self.recipes.recipes.setdefault(name_, rec)
            return name_, self.recipes.recipes[name_]
        if re.match(r"^(ud-)?(iq|q)\d.*_xl$", key) or key.startswith("ud-"):
            known = sorted(k.replace("@", " for ") for k, r in self.recipes.recipes.items() if r.model)
            raise PlannerError(f"{name}: Unsloth's dynamic mixes choose per-tensor types per model; planner holds a "
                               f"published type list only for {', '.join(known) or 'none'}. Plan the file itself "
                               "(planner fit path/to/model.gguf) for exact sizes, or the nearest standard mix (e.g. Q4_K_M)")
        raise did_you_mean(name, list(self.recipes.recipes), "quant")

    def kv_type(self, name: str):
        key = name.strip().lower()
        if key in self.kv_types.types:
            return key, self.kv_types.types[key]
        raise did_you_mean(name, list(self.kv_types.types), "kv type")
