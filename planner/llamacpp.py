"""The llama.cpp harness (`planner calibrate run --engine llama.cpp`): writes synthetic GGUFs of
catalog models (planner.synth), runs llama.cpp's own benchmarks on them over a grid, and turns
their output into measured-run rows and a per-operator kernel table.

A run is a list of steps, each one invocation of llama-bench, llama-batched-bench or
test-backend-ops with its raw output kept under the work folder (`<step>.out`). A step whose
output is there already is not run again, so an interrupted run resumes where it stopped. Rows
go to the runs CSV after every step (written atomically; rows of a step measured again replace
its old rows). Grids: hwdb/grids/llama.cpp.toml. See docs/calibration.md#llamacpp.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from planner import synth, units
from planner.atomic import locked, write_atomic
from planner.catalog import Catalog, ModelCard, load_toml
from planner.errors import PlannerError
from planner.ingest import Given, _batched_bench, _llama_bench
from planner.schema import Strict

TOOLS = ("llama-bench", "llama-batched-bench", "test-backend-ops")
SOURCE = "planner calibrate run --engine llama.cpp"  # the rows' source_url starts so (planner.validate.run_kind)
BATCHED_PROMPT = 512  # llama-batched-bench prompt per sequence
OPS_TIMEOUT_S = 600  # test-backend-ops perf over the selected ops
BATCHED_ATTEMPTS = 3  # runs of a benchmark until every test printed its line
OFFLOAD_GEN = 32  # tg tokens with layers or experts in host RAM (decode there runs at host-memory speed)


class Grid(Strict):
    quants: tuple[str, ...]
    prompts: tuple[int, ...]
    gen: int
    depths: tuple[int, ...]
    kv: tuple[str, ...]
    fa_off_depths: tuple[int, ...] = ()
    batches: tuple[int, ...] = ()
    offload: tuple[float, ...] = ()
    ops: tuple[str, ...] = ()
    repetitions: int = 3


class GridFile(Strict):
    quick: Grid
    full: Grid


def load_grid(catalog: Catalog, name: str) -> Grid:
    grids = load_toml(catalog.root / "hwdb" / "grids" / "llama.cpp.toml", GridFile)
    if name not in ("quick", "full"):
        raise PlannerError(f"unknown grid {name!r}: quick or full")
    return getattr(grids, name)


@dataclass(frozen=True)
class Step:
    id: str  # file stem under the work folder; also the rows' ref_row prefix
    tool: str
    args: tuple[str, ...]
    model: str | None = None  # catalog model (None: the ops table)
    quant: str | None = None
    kv: tuple[str, str] = ("f16", "f16")
    gpu_layers: int | None = None
    cpu_moe_layers: int = 0
    what: str = ""


@dataclass
class Setup:
    bin_dir: Path
    work: Path
    out: Path
    gpu: str | None  # catalog id to label rows with (None: from llama-bench's gpu_info)
    engine: str | None
    role: str
    tag: str
    threads: int | None = None
    keep_gguf: bool = False
    reingest: bool = False  # rebuild the rows of finished steps from their kept output, run nothing
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))


def kv_pair(text: str) -> tuple[str, str]:
    k, _, v = text.partition("/")
    return k.strip(), (v or k).strip()


def model_steps(card: ModelCard, quant: str, g: Grid, model_id: str, label: str | None = None) -> list[Step]:
    """Every benchmark of one model file under grid `g` (`model_id`: the catalog id or config path
    the rows name; `label`: the steps' file stem)."""
    a = card.arch
    base = f"{label or model_id}.{quant}"
    m = ("-m", "{gguf}")
    r = ("-r", str(g.repetitions), "-o", "jsonl")
    steps = []
    if g.prompts or g.gen:
        steps.append(Step(f"{base}.bench", "llama-bench",
                          (*m, "-p", ",".join(map(str, g.prompts)) or "0", "-n", str(g.gen), "-fa", "1", *r),
                          model_id, quant, what="pp and tg at depth 0"))
    ctx_max = a.max_position_embeddings
    depths = [d for d in g.depths if d + 512 + g.gen <= ctx_max]
    for pair in g.kv:
        k, v = kv_pair(pair)
        if not depths:
            continue
        steps.append(Step(f"{base}.depth-{k}-{v}", "llama-bench",
                          (*m, "-p", "512", "-n", str(g.gen), "-d", ",".join(map(str, depths)), "-fa", "1",
                           "-ctk", k, "-ctv", v, *r), model_id, quant, (k, v), what=f"depths {depths}, KV {k}/{v}"))
    if g.fa_off_depths:
        ds = [d for d in g.fa_off_depths if d + 512 + g.gen <= ctx_max]
        steps.append(Step(f"{base}.fa-off", "llama-bench",
                          (*m, "-p", "512", "-n", str(g.gen), "-d", ",".join(map(str, ds)), "-fa", "0", *r),
                          model_id, quant, what=f"flash attention off at depths {ds}"))
    if g.batches:
        n = max(g.batches)
        steps.append(Step(f"{base}.batched", "llama-batched-bench",
                          (*m, "-c", str(n * (BATCHED_PROMPT + g.gen)), "-b", "2048", "-ub", "512", "-fa", "on",
                           "-npp", str(BATCHED_PROMPT), "-ntg", str(g.gen), "-npl", ",".join(map(str, g.batches)),
                           "--output-format", "jsonl"), model_id, quant, what=f"{g.batches} sequences"))
    for frac in g.offload:
        n_host = max(1, round(frac * a.n_layers))
        if a.n_experts > 1:
            steps.append(Step(f"{base}.cpu-moe-{n_host}", "llama-bench",
                              (*m, "-p", "512", "-n", str(min(g.gen, OFFLOAD_GEN)), "-fa", "1", "-ncmoe", str(n_host), *r),
                              model_id, quant, cpu_moe_layers=n_host, what=f"experts of {n_host} layers in host RAM"))
        else:
            ngl = a.n_layers - n_host
            steps.append(Step(f"{base}.ngl-{ngl}", "llama-bench",
                              (*m, "-p", "512", "-n", str(min(g.gen, OFFLOAD_GEN)), "-fa", "1", "-ngl", str(ngl), *r),
                              model_id, quant, gpu_layers=ngl, what=f"{ngl} of {a.n_layers} layers on the GPU"))
    return steps


def ops_steps(g: Grid, backend: str) -> list[Step]:
    """One test-backend-ops perf step per entry of `ops`: "OP" or "OP:REGEX" (a filter on the case
    parameters, test-backend-ops -p; each case runs for at least 1 s, tests/test-backend-ops.cpp:1703)."""
    out = []
    for entry in g.ops:
        op, _, regex = entry.partition(":")
        args = ("perf", "-b", backend, "-o", op, "--output", "sql") + (("-p", regex) if regex else ())
        out.append(Step(f"ops-{backend.lower()}-{op.lower()}", "test-backend-ops", args,
                        what=f"{op} perf" + (f" ({regex})" if regex else "")))
    return out


# --------------------------------------------------------------------------------------------
# running


def tool_path(bin_dir: Path, tool: str) -> Path:
    p = Path(bin_dir) / tool
    if not p.is_file() or not os.access(p, os.X_OK):
        raise PlannerError(f"--llama-bin {bin_dir}: no executable {tool} there (build llama.cpp with "
                           "LLAMA_BUILD_TOOLS and LLAMA_BUILD_TESTS; docs/calibration.md#llamacpp)")
    return p


def run(catalog: Catalog, setup: Setup, plan: list[tuple[ModelCard, str, str, list[Step]]], ops: list[Step],
        env_note: str) -> int:
    """Run every step not already done; returns the number of rows written this time."""
    setup.work.mkdir(parents=True, exist_ok=True)
    written = 0
    if setup.reingest:
        env_file = setup.work / "environment.txt"
        note = env_file.read_text().strip() if env_file.exists() else env_note
        for _, _, _, steps in plan:
            for s in steps:
                out = setup.work / f"{s.id}.out"
                if out.exists():
                    rows = rows_of(catalog, setup, s, out.read_text(), note)
                    if rows:
                        from planner.runs import write_runs

                        write_runs(setup.out, rows, HEADER, replace_prefix=f"{setup.tag}.{s.id}.")
                    written += len(rows)
        return written
    env_file = setup.work / "environment.txt"
    if not env_file.exists():
        write_atomic(env_file, env_note + "\n")
    for s in ops:
        if not (setup.work / f"{s.id}.out").exists():
            written += _do(catalog, setup, s, None, env_note)
    for card, model_id, quant, steps in plan:
        todo = [s for s in steps if not (setup.work / f"{s.id}.out").exists()]
        if not todo:
            setup.log(f"{model_id} {quant}: done already ({len(steps)} steps)")
            continue
        gguf = setup.work / f"{todo[0].id.split(f'.{quant}.')[0]}.{quant}.gguf"  # the steps' label
        if not gguf.exists():
            lay = synth.layout(catalog, card, quant)
            setup.log(f"{model_id} {quant}: writing {gguf.name} ({lay.tensor_bytes / units.GiB:.2f} GiB)")
            t0 = time.monotonic()
            synth.write(lay, gguf, progress=None)
            setup.log(f"  written in {time.monotonic() - t0:.0f} s")
        for s in todo:
            written += _do(catalog, setup, s, gguf, env_note)
        if not setup.keep_gguf:
            gguf.unlink(missing_ok=True)
    return written


def _do(catalog: Catalog, setup: Setup, s: Step, gguf: Path | None, env_note: str) -> int:
    args = [str(tool_path(setup.bin_dir, s.tool))] + [a.replace("{gguf}", str(gguf)) for a in s.args]
    if setup.threads and s.tool != "test-backend-ops":
        args += ["-t", str(setup.threads)]
    setup.log(f"{s.id}: {s.what} ...")
    t0 = time.monotonic()
    for attempt in range(1, BATCHED_ATTEMPTS + 1):
        try:
            proc = subprocess.run(args, capture_output=True, text=True,
                                  timeout=OPS_TIMEOUT_S if s.tool == "test-backend-ops" else None)
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:  # keep what the tool printed before the limit
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, rc = f"stopped after {OPS_TIMEOUT_S} s", 0
        missing = _missing_combinations(s, out) if rc == 0 else 0
        if not missing:
            break
        # llama-batched-bench prints its JSONL through llama.cpp's asynchronous log thread, which can lose
        # the last line when the process exits (seen on the CPU build: 1 run in 8); measure again
        setup.log(f"  {missing} test(s) missing from the output (attempt {attempt}); measuring again")
    dt = time.monotonic() - t0
    (setup.work / f"{s.id}.log").write_text(" ".join(args) + f"\n# exit {rc}, {dt:.1f} s\n" + err[-20000:])
    if rc != 0:
        tail = "; ".join(ln for ln in err.splitlines() if "error" in ln.lower())[-300:]
        setup.log(f"  failed (exit {rc}): {tail or 'see ' + str(setup.work / (s.id + '.log'))}")
        write_atomic(setup.work / f"{s.id}.out", out)  # partial output kept; the step counts as done
        (setup.work / f"{s.id}.failed").write_text(tail + "\n")
    else:
        write_atomic(setup.work / f"{s.id}.out", out)
    rows = rows_of(catalog, setup, s, out, env_note)
    if s.tool == "test-backend-ops":
        n = write_ops(setup.out.with_suffix(".ops.csv"), out, env_note)
        setup.log(f"  {n} operator timings in {dt:.0f} s -> {setup.out.with_suffix('.ops.csv')}")
        return 0
    if rows:
        from planner.runs import write_runs

        write_runs(setup.out, rows, HEADER, replace_prefix=f"{setup.tag}.{s.id}.")
    setup.log(f"  {len(rows)} rows in {dt:.0f} s")
    return len(rows)


def _missing_combinations(s: Step, out: str) -> int:
    """How many of the step's tests have no JSONL line in `out`: llama-batched-bench prints one per
    `-npl` value, llama-bench one per depth and per nonzero `-p` and `-n` value."""
    def values(flag: str) -> list[str]:
        return s.args[s.args.index(flag) + 1].split(",") if flag in s.args else []

    if s.tool == "llama-batched-bench":
        expected = len(values("-npl"))
    elif s.tool == "llama-bench":
        tests = [v for v in values("-p") + values("-n") if v != "0"]
        expected = len(tests) * max(1, len(values("-d")))
    else:
        return 0
    return max(0, expected - sum(1 for ln in out.splitlines() if ln.startswith("{")))


HEADER = ("# Measured by `planner calibrate run --engine llama.cpp` (planner/llamacpp.py): llama.cpp's own\n"
          "# llama-bench / llama-batched-bench on synthetic GGUFs written by planner.synth (random weights,\n"
          "# the model's exact tensors). Conditions per row; the raw tool output is kept in the work folder.")


def rows_of(catalog: Catalog, setup: Setup, s: Step, out: str, env_note: str) -> list[dict]:
    """The step's output as run rows (planner.runs.Run fields)."""
    if s.tool == "test-backend-ops" or not out.strip():
        return []
    k, v = s.kv
    g = Given(model=s.model, quant=s.quant, gpu=setup.gpu, engine=setup.engine, kv_quant=k, role=setup.role)
    try:
        rows = (_llama_bench if s.tool == "llama-bench" else _batched_bench)(catalog, out, g)
    except PlannerError as e:
        raise PlannerError(f"{s.id}: {e}") from None
    numbered = list(enumerate(rows, 1))  # ref_row numbers stay those of the tool's output
    if s.tool == "llama-batched-bench":
        # llama-batched-bench warms up with 16 tokens only (tools/batched-bench/batched-bench.cpp:100-112), so
        # its first prompt carries one-time costs: on the H200, gpt-oss-20b's first S_PP was 3,637 tok/s against
        # llama-bench's 11,725 for the same pp512 (hwdb/runs/README.md). The first combination's prefill is dropped.
        first = next((i for i, r in numbered if r["metric"] == "prefill_tok_s"), None)
        numbered = [(i, r) for i, r in numbered if i != first]
    for i, r in numbered:
        r.update(ref_row=f"{setup.tag}.{s.id}.{i}", source_url=f"{SOURCE}; {env_note}",
                 role=setup.role, kv_quant_v=v if v != k else None, gpu_layers=s.gpu_layers,
                 cpu_moe_layers=s.cpu_moe_layers or None)
    return [r for _, r in numbered]


# --------------------------------------------------------------------------------------------
# the kernel table (test-backend-ops perf)

_SQL_INSERT = re.compile(r"INSERT INTO test_backend_ops \(([^)]*)\) VALUES \((.*)\);\s*$")
OPS_FIELDS = ("backend_name", "device_description", "op_name", "op_params", "time_us", "flops", "bandwidth_gb_s",
              "n_runs", "build_commit")


def parse_ops(text: str) -> list[dict]:
    """test-backend-ops `--output sql` INSERT lines of perf mode as dicts (supported cases only)."""
    out = []
    for line in text.splitlines():
        m = _SQL_INSERT.match(line.strip())
        if not m:
            continue
        keys = [k.strip() for k in m.group(1).split(",")]
        vals = [v[1:-1] for v in re.findall(r"'(?:[^']|'')*'", m.group(2))]
        if len(vals) != len(keys):
            continue
        d = dict(zip(keys, vals))
        if d.get("test_mode") != "perf" or d.get("supported") in ("0", "false") or not float(d.get("time_us") or 0):
            continue
        out.append(d)
    return out


def write_ops(path: Path, text: str, env_note: str) -> int:
    """Append the perf results to the kernel table CSV (one per GPU), under the runs files' lock;
    returns rows added."""
    with locked(path):
        return _write_ops(path, text, env_note)


def _write_ops(path: Path, text: str, env_note: str) -> int:
    found = parse_ops(text)
    old = []
    if path.exists():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(ln for ln in f if not ln.startswith("#"))]
    buf = io.StringIO()
    buf.write("# llama.cpp test-backend-ops perf (kernel table): mean time per op run, FLOP/s, and for ops without a\n"
              "# FLOP count the bytes moved per second in GiB/s (the tool's bandwidth_gb_s divides by 1024^3;\n"
              f"# tests/test-backend-ops.cpp:1706-1709). {env_note}\n")
    w = csv.DictWriter(buf, fieldnames=OPS_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in old + found:
        w.writerow({k: r.get(k, "") for k in OPS_FIELDS})
    write_atomic(path, buf.getvalue())
    return len(found)


def environment(bin_dir: Path) -> str:
    """GPU, driver and llama.cpp build as one note (nvidia-smi where there is one)."""
    parts = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
            if q:
                parts.append(f"{len(q)} x {q[0]}")
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        v = subprocess.run([str(Path(bin_dir) / "llama-bench"), "--version"], capture_output=True, text=True,
                           timeout=30)
        m = re.search(r"version: (\d+) \((\w+)\)", v.stdout + v.stderr)
        if m:
            parts.append(f"llama.cpp b{m.group(1)} ({m.group(2)})")
    except OSError:
        pass
    return "; ".join(parts) or "environment not recorded"


def summary(work: Path) -> dict:
    """Steps done and failed under the work folder."""
    done = sorted(p.stem for p in work.glob("*.out"))
    failed = sorted(p.stem for p in work.glob("*.failed"))
    return {"done": done, "failed": failed}

