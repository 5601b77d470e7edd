"""Parsing and formatting of the quantities budgets speak in: durations, sizes, percentages.

Pure functions, no pytest. Every parser raises :class:`UnitError` (a ``ValueError``) with a message
that quotes the offending input, so callers can prefix it with the option or test it came from.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "UnitError",
    "format_change",
    "format_duration",
    "format_size",
    "format_value",
    "parse_count",
    "parse_duration",
    "parse_percent",
    "parse_rate",
    "parse_size",
]


class UnitError(ValueError):
    """A quantity could not be parsed."""


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*([a-zµμ]+)\s*$")

_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(rf"^\s*({_NUMBER})\s*([a-zA-Z]*)\s*$")
_PERCENT_RE = re.compile(rf"^\s*({_NUMBER})\s*(%?)\s*$")


def _finite_non_negative(value: float, text: object, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise UnitError(f"invalid {what} {text!r}: must be a finite, non-negative number")
    return value


def parse_duration(value: str | float | int) -> float:
    """``"50ms"`` → ``0.05``. Numbers are seconds. Units: ns us µs ms s m min h."""
    if isinstance(value, bool):
        raise UnitError(f"invalid duration {value!r}: expected e.g. '50ms', '2s' or seconds")
    if isinstance(value, (int, float)):
        return _finite_non_negative(float(value), value, "duration")
    if not isinstance(value, str):
        raise UnitError(f"invalid duration {value!r}: expected e.g. '50ms', '2s' or seconds")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _finite_non_negative(seconds, value, "duration")
    match = _DURATION_RE.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise UnitError(
            f"invalid duration {value!r}: expected a number with a unit "
            f"(ns, us, ms, s, m, h), e.g. '50ms'"
        )
    return _finite_non_negative(
        float(match.group(1)) * _DURATION_UNITS[match.group(2)], value, "duration"
    )


def parse_size(value: str | float | int) -> int:
    """``"64MB"`` → 64_000_000, ``"64MiB"`` → 67_108_864. Numbers are bytes."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid size {value!r}: expected e.g. '64MB', '64MiB' or bytes")
    if isinstance(value, (int, float)):
        return int(_finite_non_negative(float(value), value, "size"))
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _SIZE_UNITS):
        raise UnitError(
            f"invalid size {value!r}: expected a number with a unit "
            f"(B, kB, MB, GB, KiB, MiB, GiB), e.g. '64MB'"
        )
    factor = _SIZE_UNITS[unit] if unit else 1
    return round(_finite_non_negative(float(match.group(1)) * factor, value, "size"))


def parse_percent(value: str | float | int, *, bare_is_percent: bool = False) -> float:
    """``"10%"`` → ``0.1``. Numbers are fractions (``0.1``), unless ``bare_is_percent`` (used for
    command-line ``PCT`` values, where ``10`` means 10 %)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid percentage {value!r}: expected e.g. '10%'")
    if isinstance(value, (int, float)):
        fraction = float(value) / 100 if bare_is_percent else float(value)
        return _finite_non_negative(fraction, value, "percentage")
    match = _PERCENT_RE.match(value)
    if not match:
        raise UnitError(f"invalid percentage {value!r}: expected e.g. '10%'")
    number = float(match.group(1))
    if match.group(2) or bare_is_percent:
        number /= 100
    return _finite_non_negative(number, value, "percentage")


def parse_rate(value: str | float | int) -> float:
    """Requests per second: ``500``, ``"500"``, ``"500/s"``, ``"2k/s"``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid rate {value!r}: expected requests per second, e.g. 500")
    if isinstance(value, (int, float)):
        return _finite_non_negative(float(value), value, "rate")
    match = re.match(rf"^\s*({_NUMBER})\s*(k?)\s*(?:/s|rps)?\s*$", value)
    if not match:
        raise UnitError(f"invalid rate {value!r}: expected requests per second, e.g. 500")
    factor = 1000.0 if match.group(2) else 1.0
    return _finite_non_negative(float(match.group(1)) * factor, value, "rate")


def parse_count(value: str | float | int) -> int:
    """A whole, non-negative number (query counts)."""
    if isinstance(value, bool):
        raise UnitError(f"invalid count {value!r}: expected a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 0:
        raise UnitError(f"invalid count {value!r}: expected a whole, non-negative number")
    return value


def format_duration(seconds: float) -> str:
    """A duration in the unit that keeps 3 significant figures readable: ``12.1 ms``."""
    if not math.isfinite(seconds):
        return str(seconds)
    magnitude = abs(seconds)
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if magnitude >= factor:
            return f"{_sig3(seconds / factor)} {unit}"
    if magnitude == 0:
        return "0 s"
    return f"{_sig3(seconds / 1e-9)} ns"


def format_size(size: float) -> str:
    """Bytes in binary units: ``1.50 MiB``."""
    magnitude = abs(size)
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if magnitude >= factor:
            return f"{_sig3(size / factor)} {unit}"
    return f"{int(size)} B"


def format_value(value: float, unit: str) -> str:
    """Format a metric value for a message or a table."""
    if unit == "s":
        return format_duration(value)
    if unit == "bytes":
        return format_size(value)
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else _sig3(value)
    if unit == "ratio":
        return f"{_sig3(value * 100)} %"
    if unit == "1/s":
        return f"{_sig3(value)}/s"
    return f"{_sig3(value)} {unit}".rstrip()


def format_change(change: float | None) -> str:
    """A relative change as ``+32 %``; ``None`` (no baseline) as an empty string."""
    if change is None:
        return ""
    if math.isinf(change):
        return "+∞ %" if change > 0 else "-∞ %"
    percent = change * 100
    if abs(percent) >= 10:
        return f"{percent:+.0f} %"
    return f"{percent:+.1f} %"


def _sig3(number: float) -> str:
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 100:
        return f"{number:.0f}"
    if magnitude >= 10:
        return f"{number:.1f}"
    return f"{number:.2f}"
