"""Intervals from validation residuals (planner.intervals; docs/validation.md#intervals)."""

from __future__ import annotations

import math

import pytest

from planner.intervals import MIN_RUNS, Bucket, buckets, interval, key, kind_of


def test_a_bucket_interval_worked_by_hand():
    """Five runs with log residuals -0.2, -0.1, 0, 0.1, 0.2: mean 0, sd = sqrt(0.1 / 4) = 0.1581;
    t(0.90, 4) = 1.5332; half width = 1.5332 x 0.1581 x sqrt(1 + 1/5) = 0.2656; so the 80%
    interval of a 100 tok/s prediction is 100 x exp(-+0.2656) = 76.7 .. 130.4 tok/s."""
    table = buckets([("e", "hopper", "decode", x) for x in (-0.2, -0.1, 0.0, 0.1, 0.2)])
    b = table[key("e", "hopper", "decode")]
    assert b.n == 5 and b.mean_log == 0.0 and b.sd_log == pytest.approx(0.1581, abs=1e-4)
    iv = interval(table, ["e"], "hopper", "decode", 100.0)
    assert iv.low == pytest.approx(76.7, abs=0.1) and iv.high == pytest.approx(130.4, abs=0.1)
    assert "5 e decode runs on hopper" == iv.basis


def test_a_biased_bucket_shifts_the_interval():
    """Runs all 10% slower than predicted: the interval sits below the prediction."""
    table = buckets([("e", "ada", "prefill", math.log(0.9) + d) for d in (-0.01, 0, 0.01, 0, 0.005, -0.005)])
    iv = interval(table, ["e"], "ada", "prefill", 1000.0)
    assert iv.high < 1000.0 and iv.low > 850.0


def test_fewer_runs_give_a_wider_interval():
    few = Bucket(n=MIN_RUNS, mean_log=0.0, sd_log=0.1).ratios()
    many = Bucket(n=200, mean_log=0.0, sd_log=0.1).ratios()
    assert few[1] - few[0] > many[1] - many[0]


def test_a_family_without_runs_borrows_the_engines_and_says_so():
    pts = [("e", "ampere", "decode", x) for x in (-0.1, 0.0, 0.1, 0.05, -0.05)] + [("e", "volta", "decode", 0.3)]
    table = buckets(pts)
    iv = interval(table, ["e"], "volta", "decode", 50.0)
    assert "6 e decode runs, 1 on volta" == iv.basis
    iv = interval(table, ["e"], "rdna3", "decode", 50.0)
    assert iv.basis.endswith("none on rdna3")


def test_an_engine_without_runs_falls_back_then_to_every_run():
    table = buckets([("e", "ampere", "decode", x) for x in (-0.1, 0.0, 0.1, 0.05, -0.05)])
    assert interval(table, ["other", "e"], "ampere", "decode", 10.0).basis.startswith("5 e decode")
    assert "none of other" in interval(table, ["other"], "ampere", "decode", 10.0).basis
    assert interval(table, ["e"], "ampere", "prefill", 10.0) is None  # no prefill runs at all


def test_kinds():
    assert kind_of("decode_tok_s", 1) == "decode" and kind_of("decode_tok_s", 8) == "batched"
    assert kind_of("prefill_tok_s", 4) == "prefill" and kind_of("e2e_latency_s", 1) is None
