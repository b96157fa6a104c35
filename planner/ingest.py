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
import re
from dataclasses import dataclass
from pathlib import Path

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
    """The file's format and its measured-run rows (planner.runs.Run fields)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PlannerError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    fmt = detect(text)
    source = given.source or f"ingested from {path.name}"
    rows = {"llama-bench": _llama_bench, "batched-bench": _batched_bench, "vllm-serve": _vllm}[fmt](
        catalog, text, given)
    if not rows:
        raise PlannerError(f"{path}: no measurements planner can use in this {fmt} output")
    for i, r in enumerate(rows, 1):
        r.update(ref_row=f"{given.tag}-{i:03d}", role=given.role, source_url=source)
    return fmt, rows


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


def _json_objects(text: str) -> list[dict]:
    s = text.strip()
    try:
        data = json.loads(s)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        out = []
        for i, line in enumerate(s.splitlines(), 1):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise PlannerError(f"line {i}: not valid JSON ({e.msg})") from None
        return out


def _llama_bench(catalog: Catalog, text: str, g: Given) -> list[dict]:
    rows = []
    for o in _json_objects(text):
        if not isinstance(o, dict) or "avg_ts" not in o:
            continue
        n_p, n_g, depth = int(o.get("n_prompt", 0)), int(o.get("n_gen", 0)), int(o.get("n_depth", 0) or 0)
        if n_p and n_g:
            continue  # -pg: one figure for prompt and generation together
        model = g.model and _model_id(catalog, g.model) or match_model(catalog, o.get("model_filename", ""))
        quant = g.quant or _need(_quant_from(o.get("model_filename", ""), o.get("model_type", "")), "weight quant",
                                 "--quant")
        gpu, n = _gpus(catalog, g.gpu, o.get("gpu_info", ""))
        backend = str(o.get("backends", "")).split(",")[0].strip().lower()
        engine = g.engine or BACKEND_ENGINES.get(backend) or _need(None, f"engine (backend {backend!r})", "--engine")
        fa = o.get("flash_attn", -1)
        fa = "off" if fa in (0, False, "0", "false", "off") else "on"  # -1 = auto: on where supported
        split = str(o.get("split_mode", "layer"))
        ngl = int(o.get("n_gpu_layers", 99) or 99)
        note = f"llama-bench {'pp' if n_p else 'tg'}{n_p or n_g}" + (f" @ d{depth}" if depth else "") + \
            f", build {o.get('build_commit', '?')} ({o.get('build_number', '?')}), {o.get('test_time', '')}"
        if 0 <= ngl < 999 and ngl not in (99, -1):
            note += f"; -ngl {ngl} (the run's layer placement is not replayed)"
        rows.append(dict(
            gpu=gpu, gpu_count=n, engine=catalog.engine(engine).id, model=model, quant=quant,
            kv_quant=g.kv_quant or o.get("type_k", "f16"), flash_attention=fa,
            prompt_tokens=n_p, depth_tokens=depth, gen_tokens=n_g, batch=1,
            ubatch_tokens=int(o.get("n_ubatch", 512)), metric="prefill_tok_s" if n_p else "decode_tok_s",
            value=float(o["avg_ts"]), unit="tok/s", note=note,
            split=split if n > 1 and split in ("layer", "tensor") else None))
    return rows


_BB_HEADER = re.compile(r"(\w+)\s*=\s*([-\w.]+)")


def _batched_bench(catalog: Catalog, text: str, g: Given) -> list[dict]:
    params, table = {}, []
    if '"speed_tg"' in text:
        for o in _json_objects(text):
            if "speed_tg" in o:
                params = {k: o[k] for k in ("n_batch", "n_ubatch", "flash_attn", "is_pp_shared") if k in o}
                table.append((int(o["pp"]), int(o["tg"]), int(o["pl"]), float(o["speed_pp"]), float(o["speed_tg"])))
    else:
        for line in text.splitlines():
            if line.startswith("main:") and "n_kv_max" in line:
                params = dict(_BB_HEADER.findall(line))
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 8 and cells[0].isdigit():
                table.append((int(cells[0]), int(cells[1]), int(cells[2]), float(cells[5]), float(cells[7])))
    model = _model_id(catalog, _need(g.model, "model", "--model"))
    quant = _need(g.quant, "weight quant", "--quant")
    gpu, n = _gpus(catalog, _need(g.gpu, "GPU", "--gpu"))
    engine = catalog.engine(g.engine or "llama.cpp-cuda").id
    fa = "on" if str(params.get("flash_attn", "1")) in ("1", "true", "on", "-1", "auto") else "off"
    shared = str(params.get("is_pp_shared", "0")) in ("1", "true")
    ub = int(params.get("n_ubatch", 512))
    base = dict(gpu=gpu, gpu_count=n, engine=engine, model=model, quant=quant, kv_quant=g.kv_quant or "f16",
                flash_attention=fa, ubatch_tokens=ub, unit="tok/s")
    rows = []
    for pp, tg, b, s_pp, s_tg in table:
        if pp and not shared and s_pp > 0:
            rows.append(dict(base, prompt_tokens=pp, depth_tokens=0, gen_tokens=0, batch=b, metric="prefill_tok_s",
                             value=s_pp, note=f"llama-batched-bench PP {pp} TG {tg} B {b}: S_PP"))
        if tg and s_tg > 0:
            rows.append(dict(base, prompt_tokens=0, depth_tokens=pp, gen_tokens=tg, batch=b, metric="decode_tok_s",
                             value=round(s_tg / b, 4), note=f"llama-batched-bench PP {pp} TG {tg} B {b}: S_TG / B"))
    return rows


def _vllm(catalog: Catalog, text: str, g: Given) -> list[dict]:
    try:
        o = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlannerError(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    done = int(o.get("completed") or 0)
    if done <= 0:
        raise PlannerError("the run completed no requests")
    conc = o.get("max_concurrency")
    rate = o.get("request_rate", "inf")
    if conc in (None, 0):
        if str(rate).lower() not in ("inf", "infinity"):
            raise PlannerError(f"an open-loop run at {rate} requests/s has no fixed concurrency: planner cannot "
                               "express it (rerun with --max-concurrency)")
        conc = int(o.get("num_prompts") or done)  # all requests at once
    conc = int(conc)
    model = g.model and catalog.model(g.model).id or match_model(catalog, o.get("model_id", ""),
                                                                  o.get("tokenizer_id", ""))
    gpu, n = _gpus(catalog, _need(g.gpu, "GPU", "--gpu (e.g. h100 or 2xh100 for tensor parallel 2)"))
    engine = catalog.engine(g.engine or "vllm-cuda").id
    prompt = round(o["total_input_tokens"] / done)
    gen = round(o["total_output_tokens"] / done)
    base = dict(gpu=gpu, gpu_count=n, engine=engine, model=model, quant=g.quant or "bf16",
                kv_quant=g.kv_quant or "bf16", flash_attention="on", ubatch_tokens=8192, batch=conc, unit="tok/s")
    what = f"vllm bench serve: {done} requests at concurrency {conc}, mean {prompt} in / {gen} out"
    rows = [dict(base, prompt_tokens=prompt, depth_tokens=0, gen_tokens=gen, metric="throughput_tok_s",
                 value=float(o["output_throughput"]), note=f"{what}; output_throughput")]
    if o.get("mean_tpot_ms"):
        rows.append(dict(base, prompt_tokens=0, depth_tokens=prompt, gen_tokens=gen, metric="decode_tok_s",
                         value=round(1 / (float(o["mean_tpot_ms"]) * units.MS), 4),
                         note=f"{what}; 1000 / mean_tpot_ms (prefills of other requests interleave)"))
    return rows
