"""Input files read as the tools that wrote them write them, or refused in one line naming the
file and the key or row (issue 17, defects 1, 5, 8, 9)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.arch import MAX_LAYERS, parse_config
from planner.cli import main
from planner.errors import PlannerError
from planner.ingest import Given, ingest
from planner.localfile import load_gguf
from planner.runs import load_runs

SAMPLES = Path(__file__).parent / "samples"
LLAMA = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}


def one_line_error(args: list[str]) -> str:
    """Run the CLI; it must exit 2 with one line `error: ...` and no traceback."""
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1: split GGUF files


def write_gguf(path: Path, n_layers: int = 2, split_max_tensors: int = 0, block_count: int | None = None) -> None:
    """A small llama GGUF (hidden 64, vocab 32, f32 zeros); split into shards of
    `split_max_tensors` tensors as gguf-split / convert_hf_to_gguf --split-max-tensors write them."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name("tiny")
    w.add_block_count(block_count or n_layers)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_context_length(256)
    w.add_tensor("token_embd.weight", np.zeros((32, 64), np.float32))
    for i in range(n_layers):
        for name, shape in [("attn_q", (64, 64)), ("attn_k", (64, 64)), ("attn_v", (64, 64)),
                            ("attn_output", (64, 64)), ("ffn_gate", (128, 64)), ("ffn_up", (128, 64)),
                            ("ffn_down", (64, 128)), ("attn_norm", (64,)), ("ffn_norm", (64,))]:
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros(shape, np.float32))
    w.add_tensor("output_norm.weight", np.zeros(64, np.float32))
    w.add_tensor("output.weight", np.zeros((32, 64), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def split_gguf(tmp_path) -> tuple[Path, Path]:
    """(whole file, first of 4 shards) of the same model: 21 tensors, 6 per shard."""
    whole = tmp_path / "whole" / "tiny.gguf"
    whole.parent.mkdir()
    write_gguf(whole)
    write_gguf(tmp_path / "tiny.gguf", split_max_tensors=6)
    first = tmp_path / "tiny-00001-of-00004.gguf"
    assert sorted(p.name for p in tmp_path.glob("tiny-*")) == [f"tiny-0000{i}-of-00004.gguf" for i in range(1, 5)]
    return whole, first


def test_split_gguf_reads_every_shard_from_the_first(split_gguf):
    whole, first = split_gguf
    card_w, weights_w = load_gguf(whole)
    card_s, weights_s = load_gguf(first)
    # 1 embedding + 2 layers x 9 + output norm + output = 21 tensors, all f32:
    # 32x64 x2 (embedding, output) + 2 x (4 x 64x64 + 3 x 128x64 + 2 x 64) + 64 = 86,336 values x 4 bytes
    assert len(weights_s) == 21 and sum(w.bytes for w in weights_s) == 86_336 * 4
    assert weights_s == weights_w
    assert card_s.arch == card_w.arch and card_s.id == "tiny"


def test_split_gguf_plans_as_the_whole_model(split_gguf):
    whole, first = split_gguf
    runner = CliRunner()
    a = runner.invoke(main, ["fit", str(whole), "--gpu", "rtx4090", "--ctx", "256", "--json"])
    b = runner.invoke(main, ["fit", str(first), "--gpu", "rtx4090", "--ctx", "256", "--json"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    wa, wb = (json.loads(r.output)["memory"]["devices"][0]["weights_bytes"] for r in (a, b))
    assert wa == wb > 0


def test_split_gguf_with_a_missing_shard_names_it(split_gguf):
    _, first = split_gguf
    (first.parent / "tiny-00003-of-00004.gguf").unlink()
    with pytest.raises(PlannerError, match=r"missing 1 .*tiny-00003-of-00004\.gguf"):
        load_gguf(first)
    line = one_line_error(["fit", str(first), "--gpu", "rtx4090"])
    assert "tiny-00003-of-00004.gguf" in line and str(first) in line


def test_a_later_shard_points_to_the_first(split_gguf):
    _, first = split_gguf
    with pytest.raises(PlannerError, match="shard 2 of a 4-shard GGUF: give the first one"):
        load_gguf(first.parent / "tiny-00002-of-00004.gguf")


def test_a_renamed_split_gguf_is_refused(split_gguf):
    _, first = split_gguf
    renamed = first.parent / "renamed.gguf"
    first.rename(renamed)
    with pytest.raises(PlannerError, match="split GGUF of 4 shards"):
        load_gguf(renamed)


# ---------------------------------------------------------------------------------------------
# 8: config.json values of the wrong type


@pytest.mark.parametrize("key,value,message", [
    ("num_attention_heads", 0, "'num_attention_heads': 0 is not a positive size"),
    ("model_type", None, "'model_type': expected a string, got None"),
    ("hidden_size", "large", "'hidden_size': expected an integer, got 'large'"),
    ("hidden_size", 16.7, "'hidden_size': 16.7 is not an integer size"),
    ("num_hidden_layers", -3, "'num_hidden_layers': -3 is not a positive size"),
    ("vocab_size", True, "'vocab_size': expected an integer, got True"),
    ("intermediate_size", [512], "'intermediate_size': expected an integer"),
    ("tie_word_embeddings", "maybe", "'tie_word_embeddings': expected true or false"),
    ("max_position_embeddings", 1e300, "'max_position_embeddings': .* is out of range"),
])
def test_bad_config_values_are_named(key, value, message):
    with pytest.raises(PlannerError, match=message):
        parse_config(dict(LLAMA, **{key: value}))


def test_integer_valued_floats_are_integers():
    assert parse_config(dict(LLAMA, hidden_size=256.0)) == parse_config(LLAMA)


@pytest.mark.parametrize("text,tied", [("false", False), ("False", False), ("true", True), (0, False), (1, True)])
def test_tie_word_embeddings_as_a_string_is_read_as_written(text, tied):
    arch = parse_config(dict(LLAMA, tie_word_embeddings=text))
    assert arch.tie_word_embeddings is tied
    assert ("output.weight" in {t.name for t in arch.tensors}) is not tied


def test_bad_config_values_via_the_cli(tmp_path):
    path = tmp_path / "m" / "config.json"
    path.parent.mkdir()
    for key, value in [("num_attention_heads", 0), ("model_type", None), ("hidden_size", "large"),
                       ("num_key_value_heads", 2.5)]:
        path.write_text(json.dumps(dict(LLAMA, **{key: value})))
        line = one_line_error(["fit", str(path), "--gpu", "rtx4090"])
        assert str(path) in line and repr(key) in line


# ---------------------------------------------------------------------------------------------
# 9: absurd layer counts refused fast


def test_too_many_layers_in_a_config_is_refused_fast(tmp_path):
    path = tmp_path / "m" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(dict(LLAMA, num_hidden_layers=100_000)))
    t = time.perf_counter()
    line = one_line_error(["fit", str(path), "--gpu", "rtx4090"])
    assert "'num_hidden_layers': 100,000 layers" in line and f"{MAX_LAYERS:,}" in line
    assert time.perf_counter() - t < 30  # a guard against a hang, not a timing claim (bench/bench_layers.py)


def test_a_real_sized_layer_count_still_plans():
    assert parse_config(dict(LLAMA, num_hidden_layers=4096)).n_layers == 4096


def test_too_many_layers_in_a_gguf_is_refused_fast(tmp_path):
    path = tmp_path / "deep.gguf"
    write_gguf(path, n_layers=1, block_count=1_000_000)
    with pytest.raises(PlannerError, match=r"deep\.gguf: .*'llama\.block_count': 1,000,000 layers"):
        load_gguf(path)


def test_absurd_gguf_header_counts_are_refused_before_reading(tmp_path):
    path = tmp_path / "absurd.gguf"
    write_gguf(path)
    data = bytearray(path.read_bytes())
    data[8:16] = (10**12).to_bytes(8, "little")  # tensor count
    path.write_bytes(bytes(data))
    with pytest.raises(PlannerError, match="1,000,000,000,000 tensors"):
        load_gguf(path)


def test_fit_is_unchanged_by_the_offload_table():
    """The offload searches plan each candidate from one LayerTable: same plan as from scratch."""
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve
    from planner.memory import layer_table, plan_memory, with_

    c = Catalog()
    for model, gpus in [("qwen3-30b-a3b", ("rtx4090", "rtx3090")), ("gemma-3-27b", ("rtx4090",)),
                        ("qwen3.6-27b", ("rtx3090", "rtx3090", "rtx3090"))]:
        r = resolve(c, Deployment(model=model, gpus=gpus))
        table = layer_table(r, 32768)
        for ngl in (0, 1, r.arch.n_layers // 3, r.arch.n_layers):
            for moe in ((0, 5, r.arch.n_layers) if r.arch.n_experts > 1 else (0,)):
                alt = with_(r, gpu_layers=ngl, cpu_moe_layers=moe)
                assert plan_memory(alt, 32768, table) == plan_memory(alt, 32768)


def _first_fit_by_walk(cands, ctx):
    from planner.memory import plan_memory

    return next((c for c in cands if plan_memory(c, ctx).fits), None)


@pytest.mark.parametrize("model, gpus, ctx", [
    ("qwen3-30b-a3b", ("rtx4090", "rtx3090"), 32768), ("qwen3-30b-a3b", ("rtx3070ti",), 131072),
    ("gemma-3-27b", ("rtx4090",), 131072), ("qwen3.6-27b", ("rtx3090", "rtx3090", "rtx3090"), 262144),
    ("llama-3.1-70b", ("rtx3070ti", "rtx4090", "rtx3090"), 65536), ("qwen3.6-27b", ("rtx5090",), 262144)])
def test_the_offload_search_finds_what_a_walk_finds(model, gpus, ctx):
    """least_offload (a binary search, then a short walk) returns the first candidate that fits,
    the one a walk through every candidate finds: -ngl from the top down and --n-cpu-moe up, on
    one GPU and on uneven layer splits, with and without a host-RAM limit."""
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve
    from planner.memory import least_offload, with_

    c = Catalog()
    for host_ram in (None, 8 * 2**30, 64 * 2**30):
        r = resolve(c, Deployment(model=model, gpus=gpus, ctx_tokens=ctx))
        r = with_(r, host_ram_bytes=host_ram)
        lists = [[with_(r, gpu_layers=n) for n in range(r.arch.n_layers, -1, -1)]]
        if r.arch.n_experts > 1:
            lists.append([with_(r, cpu_moe_layers=k) for k in range(0, r.arch.n_layers + 1)])
        for cands in lists:
            hit = least_offload(r, ctx, cands)
            walk = _first_fit_by_walk(cands, ctx)
            assert (hit and hit[0]) == walk


def test_recipe_totals_are_the_sum_of_the_tensors():
    """recipe_total (per tensor class) equals the bytes of every tensor recipe_weights lists, for
    every catalog model and every recipe."""
    from planner.catalog import Catalog
    from planner.deployment import recipe_total, recipe_weights

    c = Catalog()
    for card in c.models.values():
        arch = card.arch
        for rec in c.recipes.recipes.values():
            assert recipe_total(c, arch, rec) == sum(w.bytes for w in recipe_weights(c, arch, rec)), (card.id, rec)


def _types_tensor_by_tensor(arch, recipe, types):
    """llama-quant.cpp's loop as it reads: one tensor at a time, attn_v counted in file order."""
    from planner.quant import ATTN_V_LIKE, FALLBACK, _holds

    def fit_block(t, name):
        if t.cols % types[name].block_weights == 0:
            return name
        fb = FALLBACK.get(name)
        return fb if fb and t.cols % types[fb].block_weights == 0 else "F16"

    out, i_v = [], 0
    n_v = sum(1 for t in arch.tensors if t.role in ATTN_V_LIKE and t.group != "vision")
    quantized = types[recipe.base].block_weights > 1
    for t in arch.tensors:
        if t.group == "vision":
            out.append("F16")
        elif t.role in ("unquantized", "router", "conv"):
            out.append("F32")
        elif not quantized and t.role != "output":
            out.append(recipe.base)
        elif t.role == "output" or (t.role == "token_embd" and arch.tie_word_embeddings and t.name == "token_embd.weight"):
            chosen = recipe.output or recipe.base
            if types[chosen].block_weights > 1 and t.cols % types[chosen].block_weights:
                chosen = "Q8_0"
            out.append(fit_block(t, chosen))
        else:
            chosen = recipe.token_embd or recipe.base if t.role == "token_embd" else recipe.base
            if recipe.experts and t.n_experts > 1:
                chosen = recipe.experts
            elif t.role != "token_embd":
                idx, n = (i_v, n_v) if t.role in ATTN_V_LIKE else (t.layer or 0, arch.n_layers + arch.mtp_layers)
                for rule in recipe.rules:
                    roles = set(rule.roles) | (set(ATTN_V_LIKE) if "attn_v" in rule.roles else set())
                    if t.role in roles and _holds(rule, idx, n, arch, arch.gqa_ratio):
                        chosen = rule.type
                        break
            if t.role in ATTN_V_LIKE:
                i_v += 1
            out.append(fit_block(t, chosen))
    return out


def test_types_decided_per_class_are_those_of_the_tensor_by_tensor_rules():
    """assign_types decides once per tensor class (and index, where a rule reads it): the same
    types as the rules applied to each tensor in turn, for every catalog model and GGUF recipe."""
    from planner.catalog import Catalog
    from planner.quant import assign_types

    c = Catalog()
    types = c.formats.types
    for card in c.models.values():
        for name, rec in c.recipes.recipes.items():
            if rec.format == "gguf" and not rec.tensor_types:  # a published file's mix names its tensors
                got = [s for _, s in assign_types(card.arch, rec, types)]
                assert got == _types_tensor_by_tensor(card.arch, rec, types), (card.id, name)


def test_repeated_fit_calls_keep_a_bounded_memo(tmp_path):
    from planner.catalog import Catalog
    from planner.deployment import MEMO_ENTRIES, Deployment, resolve
    from planner.fit import fit
    from planner.localfile import load_config_json

    path = tmp_path / "m" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAMA))
    c = Catalog()
    for _ in range(MEMO_ENTRIES + 20):  # a fresh Architecture each call, as a library user reading a file
        fit(c, resolve(c, Deployment(model=str(path), gpus=("rtx4090",), ctx_tokens=4096), card=load_config_json(path)))
    assert len(c.memo) <= MEMO_ENTRIES


# ---------------------------------------------------------------------------------------------
# 5: engine output validated row by row; old runs files with unusable rows refused


def llama_bench(tmp_path: Path, edit) -> Path:
    tests = json.loads((SAMPLES / "llama-bench.json").read_text())
    edit(tests)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(tests))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda t: t[1].pop("n_gen"), "test 2: no n_gen"),
    (lambda t: t[0].pop("n_prompt"), "test 1: no n_prompt"),
    (lambda t: t[1].update(avg_ts=float("inf")), "test 2: speed inf is not a positive finite number"),
    (lambda t: t[1].update(avg_ts=-5.0), "test 2: speed -5.0 is not a positive finite number"),
    (lambda t: t[1].update(avg_ts=0), "test 2: speed 0.0 is not a positive finite number"),
    (lambda t: t[1].update(avg_ts=3.2e12), r"test 2: speed 3.2e\+12 tok/s is not believable"),
    (lambda t: t[1].update(avg_ts="fast"), "test 2: avg_ts 'fast' is not a number"),
    (lambda t: t[1].update(n_gen=12.5), "test 2: n_gen 12.5 is not a count"),
    (lambda t: t.append(dict(t[1])), "test 4 measures the same conditions as test 2"),
    (lambda t: t[1].update(n_gen=0), "test 2: n_prompt and n_gen are both 0"),
])
def test_bad_llama_bench_rows_are_named(catalog, tmp_path, edit, message):
    path = llama_bench(tmp_path, edit)
    with pytest.raises(PlannerError, match=f"^{path}: {message}"):
        ingest(catalog, path, Given())


def test_bad_batched_bench_rows_are_named(catalog, tmp_path):
    lines = (SAMPLES / "batched-bench.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    g = Given(model="llama-2-7b", quant="F16", gpu="rtx4090")
    for change, message in [({"pl": 0}, "line 1: batch .* 0"), ({"speed_tg": float("nan")}, "line 1: speed nan"),
                            ({"speed_pp": -1.0}, "line 1: speed -1.0")]:
        path = tmp_path / "bb.jsonl"
        path.write_text("\n".join([json.dumps(dict(row, **change))] + lines[1:]) + "\n")
        with pytest.raises(PlannerError, match=f"^{path}: {message}"):
            ingest(catalog, path, g)


@pytest.mark.parametrize("key", ["total_input_tokens", "total_output_tokens", "output_throughput"])
def test_vllm_result_without_a_key_names_it(catalog, tmp_path, key):
    d = json.loads((SAMPLES / "vllm-serve.json").read_text())
    d.pop(key)
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlannerError, match=f"^{path}: the run: no {key}"):
        ingest(catalog, path, Given(gpu="h100"))


def test_vllm_result_not_an_object_is_refused(catalog, tmp_path):
    path = tmp_path / "serve.json"
    path.write_text('{"output_throughput": 1}\n[1, 2]')
    line = one_line_error(["calibrate", "ingest", str(path), "--gpu", "h100"])
    assert str(path) in line


def test_ingest_cli_refuses_bad_rows_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "runs.csv"
    path = llama_bench(tmp_path, lambda t: t[1].update(avg_ts=-1))
    line = one_line_error(["calibrate", "ingest", str(path), "-o", str(out)])
    assert line.startswith(f"error: {path}: test 2:") and not out.exists()
    path = llama_bench(tmp_path, lambda t: t[1].update(gpu_info=["a", "b"], n_depth="x"))
    assert str(path) in one_line_error(["calibrate", "ingest", str(path), "-o", str(out)])


def test_every_ingest_error_names_the_file(tmp_path):
    path = tmp_path / "mystery.json"
    path.write_text("hello")
    assert str(path) in one_line_error(["calibrate", "ingest", str(path)])
    path = tmp_path / "model.json"
    path.write_text(json.dumps([{"avg_ts": 5, "n_prompt": 0, "n_gen": 16, "model_filename": "mystery-13b.gguf"}]))
    assert str(path) in one_line_error(["calibrate", "ingest", str(path), "--gpu", "rtx4090"])


def runs_file(tmp_path: Path, edit) -> Path:
    """The two llama-bench sample rows as a runs CSV, one field edited (an old or hand-made file)."""
    out = tmp_path / "good.csv"
    res = CliRunner().invoke(main, ["calibrate", "ingest", str(SAMPLES / "llama-bench.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(ln for ln in out.read_text().splitlines() if not ln.startswith("#")))
    edit(rows)
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda rs: rs[1].update(gen_tokens="0"), "row 3 .*: decode_tok_s with gen_tokens 0"),
    (lambda rs: rs[0].update(prompt_tokens="0"), "row 2 .*: prefill_tok_s with prompt_tokens 0"),
    (lambda rs: rs[1].update(value="inf"), "row 3 .*: value inf is not finite"),
    (lambda rs: rs[1].update(value="1e15"), r"row 3 .*: value 1e\+15 tok/s is not believable"),
    (lambda rs: rs.append(dict(rs[1])), "row 4: ref_row 'llama-bench-002' is already row 3"),
])
def test_old_runs_files_with_unusable_rows_are_refused(tmp_path, edit, message):
    path = runs_file(tmp_path, edit)
    with pytest.raises(PlannerError, match=f"^{path}: {message}"):
        load_runs(path)
    for cmd in (["validate", str(path)], ["calibrate", "fit", str(path), "-o", str(tmp_path / "cal.toml")]):
        assert str(path) in one_line_error(cmd)


def test_runs_row_a_deployment_refuses_is_one_line(tmp_path):
    """A runs row whose conditions no deployment takes (a batch beyond Deployment's bound) is
    named when the file is read, not a pydantic traceback in `validate` (found by bench/bench_fuzz.py)."""
    import csv

    from click.testing import CliRunner

    from planner.cli import main

    src = Path(__file__).resolve().parent.parent / "hwdb" / "runs" / "llamacpp-h200.csv"
    row = next(csv.DictReader(ln for ln in src.read_text().splitlines() if not ln.startswith("#")))
    row["batch"] = "100000"
    p = tmp_path / "r.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    res = CliRunner().invoke(main, ["validate", str(p)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "batch" in res.output and "row 2" in res.output
