"""CPU and memory of the server and of the load generator during a run: ``result.server``,
``result.generator``.

A daemon thread samples about ten times a second, off the event loop that sends the requests:
cumulative CPU time and resident memory of

* the **server**: a child process serving the app (``serve="process"``, or the process found
  listening on a loopback URL), read with psutil; or, for an app served on a thread of this
  process, this process's CPU time minus the generator's thread and the sampler's own;
* the **generator**: the thread running the run's event loop (its own CPU clock,
  ``pthread_getcpuclockid``), or the whole process, plus its worker processes (``workers=``).

CPU is in percent of one core (100 % = one core busy all the time, as ``top`` shows it);
averages cover the measured phase (warm-up excluded). A sample costs ~50 µs of the sampler
thread (psutil reads ``/proc``); the clocks of this process cost a system call each.
psutil is optional (the ``[memory]`` extra): without it, what this process measures about
itself (thread clocks, ``/proc/self/statm``) is still reported and other processes are not.

No pytest here.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GENERATOR_SATURATED",
    "LoadGeneratorSaturated",
    "ResourceSampler",
    "ResourceUsage",
    "Side",
    "describe_usage",
]

#: The generator is *saturated* when its busiest unit (the loop's thread, a worker process)
#: averages more than this share of one core over the measured phase: its own speed, not the
#: server's, then sets the pace.
GENERATOR_SATURATED = 90.0
SAMPLE_EVERY = 0.1


class LoadGeneratorSaturated(UserWarning):
    """The load generator kept a core busy: the run measured the generator as much as the app."""


@dataclass(frozen=True)
class ResourceUsage:
    """CPU and memory of one side of a run (the server, or the load generator)."""

    #: mean CPU over the measured phase, percent of one core
    cpu: float
    #: the busiest sampling interval (~100 ms), percent of one core
    cpu_peak: float
    #: the highest resident set size sampled, bytes (None when it could not be read)
    rss_peak: int | None
    #: CPU per sampling interval of the measured phase, percent of one core
    samples: tuple[float, ...] = ()
    #: processes counted (this one, children, a serving child)
    processes: int = 1
    #: what else the figures include (the generator sharing the process or the thread)
    shared: str | None = None
    #: the busiest single unit (thread or process) of this side, percent of one core
    busiest: float = math.nan
    #: the span the CPU figures cover: first and last sample in the measured phase
    #: (``perf_counter_ns``)
    window: tuple[int, int] | None = None

    def summary(self) -> str:
        text = f"CPU {self.cpu:.0f} %"
        if self.rss_peak is not None:
            text += f", RSS peak {_size(self.rss_peak)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "cpu_peak": self.cpu_peak,
            "rss_peak": self.rss_peak,
            "samples": list(self.samples),
            "processes": self.processes,
            "shared": self.shared,
            "busiest": self.busiest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceUsage:
        return cls(
            cpu=float(data["cpu"]),
            cpu_peak=float(data.get("cpu_peak", data["cpu"])),
            rss_peak=data.get("rss_peak"),
            samples=tuple(float(v) for v in data.get("samples", ())),
            processes=int(data.get("processes", 1)),
            shared=data.get("shared"),
            busiest=float(data.get("busiest", math.nan)),
        )


def _size(value: float) -> str:
    from ..units import format_size

    return format_size(value)


def describe_usage(server: Any, generator: Any) -> str:
    """``server CPU 85 %, RSS peak 120 MB; generator CPU 40 %`` from usages or their dicts."""
    parts = []
    shown_rss: int | None = None
    for label, usage in (("server", server), ("generator", generator)):
        if isinstance(usage, Mapping):
            usage = ResourceUsage.from_dict(usage)
        if isinstance(usage, ResourceUsage):
            if usage.rss_peak is not None and usage.rss_peak == shown_rss:
                parts.append(f"{label} CPU {usage.cpu:.0f} %")  # one process: its RSS is shown
            else:
                parts.append(f"{label} {usage.summary()}")
            shown_rss = usage.rss_peak
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# what a side is made of


@dataclass(frozen=True)
class Side:
    """What to count for one side of the run."""

    #: other processes (and their children), e.g. the serving child
    pids: tuple[int, ...] = ()
    #: this whole process's CPU (less ``minus_threads`` and the sampler's thread)
    this_process: bool = False
    #: threads of this process (``threading.get_ident()``), by their CPU clocks
    threads: tuple[int, ...] = ()
    minus_threads: tuple[int, ...] = ()
    #: this process's child processes, except the ``exclude`` pids (the load workers)
    children: bool = False
    exclude: tuple[int, ...] = ()
    #: RSS of this process counts for this side
    own_rss: bool = False
    shared: str | None = None


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # optional: this process still measures itself
        return None
    return psutil


def _thread_clock(ident: int) -> int | None:
    getter = getattr(time, "pthread_getcpuclockid", None)
    if getter is None:
        return None
    try:
        clock: int = getter(ident)
    except (OSError, ValueError):
        return None
    return clock


def _own_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Sample:
    t: int  # perf_counter_ns when the generator's CPU was read
    server: float  # cumulative CPU seconds
    generator: float
    units: dict[str, float]  # cumulative CPU seconds of each generator unit
    server_rss: int | None
    generator_rss: int | None
    server_t: int = -1  # perf_counter_ns when the server's CPU was read (-1: at ``t``)

    @property
    def st(self) -> int:
        return self.t if self.server_t < 0 else self.server_t


@dataclass
class _Reader:
    """Reads the cumulative CPU seconds and the RSS of one side."""

    side: Side
    sampler_ident: int
    psutil: Any
    clocks: dict[int, int] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)  # per thread: a clock gone stays put
    procs: dict[int, Any] = field(default_factory=dict)

    def _thread_seconds(self, ident: int) -> float:
        clock = self.clocks.get(ident)
        if clock is None:
            found = _thread_clock(ident)
            if found is None:
                return self.last.get(ident, 0.0)
            clock = self.clocks[ident] = found
        try:
            value = time.clock_gettime(clock)
        except OSError:  # the thread ended
            return self.last.get(ident, 0.0)
        self.last[ident] = value
        return value

    def _process(self, pid: int) -> Any:
        proc = self.procs.get(pid)
        if proc is None:
            proc = self.procs[pid] = self.psutil.Process(pid)
        return proc

    def _tree(self, pid: int) -> list[Any]:
        try:
            root = self._process(pid)
            return [root, *root.children(recursive=True)]
        except Exception:  # gone, or not ours to read
            return []

    def read(self, units: dict[str, float] | None = None) -> tuple[float, int, int | None, int]:
        """(cumulative CPU seconds, when they were read: perf_counter_ns, RSS bytes or None,
        processes counted).

        The CPU clocks are read first and time-stamped at once; the RSS after. Reading a file
        (``/proc``, psutil) releases the GIL, and a thread that gives it up waits to get it
        back behind every busy Python thread (an app spinning on the CPU): a time stamp taken
        after those reads could be late by far more than the 100 ms between samples, and the
        CPU rate computed with it wrong by as much."""
        side = self.side
        cpu = 0.0
        rss: int | None = None
        count = 0
        if side.this_process:
            cpu += time.process_time()
            cpu -= sum(self._thread_seconds(t) for t in side.minus_threads)
            cpu -= self._thread_seconds(self.sampler_ident)
            count += 1
            if units is not None:
                units["this process"] = cpu
        for ident in side.threads:
            value = self._thread_seconds(ident)
            cpu += value
            if units is not None:
                units[f"thread {ident}"] = value
        read_procs: list[Any] = []
        if self.psutil is not None:
            pids = list(side.pids)
            if side.children:
                try:
                    kids = self.psutil.Process().children(recursive=False)
                except Exception:
                    kids = []
                pids += [k.pid for k in kids if k.pid not in side.exclude]
            for pid in pids:
                tree_cpu = 0.0
                for proc in self._tree(pid):
                    try:
                        times = proc.cpu_times()
                    except Exception:  # it ended between the listing and the read
                        continue
                    tree_cpu += times.user + times.system
                    if pid in side.pids:
                        read_procs.append(proc)
                    count += 1
                cpu += tree_cpu
                if units is not None:
                    units[f"process {pid}"] = tree_cpu
        stamp = time.perf_counter_ns()
        if side.own_rss:
            rss = _own_rss()
            if rss is None and self.psutil is not None:
                rss = self.psutil.Process().memory_info().rss
            count = max(count, 1)
        for proc in read_procs:
            try:
                mem = proc.memory_info().rss
            except Exception:  # it ended meanwhile
                continue
            rss = mem if rss is None else rss + mem
        return cpu, stamp, rss, count


class ResourceSampler:
    """Samples both sides from a daemon thread until :meth:`stop`; :meth:`usage` then gives
    the figures of a window (the measured phase)."""

    def __init__(self, server: Side | None, generator: Side) -> None:
        self.psutil = _psutil()
        if (
            server is not None
            and self.psutil is None
            and not (server.this_process or server.threads)
        ):
            server = None  # other processes are read with psutil only: unknown, not 0 %
        self.server = server
        self.generator = generator
        self.samples: list[_Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="perf_load-sampler", daemon=True)
        self._ready = threading.Event()
        self._readers: tuple[_Reader | None, _Reader] | None = None
        self.processes = {"server": 0, "generator": 0}
        self.error: str | None = None

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        self._ready.wait(2.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(2.0)

    def _loop(self) -> None:
        ident = threading.get_ident()
        server = _Reader(self.server, ident, self.psutil) if self.server is not None else None
        generator = _Reader(self.generator, ident, self.psutil)
        self._readers = (server, generator)
        try:
            self._take(server, generator)
            self._ready.set()
            while not self._stop.wait(SAMPLE_EVERY):
                self._take(server, generator)
            self._take(server, generator)
        except Exception as exc:  # never break the run for a measurement of its surroundings
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    def _take(self, server: _Reader | None, generator: _Reader) -> None:
        units: dict[str, float] = {}
        g_cpu, g_t, g_rss, g_count = generator.read(units)
        s_cpu, s_t, s_rss, s_count = server.read() if server is not None else (0.0, g_t, None, 0)
        if not units:
            units["generator"] = g_cpu
        self.processes = {
            "server": max(self.processes["server"], s_count),
            "generator": max(self.processes["generator"], g_count),
        }
        self.samples.append(_Sample(g_t, s_cpu, g_cpu, units, s_rss, g_rss, s_t))

    def usage(
        self, window: tuple[int, int] | None
    ) -> tuple[ResourceUsage | None, ResourceUsage | None]:
        """(server, generator) over ``window`` (perf_counter_ns; the whole sampling if None)."""
        samples = self.samples
        if len(samples) < 2:
            return None, None
        inside = samples
        if window is not None:
            start, end = window
            picked = [s for s in samples if start <= s.t <= end]
            if len(picked) >= 2:
                inside = picked
        server = None
        if self.server is not None:
            server = _usage(
                inside,
                samples,
                lambda s: s.server,
                lambda s: s.server_rss,
                self.processes["server"],
                self.server.shared,
                None,
                lambda s: s.st,
            )
        generator = _usage(
            inside,
            samples,
            lambda s: s.generator,
            lambda s: s.generator_rss,
            self.processes["generator"],
            self.generator.shared,
            _busiest(inside),
            lambda s: s.t,
        )
        return server, generator


def _usage(
    inside: list[_Sample],
    every: list[_Sample],
    cpu_of: Any,
    rss_of: Any,
    processes: int,
    shared: str | None,
    busiest: float | None,
    time_of: Any,
) -> ResourceUsage:
    first, last = inside[0], inside[-1]
    span = (time_of(last) - time_of(first)) / 1e9
    mean = (cpu_of(last) - cpu_of(first)) / span * 100 if span > 0 else math.nan
    per_interval = _intervals(inside, cpu_of, time_of)
    rss_values = [r for r in (rss_of(s) for s in every) if r is not None]
    return ResourceUsage(
        cpu=max(0.0, mean),
        cpu_peak=max(per_interval, default=max(0.0, mean)),
        rss_peak=max(rss_values) if rss_values else None,
        samples=tuple(round(v, 1) for v in per_interval),
        processes=processes,
        shared=shared,
        busiest=busiest if busiest is not None else max(0.0, mean),
        window=(time_of(first), time_of(last)),
    )


def _intervals(samples: Iterable[_Sample], cpu_of: Any, time_of: Any) -> list[float]:
    out: list[float] = []
    previous: _Sample | None = None
    for sample in samples:
        if previous is not None and time_of(sample) > time_of(previous):
            delta = cpu_of(sample) - cpu_of(previous)
            out.append(max(0.0, delta / ((time_of(sample) - time_of(previous)) / 1e9) * 100))
        previous = sample
    return out


def _busiest(samples: list[_Sample]) -> float:
    first, last = samples[0], samples[-1]
    span = (last.t - first.t) / 1e9
    if span <= 0:
        return math.nan
    rates = [
        (last.units[name] - first.units.get(name, 0.0)) / span * 100
        for name in last.units
        if name in first.units
    ]
    return max(rates, default=math.nan)


# ---------------------------------------------------------------------------------------------
# wiring a run


def thread_side(ident: int, *, shared: str | None = None) -> Side:
    """The generator as one thread of this process (its event loop's), and its workers."""
    return Side(threads=(ident,), children=True, own_rss=True, shared=shared)


def process_side(*, exclude: tuple[int, ...] = (), shared: str | None = None) -> Side:
    """This whole process and its workers (less the ``exclude`` child processes)."""
    return Side(this_process=True, children=True, exclude=exclude, own_rss=True, shared=shared)


def in_process_server(generator_ident: int, shared: str) -> Side:
    """An app on other threads of this process: everything but the generator's thread."""
    return Side(this_process=True, minus_threads=(generator_ident,), own_rss=True, shared=shared)


def find_listeners(port: int) -> tuple[int, ...]:
    """Processes listening on a loopback (or wildcard) address at ``port``; empty when psutil
    is missing or may not look."""
    psutil = _psutil()
    if psutil is None:
        return ()
    try:
        connections = psutil.net_connections(kind="inet")
    except Exception:  # not allowed to list every process's sockets
        return ()
    found = []
    for conn in connections:
        if conn.status != "LISTEN" or not conn.laddr or conn.laddr.port != port:
            continue
        ip = conn.laddr.ip
        if conn.pid is not None and (ip in ("::1", "0.0.0.0", "::") or ip.startswith("127.")):
            found.append(conn.pid)
    return tuple(sorted(set(found)))


def url_sampler(host: str, port: int, generator_ident: int) -> ResourceSampler:
    """The sampler of a run against a URL: its server is whatever listens on that loopback
    port (this process, when the test serves the app itself), unknown elsewhere."""
    from .safety import is_loopback

    listeners = find_listeners(port) if is_loopback(host) else ()
    if os.getpid() in listeners:
        return ResourceSampler(
            in_process_server(generator_ident, "the server runs in this process"),
            thread_side(generator_ident, shared="the server runs in this process"),
        )
    if listeners:
        return ResourceSampler(Side(pids=listeners), process_side())
    return ResourceSampler(None, process_side())


def attach_usage(result: Any, sampler: ResourceSampler, *, warn: bool = True) -> None:
    """Put the sampled figures on ``result`` (``.server``, ``.generator``) and warn when the
    generator was saturated while loading a server."""
    server, generator = sampler.usage(getattr(result, "measured_ns", None))
    result.server = server
    result.generator = generator
    if (
        warn
        and server is not None
        and generator is not None
        and generator.busiest > GENERATOR_SATURATED
        and not getattr(result, "interrupted", False)
        # a run split over generator processes: each one's CPU is reported by name instead
        # (perf_load's per-generator report, see generators.py)
        and not getattr(result, "hosts", None)
    ):
        import warnings

        warnings.warn(
            LoadGeneratorSaturated(
                f"perf_load {result.name}: the load generator kept a core "
                f"{generator.busiest:.0f} % busy (above {GENERATOR_SATURATED:.0f} %): the "
                "results describe the generator as much as the server. Use workers= (more "
                "generator processes), serve='process' for an in-process app, or fewer users."
            ),
            stacklevel=2,
        )
