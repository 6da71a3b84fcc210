"""Tests for ipybgfetch._sizes: parse_size / format_size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipybgfetch._sizes import UNITS, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (123, 123),
        (0, 0),
        ("0", 0),
        ("123", 123),
        (" 123 ", 123),
        ("60MB", 60_000_000),
        ("60 MB", 60_000_000),
        ("60mb", 60_000_000),
        ("1.5GiB", 1_610_612_736),
        ("1.5 gib", 1_610_612_736),
        ("2gb", 2_000_000_000),
        ("2G", 2_000_000_000),
        ("10k", 10_000),
        ("10K", 10_000),
        ("10KB", 10_000),
        ("10kB", 10_000),
        ("10KiB", 10_240),
        ("10Ki", 10_240),
        ("3TB", 3 * 10**12),
        ("1TiB", 2**40),
        ("1PiB", 2**50),
        ("123B", 123),
        ("123 bytes", 123),
        ("0.5KB", 500),
        (".5KiB", 512),
        ("1.KiB", 1024),
        ("20_000_000", 20_000_000),
        ("1.1KiB", 1126),  # 1126.4 rounds to the nearest byte
        ("+5MB", 5_000_000),
        (7.0, 7),
    ],
)
def test_parse_size_examples(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-1", "negative"),
        ("-5MB", "negative"),
        (-1, "negative"),
        ("nan", "finite"),
        ("NaN", "finite"),
        ("inf", "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("12XB", "unknown unit 'XB'"),
        ("12 parsecs", "unknown unit"),
        ("1.5", "whole number"),
        ("1.5B", "whole number"),
        (1.5, "whole number"),
        ("MB", "expected a number"),
        ("1,000", "expected a number"),
        ("1e6", "expected a number"),
        ("1 2", "expected a number"),
        (True, "bool"),
    ],
)
def test_parse_size_errors(text: object, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)  # type: ignore[arg-type]
    message = str(info.value)
    assert reason in message
    # Every message shows a correct way to write it.
    assert "'60MB'" in message and "1.5GiB" in message


def test_parse_size_wrong_type() -> None:
    with pytest.raises(TypeError, match="int or a str"):
        parse_size([1])  # type: ignore[arg-type]


def test_parse_size_error_example_parses() -> None:
    # The examples the messages recommend must themselves be valid.
    for example in ("123", "60MB", "60 MB", "1.5GiB", "10KiB"):
        parse_size(example)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (60 * 2**20, "60.0 MiB"),
        (2**30, "1.0 GiB"),
        (2**40, "1.0 TiB"),
        (2**20 - 1, "1.0 MiB"),  # 1023.999 KiB rounds up into the next unit
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_size_examples(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_size_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        format_size(1.5)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=2**62)


@given(sizes)
def test_any_int_parses_to_itself(n: int) -> None:
    assert parse_size(n) == n
    assert parse_size(str(n)) == n
    assert parse_size(f"{n} B") == n


@given(sizes)
def test_format_parse_round_trip(n: int) -> None:
    text = format_size(n)
    back = parse_size(text)
    if n < 1024:
        assert back == n
    else:
        # One decimal of a unit >= 1: the error is at most 0.05 of that unit,
        # i.e. at most 5% of the value.
        assert abs(back - n) <= 0.05 * n + 1
        number, unit = text.split(" ")
        assert 1 <= float(number) < 1024 or unit == "EiB"


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(sorted(u for u in UNITS if u)),
    st.sampled_from(["", " "]),
    st.sampled_from([str.lower, str.upper, lambda s: s]),
)
def test_unit_scaling(k: int, unit: str, space: str, case: object) -> None:
    assert parse_size(f"{k}{space}{case(unit)}") == k * UNITS[unit]  # type: ignore[operator]


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=9))
def test_fraction_with_unit_is_exact_when_representable(k: int, tenth: int) -> None:
    # k.d MB is always a whole number of bytes (SI); for IEC it rounds to the nearest byte.
    assert parse_size(f"{k}.{tenth}MB") == k * 10**6 + tenth * 10**5
    exact = (k * 10 + tenth) * 1024 / 10
    assert abs(parse_size(f"{k}.{tenth}KiB") - exact) <= 0.5


@given(st.integers(min_value=1, max_value=10**9))
def test_negative_always_rejected(n: int) -> None:
    with pytest.raises(ValueError):
        parse_size(-n)
    with pytest.raises(ValueError):
        parse_size(f"-{n}MB")
