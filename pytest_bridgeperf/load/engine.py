"""The run controller shared by every engine: closed and open models, length, warmup, rounds,
timeouts, progress and interruption.

A *slot* is one virtual user (closed model) or one connection of the pool (open model). Engines
provide slots with ``begin(req, start_ns)`` and ``abort(kind)``; a slot reports back with
:meth:`Run.ok` / :meth:`Run.fail`, and the controller decides what it does next. Everything runs
on one event loop; the hot path is callbacks only (no coroutine per request for HTTP).

Open model (``rate=``): request *i* is intended at ``start + i / rate``; its latency is measured
from that intended time, not from when a connection became free (wrk2's correction for
coordinated omission). Sends that wait for a free connection are queued and counted as late.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from ..tracing import timing_distortion
from ..units import format_duration
from .interrupts import Deadline
from .options import LoadOptions
from .result import LoadResult, NameCollector

__all__ = ["LATE_NS", "LoadRateError", "Run", "Slot"]

perf_counter_ns = time.perf_counter_ns

#: An open-model send is *late* when it leaves more than this after its intended time.
LATE_NS = 1_000_000
#: The open model fails when fewer than this fraction of the intended sends went out.
MIN_ACHIEVED = 0.95
_SPIN_NS = 2_000_000  # below this wait, poll the loop instead of sleeping (timers are ~1 ms)
_PROGRESS_AFTER = 2.0
_PROGRESS_EVERY = 0.5


class LoadRateError(AssertionError):
    """The open model could not send at the requested rate; ``.result`` holds what was measured."""

    def __init__(self, message: str, result: LoadResult) -> None:
        super().__init__(message)
        self.result = result


class Slot(Protocol):
    start_ns: int  # latency origin of the request in flight, 0 when idle
    sent_ns: int  # when it was actually sent (for the timeout)

    def begin(self, req: int, start_ns: int) -> None: ...
    def abort(self, kind: str) -> None: ...


ProgressCallback = Callable[[str | None], None]


class Run:
    """One process's run. Engines call :meth:`ok`/:meth:`fail`; :meth:`wait` drives the end."""

    def __init__(
        self,
        options: LoadOptions,
        loop: asyncio.AbstractEventLoop,
        *,
        label: str,
        progress: ProgressCallback | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.options = options
        self.deadline = deadline
        #: why the run was cut short before its end (the deadline's reason), None otherwise
        self.stopped_by: str | None = None
        self.loop = loop
        self.label = label
        self.progress = progress
        self.labels = [r.label for r in options.mix]
        self.collectors = [NameCollector() for _ in options.mix]
        self.schedule = options.schedule()
        self.schedule_len = len(self.schedule)
        self.seq = 0
        self.expect = options.expect_status
        self.think = options.think_time
        self.timeout_ns = int(options.timeout * 1e9)
        self.open = options.rate is not None
        self.slots: list[Slot] = []
        self.idle: list[Slot] = []
        self.pending: deque[tuple[int, int]] = deque()
        self.max_pending = 100_000
        self.stopped = False
        self.interrupted = False
        self.fatal: BaseException | None = None
        self.stop_ns = 0
        self.inflight = 0
        self.unfinished = 0  # in flight when the measured window closed: never counted
        self._drain: asyncio.TimerHandle | None = None
        self.remaining = options.requests if options.requests is not None else -1
        self.sent = 0
        self.late = 0
        self.queued = 0
        self.dropped = 0
        self.intended = 0
        self.measure_start_ns = 0
        self.start_ns = 0
        self.end_ns = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self.round_ns = 0
        self._round_marks: list[tuple[int, int]] = []
        self._round_end = 0
        self._handles: list[asyncio.TimerHandle | asyncio.Handle] = []
        self._progress_shown = False
        self._progress_mark = (0, 0)
        self.interval_ns = 1e9 / options.rate if options.rate else 0.0
        #: closed model, no think time, bounded by duration, not stopped: engines may inline the
        #: next send
        self.hot = not self.open and not self.think and self.remaining < 0
        self._issued = 0
        #: a tracer or profiler active when the run started (its timings are not comparable)
        self.distorted: str | None = None
        #: engines that count in bulk (the fast HTTP engine's logs) fold into the collectors
        #: here before anyone reads them
        self.flushers: list[Callable[[], None]] = []

    # ------------------------------------------------------------------------------ reporting
    def ok(self, slot: Slot, req: int, start_ns: int, now: int, status: int, nbytes: int) -> None:
        """A response arrived (any status)."""
        self.inflight -= 1
        if self.stopped:  # draining: the measured window is closed
            if self.inflight <= 0:
                self._finish()
            return
        if start_ns >= self.measure_start_ns:
            c = self.collectors[req]
            c.lat.append(now - start_ns)
            c.count += 1
            c.status[status] = c.status.get(status, 0) + 1
            c.bytes += nbytes
            # by default a success is 2xx/3xx; the only 1xx that ends a request is 101
            # Switching Protocols, which a load test cannot follow
            if (not 200 <= status < 400) if self.expect is None else (status not in self.expect):
                c.errors += 1
                kind = f"HTTP {status}"
                c.error_types[kind] = c.error_types.get(kind, 0) + 1
        self.next(slot)

    def fail(self, slot: Slot, req: int, start_ns: int, kind: str, *, backoff: float = 0.0) -> None:
        """The request in flight failed without a response (timeout, connection error...)."""
        self.inflight -= 1
        if self.stopped:
            if self.inflight <= 0:
                self._finish()
            return
        if start_ns >= self.measure_start_ns:
            self.collectors[req].error(kind)
        if backoff and not self.stopped:
            self.loop.call_later(backoff, self.next, slot)
        else:
            self.next(slot)

    # ------------------------------------------------------------------------------ scheduling
    def next(self, slot: Slot) -> None:
        """``slot`` is free: give it work (or park it)."""
        if self.stopped:
            return
        if self.open:
            if self.pending:
                req, intended = self.pending.popleft()
                self._send_open(slot, req, intended)
            else:
                self.idle.append(slot)
            return
        if self.think:
            self.loop.call_later(self.think, self._closed_begin, slot)
        else:
            self._closed_begin(slot)

    def _closed_begin(self, slot: Slot) -> None:
        if self.stopped:
            return
        now = perf_counter_ns()
        if now >= self.measure_start_ns:
            if self.remaining == 0:
                if self.inflight == 0:
                    self.stop()
                return
            if self.remaining > 0:
                self.remaining -= 1
            self.sent += 1
        req = self.schedule[self.seq % self.schedule_len]
        self.seq += 1
        self.inflight += 1
        slot.begin(req, now)

    def _send_open(self, slot: Slot, req: int, intended: int) -> None:
        now = perf_counter_ns()
        if intended >= self.measure_start_ns:
            self.sent += 1
            if now - intended > LATE_NS:
                self.late += 1
        self.inflight += 1
        slot.begin(req, intended)

    def _pump(self) -> None:
        if self.stopped:
            return
        now = perf_counter_ns()
        i = self._issued
        start = self.start_ns
        interval = self.interval_ns
        due = start + int(i * interval)
        end = self.end_ns
        while due <= now and due < end:
            if due >= self.measure_start_ns:
                if self.remaining == 0:
                    self._issued = i
                    self._stop_when_drained()
                    return
                if self.remaining > 0:
                    self.remaining -= 1
                self.intended += 1
            req = self.schedule[i % self.schedule_len]
            if self.idle:
                self._send_open(self.idle.pop(), req, due)
            else:
                if due >= self.measure_start_ns:
                    self.queued += 1
                self.pending.append((req, due))
                if len(self.pending) > self.max_pending:
                    _, old = self.pending.popleft()
                    if old >= self.measure_start_ns:
                        self.dropped += 1
            i += 1
            due = start + int(i * interval)
        self._issued = i
        wait = due - now
        if wait > _SPIN_NS:
            self.loop.call_later((wait - _SPIN_NS // 2) / 1e9, self._pump)
        else:
            self.loop.call_soon(self._pump)

    def _stop_when_drained(self) -> None:
        """``requests=N`` in the open model: every send issued, wait for the answers."""
        self._check_drained_open()

    def _check_drained_open(self) -> None:
        if self.inflight == 0 and not self.pending:
            self.stop()
        elif not self.stopped:
            self.loop.call_later(0.001, self._check_drained_open)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, slots: Sequence[Slot], start_ns: int | None = None) -> None:
        o = self.options
        self.slots = list(slots)
        self.distorted = timing_distortion()
        now = perf_counter_ns()
        self.start_ns = start_ns if start_ns is not None else now
        self.measure_start_ns = self.start_ns + int(o.warmup * 1e9)
        self.end_ns = self.measure_start_ns + int(o.run_length * 1e9)
        length = o.duration if o.duration is not None else 1.0
        round_s = 1.0 if length >= 10 else max(0.1, length / 10)
        self.round_ns = int(round_s * 1e9)
        self._round_end = self.measure_start_ns + self.round_ns
        self._round_marks = [(0, 0) for _ in self.collectors]
        loop = self.loop
        self._handles.append(loop.call_at(self._loop_time(self._round_end), self._round))
        self._handles.append(loop.call_at(self._loop_time(self.end_ns), self._end))
        if self.deadline is not None:
            cut_ns = self.deadline.perf_counter_ns()
            if cut_ns < self.end_ns:
                self._handles.append(loop.call_at(self._loop_time(cut_ns), self._cut))
        sweep = max(0.005, min(0.05, o.timeout / 4))
        self._sweep_every = sweep
        self._handles.append(loop.call_later(sweep, self._sweep))
        if self.progress is not None:
            self._progress_mark = (0, self.start_ns)
            self._handles.append(
                loop.call_at(
                    self._loop_time(self.start_ns + int(_PROGRESS_AFTER * 1e9)), self._tick
                )
            )
        if self.start_ns > now:  # workers start together at an agreed instant
            self._handles.append(loop.call_at(self._loop_time(self.start_ns), self._go))
        else:
            self._go()

    def _go(self) -> None:
        if perf_counter_ns() < self.start_ns:  # loop timers are coarse (1 ms): wait it out
            self.loop.call_soon(self._go)
            return
        if self.open:
            self.idle = list(reversed(self.slots))
            self._pump()
        else:
            for slot in self.slots:
                self._closed_begin(slot)

    def _loop_time(self, at_ns: int) -> float:
        return self.loop.time() + (at_ns - perf_counter_ns()) / 1e9

    def flush(self) -> None:
        for flush in self.flushers:
            flush()

    def _round(self) -> None:
        if self.stopped:
            return
        self.flush()
        for i, c in enumerate(self.collectors):
            count, errors = self._round_marks[i]
            c.rounds.append((c.count - count, c.errors - errors))
            self._round_marks[i] = (c.count, c.errors)
        self._round_end += self.round_ns
        if self._round_end <= self.end_ns:
            self._handles.append(self.loop.call_at(self._loop_time(self._round_end), self._round))

    def _sweep(self) -> None:
        if self.stopped:
            return
        limit = perf_counter_ns() - self.timeout_ns
        for slot in self.slots:
            if slot.start_ns and slot.sent_ns and slot.sent_ns < limit:
                slot.abort("TimeoutError")
        self._handles.append(self.loop.call_later(self._sweep_every, self._sweep))

    def _tick(self) -> None:
        if self.stopped or self.progress is None:
            return
        self._progress_shown = True
        self.progress(self.progress_line())
        self._handles.append(self.loop.call_later(_PROGRESS_EVERY, self._tick))

    def progress_line(self) -> str:
        self.flush()
        now = perf_counter_ns()
        count = sum(c.count for c in self.collectors)
        errors = sum(c.errors for c in self.collectors)
        last_count, last_ns = self._progress_mark
        rate = (count - last_count) / ((now - last_ns) / 1e9) if last_ns else math.nan
        self._progress_mark = (count, now)
        recent: list[int] = []
        for c in self.collectors:
            tail = c.lat[-5000:]
            recent.extend(tail)
        recent.sort()
        p95 = format_duration(recent[int(len(recent) * 0.95)] / 1e9) if recent else "-"
        phase = "warmup " if now < self.measure_start_ns else ""
        elapsed = (now - self.start_ns) / 1e9
        total = (self.end_ns - self.start_ns) / 1e9
        rate_text = f"{rate:,.0f}/s" if math.isfinite(rate) else "-"
        return (
            f"[perf_load {self.label}: {phase}{elapsed:.1f}/{total:.1f} s, {count:,} req, "
            f"{rate_text}, p95 {p95}, errors {errors}]"
        )

    def _end(self) -> None:
        if perf_counter_ns() < self.end_ns:  # loop timers are coarse (1 ms): wait it out
            self._handles.append(self.loop.call_soon(self._end))
            return
        self.stop(drain=True)

    def stop(self, *, drain: bool = False) -> None:
        """Close the measured window: nothing more is sent or counted. With ``drain`` the run
        ends once the requests in flight have answered (at most ``timeout`` later), so the
        server is not left working on them after the run (and after a ``perf_queries`` block
        around it); otherwise at once."""
        if self.stopped:
            return
        self.stopped = True
        self.hot = False  # engines test only this flag on their hot path
        self.stop_ns = perf_counter_ns()
        self.unfinished = self.inflight
        for handle in self._handles:
            handle.cancel()
        if drain and self.inflight > 0:
            self._drain = self.loop.call_later(self.options.timeout, self._finish)
        else:
            self._finish()

    def _cut(self) -> None:
        """The deadline came before the end."""
        if self.deadline is not None:
            self.halt(self.deadline.reason)

    def halt(self, reason: str) -> None:
        """End the run now, cut short by ``reason`` (a deadline, the test's timeout): nothing
        is waited for, and the result says why (``stopped_by``)."""
        if self.stopped_by is None and not self.done.done():
            self.stopped_by = reason
        self.stop()
        self._finish()

    def _finish(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def abort_with(self, exc: BaseException) -> None:
        """A user-supplied piece (body factory) raised: end the run and re-raise it."""
        if self.fatal is None:
            self.fatal = exc
        self.stop()
        self._finish()

    def interrupt(self) -> None:
        """Ctrl-C: end now, also when the run is waiting for its last answers."""
        self.interrupted = True
        self.stop()
        self._finish()

    async def wait(self) -> None:
        try:
            await self.done
        except asyncio.CancelledError:
            # Ctrl-C under asyncio.Runner cancels the main task: keep what was measured
            self.interrupted = True
            self.stop()
            self._finish()
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        if self.progress is not None and self._progress_shown:
            self.progress(None)

    # ------------------------------------------------------------------------------ result
    def result(self, *, target: str, users: int) -> LoadResult:
        self.flush()
        o = self.options
        stopped_at = self.stop_ns or perf_counter_ns()
        elapsed = max(0.0, (min(stopped_at, self.end_ns) - self.measure_start_ns) / 1e9)
        ended = not self.interrupted and self.stopped_by is None
        if o.duration is not None and ended and stopped_at >= self.end_ns:
            elapsed = o.duration  # the timer fired a hair late: the run lasted what was asked
        dropped = self.dropped + sum(1 for _, t in self.pending if t >= self.measure_start_ns)
        round_s = self.round_ns / 1e9
        parts: dict[str, LoadResult] = {}
        for label, c in zip(self.labels, self.collectors, strict=True):
            c.fold()
            parts[label] = LoadResult(
                name=label,
                histogram=c.histogram,
                count=c.count,
                errors=c.errors,
                elapsed=elapsed,
                status_counts=dict(c.status),
                error_types=dict(c.error_types),
                bytes_received=c.bytes,
                model=o.model,
                users=users,
                round_length=round_s,
                rounds=list(c.rounds),
                target=target,
            )
        from .result import merge_results

        if len(parts) == 1:
            total = next(iter(parts.values()))
            total = merge_results([total])
        else:
            total = merge_results(list(parts.values()))
            total.rounds = _sum_rounds([p.rounds for p in parts.values()])
        total.name = self.label
        total.by_name = parts
        total.users = users
        total.workers = 1
        total.target_rate = o.rate
        total.sent = self.sent
        total.late = self.late
        total.dropped = dropped
        total.unfinished = self.unfinished
        total.interrupted = self.interrupted
        total.elapsed = elapsed
        total.target = target
        total.queued = self.queued
        total.intended = self.intended
        total.distorted = self.distorted
        total.stopped_by = self.stopped_by
        total.measured_ns = (self.measure_start_ns, min(stopped_at, self.end_ns))
        return total


def _sum_rounds(all_rounds: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[int, int]]:
    n = min(len(r) for r in all_rounds) if all_rounds else 0
    return [(sum(r[i][0] for r in all_rounds), sum(r[i][1] for r in all_rounds)) for i in range(n)]


def check_rate(result: LoadResult) -> None:
    """Open model: fail when the generator (or the connection pool) could not keep the rate."""
    intended, queued = result.intended, result.queued
    if result.target_rate is None or result.interrupted or intended == 0:
        return
    if result.sent >= MIN_ACHIEVED * intended:
        return
    why = (
        f"{queued} sends waited for a free connection (raise users=, now {result.users})"
        if queued > intended * 0.05
        else "the load generator could not keep up (use workers= or a lower rate=)"
    )
    raise LoadRateError(
        f"open model: sent {result.sent} of {intended} intended requests "
        f"({result.sent / intended * 100:.1f} %, {result.achieved_rate:,.0f}/s of the target "
        f"{result.target_rate:g}/s); below {MIN_ACHIEVED * 100:.0f} % the measured latencies "
        f"would not describe the requested load: {why}. Late sends: {result.late}, "
        f"dropped: {result.dropped}.",
        result,
    )
