import pytest
from hypothesis import given, strategies as st

from planner import units
from planner.errors import PlannerError


def test_token_suffixes():
    assert units.parse_tokens("200k") == 200_000
    assert units.parse_tokens("128Ki") == 131_072
    assert units.parse_tokens("32768") == 32_768
    assert units.parse_tokens("1M") == 1_000_000


@pytest.mark.parametrize("bad", ["-5", "abc", "1.5", "12q", "", "99999999999"])
def test_bad_token_counts(bad):
    with pytest.raises(PlannerError):
        units.parse_tokens(bad)


def test_gb_is_not_gib():
    assert units.to_si(1, "GB") == 1e9
    assert units.to_si(1, "GiB") == 2**30
    assert units.parse_bytes("64G") == 64 * 2**30  # bare G follows llama.cpp/nvidia-smi: binary
    assert units.parse_bytes("64GB") == 64 * 10**9


@given(st.integers(min_value=0, max_value=2**20))
def test_ki_round_trip(n):
    assert units.parse_tokens(f"{n}Ki") == n * 1024
