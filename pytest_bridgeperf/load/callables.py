"""Python callables as load targets: each call is one request, an exception is an error.

Async callables run as tasks on the run's event loop (one slot per user). Sync callables run in
``users`` threads that call them directly (no executor hand-off in the measured time); in the open
model each thread takes the next intended send time, as wrk2's connections do.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .engine import LATE_NS, Run
from .interrupts import TIMEOUT_SIGNAL, Deadline, StopSignal
from .options import LoadOptions
from .result import LoadResult, NameCollector

__all__ = ["AsyncCallableEngine", "run_sync_callable"]

perf_counter_ns = time.perf_counter_ns


class TaskSlot:
    """A user whose requests run as asyncio tasks (async callables, the aiohttp engine).

    Subclasses say how one request is sent (``_send``) and how its failures are named."""

    __slots__ = ("req", "run", "sent_ns", "start_ns", "task")

    #: seconds a user waits after a failed request before its next one (0: none)
    backoff = 0.0

    def __init__(self, run: Run) -> None:
        self.run = run
        self.req = 0
        self.start_ns = 0
        self.sent_ns = 0
        self.task: asyncio.Task[None] | None = None

    async def _send(self, req: int) -> tuple[int, int]:
        """Send request ``req``; return (status, bytes received)."""
        raise NotImplementedError

    def _error_kind(self, exc: Exception) -> str:
        return type(exc).__name__

    def begin(self, req: int, start_ns: int) -> None:
        self.req = req
        self.start_ns = start_ns
        self.sent_ns = perf_counter_ns()
        self.task = self.run.loop.create_task(self._do(req, start_ns))

    async def _do(self, req: int, start_ns: int) -> None:
        me = self.task
        try:
            status, nbytes = await self._send(req)
        except asyncio.CancelledError:
            if self.task is me and self.start_ns:  # cancelled by the end of the run
                self.start_ns = 0
            raise
        except Exception as exc:
            if self.task is me and self.start_ns:
                self.start_ns = 0
                self.run.fail(self, req, start_ns, self._error_kind(exc), backoff=self.backoff)
            return
        now = perf_counter_ns()
        if self.task is me and self.start_ns:
            self.start_ns = 0
            self.run.ok(self, req, start_ns, now, status, nbytes)

    def abort(self, kind: str) -> None:
        if self.start_ns:
            start, self.start_ns = self.start_ns, 0
            if self.task is not None:
                self.task.cancel()
            self.run.fail(self, self.req, start, kind)

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class AsyncSlot(TaskSlot):
    """A user calling an async callable: a call that returns is a 200, one that raises an error
    named by its exception type."""

    __slots__ = ("fn",)

    def __init__(self, run: Run, fn: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(run)
        self.fn = fn

    async def _send(self, req: int) -> tuple[int, int]:
        await self.fn()
        return 200, 0


class AsyncCallableEngine:
    def __init__(self, run: Run, fn: Callable[[], Awaitable[Any]]) -> None:
        self.run = run
        self.fn = fn

    async def open(self, users: int) -> list[AsyncSlot]:
        return [AsyncSlot(self.run, self.fn) for _ in range(users)]

    def close(self, slots: list[AsyncSlot]) -> None:
        for slot in slots:
            slot.close()


class _ThreadStats:
    __slots__ = ("collector", "done", "late", "sent")

    def __init__(self) -> None:
        self.collector = NameCollector()
        self.done: list[int] = []  # completion times (ns) for the per-round rates; errors negative
        self.sent = 0
        self.late = 0


def _sleep_until(deadline_ns: int, stop: threading.Event) -> bool:
    """Sleep coarsely, then spin the last stretch; False when stopped meanwhile."""
    while True:
        wait = deadline_ns - perf_counter_ns()
        if wait <= 0:
            return not stop.is_set()
        if stop.is_set():
            return False
        if wait > 2_000_000:
            stop.wait((wait - 1_000_000) / 1e9)
        else:
            time.sleep(0)


def run_sync_callable(
    fn: Callable[[], Any],
    options: LoadOptions,
    *,
    label: str,
    progress: Callable[[str | None], None] | None = None,
    start_ns: int | None = None,
    deadline: Deadline | None = None,
    stop: StopSignal | None = None,
) -> LoadResult:
    """Load-test a sync callable with ``options.users`` threads. ``deadline`` cuts the run
    short; ``stop`` ends it at once (the test's timeout)."""
    o = options
    halted: list[str] = []  # why the run was cut short
    start = start_ns if start_ns is not None else perf_counter_ns()
    measure_start = start + int(o.warmup * 1e9)
    end = measure_start + int(o.run_length * 1e9)
    if deadline is not None and deadline.perf_counter_ns() < end:
        end = max(start, deadline.perf_counter_ns())
        halted.append(deadline.reason)
    threads_stop = threading.Event()
    timeout_ns = int(o.timeout * 1e9)
    interval = 1e9 / o.rate if o.rate else 0.0
    sequence = itertools.count()
    remaining = [o.requests if o.requests is not None else -1]
    lock = threading.Lock()
    stats = [_ThreadStats() for _ in range(o.users)]
    errors: list[BaseException] = []

    def take() -> bool:
        with lock:
            if remaining[0] == 0:
                return False
            if remaining[0] > 0:
                remaining[0] -= 1
            return True

    # Open model: a call sent for an intended time inside the window counts, with its latency
    # from that time, even when it ends after the window (the generator or the system fell
    # behind). Dropping those calls hid the worst latencies: at load average ~10 on 2 cores a
    # starved user thread made all 100 calls of a 0.5 s, 200/s run after the window, and the
    # run reported count 0 with sent 100.
    late_counts = o.rate is not None

    def user(st: _ThreadStats) -> None:
        c = st.collector
        lat = c.lat
        while not threads_stop.is_set():
            if o.rate is not None:
                i = next(sequence)
                origin = start + int(i * interval)
                if origin >= end:
                    return
                if origin >= measure_start and not take():
                    return
                if not _sleep_until(origin, threads_stop):
                    return
                sent = perf_counter_ns()
            else:
                sent = origin = perf_counter_ns()
                if sent >= end:
                    return
                if sent >= measure_start and not take():
                    return
            measured = origin >= measure_start
            if measured:
                st.sent += 1
                if sent - origin > LATE_NS:
                    st.late += 1
            try:
                fn()
            except Exception as exc:
                now = perf_counter_ns()
                if measured and (now <= end or late_counts):
                    c.error(type(exc).__name__)
                    st.done.append(-now)
            except BaseException as exc:  # KeyboardInterrupt/SystemExit raised by the callable
                errors.append(exc)
                threads_stop.set()
                return
            else:
                now = perf_counter_ns()
                if measured and (now <= end or late_counts):
                    if now - sent > timeout_ns:
                        c.error("TimeoutError")
                        st.done.append(-now)
                    else:
                        lat.append(now - origin)
                        c.count += 1
                        c.status[200] = c.status.get(200, 0) + 1
                        st.done.append(now)
            if o.think_time and not threads_stop.wait(o.think_time):
                continue

    threads = [
        threading.Thread(target=user, args=(st,), name=f"perf_load-user-{i}", daemon=True)
        for i, st in enumerate(stats)
    ]
    from ..tracing import timing_distortion
    from .runner import quiet_gc

    distorted = timing_distortion()  # in this thread; coverage traces the users' threads alike
    interrupted = False
    shown = False
    next_progress = start + 2_000_000_000

    def on_stop() -> None:
        halted.insert(0, TIMEOUT_SIGNAL)
        threads_stop.set()

    unregister = stop.on_fire(on_stop) if stop is not None else None
    with quiet_gc():
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                now = perf_counter_ns()
                if now >= end or (halted and halted[0] == TIMEOUT_SIGNAL):
                    break
                if progress is not None and now >= next_progress:
                    count = sum(s.collector.count for s in stats)
                    elapsed_s = (now - start) / 1e9
                    progress(f"[perf_load {label}: {elapsed_s:.1f} s, {count:,} calls]")
                    shown = True
                    next_progress = now + 500_000_000
                threads[0].join(min(0.05, max(0.0, (end - now) / 1e9)))
                if not threads[0].is_alive():
                    threads.sort(key=lambda t: not t.is_alive())
        except KeyboardInterrupt:
            interrupted = True
        finally:
            threads_stop.set()
            if unregister is not None:
                unregister()
        stopped_ns = perf_counter_ns()
    stopped_by = (
        halted[0] if halted and (halted[0] == TIMEOUT_SIGNAL or stopped_ns >= end) else None
    )
    # calls in flight at the end are not counted, but the run waits for them (up to the
    # request timeout) so that the code under test is not still running after it; after a
    # Ctrl-C, only briefly
    grace = time.monotonic() + (min(1.0, o.timeout) if interrupted or stopped_by else o.timeout)
    for t in threads:
        t.join(max(0.0, grace - time.monotonic()))
    unfinished = sum(t.is_alive() for t in threads)
    if progress is not None and shown:
        progress(None)
    if errors and not isinstance(errors[0], KeyboardInterrupt):
        raise errors[0]
    interrupted = interrupted or any(isinstance(e, KeyboardInterrupt) for e in errors)

    total = NameCollector()
    done: list[int] = []
    sent = late = 0
    for st in stats:
        c = st.collector
        c.fold()
        total.count += c.count
        total.errors += c.errors
        for kind, n in c.error_types.items():
            total.error_types[kind] = total.error_types.get(kind, 0) + n
        for status, n in c.status.items():
            total.status[status] = total.status.get(status, 0) + n
        done.extend(st.done)
        sent += st.sent
        late += st.late
    from .result import merged_histogram

    total.histogram = merged_histogram([st.collector.histogram for st in stats])
    measured_end = min(stopped_ns, end)
    elapsed = (measured_end - measure_start) / 1e9
    if o.duration is not None and not interrupted and not stopped_by and stopped_ns >= end:
        elapsed = o.duration
    length = o.duration if o.duration is not None else 1.0
    round_ns = int((1.0 if length >= 10 else max(0.1, length / 10)) * 1e9)
    n_rounds = int(max(0, measured_end - measure_start) // round_ns)
    rounds = [[0, 0] for _ in range(n_rounds)]
    for t_ns in done:
        index = (abs(t_ns) - measure_start) // round_ns
        if 0 <= index < n_rounds:
            rounds[index][0] += 1
            if t_ns < 0:
                rounds[index][1] += 1
    intended = 0
    if o.rate is not None:
        last = min(measured_end, end)
        first_i = max(0, int((measure_start - start) / interval - 1e-9) + 1) if o.warmup else 0
        last_i = int((last - start) / interval - 1e-9)
        intended = max(0, last_i - first_i + 1)
        if o.requests is not None:
            intended = min(intended, o.requests)
    part = LoadResult(
        name=label,
        histogram=total.histogram,
        count=total.count,
        errors=total.errors,
        elapsed=max(elapsed, 0.0),
        status_counts=dict(total.status),
        error_types=dict(total.error_types),
        model=o.model,
        users=o.users,
        round_length=round_ns / 1e9,
        rounds=[(c, e) for c, e in rounds],
        target=label,
    )
    result = LoadResult(**{**part.__dict__, "by_name": {label: part}})
    result.target_rate = o.rate
    result.sent = sent
    result.late = late
    result.intended = intended
    result.dropped = max(0, intended - sent) if o.rate is not None else 0
    result.unfinished = unfinished
    result.interrupted = interrupted
    result.distorted = distorted
    result.stopped_by = stopped_by
    return result
