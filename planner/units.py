"""Units: the one place where numbers change units.

Inside planner every quantity is SI: bytes, seconds, FLOP, FLOP/s, bytes/s, watts.
Data files and the command line speak in human units ("1792 GB/s", "32 GiB", "200k");
this module converts them, and nothing else does.

GB = 1e9 bytes and GiB = 2**30 bytes are different units and are never conflated.
"""

from __future__ import annotations

import re

from planner.errors import PlannerError

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40
MS = 1e-3  # seconds per millisecond
US = 1e-6  # seconds per microsecond
NS = 1e-9  # seconds per nanosecond
GFLOP = 1e9
TFLOP = 1e12

# Multipliers to SI for each unit string a data file may use.
_UNIT_TO_SI: dict[str, float] = {
    # bytes
    "B": 1.0,
    "KB": KB,
    "MB": MB,
    "GB": GB,
    "TB": TB,
    "KiB": KiB,
    "MiB": MiB,
    "GiB": GiB,
    "TiB": TiB,
    # bandwidth, bytes/s (decimal, as vendors quote it)
    "B/s": 1.0,
    "MB/s": MB,
    "GB/s": GB,
    "TB/s": TB,
    "Gb/s": 1e9 / 8,  # network line rates are quoted in bits
    # compute: decimal tera/peta, as vendors quote it. 1 MAC = 2 FLOP; values are FLOP/s.
    "GFLOP/s": 1e9,
    "TFLOP/s": 1e12,
    "PFLOP/s": 1e15,
    "TOP/s": 1e12,  # integer ops per second (INT8/INT4 tensor rates)
    # power
    "W": 1.0,
    # time
    "s": 1.0,
    "ms": MS,
    "us": US,
    "ns": NS,
    # frequency
    "MHz": 1e6,
    "GHz": 1e9,
    "MT/s": 1e6,  # memory transfers per second
    # plain numbers
    "count": 1.0,
    "tokens": 1.0,
    "params": 1.0,
    "USD": 1.0,
    "ratio": 1.0,
}


def to_si(value: float, unit: str) -> float:
    """Convert `value` in `unit` to SI. Unknown units are an error, never a guess."""
    try:
        return float(value) * _UNIT_TO_SI[unit]
    except KeyError:
        raise PlannerError(f"unknown unit {unit!r}; known: {', '.join(sorted(_UNIT_TO_SI))}") from None


def known_unit(unit: str) -> bool:
    return unit in _UNIT_TO_SI


# --- token counts on the command line: "200k", "32768", "128Ki", "1M" -----------------------

_TOKEN_SUFFIX = {"": 1, "k": 1000, "K": 1000, "m": 10**6, "M": 10**6, "Ki": 2**10, "Mi": 2**20}
_TOKEN_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|K|m|M|Ki|Mi)?\s*$")

# A sanity bound on any token count a user can ask for: 2**30 tokens (no model has a longer
# context; anything above is a typo, and would make the memory arithmetic meaningless).
MAX_TOKENS = 2**30


def parse_tokens(text: str | int, what: str = "size") -> int:
    """Parse a token count: 200k = 200000, 128Ki = 131072, 1M = 1000000, 32768 = 32768."""
    if isinstance(text, int):
        n = text
    else:
        m = _TOKEN_RE.match(str(text))
        if not m:
            raise PlannerError(
                f"{what} {_short(text)} is not a token count; use e.g. 32768, 200k, 128Ki or 1M"
            )
        n_float = float(m.group(1)) * _TOKEN_SUFFIX[m.group(2) or ""]
        if not n_float <= MAX_TOKENS:  # also inf, from a number too long for a float
            raise PlannerError(f"{what} {_short(text)} is absurdly large (more than {MAX_TOKENS} tokens)")
        if n_float != int(n_float):
            raise PlannerError(f"{what} {_short(text)} is not a whole number of tokens")
        n = int(n_float)
    if n < 0:
        raise PlannerError(f"{what} must not be negative (got {n})")
    if n > MAX_TOKENS:
        raise PlannerError(f"{what} {n} is absurdly large (more than {MAX_TOKENS} tokens)")
    return n


_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G|T)?\s*$", re.I)
_BYTES_SUFFIX = {
    "b": 1, "kb": KB, "mb": MB, "gb": GB, "tb": TB, "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
    # bare K/M/G/T follow llama.cpp and nvidia-smi usage: binary
    "k": KiB, "m": MiB, "g": GiB, "t": TiB,
}


# A sanity bound on any byte size a user can give: 2**60 bytes (1 EiB; no host holds more).
MAX_BYTES = 2**60


def parse_bytes(text: str, what: str = "memory") -> int:
    """Parse a byte size: '64GiB', '64G' (= GiB), '64GB' (= 1e9), '512MiB'. A whole number of
    bytes from 1 to MAX_BYTES."""
    m = _BYTES_RE.match(str(text))
    if not m:
        raise PlannerError(f"{what} {_short(text)} is not a size; use e.g. 64GiB, 64GB or 512MiB")
    n = float(m.group(1)) * _BYTES_SUFFIX[(m.group(2) or "B").lower()]
    if not n <= MAX_BYTES:  # also inf, from a number too long for a float
        raise PlannerError(f"{what} {_short(text)} is absurdly large (more than 2^60 bytes)")
    if n < 1:
        raise PlannerError(f"{what} {_short(text)}: give a size such as 64GiB (at least one byte)")
    return int(n)


def _short(text) -> str:
    """`text` as shown in an error: quoted, and cut short when long."""
    s = repr(str(text))
    return s if len(s) <= 40 else s[:37] + "..."


# --- rendering ---------------------------------------------------------------------------


def fmt_gib(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.2f} GiB"


def fmt_bytes(n_bytes: float) -> str:
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:.2f} GiB"
    if abs(n_bytes) >= MiB:
        return f"{n_bytes / MiB:.0f} MiB"
    if abs(n_bytes) >= KiB:
        return f"{n_bytes / KiB:.0f} KiB"
    return f"{n_bytes:.0f} B"


def fmt_tokens(n: int) -> str:
    """131072 -> '131,072 (128Ki)'; 200000 -> '200,000'."""
    if n >= 1024 and n % 1024 == 0:
        return f"{n:,} ({n // 1024}Ki)"
    return f"{n:,}"


def fmt_params(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.0f}M"


DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """'2s', '40ms', '1.5' (seconds) -> seconds; a one-line error otherwise."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|ms|us|min)?\s*", str(text).lower())
    if not m:
        raise PlannerError(f"{what}: {text!r} is not a duration (write 2s, 40ms)")
    return float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]
