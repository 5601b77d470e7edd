"""Serving a web app on 127.0.0.1 for the length of a load run: ``serve="loop"``, ``"thread"``,
``"process"``.

* aiohttp apps: aiohttp's own ``AppRunner``.
* ASGI 3 apps: uvicorn (the ``[asgi]`` extra), with the lifespan protocol driven here — startup
  completes before the first request and shutdown runs after the last, and a failed startup is a
  :class:`LoadAppError` carrying the app's own exception (uvicorn would only log it).
* WSGI apps: cheroot (the ``[wsgi]`` extra), CherryPy's HTTP/1.1 server: a thread pool behind a
  selector that parks idle keep-alive connections, ``prepare()``/``serve()``/``stop()`` made for
  running in a thread, an ephemeral port read back from ``bind_addr``. Chosen over waitress after
  measuring both in this process with a Flask "hello" app and ``wrk -c8``: 5,400–6,700 against
  2,400 requests/s, and waitress logged "Task queue depth" warnings at that load.

Where the server runs:

* ``"loop"``: on the load generator's own event loop (async apps only). Nothing crosses a thread,
  but every request the app handles delays the generator, and vice versa (an aiohttp app:
  ~194 requests/s here against ~270 out of process).
* ``"thread"``: its own event loop (or cheroot's threads) on a thread of this process. The app
  shares the process — so ``perf_queries``, ``perf_memory`` and ``result.queries`` see inside it
  — and the GIL with the generator.
* ``"process"``: a child Python process, pinned to other CPUs than the generator where the
  machine has at least two. Nothing is shared, and nothing inside the app can be observed.

Every request the app handles is counted (:class:`RequestTracker`), so a run returns only once
the app has finished what the run sent. No pytest here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal, Protocol

from .apps import AppFactory, AppKind, app_kind
from .options import LoadOptionError
from .safety import LoadTargetError

__all__ = [
    "SERVE_MODES",
    "LoadAppError",
    "RequestTap",
    "RequestTracker",
    "ServeMode",
    "Served",
    "serve",
]

ServeMode = Literal["loop", "thread", "process"]
SERVE_MODES: tuple[ServeMode, ...] = ("loop", "thread", "process")

#: How long the app may take to start (a factory, the lifespan startup, a child interpreter's
#: imports) and to shut down before the run gives up on it.
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0


class LoadAppError(RuntimeError):
    """The app could not be served: its factory or its lifespan startup failed, its shutdown
    failed, or it cannot be served the way that was asked. The app's own exception, where there
    is one, is the ``__cause__``."""


# ---------------------------------------------------------------------------------------------
# request tracking (and the hook for per-request query attribution)


class RequestTap(Protocol):
    """Sees each request the app handles (``result.queries`` attributes SQL with it)."""

    def enter(self) -> Any: ...
    def leave(self, handle: Any, endpoint: str) -> None: ...


class RequestTracker:
    """Counts the requests the app is handling, from whichever thread handles them."""

    def __init__(self, tap: RequestTap | None = None) -> None:
        self.tap = tap
        self.active = 0
        self.handled = 0
        self._lock = threading.Lock()

    def begin(self) -> Any:
        with self._lock:
            self.active += 1
        return self.tap.enter() if self.tap is not None else None

    def end(self, handle: Any, endpoint: Callable[[], str]) -> None:
        if self.tap is not None:
            self.tap.leave(handle, endpoint())
        with self._lock:
            self.active -= 1
            self.handled += 1

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no request is being handled; False if one is."""
        deadline = time.monotonic() + timeout
        while self.active > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
        return True


def _asgi_endpoint(scope: MutableMapping[str, Any]) -> str:
    """``GET /items/{item_id}``: the route template when the framework put it in the scope
    (Starlette and FastAPI do, after routing), else the path."""
    route = scope.get("route")
    template = getattr(route, "path", None) if route is not None else None
    return f"{scope.get('method', '?')} {template or scope.get('path', '?')}"


def _wsgi_endpoint(app: Any, environ: MutableMapping[str, Any]) -> str:
    """``GET /items/<int:item_id>``: the route the framework would match (Flask's URL map,
    Django's resolver), else the path. Worked out only when a tap wants endpoints: the
    frameworks drop their request objects before the server closes the body."""
    method = environ.get("REQUEST_METHOD", "?")
    path = environ.get("PATH_INFO", "?")
    rule: str | None = None
    try:
        url_map = getattr(app, "url_map", None)
        if url_map is not None:  # Flask, werkzeug
            rule = url_map.bind_to_environ(environ).match(return_rule=True)[0].rule
        elif type(app).__module__.startswith("django."):
            from django.urls import resolve

            route = resolve(path).route
            rule = "/" + route if route else None
    except Exception:  # no route matched (a 404), or another framework: the path then
        rule = None
    return f"{method} {rule or path}"


def track_asgi(app: Any, tracker: RequestTracker, state: dict[str, Any]) -> Any:
    """The ASGI app as served: each HTTP request counted; the lifespan's ``state`` copied into
    each request's scope (the lifespan ran here, not in uvicorn)."""

    async def tracked(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["state"] = dict(state)
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        handle = tracker.begin()
        try:
            await app(scope, receive, send)
        finally:
            tracker.end(handle, lambda: _asgi_endpoint(scope))

    return tracked


class _TrackedBody:
    """A WSGI response body: the request ends when the server has sent it and closed it."""

    def __init__(
        self, body: Iterable[bytes], tracker: RequestTracker, handle: Any, endpoint: Any
    ) -> None:
        self._body = body
        self._tracker = tracker
        self._handle = handle
        self._endpoint = endpoint
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._tracker.end(self._handle, self._endpoint)


def track_wsgi(app: Any, tracker: RequestTracker) -> Any:
    def tracked(environ: Any, start_response: Any) -> Iterable[bytes]:
        handle = tracker.begin()

        def endpoint() -> str:
            return _wsgi_endpoint(app, environ)

        try:
            body = app(environ, start_response)
        except BaseException:
            tracker.end(handle, endpoint)
            raise
        return _TrackedBody(body, tracker, handle, endpoint)

    return tracked


# ---------------------------------------------------------------------------------------------
# the ASGI lifespan protocol


class Lifespan:
    """Drives an ASGI app's lifespan: ``await startup()`` before serving, ``await shutdown()``
    after. An app that does not speak the protocol (it raises, or returns, before reading the
    startup event — Django's ASGI handler does) is served without it, as uvicorn's
    ``lifespan="auto"`` does; one that fails *after* reading it failed its startup."""

    def __init__(self, app: Any, label: str) -> None:
        self.app = app
        self.label = label
        self.state: dict[str, Any] = {}
        self.supported = True
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._received = 0
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        self._received += 1
        return await self._incoming.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self._outgoing.put(message)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        await self.app(scope, self._receive, self._send)

    async def _answer(self, timeout: float) -> dict[str, Any] | None:
        """The app's next message, or None when its lifespan task ended first."""
        assert self._task is not None
        getter = asyncio.ensure_future(self._outgoing.get())
        done, _ = await asyncio.wait(
            {getter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if not done:
            raise LoadAppError(f"{self.label}: no answer to the lifespan event in {timeout:g} s")
        return None

    async def startup(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        await self._incoming.put({"type": "lifespan.startup"})
        message = await self._answer(STARTUP_TIMEOUT)
        if message is None:
            error = self._task.exception()
            if self._received == 0:
                self.supported = False  # never read the startup event: no lifespan support
                return
            raise LoadAppError(
                f"{self.label}: the lifespan startup failed: {_describe(error)}"
            ) from error
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            return
        if self._received == 0 and not str(kind).startswith("lifespan."):
            # an app that answers every scope as HTTP without looking: it has no lifespan
            self.supported = False
            self._task.cancel()
            return
        if kind == "lifespan.startup.failed":
            cause = await self._task_error()
            raise LoadAppError(
                f"{self.label}: the lifespan startup failed: "
                f"{message.get('message') or _describe(cause)}"
            ) from cause
        raise LoadAppError(f"{self.label}: unexpected lifespan message {message!r} at startup")

    async def _task_error(self) -> BaseException | None:
        assert self._task is not None
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self._task), 1.0)
        if self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        if self._task.done():
            error = self._task.exception()
            raise LoadAppError(
                f"{self.label}: the lifespan task ended while the app was being served: "
                f"{_describe(error)}"
            ) from error
        await self._incoming.put({"type": "lifespan.shutdown"})
        message = await self._answer(SHUTDOWN_TIMEOUT)
        if message is None:
            error = self._task.exception()
            raise LoadAppError(
                f"{self.label}: the lifespan shutdown failed: {_describe(error)}"
            ) from error
        if message.get("type") == "lifespan.shutdown.failed":
            cause = await self._task_error()
            raise LoadAppError(
                f"{self.label}: the lifespan shutdown failed: "
                f"{message.get('message') or _describe(cause)}"
            ) from cause
        await self._task_error()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "the app returned without answering"
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------------------------
# servers on the current event loop


@dataclass
class Served:
    """An app being served for a run."""

    url: str
    mode: ServeMode
    kind: AppKind
    label: str
    #: counts the requests being handled (None in a child process: the run cannot see them)
    tracker: RequestTracker | None
    #: processes serving the app other than this one (``serve="process"``)
    pids: tuple[int, ...] = ()
    #: CPUs the load generator's thread was pinned to for the run, None when not pinned
    generator_cpus: frozenset[int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def in_process(self) -> bool:
        return self.mode != "process"

    async def wait_idle(self, timeout: float) -> bool:
        if self.tracker is None:
            return True
        return await self.tracker.wait_idle(timeout)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional: the stock loop works, only slower
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _missing(extra: str, package: str, kind: str) -> LoadAppError:
    return LoadAppError(
        f"serving a {kind} app needs {package}: pip install 'pytest-bridgeperf[{extra}]'"
    )


@contextlib.asynccontextmanager
async def _serve_asgi(app: Any, label: str, tracker: RequestTracker) -> AsyncIterator[str]:
    """uvicorn on the running loop, lifespan driven here."""
    try:
        import uvicorn
    except ImportError:
        raise _missing("asgi", "uvicorn", "ASGI") from None

    class _Server(uvicorn.Server):
        # the run owns Ctrl-C and the test's signals; uvicorn's handlers would replace them on
        # the main thread (serve="loop") and re-raise what they caught when it stops
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    lifespan = Lifespan(app, label)
    await lifespan.startup()
    sock = _bound_socket()
    config = uvicorn.Config(
        track_asgi(app, tracker, lifespan.state),
        lifespan="off",
        interface="asgi3",
        log_config=None,  # leave the process's logging configuration alone
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                raise LoadAppError(f"{label}: uvicorn stopped before it started serving")
            await asyncio.sleep(0.002)
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, SHUTDOWN_TIMEOUT)
        finally:
            sock.close()
            await lifespan.shutdown()


@contextlib.asynccontextmanager
async def _serve_aiohttp(app: Any, tracker: RequestTracker) -> AsyncIterator[str]:
    from aiohttp import web

    bound = getattr(app, "_loop", None)  # aiohttp ties an app to the first loop that ran it
    if bound is not None and bound is not asyncio.get_running_loop():
        raise LoadTargetError(
            "this aiohttp Application already ran on another event loop, and aiohttp does not "
            "allow moving it; create the app per test (e.g. in a fixture), pass a factory "
            "(app_factory=True), or use `await perf_load.arun(app, ...)` on the loop that owns it"
        )
    # a short shutdown: handlers still running when the run ended (after waiting for them, or
    # when the run was interrupted) are not waited for long
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        # Server.request_handler is what each new connection's protocol calls per request (read
        # when the connection is made): counting there sees every handler to its end, also one
        # whose client already went away (aiohttp does not cancel those by default)
        server = runner.server
        assert server is not None
        handler = server.request_handler

        async def counted(request: Any) -> Any:
            handle = tracker.begin()
            try:
                return await handler(request)
            finally:
                tracker.end(handle, lambda: _aiohttp_endpoint(request))

        server.request_handler = counted
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _aiohttp_endpoint(request: Any) -> str:
    resource = getattr(getattr(request.match_info, "route", None), "resource", None)
    canonical = getattr(resource, "canonical", None)
    return f"{request.method} {canonical or request.path}"


@contextlib.asynccontextmanager
async def _serve_wsgi(app: Any, label: str, tracker: RequestTracker) -> AsyncIterator[str]:
    """cheroot in its own threads (a WSGI app cannot share an event loop)."""
    try:
        from cheroot import wsgi
    except ImportError:
        raise _missing("wsgi", "cheroot", "WSGI") from None
    server = wsgi.Server(("127.0.0.1", 0), track_wsgi(app, tracker), server_name="127.0.0.1")
    # the serving loop wakes this often to look for expired connections — and for stop(): the
    # default 0.5 s made every run half a second longer to tear down
    server.expiration_interval = 0.05
    try:
        server.prepare()
    except OSError as exc:
        raise LoadAppError(f"{label}: cheroot could not listen on 127.0.0.1: {exc}") from exc
    thread = threading.Thread(target=server.serve, name="perf_load-wsgi-server", daemon=True)
    thread.start()
    try:
        port = server.bind_addr[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(thread.join, SHUTDOWN_TIMEOUT)


async def _build(spec: Any, label: str) -> Any:
    if not isinstance(spec, AppFactory):
        return spec
    try:
        return await spec.build()
    except LoadTargetError:
        raise
    except Exception as exc:
        raise LoadAppError(f"{label}: the app factory raised {_describe(exc)}") from exc


@contextlib.asynccontextmanager
async def _serve_here(
    spec: Any, label: str, tracker: RequestTracker
) -> AsyncIterator[tuple[str, AppKind]]:
    """Build the app (a factory is called on this loop) and serve it from this loop."""
    app = await _build(spec, label)
    kind = app_kind(app)
    assert kind is not None
    if kind == "asgi":
        async with _serve_asgi(app, label, tracker) as url:
            yield url, kind
    elif kind == "aiohttp":
        async with _serve_aiohttp(app, tracker) as url:
            yield url, kind
    else:
        async with _serve_wsgi(app, label, tracker) as url:
            yield url, kind


# ---------------------------------------------------------------------------------------------
# serve="thread": a loop of its own on a thread


class _ServerThread:
    """Serves the app from an event loop on a thread of its own; ``start()``/``stop()`` are
    awaited from the generator's loop."""

    def __init__(self, spec: Any, label: str, tracker: RequestTracker) -> None:
        self.spec = spec
        self.label = label
        self.tracker = tracker
        self.ready: concurrent.futures.Future[tuple[str, AppKind]] = concurrent.futures.Future()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="perf_load-server", daemon=True)

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
                runner.run(self._serve())
        except BaseException as exc:
            for future in (self.ready, self.done):
                if not future.done():
                    future.set_exception(exc)
            return
        if not self.done.done():
            self.done.set_result(None)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        async with _serve_here(self.spec, self.label, self.tracker) as served:
            self.ready.set_result(served)
            await self.stopping.wait()

    async def start(self) -> tuple[str, AppKind]:
        self.thread.start()
        return await asyncio.wait_for(asyncio.wrap_future(self.ready), STARTUP_TIMEOUT)

    async def stop(self) -> None:
        loop, stopping = self.loop, self.stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just ended by itself
                loop.call_soon_threadsafe(stopping.set)
        try:
            await asyncio.wait_for(asyncio.wrap_future(self.done), SHUTDOWN_TIMEOUT + 5)
        finally:
            await asyncio.to_thread(self.thread.join, 1.0)


# ---------------------------------------------------------------------------------------------
# serve="process": a child interpreter

_CHILD_CODE = "from pytest_bridgeperf.load.serving import child_main; child_main()"


def child_main() -> None:
    """Entry point of a serving child process: ``python -c ... <fd of the socket to the
    parent>``. Serves until the parent says stop — or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn = Connection(int(sys.argv[1]))
    try:
        sys.path[:] = conn.recv()
        spec, label, cpus = pickle.loads(conn.recv_bytes())
        if cpus is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)  # before any thread exists: they inherit it
        asyncio.run(_child_serve(conn, spec, label))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
    finally:
        conn.close()


async def _child_serve(conn: Connection, spec: Any, label: str) -> None:
    server = _ServerThread(spec, label, RequestTracker())
    url, kind = await server.start()
    conn.send(("ready", url, kind))
    loop = asyncio.get_running_loop()
    # the parent sends "stop" — or dies, and the socket reads as closed: stop either way
    await loop.run_in_executor(None, _wait_readable, conn)
    await server.stop()
    conn.send(("stopped",))


def _wait_readable(conn: Connection) -> None:
    with contextlib.suppress(OSError, ValueError):
        select.select([conn.fileno()], [], [])


def _split_cpus() -> tuple[frozenset[int], frozenset[int]] | None:
    """(server CPUs, generator CPUs): the upper and lower half of this thread's CPUs, when it
    may run on at least two."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    cpus = sorted(getter(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return frozenset(cpus[half:]), frozenset(cpus[:half])


@contextlib.asynccontextmanager
async def _serve_in_child(spec: Any, label: str) -> AsyncIterator[Served]:
    try:
        payload = pickle.dumps((spec, label, None))
    except Exception as exc:
        raise LoadOptionError(
            f"serve='process' builds the app in a child process, so it must be picklable: pass "
            f"a module-level factory (perf_load(create_app, app_factory=True, serve='process') "
            f"or AppFactory(create_app, ...)); {label} is not ({exc})"
        ) from None
    split = _split_cpus()
    if split is not None:
        payload = pickle.dumps((spec, label, set(split[0])))  # the child pins itself
    parent_sock, child_sock = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE, str(child_sock.fileno())],
        pass_fds=(child_sock.fileno(),),
        stdin=subprocess.DEVNULL,
    )
    child_sock.close()
    conn = Connection(parent_sock.detach())
    pinned_from: set[int] | None = None
    try:
        conn.send(list(sys.path))
        conn.send_bytes(payload)
        message = await asyncio.to_thread(_receive, conn, STARTUP_TIMEOUT, label)
        if message[0] == "error":
            _, kind, text, trace = message
            raise LoadAppError(
                f"{label}: the app could not be served in the child process: {kind}: {text}\n"
                f"{trace}"
            )
        _, url, app_type = message
        if split is not None:
            pinned_from = set(os.sched_getaffinity(0))
            os.sched_setaffinity(0, split[1])
        yield Served(
            url=url,
            mode="process",
            kind=app_type,
            label=label,
            tracker=None,
            pids=(proc.pid,),
            generator_cpus=split[1] if split is not None else None,
        )
    finally:
        if pinned_from is not None:
            os.sched_setaffinity(0, pinned_from)
        stopped = await asyncio.to_thread(_stop_child, conn, proc)
        conn.close()
    if stopped is not None:
        raise LoadAppError(f"{label}: {stopped}")


def _receive(conn: Connection, timeout: float, label: str) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise LoadAppError(f"{label}: the serving child process did not start in {timeout:g} s")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise LoadAppError(f"{label}: the serving child process died while starting") from None
    return message


def _stop_child(conn: Connection, proc: subprocess.Popen[bytes]) -> str | None:
    """Ask the child to stop; the error of its shutdown, if any."""
    problem: str | None = None
    try:
        conn.send(("stop",))
        if conn.poll(SHUTDOWN_TIMEOUT + 5):
            message = conn.recv()
            if message[0] == "error":
                problem = (
                    f"the app's shutdown failed in the child process: {message[1]}: {message[2]}"
                )
    except (OSError, EOFError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return problem


# ---------------------------------------------------------------------------------------------
# the entry point


def default_mode(spec: Any) -> ServeMode:
    """``"loop"`` for an aiohttp Application passed as is (what perf_load always did),
    ``"thread"`` for every other app and for factories."""
    return "loop" if not isinstance(spec, AppFactory) and app_kind(spec) == "aiohttp" else "thread"


@contextlib.asynccontextmanager
async def serve(
    spec: Any, mode: ServeMode, label: str, tap: RequestTap | None = None
) -> AsyncIterator[Served]:
    """Serve ``spec`` (an app, or an :class:`AppFactory`) on 127.0.0.1, an ephemeral port."""
    if mode == "process":
        async with _serve_in_child(spec, label) as served:
            yield served
        return
    tracker = RequestTracker(tap)
    if mode == "loop":
        if not isinstance(spec, AppFactory) and app_kind(spec) == "wsgi":
            raise LoadOptionError(
                f"serve='loop' needs an async app, and {label} is a WSGI app (served by "
                "threads): use serve='thread' (the default) or serve='process'"
            )
        async with _serve_here(spec, label, tracker) as (url, kind):
            yield Served(url=url, mode=mode, kind=kind, label=label, tracker=tracker)
        return
    server = _ServerThread(spec, label, tracker)
    url, kind = await server.start()  # when it raises, the thread has ended by itself
    try:
        yield Served(url=url, mode=mode, kind=kind, label=label, tracker=tracker)
    finally:
        await server.stop()
