"""A load run against a web app served for it: the options only apps take, and the run itself.

``perf_load(app, serve="thread", ...)``: the app (or what a factory returns) is served by
:mod:`.serving` for this one run, the run goes to its URL, and the run returns once the app has
finished every request it was sent and has shut down. No pytest here.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .apps import AppFactory, app_kind, describe_app
from .options import LoadOptionError, LoadOptions, build_options
from .resources import (
    ResourceSampler,
    Side,
    attach_usage,
    in_process_server,
    process_side,
    thread_side,
)
from .result import LoadResult
from .serving import SERVE_MODES, Served, ServeMode, default_mode, serve

__all__ = ["APP_OPTIONS", "AppOptions", "RunUrl", "run_web_app", "split_app_options"]

#: options that only web apps take (the rest go to :func:`.options.build_options`)
APP_OPTIONS = ("serve", "app_factory", "queries")

#: what a test that asks to look inside an app served with serve="process" is told
IN_CHILD = (
    "serve='process' runs the app in a child process, where neither result.queries nor "
    "perf_queries nor perf_memory can see; use serve='thread' (the default) or serve='loop' "
    "to look inside the app"
)

RunUrl = Callable[[str, LoadOptions], Awaitable[LoadResult]]


@dataclass(frozen=True)
class AppOptions:
    serve: ServeMode | None = None
    app_factory: bool = False
    #: attribute SQL to requests: True (every engine), or the engines to watch
    queries: tuple[Any, ...] | None = None


def split_app_options(options: Mapping[str, Any]) -> tuple[AppOptions, dict[str, Any]]:
    """(the app options, validated; every other option, untouched)."""
    rest = {k: v for k, v in options.items() if k not in APP_OPTIONS}
    mode = options.get("serve")
    if mode is not None and mode not in SERVE_MODES:
        raise LoadOptionError(
            f"serve={mode!r}: expected one of {', '.join(repr(m) for m in SERVE_MODES)}"
        )
    factory = options.get("app_factory", False)
    if not isinstance(factory, bool):
        raise LoadOptionError(f"app_factory={factory!r}: expected True or False")
    raw = options.get("queries")
    queries: tuple[Any, ...] | None
    if raw is None or raw is False:
        queries = None
    elif raw is True:
        queries = ()
    elif isinstance(raw, (list, tuple)):
        queries = tuple(raw)
    else:
        queries = (raw,)  # one engine
    if queries is not None and mode == "process":
        raise LoadOptionError(f"queries=: {IN_CHILD}")
    return AppOptions(serve=mode, app_factory=factory, queries=queries), rest


def reject_app_options(options: Mapping[str, Any], what: str) -> None:
    """A URL or a callable target given an option that only apps take."""
    given = [k for k in APP_OPTIONS if options.get(k) not in (None, False)]
    if given:
        raise LoadOptionError(
            f"{', '.join(f'{k}=' for k in given)} only apply to a web app target (an ASGI, WSGI "
            f"or aiohttp app, or a factory of one), not to {what}"
        )


def app_spec(target: Any, app: AppOptions) -> Any:
    """The app, or an :class:`AppFactory` when the target is one."""
    if isinstance(target, AppFactory):
        return target
    if app.app_factory:
        if not callable(target):
            raise LoadOptionError(f"app_factory=True, but the target {target!r} is not callable")
        if app_kind(target) is not None:
            raise LoadOptionError(
                f"app_factory=True, but {describe_app(target)} is already an app: pass it "
                "without app_factory=, or pass the function that creates it"
            )
        return AppFactory(target)
    return target


async def run_web_app(
    target: Any,
    options: Mapping[str, Any],
    *,
    max_duration: float,
    run_url: RunUrl,
) -> LoadResult:
    app, rest = split_app_options(options)
    spec = app_spec(target, app)
    opts = build_options(rest, max_duration=max_duration)
    mode = app.serve or default_mode(spec)
    label = describe_app(spec)
    if mode == "process":
        _warn_if_looking_inside()
    with contextlib.ExitStack() as stack:
        tap = None
        if app.queries is not None:
            from ..queries.perrequest import RequestQueryTap

            tap = stack.enter_context(RequestQueryTap(*app.queries))
        async with serve(spec, mode, label, tap) as served:
            with ResourceSampler(*sides(served, threading.get_ident())) as sampler:
                result = await run_url(served.url, opts)
                # the client has its answers; the app may still be finishing a handler (a
                # streamed response, cleanup after it): return when it is done, so nothing the
                # run started still runs after it (a perf_queries block around it checks the
                # pool, and the last requests' statements are attributed)
                ended = not result.interrupted and result.stopped_by is None
                await served.wait_idle(opts.timeout if ended else 0.0)
        if tap is not None:
            result.queries = tap.result(result.measured_ns)
    result.serve = mode
    # serve="loop": one thread serves and generates, and a closed-model run keeps it busy by
    # design; its CPU cannot say which of the two set the pace, so no saturation warning
    attach_usage(result, sampler, warn=mode != "loop")
    return result


def _warn_if_looking_inside() -> None:
    if "sqlalchemy" not in sys.modules:
        return  # no perf_queries block can be open
    from ..queries import capture

    if capture.capturing():
        warnings.warn(
            f"a perf_queries block is open around a perf_load run of an app it cannot see: "
            f"{IN_CHILD}",
            stacklevel=4,
        )


def sides(served: Served, generator: int) -> tuple[Side, Side]:
    """(server, generator) of a run against a served app; ``generator`` is the ident of the
    thread whose event loop sends the requests."""
    if served.mode == "process":
        return Side(pids=served.pids), process_side(exclude=served.pids)
    if served.mode == "loop":
        # the app's handlers share the generator's thread, and hand sync work to other threads
        # (FastAPI's sync endpoints): the server is the whole process, the generator its thread
        shared = (
            "serve='loop': the app shares the generator's thread, counted on both sides; RSS is "
            "the whole process's"
        )
        return Side(this_process=True, own_rss=True, shared=shared), thread_side(
            generator, shared=shared
        )
    shared = "serve='thread': RSS is the whole process's, shared with the generator"
    return in_process_server(generator, shared), thread_side(generator, shared=shared)
