"""EXL2 / EXL3 (issue 16): the formats' sizes from their bits per weight, the cache modes, TabbyAPI's command
line, and the published runs (hwdb/runs/exllama-published.csv)."""

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
    return resolve(CAT, Deployment(**{"model": "llama-3.1-8b", "gpus": ("rtx4090",), "engine": "exllamav3",
                                      "ctx_tokens": 8192, **kw}))


def _by_type(r):
    by = {}
    for w in r.weights:
        by[w.storage] = by.get(w.storage, 0) + w.bytes
    return by


def test_exl3_4bpw_llama_8b_hand_worked():
    """exl3-4.0bpw: every decoder linear at 4 bits (6,979,321,856 weights -> 3,489,660,928 B), the head at 6 bits
    (128,256 x 4,096 x 6 / 8 = 394,002,432 B), the embedding at 16 bits in system RAM (1,050,673,152 B)."""
    by = _by_type(_plan(quant="exl3-4.0bpw"))
    assert by["EXL_4"] == 6_979_321_856 // 2 == 3_489_660_928
    assert by["EXL_6"] == 128_256 * 4_096 * 6 // 8 == 394_002_432
    assert by["F16"] >= 128_256 * 4_096 * 2  # the embedding (and the norms)


def test_exl2_head_is_the_6_344_bit_mix_and_the_bpw_is_held_in_sixteenths():
    """EXL2's -hb 6 head is a 6.344-bpw mix (203 B per 256); 4.65 bpw is held as 74 B per 128 weights (4.625)."""
    r = resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="exllamav2", quant="exl2-4.65bpw",
                                ctx_tokens=8192))
    by = _by_type(r)
    assert by["EXL2_H6"] == 128_256 * 4_096 // 256 * 203
    assert by["EXL_4.625"] == 6_979_321_856 // 128 * 74


def test_exl2_size_matches_a_published_file():
    """turboderp/Llama-3.1-70B-Instruct-exl2 @4.0bpw is 37.16 GB (the notes' table, 4 shards): planned within 0.5%."""
    r = resolve(CAT, Deployment(model="llama-3.1-70b", gpus=("h200",), engine="exllamav2", quant="exl2-4.0bpw",
                                ctx_tokens=8192))
    total = sum(w.bytes for w in r.weights)
    assert abs(total / 37.16e9 - 1) < 0.005


def test_quantized_cache_sizes_and_staging():
    """cache_mode Q4: 18 B per 32 values; and one layer's FP16 K and V for the whole cache as prefill staging
    (8,192 cells x 2 x 1,024 values x 2 B = 33,554,432 B) in the compute line."""
    f16, q4 = _plan(), _plan(kv_quant="q4")
    assert q4.kv_bytes_per_value == 18 / 32
    d16, d4 = plan_memory(f16, 8192).devices[0], plan_memory(q4, 8192).devices[0]
    assert d4.compute_buffer_bytes - d16.compute_buffer_bytes == 8192 * 2 * 1024 * 2


def test_formats_are_their_engines_own():
    with pytest.raises(PlannerError, match="exllamav3-cuda only"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="exllamav2", quant="exl3-4.0bpw"))
    with pytest.raises(PlannerError, match="does not load"):
        resolve(CAT, Deployment(model="llama-3.1-8b", gpus=("rtx4090",), engine="llama.cpp", quant="exl3-4.0bpw"))
    with pytest.raises(PlannerError, match="1 to 8"):
        CAT.recipe("exl3-9.0bpw")


@pytest.mark.parametrize("name, engine", [("exllamav3", "exllamav3-cuda"), ("TabbyAPI", "exllamav3-cuda"),
                                          ("exl2", "exllamav2-cuda"), ("exllamav2", "exllamav2-cuda")])
def test_engine_names(name, engine):
    assert _plan(engine=name, quant=None).engine.id == engine


def test_exl3_decode_carries_its_caveat():
    from planner.speed import estimate

    e = estimate(CAT, _plan(quant="exl3-4.0bpw"), 8192)
    assert e.decode_interval is None and any("EXL3 decode is not validated" in n for n in e.notes)


@pytest.mark.parametrize("args", [
    ["qwen3-32b", "--gpu", "rtx4090", "--engine", "exl3", "--quant", "exl3-4.0bpw", "--ctx", "32k", "--kv-quant", "q4",
     "--batch", "2"],
    ["llama-3.1-8b", "--gpu", "rtx3090", "--engine", "exl3", "--quant", "exl3-5.0bpw_H8", "--kv-quant", "q8/q4",
     "--ubatch", "4096"],
    ["llama-3.1-70b", "--gpu", "2xrtx3090", "--engine", "exl3", "--quant", "exl3-3.0bpw", "--split", "tensor",
     "--ctx", "16k"]])
def test_tabbyapi_commands_use_only_flags_it_registers(args):
    res = CliRunner().invoke(main, ["fit", *args, "--emit", "tabbyapi"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("python main.py")]
    assert len(lines) == 2 and " download " in lines[0]
    for line, table in zip(lines, ("tabbyapi-download", "tabbyapi")):
        check_words(shlex.split(line)[2:], table)
