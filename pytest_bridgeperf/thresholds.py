"""k6-style threshold expressions for load results: ``"p(95) < 50ms"``, ``"error_rate < 1%"``.

The parser is strict: every expression is ``<metric> <operator> <value>`` and anything else is a
:class:`ThresholdError` (a ``ValueError``) quoting the expression and saying what was expected.
Latency limits need a unit (``200`` alone is ambiguous between k6's milliseconds and seconds).
No pytest here.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .units import (
    UnitError,
    format_value,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_size,
)

__all__ = [
    "MIN_TAIL_SAMPLES",
    "Measured",
    "Outcome",
    "Threshold",
    "ThresholdError",
    "check",
    "describe_errors",
    "evaluate",
    "min_samples_for",
    "parse_threshold",
]


class ThresholdError(ValueError):
    """A threshold expression could not be parsed."""


class Measured(Protocol):
    """What a threshold can be evaluated on (a ``LoadResult``)."""

    @property
    def count(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def rps(self) -> float: ...
    @property
    def error_types(self) -> Mapping[str, int]: ...
    @property
    def status_counts(self) -> Mapping[int, int]: ...
    @property
    def latency_count(self) -> int: ...
    @property
    def mean(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    def percentile(self, q: float) -> float: ...


#: A percentile needs this many samples beyond it before it is more than the sample maximum.
MIN_TAIL_SAMPLES = 5

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}

_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*(?:\s*\(\s*[^)]*\))?)\s*"
    r"(?P<op><=|>=|==|=>|=<|!=|<|>|=)?\s*(?P<value>.*?)\s*$"
)
_PERCENTILE = re.compile(r"^p\s*\(\s*(?P<q>[0-9]+(?:\.[0-9]+)?)\s*\)$|^p(?P<bare>[0-9]+)$")

#: metric name -> (kind, canonical label). Kinds: latency, ratio, rate, count.
_METRICS: dict[str, tuple[str, str]] = {
    "avg": ("latency", "avg"),
    "mean": ("latency", "avg"),
    "med": ("latency", "med"),
    "min": ("latency", "min"),
    "max": ("latency", "max"),
    "error_rate": ("ratio", "error_rate"),
    "errors": ("count", "errors"),
    "count": ("count", "count"),
    "rps": ("rate", "rps"),
    # what a load result knows about its surroundings (result.server, .generator, .queries)
    "server_cpu": ("cpu", "server_cpu"),
    "server_rss": ("size", "server_rss"),
    "generator_cpu": ("cpu", "generator_cpu"),
    "queries_per_request": ("count", "queries_per_request"),
}
#: labels measured from an optional part of the result; None there fails the threshold
_OPTIONAL = frozenset(("server_cpu", "server_rss", "generator_cpu", "queries_per_request"))
_BARE_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
_KNOWN = (
    "p(N) e.g. p(95), avg, med, min, max, error_rate, errors, count, rps, server_cpu, "
    "server_rss, generator_cpu, queries_per_request"
)


@dataclass(frozen=True)
class Threshold:
    """One parsed expression."""

    text: str
    label: str  # canonical metric spelling, e.g. "p(95)"
    kind: str  # latency | ratio | rate | count
    op: str
    limit: float  # seconds, fraction, requests/s or count
    quantile: float | None = None  # for percentiles, 0..100

    def measure(self, result: Measured) -> float:
        if self.quantile is not None:
            return result.percentile(self.quantile)
        label = self.label
        if label == "avg":
            return result.mean
        if label == "med":
            return result.percentile(50)
        if label == "min":
            return result.min
        if label == "max":
            return result.max
        if label == "error_rate":
            return result.error_rate
        if label == "errors":
            return float(result.errors)
        if label == "count":
            return float(result.count)
        if label in _OPTIONAL:
            value, _ = optional_measure(result, label)
            return math.nan if value is None else value
        return result.rps

    def unit(self) -> str:
        return {
            "latency": "s",
            "ratio": "ratio",
            "rate": "1/s",
            "count": "count",
            "cpu": "ratio",
            "size": "bytes",
        }[self.kind]


def optional_measure(result: object, label: str) -> tuple[float | None, str]:
    """(the value, or None and why it is missing) of a threshold on the server's or the
    generator's resources (CPU as a fraction of one core) or on queries per request (the
    most any one request issued)."""
    if label == "queries_per_request":
        queries = getattr(result, "queries", None)
        if queries is None:
            return None, (
                "no SQL was attributed to requests: pass queries=True, with the app served in "
                "this process (serve='loop' or 'thread'; in a child process, with "
                "serve='process', neither perf_queries nor perf_memory can see inside the app)"
            )
        return float(queries.max), ""
    side = label.split("_", 1)[0]
    usage = getattr(result, side, None)
    if usage is None:
        return None, (
            f"the {side}'s resources were not measured (a callable target has no server; a URL "
            "target's server is found only on loopback, and with psutil installed)"
        )
    if label.endswith("_rss"):
        rss = getattr(usage, "rss_peak", None)
        return (None, f"the {side}'s RSS could not be read") if rss is None else (float(rss), "")
    return float(usage.cpu) / 100, ""


@dataclass(frozen=True)
class Outcome:
    threshold: Threshold
    passed: bool
    measured: float | None
    reason: str = ""  # why it failed without a comparison (no samples, too few samples)

    def describe(self) -> str:
        mark = "✓" if self.passed else "✗"
        t = self.threshold
        limit = format_value(t.limit, t.unit())
        line = f"{mark} {t.label} {t.op} {limit}"
        if self.measured is not None and not math.isnan(self.measured):
            line += f"  (measured {format_value(self.measured, t.unit())})"
        if self.reason:
            line += f"  — {self.reason}"
        return line


def _parse_limit(kind: str, raw: str, text: str) -> float:
    if not raw:
        raise ThresholdError(f"threshold {text!r}: missing the value after the operator")
    try:
        if kind == "latency":
            try:
                float(raw)
            except ValueError:
                return parse_duration(raw)
            raise ThresholdError(
                f"threshold {text!r}: a latency limit needs a unit, e.g. '{raw}ms' or '{raw}s'"
            )
        if kind == "ratio":
            return parse_percent(raw)
        if kind == "rate":
            return parse_rate(raw)
        if kind == "cpu":
            return parse_percent(raw, bare_is_percent=True)
        if kind == "size":
            return float(parse_size(raw))
        value = float(raw)
        if not value.is_integer() or value < 0:
            raise ThresholdError(f"threshold {text!r}: {raw!r} is not a whole, non-negative count")
        return value
    except UnitError as exc:
        raise ThresholdError(f"threshold {text!r}: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, ThresholdError):
            raise
        raise ThresholdError(f"threshold {text!r}: {raw!r} is not a number") from None


def parse_threshold(text: str) -> Threshold:
    """Parse ``"p(95) < 50ms"``; raises :class:`ThresholdError` naming what is wrong."""
    if not isinstance(text, str):
        raise ThresholdError(f"a threshold is a string like 'p(95) < 50ms', got {text!r}")
    if not text.strip():
        raise ThresholdError("empty threshold expression; expected e.g. 'p(95) < 50ms'")
    match = _EXPR.match(text)
    if not match:
        raise ThresholdError(f"threshold {text!r}: expected '<metric> <operator> <value>'")
    metric_raw = re.sub(r"\s+", "", match.group("metric"))
    op = match.group("op")
    raw_value = match.group("value")
    quantile: float | None = None
    percentile_match = _PERCENTILE.match(metric_raw)
    if percentile_match:
        if percentile_match.group("q") is not None:
            quantile = float(percentile_match.group("q"))
        else:
            bare = metric_raw
            if bare not in _BARE_PERCENTILES:
                raise ThresholdError(
                    f"threshold {text!r}: unknown metric {metric_raw!r}; write it as p(N)"
                )
            quantile = _BARE_PERCENTILES[bare]
        if not 0 < quantile <= 100:
            raise ThresholdError(
                f"threshold {text!r}: percentile {quantile:g} is outside 0 < N <= 100"
            )
        label = f"p({quantile:g})"
        kind = "latency"
    elif metric_raw.lower() in _METRICS:
        kind, label = _METRICS[metric_raw.lower()]
    else:
        raise ThresholdError(
            f"threshold {text!r}: unknown metric {metric_raw!r}; use one of {_KNOWN}"
        )
    if op is None:
        raise ThresholdError(
            f"threshold {text!r}: missing an operator; use one of {', '.join(_OPERATORS)}"
        )
    if op not in _OPERATORS:
        hint = {"=": " (did you mean '=='?)", "=>": " (did you mean '>='?)"}.get(op, "")
        hint = hint or (" (did you mean '<='?)" if op == "=<" else "")
        raise ThresholdError(
            f"threshold {text!r}: unsupported operator {op!r}{hint}; "
            f"use one of {', '.join(_OPERATORS)}"
        )
    if re.search(r"(<|>|=|!)", raw_value):
        raise ThresholdError(
            f"threshold {text!r}: one comparison per expression, e.g. 'p(95) < 50ms'"
        )
    limit = _parse_limit(kind, raw_value, text)
    return Threshold(
        text=text.strip(), label=label, kind=kind, op=op, limit=limit, quantile=quantile
    )


def min_samples_for(quantile: float) -> int:
    """Samples needed before percentile ``quantile`` is estimated rather than the maximum."""
    if quantile >= 100:
        return 1
    return math.ceil(MIN_TAIL_SAMPLES / (1 - quantile / 100) - 1e-9)


def evaluate(result: Measured, thresholds: Iterable[str | Threshold]) -> list[Outcome]:
    """Parse every expression first (a bad one raises before anything is judged), then judge."""
    parsed = [t if isinstance(t, Threshold) else parse_threshold(t) for t in thresholds]
    outcomes: list[Outcome] = []
    for t in parsed:
        if result.count == 0:
            outcomes.append(Outcome(t, False, None, "no requests completed: nothing was measured"))
            continue
        if t.label in _OPTIONAL:
            value, why = optional_measure(result, t.label)
            if value is None:
                outcomes.append(Outcome(t, False, None, why))
                continue
        if t.kind == "latency":
            n = result.latency_count
            if n == 0:
                outcomes.append(Outcome(t, False, None, "no request got a response: no latency"))
                continue
            if t.quantile is not None and n < min_samples_for(t.quantile):
                need = min_samples_for(t.quantile)
                outcomes.append(
                    Outcome(
                        t,
                        False,
                        t.measure(result),
                        f"{n} samples are too few to estimate {t.label}: it needs at least "
                        f"{need} ({MIN_TAIL_SAMPLES} beyond the percentile); run longer or "
                        "use a lower percentile",
                    )
                )
                continue
        measured = t.measure(result)
        passed = not math.isnan(measured) and _OPERATORS[t.op](measured, t.limit)
        outcomes.append(Outcome(t, passed, measured))
    return outcomes


#: How many error types a failure message lists (the most frequent first).
TOP_ERRORS = 5


def describe_errors(
    error_types: Mapping[str, int], status_counts: Mapping[int, int] | None = None
) -> str:
    """``errors by type: HTTP 500 ×561, TimeoutError ×3; responses by status: 500 ×561, 200
    ×36`` — the most frequent first, at most :data:`TOP_ERRORS` types."""
    if not error_types:
        return ""
    ranked = sorted(error_types.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{kind} ×{count}" for kind, count in ranked[:TOP_ERRORS]]
    rest = ranked[TOP_ERRORS:]
    if rest:
        parts.append(f"{len(rest)} more type(s) ×{sum(c for _, c in rest)}")
    text = "errors by type: " + ", ".join(parts)
    if status_counts:
        statuses = sorted(status_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        text += "; responses by status: " + ", ".join(f"{s} ×{c}" for s, c in statuses)
    return text


def check(result: Measured, thresholds: Iterable[str | Threshold], *, title: str = "") -> None:
    """Raise ``AssertionError`` listing every threshold (✓/✗, measured value) if any fails;
    a failed ``errors``/``error_rate`` threshold also lists the errors by type."""
    outcomes = evaluate(result, thresholds)
    if not outcomes:
        raise ThresholdError("check() needs at least one threshold, e.g. 'p(95) < 50ms'")
    if all(o.passed for o in outcomes):
        return
    failed = sum(not o.passed for o in outcomes)
    head = f"{failed} of {len(outcomes)} threshold(s) failed"
    if title:
        head += f" for {title}"
    lines = ["  " + o.describe() for o in outcomes]
    on_errors = any(
        not o.passed and o.threshold.label in ("errors", "error_rate") for o in outcomes
    )
    if on_errors and result.errors:
        lines.append("  " + describe_errors(result.error_types, result.status_counts))
    raise AssertionError(head + ":\n" + "\n".join(lines))
