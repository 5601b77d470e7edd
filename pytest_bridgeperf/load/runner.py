"""Entry points: :func:`run_load` (sync, own event loop) and :func:`arun_load` (current loop).

Order of business, so that nothing is sent before everything is known to be fine: validate the
options, check the target against the allowed hosts, start the in-process app if there is one,
connect (a refused connection fails here, naming the address), then run.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from typing import Any

from .apps import check_callable_target, is_web_target
from .engine import ProgressCallback, Run, check_rate
from .errors import check_errors
from .interrupts import TIMEOUT_SIGNAL, Deadline, Stops, StopSignal, hold_alarm, sigint_stops
from .options import LoadOptionError, LoadOptions, build_options
from .resources import ResourceSampler, attach_usage, process_side, url_sampler
from .result import LoadResult
from .safety import LoadTargetError, Target, check_allowed, parse_url
from .webapps import reject_app_options, run_web_app

__all__ = ["LoadConnectionError", "arun_load", "run_load"]

perf_counter_ns = time.perf_counter_ns


class LoadConnectionError(ConnectionError):
    """The target refused (or could not take) the first connection."""


StartHook = Callable[[], Awaitable[int | None]]


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    )


def _callable_label(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__qualname__
    return f"{name}()"


def _label(options: LoadOptions, default: str) -> str:
    if options.name:
        return options.name
    if len(options.mix) == 1 and default == "":
        return options.mix[0].label
    return default or "mix"


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector from pausing the run for the test session's heap.

    A full collection walks every object of the process — a large pytest session's too — and
    the pause would land in the latencies of the requests in flight. Freezing moves the objects
    that exist before the run out of the collector's sight; it still collects what the run
    allocates.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional: the stock loop works, only slower
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_load(
    target: Any,
    options: Mapping[str, Any],
    *,
    allowed_hosts: Iterable[str] = (),
    max_duration: float = 60.0,
    progress: ProgressCallback | None = None,
    runner: asyncio.Runner | None = None,
    deadline: Deadline | None = None,
    default_hosts: Sequence[str] = (),
) -> LoadResult:
    """Run a load test to completion on ``runner``'s event loop, or on a fresh one (uvloop when
    installed). A ``deadline`` cuts the run short (``result.stopped_by`` says so);
    ``default_hosts`` are the generators of a run that names neither ``hosts=`` nor
    ``workers=`` (ini ``perf_load_hosts``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "perf_load(...) cannot run inside a running event loop (an async test): "
            "use `result = await perf_load.arun(...)` there"
        )
    if (
        callable(target)
        and not is_web_target(target, options.get("app_factory") is True)
        and not _is_async_callable(target)
    ):
        reject_app_options(options, "a callable")
        check_callable_target(target)
        opts = build_options(options, max_duration=max_duration, is_callable=True)
        if opts.workers == 1:
            from .callables import run_sync_callable

            stop = StopSignal()
            with hold_alarm(stop, None), ResourceSampler(None, process_side()) as sampler:
                result = run_sync_callable(
                    target,
                    opts,
                    label=_label(opts, _callable_label(target)),
                    progress=progress,
                    deadline=deadline,
                    stop=stop,
                )
            attach_usage(result, sampler)
            check_errors(result, expect_errors=opts.expect_errors)
            return result
    coro = arun_load(
        target,
        options,
        allowed_hosts=allowed_hosts,
        max_duration=max_duration,
        progress=progress,
        deadline=deadline,
        default_hosts=default_hosts,
    )
    if runner is not None:
        return runner.run(coro)
    with new_runner() as own:
        return own.run(coro)


def new_runner() -> asyncio.Runner:
    return asyncio.Runner(loop_factory=_uvloop_factory())


async def arun_load(
    target: Any,
    options: Mapping[str, Any],
    *,
    allowed_hosts: Iterable[str] = (),
    max_duration: float = 60.0,
    progress: ProgressCallback | None = None,
    deadline: Deadline | None = None,
    default_hosts: Sequence[str] = (),
) -> LoadResult:
    """Run a load test on the running event loop (an in-process app may share it). A run in
    which every request failed raises :class:`LoadError` unless ``expect_errors=True``."""
    # a callable runs in this process; an app is served here and loaded by the generators
    app = is_web_target(target, options.get("app_factory") is True)
    runs_here = callable(target) and not app
    if default_hosts and not ({"hosts", "workers"} & set(options)) and not runs_here:
        options = {**options, "hosts": list(default_hosts)}
    stop = StopSignal()
    with hold_alarm(stop, asyncio.get_running_loop()):
        result = await _arun(
            target, options, tuple(allowed_hosts), max_duration, progress, Stops(deadline, stop)
        )
    # on the whole run (every worker merged), once its options are known to be valid
    check_errors(result, expect_errors=options.get("expect_errors") is True)
    return result


async def _arun(
    target: Any,
    options: Mapping[str, Any],
    hosts: tuple[str, ...],
    max_duration: float,
    progress: ProgressCallback | None,
    stops: Stops,
) -> LoadResult:
    if isinstance(target, str):
        reject_app_options(options, "a URL")
        parsed = parse_url(target)
        opts = build_options(options, max_duration=max_duration, default_path=parsed.path)
        check_allowed(parsed, hosts)
        sampler = await asyncio.to_thread(
            url_sampler, parsed.host, parsed.port, threading.get_ident()
        )
        with sampler:
            result = await _run_url(parsed, opts, hosts, progress, stops)
        attach_usage(result, sampler)
        return result
    if is_web_target(target, options.get("app_factory") is True):

        async def run_url(url: str, opts: LoadOptions) -> LoadResult:
            return await _run_url(parse_url(url), opts, hosts, progress, stops)

        return await run_web_app(target, options, max_duration=max_duration, run_url=run_url)
    if callable(target):
        reject_app_options(options, "a callable")
        check_callable_target(target)
        opts = build_options(options, max_duration=max_duration, is_callable=True)
        label = _label(opts, _callable_label(target))
        if opts.workers > 1:
            from .workers import run_workers

            return await run_workers(target, opts, label, hosts, progress, stops)
        with ResourceSampler(None, process_side()) as sampler:
            if not _is_async_callable(target):
                from .callables import run_sync_callable

                result = await asyncio.to_thread(
                    run_sync_callable,
                    target,
                    opts,
                    label=label,
                    progress=progress,
                    deadline=stops.deadline,
                    stop=stops.signal,
                )
            else:
                result = await execute(target, opts, label, hosts, progress, stops=stops)
        attach_usage(result, sampler)
        return result
    raise LoadTargetError(
        f"perf_load target {target!r}: expected a URL ('http://127.0.0.1:8080/path'), a web "
        "app (ASGI, WSGI, aiohttp.web.Application), an app factory (app_factory=True) or a "
        "callable"
    )


async def _run_url(
    target: Target,
    opts: LoadOptions,
    hosts: tuple[str, ...],
    progress: ProgressCallback | None,
    stops: Stops,
) -> LoadResult:
    label = _label(opts, "")
    if opts.hosts:
        from .hosts import run_hosts

        return await run_hosts(target, opts, label, hosts, progress, stops)
    if opts.workers > 1:
        from .workers import run_workers

        return await run_workers(target.url, opts, label, hosts, progress, stops)
    return await execute(target, opts, label, hosts, progress, stops=stops)


def choose_engine(target: Target, opts: LoadOptions) -> str:
    needs_aiohttp = target.scheme == "https" or opts.follow_redirects
    if opts.engine == "fast":
        if needs_aiohttp:
            raise LoadOptionError(
                "engine='fast' speaks plain http:// without redirects; "
                "use engine='aiohttp' (or 'auto')"
            )
        return "fast"
    if opts.engine == "aiohttp" or needs_aiohttp:
        return "aiohttp"
    return "fast"


async def execute(
    target: Target | Callable[[], Awaitable[Any]],
    opts: LoadOptions,
    label: str,
    hosts: tuple[str, ...],
    progress: ProgressCallback | None,
    *,
    before_start: StartHook | None = None,
    stops: Stops | None = None,
) -> LoadResult:
    """Run one process's share on the running loop."""
    loop = asyncio.get_running_loop()
    stops = stops or Stops()
    run = Run(opts, loop, label=label, progress=progress, deadline=stops.deadline)
    engine: Any
    if isinstance(target, Target):
        kind = choose_engine(target, opts)
        if kind == "fast":
            from .http1 import FastHttpEngine

            engine = FastHttpEngine(run, target, opts)
        else:
            from .aiohttp_engine import AiohttpEngine

            engine = AiohttpEngine(run, target, opts, hosts)
            await _preflight(target, opts.timeout)
        target_text = target.url
        if opts.on_start is not None:
            from .sessions import start_sessions

            # every user's session before the run starts: logins are not measured, and each
            # user's requests are encoded once, with its state
            engine.user_requests = await start_sessions(target.origin, opts, opts.users)
    else:
        from .callables import AsyncCallableEngine

        engine = AsyncCallableEngine(run, target)
        target_text = label
    try:
        try:
            slots = await asyncio.wait_for(engine.open(opts.users), timeout=opts.timeout)
        except (TimeoutError, OSError) as exc:
            assert isinstance(target, Target)
            raise _connection_error(target, exc) from None
        unregister = stops.signal.on_fire(lambda: run.halt(TIMEOUT_SIGNAL))
        try:
            start_ns = await before_start() if before_start is not None else None
            with sigint_stops(run.interrupt, loop), quiet_gc():
                if not run.stopped:  # halted while connecting
                    run.start(slots, start_ns)
                await run.wait()
        finally:
            unregister()
            engine.close(slots)
    finally:
        aclose = getattr(engine, "aclose", None)
        if aclose is not None:
            await aclose()
    if run.fatal is not None:
        raise run.fatal
    result = run.result(target=target_text, users=opts.users)
    check_rate(result)
    return result


def _connection_error(target: Target, exc: BaseException) -> LoadConnectionError:
    if isinstance(exc, asyncio.TimeoutError):
        why = "timed out"
    else:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return LoadConnectionError(
        f"cannot connect to {target.address} ({target.url}): {why} — is the server running "
        "and listening there?"
    )


async def _preflight(target: Target, timeout: float) -> None:
    """One TCP connect before the aiohttp engine starts, to fail fast with the address."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), timeout=timeout
        )
    except (TimeoutError, OSError) as exc:
        raise _connection_error(target, exc) from None
    writer.close()
