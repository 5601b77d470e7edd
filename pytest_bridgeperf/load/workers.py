"""``workers=N``: the run split over N processes that start together; histograms merge losslessly.

Each worker gets ``users/N`` users (and ``rate/N``, ``requests/N``), connects, reports ready, and
starts at a common ``CLOCK_MONOTONIC`` instant chosen by the parent. Results travel back as plain
data with the HDR histograms in their standard compressed encoding, so merging loses nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .engine import ProgressCallback, check_rate
from .options import LoadOptionError, LoadOptions
from .result import LoadResult, merge_results
from .safety import parse_url

__all__ = ["run_workers", "split_options"]

_READY_TIMEOUT = 60.0


def split_options(opts: LoadOptions) -> list[LoadOptions]:
    n = opts.workers
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
                rate=opts.rate / n if opts.rate is not None else None,
                requests=requests,
                progress=False,
            )
        )
    return [p for p in parts if p.requests != 0]


def _child(
    conn: Connection, target: Any, opts: LoadOptions, label: str, hosts: tuple[str, ...]
) -> None:
    # until the run installs its own handler, Ctrl-C (sent to the whole process group) is left
    # to the parent, which forwards it once the workers run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = _child_run(conn, target, opts, label, hosts)
        conn.send(("result", result.to_dict()))
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
) -> LoadResult:
    from .runner import _in_worker, _is_async_callable, _uvloop_factory, execute

    _in_worker[0] = True

    def wait_for_go() -> int:
        conn.send(("ready",))
        start_at = int(conn.recv())
        return time.perf_counter_ns() + (start_at - time.monotonic_ns())

    if isinstance(target, str):
        parsed = parse_url(target)
    elif callable(target) and not _is_async_callable(target):
        from .callables import run_sync_callable

        start_ns = wait_for_go()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the threads runner catches it
        return run_sync_callable(target, opts, label=label, start_ns=start_ns)
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
        )

    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        return runner.run(main())


async def run_workers(
    target: Any,
    opts: LoadOptions,
    label: str,
    hosts: tuple[str, ...],
    progress: ProgressCallback | None,
) -> LoadResult:
    parts = split_options(opts)
    try:
        pickle.dumps((target, parts))
    except Exception as exc:
        raise LoadOptionError(
            f"workers={opts.workers} runs the target in other processes, so the target and "
            f"options must be picklable (a module-level function, not a lambda or closure): {exc}"
        ) from None
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    conns: list[Connection] = []
    for part in parts:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=_child,
            args=(child_end, target, part, label, hosts),
            daemon=True,
            name="perf_load-worker",
        )
        proc.start()
        child_end.close()
        procs.append(proc)
        conns.append(parent_end)
    loop = asyncio.get_running_loop()
    interrupted = [False]

    def forward_sigint() -> None:
        interrupted[0] = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGINT)

    from .runner import _sigint

    try:
        with _sigint(forward_sigint, loop):
            messages = await loop.run_in_executor(
                None, _collect, conns, procs, opts, progress, label
            )
    finally:
        for proc in procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
        for conn in conns:
            conn.close()
    results: list[LoadResult] = []
    for message in messages:
        if message[0] == "error":
            _, kind, text, error = message
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError(f"a perf_load worker failed: {kind}: {text}")
        results.append(LoadResult.from_dict(message[1]))
    result = merge_results(results)
    result.name = label
    result.workers = len(results)
    result.interrupted = result.interrupted or interrupted[0]
    check_rate(result)
    return result


def _collect(
    conns: list[Connection],
    procs: list[Any],
    opts: LoadOptions,
    progress: Callable[[str | None], None] | None,
    label: str,
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
    if messages:  # a worker failed to connect: tell the others to stop right away
        for i, conn in enumerate(conns):
            if i not in messages:
                conn.send(time.monotonic_ns())
    start_at = time.monotonic_ns() + 50_000_000
    for i, conn in enumerate(conns):
        if i not in messages:
            conn.send(start_at)
    end = time.monotonic() + 0.05 + opts.warmup + opts.run_length + opts.timeout + 30
    for i, conn in enumerate(conns):
        if i in messages:
            continue
        if not conn.poll(max(0.0, end - time.monotonic())):
            raise RuntimeError(f"perf_load worker {i} did not finish in time")
        try:
            messages[i] = conn.recv()
        except EOFError:
            raise RuntimeError(f"perf_load worker {i} died during the run") from None
    errors = [m for m in messages.values() if m[0] == "error"]
    return errors[:1] if errors else [messages[i] for i in sorted(messages)]
