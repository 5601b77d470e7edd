"""How a load run ends early: Ctrl-C, a deadline, and a SIGALRM timeout (pytest-timeout's
``signal`` method) that must reach the test rather than whatever callback happened to run.

Shared by the runner, the engines and the worker processes; no pytest here.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = [
    "TIMEOUT_SIGNAL",
    "Deadline",
    "StopSignal",
    "Stops",
    "hold_alarm",
    "mark_worker_process",
    "sigint_stops",
]

#: ``result.stopped_by`` when a held SIGALRM (pytest-timeout's signal method) ended the run
TIMEOUT_SIGNAL = "the test's timeout (SIGALRM)"

#: After a held SIGALRM, the run gets this long to end by itself before the original handler is
#: called where the signal lands (a hang in the run's own teardown must not defeat the timeout).
SECOND_ALARM_S = 2.0


@dataclass(frozen=True)
class Deadline:
    """The run must have ended by ``at`` (``time.monotonic()`` seconds, a clock shared by the
    worker processes); ``reason`` says who set it, for the failure message."""

    at: float
    reason: str

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def perf_counter_ns(self) -> int:
        """The deadline on the ``perf_counter_ns`` clock the engines time with."""
        return time.perf_counter_ns() + int(self.remaining() * 1e9)


@dataclass
class StopSignal:
    """Stops whatever part of a run is going on (the engine's run, the worker processes, the
    threads of a sync callable) when it fires; parts register as they start."""

    fired: bool = False
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    def on_fire(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback``; returns a function that unregisters it. Called at once when
        the signal already fired."""
        self._callbacks.append(callback)
        if self.fired:
            callback()

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def fire(self) -> None:
        self.fired = True
        for callback in list(self._callbacks):
            callback()


class Stops:
    """What may end a run early, handed down to every part of it."""

    __slots__ = ("deadline", "signal")

    def __init__(self, deadline: Deadline | None = None, signal: StopSignal | None = None) -> None:
        self.deadline = deadline
        self.signal = signal if signal is not None else StopSignal()


class _Process:
    #: Set in worker processes: there a repeated Ctrl-C (the terminal's plus the parent's
    #: forwarded one) must not turn into a hard interrupt.
    worker = False


def mark_worker_process() -> None:
    _Process.worker = True


@contextmanager
def sigint_stops(on_interrupt: Callable[[], None], loop: asyncio.AbstractEventLoop | None) -> Any:
    """First Ctrl-C ends the run with partial results; a second one interrupts for real."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    hits = [0]

    def handler(signum: int, frame: Any) -> None:
        hits[0] += 1
        if hits[0] > 1 and not _Process.worker:
            raise KeyboardInterrupt
        if loop is not None:
            loop.call_soon_threadsafe(on_interrupt)
        else:
            on_interrupt()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def hold_alarm(stop: StopSignal, loop: asyncio.AbstractEventLoop | None) -> Iterator[None]:
    """Hold a SIGALRM that arrives during the run, and deliver it in the caller's frame.

    pytest-timeout's ``signal`` method raises its failure from a SIGALRM handler, in whatever
    Python code runs when the signal lands — during a load run that is an aiohttp handler task
    or an engine callback, where the exception ends one task ("Task exception was never
    retrieved") and the run goes on, so the test passes. Held here, the alarm stops the run
    instead (``stop`` fires); once the run has cleaned up, the original handler is called from
    this frame, and its exception reaches the test. If the run has not ended
    ``SECOND_ALARM_S`` later, a second alarm calls the original handler where it lands.
    """
    alarm = getattr(signal, "SIGALRM", None)
    if alarm is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(alarm)
    if not callable(previous):  # SIG_DFL / SIG_IGN: no timeout handler to deliver to
        yield
        return
    original: Callable[[int, FrameType | None], Any] = previous
    held: list[FrameType | None] = []
    delivered = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        if held:  # the second alarm: the run did not end in time
            signal.signal(signum, original)
            delivered[0] = True
            original(signum, frame)
            return
        held.append(frame)
        signal.setitimer(signal.ITIMER_REAL, SECOND_ALARM_S)
        if loop is not None:
            loop.call_soon_threadsafe(stop.fire)
        else:
            stop.fire()

    signal.signal(alarm, handler)
    try:
        yield
    finally:
        if signal.getsignal(alarm) is handler:
            signal.signal(alarm, original)
        if held and not delivered[0]:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the second alarm is not needed
            delivered[0] = True
            original(alarm, held[0])
