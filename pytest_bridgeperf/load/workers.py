"""``workers=N``: the run split over N processes that start together; histograms merge losslessly.

Each worker gets ``users/N`` users (and ``rate/N``, ``requests/N``), connects, reports ready, and
starts at a common ``CLOCK_MONOTONIC`` instant chosen by the parent. Results travel back as plain
data with the HDR histograms in their standard compressed encoding, so merging loses nothing.

The split, the start instant, what a worker measures about itself and the merge are shared with
``hosts=`` (``generators.py``); the transport stays its own: a socketpair to a plain
subprocess, which can also run a pickled callable target.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .engine import ProgressCallback, check_rate
from .generators import (
    START_LEAD_NS,
    GeneratorUsage,
    local_start_ns,
    merge_shares,
    split_options,
)
from .interrupts import TIMEOUT_SIGNAL, Deadline, Stops, mark_worker_process, sigint_stops
from .options import LoadOptionError, LoadOptions
from .result import HostShare, LoadResult
from .safety import parse_url

__all__ = ["run_workers", "split_options"]

_READY_TIMEOUT = 60.0
_WORKER_EXIT_S = 0.5


_CHILD_CODE = "import sys; from pytest_bridgeperf.load.workers import child_main; child_main()"


def child_main() -> None:
    """Entry point of a worker process: ``python -c ... <fd of the socket to the parent>``."""
    # until the run installs its own handler, Ctrl-C (sent to the whole process group) is left
    # to the parent, which forwards it once the workers run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    try:
        sys.path[:] = conn.recv()
        target, opts, label, hosts, deadline = pickle.loads(conn.recv_bytes())
        usage = GeneratorUsage()
        result = _child_run(conn, target, opts, label, hosts, deadline, usage)
        usage.end()
        if result.distorted:  # the parent records: say where the tracer was
            result.distorted = f"{result.distorted} in a perf_load worker process"
        conn.send(("result", result.to_dict(), usage.to_dict()))
    except BaseException as exc:  # report everything: the parent raises it with context
        try:
            conn.send(("error", type(exc).__name__, str(exc), _picklable(exc)))
        except Exception:
            conn.send(("error", type(exc).__name__, str(exc), None))
    finally:
        conn.close()


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        pickle.dumps(exc)
    except Exception:
        return None
    return exc


def _child_run(
    conn: Connection,
    target: Any,
    opts: LoadOptions,
    label: str,
    hosts: tuple[str, ...],
    deadline: Deadline | None,
    usage: GeneratorUsage,
) -> LoadResult:
    from .runner import _is_async_callable, _uvloop_factory, execute

    mark_worker_process()

    def wait_for_go() -> int:
        conn.send(("ready",))
        start_at = int(conn.recv())
        _exit_with_parent(conn)
        usage.begin(start_at)
        return local_start_ns(start_at)

    if isinstance(target, str):
        parsed = parse_url(target)
    elif callable(target) and not _is_async_callable(target):
        from .callables import run_sync_callable

        start_ns = wait_for_go()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the threads runner catches it
        return run_sync_callable(target, opts, label=label, start_ns=start_ns, deadline=deadline)
    else:
        parsed = None

    async def main() -> LoadResult:
        loop = asyncio.get_running_loop()

        async def before_start() -> int:
            return await loop.run_in_executor(None, wait_for_go)

        return await execute(
            parsed if parsed is not None else target,
            opts,
            label,
            hosts,
            None,
            before_start=before_start,
            stops=Stops(deadline),
        )

    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        return runner.run(main())


def _exit_with_parent(conn: Connection) -> None:
    """End this worker when the parent dies.

    After the start instant the parent sends nothing more until the worker's result is read, so
    the socket to it becomes readable only when the parent is gone: killed by pytest-timeout's
    thread method (``os._exit``), by a signal, or crashed. The worker must not go on loading
    the target on its own, nor outlive the test run.
    """

    def watch() -> None:
        try:
            select.select([conn.fileno()], [], [])
        except (OSError, ValueError):  # the worker closed the socket itself: it is finishing
            return
        os._exit(3)

    threading.Thread(target=watch, name="perf_load-parent-watch", daemon=True).start()


def _spawn(args: list[str], pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start a worker with Ctrl-C ignored (the disposition survives exec) until its run installs
    its own handler: a Ctrl-C, or one the parent forwards, that arrives while the interpreter is
    still starting would otherwise kill it mid-import (seen on a busy machine) and lose the run.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(args, pass_fds=pass_fds, stdin=subprocess.DEVNULL)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


async def run_workers(
    target: Any,
    opts: LoadOptions,
    label: str,
    hosts: tuple[str, ...],
    progress: ProgressCallback | None,
    stops: Stops | None = None,
) -> LoadResult:
    stops = stops or Stops()
    deadline = stops.deadline
    if deadline is not None:
        # the workers end earlier than the parent must: after their run they still send their
        # results and exit, about 0.3 s for two workers on an idle 2-core machine
        deadline = Deadline(deadline.at - _WORKER_EXIT_S, deadline.reason)
    parts = split_options(opts)
    try:
        pickle.dumps((target, parts))
    except Exception as exc:
        raise LoadOptionError(
            f"workers={opts.workers} runs the target in other processes, so the target and "
            f"options must be picklable (a module-level function, not a lambda or closure): {exc}"
        ) from None
    # Plain subprocesses rather than multiprocessing's spawn: spawn re-runs the parent's main
    # script in the child, which breaks any script without an `if __name__ == "__main__"` guard.
    procs: list[subprocess.Popen[bytes]] = []
    conns: list[Connection] = []
    for part in parts:
        parent_sock, child_sock = socket.socketpair()
        proc = _spawn(
            [sys.executable, "-c", _CHILD_CODE, str(child_sock.fileno())],
            (child_sock.fileno(),),
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        # sys.path first: the target may live in a test module only reachable through it
        conn.send(list(sys.path))
        conn.send_bytes(pickle.dumps((target, part, label, hosts, deadline)))
        procs.append(proc)
        conns.append(conn)
    loop = asyncio.get_running_loop()
    interrupted = [False]
    halted = [False]

    def forward_sigint() -> None:
        interrupted[0] = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    def halt() -> None:  # the test's timeout: the workers stop as on Ctrl-C
        halted[0] = True
        forward_sigint()

    unregister = stops.signal.on_fire(halt)
    try:
        with sigint_stops(forward_sigint, loop):
            messages = await loop.run_in_executor(None, _collect, conns, procs, opts, interrupted)
    finally:
        unregister()
        for proc in procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in conns:
            conn.close()
    shares: list[HostShare] = []
    hostname = socket.gethostname()
    for i, message in enumerate(messages):
        if message[0] == "error":
            _, kind, text, error = message
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError(f"a perf_load worker failed: {kind}: {text}")
        _, data, usage = message
        shares.append(
            HostShare(
                id=f"worker{i}",
                spec="workers",
                hostname=hostname,
                pid=procs[i].pid,
                local=True,
                result=LoadResult.from_dict(data),
                cpu_seconds=usage["cpu_seconds"],
                wall_seconds=usage["wall_seconds"],
                start_late=usage["start_late"],
            )
        )
    result = merge_shares(shares)
    result.name = label
    result.interrupted = (result.interrupted or interrupted[0]) and not halted[0]
    if halted[0]:
        result.stopped_by = TIMEOUT_SIGNAL
    check_rate(result)
    return result


def _collect(
    conns: list[Connection],
    procs: list[subprocess.Popen[bytes]],
    opts: LoadOptions,
    interrupted: list[bool],
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + _READY_TIMEOUT
    messages: dict[int, tuple[Any, ...]] = {}
    for i, conn in enumerate(conns):
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"perf_load worker {i} did not start within {_READY_TIMEOUT:g} s")
        try:
            message = conn.recv()
        except EOFError:
            raise RuntimeError(f"perf_load worker {i} died while starting") from None
        if message[0] != "ready":
            messages[i] = message
    if messages:  # a worker could not connect: the others must not start at all
        for i, proc in enumerate(procs):
            if i not in messages:
                proc.kill()
        return [m for m in messages.values() if m[0] == "error"][:1]
    start_at = time.monotonic_ns() + START_LEAD_NS
    for conn in conns:
        conn.send(start_at)
    end = time.monotonic() + 0.05 + opts.warmup + opts.run_length + opts.timeout + 30
    forwarded = 0.0
    for i, conn in enumerate(conns):
        while not conn.poll(0.2):
            if time.monotonic() > end:
                raise RuntimeError(f"perf_load worker {i} did not finish in time")
            # a Ctrl-C that came while the workers were starting found them ignoring it:
            # repeat it until they have stopped (their handler takes it once)
            if interrupted[0] and time.monotonic() - forwarded > 0.5:
                forwarded = time.monotonic()
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
        try:
            messages[i] = conn.recv()
        except EOFError:
            raise RuntimeError(f"perf_load worker {i} died during the run") from None
    errors = [m for m in messages.values() if m[0] == "error"]
    return errors[:1] if errors else [messages[i] for i in sorted(messages)]
