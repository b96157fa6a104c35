"""Names as people type them (issue 16, first part): GPUs with spaces, case, vendor words and
counts; engine families resolved to the GPU vendor's backend; `python -m planner`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from planner.catalog import Catalog
from planner.deployment import Deployment, parse_gpus, resolve
from planner.errors import PlannerError


@pytest.fixture(scope="module")
def catalog():
    return Catalog()


@pytest.mark.parametrize("typed, gpu_id", [
    ("RTX 5090", "rtx5090"), ("7900 XTX", "rx7900xtx"), ("7900xtx", "rx7900xtx"), ("m4 max", "m4max"),
    ("M4 Max", "m4max"), ("DGX Spark", "gb10"), ("Strix Halo", "strix-halo"), ("H100 PCIe", "h100-pcie"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"), ("rtx 3090 ti", "rtx3090ti"), ("3090", "rtx3090"),
    ("A100 40GB", "a100-40gb"), ("RTX PRO 6000 Blackwell", "rtx-pro-6000-blackwell"), ("RTX A6000", "rtx-a6000"),
    ("RTX 6000 Ada", "rtx6000-ada"), ("Radeon AI PRO R9700", "radeon-ai-pro-r9700"), ("Arc Pro B60", "arc-pro-b60"),
    ("Ryzen AI Max+ 395", "strix-halo"), ("rtx5090", "rtx5090")])
def test_gpu_names_as_typed(catalog, typed, gpu_id):
    assert catalog.gpu(typed).id == gpu_id


def test_an_unknown_gpu_name_gets_suggestions(catalog):
    with pytest.raises(PlannerError, match="did you mean .*rtx6000ada"):
        catalog.gpu("rtx 6000")


@pytest.mark.parametrize("text, names", [
    ("2x 3090", ("3090", "3090")), ("2 x RTX 3090", ("RTX 3090", "RTX 3090")), ("2xrtx3090", ("rtx3090", "rtx3090")),
    ("7900xtx", ("7900xtx",)), ("RTX 5090,RTX 3090 Ti", ("RTX 5090", "RTX 3090 Ti")), ("3*h100", ("h100",) * 3)])
def test_gpu_lists_with_counts_and_spaces(text, names):
    assert parse_gpus(text) == names


def test_a_count_beyond_the_limit_is_refused():
    with pytest.raises(PlannerError, match="out of range"):
        parse_gpus("0x rtx3090")


@pytest.mark.parametrize("engine, gpu, engine_id", [
    ("llama.cpp", "rtx4090", "llama.cpp-cuda"), ("llama.cpp", "rx7900xtx", "llama.cpp-rocm"),
    ("llama.cpp", "m4max", "llama.cpp-metal"), ("llamacpp", "arc-pro-b60", "llama.cpp-vulkan"),
    ("ollama", "rtx4090", "llama.cpp-cuda"), ("LM Studio", "m4max", "llama.cpp-metal"),
    ("vllm", "rtx4090", "vllm-cuda"), ("vLLM", "mi300x", "vllm-rocm"), ("sglang", "h100-sxm", "sglang-cuda")])
def test_engine_families_resolve_to_the_vendors_backend(catalog, engine, gpu, engine_id):
    assert resolve(catalog, Deployment(model="llama-3.1-8b", gpus=(gpu,), engine=engine)).engine.id == engine_id


def test_an_engine_family_without_a_backend_for_the_vendor_says_so(catalog):
    with pytest.raises(PlannerError, match="vllm has no metal backend"):
        resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("m4max",), engine="vllm"))


def test_mixed_vendors_take_vulkan(catalog):
    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx3090", "rx7900xtx"), engine="llama.cpp"))
    assert r.engine.id == "llama.cpp-vulkan"


def test_python_dash_m_planner_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "planner", "fit", "llama-3.1-8b", "--gpu", "RTX 4090", "--engine",
                          "llama.cpp", "--ctx", "8k", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert '"engine": "llama.cpp-cuda"' in res.stdout


# --- emitted commands -------------------------------------------------------------------------

def test_llamacpp_dflash_is_draft_dflash_and_every_argument_is_quoted(catalog):
    """b11434 spells DFlash `draft-dflash` (common/speculative.cpp:77); a draft file name with
    spaces or parentheses must stay one shell argument."""
    import shlex

    from planner.emit import command

    r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("rtx5090",), spec="dflash", accept=0.7))
    c = command(r, "llama.cpp", 32768)
    argv = shlex.split(c)
    assert argv[argv.index("--spec-type") + 1] == "draft-dflash"
    md = argv[argv.index("-md") + 1]
    assert md.endswith(".gguf") and shlex.join(argv) == c


def test_vllm_awq_plan_names_its_quantization(catalog):
    import shlex

    from planner.emit import command

    r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("rtx5090",), engine="vllm", quant="awq"))
    c = command(r, "vllm", 32768)
    head, cmd = c.split("\n")
    assert head.startswith("# AWQ plan: replace") and "checkpoint" in head
    argv = shlex.split(cmd)
    assert argv[argv.index("--quantization") + 1] == "awq"


def test_vllm_speculative_config_is_one_argument(catalog):
    import json
    import shlex

    from planner.emit import command

    r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("h100-sxm",), engine="vllm", spec="mtp", accept=0.8))
    argv = shlex.split(command(r, "vllm", 32768))
    cfg = json.loads(argv[argv.index("--speculative-config") + 1])
    assert cfg["method"] == "mtp" and cfg["num_speculative_tokens"] >= 1


# --- "what can I run on this box?" -------------------------------------------------------------

def test_models_on_a_gpu_are_plans_that_fit_fastest_first(catalog):
    """Every ranked model, re-planned by `fit` at its quant, KV type and the context asked, fits;
    the ranking is by decode tok/s per stream; a model whose native context is shorter than the
    context asked is not ranked."""
    from dataclasses import replace as dc_replace

    from planner import compare as cmp
    from planner.fit import fit

    w = dc_replace(cmp.WORKLOADS["chat"], ctx_tokens=32768)
    rows = cmp.runnable_models(catalog, ("rtx3090",), w, catalog.calibration(None))
    ranked = [m for m in rows if m.entry.status == "fits"]
    assert ranked and [m.entry.rank for m in ranked] == list(range(1, len(ranked) + 1))
    speeds = [m.entry.decode_tok_s for m in ranked]
    assert speeds == sorted(speeds, reverse=True)
    for m in ranked:
        r = resolve(catalog, Deployment(model=m.model, gpus=("rtx3090",), quant=m.entry.quant,
                                        kv_quant=m.entry.kv_quant, ctx_tokens=32768))
        assert fit(catalog, r).fits, m.model
    short = {m.model: m for m in rows}["llama-2-7b"]  # 4,096 tokens native
    assert short.entry.status == "no-fit" and "native context" in short.entry.reason


def test_models_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from planner.cli import main

    res = CliRunner().invoke(main, ["models", "--gpu", "RTX 3090", "--ctx", "8k", "--min-speed", "50", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert all(r["decode_tok_s"] >= 50 for r in rows if r["status"] == "fits")
    res = CliRunner().invoke(main, ["models", "--gpu", "rtx3090", "--ctx", "8k"])
    assert res.exit_code == 0 and "catalog models on rtx3090" in res.output
    res = CliRunner().invoke(main, ["models", "--ctx", "8k"])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "give --gpu" in res.output
    res = CliRunner().invoke(main, ["models", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) >= 20


# --- --gpu auto / --host-ram auto: this machine's hardware, read from the tools that report it ----


def _fake_tool(tmp_path, name: str, output: str):
    import stat

    path = tmp_path / name
    path.write_text("#!/bin/sh\ncat <<'EOF'\n" + output + "EOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def test_gpu_auto_reads_nvidia_smi(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from planner.cli import main

    bin_dir = _fake_tool(tmp_path, "nvidia-smi", "NVIDIA GeForce RTX 4090, 24564\nNVIDIA GeForce RTX 3090, 24576\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # the fake first
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "auto", "--ctx", "8k", "--json"])
    assert res.exit_code == 0, res.output
    import json

    assert [d["device"] for d in json.loads(res.output)["memory"]["devices"]] == ["rtx4090", "rtx3090"]


def test_gpu_auto_names_what_it_cannot_match(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from planner.cli import main

    bin_dir = _fake_tool(tmp_path, "nvidia-smi", "NVIDIA Quantum Widget 9000, 1024\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "auto"])
    assert res.exit_code == 2 and "Quantum Widget 9000" in res.output and "Traceback" not in res.output


def test_gpu_auto_without_tools_says_so(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from planner.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, rocm-smi or sysctl
    res = CliRunner().invoke(main, ["models", "--gpu", "auto"])
    assert res.exit_code == 2 and "found no GPU" in res.output


def test_host_ram_auto_reads_this_machine():
    from planner.detect import detect_host_ram_bytes

    assert detect_host_ram_bytes() > 2**30  # /proc/meminfo here (Linux CI), hw.memsize on macOS


def test_ollama_default_context_by_vram(catalog):
    """hwdb/frontends.toml, from Ollama's docs/context-length.mdx: under 24 GiB of VRAM 4k, under
    48 GiB 32k, else 256k (capped by the model's own maximum); --ctx wins."""
    from planner.deployment import Deployment, resolve

    def ctx(gpus, **kw):
        return resolve(catalog, Deployment(model="qwen3.6-27b", gpus=gpus, engine="ollama", **kw)).ctx_tokens

    assert ctx(("rtx5080",)) == 4096 and ctx(("rtx5090",)) == 32768 and ctx(("rtx3090", "rtx3090")) == 262144
    assert ctx(("rtx5090",), ctx_tokens=8192) == 8192
    assert resolve(catalog, Deployment(model="qwen3.6-27b", gpus=("rtx5090",), engine="llama.cpp")).ctx_tokens is None


def test_quant_names_as_published(catalog):
    """int4 is the compressed-tensors W4A16 recipe; Unsloth's dynamic UD-*_XL mixes are refused with
    what to do instead (their per-tensor types differ per model), never silently mapped."""
    from planner.errors import PlannerError

    assert catalog.recipe("INT4", "safetensors")[0] == "w4a16"
    for name in ("UD-Q4_K_XL", "Q4_K_XL", "ud-iq2_xxs"):
        with pytest.raises(PlannerError, match="dynamic mixes"):
            catalog.recipe(name, "gguf")


@pytest.mark.parametrize("name", ["lm studio", "LM Studio", "lm-studio", "lmstudio"])
def test_lm_studio_plans_its_default_context(name):
    """LM Studio runs llama.cpp and loads a model with a 4,096-token context unless told otherwise
    (hwdb/frontends.toml, user reports); --ctx still wins."""
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve

    cat = Catalog()
    r = resolve(cat, Deployment(model="qwen3-8b", gpus=("rtx4090",), engine=name))
    assert r.engine.family == "llama.cpp" and r.ctx_tokens == 4096 and any("LM Studio" in n for n in r.notes)
    assert resolve(cat, Deployment(model="qwen3-8b", gpus=("rtx4090",), engine=name, ctx_tokens=16384)).ctx_tokens == 16384


def test_an_engine_release_pin_plans_that_releases_defaults():
    """vLLM 0.11.0 took 90% of each GPU (vllm/config/cache.py:43 of its sdist) against 0.33.0's 92%, and had no
    16,384-token tier from 160 GiB (engine/arg_utils.py:1605-1624); a pin plans those. A release planner
    holds nothing of is refused with the ones it does."""
    import json

    from click.testing import CliRunner

    from planner.cli import main

    cat = Catalog()
    now = resolve(cat, Deployment(model="llama-3.1-8b", gpus=("b200",), engine="vllm", ctx_tokens=8192))
    old = resolve(cat, Deployment(model="llama-3.1-8b", gpus=("b200",), engine="vllm@0.11", ctx_tokens=8192))
    assert now.engine.memory.gpu_memory_utilization.value == 0.92 and now.ubatch_tokens == 16384
    assert old.engine.memory.gpu_memory_utilization.value == 0.90 and old.ubatch_tokens == 8192
    assert old.engine.id == "vllm-cuda" and old.engine.pinned == "0.11"
    assert resolve(cat, Deployment(model="llama-3.1-8b", gpus=("b200",), engine="vllm-cuda@0.33.0",
                                   ctx_tokens=8192)).ubatch_tokens == 16384
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm@0.20"])
    assert res.exit_code == 2 and "0.10, 0.11, 0.33" in res.output
    js = json.loads(CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm@0.11",
                                              "--json"]).output)
    assert js["assumptions"]["engine_version"] == "0.11"


@pytest.mark.parametrize("engine, message", [("vllm@", "give a release after '@'"), ("vllm-cuda@", "give a release")])
def test_an_empty_release_pin_is_refused(engine, message):
    from click.testing import CliRunner

    from planner.cli import main

    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", engine])
    assert res.exit_code == 2 and message in res.output


@pytest.mark.parametrize("typed, model_id", [
    ("Llama 3.1 8B", "llama-3.1-8b"), ("Gemma 3 27B", "gemma-3-27b"), ("unsloth/Qwen3.6-27B-GGUF", "qwen3.6-27b"),
    ("bartowski/Qwen_Qwen3-30B-A3B-GGUF", "qwen3-30b-a3b"), ("ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"), ("qwen3.6:27b", "qwen3.6-27b")])
def test_model_names_as_typed(catalog, typed, model_id):
    """Spaces for dashes, GGUF repositories of a catalog model (Unsloth's Org-less name, bartowski's
    Owner_Name form), -Instruct tunes of the architecture."""
    assert catalog.model(typed).id == model_id


def test_an_unknown_model_name_still_gets_suggestions(catalog):
    with pytest.raises(PlannerError, match="did you mean"):
        catalog.model("Llama 9.9 8B")


def test_a_gguf_repo_tag_sets_the_quant(catalog):
    """llama.cpp's -hf REPO:QUANT form: the tag is the quant, and a --quant that disagrees is refused."""
    from planner.cli import model_and_tag

    assert model_and_tag(catalog, "unsloth/Qwen3.6-27B-GGUF:Q8_0", None) == ("unsloth/Qwen3.6-27B-GGUF", "Q8_0")
    assert model_and_tag(catalog, "qwen3.6:27b", None) == ("qwen3.6:27b", None)  # Ollama's name, no tag
    assert model_and_tag(catalog, "unsloth/Qwen3.6-27B-GGUF:q8_0", "Q8_0")[1] == "Q8_0"
    with pytest.raises(PlannerError, match="give one"):
        model_and_tag(catalog, "unsloth/Qwen3.6-27B-GGUF:Q8_0", "Q4_K_M")


def test_mxfp4_with_llama_cpp_is_the_mxfp4_moe_mix(catalog):
    """llama.cpp's GGUF of MXFP4 experts is MXFP4_MOE; vLLM's mxfp4 is the released safetensors layout."""
    assert catalog.recipe("mxfp4", "gguf")[0] == "MXFP4_MOE"
    assert catalog.recipe("mxfp4", "safetensors")[0] == "mxfp4"
    r = resolve(catalog, Deployment(model="gpt-oss-20b", gpus=("rtx4090",), engine="llama.cpp-cuda", quant="mxfp4"))
    assert r.quant == "MXFP4_MOE"


def test_w8a8_int8_is_one_byte_per_weight_on_the_int8_tensor_path(catalog):
    """compressed-tensors W8A8 INT8: 1 B per linear weight (Llama-3.1-8B: 6,979,321,856 linear weights in
    32 layers x (4096 x (4096 + 1024 + 1024 + 4096) + 3 x 4096 x 14336) = 32 x 218,103,808), embedding and
    head BF16; vLLM prices it on CUTLASS int8 (int8_tensor)."""
    from planner.paths import matmul_rule

    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("h200",), engine="vllm-cuda", quant="w8a8"))
    int8 = sum(w.bytes for w in r.weights if w.storage == "INT8_CH")
    assert int8 == 32 * (4096 * (4096 + 1024 + 1024 + 4096) + 3 * 4096 * 14336)
    rule = matmul_rule(catalog.paths["vllm-cuda"], "mul_mat", "INT8_CH", "hopper", 1)
    assert rule is not None and rule.ceiling_for("hopper") == "int8_tensor"


def test_sglang_refuses_int8_moe_on_cuda(catalog):
    """SGLang 0.5.23 implements compressed-tensors W8A8 INT8 MoE for Ascend NPUs only
    (compressed_tensors.py:979-985); dense models load."""
    with pytest.raises(PlannerError, match="NPU"):
        resolve(catalog, Deployment(model="qwen3-30b-a3b", gpus=("h200",), engine="sglang-cuda", quant="w8a8"))
    resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("h200",), engine="sglang-cuda", quant="w8a8"))


def test_a_published_ud_mix_is_planned_to_the_byte():
    """Unsloth's Qwen3.6-35B-A3B-UD-Q4_K_M.gguf as its header lists its types (models_db/quant/recipes.toml
    UD-Q4_K_M@qwen3.6-35b-a3b): 733 text tensors, 22,123,538,944 B of tensor data, the published tensor total
    (the 22,134,528,992-B file less its header). The same name on another model is refused."""
    r = resolve(Catalog(), Deployment(model="qwen3.6-35b-a3b", gpus=("h200",), quant="UD-Q4_K_M", ctx_tokens=4096))
    text = [w for w in r.weights if w.tensor.group == "text"]
    assert r.quant == "UD-Q4_K_M" and len(text) == 733
    assert sum(w.bytes for w in text) == 22_123_538_944
    with pytest.raises(PlannerError, match="published type list only for UD-Q4_K_M for qwen3.6-35b-a3b"):
        resolve(Catalog(), Deployment(model="qwen3-30b-a3b", gpus=("h200",), quant="UD-Q4_K_M"))


@pytest.mark.parametrize("name", ["koboldcpp", "TensorRT-LLM", "tgi"])
def test_engines_planner_does_not_model_say_what_to_do(name):
    from planner.cli import main
    from click.testing import CliRunner

    res = CliRunner().invoke(main, ["fit", "qwen3-8b", "--gpu", "rtx4090", "--engine", name])
    assert res.exit_code == 2 and "--engine " in res.output and ("llama.cpp" in res.output or "vllm" in res.output)


def test_a_bare_exl_branch_name_takes_the_engines_format():
    r = resolve(Catalog(), Deployment(model="qwen3-8b", gpus=("rtx4090",), engine="exl3", quant="4.5bpw", ctx_tokens=8192))
    assert r.quant == "exl3-4.5bpw"
