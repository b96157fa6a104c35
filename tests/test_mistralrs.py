"""mistral.rs (0.9.2) as an engine (issue 16): its in-situ quantization recipes, its KV pool, the GGUF types it
cannot load, its command line, and the published runs it is scored on (hwdb/runs/mistralrs-published.csv)."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.memory import plan_memory
from tests.test_cli import check_words

CAT = Catalog()


def _plan(**kw):
    return resolve(CAT, Deployment(**{"model": "llama-3.1-8b", "gpus": ("rtx4090",), "engine": "mistral.rs", **kw}))


def test_isq_q4k_llama_8b_weights_hand_worked():
    """--isq Q4K: every linear Q4_K (144 B per 256 weights), the embedding and the untied head promoted to Q6_K
    (210 B per 256; mistralrs-quant/src/lib.rs:979-994). Llama-3.1-8B: 32 layers x (4096 x (4096 + 1024 + 1024 +
    4096) + 3 x 4096 x 14336) = 6,979,321,856 linear weights -> 3,925,868,544 B; embedding and head 128,256 x
    4,096 = 525,336,576 weights each -> 2 x 430,940,160 B."""
    r = _plan()
    by = {}
    for w in r.weights:
        by[w.storage] = by.get(w.storage, 0) + w.bytes
    assert by["Q4_K"] == 6_979_321_856 * 144 // 256 == 3_925_868_544
    assert by["Q6_K"] == 2 * 525_336_576 * 210 // 256 == 2 * 430_940_160


def test_kv_pool_is_ninety_percent_of_memory_less_what_loading_took():
    """PagedAttention on CUDA: the pool takes 0.9 x total less weights, context and reservations
    (MemoryGpuConfig::Utilization(0.9)); the activation reservation is heads x 1024^2 x 2 B (32 x 1,048,576 x 2 =
    64 MiB for Llama-3.1-8B)."""
    r = _plan(ctx_tokens=8192)
    d = plan_memory(r, 8192).devices[0]
    assert d.usable_bytes == int(r.gpus[0].memory_bytes * 0.9)
    assert d.compute_buffer_bytes == 32 * 1024 ** 2 * 2


def test_iq_types_are_refused_and_isq_recipes_are_mistral_rs_only():
    with pytest.raises(PlannerError, match="archive.rs"):
        _plan(quant="IQ4_XS")
    with pytest.raises(PlannerError, match="mistral.rs-cuda only"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="llama.cpp", quant="isq-q4k"))
    assert _plan(quant="Q4_K_M").quant == "Q4_K_M"  # a GGUF of K-quants loads


def test_mistral_rs_is_cuda_only_and_family_names_resolve():
    assert _plan().engine.id == "mistral.rs-cuda"
    for name in ("mistral.rs", "mistralrs", "mistral-rs"):
        assert _plan(engine=name).engine.id == "mistral.rs-cuda"
    with pytest.raises(PlannerError, match="no metal backend"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("m4max",), engine="mistral.rs"))


@pytest.mark.parametrize("args", [
    ["qwen3-8b", "--gpu", "rtx4090", "--engine", "mistral.rs", "--kv-quant", "fp8_e4m3", "--batch", "8", "--ctx", "8k"],
    ["qwen3-32b", "--gpu", "2xrtx4090", "--engine", "mistral.rs", "--split", "layer", "--quant", "Q4_K_M"],
    ["qwen3-32b", "--gpu", "2xh100-sxm", "--engine", "mistral.rs", "--quant", "isq-q8_0", "--ubatch", "8192"]])
def test_mistralrs_commands_use_only_flags_it_registers(args):
    """--emit mistralrs: every flag and restricted value one `mistralrs serve` 0.9.2 registers
    (hwdb/flags.toml [mistralrs-serve], each with its file:line)."""
    res = CliRunner().invoke(main, ["fit", *args, "--emit", "mistralrs"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if "mistralrs serve" in x)
    words = shlex.split(line)
    check_words(words[words.index("serve") + 1:], "mistralrs-serve")


def test_layer_split_names_each_gpus_layers():
    res = CliRunner().invoke(main, ["fit", "qwen3-32b", "--gpu", "2xrtx4090", "--engine", "mistral.rs", "--split",
                                    "layer", "--quant", "Q4_K_M", "--emit", "mistralrs"])
    assert "-n '0:32;1:32'" in res.output  # 64 layers over two equal GPUs


def test_simulate_refuses_mistral_rs():
    """Its scheduler is not modelled and the one published concurrency run did not scale (issue 2343)."""
    res = CliRunner().invoke(main, ["simulate", "qwen3-8b", "--gpu", "rtx4090", "--engine", "mistral.rs", "--rate", "1"])
    assert res.exit_code == 2 and "not simulated" in res.output


def test_mistral_rs_prefill_carries_the_caveat_and_no_interval():
    """hwdb/caveats.toml: published mistral.rs prefill misses by up to 16x, so no prefill interval is given."""
    from planner.speed import estimate

    e = estimate(CAT, _plan(), 4096)
    assert e.prefill_interval is None and any("prefill is not validated" in n for n in e.notes)
