"""The command line: parse, build a Deployment, make one library call, render.

Domain errors become one line on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from pydantic import ValidationError

from planner import units
from planner.catalog import Catalog
from planner.deployment import (MAX_DRAFT_LEN, Deployment, default_max_seqs, engine_name, gpus_label, network_of, parse_gpus,
                                parse_machines, resolve)
from planner.errors import PlannerError
from planner.atomic import target, write_atomic, write_errors
from planner.emit import command as emit_command
from planner.compare import WORKLOADS
from planner.fit import fit
from planner.memory import with_
from planner.localfile import is_hf_id, is_local, load_config_json, load_gguf, load_hf_id
from planner import harness, render


class TokensType(click.ParamType):
    name = "tokens"

    def convert(self, value, param, ctx):
        try:
            return units.parse_tokens(value, _opt(param))
        except PlannerError as e:
            raise click.UsageError(str(e), ctx) from None


class BytesType(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        try:
            if isinstance(value, str) and value.strip().lower() == "auto":  # this machine's RAM (--host-ram auto)
                from planner.detect import detect_host_ram_bytes

                return detect_host_ram_bytes()
            return units.parse_bytes(value, _opt(param))
        except PlannerError as e:
            raise click.UsageError(str(e), ctx) from None


class FiniteFloat(click.ParamType):
    """A finite number (no nan or inf), at least `min` when given."""

    name = "number"

    def __init__(self, min: float | None = None):
        self.min = min

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise click.UsageError(f"{_opt(param)} {str(value)[:40]!r} is not a number", ctx) from None
        if not math.isfinite(x):
            raise click.UsageError(f"{_opt(param)} {value}: give a finite number", ctx)
        if self.min is not None and x < self.min:
            raise click.UsageError(f"{_opt(param)} {value}: give a number of at least {self.min:g}", ctx)
        return x


def _opt(param) -> str:
    """The option as the user typed it: --host-ram."""
    return f"--{param.name.replace('_', '-')}" if param is not None and param.name else "value"


TOKENS = TokensType()
BYTES = BytesType()


def one_line(text: str) -> str:
    """A message on one line: line breaks of a longer explanation become '; '."""
    return "; ".join(x.strip() for x in str(text).splitlines() if x.strip())


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one line, `error: <message> (see `planner CMD --help`)`."""

    def show(self, file=None):
        names, c = [], self.ctx
        while c is not None:
            names.append(c.info_name if c.parent is not None else "planner")
            c = c.parent
        cmd = " ".join(reversed(names)) or "planner"
        click.echo(f"error: {one_line(self.format_message())} (see `{cmd} --help`)", err=True)


class PlannerGroup(click.Group):
    """The root group: click's usage errors (an unknown option, a missing argument, a bad
    value) become one line on stderr with exit status 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            raise _one_line_usage(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _one_line_usage(e) from None


def _one_line_usage(e: click.UsageError) -> click.UsageError:
    if isinstance(e, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):  # `planner plot` alone: its help
        return e
    out = OneLineUsageError(e.format_message(), e.ctx)
    out.exit_code = e.exit_code
    return out


def friendly(f):
    """Turn PlannerError into a one-line message and exit status 2."""

    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except PlannerError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            sys.exit(2)

    return wrapper


def _completer(table: str, extra: tuple[str, ...] = ()):
    """Shell completion of a catalog name (docs/cli.md#shell-completion): the ids of `table` that start
    with what is typed; for a comma list, the last item."""
    def complete(ctx, param, incomplete: str):
        from click.shell_completion import CompletionItem

        head, sep, last = incomplete.rpartition(",")
        names = sorted(getattr(Catalog(), table)) + list(extra)
        return [CompletionItem(head + sep + n) for n in names if n.lower().startswith(last.lower())]
    return complete


complete_gpus = _completer("gpus", ("auto",))
complete_models = _completer("models")
complete_engines = _completer("engines", ("llama.cpp", "vllm", "sglang", "ollama"))
complete_networks = _completer("networks")


@click.group(cls=PlannerGroup, name="planner", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="planner")
def main():
    """planner: will this LLM fit on this hardware, and how should I run it?"""


_DEPLOYMENT_OPTIONS = [
    click.option("--gpu", "gpu", required=True, shell_complete=complete_gpus, help="GPUs: rtx5090, 2xrtx3090 or rtx5090,rtx3090ti; auto = this machine's; several machines: 'rtx4090,rtx3090 / rtx3090' or '2x(m4max)' (with --network)"),
    click.option("--network", default=None, shell_complete=complete_networks, help="the link between machines when --gpu names several: 10gbe, tb5, tb5-rdma, ib-ndr400, ... (see `planner networks`)"),
    click.option("--ctx", type=TOKENS, default=None, help="context per sequence: 32768, 200k, 128Ki (default: the model's native maximum)"),
    click.option("--quant", default=None, help="weight quant: Q4_K_M, Q8_0, ... (llama.cpp) or bf16, fp8, awq (vLLM); see `planner quants`"),
    click.option("--kv-quant", default=None, help="KV-cache type: f16, q8_0, q4_0 (llama.cpp), fp8 (vLLM)"),
    click.option("--engine", default=None, shell_complete=complete_engines, help="engine profile (default: llama.cpp for the GPU's vendor); see `planner engines`"),
    click.option("--split", type=click.Choice(["layer", "tensor"]), default=None, help="multi-GPU split mode"),
    click.option("--tp", "--tensor-parallel-size", "--tp-size", "tp", type=click.IntRange(1, 1024), default=None,
                 help="vLLM / SGLang: GPUs per pipeline stage (default: all, or each machine's GPUs over several)"),
    click.option("--pp", "--pipeline-parallel-size", "--pp-size", "pp", type=click.IntRange(1, 1024), default=None,
                 help="vLLM / SGLang: pipeline stages; --tp x --pp = the GPUs"),
    click.option("--ep", "--enable-expert-parallel", "ep", is_flag=True, default=False,
                 help="vLLM / SGLang expert parallelism: each stage's experts split whole over its GPUs"),
    click.option("--dp", "--data-parallel-size", "--attn-dp-size", "dp", type=click.IntRange(1, 1024), default=None,
                 help="vLLM / SGLang data-parallel attention with --ep (wide EP): every GPU a rank, experts over all"),
    click.option("--tensor-split", default=None, help="share of the model per GPU: numbers such as 3,1 (llama.cpp -ts), or 'memory' / 'speed' to balance by memory or by bandwidth"),
    click.option("--batch", "--parallel", "-np", "--max-num-seqs", "--max-running-requests", "batch", type=click.IntRange(1, 65536), default=1,
                 show_default=True, help="concurrent sequences (llama-server -np slots, vLLM --max-num-seqs, SGLang --max-running-requests)"),
    click.option("--ubatch", "-ub", "--max-num-batched-tokens", "--chunked-prefill-size", "ubatch",
                 type=click.IntRange(1, 65536), default=None,
                 help="tokens per forward step: llama.cpp -ub, vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size "
                      "(default the engine's; vLLM's depends on the GPU's memory)"),
    click.option("--gpu-memory-utilization", "--mem-fraction-static", "gpu_mem_util", type=click.FloatRange(0.05, 1.0),
                 default=None, help="vLLM --gpu-memory-utilization / SGLang --mem-fraction-static: share of each GPU the engine takes"),
    click.option("--gpu-layers", "-ngl", "gpu_layers", type=click.IntRange(0, 100000), default=None, help="layers on GPUs; the rest in host RAM (llama.cpp -ngl)"),
    click.option("--cpu-moe", "cpu_moe", type=click.IntRange(0, 100000), default=0, help="expert tensors of the first N layers in host RAM (llama.cpp --n-cpu-moe)"),
    click.option("--host", default=None, help="host memory profile for offload, e.g. ddr5-6000x2; see `planner hosts`"),
    click.option("--host-ram", type=BYTES, default=None, help="host RAM size, e.g. 64GiB; auto = this machine's"),
    click.option("--flash-attn", "flash_attn", type=click.Choice(["on", "off"]), default=None, help="flash attention (default: the engine's)"),
    click.option("--load-mode", "-lm", "load_mode", type=click.Choice(["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"]),
                 default=None, help="llama.cpp -lm: how the GGUF is loaded (default auto = mmap on a discrete GPU); "
                                    "none: host-RAM weights copied into pinned memory"),
    click.option("--no-mmap", "no_mmap", is_flag=True, default=False, help="= --load-mode none (llama.cpp's old --no-mmap)"),
    click.option("--mlock", "mlock", is_flag=True, default=False, help="= --load-mode mmap+mlock (llama.cpp's old --mlock)"),
    click.option("--prompt", type=TOKENS, default=None, help="prompt tokens per sequence for the speed estimate (default 512)"),
    click.option("--gen", type=TOKENS, default=None, help="generated tokens per sequence (default 128)"),
    click.option("--depth", type=TOKENS, default=None, help="tokens already in context before the prompt (default 0)"),
    click.option("--calibration", default=None, help="efficiency profile (default reference-fit; 'none' = priors only); see hwdb/calibrations"),
    click.option("--spec", default=None, help="speculative decoding: mtp, dflash, eagle (the catalog's drafter for the model), dflash:ID / eagle:ID, or draft:MODEL; see `planner drafts`"),
    click.option("--accept", type=FiniteFloat(), default=None, help="per-token acceptance of drafted tokens, 0-1 (Leviathan's alpha)"),
    click.option("--accept-len", "accept_len", type=FiniteFloat(), default=None, help="mean tokens per verification step (accepted drafts + 1), as vLLM/SGLang report"),
    click.option("--draft-len", "draft_len", type=click.IntRange(1, MAX_DRAFT_LEN), default=None, help="tokens drafted per step (default: the drafter's recommended, else the engine's)"),
    click.option("--draft-quant", "draft_quant", default=None, help="weight quant of the drafter (default: the drafter's recommended, or the target's)"),
]


def _stack(options):
    """A decorator applying click options in their listed order (shared option groups)."""
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


deployment_options = _stack(_DEPLOYMENT_OPTIONS)  # one deployment and workload: fit, report and the plots


def load_model(model: str, quant: str | None, catalog: Catalog | None = None):
    """A catalog id, a local config.json / .gguf, or a Hugging Face id the catalog does not hold
    (read from the local Hugging Face cache): (card or None for a catalog id, GGUF weights or None)."""
    if not is_local(model):
        if is_hf_id(model) and not (catalog or Catalog()).has_model(model):
            return load_hf_id(model), None
        return None, None
    p = Path(model)
    if not p.exists():
        raise PlannerError(f"no such file: {model}")
    if p.suffix == ".gguf":
        if quant:
            raise PlannerError("--quant does not apply to a .gguf file: its tensor types are read from the file")
        return load_gguf(p)
    return load_config_json(p), None


def model_and_tag(catalog: Catalog, model: str, quant: str | None) -> tuple[str, str | None]:
    """llama.cpp's `-hf REPO:QUANT` form ("unsloth/Qwen3.6-27B-GGUF:Q4_K_M"): the model and, where
    --quant is not given, the quant the tag names. A name the catalog holds with its colon (Ollama's
    "qwen3.6:27b") is a model, not a tag."""
    if is_local(model) or ":" not in model or catalog.has_model(model):
        return model, quant
    base, _, tag = model.rpartition(":")
    if not catalog.has_model(base):
        return model, quant
    if quant is not None and quant.strip().lower() != tag.strip().lower():
        raise PlannerError(f"{model} names quant {tag} and --quant says {quant}; give one")
    return base, quant if quant is not None else tag


def build(catalog: Catalog, model, **opts):
    """The Resolved deployment the options describe."""
    dep, card, file_weights = deployment_of(catalog, model, **opts)
    return resolve(catalog, dep, card=card, file_weights=file_weights)


def deployment_of(catalog: Catalog, model, gpu, ctx, quant, kv_quant, engine, split, tensor_split, batch, ubatch,
                  gpu_layers, cpu_moe, host, host_ram, flash_attn, spec, accept, accept_len, draft_len, draft_quant,
                  gpu_mem_util=None, network=None, tp=None, pp=None, ep=False, dp=None, load_mode=None, no_mmap=False,
                  mlock=False, **_):
    """The Deployment the options describe, with the model card and GGUF weights it reads."""
    said = [m for m in (load_mode, "none" if no_mmap else None, "mmap+mlock" if mlock else None) if m]
    if len(set(said)) > 1:
        raise PlannerError(f"--load-mode, --no-mmap and --mlock name different load modes ({', '.join(said)}); give one")
    load_mode = said[0] if said else None
    model, quant = model_and_tag(catalog, model, quant)
    card, file_weights = load_model(model, quant, catalog)
    ts, balance = None, None
    if tensor_split in ("memory", "speed"):
        balance = tensor_split
    elif tensor_split:
        try:
            ts = tuple(float(x) for x in tensor_split.split(","))
        except ValueError:
            raise PlannerError(f"--tensor-split {tensor_split!r}: write numbers like 3,1, or memory, or speed") from None
    gpus, nodes = gpu_layout(catalog, gpu)
    dep = Deployment(model=model, gpus=gpus, nodes=nodes, network=network, tp=tp, pp=pp, dp=dp, expert_parallel=ep, engine=engine, quant=quant, kv_quant=kv_quant, ctx_tokens=ctx,
                     batch=batch, split=split, ubatch_tokens=ubatch, gpu_layers=gpu_layers, cpu_moe_layers=cpu_moe,
                     host=host, host_ram_bytes=host_ram, tensor_split=ts, balance=balance, gpu_memory_utilization=gpu_mem_util,
                     flash_attention=None if flash_attn is None else flash_attn == "on", spec=spec, load_mode=load_mode,
                     draft_len=draft_len, accept=accept, accept_len=accept_len, draft_quant=draft_quant)
    return dep, card, file_weights


def run_fit(catalog: Catalog, opts: dict, sweep_accept: bool = False, observed: float | None = None):
    """fit() for the deployment options, and the Resolved with the offload the plan chose."""
    r = build(catalog, **opts)
    result = fit(catalog, r, opts["prompt"], opts["gen"], opts["depth"], catalog.calibration(opts["calibration"], r.engine.id, r.gpus[0].id),
                 sweep_accept, observed)
    a = result.assumptions  # the plan may have chosen an offload (llama.cpp --fit)
    return result, with_(r, gpu_layers=a["gpu_layers"], cpu_moe_layers=a["cpu_moe_layers"])


@main.command("fit")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@click.option("--sweep-accept", "sweep_accept", is_flag=True, help="with --spec: a table of speed by acceptance and draft length")
@click.option("--observed", type=FiniteFloat(), default=None, help="check a claimed decode speed (tok/s per stream) against this deployment's physics")
@click.option("--explain", is_flag=True, help="show the per-operation roofline behind the speeds")
@click.option("--emit", type=click.Choice(["llama.cpp", "vllm", "sglang", "mlx", "mistralrs", "tabbyapi"]), default=None, help="print the engine command line for this plan")
@click.option("--json", "as_json", is_flag=True, help="print the stable JSON contract")
@friendly
def fit_cmd(model, sweep_accept, observed, explain, emit, as_json, **opts):
    """Does MODEL fit on GPUS, with how long a context, and what to change if not.

    MODEL is a catalog id (see `planner models`) or a path to a config.json or .gguf file.

    Example:

        planner fit qwen3.6-27b --gpu rtx5090 --ctx 200k
    """
    catalog = Catalog()
    if sweep_accept and not opts["spec"]:
        raise PlannerError("--sweep-accept needs --spec (mtp, dflash, eagle or draft:MODEL)")
    result, r = run_fit(catalog, dict(opts, model=model), sweep_accept, observed)
    if as_json:
        out = result.contract(explain)
        if emit:
            out["command"] = emit_command(r, emit, result.ctx_tokens)
        click.echo(json.dumps(out, indent=2))
    else:
        echo_text(render.fit_text(result, r))
        if explain and result.perf:
            click.echo("")
            echo_text(render.explain_text(result.perf))
        if emit:
            click.echo("")
            click.echo(emit_command(r, emit, result.ctx_tokens))
    sys.exit(0 if result.fits else 1)


def terminal_width() -> int | None:
    """Where prose is wrapped: PLANNER_WIDTH, else the terminal's width when stdout is one; piped
    output is left as is (scripts read --json)."""
    import os
    import shutil

    if os.environ.get("PLANNER_WIDTH", "").isdigit():
        return max(40, int(os.environ["PLANNER_WIDTH"]))
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def echo_text(text: str) -> None:
    width = terminal_width()
    click.echo(render.wrap(text, width) if width else text)


def gpu_ids(catalog: Catalog, text: str) -> tuple[str, ...]:
    """--gpu as given, or `auto`: this machine's GPUs (planner.detect)."""
    return gpu_layout(catalog, text)[0]


def gpu_layout(catalog: Catalog, text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """--gpu as given: the GPUs, and for several machines ('rtx4090,rtx3090 / rtx3090', '2x(8xh200)')
    each GPU's machine; `auto`: this machine's GPUs (planner.detect)."""
    if text.strip().lower() == "auto":
        from planner.detect import detect_gpus

        return detect_gpus(catalog), ()
    machines = parse_machines(text)
    gpus = tuple(g for m in machines for g in m)
    nodes = tuple(k for k, m in enumerate(machines) for _ in m) if len(machines) > 1 else ()
    return gpus, nodes


def parse_sets(text: str, catalog: Catalog | None = None) -> list[tuple[str, ...]]:
    """'rtx5090,2xrtx3090,rtx5090+rtx3090ti' -> three sets; '+' joins GPUs of one mixed set; 'auto'
    is this machine's GPUs as one set."""
    return parse_sets_machines(text, catalog)[0]


def parse_sets_machines(text: str, catalog: Catalog | None = None):
    """--gpus: the sets, and for those over several machines ('2x(m4max)', 'rtx4090+rtx3090/rtx3090':
    '/' between machines, '+' between one machine's GPUs) each GPU's machine, by set index."""
    if text.strip().lower() == "auto":
        return [gpu_ids(catalog or Catalog(), text)], {}
    sets, machines, depth, term = [], {}, 0, ""
    for ch in text + ",":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            t = term.strip()
            term = ""
            if not t:
                continue
            if "/" in t or "(" in t:
                ms = parse_machines(t.replace("+", ","))
                if len(ms) > 1:
                    machines[len(sets)] = tuple(k for k, m in enumerate(ms) for _ in m)
                sets.append(tuple(g for m in ms for g in m))
            else:
                sets.append(parse_gpus(t.replace("+", ",")))
        else:
            term += ch
    if not sets:
        raise PlannerError("--gpus is empty; write e.g. rtx5090,2xrtx3090,rtx5090+rtx3090ti")
    return sets, machines


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


_COMPARE_OPTIONS = [
    click.option("--gpus", default=None, help="GPU sets to compare, comma-separated: rtx5090,2xrtx3090,rtx5090+rtx3090ti (default: every catalog GPU, 1 to --max-gpus of each); over several machines: 2x(m4max), rtx4090+rtx3090/rtx3090 (with --network)"),
    click.option("--network", default=None, help="the link between machines for sets over several (see `planner networks`)"),
    click.option("--max-gpus", type=click.IntRange(1, 8), default=4, show_default=True, help="with no --gpus: the most cards of one kind in a set"),
    click.option("--budget", type=FiniteFloat(min=0), default=None, help="most USD to spend on the GPUs (street price, else launch price)"),
    click.option("--workload", type=click.Choice(sorted(WORKLOADS)), default="chat", show_default=True, help="chat: one stream, ranked by decode tok/s; batch: 16 streams, ranked by total tok/s"),
    click.option("--ctx", type=TOKENS, default=None, help="context per sequence (default: chat 32k, batch 8k)"),
    click.option("--batch", type=click.IntRange(1, 65536), default=None, help="concurrent sequences (default: chat 1, batch 16)"),
    click.option("--prompt", type=TOKENS, default=None, help="prompt tokens (default: chat 512, batch 1024)"),
    click.option("--gen", type=TOKENS, default=None, help="generated tokens (default 128)"),
    click.option("--quant", default=None, help="weight quants to try, best first (default Q8_0,Q6_K,Q5_K_M,Q4_K_M; bf16,fp8,awq for vLLM/SGLang)"),
    click.option("--kv-quant", default=None, help="KV-cache types to try, best first (default: the engine's, q8_0, q4_0 / fp8)"),
    click.option("--engine", default=None, help="one engine for every set (default: llama.cpp for each set's vendor)"),
    click.option("--split", type=click.Choice(["layer", "tensor"]), default=None, help="multi-GPU split mode"),
    click.option("--calibration", default=None, help="efficiency profile (default reference-fit)"),
]


compare_options = _stack(_COMPARE_OPTIONS)  # a purchase comparison: compare and plot pareto


_SIMULATE_OPTIONS = [
    click.option("--rate", type=FiniteFloat(min=0), default=None, help="arrivals per second (Poisson; gamma with --burstiness)"),
    click.option("--concurrency", type=click.IntRange(1, 100000), default=None, help="closed-loop clients (each sends its next request when one finishes)"),
    click.option("--burstiness", type=FiniteFloat(min=0.01), default=1.0, show_default=True, help="gamma shape of the gaps between arrivals, as vllm bench serve: 1 Poisson, < 1 burstier"),
    click.option("--prompt-dist", default=None, help="prompt lengths: fixed:512, uniform:100-2000, lognormal:600,1.0 (default: fixed --prompt, 512)"),
    click.option("--gen-dist", default=None, help="output lengths, as --prompt-dist (default: fixed --gen, 128)"),
    click.option("--trace", type=click.Path(dir_okay=False), default=None, help="JSONL of {prompt_tokens, output_tokens[, arrival_s]} per request, replayed in order"),
    click.option("--prefix-tokens", type=click.IntRange(0), default=0, help="tokens every prompt begins with (a shared system prompt), servable from the prefix cache"),
    click.option("--prefix-caching", type=click.Choice(["on", "off"]), default=None, help="the engine's prefix cache (vLLM prefix caching, SGLang radix cache, llama-server cache_prompt; default on)"),
    click.option("--kv-unified", type=click.Choice(["on", "off"]), default=None, help="llama-server: one KV pool for all slots (-kvu; default on when --batch/-np is not given, as the server does)"),
    click.option("--cache-ram", type=click.IntRange(-1), default=None, help="llama-server --cache-ram MiB: host prompt cache each reused slot is saved to (default 8192; 0 off, -1 no limit)"),
    click.option("--requests", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="requests to simulate"),
    click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="random seed (arrivals, lengths, accepted drafts)"),
    click.option("--slo", default=None, help="latency targets for goodput: ttft=2s,tpot=40ms"),
]

simulate_options = _stack(_SIMULATE_OPTIONS)
SIM_KEYS = ("rate", "concurrency", "burstiness", "prompt_dist", "gen_dist", "trace", "prefix_tokens", "prefix_caching",
            "kv_unified", "cache_ram", "requests", "seed", "slo")


@dataclass
class Simulation:
    """One deployment and workload as `planner simulate` states them (shared with plot and tune)."""

    r: object
    cal: object
    factory: object  # () -> a fresh simulate.Engine
    workload: object
    slo: tuple
    settings: dict  # the server settings in force (for the output)
    describe: dict
    make: object  # (Deployment fields to change) -> Resolved
    options: dict  # the simulate options as given


def _simulation(catalog: Catalog, model: str, opts: dict, need_arrivals: bool = True, check_fit: bool = True) -> Simulation:
    from planner import simulate as sim

    s = {k: opts.pop(k) for k in SIM_KEYS}
    if need_arrivals and (s["rate"] is None) == (s["concurrency"] is None) and not (s["trace"] and s["rate"] is None and s["concurrency"] is None):
        raise PlannerError("give --rate R (requests/s) or --concurrency C (closed-loop clients)")
    if opts.get("depth"):
        raise PlannerError("simulate does not take --depth (each request's own prompt sets its depth)")
    batch_given = click.get_current_context().get_parameter_source("batch").name != "DEFAULT"
    dep, card, fw = deployment_of(catalog, model, **opts)
    r = resolve(catalog, dep, card=card, file_weights=fw)
    if not batch_given:
        # the engine's own concurrency default: vLLM/SGLang max_num_seqs from the profile; llama-server's
        # -np -1 (auto, common/arg.cpp:1406) becomes 4 slots (tools/server/server.cpp:168-171)
        slots = sim.LLAMA_SERVER_AUTO_SLOTS if r.engine.family == "llama.cpp" else default_max_seqs(r.engine, r.gpus)
        dep = dep.model_copy(update={"batch": slots})
        r = resolve(catalog, dep, card=card, file_weights=fw)
    llama = r.engine.family == "llama.cpp"
    if not llama and (s["kv_unified"] is not None or s["cache_ram"] is not None):
        raise PlannerError("--kv-unified and --cache-ram are llama-server settings; this plan runs " + r.engine.id)
    if s["prefix_tokens"] and any(k in ("mamba", "conv", "linear") for k in r.arch.layer_kinds()):
        raise PlannerError(f"--prefix-tokens: prefix caching of {r.model_id}'s recurrent layers is not modelled (the engines "
                           "keep their states only at checkpoints); simulate without a shared prefix")
    unified = (s["kv_unified"] == "on") if s["kv_unified"] else (llama and not batch_given)
    pc = None if s["prefix_caching"] is None else s["prefix_caching"] == "on"
    cal = catalog.calibration(opts["calibration"], r.engine.id, r.gpus[0].id)
    trace = tuple(sim.read_trace(Path(s["trace"]))) if s["trace"] else ()
    replay = bool(trace) and len(trace[0]) == 3
    if replay and (s["rate"] is not None or s["concurrency"] is not None):
        raise PlannerError(f"--trace {s['trace']} gives arrival_s: its arrivals are replayed, so leave out --rate and --concurrency")
    n = len(trace) if replay else s["requests"]
    w = sim.Workload(
        n_requests=n, rate=s["rate"], concurrency=s["concurrency"], burstiness=s["burstiness"],
        prompt=sim.parse_dist(s["prompt_dist"] or str(opts["prompt"] or 512), "--prompt-dist"),
        gen=sim.parse_dist(s["gen_dist"] or str(opts["gen"] or 128), "--gen-dist"),
        trace=trace, seed=s["seed"], prefix=s["prefix_tokens"])
    if w.prefix and not trace and w.prompt.kind == "fixed" and w.prompt.a <= w.prefix:
        raise PlannerError(f"--prefix-tokens {w.prefix} is not shorter than the prompts ({int(w.prompt.a)} tokens)")

    def factory():
        return sim.engine_for(catalog, r, cal, prefix_caching=pc, unified=unified, cache_ram_mib=s["cache_ram"])

    e = factory()
    if check_fit and not llama and e.kv_blocks < sim._blocks(e, r.ctx_tokens):
        cap = max(0, e.kv_blocks - e.state_blocks) * e.block_tokens if e.kv_per_token else 0
        raise PlannerError(f"{r.engine.family} would refuse to start: the memory left after the weights holds {cap:,} tokens "
                           f"of KV cache, fewer than one request of --ctx {r.ctx_tokens:,} (--max-model-len); lower --ctx, "
                           "take a smaller --quant or more GPUs")
    settings = {"max_seqs": r.batch, "token_budget": e.token_budget, "kv_blocks": e.kv_blocks or None,
                "prefix_caching": e.prefix_caching}
    if llama:
        settings.update(kv_unified=e.unified, cache_ram_mib=int(s["cache_ram"] if s["cache_ram"] is not None else
                        r.engine.server.prompt_cache_default.value if r.engine.server.prompt_cache_default else 0))
    if r.spec is not None:
        settings.update(spec=r.spec.label, draft_len=r.spec.gamma, acceptance=r.spec.alpha)
    notes = []
    if not llama:
        notes.append(f"{r.engine.family}'s step times are the speed model's, and no {r.engine.family} serving run was fitted: "
                     "held out against 24 published vLLM runs (H100/A100, every request at once), the simulated "
                     "throughput came out too high where hundreds of short requests run at once (docs/validation.md#serving)")
    if not llama and r.pp_size > 1:
        notes.append(f"pipeline parallel {r.pp_size}: the simulation runs each step through the stages in turn; "
                     f"{r.engine.family} keeps up to {r.pp_size} batches in flight (vllm/config/vllm.py:587-598), so a loaded "
                     "pipeline runs faster than this: read throughput as a lower bound")
    if llama and any(k in ("mamba", "conv", "linear") for k in r.arch.layer_kinds()):
        notes.append("llama-server on a model with recurrent layers measured slower than simulated (Qwen3.6-27B on "
                     "the H200: TTFT 1.6-3x the simulation's, docs/validation.md#serving); read these latencies as "
                     "a lower bound")
    desc = {"model": r.model_id, "engine": r.engine.id, "gpus": [g.id for g in r.gpus], "gpu_machine": list(r.nodes),
            "quant": r.quant,
            "kv_quant": r.kv_label, "max_seqs": r.batch, "ctx_tokens": r.ctx_tokens,
            "workload": {"requests": n, "rate": s["rate"], "concurrency": s["concurrency"], "burstiness": s["burstiness"],
                         "prompt": s["prompt_dist"] or f"fixed:{opts['prompt'] or 512}",
                         "gen": s["gen_dist"] or f"fixed:{opts['gen'] or 128}", "trace": s["trace"],
                         "replayed_arrivals": replay, "prefix_tokens": s["prefix_tokens"], "seed": s["seed"]},
            "notes": notes}
    def make(fields: dict):
        return resolve(catalog, dep.model_copy(update=fields), card=card, file_weights=fw)

    return Simulation(r, cal, factory, w, sim.parse_slo(s["slo"]), settings, desc, make, s)


@main.command("simulate")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@simulate_options
@click.option("--find-max-rate", is_flag=True, help="the highest arrival rate at which 90% of requests meet --slo")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def simulate_cmd(model, find_max_rate, as_json, **opts):
    """Serve a stream of requests on a deployment: TTFT, TPOT and end-to-end latency percentiles,
    throughput, goodput under an SLO, preemptions (docs/simulate.md).

    --batch is the engine's concurrency limit (vLLM --max-num-seqs, llama-server -np slots); when not
    given, the engine's default (vLLM 1,024 on GPUs of 70 GiB or more but A100s, else 256; SGLang 256;
    llama-server 4 slots sharing one KV pool).
    --spec simulates speculative decoding (each step drafts and verifies; accepted drafts drawn with
    the stated acceptance).

    Example:

        planner simulate qwen3-8b --gpu rtx4090 --engine vllm --ctx 8k --rate 2 --prompt-dist lognormal:800,0.8 --slo ttft=2s,tpot=50ms
    """
    from dataclasses import replace as dc_replace

    from planner import simulate as sim

    catalog = Catalog()
    S = _simulation(catalog, model, opts, need_arrivals=not find_max_rate)
    ttft, tpot = S.slo
    out = dict(S.describe, slo={"ttft_s": ttft, "tpot_s": tpot})
    w = S.workload
    if find_max_rate:
        if ttft is None and tpot is None:
            raise PlannerError("--find-max-rate needs --slo (e.g. ttft=2s,tpot=50ms)")
        if w.replay:
            raise PlannerError("--find-max-rate varies the arrival rate; a --trace with arrival_s fixes it")
        best = sim.find_max_rate(S.factory, dc_replace(w, rate=1.0), ttft, tpot)
        out["max_rate_per_s"] = best
        w = dc_replace(w, rate=best or None, concurrency=None if best else 1)
        out["workload"].update(rate=best or None, concurrency=None if best else 1)
    res = sim.run(S.factory(), w)
    out["result"] = sim.summary(res, ttft, tpot)
    out["engine_limits"] = S.settings
    k = -(-len(res.timeline) // 200) or 1  # the KV cache and the queues over time, at most ~200 points
    out["timeline"] = [{"t_s": p[0], "running": p[1], "waiting": p[2], "kv_used": p[3]} for p in res.timeline[::k]]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    echo_text(render.simulate_text(out))


@main.command("compare")
@click.argument("model", shell_complete=complete_models)
@compare_options
@click.option("--top", type=click.IntRange(1), default=None, help="rows of the text ranking (default: all named sets; 20 when searching the catalog)")
@click.option("--all", "show_all", is_flag=True, help="list the sets that are not ranked, with why")
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON")
@click.option("--csv", "as_csv", is_flag=True, help="print one CSV row per GPU set")
@friendly
def compare_cmd(model, top, show_all, as_json, as_csv, **opts):
    """Rank GPU sets for MODEL: fit, best quant and KV type, speed, tok/s per dollar and per watt.

    Example:

        planner compare qwen3.6-27b --gpus rtx5090,2xrtx3090,rx7900xtx,mi50-32gb,m4max --budget 3500
    """
    catalog = Catalog()
    c = _comparison(catalog, model, **opts)
    if as_json:
        click.echo(json.dumps(c.model_dump(), indent=2))
    elif as_csv:
        click.echo(render.compare_csv(c), nl=False)
    else:
        echo_text(render.compare_text(c, show_all, top or (None if opts["gpus"] else 20)))
    sys.exit(0 if any(e.status == "fits" for e in c.entries) else 1)


def _comparison(catalog, model, gpus, max_gpus, budget, workload, ctx, batch, prompt, gen, quant, kv_quant, engine,
                split, calibration, network=None):
    from dataclasses import replace as dc_replace

    from planner import compare as cmp

    model, quant = model_and_tag(catalog, model, quant)
    card, file_weights = load_model(model, None, catalog)
    if file_weights is not None:
        raise PlannerError("compare plans recipes: give a catalog id or a config.json, not a .gguf file")
    card = card or catalog.model(model)
    w = cmp.WORKLOADS[workload]
    w = dc_replace(w, ctx_tokens=ctx or w.ctx_tokens, batch=batch or w.batch, prompt_tokens=w.prompt_tokens
                   if prompt is None else prompt, gen_tokens=w.gen_tokens if gen is None else gen)
    sets, machines = parse_sets_machines(gpus, catalog) if gpus else (cmp.candidate_sets(catalog, max_gpus), {})
    if machines and not network:
        raise PlannerError("sets over several machines need --network (10gbe, tb5, tb5-rdma, ...; see `planner networks`)")
    if network:
        network_of(catalog, network)  # unknown names fail here, with suggestions
    for s in sets:
        for g in s:
            catalog.gpu(g)  # unknown names fail here, with suggestions
    eng = engine_name(catalog, engine)  # a family (llama.cpp, vllm, ...) resolves per GPU set
    for q in _names(quant) or ():
        catalog.recipe(q, None, card.id)  # unknown names fail here, with suggestions
    for k in _names(kv_quant) or ():
        catalog.kv_type(k)
    return cmp.compare(catalog, card, sets, w, catalog.calibration(calibration, eng), _names(quant), _names(kv_quant),
                       eng, split, budget, auto=not gpus, machines=machines, network=network)


def _html_out(path: str, option: str = "-o") -> Path:
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise PlannerError(f"{option} {path}: the output is an HTML page; name it *.html")
    if out.exists() and out.is_dir():
        raise PlannerError(f"{option} {path} is a folder; give a file name such as report.html")
    return out


def _refuse_overwriting_input(out: str | None, inputs, option: str) -> None:
    """Refuse an output that is one of the command's input files (the same file by any name:
    a symlink, a hard link, another spelling of the path)."""
    for i in inputs:
        if out and i and os.path.isfile(out) and os.path.isfile(i) and os.path.samefile(out, i):
            raise PlannerError(f"{option} {out} is the input {i}; write the output to another file")


@main.group("plot")
def plot_group():
    """Interactive plots as standalone HTML pages (plotly.js embedded; they open offline).

    KIND is memory, context, batch, roofline, acceptance (with --spec) or pareto.
    """


def _plot_command(kind: str, doc: str):
    @plot_group.command(kind, help=doc)
    @click.argument("model", shell_complete=complete_models)
    @deployment_options
    @click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write")
    @friendly
    def cmd(model, out, **opts):
        from planner import plots
        from planner.report import figure

        path = _html_out(out)
        catalog = Catalog()
        result, r = run_fit(catalog, dict(opts, model=model), sweep_accept=kind == "acceptance")
        fig = figure(kind, catalog, result, r)
        write_atomic(path, plots.page(fig.layout.title.text.split("<br>")[0], plots.div(fig, f"plot-{kind}")))
        click.echo(f"wrote {path}")

    return cmd


_plot_command("memory", "Memory of each kind (weights, KV cache, state, buffers) against context, with the usable memory.\n\n"
              "Example:\n\n    planner plot memory qwen3.6-27b --gpu rtx5090 -o memory.html")
_plot_command("context", "Decode tok/s per stream against tokens already in context, with the physical ceiling.\n\n"
              "Example:\n\n    planner plot context qwen3.6-27b --gpu rtx5090 --ctx 200k -o context.html")
_plot_command("batch", "Total and per-stream decode tok/s against concurrent sequences; marks batches that do not fit.\n\n"
              "Example:\n\n    planner plot batch llama-3.1-8b --gpu rtx4090 --ctx 8k -o batch.html")
_plot_command("roofline", "Each operation of a decode and a prefill step placed on the GPUs' roofline.\n\n"
              "Example:\n\n    planner plot roofline qwen3.6-27b --gpu rtx5090 -o roofline.html")
_plot_command("acceptance", "Speculative decoding speed against acceptance rate, one line per draft length (needs --spec).\n\n"
              "Example:\n\n    planner plot acceptance qwen3.6-27b --gpu rtx5090 --ctx 64k --spec mtp --accept 0.8 -o spec.html")


@plot_group.command("pareto")
@click.argument("model", shell_complete=complete_models)
@compare_options
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write")
@friendly
def plot_pareto_cmd(model, out, **opts):
    """Price against speed of the GPU sets `planner compare` ranks, with the Pareto front.

    Example:

        planner plot pareto qwen3.6-27b --budget 5000 -o pareto.html
    """
    from planner import plots

    path = _html_out(out)
    catalog = Catalog()
    c = _comparison(catalog, model, **opts)
    sub = (f"{c.workload} workload ({c.metric_what}), context {c.ctx_tokens:,}, batch {c.batch}"
           + (f", budget ${c.budget_usd:,.0f}" if c.budget_usd is not None else "")
           + "; each set at the best quant and KV type it fits (hover for details)")
    fig = plots.pareto_figure(c, f"{c.model_name}: which GPUs? price against speed", sub)
    write_atomic(path, plots.page(f"{c.model_name}: price against speed", plots.div(fig, "plot-pareto")))
    click.echo(f"wrote {path}")


def _sim_subtitle(S) -> str:
    d, w = S.describe, S.describe["workload"]
    return (f"{d['engine']} on {' + '.join(d['gpus'])}, {d['quant']}, KV {d['kv_quant']}, max {d['max_seqs']} sequences; "
            f"prompt {w['prompt']}, output {w['gen']}, {w['requests']} requests per point, seed {w['seed']}")


@plot_group.command("latency")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@simulate_options
@click.option("--rates", default=None, help="arrival rates to simulate, e.g. 0.5,1,2,4 (default: 10 rates up to 1.25x the saturated throughput)")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write")
@friendly
def plot_latency_cmd(model, rates, out, **opts):
    """TTFT, TPOT and end-to-end latency percentiles against the arrival rate, simulated (planner simulate).

    Example:

        planner plot latency qwen3-8b --gpu rtx4090 --engine vllm --ctx 8k --slo ttft=2s,tpot=50ms -o latency.html
    """
    from dataclasses import replace as dc_replace

    from planner import plots
    from planner import simulate as sim

    path = _html_out(out)
    catalog = Catalog()
    S = _simulation(catalog, model, opts, need_arrivals=False)
    if S.workload.replay:
        raise PlannerError("plot latency varies the arrival rate; a --trace with arrival_s fixes it")
    if rates:
        try:
            grid = sorted({float(x) for x in rates.split(",")})
        except ValueError:
            raise PlannerError(f"--rates {rates!r}: write rates in requests/s, e.g. 0.5,1,2,4") from None
        if not grid or grid[0] <= 0:
            raise PlannerError(f"--rates {rates!r}: rates must be positive")
    else:  # the throughput of a saturated server: clients at the concurrency limit, then rates around it
        sat = sim.summary(sim.run(S.factory(), dc_replace(S.workload, rate=None, concurrency=S.r.batch)))
        top = sat["request_throughput_per_s"]
        grid = [top * f for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)]
    ttft, tpot = S.slo
    points = [(x, sim.summary(sim.run(S.factory(), dc_replace(S.workload, rate=x, concurrency=None)), ttft, tpot))
              for x in grid]
    best = sim.find_max_rate(S.factory, dc_replace(S.workload, rate=1.0), ttft, tpot) if (ttft or tpot) else None
    title = f"{S.r.model_name}: latency against load"
    fig = plots.latency_figure(points, title, _sim_subtitle(S), S.slo, best)
    write_atomic(path, plots.page(title, plots.div(fig, "plot-latency")))
    click.echo(f"wrote {path}")


@plot_group.command("timeline")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@simulate_options
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write")
@friendly
def plot_timeline_cmd(model, out, **opts):
    """One simulated run over time: requests running and waiting, and the KV cache's use.

    Example:

        planner plot timeline qwen3-8b --gpu rtx4090 --engine vllm --ctx 8k --rate 8 -o timeline.html
    """
    from planner import plots
    from planner import simulate as sim

    path = _html_out(out)
    catalog = Catalog()
    S = _simulation(catalog, model, opts)
    res = sim.run(S.factory(), S.workload)
    s = sim.summary(res, *S.slo)
    w = S.describe["workload"]
    arr = "replayed arrivals" if w["replayed_arrivals"] else (f"{w['rate']:g} req/s" if w["rate"] else f"{w['concurrency']} clients")
    title = f"{S.r.model_name}: a simulated run, {arr}"
    sub = _sim_subtitle(S) + (f"; TTFT p50 {s['ttft_s']['p50']:.3g} s, TPOT p50 {s['tpot_s']['p50'] / units.MS:.3g} ms, "
                              f"{s['preemptions']} preemptions" if s["completed"] else "")
    fig = plots.timeline_figure(res.timeline, title, sub)
    write_atomic(path, plots.page(title, plots.div(fig, "plot-timeline")))
    click.echo(f"wrote {path}")


@main.command("tune")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@simulate_options
@click.option("--passes", type=click.IntRange(1, 5), default=2, show_default=True, help="sweeps over the settings (coordinate descent)")
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="settings listed")
@click.option("--emit", is_flag=True, help="print the engine command of the best settings")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def tune_cmd(model, passes, top, emit, as_json, **opts):
    """Search the server settings for the most goodput under --slo (docs/simulate.md#tune).

    Searched: weight quant and KV type, -np slots / --max-num-seqs, -ub / --max-num-batched-tokens,
    the split mode on several GPUs, llama-server's unified KV and prompt cache, the draft length with
    --spec, prefix caching with --prefix-tokens. Settings given on the command line stay fixed. With
    --rate or --concurrency each candidate is scored by goodput at that load, else by the highest rate
    at which 90% of requests meet the SLO.

    Example:

        planner tune qwen3-8b --gpu rtx4090 --engine vllm --ctx 8k --slo ttft=2s,tpot=50ms --prompt-dist lognormal:800,0.8
    """
    from planner import tune as tn

    catalog = Catalog()
    ctx = click.get_current_context()
    given = {k for k in ("quant", "kv_quant", "batch", "ubatch", "split", "draft_len", "kv_unified", "cache_ram",
                         "prefix_caching") if ctx.get_parameter_source(k).name != "DEFAULT"}
    fixed = {"ubatch_tokens" if k == "ubatch" else k for k in given}
    S = _simulation(catalog, model, opts, need_arrivals=False, check_fit=False)
    if S.slo == (None, None):
        raise PlannerError("tune needs --slo (e.g. ttft=2s,tpot=50ms): goodput counts the requests that meet it")
    r = S.r
    llama = r.engine.family == "llama.cpp"
    start = {"quant": r.quant, "kv_quant": r.kv_quant, "batch": r.batch, "ubatch_tokens": r.ubatch_tokens}
    if len(r.gpus) > 1:
        start["split"] = r.split
    if r.spec is not None:
        start["draft_len"] = r.spec.gamma
    if llama:
        start.update(kv_unified=S.settings["kv_unified"], cache_ram=S.settings["cache_ram_mib"])
    if S.workload.prefix:
        start["prefix_caching"] = S.settings["prefix_caching"]
    knobs = tn.knobs_for(catalog, r, None, None, r.spec is not None, bool(S.workload.prefix), fixed)

    def progress(c):
        if not as_json:
            got = f"{c.score:.3g} req/s" if c.error is None else c.error
            click.echo(f"  tried {_settings_text(c.settings)}: {got}", err=True)

    res = tn.tune(catalog, S.make, lambda rr: catalog.calibration(opts["calibration"], rr.engine.id, rr.gpus[0].id),
                  S.workload, S.slo, knobs, start, passes=passes, progress=progress)
    best = res.best
    fields = {k: v for k, v in best.settings.items() if k not in tn.SERVER_KEYS}
    rb = S.make(fields)
    cmd = None
    if emit or as_json:
        from planner.emit import command as emit_command

        cmd = emit_command(rb, r.engine.family, rb.ctx_tokens)
        extra = _server_flags(rb, best.settings)
        if extra:
            cmd = cmd + " " + extra
    if as_json:
        click.echo(json.dumps({
            "model": r.model_id, "engine": r.engine.id, "gpus": [g.id for g in r.gpus], "objective": res.objective,
            "slo": {"ttft_s": S.slo[0], "tpot_s": S.slo[1]}, "workload": S.describe["workload"],
            "knobs": [{"name": k.name, "flag": k.flag, "values": list(k.values)} for k in knobs],
            "best": {"settings": best.settings, "score_per_s": best.score, "result": best.summary},
            "tried": [{"settings": c.settings, "score_per_s": c.score, "error": c.error} for c in res.tried],
            "command": cmd, "notes": S.describe["notes"]}, indent=2, default=str))
        return
    what = ("goodput at the offered load" if res.objective == "goodput" else
            "highest arrival rate at which 90% of requests meet the SLO")
    ttft, tpot = S.slo
    lines = [f"{r.model_name} on {gpus_label([g.id for g in r.gpus], r.nodes)}  [{r.engine.id}]: {len(res.tried)} settings simulated, "
             f"ranked by {what} (SLO: TTFT <= {ttft} s, TPOT <= {tpot} s)", ""]
    for i, c in enumerate(res.tried[:top], 1):
        got = f"{c.score:8.3g} req/s" if c.error is None else f"  {c.error}"
        lines.append(f"{i:>3}. {_settings_text(c.settings)}  {got}")
    s = best.summary
    lines += ["", f"best: {_settings_text(best.settings)}",
              f"  TTFT p50 {s['ttft_s']['p50']:.3g} s (p90 {s['ttft_s']['p90']:.3g}), TPOT p50 {s['tpot_s']['p50'] / units.MS:.3g} ms, "
              f"{s['output_tok_s']:.0f} output tok/s, {s['slo_attained']:.0%} of requests meet the SLO"]
    if cmd:
        lines += ["", cmd]
    lines += [f"note: {n}" for n in S.describe["notes"]]
    echo_text("\n".join(lines))


def _settings_text(st: dict) -> str:
    names = {"quant": "quant", "kv_quant": "KV", "batch": "seqs", "ubatch_tokens": "ubatch", "split": "split",
             "draft_len": "draft", "kv_unified": "unified-KV", "cache_ram": "cache-ram", "prefix_caching": "prefix-cache"}
    out = []
    for k, v in st.items():
        if isinstance(v, bool):
            v = "on" if v else "off"
        out.append(f"{names.get(k, k)} {v}")
    return ", ".join(out)


def _server_flags(r, settings: dict) -> str:
    """Server flags `--emit` does not state from the deployment alone: llama-server's -kvu and --cache-ram,
    and prefix caching turned off (flag names: hwdb/flags.toml)."""
    fam = r.engine.family
    out = []
    if fam == "llama.cpp":
        if settings.get("kv_unified"):
            out.append("-kvu")
        pc = r.engine.server.prompt_cache_default if r.engine.server else None
        if "cache_ram" in settings and settings["cache_ram"] != (int(pc.value) if pc else 0):
            out += ["--cache-ram", str(settings["cache_ram"])]
        if settings.get("prefix_caching") is False:
            out.append("--no-cache-prompt")
    elif settings.get("prefix_caching") is False:
        out.append("--no-enable-prefix-caching" if fam == "vllm" else "--disable-radix-cache")
    return " ".join(out)


@main.command("report")
@click.argument("model", shell_complete=complete_models)
@deployment_options
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write")
@friendly
def report_cmd(model, out, **opts):
    """One self-contained HTML page: verdict, memory, speed, plots, commands, assumptions, sources.

    Works offline: plotly.js is embedded in the page.

    Example:

        planner report qwen3.6-27b --gpu rtx5090 --ctx 200k -o report.html
    """
    from planner.report import report_html

    path = _html_out(out)
    catalog = Catalog()
    result, r = run_fit(catalog, dict(opts, model=model), sweep_accept=bool(opts["spec"]))
    write_atomic(path, report_html(catalog, result, r))
    click.echo(f"wrote {path} ({'fits' if result.fits else 'does not fit'})")


@main.group("calibrate")
def calibrate_group():
    """Measure runs (live harness), ingest engine benchmarks, fit the speed model's efficiency factors."""


@calibrate_group.command("fit")
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="profile to write (TOML)")
@click.option("--engine", default=None, help="fit only this engine's rows and factors (its attention included); the rest of the profile is --priors'")
@click.option("--gpu", default=None, help="fit only the rows measured on this GPU (the profile records it)")
@click.option("--priors", default=None, help="profile the fit starts from (default: priors; reference-fit with --engine)")
@click.option("--name", default=None, help="profile name (default: from the runs)")
@friendly
def calibrate_fit_cmd(runs, out, engine, gpu, priors, name):
    """Fit efficiency factors to the `fit` rows of RUNS (CSV) and write a calibration profile.

    Rows whose role is holdout or old-build are predicted but never fitted.

    Examples:

        planner calibrate fit hwdb/runs/published.csv hwdb/runs/llamacpp-h200.csv -o hwdb/calibrations/reference-fit.toml

        planner calibrate fit hwdb/runs/harness-h100*.csv --engine torch-cuda --gpu h100-sxm -o hwdb/calibrations/h100-harness.toml
    """
    from planner import calibrate, validate
    from planner.runs import load_runs, prepare

    _refuse_overwriting_input(out, [*runs, priors], "-o")
    catalog = Catalog()
    if engine:
        engine = catalog.engine(engine).id
    if gpu:
        gpu = catalog.gpu(gpu).id
    pri = catalog.calibration(priors or ("reference-fit" if engine else "priors"))
    rows = [r for path in runs for r in load_runs(Path(path))]
    rows = [r for r in rows if (engine is None or r.engine == engine) and (gpu is None or r.gpu == gpu)]
    if not rows:
        raise PlannerError(f"no rows of {' and '.join(x for x in (engine, gpu) if x)} in {', '.join(runs)}")
    prepared = prepare(catalog, rows, pri)
    fit_rows = [p for p in prepared if p.run.role in ("fit", "harness") and p.run.expressible]
    click.echo(f"fitting {len(fit_rows)} of {len(rows)} runs ...", err=True)
    runs_label = ", ".join(runs)
    cal, info = calibrate.fit(pri, fit_rows, runs_file=runs_label, engine=engine)
    if engine or gpu:
        info["filter"] = {k: v for k, v in {"engine": engine, "gpu": gpu}.items() if v}
        info["priors"] = pri.id
    scored = validate.score(prepared, cal)
    info["error"] = validate.summary(scored)
    fitted = {id(p) for p in fit_rows}
    cal = cal.model_copy(update={"intervals": validate.interval_buckets([s for s in scored if id(s.prepared) in fitted])})
    cmd = f"planner calibrate fit {' '.join(runs)}" + (f" --engine {engine}" if engine else "") + \
        (f" --gpu {gpu}" if gpu else "") + (f" --priors {priors}" if priors else "")
    scope = f" ({', '.join(x for x in (engine, gpu) if x)} rows)" if engine or gpu else ""
    cal = calibrate.with_values(cal.model_copy(update={"runs_file": runs_label}), [], [], None,
                                name or f"fitted to {runs_label}{scope}",
                                f"Efficiency factors fitted by `{cmd}` (docs/validation.md#procedure)."
                                + (f" Factors other than {engine}'s are those of {pri.id}." if engine else ""), info)
    header = (f"# Generated by `{cmd} -o {out}`; do not edit by hand.\n"
              "# Values with source = \"fit\" were fitted; values with an estimate are priors no run constrained.\n")
    calibrate.write_profile(cal, Path(out), header, {})
    click.echo(validate.text_table(scored))
    click.echo(f"wrote {out}")


@calibrate_group.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", default=None, type=click.Path(dir_okay=False), help="runs CSV to append to (written atomically); default: print the rows as CSV")
@click.option("--model", default=None, help="catalog model, where the file's model name matches none")
@click.option("--quant", default=None, help="weight quant, where the file does not say (batched-bench; vLLM: default bf16)")
@click.option("--gpu", default=None, help="GPUs that ran it: rtx4090, 2xh100 (needed for batched-bench and vLLM)")
@click.option("--engine", default=None, help="engine profile (default: from llama-bench's backend; llama.cpp-cuda; vllm-cuda)")
@click.option("--kv-quant", "kv_quant", default=None, help="KV-cache type, where the file does not say")
@click.option("--role", type=click.Choice(["fit", "holdout"]), default="fit", show_default=True, help="fitted by `calibrate fit`, or held out")
@click.option("--tag", default=None, help="prefix of the rows' ref_row ids (default: the file name)")
@click.option("--source", default=None, help="where the measurement comes from (URL or note) for the rows' source column")
@friendly
def calibrate_ingest_cmd(files, out, model, quant, gpu, engine, kv_quant, role, tag, source):
    """Turn engine benchmark output into measured-run rows: llama-bench -o json / jsonl,
    llama-batched-bench (table or --output-format jsonl), vLLM `vllm bench serve --save-result`
    (or benchmark_serving.py) JSON. The format is recognised from the content.

    Examples:

        llama-bench -m Llama-3.1-8B-Instruct-Q4_K_M.gguf -o json > bench.json
        planner calibrate ingest bench.json -o my-runs.csv

        planner calibrate ingest serve.json --gpu 2xh100 -o my-runs.csv
    """
    import csv as csv_mod
    import io

    from planner.ingest import Given, ingest
    from planner.runs import Run, write_runs

    _refuse_overwriting_input(out, files, "-o")
    catalog = Catalog()
    rows, origin = [], []  # the rows, and the file each came from
    for f in files:
        p = Path(f)
        if not p.exists():
            raise PlannerError(f"no such file: {f}")
        g = Given(model=model, quant=quant, gpu=gpu, engine=engine, kv_quant=kv_quant, source=source, role=role,
                  tag=tag or p.stem)
        fmt, new = ingest(catalog, p, g)
        click.echo(f"{f}: {fmt}, {len(new)} runs", err=True)
        rows += new
        origin += [f] * len(new)
    if len(files) > 1 and tag:  # one tag over several files: keep the ids unique
        for i, r in enumerate(rows, 1):
            r["ref_row"] = f"{tag}-{i:03d}"
    for i, (r, f) in enumerate(zip(rows, origin)):
        try:
            Run.model_validate({k: v for k, v in r.items() if v is not None})
        except ValidationError as e:  # a row the file's values make invalid: name the file, the row and the key
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"]) or "(row)"
            raise PlannerError(f"{f}: run {origins_before(origin, i) + 1} ({r.get('metric') or 'row'}): "
                               f"{key}: {err['msg']} (value {str(err.get('input'))[:40]!r})") from None
    if out:
        path = Path(out)
        if path.exists():
            from planner.runs import load_runs

            have = {r.ref_row for r in load_runs(path)}
            clash = sorted(have & {r["ref_row"] for r in rows})
            if clash:
                raise PlannerError(f"{out} already has rows {', '.join(clash[:3])}: give --tag to name these apart")
        total = write_runs(path, rows, "# Measured runs ingested by `planner calibrate ingest` (planner/ingest.py).")
        click.echo(f"wrote {len(rows)} runs to {out} ({total} in the file)")
        return
    buf = io.StringIO()
    w = csv_mod.DictWriter(buf, fieldnames=list(Run.model_fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in Run.model_fields})
    click.echo(buf.getvalue(), nl=False)


def origins_before(origin: list[str], i: int) -> int:
    """How many rows before row `i` came from the same file."""
    return sum(1 for f in origin[:i] if f == origin[i])


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(units.parse_tokens(x)) for x in text.split(",") if x.strip())
    except Exception:
        raise PlannerError(f"{what} {text!r}: give token counts separated by commas, e.g. 128,2k,8k") from None
    if not vals or min(vals) < 1:
        raise PlannerError(f"{what} {text!r}: give positive token counts separated by commas")
    return vals


@calibrate_group.command("gguf")
@click.argument("model", shell_complete=complete_models)
@click.option("--quant", default="Q4_K_M", show_default=True, help="GGUF quant recipe (see `planner quants`)")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="GGUF file to write")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed of the weights")
@click.option("--header-only", is_flag=True, help="print the tensor layout (names, shapes, types, bytes) as JSON instead of writing")
@friendly
def calibrate_gguf_cmd(model, quant, out, seed, header_only):
    """Write a synthetic GGUF of MODEL that llama.cpp loads and runs: the exact tensors llama.cpp
    expects for the architecture, the quant recipe's per-tensor types, random weights. For timing
    llama.cpp without downloading the model (docs/calibration.md#synthetic-gguf-files).

    Example:

        planner calibrate gguf qwen3.6-27b --quant Q4_K_M -o qwen3.6-27b-Q4_K_M.gguf
    """
    from planner import synth

    catalog = Catalog()
    card = load_model(model, None, catalog)[0] or catalog.model(model)
    lay = synth.layout(catalog, card, quant)
    if header_only:
        click.echo(json.dumps({"arch": lay.arch, "tensor_bytes": lay.tensor_bytes,
                               "tensors": [{"name": t.name, "ne": t.ne, "type": t.ggml_type, "bytes": t.nbytes}
                                           for t in lay.tensors]}, indent=1))
        return
    _refuse_overwriting_input(out, [model], "-o")
    with write_errors(out):
        synth.write(lay, target(Path(out)), seed=seed, progress=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}: {lay.arch}, {len(lay.tensors)} tensors, {lay.tensor_bytes / units.GiB:.2f} GiB of weights")


@calibrate_group.command("run")
@click.option("--engine", "engine_name", type=click.Choice(["torch-cuda", "llama.cpp"]), default="torch-cuda", show_default=True,
              help="what runs the model: planner's PyTorch transformer, or llama.cpp's own benchmarks (--llama-bin)")
@click.option("--llama-bin", default=None, type=click.Path(file_okay=False), help="llama.cpp build's bin folder (llama-bench, llama-batched-bench, test-backend-ops)")
@click.option("--models", default=None, help="llama.cpp: catalog models (comma-separated)")
@click.option("--quants", default=None, help="llama.cpp: GGUF quants (default: the grid's)")
@click.option("--grid", type=click.Choice(["quick", "full"]), default="quick", show_default=True, help="llama.cpp: grid of hwdb/grids/llama.cpp.toml")
@click.option("--kv", default=None, help="llama.cpp: K/V cache pairs, e.g. f16/f16,q8_0/q8_0,q8_0/f16")
@click.option("--gen", type=click.IntRange(1, 100000), default=None, help="llama.cpp: generated tokens per tg test")
@click.option("--fa-off-depths", default=None, help="llama.cpp: depths measured again with flash attention off ('' for none)")
@click.option("--offload", default=None, help="llama.cpp: fractions of layers (or MoE experts) kept in host RAM, e.g. 0.5")
@click.option("--ops", default=None, help="llama.cpp: test-backend-ops perf ops for the kernel table, each OP or OP:REGEX, separated by ';' ('' for none)")
@click.option("--work", default=None, type=click.Path(file_okay=False), help="llama.cpp: folder for GGUFs and raw outputs (default OUT.work); a run resumes from it")
@click.option("--backend", default="CUDA0", show_default=True, help="llama.cpp: test-backend-ops backend")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="llama.cpp: CPU threads")
@click.option("--engine-id", default=None, help="llama.cpp: engine profile the rows are labelled with (default: from the build's backend)")
@click.option("--keep-gguf", is_flag=True, help="llama.cpp: keep the synthetic GGUFs after their steps")
@click.option("--reingest", is_flag=True, help="llama.cpp: rebuild the rows of finished steps from the work folder's raw output; run nothing")
@click.option("--model", default="llama-3.1-8b", show_default=True, help="catalog model whose architecture is built (dense, softmax attention)")
@click.option("--quant", type=click.Choice(["bf16", "f16", "fp8"]), default="bf16", show_default=True, help="weight type")
@click.option("--out", "out", default="harness-runs.csv", show_default=True, type=click.Path(dir_okay=False), help="runs CSV to write or append to")
@click.option("--gpu", default=None, help="catalog GPU the rows are labelled with (default: detected from the device name)")
@click.option("--gpus", "n_gpus", type=click.IntRange(1, 64), default=1, show_default=True, help="GPUs to split the model over")
@click.option("--split", type=click.Choice(["layer", "tensor"]), default="layer", show_default=True, help="split mode with --gpus 2 or more")
@click.option("--prompts", default=",".join(map(str, harness.DEFAULT_PROMPTS)), show_default=True, help="prefill prompt lengths (batch 1; and 512 at batch 4 and 16)")
@click.option("--depths", default=",".join(map(str, harness.DEFAULT_DEPTHS)), show_default=True, help="decode depths (tokens already cached)")
@click.option("--batches", default=",".join(map(str, harness.DEFAULT_BATCHES)), show_default=True, help="decode batch sizes")
@click.option("--repeats", type=click.IntRange(1, 1000), default=7, show_default=True, help="timed samples per point (the median is kept)")
@click.option("--role", type=click.Choice(["fit", "holdout"]), default="fit", show_default=True, help="role of the rows: fitted by `calibrate fit`, or held out of it")
@click.option("--tag", default=None, help="prefix of the rows' ref_row ids (default: the GPU id)")
@click.option("--device", default=None, help="torch device (default cuda; 'cpu' only exercises the harness)")
@click.option("--no-ceilings", is_flag=True, help="skip the copy-bandwidth and matmul measurements")
@friendly
def calibrate_run_cmd(engine_name, llama_bin, models, quants, grid, kv, gen, fa_off_depths, offload, ops, work, backend, threads,
                      engine_id, keep_gguf, reingest, model, quant, out, gpu, n_gpus, split, prompts, depths, batches, repeats,
                      role, tag, device, no_ceilings):
    """Measure this machine's GPU: its copy bandwidth and matmul throughput, then prefill and
    decode of a real transformer (random weights, the model's shapes) over a grid of prompts,
    depths and batches. Rows go to OUT (appended; written atomically), the ceilings to
    OUT.ceilings.json. Needs PyTorch (pip install 'planner[harness]').

    Example:

        planner calibrate run --model llama-3.1-8b --out hwdb/runs/harness-h100.csv
        planner calibrate run --engine llama.cpp --llama-bin llama.cpp/build/bin --models llama-3.1-8b,qwen3-32b --grid full --out my-gpu.csv
    """
    from planner.runs import load_runs, write_runs

    if engine_name == "llama.cpp":
        return _calibrate_llamacpp(llama_bin, models or model, quants, grid, prompts, depths, batches, kv, gen,
                                   fa_off_depths, offload,
                                   ops, work, backend, threads, engine_id, keep_gguf, reingest, out, gpu, role, tag, repeats)

    catalog = Catalog()
    card = load_model(model, None, catalog)[0] or catalog.model(model)
    model_id = model if is_local(model) else card.id
    arch = card.arch
    harness.supported(arch)  # refused before asking for PyTorch: the answer does not depend on it
    if device and not device.startswith("cuda") and not gpu:
        raise PlannerError("on the CPU give --gpu ID to label the rows (CPU timings only test the harness)")
    torch = harness.require_torch()
    dev = device or "cuda"
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PlannerError("no CUDA device visible to PyTorch (--device cpu only exercises the harness)")
        if torch.cuda.device_count() < n_gpus:
            raise PlannerError(f"--gpus {n_gpus}: PyTorch sees {torch.cuda.device_count()} CUDA device(s)")
        devices = [f"cuda:{i}" for i in range(n_gpus)]
        props = torch.cuda.get_device_properties(0)
        gpu_id = catalog.gpu(gpu).id if gpu else harness.detect_gpu(catalog, props.name, props.total_memory)
    else:
        if not gpu:
            raise PlannerError("on the CPU give --gpu ID to label the rows (CPU timings only test the harness)")
        gpu_id, devices = catalog.gpu(gpu).id, [dev] * n_gpus
    setup = harness.Setup(model=model_id, arch=arch, quant=quant, gpu=gpu_id, devices=devices,
                    split=split if n_gpus > 1 else None, prompts=_ints(prompts, "--prompts"),
                    depths=_ints(depths, "--depths"), batches=_ints(batches, "--batches"), repeats=repeats)
    path = Path(out)
    if path.exists():
        load_runs(path)  # refuse to append to a file that is not a runs CSV
    env = harness.environment(devices)
    log = harness.log_stderr
    log(f"planner harness: {model_id} {quant} on {n_gpus} x {env['device_name']} (catalog {gpu_id}), torch {env['torch']}")
    ceilings = None
    if not no_ceilings and dev.startswith("cuda"):
        log("measuring the card's ceilings ...")
        ceilings = harness.measure_ceilings(torch.device(devices[0]), log=log)
    free = harness.free_bytes(setup)
    points, dropped = harness.plan_points(arch, free, setup.prompts, setup.depths, setup.batches,
                                    tuple(p for p in setup.prefill_batched if p[1] in setup.prompts))
    if dropped:
        log(f"left out (memory or context): {', '.join(harness.label(p) for p in dropped)}")
    log(f"running {len(points)} points ...")
    measured = (harness.measure_tp if setup.split == "tensor" else harness.measure)(setup, points, log)
    existing = len(load_runs(path)) if path.exists() else 0
    new = harness.rows(setup, measured, env, role, tag or gpu_id, start=existing + 1)
    header = (f"# Measured by `planner calibrate run` (planner/harness.py); engine {harness.ENGINE}. Conditions per row; "
              "value in tok/s per stream (decode) or over the batch (prefill); peak_memory_gib = device memory in use.")
    total = write_runs(path, new, header)
    if ceilings is not None:
        harness.write_ceilings(path, gpu_id, env, ceilings, harness.datasheet(catalog.gpu(gpu_id)))
    click.echo(f"wrote {len(new)} runs to {out} ({total} in the file)")


def _calibrate_llamacpp(llama_bin, models, quants, grid_name, prompts, depths, batches, kv, gen, fa_off_depths, offload,
                        ops, work,
                        backend, threads, engine_id, keep_gguf, reingest, out, gpu, role, tag, repeats):
    """`calibrate run --engine llama.cpp`: the grid over each model and quant (planner.llamacpp)."""
    from planner import llamacpp, synth
    from planner.runs import load_runs

    if not llama_bin and not reingest:
        raise PlannerError("--engine llama.cpp needs --llama-bin DIR (a llama.cpp build's bin folder)")
    catalog = Catalog()
    llama_bin = llama_bin or "."
    for tool in llamacpp.TOOLS[:2] if not reingest else ():
        llamacpp.tool_path(Path(llama_bin), tool)
    src = click.get_current_context()
    g = llamacpp.load_grid(catalog, grid_name)
    upd = {}
    given = lambda name: src.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE  # noqa: E731
    if quants:
        upd["quants"] = tuple(q.strip() for q in quants.split(",") if q.strip())
    if given("prompts"):
        upd["prompts"] = tuple(_ints(prompts, "--prompts"))
    if given("depths"):
        upd["depths"] = tuple(_ints(depths, "--depths"))
    if given("batches"):
        upd["batches"] = tuple(_ints(batches, "--batches"))
    if given("repeats"):
        upd["repetitions"] = repeats
    if kv:
        upd["kv"] = tuple(x.strip() for x in kv.split(",") if x.strip())
        for pair in upd["kv"]:
            for t in llamacpp.kv_pair(pair):
                catalog.kv_type(t)
    if gen:
        upd["gen"] = gen
    if fa_off_depths is not None:
        try:
            upd["fa_off_depths"] = tuple(int(x) for x in fa_off_depths.split(",") if x.strip())
        except ValueError:
            raise PlannerError(f"--fa-off-depths {fa_off_depths!r}: give token counts separated by commas") from None
        if any(d < 0 for d in upd["fa_off_depths"]):
            raise PlannerError("--fa-off-depths: depths are 0 or more")
    if offload is not None:
        try:
            upd["offload"] = tuple(float(x) for x in offload.split(",") if x.strip())
        except ValueError:
            raise PlannerError(f"--offload {offload!r}: give fractions such as 0.5") from None
        if any(not 0 < f < 1 for f in upd["offload"]):
            raise PlannerError("--offload: fractions between 0 and 1")
    if ops is not None:
        upd["ops"] = tuple(x.strip() for x in ops.split(";") if x.strip())
    g = g.model_copy(update=upd)
    plan = []
    for mid in [m.strip() for m in models.split(",") if m.strip()]:
        card = load_model(mid, None, catalog)[0] or catalog.model(mid)
        model_id = mid if is_local(mid) else card.id
        label = card.id
        for q in g.quants:
            synth.layout(catalog, card, q)  # refuse an unsupported model or quant before running anything
            plan.append((card, model_id, q, llamacpp.model_steps(card, q, g, model_id, label)))
    path = Path(out)
    if path.exists():
        load_runs(path)  # refuse to append to a file that is not a runs CSV
    setup = llamacpp.Setup(bin_dir=Path(llama_bin), work=Path(work) if work else path.with_suffix(".work"), out=path,
                           gpu=catalog.gpu(gpu).id if gpu else None, engine=catalog.engine(engine_id).id if engine_id else None,
                           role=role, tag=tag or "llamacpp", threads=threads, keep_gguf=keep_gguf, reingest=reingest)
    env_note = llamacpp.environment(setup.bin_dir) if not reingest else "environment not recorded"
    n_steps = sum(len(p[3]) for p in plan)
    setup.log(f"planner llama.cpp harness: {len(plan)} model files, {n_steps} steps; {env_note}; work folder {setup.work}")
    ops_steps = llamacpp.ops_steps(g, backend)
    if ops_steps and not reingest and not (Path(llama_bin) / "test-backend-ops").exists():
        setup.log("no test-backend-ops in --llama-bin: the kernel table is skipped")
        ops_steps = []
    n = llamacpp.run(catalog, setup, plan, ops_steps, env_note)
    done = llamacpp.summary(setup.work)
    total = len(load_runs(path)) if path.exists() else 0
    failed = f"; {len(done['failed'])} steps failed: {', '.join(done['failed'])}" if done["failed"] else ""
    click.echo(f"wrote {n} runs to {out} ({total} in the file){failed}")


@main.command("validate")
@click.argument("runs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--calibration", default=None, help="profile for every run (default: each run's own, as `planner fit` picks it)")
@click.option("--markdown", "markdown_out", default=None, type=click.Path(dir_okay=False),
              help="also write the report as Markdown (docs/validation.md)")
@click.option("--html", "html_out", default=None, type=click.Path(dir_okay=False),
              help="also write a predicted-vs-measured plot (standalone HTML)")
@click.option("--serving", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="a folder of serving runs (bench/serve_load.py output) to simulate (default with no RUNS: hwdb/runs/serving-*.raw)")
@click.option("--json", "as_json", is_flag=True, help="print every scored run and the summaries as JSON")
@friendly
def validate_cmd(runs, calibration, markdown_out, html_out, serving, as_json):
    """Predict every measured run and print the error per metric (median and 90th percentile of
    |error|, and the worst cases with their conditions).

    RUNS default to the runs under hwdb/runs/ (published, speculative, harness), and the serving runs
    under hwdb/runs/serving-*.raw are simulated with `planner simulate` and compared.

    Examples:

        planner validate --markdown docs/validation.md

        planner validate my-runs.csv --html validation.html

    --json prints every scored run (measured, predicted, error) and the summaries per section; the serving
    and multi-machine comparisons are in the text and Markdown reports.
    """
    from planner import validate
    from planner.runs import default_run_files, load_runs

    catalog = Catalog()
    say = (lambda *_a, **_k: None) if as_json else click.echo  # --json: the JSON alone on stdout
    paths = [Path(p) for p in runs] or default_run_files(catalog.root)
    for o, option in ((markdown_out, "--markdown"), (html_out, "--html")):
        _refuse_overwriting_input(o, [*paths, calibration], option)
    if html_out:
        html_path = _html_out(html_out, "--html")
    rows = [r for p in paths for r in load_runs(p)]
    if not rows:
        raise PlannerError(f"no runs in {', '.join(map(str, paths))}")
    secs = validate.sections(catalog, rows, calibration)
    for sec in secs:
        say(f"{sec.kind} runs, profile {sec.cal.id} ({len(sec.scored)} runs" + (f"; {len(sec.skipped)} not expressible" if sec.skipped else "") + "):")
        say(validate.text_table(sec.scored))
        say("")
    memory = validate.memory_scores(catalog, rows)
    if memory:
        say("peak device memory, planned against measured:")
        say("\n".join(validate.memory_lines(memory, markdown=False)))
    from planner import serving as srv

    serving_dirs = [Path(d) for d in serving] if serving else ([] if runs else srv.default_dirs(catalog.root))
    served = [sc for d in serving_dirs for sc in srv.score(catalog, srv.load_runs(d), calibration=calibration)]
    if not runs and not serving:
        for f in srv.default_published(catalog.root):
            served += srv.score_published(catalog, srv.load_published(f), calibration=calibration)
    if served:
        say("")
        say(f"serving runs ({', '.join(map(str, serving_dirs))}), measured / simulated:")
        say("\n".join(srv.lines(served, markdown=False)))
    from planner import multinode

    clusters = [] if runs else multinode.score(catalog, multinode.load(multinode.default_path(catalog.root)))
    if clusters:
        say("")
        say(f"runs over several machines (hwdb/runs/{multinode.FILE}), measured / planned:")
        say("\n".join(multinode.lines(clusters, markdown=False)))
    cmd_args = (("" if not runs else " " + " ".join(runs)) + (f" --calibration {calibration}" if calibration else "")
                + "".join(f" --serving {d}" for d in serving))
    if markdown_out:
        shown = ", ".join(f"`hwdb/runs/{p.name}`" if p.parent.name == "runs" else f"`{p}`" for p in paths)
        ceilings = {}
        for p in paths:
            c = p.with_name(p.stem + ".ceilings.json")
            if c.exists():
                ceilings.update(json.loads(c.read_text()))
        command = f"planner validate{cmd_args} --markdown {markdown_out}"
        write_atomic(Path(markdown_out), validate.markdown(secs, shown, command, ceilings, memory, served, clusters))
        say(f"wrote {markdown_out}")
    if html_out:
        from planner import plots

        fig = plots.validation_figure(secs, "Predicted against measured", f"{sum(len(s.scored) for s in secs)} runs "
                                      f"from {', '.join(p.name for p in paths)}; profiles "
                                      f"{', '.join(s.cal.id for s in secs)}")
        write_atomic(html_path, plots.page("planner validate", plots.div(fig, "validation")))
        say(f"wrote {html_out}")
    if as_json:
        click.echo(json.dumps({"sections": [
            {"kind": sec.kind, "calibration": sec.cal.id, "summary": validate.summary(sec.scored),
             "runs": [{"ref_row": sc.prepared.run.ref_row, "role": sc.prepared.run.role, "engine": sc.prepared.run.engine,
                       "gpu": sc.prepared.run.gpu, "model": sc.prepared.run.model, "quant": sc.prepared.run.quant,
                       "metric": sc.prepared.run.metric, "measured": sc.prepared.run.value, "predicted": sc.predicted,
                       "error": sc.error} for sc in sec.scored]} for sec in secs]}, indent=2))


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print JSON (the catalog entries as their files hold them)")


def _list_json(catalog: Catalog, kind: str, table: dict) -> None:
    click.echo(json.dumps([render.entry_json(catalog, kind, v) for _, v in sorted(table.items())], indent=2))


def _listing(as_json: bool, kind: str, table: str, text) -> None:
    """A catalog listing: the entries of `catalog.<table>` as JSON, or `text(catalog)`."""
    catalog = Catalog()
    if as_json:
        return _list_json(catalog, kind, getattr(catalog, table))
    click.echo(text(catalog))


@main.command("gpus")
@JSON_OPTION
@friendly
def gpus_cmd(as_json):
    """List the GPUs in the catalog.

    Example:

        planner gpus
    """
    _listing(as_json, "gpu", "gpus", render.gpu_table)


@main.command("models")
@click.option("--gpu", "gpus", default=None, help="rank the models that run on these GPUs (as --gpu of fit: rtx3090, \"2x RTX 3090\", ...)")
@click.option("--ctx", type=TOKENS, default=None, help="context per sequence each model must fit (default 32k)")
@click.option("--batch", type=click.IntRange(1, 65536), default=None, help="concurrent sequences (default 1)")
@click.option("--engine", default=None, help="engine or family for every model (default: llama.cpp for the GPU vendor)")
@click.option("--min-speed", type=FiniteFloat(min=0), default=None, help="only models decoding at least this many tok/s per stream")
@click.option("--all", "show_all", is_flag=True, help="also list the models that do not fit, with why")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def models_cmd(gpus, ctx, batch, engine, min_speed, show_all, as_json):
    """List the models in the catalog, or with --gpu, which of them run on those GPUs.

    With --gpu every catalog model is planned as `compare` plans a GPU set: the best quant of the
    engine's ladder (Q8_0, Q6_K, Q5_K_M, Q4_K_M for llama.cpp) that fits the context with the best
    KV type at it, fastest first by decode tok/s per stream.

    Examples:

        planner models

        planner models --gpu rtx3090 --ctx 32k --min-speed 20
    """
    from dataclasses import replace as dc_replace

    from planner import compare as cmp

    catalog = Catalog()
    if not gpus:
        if any(x is not None for x in (ctx, batch, engine, min_speed)) or show_all:
            raise PlannerError("--ctx, --batch, --engine, --min-speed and --all rank models on GPUs: give --gpu")
        if as_json:
            click.echo(json.dumps([{"id": m.id, "name": m.name, "params": m.arch.params(),
                                    "native_ctx_tokens": m.arch.max_position_embeddings}
                                   for m in sorted(catalog.models.values(), key=lambda m: m.id)], indent=2))
            return
        click.echo(render.model_table(catalog))
        return
    names = gpu_ids(catalog, gpus)
    for g in names:
        catalog.gpu(g)  # unknown names fail here, with suggestions
    eng = engine_name(catalog, engine)
    w = cmp.WORKLOADS["chat"]
    w = dc_replace(w, ctx_tokens=ctx or w.ctx_tokens, batch=batch or w.batch)
    rows = cmp.runnable_models(catalog, names, w, catalog.calibration(None, eng), eng)
    if min_speed is not None:
        rows = [m for m in rows if m.entry.status != "fits" or (m.entry.decode_tok_s or 0) >= min_speed]
    if as_json:
        click.echo(json.dumps([{"model": m.model, "params": m.params, **m.entry.model_dump()} for m in rows], indent=2))
        return
    echo_text(render.runnable_table(rows, w, show_all))


@main.command("drafts")
@click.argument("model", required=False)
@JSON_OPTION
@friendly
def drafts_cmd(model, as_json):
    """List speculative drafters (DFlash, EAGLE, MTP, draft models) and the models they serve.

    With MODEL, only that model's drafters (including its built-in MTP layers).

    Example:

        planner drafts qwen3.6-27b
    """
    catalog = Catalog()
    if as_json:
        mid = catalog.model(model).id if model else None
        return _list_json(catalog, "draft", {k: d for k, d in catalog.drafts.items() if mid is None or mid in d.targets})
    click.echo(render.draft_table(catalog, catalog.model(model).id if model else None))


@main.command("engines")
@JSON_OPTION
@friendly
def engines_cmd(as_json):
    """List engine profiles and their memory rules.

    Example:

        planner engines
    """
    _listing(as_json, "engine", "engines", render.engine_table)


@main.command("hosts")
@JSON_OPTION
@friendly
def hosts_cmd(as_json):
    """List host-memory profiles for offload.

    Example:

        planner hosts
    """
    _listing(as_json, "host", "hosts", render.host_table)


@main.command("networks")
@JSON_OPTION
@friendly
def networks_cmd(as_json):
    """List the networks between machines (for --gpu 'A / B' --network ID).

    Example:

        planner networks
    """
    _listing(as_json, "network", "networks", render.network_table)


@main.command("quants")
@JSON_OPTION
@friendly
def quants_cmd(as_json):
    """List weight quant recipes and KV-cache types.

    Example:

        planner quants
    """
    catalog = Catalog()
    if as_json:
        click.echo(json.dumps({"recipes": {k: r.model_dump(mode="json") for k, r in catalog.recipes.recipes.items()},
                               "storage_types": {k: {**t.model_dump(mode="json"), "bits_per_weight": t.bits_per_weight}
                                                 for k, t in catalog.formats.types.items()},
                               "kv_types": {k: {**t.model_dump(mode="json"), "bytes_per_value": t.bytes_per_value}
                                            for k, t in catalog.kv_types.types.items()}}, indent=2))
        return
    click.echo(render.quant_table(catalog))


@main.command("show")
@click.argument("id")
@JSON_OPTION
@friendly
def show_cmd(id, as_json):
    """Explain one GPU, model, engine or host profile, with the source of every number.

    Example:

        planner show rtx5090
    """
    catalog = Catalog()
    if as_json:
        kind, v = render.find_entry(catalog, id)
        click.echo(json.dumps(render.entry_json(catalog, kind, v), indent=2))
        return
    click.echo(render.show(catalog, id))


if __name__ == "__main__":  # pragma: no cover
    main()
