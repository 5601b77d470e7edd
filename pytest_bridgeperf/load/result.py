"""What a load run measured: :class:`LoadResult`, and the cheap collectors the engines fill.

Engines append raw latencies (integer nanoseconds) to an ``array('q')`` in the hot path — one C
call per request — and the collector folds them into the HDR histogram in bulk. Folding first
rounds each value down to its HDR bucket (3 significant digits), so the histogram is identical to
recording every value one by one, at a fraction of the cost.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import thresholds as _thresholds
from ..stats import LatencyHistogram
from ..units import format_duration, format_size
from .resources import ResourceUsage, describe_usage

if TYPE_CHECKING:  # SQLAlchemy is imported only by runs that attribute queries
    from ..queries.perrequest import RequestQueries

__all__ = [
    "HostShare",
    "LoadResult",
    "NameCollector",
    "fold_latencies",
    "merge_results",
    "merged_histogram",
]

_SUB_BUCKET_BITS = 11  # 3 significant digits -> 2048 sub-buckets in hdrh
_NUMPY_FOLD_MIN = 50_000


def fold_latencies(histogram: LatencyHistogram, values: array[int]) -> None:
    """Record every value of ``values`` (nanoseconds) into ``histogram``, in bulk."""
    if not values:
        return
    if len(values) >= _NUMPY_FOLD_MIN:
        try:
            import numpy as np
        except ImportError:  # numpy is optional: the pure-Python fold gives the same histogram
            pass
        else:
            a = np.frombuffer(values, dtype=np.int64)
            a = np.clip(a, 1, 3600 * 10**9)
            _, exponent = np.frexp(a.astype(np.float64))
            shift = np.maximum(exponent - _SUB_BUCKET_BITS, 0).astype(np.int64)
            quantized = (a >> shift) << shift
            unique, counts = np.unique(quantized, return_counts=True)
            for value, count in zip(unique.tolist(), counts.tolist(), strict=True):
                histogram.record_ns(value, count)
            return
    buckets: Counter[int] = Counter()
    for value, count in Counter(values).items():
        bits = value.bit_length()
        if bits > _SUB_BUCKET_BITS:
            shift = bits - _SUB_BUCKET_BITS
            value = (value >> shift) << shift
        buckets[value] += count
    for value, count in buckets.items():
        histogram.record_ns(value, count)


class NameCollector:
    """Counters of one request name during a run (hot-path friendly: plain attributes)."""

    __slots__ = ("bytes", "count", "error_types", "errors", "histogram", "lat", "rounds", "status")

    def __init__(self) -> None:
        self.lat: array[int] = array("q")
        self.histogram = LatencyHistogram()
        self.count = 0  # responses + transport errors
        self.errors = 0
        self.status: dict[int, int] = {}
        self.error_types: dict[str, int] = {}
        self.bytes = 0
        self.rounds: list[tuple[int, int]] = []  # (count, errors) per round

    def fold(self) -> None:
        lat, self.lat = self.lat, array("q")
        fold_latencies(self.histogram, lat)

    def error(self, kind: str) -> None:
        self.count += 1
        self.errors += 1
        self.error_types[kind] = self.error_types.get(kind, 0) + 1


@dataclass
class LoadResult:
    """Measured outcome of a load run (or of one request name of it, see :attr:`by_name`).

    Latencies are seconds. ``count`` counts every finished request: responses and transport
    errors (timeouts, refused/reset connections, invalid responses). ``errors`` counts transport
    errors and responses with an unexpected status (>= 400 unless ``expect_status=``). The
    latency histogram holds every request that got a response.
    """

    name: str
    histogram: LatencyHistogram
    count: int
    errors: int
    elapsed: float  # seconds of the measured phase
    status_counts: dict[int, int] = field(default_factory=dict)
    error_types: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    by_name: dict[str, LoadResult] = field(default_factory=dict)
    model: str = "closed"
    users: int = 1
    workers: int = 1
    target_rate: float | None = None
    sent: int = 0  # requests sent in the measured phase (open model: vs. intended)
    intended: int = 0  # open model: sends due in the measured phase
    queued: int = 0  # open model: sends that waited for a free connection
    late: int = 0  # open model: sent more than LATE_NS after their intended time
    dropped: int = 0  # open model: intended but never sent before the end
    unfinished: int = 0  # in flight when the run ended (not counted)
    interrupted: bool = False  # stopped by Ctrl-C: partial results
    round_length: float = 1.0
    rounds: list[tuple[int, int]] = field(default_factory=list)  # (count, errors) per round
    target: str = ""
    #: why this run's timings are not comparable (a tracer or profiler was active in a process
    #: that measured: coverage, a debugger...), None when nothing was found
    distorted: str | None = None
    #: why the run was cut short (a deadline, e.g. the test's pytest-timeout), None otherwise
    stopped_by: str | None = None
    #: a run split over generator processes (``hosts=``, ``workers=``): each one's share
    hosts: list[HostShare] = field(default_factory=list)
    #: where a web app target was served for the run ("loop", "thread", "process"), else None
    serve: str | None = None
    #: the measured phase, (start, end) on this machine's ``perf_counter_ns`` clock
    measured_ns: tuple[int, int] | None = None
    #: CPU and memory of the process(es) serving the target, sampled ~10 Hz during the run
    #: (None when they are not known: a callable target, a URL whose server was not found)
    server: ResourceUsage | None = None
    #: CPU and memory of the load generator (this process, its threads, its workers)
    generator: ResourceUsage | None = None
    #: SQL statements per measured request, when the run attributed them (``queries=``)
    queries: RequestQueries | None = None

    # headline numbers -----------------------------------------------------------------------
    @property
    def latency_count(self) -> int:
        return self.histogram.count

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else math.nan

    @property
    def rps(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else math.nan

    def percentile(self, q: float) -> float:
        """Latency at percentile ``q`` (0..100), seconds; ``nan`` without samples."""
        return self.histogram.percentile(q)

    @property
    def mean(self) -> float:
        return self.histogram.mean

    @property
    def min(self) -> float:
        return self.histogram.min

    @property
    def max(self) -> float:
        return self.histogram.max

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def p999(self) -> float:
        return self.percentile(99.9)

    @property
    def achieved_rate(self) -> float:
        """Requests actually sent per second of the measured phase."""
        return self.sent / self.elapsed if self.elapsed > 0 else math.nan

    def round_rates(self) -> list[float]:
        """Finished requests per second in each full round (samples for the baseline)."""
        return [c / self.round_length for c, _ in self.rounds]

    def round_error_rates(self) -> list[float]:
        return [e / c for c, e in self.rounds if c]

    def __getitem__(self, name: str) -> LoadResult:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(
                f"no request named {name!r} in this result; names: {', '.join(self.by_name)}"
            ) from None

    # budgets --------------------------------------------------------------------------------
    def check(self, *thresholds: str) -> LoadResult:
        """Assert k6-style thresholds, e.g. ``check("p(95) < 50ms", "error_rate < 1%")``.

        Raises ``AssertionError`` listing every threshold with ✓/✗ and its measured value.
        Returns the result, so calls can be chained.
        """
        if not thresholds:
            raise _thresholds.ThresholdError(
                "check() needs at least one threshold, e.g. 'p(95) < 50ms'"
            )
        _thresholds.check(self, thresholds, title=self.name)
        return self

    # presentation ---------------------------------------------------------------------------
    def summary(self) -> str:
        if self.count == 0:
            return f"{self.name}: no requests finished in {self.elapsed:.2f} s"
        parts = [
            f"{self.name}: {self.count} requests in {self.elapsed:.2f} s",
            f"{self.rps:,.0f} req/s",
            f"errors {self.errors} ({self.error_rate * 100:.2f} %)",
        ]
        if self.latency_count:
            parts.append(
                "latency p50 {} p95 {} p99 {} max {}".format(
                    *(format_duration(v) for v in (self.p50, self.p95, self.p99, self.max))
                )
            )
        if self.model == "open":
            parts.append(
                f"target {self.target_rate:g}/s, sent {self.achieved_rate:,.0f}/s, "
                f"late {self.late}, dropped {self.dropped}"
            )
        if self.bytes_received:
            parts.append(f"received {format_size(self.bytes_received)}")
        if self.error_types:
            parts.append(
                "error types: " + ", ".join(f"{k} {v}" for k, v in sorted(self.error_types.items()))
            )
        if self.hosts:
            parts.append(_generators_text(self.hosts))
        if self.queries is not None:
            parts.append(self.queries.summary())
        usage = describe_usage(self.server, self.generator)
        if usage:
            parts.append(usage)
        if self.interrupted:
            parts.append("INTERRUPTED: partial results")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"<LoadResult {self.name!r} count={self.count} errors={self.errors} "
            f"rps={self.rps:.0f} p95={self.p95!r}>"
        )

    # transport between worker processes ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "histogram": self.histogram.encode() if self.histogram.count else "",
            "count": self.count,
            "errors": self.errors,
            "elapsed": self.elapsed,
            "status_counts": dict(self.status_counts),
            "error_types": dict(self.error_types),
            "bytes_received": self.bytes_received,
            "by_name": {k: v.to_dict() for k, v in self.by_name.items()},
            "model": self.model,
            "users": self.users,
            "workers": self.workers,
            "target_rate": self.target_rate,
            "sent": self.sent,
            "intended": self.intended,
            "queued": self.queued,
            "late": self.late,
            "dropped": self.dropped,
            "unfinished": self.unfinished,
            "interrupted": self.interrupted,
            "round_length": self.round_length,
            "rounds": [list(r) for r in self.rounds],
            "target": self.target,
            "distorted": self.distorted,
            "stopped_by": self.stopped_by,
            "hosts": [h.to_dict() for h in self.hosts],
            "measured_ns": list(self.measured_ns) if self.measured_ns else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        hist_text = data["histogram"]
        return cls(
            name=data["name"],
            histogram=LatencyHistogram.decode(hist_text) if hist_text else LatencyHistogram(),
            count=data["count"],
            errors=data["errors"],
            elapsed=data["elapsed"],
            status_counts={int(k): v for k, v in data["status_counts"].items()},
            error_types=dict(data["error_types"]),
            bytes_received=data["bytes_received"],
            by_name={k: cls.from_dict(v) for k, v in data["by_name"].items()},
            model=data["model"],
            users=data["users"],
            workers=data["workers"],
            target_rate=data["target_rate"],
            sent=data["sent"],
            intended=data["intended"],
            queued=data["queued"],
            late=data["late"],
            dropped=data["dropped"],
            unfinished=data["unfinished"],
            interrupted=data["interrupted"],
            round_length=data["round_length"],
            rounds=[(int(c), int(e)) for c, e in data["rounds"]],
            target=data["target"],
            distorted=data.get("distorted"),
            stopped_by=data.get("stopped_by"),
            hosts=[HostShare.from_dict(h) for h in data.get("hosts", ())],
            measured_ns=_window(data.get("measured_ns")),
        )


@dataclass
class HostShare:
    """One generator process's part of a run split over ``hosts=`` (or ``workers=``): what it
    measured on its own (``result``, with its histogram) and how hard it worked for it.

    ``cpu`` is the CPU time of the generator process over its run as a percentage of one core
    (100 % = one core busy all the time: a generator near it measured itself as much as the
    server). ``clock_offset`` is its monotonic clock minus the controller's, as estimated
    before the start, and ``clock_error`` the bound of that estimate (half the best round
    trip): it started within ``clock_error + start_late`` of the agreed instant.
    """

    id: str  # gw0, gw1... (or the spec's id=), worker0... for workers=
    spec: str  # the execnet gateway spec, "workers" for workers=
    hostname: str
    pid: int
    local: bool  # shares this machine's loopback (same host and network namespace)
    result: LoadResult
    cpu_seconds: float = math.nan
    wall_seconds: float = math.nan
    start_late: float = 0.0  # seconds after the agreed start instant that it started
    clock_offset: float = 0.0
    clock_error: float = 0.0

    @property
    def count(self) -> int:
        return self.result.count

    @property
    def errors(self) -> int:
        return self.result.errors

    @property
    def users(self) -> int:
        return self.result.users

    @property
    def rps(self) -> float:
        return self.result.rps

    @property
    def cpu(self) -> float:
        """CPU of the generator process over its run, percent of one core."""
        if not self.wall_seconds > 0:
            return math.nan
        return self.cpu_seconds / self.wall_seconds * 100

    def summary(self) -> str:
        where = self.hostname + (" (this machine)" if self.local else "")
        cpu = f"{self.cpu:.0f} %" if math.isfinite(self.cpu) else "-"
        return (
            f"{self.id} {self.spec} on {where}: {self.count:,} requests, {self.rps:,.0f} req/s, "
            f"errors {self.errors}, CPU {cpu}, started {self.start_late * 1e3:.1f} ms late "
            f"(± {self.clock_error * 1e3:.2f} ms)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "hostname": self.hostname,
            "pid": self.pid,
            "local": self.local,
            "result": self.result.to_dict(),
            "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds,
            "start_late": self.start_late,
            "clock_offset": self.clock_offset,
            "clock_error": self.clock_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostShare:
        return cls(
            id=data["id"],
            spec=data["spec"],
            hostname=data["hostname"],
            pid=data["pid"],
            local=data["local"],
            result=LoadResult.from_dict(data["result"]),
            cpu_seconds=data["cpu_seconds"],
            wall_seconds=data["wall_seconds"],
            start_late=data["start_late"],
            clock_offset=data["clock_offset"],
            clock_error=data["clock_error"],
        )


def _generators_text(hosts: list[HostShare]) -> str:
    busiest = max(hosts, key=lambda h: h.cpu if math.isfinite(h.cpu) else -1.0)
    cpu = f", busiest CPU {busiest.cpu:.0f} % ({busiest.id})" if math.isfinite(busiest.cpu) else ""
    return f"{len(hosts)} generators{cpu}"


def merge_results(parts: Iterable[LoadResult]) -> LoadResult:
    """Combine the results of worker processes that ran side by side (lossless for latencies)."""
    items = list(parts)
    if not items:
        raise ValueError("nothing to merge")
    first = items[0]
    histogram = merged_histogram([p.histogram for p in items])
    status: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    rounds: list[tuple[int, int]] = []
    for part in items:
        status.update(part.status_counts)
        kinds.update(part.error_types)
        for i, (c, e) in enumerate(part.rounds):
            if i < len(rounds):
                rounds[i] = (rounds[i][0] + c, rounds[i][1] + e)
            else:
                rounds.append((c, e))
    # a round only counts when every worker completed it
    full = min(len(p.rounds) for p in items)
    names = list(first.by_name)
    by_name = {n: merge_results([p.by_name[n] for p in items if n in p.by_name]) for n in names}
    rate = sum(p.target_rate or 0 for p in items) or None
    return LoadResult(
        name=first.name,
        histogram=histogram,
        count=sum(p.count for p in items),
        errors=sum(p.errors for p in items),
        elapsed=max(p.elapsed for p in items),
        status_counts=dict(status),
        error_types=dict(kinds),
        bytes_received=sum(p.bytes_received for p in items),
        by_name=by_name,
        model=first.model,
        users=sum(p.users for p in items),
        workers=sum(p.workers for p in items),
        target_rate=rate,
        sent=sum(p.sent for p in items),
        intended=sum(p.intended for p in items),
        queued=sum(p.queued for p in items),
        late=sum(p.late for p in items),
        dropped=sum(p.dropped for p in items),
        unfinished=sum(p.unfinished for p in items),
        interrupted=any(p.interrupted for p in items),
        round_length=first.round_length,
        rounds=rounds[:full],
        target=first.target,
        distorted="; ".join(dict.fromkeys(p.distorted for p in items if p.distorted)) or None,
        stopped_by=next((p.stopped_by for p in items if p.stopped_by), None),
        measured_ns=_span([p.measured_ns for p in items]),
    )


def _window(raw: Any) -> tuple[int, int] | None:
    return (int(raw[0]), int(raw[1])) if raw else None


def _span(windows: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    known = [w for w in windows if w is not None]
    if not known:
        return None
    return min(w[0] for w in known), max(w[1] for w in known)


def merged_histogram(parts: list[LatencyHistogram]) -> LatencyHistogram:
    # hdrh's add() takes the minimum of both sides' get_min_value(), which is 0 for an empty
    # histogram: so start from a copy of the first non-empty part and skip empty ones
    filled = [h for h in parts if h.count]
    if not filled:
        return LatencyHistogram()
    merged = LatencyHistogram.decode(filled[0].encode())
    for h in filled[1:]:
        merged.merge(h)
    return merged
