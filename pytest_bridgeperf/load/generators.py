"""What ``workers=`` (local processes) and ``hosts=`` (execnet gateways) share: splitting a run
over generator processes, the start instant they agree on, what each measures about itself, and
merging their results into one :class:`LoadResult` that keeps every generator's share.

No pytest here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .options import LoadOptionError, LoadOptions
from .result import HostShare, LoadResult, merge_results

__all__ = [
    "START_LEAD_NS",
    "GeneratorUsage",
    "local_start_ns",
    "merge_shares",
    "options_to_raw",
    "split_options",
    "start_lead_ns",
]

#: From "everyone is ready" to the start instant, for processes on this machine: the parent
#: sends one message per generator in this time (about 20 µs each).
START_LEAD_NS = 50_000_000


def split_options(opts: LoadOptions, n: int | None = None) -> list[LoadOptions]:
    """The options of each of ``n`` generators (default ``opts.workers``): users, rate and
    requests divided, the remainder to the first ones; a generator left without requests is
    dropped."""
    n = opts.workers if n is None else n
    parts = []
    for i in range(n):
        users = opts.users // n + (1 if i < opts.users % n else 0)
        requests = None
        if opts.requests is not None:
            requests = opts.requests // n + (1 if i < opts.requests % n else 0)
        parts.append(
            dataclasses.replace(
                opts,
                users=users,
                workers=1,
                hosts=(),
                rate=opts.rate / n if opts.rate is not None else None,
                requests=requests,
                progress=False,
            )
        )
    return [p for p in parts if p.requests != 0]


def start_lead_ns(round_trips_ns: Sequence[int]) -> int:
    """How far ahead of now the start instant is set when generators answer over links with
    these round trips: the start message must reach the slowest one in time (half its round
    trip), with room for sending one message per generator."""
    slowest = max(round_trips_ns, default=0)
    return START_LEAD_NS + 2 * slowest + 1_000_000 * len(round_trips_ns)


def local_start_ns(start_at_monotonic_ns: int) -> int:
    """The agreed start instant (``time.monotonic_ns()`` of this machine) on the
    ``perf_counter_ns`` clock the engines time with."""
    return time.perf_counter_ns() + (start_at_monotonic_ns - time.monotonic_ns())


@dataclass
class GeneratorUsage:
    """CPU and wall time of a generator process over its run, from the start instant on."""

    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    start_late: float = 0.0
    _cpu0: float = 0.0
    _wall0: float = 0.0

    def begin(self, start_at_monotonic_ns: int) -> None:
        """Called when the start instant is known (before it: waiting for it costs no CPU)."""
        now = time.monotonic_ns()
        self.start_late = max(0.0, (now - start_at_monotonic_ns) / 1e9)
        self._cpu0 = time.process_time()
        self._wall0 = max(now, start_at_monotonic_ns) / 1e9

    def end(self) -> None:
        self.cpu_seconds = time.process_time() - self._cpu0
        self.wall_seconds = max(0.0, time.monotonic_ns() / 1e9 - self._wall0)

    def to_dict(self) -> dict[str, float]:
        return {
            "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds,
            "start_late": self.start_late,
        }


def merge_shares(shares: list[HostShare]) -> LoadResult:
    """One result of the generators' results, losslessly (histograms, counts, status codes,
    error types, bytes, per-name results), with ``hosts`` listing each share.

    The generators started at one instant, so their measured windows coincide (within the
    start's error): the merged ``elapsed`` is the longest of them, and ``rps`` the total
    count over that common window; per-second rounds add up index by index.
    """
    merged = merge_results([s.result for s in shares])
    merged.workers = len(shares)
    merged.hosts = list(shares)
    return merged


def options_to_raw(opts: LoadOptions) -> dict[str, Any]:
    """A generator's options as plain data (what an execnet channel carries), in the form
    ``perf_load`` takes them: the generator validates them again with ``build_options``, under
    the same caps, before it sends anything."""
    mix: list[dict[str, Any]] = []
    for r in opts.mix:
        if r.body is not None:
            raise LoadOptionError(
                "body= factories cannot be sent to another process; give json= or data="
            )
        data = r.data if r.data is None or isinstance(r.data, (bytes, str)) else dict(r.data)
        mix.append(
            {
                "path": r.path,
                "method": r.method,
                "name": r.name,
                "headers": dict(r.headers),
                "json": r.json,
                "data": data,
                "weight": r.weight,
            }
        )
    raw: dict[str, Any] = {
        "users": opts.users,
        "think_time": opts.think_time,
        "warmup": opts.warmup,
        "timeout": opts.timeout,
        "mix": mix,
        "engine": opts.engine,
        "max_response_size": opts.max_response_size,
        "follow_redirects": opts.follow_redirects,
        "verify_tls": opts.verify_tls,
        "record": opts.record,
        "progress": opts.progress,
        "expect_errors": opts.expect_errors,
    }
    if opts.name is not None:
        raw["name"] = opts.name
    if opts.rate is not None:
        raw["rate"] = opts.rate
    if opts.duration is not None:
        raw["duration"] = opts.duration
    if opts.requests is not None:
        raw["requests"] = opts.requests
    if opts.expect_status is not None:
        raw["expect_status"] = sorted(opts.expect_status)
    return raw
