"""Fitting a calibration profile to measured runs (docs/validation.md#procedure).

Parameters are the efficiency factors of hwdb/calibrations/ in log space. The objective is
the sum of squared log errors log(predicted / measured) over the runs whose role is `fit`,
plus a Gaussian prior on each log factor centred on the priors profile (sigma = log 2), so
a factor that no run constrains stays at its prior instead of wandering. Bounds keep
efficiencies in (0.02, 1] and overheads in [0.1, 500] us. scipy's trust-region reflective
least squares solves it. Imported only by `planner calibrate` and `planner validate`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner import units
from planner.atomic import write_atomic
from planner.calibration import Calibration
from planner.errors import PlannerError
from planner.runs import Prepared, predict
from planner.schema import Quantity

PRIOR_SIGMA = math.log(2.0)  # a prior is believed within a factor of two


RATIO_BOUND = 20.0  # a family's factor lies within 20x of its engine's
CENTRE_WEIGHT = 10.0  # the stiffness holding one factor's family ratios to a geometric mean of 1
FAMILY_MIN_ROWS = 10  # fewer runs on a family: it uses its engine's factors (and its interval says so)
FAMILY_SIGMA = math.log(1.5)
RUN_SIGMA = 0.15  # the scatter of one run's log error around the model (the published fit's decode p90 ~ 0.18)  # a family's factor is believed within 1.5x of its engine's (the shrinkage prior)


@dataclass(frozen=True)
class Param:
    path: tuple[str, ...]  # where it lives in the profile, e.g. ("engines", "llama.cpp-cuda", "gemm_eff")
    prior: float  # SI
    lo: float
    hi: float
    unit: str
    base: int | None = None  # a family factor: the index of its engine-level factor; this one is the ratio to it


def _get(cal: Calibration, path: tuple[str, ...]) -> Quantity:
    obj: Any = cal
    for p in path:
        obj = obj[p] if isinstance(obj, dict) else getattr(obj, p)
    return obj


def parameters(priors: Calibration, rows: list[Prepared], engine: str | None = None) -> list[Param]:
    """The factors the rows can inform: per engine seen (bandwidth, overhead, compute), the
    attention factors of the flash-attention modes seen, the weight kernel classes seen
    (float is the reference), and the MoE / linear-layer overheads and link latency.

    With `engine`, only that engine's own factors (its attention, MoE-layer time and expert-matmul
    efficiency included, kept under the engine): the rest of the profile stays as in `priors`, so
    other engines are unaffected."""
    out: list[Param] = []
    engines = sorted({p.engine for p in rows})
    if engine is not None:
        if engines != [engine]:
            raise PlannerError(f"an --engine {engine} fit needs rows of that engine only (got {', '.join(engines)})")
    metrics = {e: {p.run.metric for p in rows if p.engine == e} for e in engines}
    base = {e: _resolve_engine(priors, e) for e in engines}

    def add(path, q: Quantity, lo, hi):
        out.append(Param(path, q.si, lo, hi, q.unit))

    for e in engines:
        ep = priors.engines[base[e]]
        add(("engines", e, "weight_bw_eff"), ep.weight_bw_eff, 0.02, 1.0)
        add(("engines", e, "layer_overhead"), ep.layer_overhead, 1e-7, 5e-4)
        if metrics[e] - {"decode_tok_s"}:
            add(("engines", e, "gemm_eff"), ep.gemm_eff, 0.02, 1.0)
    for fa in sorted({"fa_on" if p.fa else "fa_off" for p in rows}):
        own = priors.engines[base[engines[0]]].attention if engine is not None else None
        a = own[fa] if own and fa in own else priors.attention[fa]
        where = ("engines", engine, "attention", fa) if engine is not None else ("attention", fa)
        add(where + ("decode_bw_eff",), a.decode_bw_eff, 0.02, 1.0)
        add(where + ("prefill_eff",), a.prefill_eff, 0.02, 1.0)
    if engine is not None:
        moe_rows = [p for p in rows if any(st.moe_layers for st in p.sm.gpus)]
        if moe_rows:
            ep = priors.engines[base[engine]]
            add(("engines", engine, "moe_layer_overhead"), ep.moe_layer_overhead or priors.moe_layer_overhead, 1e-7, 5e-4)
            if any(p.run.metric != "decode_tok_s" for p in moe_rows):
                add(("engines", engine, "moe_gemm_eff"), ep.moe_gemm_eff or ep.gemm_eff, 0.02, 1.0)
        return out
    _path_parameters(priors, rows, base, out)
    classes = set()
    for p in rows:
        for st in p.sm.gpus:
            classes |= {k for k, b in zip(("float", "legacy", "kquant", "iquant", "fp8", "fp4", "int4"), st.w_bytes) if b}
    for k in sorted(classes - {"float"}):
        add(("quant_kernels", k), priors.quant_kernels[k], 0.2, 1.5)
    if any(st.moe_layers for p in rows for st in p.sm.gpus):
        add(("moe_layer_overhead",), priors.moe_layer_overhead, 1e-7, 5e-4)
    if any(st.linear_layers for p in rows for st in p.sm.gpus):
        add(("linear_layer_overhead",), priors.linear_layer_overhead, 1e-7, 5e-4)
    if any(len(p.sm.gpus) > 1 for p in rows):
        add(("link_latency",), priors.link_latency, 1e-7, 5e-4)
    return out


PATH_BOUNDS = {"weight_bw_eff": (0.02, 1.0), "layer_overhead": (1e-7, 5e-4), "gemm_eff": (0.005, 1.0),
               "float_gemm_eff": (0.005, 1.0), "gemm_min_tokens": (0.5, 1024.0), "dot_eff": (0.005, 1.0),
               "kv_quant_bw_eff": (0.05, 2.0), "host_copy_eff": (0.02, 1.0), "moe_layer_overhead": (1e-7, 5e-4),
               "linear_layer_overhead": (1e-7, 5e-4), "scan_token_time": (1e-8, 2e-5)}
PATH_UNITS = {"layer_overhead": "us", "moe_layer_overhead": "us", "linear_layer_overhead": "us", "gemm_min_tokens": "tokens",
              "scan_token_time": "us"}
# priors of path factors where the priors profile has none, from the H200's kernel-time table:
# scan_token_time: Qwen3.6-27B's gated_delta_net_cuda launches take 18.64 us at 16 tokens and 34.77 us at 32
#   (hwdb/runs/llamacpp-h200.kernels.csv): 1.008 us per token
PATH_PRIORS = {"scan_token_time": 1.008e-6}


def _path_parameters(priors: Calibration, rows: list[Prepared], base: dict[str, str], out: list[Param]) -> None:
    """Kernel-path engines (rows whose step model runs hwdb/paths/): the path factors at engine
    level, and each architecture family's own factors as ratios to them, each with a prior
    centred on 1 (sigma log 1.5), so that a family with few runs stays near the engine's value
    and one with many runs takes its own (docs/validation.md#procedure)."""
    from planner.calibration import PATH_DEFAULTS

    pathed: dict[str, dict[str, int]] = {}
    for p in rows:
        if p.sm.paths and p.family:
            seen = pathed.setdefault(p.engine, {})
            seen[p.family] = seen.get(p.family, 0) + 1
    for e, counts in sorted(pathed.items()):
        # a family gets its own ratios with at least FAMILY_MIN_ROWS runs, and only where the engine's
        # rows span two families or more (one family alone is the engine level itself)
        fams = {f for f, n in counts.items() if n >= FAMILY_MIN_ROWS} if len(counts) > 1 else set()
        ep = priors.engines[base[e]]
        index: dict[str, int] = {}
        names = ["float_gemm_eff", "gemm_min_tokens", "dot_eff", "kv_quant_bw_eff", "host_copy_eff"]
        if any(p.engine == e and p.run.metric == "prefill_tok_s" and any(st.scan_layers for st in p.sm.gpus) for p in rows):
            names.append("scan_token_time")
        for name in names:
            q = getattr(ep, name)
            prior = q.si if q is not None else (ep.gemm_eff.si if name == "float_gemm_eff" else
                                                PATH_PRIORS[name] if name in PATH_PRIORS else PATH_DEFAULTS[name])
            if not any(x.path == ("engines", e, name) for x in out):
                index[name] = len(out)
                lo, hi = PATH_BOUNDS[name]
                out.append(Param(("engines", e, name), prior, lo, hi, PATH_UNITS.get(name, "ratio")))
        for name in ("weight_bw_eff", "layer_overhead", "gemm_eff"):
            index[name] = next(i for i, x in enumerate(out) if x.path == ("engines", e, name)) \
                if any(x.path == ("engines", e, name) for x in out) else None
        for fam in sorted(fams):
            for name, i in index.items():
                if i is None or name == "host_copy_eff":  # a property of the host, not of the GPU family
                    continue
                lo, hi = PATH_BOUNDS[name]
                out.append(Param(("engines", e, "families", fam, name), 1.0, lo, hi, PATH_UNITS.get(name, "ratio"), base=i))


def _resolve_engine(cal: Calibration, engine: str) -> str:
    seen = set()
    while engine not in cal.engines and engine in cal.fallback and engine not in seen:
        seen.add(engine)
        engine = cal.fallback[engine]
    return engine if engine in cal.engines else next(iter(cal.engines))


def with_values(priors: Calibration, params: list[Param], values: np.ndarray, source: str | None,
                name: str, description: str, fit: dict[str, Any] | None = None, fit_runs: str = "") -> Calibration:
    """A profile: the priors with `values` (SI) put in at the params' paths, marked as fitted."""
    d = priors.model_dump(exclude_none=True)
    d.pop("id", None)
    for e in {p.path[1] for p in params if p.path[0] == "engines"}:
        if e not in d["engines"]:
            d["engines"][e] = priors.engines[_resolve_engine(priors, e)].model_dump(exclude_none=True)
    values = np.asarray(values, dtype=float)
    absolute = [min(max(v * values[p.base], p.lo), p.hi) if p.base is not None else v for p, v in zip(params, values)]
    for p, v in zip(params, absolute):
        node = d
        for key in p.path[:-1]:
            if key not in node or node[key] is None:  # an engine's own attention, only the modes fitted
                node[key] = {}
            node = node[key]
        scale = units.to_si(1.0, p.unit)
        q = {"value": float(f"{v / scale:.4g}") if source else float(v / scale), "unit": p.unit}  # trials unrounded
        if source:
            q["source"] = source
        else:
            q["estimate"] = "set by hand"
        node[p.path[-1]] = q
    if source:
        d.setdefault("sources", {})[source] = {
            "url": "docs/validation.md#procedure", "kind": "fit",
            "note": f"least-squares fit to the `fit` rows of {fit_runs or 'the given runs'}"}
    d.update(name=name, description=description)
    if fit is not None:
        d["fit"] = fit
    return Calibration.model_validate(d)


def fit(priors: Calibration, rows: list[Prepared], source_key: str = "fit", max_nfev: int = 120,
        runs_file: str = "", engine: str | None = None) -> tuple[Calibration, dict[str, Any]]:
    """Least-squares fit of the profile's factors to `rows` (all of them: pass only fit rows)."""
    try:
        from scipy.optimize import least_squares
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise PlannerError("fitting needs scipy: pip install scipy") from None
    if not rows:
        raise PlannerError("no runs to fit")
    params = parameters(priors, rows, engine)
    x0 = np.log([p.prior for p in params])
    lo = np.log([1 / RATIO_BOUND if p.base is not None else p.lo for p in params])
    hi = np.log([RATIO_BOUND if p.base is not None else p.hi for p in params])
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
    sigma = np.array([FAMILY_SIGMA if p.base is not None else PRIOR_SIGMA for p in params])
    # an engine-level prior weighs as 1/sqrt(rows) of a run (it only keeps unconstrained factors
    # in place); a family's ratio is a Gaussian prior N(0, FAMILY_SIGMA) against runs whose log
    # errors scatter by RUN_SIGMA, so its residual is ratio x RUN_SIGMA / FAMILY_SIGMA: the
    # posterior of a normal model, moving a family as far as its runs agree
    weight = np.array([RUN_SIGMA / FAMILY_SIGMA if p.base is not None else 1 / math.sqrt(len(rows)) for p in params])
    meas = np.log([p.run.value for p in rows])
    sign = np.array([-1.0 if p.run.metric == "e2e_latency_s" else 1.0 for p in rows])

    # the family ratios of one engine factor sum to zero in log space: the engine-level value is the
    # geometric mean of its families', which is what a family with no runs of its own is given
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        if p.base is not None:
            groups.setdefault(p.base, []).append(i)
    groups = {b: idx for b, idx in groups.items() if len(idx) > 1}

    def residuals(x):
        cal = with_values(priors, params, np.exp(x), None, "trial", "trial")
        pred = np.log([max(predict(p, cal), 1e-12) for p in rows])
        centred = [CENTRE_WEIGHT * sum(x[i] for i in idx) / len(idx) for idx in groups.values()]
        return np.concatenate([(pred - meas) * sign, (x - x0) / sigma * weight, centred])

    res = least_squares(residuals, x0, bounds=(lo, hi), method="trf", x_scale="jac", diff_step=1e-3,
                        max_nfev=max_nfev)
    values = np.exp(res.x)
    info = {"method": "scipy.optimize.least_squares (trf) on log error with log-normal priors, sigma = log 2",
            "runs_file": runs_file, "rows_fitted": len(rows), "parameters": len(params),
            "cost": float(res.cost), "evaluations": int(res.nfev), "status": res.message}
    cal = with_values(priors, params, values, source_key, "", "", None, runs_file)
    return cal, info


def write_profile(cal: Calibration, path: Path, header: str, sources: dict[str, dict[str, str]]) -> None:
    """Write a profile as TOML, atomically (a temp file renamed over the target)."""
    d = cal.model_dump(exclude_none=True)
    d.pop("id", None)
    d["sources"] = {**{k: v for k, v in d.get("sources", {}).items()}, **sources}
    text = header + _toml(d)
    Calibration.model_validate(tomllib.loads(text))  # never write a profile the loader would reject
    write_atomic(path, text)


def _val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_val(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _val(k)


def _is_quantity(v: Any) -> bool:
    return isinstance(v, dict) and "value" in v and "unit" in v


def _toml(d: dict, prefix: str = "") -> str:
    """A minimal TOML writer for profile dicts: scalars and quantities inline, tables nested."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict) and not _is_quantity(v):
            tables.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_val(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        out += f"\n[{name}]\n" + _toml(v, name).lstrip("\n")
    return out
