"""How sure a predicted speed is: 80% prediction intervals from the validation residuals of
the nearest evidence (docs/validation.md#intervals).

`calibrate fit` scores the fitted profile on the runs it was fitted to and keeps, per bucket
(engine, GPU architecture family, kind of point), the number of runs and the mean and
standard deviation of log(measured / predicted). A prediction takes the bucket of its own
engine and family when it has at least MIN_RUNS runs, else the engine's runs on every family
(and says the family has none of its own), else every run of that kind. The interval is the
normal prediction interval for one new run: mean +- t(0.90, n-1) x sd x sqrt(1 + 1/n), so a
bucket with few runs gives a wider one. Pure functions.
"""

from __future__ import annotations

import math
from typing import Literal

from planner.schema import Strict

Kind = Literal["decode", "batched", "prefill"]
MIN_RUNS = 5  # a bucket with fewer runs is not used alone
LEVEL = 0.80
ANY = "*"


class Bucket(Strict):
    n: int
    mean_log: float  # mean of log(measured / predicted)
    sd_log: float

    def ratios(self) -> tuple[float, float]:
        """The interval as multiples of the prediction: (low, high)."""
        from scipy.stats import t as student_t

        half = float(student_t.ppf(0.5 + LEVEL / 2, max(self.n - 1, 1))) * self.sd_log * math.sqrt(1 + 1 / self.n)
        return math.exp(self.mean_log - half), math.exp(self.mean_log + half)


def key(engine: str, family: str | None, kind: str) -> str:
    return f"{engine}|{family or ANY}|{kind}"


def kind_of(metric: str, batch: int) -> Kind | None:
    if metric == "prefill_tok_s":
        return "prefill"
    if metric == "decode_tok_s":
        return "decode" if batch == 1 else "batched"
    return None


def buckets(points: list[tuple[str, str | None, str, float]]) -> dict[str, Bucket]:
    """(engine, family, kind, log(measured / predicted)) -> buckets by engine and family, by
    engine over every family, and by kind alone."""
    groups: dict[str, list[float]] = {}
    for engine, family, kind, r in points:
        for k in (key(engine, family, kind), key(engine, None, kind), key(ANY, None, kind)):
            groups.setdefault(k, []).append(r)
    out = {}
    for k, rs in sorted(groups.items()):
        n = len(rs)
        mean = sum(rs) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in rs) / (n - 1)) if n > 1 else 0.0
        out[k] = Bucket(n=n, mean_log=round(mean, 4), sd_log=round(sd, 4))
    return out


class Interval(Strict):
    low: float
    high: float
    basis: str  # which runs it comes from, in words


def interval(table: dict[str, Bucket], engines: list[str], family: str | None, kind: Kind,
             value: float) -> Interval | None:
    """The 80% interval of a predicted `value` from the nearest bucket with enough runs.
    `engines`: the deployment's engine, then the engines whose factors it borrows."""
    fam_name = family or "unknown family"
    for engine in engines:
        own = table.get(key(engine, family, kind)) if family else None
        if own is not None and own.n >= MIN_RUNS:
            lo, hi = own.ratios()
            return Interval(low=value * lo, high=value * hi, basis=f"{own.n} {engine} {kind} runs on {fam_name}")
        pooled = table.get(key(engine, None, kind))
        if pooled is not None and pooled.n >= MIN_RUNS:
            lo, hi = pooled.ratios()
            have = own.n if own is not None else 0
            return Interval(low=value * lo, high=value * hi,
                            basis=f"{pooled.n} {engine} {kind} runs, {have or 'none'} on {fam_name}")
    every = table.get(key(ANY, None, kind))
    if every is not None and every.n >= MIN_RUNS:
        lo, hi = every.ratios()
        return Interval(low=value * lo, high=value * hi,
                        basis=f"{every.n} {kind} runs of all engines, none of {engines[0]}")
    return None
