"""The command line: parse, build a Deployment, make one library call, render.

Domain errors become one line on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from planner import units
from planner.catalog import Catalog
from planner.deployment import Deployment, parse_gpus, resolve
from planner.errors import PlannerError
from planner.fit import fit
from planner.localfile import is_local, load_config_json, load_gguf
from planner import render


class TokensType(click.ParamType):
    name = "tokens"

    def convert(self, value, param, ctx):
        try:
            return units.parse_tokens(value, f"--{param.name}" if param else "size")
        except PlannerError as e:
            self.fail(str(e), param, ctx)


class BytesType(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        try:
            return units.parse_bytes(value, f"--{param.name.replace('_', '-')}" if param else "size")
        except PlannerError as e:
            self.fail(str(e), param, ctx)


TOKENS = TokensType()
BYTES = BytesType()


def friendly(f):
    """Turn PlannerError into a one-line message and exit status 2."""

    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except PlannerError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="planner")
def main():
    """planner: will this LLM fit on this hardware, and how should I run it?"""


@main.command("fit")
@click.argument("model")
@click.option("--gpu", "gpu", required=True, help="GPUs: rtx5090, 2xrtx3090 or rtx5090,rtx3090ti")
@click.option("--ctx", type=TOKENS, default=None, help="context per sequence: 32768, 200k, 128Ki (default: the model's native maximum)")
@click.option("--quant", default=None, help="weight quant: Q4_K_M, Q8_0, ... (llama.cpp) or bf16, fp8, awq (vLLM); see `planner quants`")
@click.option("--kv-quant", default=None, help="KV-cache type: f16, q8_0, q4_0 (llama.cpp), fp8 (vLLM)")
@click.option("--engine", default=None, help="engine profile (default: llama.cpp for the GPU's vendor); see `planner engines`")
@click.option("--split", type=click.Choice(["layer", "tensor"]), default=None, help="multi-GPU split mode")
@click.option("--tensor-split", default=None, help="share of the model per GPU, e.g. 3,1 (llama.cpp -ts)")
@click.option("--batch", type=click.IntRange(1, 65536), default=1, show_default=True, help="concurrent sequences")
@click.option("--ubatch", type=click.IntRange(1, 65536), default=None, help="physical batch (llama.cpp -ub; default the engine's)")
@click.option("--gpu-layers", "-ngl", "gpu_layers", type=click.IntRange(0, 100000), default=None, help="layers on GPUs; the rest in host RAM (llama.cpp -ngl)")
@click.option("--cpu-moe", "cpu_moe", type=click.IntRange(0, 100000), default=0, help="expert tensors of the first N layers in host RAM (llama.cpp --n-cpu-moe)")
@click.option("--host", default=None, help="host memory profile for offload, e.g. ddr5-6000x2; see `planner hosts`")
@click.option("--host-ram", type=BYTES, default=None, help="host RAM size, e.g. 64GiB")
@click.option("--prompt", type=TOKENS, default=None, help="prompt tokens (speed model: not yet)")
@click.option("--gen", type=TOKENS, default=None, help="generated tokens (speed model: not yet)")
@click.option("--depth", type=TOKENS, default=None, help="tokens already in context (speed model: not yet)")
@click.option("--json", "as_json", is_flag=True, help="print the stable JSON contract")
@friendly
def fit_cmd(model, gpu, ctx, quant, kv_quant, engine, split, tensor_split, batch, ubatch, gpu_layers, cpu_moe,
            host, host_ram, prompt, gen, depth, as_json):
    """Does MODEL fit on GPUS, with how long a context, and what to change if not.

    MODEL is a catalog id (see `planner models`) or a path to a config.json or .gguf file.

    Example:

        planner fit qwen3.6-27b --gpu rtx5090 --ctx 200k
    """
    catalog = Catalog()
    card, file_weights = None, None
    if is_local(model):
        p = Path(model)
        if not p.exists():
            raise PlannerError(f"no such file: {model}")
        if p.suffix == ".gguf":
            card, file_weights = load_gguf(p)
            if quant:
                raise PlannerError("--quant does not apply to a .gguf file: its tensor types are read from the file")
        else:
            card = load_config_json(p)
    ts = None
    if tensor_split:
        try:
            ts = tuple(float(x) for x in tensor_split.split(","))
        except ValueError:
            raise PlannerError(f"--tensor-split {tensor_split!r}: write numbers like 3,1") from None
    dep = Deployment(model=model, gpus=parse_gpus(gpu), engine=engine, quant=quant, kv_quant=kv_quant, ctx_tokens=ctx,
                     batch=batch, split=split, ubatch_tokens=ubatch, gpu_layers=gpu_layers, cpu_moe_layers=cpu_moe,
                     host=host, host_ram_bytes=host_ram, tensor_split=ts)
    r = resolve(catalog, dep, card=card, file_weights=file_weights)
    result = fit(catalog, r)
    if as_json:
        click.echo(json.dumps(result.contract(), indent=2))
    else:
        click.echo(render.fit_text(result, r))
    sys.exit(0 if result.fits else 1)


@main.command("gpus")
@friendly
def gpus_cmd():
    """List the GPUs in the catalog.

    Example:

        planner gpus
    """
    click.echo(render.gpu_table(Catalog()))


@main.command("models")
@friendly
def models_cmd():
    """List the models in the catalog.

    Example:

        planner models
    """
    click.echo(render.model_table(Catalog()))


@main.command("engines")
@friendly
def engines_cmd():
    """List engine profiles and their memory rules.

    Example:

        planner engines
    """
    click.echo(render.engine_table(Catalog()))


@main.command("hosts")
@friendly
def hosts_cmd():
    """List host-memory profiles for offload.

    Example:

        planner hosts
    """
    click.echo(render.host_table(Catalog()))


@main.command("quants")
@friendly
def quants_cmd():
    """List weight quant recipes and KV-cache types.

    Example:

        planner quants
    """
    click.echo(render.quant_table(Catalog()))


@main.command("show")
@click.argument("id")
@friendly
def show_cmd(id):
    """Explain one GPU, model, engine or host profile, with the source of every number.

    Example:

        planner show rtx5090
    """
    click.echo(render.show(Catalog(), id))


if __name__ == "__main__":  # pragma: no cover
    main()
