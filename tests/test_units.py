"""Parsers and formatters of durations, sizes, percentages, rates and counts."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pytest_bridgeperf.units import (
    UnitError,
    format_change,
    format_duration,
    format_size,
    format_value,
    parse_count,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_size,
)

PARSERS = [parse_duration, parse_size, parse_percent, parse_rate, parse_count]

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------------------------------
# durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("50 ms", 0.05),
        (" 2s ", 2.0),
        ("150us", 150e-6),
        ("150µs", 150e-6),
        ("150μs", 150e-6),
        ("10ns", 10e-9),
        ("1.5m", 90.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        (".5s", 0.5),
        ("1e3ms", 1.0),
        ("0.25", 0.25),
        ("3", 3.0),
        (3, 3.0),
        (0.002, 0.002),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["", "ms", "50 parsecs", "-5ms", "5 ms ms", "fast", "inf", "nan", "1e400ms", "50MS", "5s5"],
)
def test_parse_duration_rejects_garbage(bad: str) -> None:
    with pytest.raises(UnitError, match=re.escape(repr(bad))):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, False, None, [1], -1, -0.5, math.inf, math.nan, b"5s"])
def test_parse_duration_rejects_non_values(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_duration(bad)  # type: ignore[arg-type]


@given(finite, st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "min", "h"]))
def test_duration_text_round_trip(number: float, unit: str) -> None:
    factor = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "min": 60, "h": 3600}
    assert parse_duration(f"{number!r}{unit}") == pytest.approx(number * factor[unit], rel=1e-12)


@given(st.floats(min_value=1e-9, max_value=1e5, allow_nan=False))
def test_format_duration_parses_back_within_three_digits(seconds: float) -> None:
    text = format_duration(seconds).replace(" ", "")
    assert parse_duration(text) == pytest.approx(seconds, rel=5e-3, abs=1e-12)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0121, "12.1 ms"),
        (2.5, "2.50 s"),
        (150e-6, "150 µs"),
        (5e-9, "5.00 ns"),
        (0, "0 s"),
        (123.4, "123 s"),
        (math.inf, "inf"),
        (-0.002, "-2.00 ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MB", 64_000_000),
        ("64MiB", 64 * 2**20),
        ("64 mib", 64 * 2**20),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("1.5GiB", 3 * 2**29),
        ("2TB", 2 * 10**12),
        ("512", 512),
        ("512B", 512),
        (4096, 4096),
        (10.0, 10),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize("bad", ["", "MB", "64 furlongs", "-1MB", "1e400", "64 M B", "nan"])
def test_parse_size_rejects_garbage(bad: str) -> None:
    with pytest.raises(UnitError, match=re.escape(repr(bad))):
        parse_size(bad)


@pytest.mark.parametrize("bad", [True, None, -1, math.inf, math.nan, [64]])
def test_parse_size_rejects_non_values(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_size(bad)  # type: ignore[arg-type]


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["B", "kB", "MB", "GB", "KiB", "MiB", "GiB"]),
)
def test_size_text_round_trip(number: int, unit: str) -> None:
    factor = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 1024, "MiB": 2**20}
    factor["GiB"] = 2**30
    assert parse_size(f"{number}{unit}") == number * factor[unit]


@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_parses_back_within_three_digits(size: int) -> None:
    text = format_size(size).replace(" ", "")
    assert parse_size(text) == pytest.approx(size, rel=5e-3, abs=1)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (3 * 2**29, "1.50 GiB"),
        (2**20, "1.00 MiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


# ---------------------------------------------------------------------------------------------
# percentages, rates, counts


@pytest.mark.parametrize(
    ("value", "fraction", "bare_is_percent"),
    [
        ("10%", 0.10, False),
        ("10 %", 0.10, False),
        ("0.5%", 0.005, False),
        ("0.1", 0.1, False),
        (0.1, 0.1, False),
        ("10", 0.10, True),
        (10, 0.10, True),
        ("10%", 0.10, True),
        ("150%", 1.5, False),
    ],
)
def test_parse_percent(value: str | float, fraction: float, bare_is_percent: bool) -> None:
    assert parse_percent(value, bare_is_percent=bare_is_percent) == pytest.approx(fraction)


@pytest.mark.parametrize("bad", ["", "%", "ten percent", "-5%", "5%%", "inf%", "nan", "1e400%"])
def test_parse_percent_rejects_garbage(bad: str) -> None:
    with pytest.raises(UnitError, match=re.escape(repr(bad))):
        parse_percent(bad)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_percent, "-5%"),
        (parse_duration, "-5ms"),
        (parse_duration, "-2"),
        (parse_size, "-1MB"),
        (parse_rate, "-5/s"),
    ],
)
def test_negative_quantities_are_named_as_such(parse: Any, text: str) -> None:
    """A negative number is a number with the wrong sign, not garbage: the message says so."""
    with pytest.raises(UnitError, match=re.escape(f"{text!r}: must be a finite, non-negative")):
        parse(text)


@pytest.mark.parametrize("bad", [True, None, -0.1, math.inf, math.nan])
def test_parse_percent_rejects_non_values(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_percent(bad)  # type: ignore[arg-type]


@given(finite)
def test_percent_round_trip(number: float) -> None:
    assert parse_percent(f"{number!r}%") == pytest.approx(number / 100, rel=1e-12)
    assert parse_percent(repr(number), bare_is_percent=True) == pytest.approx(number / 100)


@pytest.mark.parametrize(
    ("value", "rate"),
    [(500, 500.0), ("500", 500.0), ("500/s", 500.0), ("2k/s", 2000.0), ("1.5k", 1500.0)],
)
def test_parse_rate(value: str | int, rate: float) -> None:
    assert parse_rate(value) == rate


@pytest.mark.parametrize("bad", ["", "fast", "-5/s", "5/min", "inf", "nan/s", True, None, -1])
def test_parse_rate_rejects_garbage(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_rate(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "count"), [(0, 0), (12, 12), ("12", 12), (" 7 ", 7), (3.0, 3)])
def test_parse_count(value: str | float, count: int) -> None:
    assert parse_count(value) == count


@pytest.mark.parametrize(
    "bad", ["", "many", "-1", "1.5", "1e3", "²", True, False, None, -1, 2.5, math.nan, math.inf]
)
def test_parse_count_rejects_garbage(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_count(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**12))
def test_count_round_trip(number: int) -> None:
    assert parse_count(str(number)) == number
    assert parse_count(number) == number


# ---------------------------------------------------------------------------------------------
# every parser: garbage never escapes as anything but UnitError


@pytest.mark.parametrize("parser", PARSERS)
@given(text=st.text(max_size=12))
def test_parsers_raise_only_unit_error(parser: object, text: str) -> None:
    try:
        result = parser(text)  # type: ignore[operator]
    except UnitError as exc:
        message = str(exc)
    else:
        assert math.isfinite(result)
        assert result >= 0
        return
    assert repr(text) in message


@pytest.mark.parametrize("parser", PARSERS)
@given(number=st.floats())
def test_parsers_on_any_float(parser: object, number: float) -> None:
    ok = math.isfinite(number) and number >= 0
    if parser is parse_count:
        ok = ok and number.is_integer()
    if ok:
        assert parser(number) >= 0  # type: ignore[operator]
    else:
        with pytest.raises(UnitError):
            parser(number)  # type: ignore[operator]


@pytest.mark.parametrize("parser", PARSERS)
@given(number=st.integers(max_value=-1))
def test_parsers_reject_negative_integers(parser: object, number: int) -> None:
    with pytest.raises(UnitError):
        parser(number)  # type: ignore[operator]
    with pytest.raises(UnitError):
        parser(str(number))  # type: ignore[operator]


@pytest.mark.parametrize("parser", PARSERS)
def test_unit_error_is_value_error(parser: object) -> None:
    with pytest.raises(ValueError):
        parser("garbage")  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# values and changes


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0121, "s", "12.1 ms"),
        (2**20, "bytes", "1.00 MiB"),
        (12, "count", "12"),
        (12.5, "count", "12.5"),
        (0.7, "ratio", "70.0 %"),
        (1234.0, "1/s", "1234/s"),
        (5.0, "widgets", "5.00 widgets"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (None, ""),
        (0.32, "+32 %"),
        (-0.5, "-50 %"),
        (0.051, "+5.1 %"),
        (0.0, "+0.0 %"),
        (math.inf, "+∞ %"),
        (-math.inf, "-∞ %"),
    ],
)
def test_format_change(change: float | None, text: str) -> None:
    assert format_change(change) == text


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_format_value_never_raises(value: float) -> None:
    for unit in ("s", "bytes", "count", "ratio", "1/s"):
        assert format_value(value, unit)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_format_change_sign(change: float) -> None:
    assume(abs(change) >= 0.001)
    text = format_change(change)
    assert text.startswith("+" if change > 0 else "-")
    assert text.endswith(" %")
