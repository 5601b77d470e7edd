"""ASGI apps as perf_load targets: served by real uvicorn on 127.0.0.1, lifespan run around the
load, app factories, and where the server runs (``serve=``)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")

from pytest_bridgeperf import AppFactory  # noqa: E402
from pytest_bridgeperf.load import LoadAppError, LoadOptionError, LoadTargetError, run_load  # noqa: E402
from pytest_bridgeperf.load.apps import app_kind  # noqa: E402


def make_app(events: list[tuple[str, Any]], *, fail_startup: bool = False) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append(("startup", threading.get_ident()))
        if fail_startup:
            raise RuntimeError("the database is not reachable")
        yield {"greeting": "hello from the lifespan"}
        events.append(("shutdown", threading.get_ident()))

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello(request: fastapi.Request) -> dict[str, str]:
        events.append(("request", request.state.greeting))
        return {"ok": "yes"}

    return app


def test_lifespan_startup_runs_before_the_first_request_and_shutdown_after_the_last() -> None:
    events: list[tuple[str, Any]] = []
    result = run_load(make_app(events), {"path": "/hello", "users": 2, "requests": 50})
    assert result.count == 50
    assert result.status_counts == {200: 50}
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "startup"
    assert kinds[-1] == "shutdown"
    assert kinds.count("startup") == kinds.count("shutdown") == 1
    # every request (warm connections included) was handled between the two, with the
    # lifespan's state in its scope
    assert kinds.count("request") >= 50
    assert all(value == "hello from the lifespan" for kind, value in events if kind == "request")
    # serve="thread" (the default for ASGI): startup and shutdown ran on the server's thread
    assert events[0][1] != threading.get_ident()
    assert events[0][1] == events[-1][1]
    assert result.serve == "thread"


def test_a_failing_startup_is_a_clear_error_and_nothing_is_sent() -> None:
    events: list[tuple[str, Any]] = []
    with pytest.raises(LoadAppError) as info:
        run_load(make_app(events, fail_startup=True), {"path": "/hello", "requests": 5})
    message = str(info.value)
    assert "lifespan startup failed" in message
    assert "the database is not reachable" in message
    assert "FastAPI app" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert [kind for kind, _ in events] == ["startup"]


def test_an_app_without_lifespan_support_is_served_anyway() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # like Django's ASGI handler: anything but HTTP is refused before reading an event
        if scope["type"] != "http":
            raise ValueError(f"cannot handle {scope['type']}")
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    result = run_load(app, {"path": "/raw", "requests": 20})
    assert result.status_counts == {200: 20}
    assert seen.count("/raw") >= 20


def test_a_shutdown_failure_fails_the_run() -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        raise RuntimeError("could not flush the cache")

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/")
    async def root() -> str:
        return "ok"

    with pytest.raises(LoadAppError, match=r"(?s)shutdown failed.*could not flush the cache"):
        run_load(app, {"requests": 5})


class _Raw:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_detection_by_calling_convention() -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...

    async def call() -> None: ...

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    def sync_call() -> None: ...

    assert app_kind(fastapi.FastAPI()) == "asgi"
    assert app_kind(asgi) == "asgi"
    assert app_kind(_Raw()) == "asgi"
    assert app_kind(wsgi) == "wsgi"
    assert app_kind(call) is None  # a load-tested coroutine function
    assert app_kind(sync_call) is None
    assert app_kind(_Raw) is None  # a class is not an app
    assert app_kind("http://127.0.0.1/") is None


def test_a_class_instance_with_an_async_call_is_served() -> None:
    result = run_load(_Raw(), {"requests": 10})
    assert result.status_counts == {204: 10}


def test_a_callable_that_needs_arguments_is_refused_before_anything_runs() -> None:
    async def handler(request: Any) -> None: ...

    with pytest.raises(LoadTargetError, match="needs 1 positional argument"):
        run_load(handler, {"requests": 1})


# ---------------------------------------------------------------------------------------------
# factories


def test_a_factory_is_called_once_per_run_and_nothing_is_reused() -> None:
    built: list[Any] = []
    events: list[tuple[str, Any]] = []

    def create_app() -> Any:
        app = make_app(events)
        built.append(app)
        return app

    run_load(create_app, {"path": "/hello", "requests": 10, "app_factory": True})
    run_load(create_app, {"path": "/hello", "requests": 10, "app_factory": True})
    assert len(built) == 2
    assert built[0] is not built[1]
    assert [k for k, _ in events].count("startup") == 2


def test_an_async_factory_runs_on_the_loop_that_serves_the_app() -> None:
    where: list[int] = []

    async def create_app(prefix: str) -> Any:
        where.append(threading.get_ident())
        app = fastapi.FastAPI()

        @app.get(f"{prefix}/x")
        async def x() -> str:
            where.append(threading.get_ident())
            return "x"

        return app

    result = run_load(AppFactory(create_app, "/api"), {"path": "/api/x", "requests": 5})
    assert result.status_counts == {200: 5}
    assert len(set(where)) == 1  # factory and handlers: the server's thread
    assert where[0] != threading.get_ident()


def test_a_factory_that_raises_is_a_clear_error() -> None:
    def create_app() -> Any:
        raise KeyError("DATABASE_URL")

    with pytest.raises(LoadAppError, match=r"create_app\(\) factory: the app factory raised"):
        run_load(create_app, {"requests": 1, "app_factory": True})


def test_a_factory_must_return_an_app() -> None:
    with pytest.raises(LoadTargetError, match="returned dict, which is not"):
        run_load(dict, {"requests": 1, "app_factory": True})


def test_app_factory_on_an_app_or_serve_on_a_url_is_refused() -> None:
    with pytest.raises(LoadOptionError, match="already an app"):
        run_load(fastapi.FastAPI(), {"app_factory": True, "requests": 1})
    with pytest.raises(LoadOptionError, match="only apply to a web app target"):
        run_load("http://127.0.0.1:9/", {"serve": "thread", "requests": 1})
    with pytest.raises(LoadOptionError, match="serve='fork'"):
        run_load(fastapi.FastAPI(), {"serve": "fork", "requests": 1})


def test_the_factory_runs_again_in_every_round_of_a_perf_test(pytester: pytest.Pytester) -> None:
    # a marker with memory= and rss= runs the test twice (see README, Rounds): each run must
    # build its own app
    pytester.makepyfile(
        """
        import fastapi, pytest

        BUILT = []

        def create_app():
            app = fastapi.FastAPI()

            @app.get("/")
            async def root():
                return "ok"

            BUILT.append(id(app))
            return app

        @pytest.mark.perf(memory="2GB", rss="8GB")
        def test_rounds(perf_load):
            perf_load(create_app, app_factory=True, requests=20)

        def test_after():
            assert len(BUILT) == 2 and len(set(BUILT)) == 2, BUILT
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--perf")
    result.assert_outcomes(passed=2)


# ---------------------------------------------------------------------------------------------
# where the server runs


def _where_app(out: str) -> Any:
    app = fastapi.FastAPI()

    @app.get("/where")
    async def where() -> str:
        Path(out).write_text(f"{os.getpid()} {threading.get_ident()}")
        return "ok"

    return app


def _where(path: Path) -> tuple[int, int]:
    pid, ident = path.read_text().split()
    return int(pid), int(ident)


def test_serve_modes_run_the_app_where_asked(tmp_path: Path) -> None:
    out = tmp_path / "where"
    me = (os.getpid(), threading.get_ident())
    options = {"path": "/where", "requests": 3}

    assert run_load(_where_app(str(out)), {**options, "serve": "loop"}).serve == "loop"
    assert _where(out) == me

    assert run_load(_where_app(str(out)), {**options, "serve": "thread"}).serve == "thread"
    pid, ident = _where(out)
    assert pid == os.getpid()
    assert ident != me[1]

    result = run_load(AppFactory(_where_app, str(out)), {**options, "serve": "process"})
    assert result.serve == "process"
    assert result.status_counts == {200: 3}
    assert _where(out)[0] != os.getpid()


def test_serve_process_needs_something_it_can_send_to_the_child() -> None:
    app = make_app([])  # made in a function: its routes are closures, so it does not pickle
    with pytest.raises(LoadOptionError, match="must be picklable: pass a module-level factory"):
        run_load(app, {"serve": "process", "requests": 1})


def test_serve_process_reports_a_failing_startup_from_the_child() -> None:
    with pytest.raises(LoadAppError, match=r"could not be served in the child process.*KeyError"):
        run_load(AppFactory(_failing_factory), {"serve": "process", "requests": 1})


def _failing_factory() -> Any:
    raise KeyError("SECRET_KEY")


def test_the_run_returns_once_the_app_has_finished_its_handlers() -> None:
    import asyncio

    finished: list[int] = []
    app = fastapi.FastAPI()

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(0.05)
        finished.append(1)
        return "done"

    result = run_load(app, {"path": "/slow", "users": 4, "duration": "0.3s", "timeout": "2s"})
    # requests in flight when the window closed are not counted, but were finished by the app
    # before the run returned: nothing it started runs after it
    assert len(finished) >= result.count + result.unfinished


@pytest.mark.asyncio
async def test_arun_serves_an_asgi_app_from_an_async_test() -> None:
    from pytest_bridgeperf.load import arun_load

    events: list[tuple[str, Any]] = []
    result = await arun_load(make_app(events), {"path": "/hello", "requests": 20})
    assert result.status_counts == {200: 20}
    assert [k for k, _ in events].count("shutdown") == 1
    loop_mode = await arun_load(
        make_app(events), {"path": "/hello", "requests": 20, "serve": "loop"}
    )
    assert loop_mode.serve == "loop"
