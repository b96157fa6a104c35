"""`planner tune`: the settings search ranks what it simulated, keeps the user's own settings, and
prints a command the engine accepts (docs/simulate.md#tune)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from planner import simulate as sim
from planner import tune as tn
from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from test_cli import check_emitted

CAT = Catalog()


def _tune_json(*args):
    res = CliRunner().invoke(main, ["tune", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_tune_ranks_by_goodput_and_the_best_is_no_worse_than_the_start():
    """At a fixed load every candidate is scored by goodput; the winner scores at least the engine's
    defaults (the search starts there) and heads the ranking; the settings given stay fixed."""
    out = _tune_json("qwen3-0.6b", "--gpu", "rtx4090", "--ctx", "4k", "--rate", "20", "--requests", "80",
                     "--slo", "ttft=1s,tpot=30ms", "--quant", "Q8_0", "--passes", "1")
    assert out["objective"] == "goodput"
    scores = [t["score_per_s"] for t in out["tried"]]
    assert scores == sorted(scores, reverse=True) and out["best"]["score_per_s"] == scores[0]
    start = out["tried"][[t["settings"] for t in out["tried"]].index(
        next(t["settings"] for t in out["tried"] if t["settings"]["batch"] == 4 and t["settings"]["ubatch_tokens"] == 512
             and t["settings"]["kv_quant"] == "f16" and t["settings"]["kv_unified"] and t["settings"]["cache_ram"] == 8192))]
    assert out["best"]["score_per_s"] >= start["score_per_s"]
    assert {t["settings"]["quant"] for t in out["tried"]} == {"Q8_0"}  # --quant given: not searched
    assert "quant" not in {k["name"] for k in out["knobs"]}
    check_emitted("llama.cpp", out["command"])


def test_tune_without_a_load_finds_the_highest_rate_and_its_command_runs_on_vllm():
    out = _tune_json("qwen3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--ctx", "8k", "--requests", "60",
                     "--slo", "ttft=2s,tpot=40ms", "--kv-quant", "auto", "--quant", "fp8", "--passes", "1")
    assert out["objective"] == "max_rate" and out["best"]["score_per_s"] > 0
    assert {k["name"] for k in out["knobs"]} == {"batch", "ubatch_tokens"}
    check_emitted("vllm", out["command"])


def test_tune_refuses_without_an_slo():
    res = CliRunner().invoke(main, ["tune", "qwen3-8b", "--gpu", "rtx4090", "--rate", "1"])
    assert res.exit_code == 2 and "--slo" in res.output


def test_knobs_follow_the_engine_and_the_workload():
    r = resolve(CAT, Deployment(model="qwen3-8b", gpus=("rtx3090", "rtx3090"), engine="llama.cpp-cuda", ctx_tokens=8192))
    names = [k.name for k in tn.knobs_for(CAT, r, None, None, spec=True, prefix=True, fixed={"kv_quant"})]
    assert names == ["quant", "batch", "ubatch_tokens", "kv_unified", "cache_ram", "split", "draft_len", "prefix_caching"]
    rv = resolve(CAT, Deployment(model="qwen3-8b", gpus=("h100-sxm",), engine="vllm-cuda", ctx_tokens=8192))
    flags = {k.name: k.flag for k in tn.knobs_for(CAT, rv, None, None, spec=False, prefix=False, fixed=set())}
    assert flags["batch"] == "--max-num-seqs" and flags["ubatch_tokens"] == "--max-num-batched-tokens"


def test_a_setting_that_does_not_fit_is_reported_not_ranked_above_one_that_does():
    def make(fields):
        return resolve(CAT, Deployment(model="qwen3-8b", gpus=("rtx3060-12gb",), engine="llama.cpp-cuda", ctx_tokens=32768,
                                       **fields))

    knobs = [tn.Knob("batch", "-np", (1, 64))]
    res = tn.tune(CAT, make, lambda r: CAT.calibration(None), sim.Workload(n_requests=30, rate=0.5), (2.0, 0.1), knobs,
                  {"batch": 1}, passes=1)
    by = {c.settings["batch"]: c for c in res.tried}
    assert by[64].error and "does not fit" in by[64].error and by[64].score < 0
    assert res.best.settings["batch"] == 1
