"""`--gpu auto` and `--host-ram auto`: read this machine's GPUs and RAM from the tools that
report them, offline. The only module besides the CLI that runs programs.

  NVIDIA  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits
  AMD     rocm-smi --showproductname --csv   (the "Card series" / "Card SKU" columns)
  Apple   sysctl -n machdep.cpu.brand_string ("Apple M4 Max"), hw.memsize
  Linux   /proc/meminfo MemTotal

Names are matched to catalog GPUs with Catalog.gpu (vendor words and case do not matter);
a GPU the catalog lacks is named in the error, never silently replaced.
"""

from __future__ import annotations

import csv
import io
import platform
import shutil
import subprocess
from pathlib import Path

from planner.errors import PlannerError
from planner.units import KiB

TIMEOUT_S = 10  # a hung driver tool must not hang planner


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _nvidia() -> list[str]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if not out:
        return []
    return [row[0].strip() for row in csv.reader(io.StringIO(out)) if row and row[0].strip()]


def _amd() -> list[str]:
    out = _run(["rocm-smi", "--showproductname", "--csv"])
    if not out:
        return []
    rows = list(csv.DictReader(io.StringIO(out)))
    names = []
    for row in rows:
        name = (row.get("Card Series") or row.get("Card series") or row.get("Card SKU") or "").strip()
        if name:
            names.append(name)
    return names


def _apple() -> list[str]:
    if platform.system() != "Darwin":
        return []
    out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
    return [out.strip()] if out and out.strip().startswith("Apple") else []


def detected_gpu_names() -> list[str]:
    """The GPU names this machine's tools report, one per GPU."""
    return _nvidia() or _amd() or _apple()


def detect_gpus(catalog) -> tuple[str, ...]:
    """Catalog ids of this machine's GPUs, or a one-line error saying what was (not) found."""
    names = detected_gpu_names()
    if not names:
        raise PlannerError("--gpu auto found no GPU (nvidia-smi, rocm-smi and macOS sysctl report none here); "
                           "name the GPUs, e.g. --gpu rtx4090")
    ids = []
    for name in names:
        try:
            ids.append(catalog.gpu(name).id)
        except PlannerError as e:
            raise PlannerError(f"--gpu auto found {name!r}, which the catalog does not match ({e}); name the GPU "
                               "with --gpu") from None
    return tuple(ids)


def detect_host_ram_bytes() -> int:
    """Total RAM of this machine (Linux /proc/meminfo, macOS hw.memsize)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * KiB  # /proc/meminfo's "kB" are KiB
    out = _run(["sysctl", "-n", "hw.memsize"])
    if out and out.strip().isdigit():
        return int(out.strip())
    raise PlannerError("--host-ram auto could not read this machine's RAM; give a size, e.g. --host-ram 64GiB")
