"""The write guarantees (docs/cli.md#files): concurrent appends to a runs CSV lose nothing (a lock
around the read-merge-write); an output that names an input is refused; every failed write is one
line and leaves the old file; a write-protected file is refused, a symlink written through; runs
CSVs saved in cp1252 or with a BOM are read (issue 17, defects 2, 3, 6, 7)."""

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner import atomic
from planner.atomic import write_atomic
from planner.cli import main
from planner.errors import PlannerError
from planner.runs import load_runs, write_runs

ROOT = Path(__file__).resolve().parent.parent
HEADER = ("ref_row,role,gpu,gpu_count,engine,model,quant,kv_quant,flash_attention,prompt_tokens,depth_tokens,"
          "gen_tokens,batch,ubatch_tokens,metric,value,unit,source_url,note\n")
ROW = "{id},fit,rtx4090,1,llama.cpp-cuda,llama-2-7b,Q4_0,f16,off,0,0,128,1,512,decode_tok_s,186.21,tok/s,https://x,{note}\n"


def row(ref_row: str) -> dict:
    return {"ref_row": ref_row, "role": "fit", "gpu": "rtx4090", "gpu_count": 1, "engine": "llama.cpp-cuda",
            "model": "llama-2-7b", "quant": "Q4_0", "kv_quant": "f16", "flash_attention": "off", "prompt_tokens": 0,
            "depth_tokens": 0, "gen_tokens": 128, "batch": 1, "ubatch_tokens": 512, "metric": "decode_tok_s",
            "value": 186.21, "unit": "tok/s", "source_url": "https://x", "note": ""}


def runs_csv(path: Path, n: int = 2, note: str = "tg128") -> Path:
    path.write_text("# a comment\n" + HEADER + "".join(ROW.format(id=f"r{i}", note=note) for i in range(n)))
    return path


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r, [ln for ln in r.output.splitlines() if ln.strip()]


def one_line_error(r, lines, text):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    errs = [ln for ln in lines if ln.startswith("error:")]
    assert len(errs) == 1 and text in errs[0], r.output


# --- defect 2: two processes appending to one runs CSV ---------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.test_writes import row
    from planner.runs import write_runs
    path, who, n, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():  # start together
        time.sleep(0.001)
    for i in range(n):
        write_runs(path, [row(f"{{who}}-{{i:03d}}")], "# concurrent appends")
""")


def test_concurrent_appends_from_two_processes_lose_no_rows(tmp_path):
    """Two processes append 40 rows each, one row per call, at the same time: all 80 are in the
    file afterwards (without the lock, a writer that read the file before the other's rename
    drops the other's row: 2 of 12 trials lost rows in the issue)."""
    path, go, n = tmp_path / "runs.csv", tmp_path / "go", 40
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(path), who, str(n), str(go)], env=env)
             for who in ("a", "b")]
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ids = {r.ref_row for r in load_runs(path)}
    assert ids == {f"{w}-{i:03d}" for w in "ab" for i in range(n)}  # 80 rows, none lost
    assert path.read_text().count("# concurrent appends") == 1
    assert (tmp_path / ".runs.csv.lock").exists()  # the lock file stays (docs/cli.md#files)


def test_append_through_a_symlink_locks_and_writes_the_target(tmp_path):
    real = runs_csv(tmp_path / "real.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert write_runs(link, [row("new")]) == 3
    assert link.is_symlink() and [r.ref_row for r in load_runs(real)] == ["r0", "r1", "new"]
    assert (tmp_path / ".real.csv.lock").exists() and not (tmp_path / ".link.csv.lock").exists()


# --- defect 3: an output that names an input --------------------------------------------------

def test_calibrate_fit_refuses_to_write_over_its_runs(tmp_path):
    runs = runs_csv(tmp_path / "my-runs.csv")
    before = runs.read_bytes()
    r, lines = run("calibrate", "fit", runs, "-o", runs)
    one_line_error(r, lines, f"-o {runs} is the input {runs}")
    assert runs.read_bytes() == before


def test_output_naming_an_input_by_another_name_is_refused(tmp_path):
    """The same file through a symlink, a hard link or a relative spelling is still the input."""
    runs = runs_csv(tmp_path / "my-runs.csv")
    before = runs.read_bytes()
    (tmp_path / "link.csv").symlink_to(runs)
    os.link(runs, tmp_path / "hard.csv")
    for out in (tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "." / "my-runs.csv"):
        r, lines = run("calibrate", "fit", runs, "-o", out)
        one_line_error(r, lines, "is the input")
    assert runs.read_bytes() == before and (tmp_path / "link.csv").is_symlink()


@pytest.mark.parametrize("option", ["--markdown", "--html"])
def test_validate_refuses_to_write_over_its_runs(tmp_path, option):
    runs = runs_csv(tmp_path / "runs.csv")
    before = runs.read_bytes()
    r, lines = run("validate", runs, option, runs)
    one_line_error(r, lines, f"{option} {runs} is the input")
    assert runs.read_bytes() == before


def test_calibrate_ingest_refuses_to_append_to_its_input(tmp_path):
    src = tmp_path / "bench.json"
    shutil.copy(ROOT / "tests/samples/llama-bench.json", src)
    before = src.read_bytes()
    r, lines = run("calibrate", "ingest", src, "-o", src)
    one_line_error(r, lines, f"-o {src} is the input")
    assert src.read_bytes() == before


# --- defect 6: failed writes, write-protected files, symlinks ---------------------------------

def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "report.md"
    out.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(PlannerError, match=f"^cannot write {out}: No space left on device$"):
        write_atomic(out, "new")
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["report.md"]  # no temp file left


def test_full_disk_in_a_command_is_one_line_exit_2(tmp_path, monkeypatch):
    runs, md = runs_csv(tmp_path / "runs.csv"), tmp_path / "v.md"
    md.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    r, lines = run("validate", runs, "--markdown", md)
    one_line_error(r, lines, f"error: cannot write {md}: No space left on device")
    assert md.read_text() == "old"


def test_read_only_folder_is_one_line(tmp_path, monkeypatch):
    """mkstemp in a folder we may not write fails with EACCES (simulated: root may write anywhere)."""
    out = tmp_path / "runs.csv"
    runs_csv(out)
    before = out.read_bytes()

    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PlannerError, match=f"^cannot write {out}: Permission denied$"):
        write_runs(out, [row("new")])
    assert out.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_folder_for_real(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    runs = runs_csv(d / "runs.csv")
    before = runs.read_bytes()
    d.chmod(0o555)
    try:
        r, lines = run("calibrate", "ingest", ROOT / "tests/samples/llama-bench.json", "--tag", "x", "-o", runs)
        one_line_error(r, lines, f"cannot write {runs}: Permission denied")
    finally:
        d.chmod(0o755)
    assert runs.read_bytes() == before


def test_a_folder_as_target_is_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PlannerError, match="cannot write .*/d: it is a folder"):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir()


def test_a_write_protected_file_is_refused_not_replaced(tmp_path):
    """Refused by its mode bits even where os.access says yes (root)."""
    runs, md = runs_csv(tmp_path / "runs.csv"), tmp_path / "v.md"
    md.write_text("mine")
    md.chmod(0o444)
    r, lines = run("validate", runs, "--markdown", md)
    one_line_error(r, lines, f"cannot write {md}: the file is write-protected")
    assert md.read_text() == "mine" and stat.S_IMODE(md.stat().st_mode) == 0o444


def test_a_symlink_is_written_through_and_kept(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.md"
    link.symlink_to("real.md")
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == "real.md"
    assert real.read_text() == "new" and stat.S_IMODE(real.stat().st_mode) == 0o640
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to("sub/made.md")
    write_atomic(dangling, "made")  # a dangling link: its target is created
    assert dangling.is_symlink() and (tmp_path / "sub/made.md").read_text() == "made"


def test_a_pipe_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_target_keeps_a_new_files_mode_and_an_old_ones(tmp_path):
    out = tmp_path / "x.csv"
    write_atomic(out, "a")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    out.chmod(0o600)
    write_atomic(out, "b")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and atomic.target(out) == out


# --- defect 7: encodings spreadsheets save ---------------------------------------------------

def test_runs_csv_in_cp1252_is_read_and_kept_cp1252(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes((HEADER + ROW.format(id="r0", note="caf\xe9 \u2014 tg128")).encode("cp1252"))
    assert b"caf\xe9 \x97" in p.read_bytes()  # é = 0xe9, em dash = 0x97: not UTF-8
    (r,) = load_runs(p)
    assert r.note == "caf\xe9 \u2014 tg128"
    write_runs(p, [row("r1")])
    assert [x.note for x in load_runs(p)] == ["caf\xe9 \u2014 tg128", ""]
    p.read_bytes().decode("cp1252")  # rewritten in the file's own encoding
    assert b"\x97" in p.read_bytes()


def test_runs_csv_with_a_bom_and_crlf_is_read(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROW.format(id="r0", note="tg")).replace("\n", "\r\n").encode())
    assert [r.ref_row for r in load_runs(p)] == ["r0"]  # the BOM is not part of the first column's name
    write_runs(p, [row("r1")])
    raw = p.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfref_row,") and raw.count(b"\r\n") == 3 and b"\r\r" not in raw
    assert [r.ref_row for r in load_runs(p)] == ["r0", "r1"]


def test_undecodable_runs_csv_is_one_line_naming_the_file(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(HEADER.encode() + b"\x81\x8d\n")  # 0x81 is neither UTF-8 nor cp1252
    with pytest.raises(PlannerError, match=f"^{p}: not UTF-8 or Windows-1252 text \\(byte 0x81 at offset"):
        load_runs(p)
    r, lines = run("validate", p)
    one_line_error(r, lines, f"{p}: not UTF-8 or Windows-1252")


def test_validate_reads_a_cp1252_file(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes((HEADER + ROW.format(id="r0", note="caf\xe9")).encode("cp1252"))
    r, _ = run("validate", p)
    assert r.exit_code == 0, r.output
