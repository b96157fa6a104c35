"""Benchmark: the CLI fuzz of tests/test_fuzz.py, run longer. Prints counts: invocations, exit
statuses, tracebacks (by the planner module they came from; any module listed in
tests/fuzzing.py KNOWN_ELSEWHERE marked known), hangs and malformed exit-2 messages. Asserts nothing.

    python bench/bench_fuzz.py            # 5,000 invocations
    python bench/bench_fuzz.py 20000 --show 5
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fuzzing  # noqa: E402

# share of the invocations per kind, as in tests/test_fuzz.py
KINDS = {"fit": 0.4, "compare": 0.1, "listings": 0.1, "ingest": 0.15, "config": 0.15, "validate": 0.1}


def _file_case(kind: str, file: tuple[str, str], extra: list[str]) -> fuzzing.Outcome:
    with tempfile.TemporaryDirectory() as d:
        p = fuzzing.write(Path(d), *file)
        args = {"ingest": ["calibrate", "ingest", str(p)], "config": ["fit", str(p), "--gpu", "rtx4090"],
                "validate": ["validate", str(p)]}[kind] + extra
        o = fuzzing.invoke(args, fuzzing.CONFIG_LIMIT_S if kind == "config" else fuzzing.CALL_LIMIT_S)
        return fuzzing.absurd_config(o) if kind == "config" else o


def run(kind: str, n: int, seed: int, sink: list) -> None:
    strat = {"fit": fuzzing.fit_args(), "compare": fuzzing.compare_args(), "listings": fuzzing.listing_args(),
             "ingest": st.tuples(fuzzing.engine_file(), st.sampled_from([[], ["--gpu", "rtx4090"], ["--quant", "x"]])),
             "config": st.tuples(fuzzing.config_file(), st.sampled_from([[], ["--ctx", "8k"]])),
             "validate": st.tuples(fuzzing.runs_file(), st.just([]))}[kind]

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strat)
    def case(x):
        sink.append(fuzzing.invoke(x) if kind in ("fit", "compare", "listings") else _file_case(kind, *x))

    from hypothesis import seed as hseed
    hseed(seed)(case)()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=5000, help="invocations in all")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--show", type=int, default=3, help="examples printed per kind of problem")
    a = ap.parse_args()
    t0 = time.perf_counter()
    outcomes: list[fuzzing.Outcome] = []
    per_kind = {}
    for kind, share in KINDS.items():
        before, t = len(outcomes), time.perf_counter()
        run(kind, max(1, int(a.n * share)), a.seed, outcomes)
        per_kind[kind] = (len(outcomes) - before, time.perf_counter() - t)
    wall = time.perf_counter() - t0
    codes = collections.Counter(o.exit_code for o in outcomes if o.problem is None or o.problem.startswith("exit"))
    tracebacks = [o for o in outcomes if o.problem and o.problem.startswith("traceback")]
    hangs = [o for o in outcomes if o.problem and o.problem.startswith("hang")]
    bad_msgs = [o for o in outcomes if o.problem and o.problem.startswith(("exit 2 without", "exit status"))]
    print(f"planner CLI fuzz: {len(outcomes)} invocations in {wall:.0f} s (seed {a.seed}; hang limit "
          f"{fuzzing.CALL_LIMIT_S} s per call)")
    for kind, (k, s) in per_kind.items():
        print(f"  {kind:<9} {k:>6} invocations  {s:7.1f} s")
    print("exit statuses: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items(), key=lambda x: str(x[0]))))
    print(f"tracebacks: {len(tracebacks)} ({sum(o.known for o in tracebacks)} known, in modules fixed elsewhere)")
    by_origin = collections.Counter((o.origin, o.known) for o in tracebacks)
    for (origin, known), n in by_origin.most_common():
        print(f"  {origin or '?':<14} {n:>5}{'  (known)' if known else ''}")
    kinds_of = collections.defaultdict(list)
    for o in tracebacks:
        kinds_of[(o.origin, o.problem)].append(o)
    print(f"distinct tracebacks (module, last line): {len(kinds_of)}")
    ranked = sorted(kinds_of.items(), key=lambda kv: (kv[1][0].known, -len(kv[1])))  # not known first
    for (origin, problem), os_ in ranked[: a.show * 4]:
        print(f"  {len(os_):>4} x {origin}: {problem[:150]}   e.g. planner {' '.join(os_[0].args)[:160]}")
    print(f"hangs: {len(hangs)} ({sum(o.known for o in hangs)} known: absurd sizes in a generated config.json)")
    for o in hangs[: a.show]:
        print(f"  planner {' '.join(o.args)[:200]}")
    print(f"exit 2 without a one-line error, or another exit status: {len(bad_msgs)}")
    for o in bad_msgs[: a.show]:
        print(f"  planner {' '.join(o.args)[:160]}: {o.problem[:200]}")


if __name__ == "__main__":
    main()
