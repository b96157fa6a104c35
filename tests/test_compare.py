"""planner compare: ranking, budget, Pareto front, and the CLI outputs."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import Catalog
from planner.cli import main, parse_sets
from planner.compare import WORKLOADS, compare, pareto_front, set_label, set_price
from planner.deployment import Deployment, resolve
from planner.memory import plan_memory

SETS = [("rtx5090",), ("rtx3090", "rtx3090"), ("rx7900xtx",), ("mi50-32gb",), ("m4max",), ("rtx3070ti",),
        ("rtx4090",), ("arc-pro-b60",), ("rtx5090", "rtx3090ti")]


@pytest.fixture(scope="module")
def catalog():
    return Catalog()


@pytest.fixture(scope="module")
def chat(catalog):
    return compare(catalog, catalog.model("qwen3.6-27b"), SETS, WORKLOADS["chat"], catalog.calibration(None))


def test_a_set_that_cannot_fit_is_never_ranked(catalog, chat):
    by = {e.label: e for e in chat.entries}
    # RTX 3070 Ti: 8 GiB. Qwen3.6-27B Q4_K_M weights alone are ~15 GiB.
    assert by["rtx3070ti"].status == "no-fit" and by["rtx3070ti"].rank is None
    for e in chat.entries:
        if e.rank is not None:
            # re-plan the chosen option independently: it must fit
            r = resolve(catalog, Deployment(model="qwen3.6-27b", gpus=e.gpus, quant=e.quant, kv_quant=e.kv_quant,
                                            ctx_tokens=chat.ctx_tokens, batch=chat.batch))
            assert plan_memory(r, chat.ctx_tokens).fits, e.label
        else:
            assert not any(o.fits for o in e.options), e.label


def test_best_quant_is_the_best_that_fits(chat):
    order = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"]
    for e in chat.entries:
        if e.status != "fits":
            continue
        better = [o for o in e.options if order.index(o.quant) < order.index(e.quant)]
        assert not any(o.fits for o in better), e.label
        same = [o for o in e.options if o.quant == e.quant]
        assert same[0].fits and same[0].kv_quant == e.kv_quant  # the best KV of that quant


def test_ranks_follow_the_workload_metric(chat):
    ranked = [e for e in chat.entries if e.rank]
    assert [e.rank for e in ranked] == list(range(1, len(ranked) + 1))
    speeds = [e.speed_tok_s for e in ranked]
    assert speeds == sorted(speeds, reverse=True)
    assert all(e.speed_tok_s == e.decode_tok_s for e in ranked)  # chat ranks per-stream decode


def test_price_per_dollar_and_watt_worked_example(catalog, chat):
    e = next(x for x in chat.entries if x.label == "2xrtx3090")
    usd, basis = catalog.gpu("rtx3090").price_usd()
    assert e.price_usd == 2 * usd  # two cards
    assert e.tok_s_per_kusd == pytest.approx(e.speed_tok_s / (2 * usd) * 1000)
    assert e.power_w == 2 * 350.0  # 350 W TDP each (hwdb/gpus/rtx3090.toml)
    assert e.tok_s_per_w == pytest.approx(e.speed_tok_s / 700.0)
    assert basis in e.price_basis


def test_unknown_price_gives_no_per_dollar_figure(chat):
    m4 = next(x for x in chat.entries if x.label == "m4max")
    assert m4.price_usd is None and m4.tok_s_per_kusd is None and not m4.pareto


def test_pareto_front_holds_only_non_dominated_sets(chat):
    ranked = [e for e in chat.entries if e.rank and e.price_usd is not None]
    front = [e for e in ranked if e.pareto]
    assert front
    for f in front:
        assert not any(o.price_usd <= f.price_usd and o.speed_tok_s >= f.speed_tok_s
                       and (o.price_usd < f.price_usd or o.speed_tok_s > f.speed_tok_s) for o in ranked)
    for e in ranked:
        if not e.pareto:  # everything off the front is dominated by something on it
            assert any(f.price_usd <= e.price_usd and f.speed_tok_s >= e.speed_tok_s for f in front)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 20)), st.integers(1, 20)), max_size=12))
def test_pareto_front_property(points):
    front = pareto_front(points)
    for i in front:
        p, s = points[i]
        assert p is not None
        assert not any(q is not None and q <= p and t >= s and (q < p or t > s) for q, t in points)
    for i, (p, s) in enumerate(points):
        if p is not None and i not in front:
            assert any(q is not None and q <= p and t >= s for j, (q, t) in enumerate(points) if j != i)


def test_more_budget_never_removes_an_option(catalog):
    card = catalog.model("qwen3.6-27b")
    sets = SETS + [("rtx-pro-6000-blackwell",), ("h100-sxm",), ("rtx3090",)]
    ranked_before: set[str] = set()
    for budget in (0, 500, 900, 1000, 2000, 3500, 12000, 30000, None):
        c = compare(catalog, card, sets, WORKLOADS["chat"], catalog.calibration(None), budget_usd=budget)
        ranked = {e.label for e in c.entries if e.rank}
        assert ranked_before <= ranked, budget
        ranked_before = ranked
        for e in c.entries:
            if e.rank and budget is not None:
                assert e.price_usd is not None and e.price_usd <= budget


def test_budget_excludes_over_budget_and_unpriced_sets(catalog):
    c = compare(catalog, catalog.model("qwen3.6-27b"), SETS, WORKLOADS["chat"], catalog.calibration(None),
                budget_usd=1000)
    by = {e.label: e for e in c.entries}
    assert by["rtx5090"].status == "over-budget"
    assert by["m4max"].status == "no-price"
    assert by["rx7900xtx"].status == "fits"  # $999 launch price


def test_batch_workload_ranks_total_throughput(catalog):
    c = compare(catalog, catalog.model("llama-3.1-8b"), [("rtx4090",), ("rtx3090",)], WORKLOADS["batch"],
                catalog.calibration(None))
    for e in c.entries:
        assert e.speed_tok_s == e.decode_total_tok_s
        assert e.decode_total_tok_s == pytest.approx(16 * e.decode_tok_s)


def test_auto_sets_stop_adding_cards_that_buy_nothing(catalog):
    from planner.compare import candidate_sets

    sets = candidate_sets(catalog, 3)
    assert ("rtx3090", "rtx3090", "rtx3090") in sets and ("m4max", "m4max") not in sets
    c = compare(catalog, catalog.model("llama-3.1-8b"), sets, WORKLOADS["chat"], catalog.calibration(None),
                quants=("Q4_K_M",), auto=True)
    labels = {e.label for e in c.entries}
    assert "rtx4090" in labels and "2xrtx4090" not in labels  # one 4090 already runs Q4_K_M with an f16 cache


def test_set_label_and_parse_sets():
    assert set_label(("a", "a", "b")) == "2xa,b"
    assert parse_sets("rtx5090,2xrtx3090,rtx5090+rtx3090ti") == [
        ("rtx5090",), ("rtx3090", "rtx3090"), ("rtx5090", "rtx3090ti")]


def test_set_price_sums_each_card(catalog):
    one = catalog.gpu("rtx5090").price_usd()[0]
    two = catalog.gpu("rtx3090ti").price_usd()[0]
    assert set_price(catalog, ("rtx5090", "rtx3090ti"))[0] == one + two
    assert set_price(catalog, ("rtx5090", "m4max")) == (None, None)


def test_cli_json_csv_and_text():
    runner = CliRunner()
    args = ["compare", "qwen3.6-27b", "--gpus", "rtx5090,2xrtx3090,rtx3070ti"]
    res = runner.invoke(main, args + ["--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert [e["label"] for e in d["entries"]][:2] == ["rtx5090", "2xrtx3090"]
    assert d["entries"][2]["status"] == "no-fit" and d["entries"][2]["rank"] is None
    res = runner.invoke(main, args + ["--csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [r["label"] for r in rows] == ["rtx5090", "2xrtx3090", "rtx3070ti"]
    assert rows[0]["rank"] == "1" and rows[2]["rank"] == ""
    res = runner.invoke(main, args + ["--all"])
    assert "rtx3070ti" in res.output and "no-fit" in res.output and "price-speed front" in res.output


@pytest.mark.parametrize("args,msg", [
    (["--gpus", "rtx9090"], "did you mean"),
    (["--gpus", "rtx5090", "--quant", "Q9"], "unknown quant"),
    (["--gpus", "rtx5090", "--kv-quant", "q9"], "unknown kv type"),
    (["--gpus", ","], "--gpus is empty"),
    (["--gpus", "rtx5090", "--engine", "vlm"], "unknown engine"),
])
def test_cli_bad_input_is_one_line(args, msg):
    res = CliRunner().invoke(main, ["compare", "qwen3.6-27b", *args])
    assert res.exit_code == 2
    assert msg in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_no_set_fits_exits_1():
    res = CliRunner().invoke(main, ["compare", "llama-3.1-70b", "--gpus", "rtx3070ti"])
    assert res.exit_code == 1 and "no GPU set fits" in res.output
