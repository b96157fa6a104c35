"""Engine benchmark output turned into measured-run rows (`planner calibrate ingest`).

Formats, recognised from the content:
  * llama-bench `-o json` (an array of test objects) and `-o jsonl` (one per line): fields
    model_filename, model_type, gpu_info, backends, n_batch, n_ubatch, type_k, flash_attn,
    split_mode, n_prompt, n_gen, n_depth, avg_ts (tools/llama-bench/README.md). A `pp` test gives
    prefill tok/s, a `tg` test decode tok/s per stream; `-pg` tests (prompt + generation in one
    figure) have no metric here and are skipped.
  * llama-batched-bench: its Markdown table (PP, TG, B, N_KV, T_PP, S_PP, T_TG, S_TG, T, S) with
    the `main: n_kv_max = ..., n_batch = ..., n_ubatch = ..., flash_attn = ..., is_pp_shared = ...`
    line, or its `--output-format jsonl` lines (pp, tg, pl, speed_pp, speed_tg, ...). S_PP gives
    prefill tok/s of B prompts (unless the prompt is shared), S_TG / B decode tok/s per stream
    after PP tokens.
  * vLLM `vllm bench serve --save-result` / `benchmark_serving.py` JSON: max_concurrency,
    completed, total_input_tokens, total_output_tokens, output_throughput, mean_tpot_ms,
    model_id. Gives batched throughput (output tok/s at that concurrency, mean prompt and output
    lengths) and decode tok/s per stream (1000 / mean TPOT). Open-loop runs at a finite
    request rate have no fixed concurrency and are refused.

What a file does not say (the GPU for batched-bench and vLLM, the model where its name matches
no catalog entry, the engine build) comes from the command's options; anything still unknown is
a one-line error naming the option to give.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner import units
from planner.catalog import Catalog
from planner.errors import PlannerError, did_you_mean

QUANT_RE = re.compile(r"(?i)(?:^|[-_.])((?:IQ|Q)\d_[A-Z0-9_]+?|Q\d_\d|BF16|F16|F32|MXFP4(?:_MOE)?)(?=$|[-_.])")
MODEL_TYPE_QUANTS = {"Q4_K - Medium": "Q4_K_M", "Q4_K - Small": "Q4_K_S", "Q5_K - Medium": "Q5_K_M",
                     "Q5_K - Small": "Q5_K_S", "Q3_K - Medium": "Q3_K_M", "Q3_K - Large": "Q3_K_L",
                     "Q3_K - Small": "Q3_K_S", "Q6_K": "Q6_K", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
                     "Q5_0": "Q5_0", "Q2_K - Medium": "Q2_K", "IQ4_XS - 4.25 bpw": "IQ4_XS", "F16": "F16",
                     "BF16": "BF16", "all F32": "F32"}  # llama_model_ftype_name() strings
BACKEND_ENGINES = {"cuda": "llama.cpp-cuda", "rocm": "llama.cpp-rocm", "hip": "llama.cpp-rocm",
                   "vulkan": "llama.cpp-vulkan", "metal": "llama.cpp-metal"}


@dataclass
class Given:
    """Conditions from the command line (None: read them from the file)."""

    model: str | None = None
    quant: str | None = None
    gpu: str | None = None  # as --gpu takes it: rtx4090, 2xh100
    engine: str | None = None
    kv_quant: str | None = None
    source: str | None = None
    role: str = "fit"
    tag: str = "ingest"


def detect(text: str) -> str:
    """Which format the text is in."""
    s = text.lstrip()
    if s.startswith("["):
        return "llama-bench"
    if s.startswith("{"):
        first = s.splitlines()[0].strip()
        try:
            obj = json.loads(first) if first.endswith("}") else json.loads(s)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "avg_ts" in obj and "n_prompt" in obj:
                return "llama-bench"
            if "speed_tg" in obj and "pl" in obj:
                return "batched-bench"
            if "output_throughput" in obj or "mean_tpot_ms" in obj:
                return "vllm-serve"
    if re.search(r"\|\s*PP\s*\|\s*TG\s*\|\s*B\s*\|", text):
        return "batched-bench"
    if '"speed_tg"' in text:
        return "batched-bench"
    raise PlannerError("not a format planner reads: expected llama-bench -o json/jsonl, llama-batched-bench output "
                       "or vLLM bench serve --save-result JSON")


def ingest(catalog: Catalog, path: Path, given: Given) -> tuple[str, list[dict]]:
    """The file's format and its measured-run rows (planner.runs.Run fields), each checked:
    an error names the file and the test, line or key it is about."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PlannerError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    fmt = "engine"
    try:
        fmt = detect(text)
        parse = {"llama-bench": _llama_bench_at, "batched-bench": _batched_bench_at, "vllm-serve": _vllm_at}[fmt]
        located = _checked(parse(catalog, text, given))
        _no_duplicates(located)
    except PlannerError as e:
        raise PlannerError(f"{path}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError, OverflowError, RecursionError) as e:
        raise PlannerError(f"{path}: malformed {fmt} output ({type(e).__name__}: {e})") from None
    if not located:
        raise PlannerError(f"{path}: no measurements planner can use in this {fmt} output")
    source = given.source or f"ingested from {path.name}"
    rows = [r for _, r in located]
    for i, r in enumerate(rows, 1):
        r.update(ref_row=f"{given.tag}-{i:03d}", role=given.role, source_url=source)
    return fmt, rows


# ---------------------------------------------------------------------------------------------
# checks: a row is written only if `validate` and `calibrate fit` can use it

MAX_TOK_S = 1e7  # tok/s: ~100x the fastest batched throughput of one 8-GPU node; more is a unit slip or a corrupt field
CONDITIONS = ("gpu", "gpu_count", "engine", "model", "quant", "kv_quant", "flash_attention", "prompt_tokens",
              "depth_tokens", "gen_tokens", "batch", "ubatch_tokens", "metric", "split")  # what a runs row is keyed on


def check_row(r: dict) -> None:
    """Refuse a row whose value or conditions the speed model cannot score (one line, no location)."""
    from pydantic import ValidationError

    from planner.runs import Run

    v = r.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise PlannerError(f"speed {v!r} is not a positive finite number")
    if v > MAX_TOK_S:
        raise PlannerError(f"speed {v:.4g} tok/s is not believable (more than {MAX_TOK_S:.0e})")
    if r.get("metric") in ("decode_tok_s", "throughput_tok_s") and not r.get("gen_tokens"):
        raise PlannerError(f"{r['metric']} with no generated tokens (n_gen 0)")
    if r.get("metric") == "prefill_tok_s" and not r.get("prompt_tokens"):
        raise PlannerError("prefill_tok_s with no prompt tokens (n_prompt 0)")
    try:
        Run.model_validate(dict({"ref_row": "-", "source_url": "-"}, **{k: x for k, x in r.items() if x is not None}))
    except ValidationError as e:
        err = e.errors()[0]
        raise PlannerError(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})") from None


def _checked(located: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    for where, r in located:
        try:
            check_row(r)
        except PlannerError as e:
            raise PlannerError(f"{where}: {e}") from None
    return located


def _no_duplicates(located: list[tuple[str, dict]]) -> None:
    seen: dict[tuple, str] = {}
    for where, r in located:
        key = tuple(r.get(k) for k in CONDITIONS)
        if key in seen:
            raise PlannerError(f"{where} measures the same conditions as {seen[key]} ({r['metric']}, prompt "
                               f"{r['prompt_tokens']}, gen {r['gen_tokens']}, depth {r['depth_tokens']}, batch "
                               f"{r['batch']}): a runs file cannot tell them apart; keep one")
        seen[key] = where


_MISSING = object()


def _int_of(o: dict, key: str, where: str, default: Any = _MISSING, lowest: int = 0) -> int:
    """A count field: a JSON integer (or an integer-valued float or string); missing: `default` or an error."""
    v = o.get(key)
    if v is None:
        if default is _MISSING:
            raise PlannerError(f"{where}: no {key}")
        return default
    try:
        f = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f) or not f.is_integer() or f < lowest or f > 2**53:
        raise PlannerError(f"{where}: {key} {v!r} is not a count")
    return int(f)


def _float_of(o: dict, key: str, where: str) -> float:
    v = o.get(key)
    if v is None:
        raise PlannerError(f"{where}: no {key}")
    try:
        if isinstance(v, bool):
            raise ValueError
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise PlannerError(f"{where}: {key} {v!r} is not a number") from None


# ---------------------------------------------------------------------------------------------
# names


def _norm(s: str) -> str:
    s = s.lower()
    for suffix in ("-instruct", "-it", "-chat", "-base", "-hf"):
        s = s.replace(suffix, "")
    return re.sub(r"[^a-z0-9]", "", s)


def match_model(catalog: Catalog, *names: str) -> str:
    """The catalog model a file or repo name is (quant suffix and -Instruct/-it ignored)."""
    keys = {}
    for card in catalog.models.values():
        for k in (card.id, card.name, card.hf_repo, card.hf_repo.split("/")[-1], *card.aliases):
            keys[_norm(k)] = card.id
    for name in names:
        if not name:
            continue
        stem = Path(name).name
        stem = re.sub(r"(?i)\.gguf$", "", stem)
        m = QUANT_RE.search(stem)
        if m:
            stem = stem[:m.start()]
        stem = re.sub(r"(?i)-(?:\d+-of-\d+|gguf)$", "", stem)
        for cand in (stem, name.split("/")[-1] if "/" in name else None):
            if not cand:
                continue
            for key in (_norm(cand), _norm(re.sub(r"(?i)^meta[-_]", "", cand))):  # Meta-Llama-3.1-8B files
                if key in keys:
                    return keys[key]
    shown = next((n for n in names if n), "?")
    err = did_you_mean(Path(shown).name, list(catalog.models), "model")
    raise PlannerError(f"{err}; give --model ID for this file")


def _model_id(catalog: Catalog, name: str) -> str:
    """A catalog id, or a local config.json / .gguf path kept as given (as the harness writes it)."""
    from planner.localfile import is_local

    return name if is_local(name) else catalog.model(name).id


def _quant_from(filename: str, model_type: str) -> str | None:
    m = QUANT_RE.search(Path(filename).name.replace(".gguf", ""))
    if m:
        return m.group(1).upper()
    tail = model_type.split(" ", 2)[-1] if model_type else ""
    return MODEL_TYPE_QUANTS.get(tail.strip())


def _gpus(catalog: Catalog, gpu: str | None, gpu_info: str = "") -> tuple[str, int]:
    """(catalog GPU id, count) from --gpu (rtx4090, 2xh100) or llama-bench's gpu_info."""
    from planner.deployment import parse_gpus

    if gpu:
        ids = parse_gpus(gpu)
        if len(set(ids)) > 1:
            raise PlannerError(f"--gpu {gpu}: runs of mixed GPUs are not supported in a runs file")
        return catalog.gpu(ids[0]).id, len(ids)
    devices = [d.strip() for d in gpu_info.split(",") if d.strip()]
    if not devices:
        raise PlannerError("the file does not say which GPU ran it: give --gpu (e.g. rtx4090 or 2xrtx3090)")
    from planner.harness import detect_gpu

    found = set()
    for d in devices:
        try:
            found.add(detect_gpu(catalog, d, None))
        except PlannerError:
            raise PlannerError(f"GPU {d!r} matches no catalog entry: give --gpu (see `planner gpus`)") from None
    if len(found) > 1:
        raise PlannerError(f"mixed GPUs ({', '.join(sorted(found))}): not supported in a runs file")
    return found.pop(), len(devices)


def _need(value, what: str, option: str):
    if value in (None, ""):
        raise PlannerError(f"the file does not say the {what}: give {option}")
    return value


# ---------------------------------------------------------------------------------------------
# formats


def _json_objects(text: str) -> list[tuple[str, Any]]:
    """(where, object) for a JSON array ("test N"), one object ("the file") or JSON lines ("line N")."""
    s = text.strip()
    try:
        data = json.loads(s)
        return [(f"test {i}", o) for i, o in enumerate(data, 1)] if isinstance(data, list) else [("the file", data)]
    except json.JSONDecodeError:
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append((f"line {i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise PlannerError(f"line {i}: not valid JSON ({e.msg})") from None
        return out


def _llama_bench(catalog: Catalog, text: str, g: Given) -> list[dict]:
    """llama-bench output as checked rows (for planner.llamacpp, which places them itself)."""
    return [r for _, r in _checked(_llama_bench_at(catalog, text, g))]


def _batched_bench(catalog: Catalog, text: str, g: Given) -> list[dict]:
    return [r for _, r in _checked(_batched_bench_at(catalog, text, g))]


def _llama_bench_at(catalog: Catalog, text: str, g: Given) -> list[tuple[str, dict]]:
    rows = []
    for where, o in _json_objects(text):
        if not isinstance(o, dict) or "avg_ts" not in o:
            continue
        n_p, n_g = _int_of(o, "n_prompt", where), _int_of(o, "n_gen", where)
        depth = _int_of(o, "n_depth", where, 0)
        if n_p and n_g:
            continue  # -pg: one figure for prompt and generation together
        if not n_p and not n_g:
            raise PlannerError(f"{where}: n_prompt and n_gen are both 0: neither a pp nor a tg test")
        filename, model_type = str(o.get("model_filename") or ""), str(o.get("model_type") or "")
        model = g.model and _model_id(catalog, g.model) or match_model(catalog, filename)
        quant = g.quant or _need(_quant_from(filename, model_type), "weight quant", "--quant")
        gpu, n = _gpus(catalog, g.gpu, str(o.get("gpu_info") or ""))
        backend = str(o.get("backends", "")).split(",")[0].strip().lower()
        engine = g.engine or BACKEND_ENGINES.get(backend) or _need(None, f"engine (backend {backend!r})", "--engine")
        fa = o.get("flash_attn", -1)
        fa = "off" if fa in (0, False, "0", "false", "off") else "on"  # -1 = auto: on where supported
        split = str(o.get("split_mode", "layer"))
        ngl = _int_of(o, "n_gpu_layers", where, 99, lowest=-1) or 99  # -1: all
        note = f"llama-bench {'pp' if n_p else 'tg'}{n_p or n_g}" + (f" @ d{depth}" if depth else "") + \
            f", build {o.get('build_commit', '?')} ({o.get('build_number', '?')}), {o.get('test_time', '')}"
        if 0 <= ngl < 999 and ngl not in (99, -1):
            note += f"; -ngl {ngl} (the run's layer placement is not replayed)"
        rows.append((where, dict(
            gpu=gpu, gpu_count=n, engine=catalog.engine(engine).id, model=model, quant=quant,
            kv_quant=g.kv_quant or o.get("type_k", "f16"), flash_attention=fa,
            prompt_tokens=n_p, depth_tokens=depth, gen_tokens=n_g, batch=1,
            ubatch_tokens=_int_of(o, "n_ubatch", where, 512), metric="prefill_tok_s" if n_p else "decode_tok_s",
            value=_float_of(o, "avg_ts", where), unit="tok/s", note=note,
            split=split if n > 1 and split in ("layer", "tensor") else None)))
    return rows


_BB_HEADER = re.compile(r"(\w+)\s*=\s*([-\w.]+)")


def _batched_bench_at(catalog: Catalog, text: str, g: Given) -> list[tuple[str, dict]]:
    params, table = {}, []
    if '"speed_tg"' in text:
        for where, o in _json_objects(text):
            if isinstance(o, dict) and "speed_tg" in o:
                params = {k: o[k] for k in ("n_batch", "n_ubatch", "flash_attn", "is_pp_shared") if k in o}
                table.append((where, _int_of(o, "pp", where), _int_of(o, "tg", where), _int_of(o, "pl", where),
                              _float_of(o, "speed_pp", where), _float_of(o, "speed_tg", where)))
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if line.startswith("main:") and "n_kv_max" in line:
                params = dict(_BB_HEADER.findall(line))
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 8 and cells[0].isdigit():
                where = f"line {i}"
                o = dict(zip(("PP", "TG", "B", "N_KV", "T_PP", "S_PP", "T_TG", "S_TG"), cells))
                table.append((where, _int_of(o, "PP", where), _int_of(o, "TG", where), _int_of(o, "B", where),
                              _float_of(o, "S_PP", where), _float_of(o, "S_TG", where)))
    model = _model_id(catalog, _need(g.model, "model", "--model"))
    quant = _need(g.quant, "weight quant", "--quant")
    gpu, n = _gpus(catalog, _need(g.gpu, "GPU", "--gpu"))
    engine = catalog.engine(g.engine or "llama.cpp-cuda").id
    fa = "on" if str(params.get("flash_attn", "1")) in ("1", "true", "on", "-1", "auto") else "off"
    shared = str(params.get("is_pp_shared", "0")) in ("1", "true")
    ub = _int_of(params, "n_ubatch", "the main: line", 512)
    base = dict(gpu=gpu, gpu_count=n, engine=engine, model=model, quant=quant, kv_quant=g.kv_quant or "f16",
                flash_attention=fa, ubatch_tokens=ub, unit="tok/s")
    rows = []
    for where, pp, tg, b, s_pp, s_tg in table:
        if b < 1:
            raise PlannerError(f"{where}: batch (B / pl) {b}: no sequences")
        if pp and not shared and s_pp != 0:  # a speed of 0 is no measurement; a negative one is refused below
            rows.append((where, dict(base, prompt_tokens=pp, depth_tokens=0, gen_tokens=0, batch=b,
                                     metric="prefill_tok_s", value=s_pp,
                                     note=f"llama-batched-bench PP {pp} TG {tg} B {b}: S_PP")))
        if tg and s_tg != 0:
            rows.append((where, dict(base, prompt_tokens=0, depth_tokens=pp, gen_tokens=tg, batch=b,
                                     metric="decode_tok_s", value=round(s_tg / b, 4),
                                     note=f"llama-batched-bench PP {pp} TG {tg} B {b}: S_TG / B")))
    return rows


def _vllm_at(catalog: Catalog, text: str, g: Given) -> list[tuple[str, dict]]:
    try:
        o = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlannerError(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(o, dict):
        raise PlannerError("not a vLLM result: expected one JSON object")
    where = "the run"
    done = _int_of(o, "completed", where, 0)
    if done <= 0:
        raise PlannerError("the run completed no requests")
    conc = o.get("max_concurrency")
    rate = o.get("request_rate", "inf")
    if conc in (None, 0):
        if str(rate).lower() not in ("inf", "infinity"):
            raise PlannerError(f"an open-loop run at {rate} requests/s has no fixed concurrency: planner cannot "
                               "express it (rerun with --max-concurrency)")
        conc = _int_of(o, "num_prompts", where, 0) or done  # all requests at once
    conc = _int_of({"max_concurrency": conc}, "max_concurrency", where)
    model = g.model and catalog.model(g.model).id or match_model(catalog, str(o.get("model_id") or ""),
                                                                  str(o.get("tokenizer_id") or ""))
    gpu, n = _gpus(catalog, _need(g.gpu, "GPU", "--gpu (e.g. h100 or 2xh100 for tensor parallel 2)"))
    engine = catalog.engine(g.engine or "vllm-cuda").id
    prompt = round(_int_of(o, "total_input_tokens", where) / done)
    gen = round(_int_of(o, "total_output_tokens", where) / done)
    base = dict(gpu=gpu, gpu_count=n, engine=engine, model=model, quant=g.quant or "bf16",
                kv_quant=g.kv_quant or "bf16", flash_attention="on", ubatch_tokens=8192, batch=conc, unit="tok/s")
    what = f"vllm bench serve: {done} requests at concurrency {conc}, mean {prompt} in / {gen} out"
    rows = [("output_throughput", dict(base, prompt_tokens=prompt, depth_tokens=0, gen_tokens=gen,
                                       metric="throughput_tok_s", value=_float_of(o, "output_throughput", where),
                                       note=f"{what}; output_throughput"))]
    if o.get("mean_tpot_ms"):
        tpot_s = _float_of(o, "mean_tpot_ms", where) * units.MS
        rows.append(("mean_tpot_ms", dict(base, prompt_tokens=0, depth_tokens=prompt, gen_tokens=gen,
                                          metric="decode_tok_s", value=round(1 / tpot_s, 4) if tpot_s else math.inf,
                                          note=f"{what}; 1000 / mean_tpot_ms (prefills of other requests interleave)")))
    return rows
