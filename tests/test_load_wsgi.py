"""WSGI apps as perf_load targets: Flask and Django served by real cheroot threads on
127.0.0.1, in this process or a child one."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cheroot")
flask = pytest.importorskip("flask")

from pytest_bridgeperf import AppFactory  # noqa: E402
from pytest_bridgeperf.load import LoadAppError, LoadOptionError, run_load  # noqa: E402


def make_flask(seen: list[tuple[str, int]]) -> Any:
    app = flask.Flask("wsgi_test")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        seen.append((flask.request.path, threading.get_ident()))
        return {"id": item_id}

    @app.get("/fail")
    def fail() -> Any:
        raise RuntimeError("handler error")

    return app


def test_a_flask_app_is_served_by_cheroot_threads() -> None:
    seen: list[tuple[str, int]] = []
    result = run_load(make_flask(seen), {"path": "/items/7", "users": 4, "requests": 200})
    assert result.status_counts == {200: 200}
    assert result.serve == "thread"
    assert len(seen) >= 200
    # cheroot's worker threads, not the generator's
    assert threading.get_ident() not in {ident for _, ident in seen}


def test_a_flask_error_is_an_http_500_counted_as_an_error() -> None:
    result = run_load(make_flask([]), {"path": "/fail", "requests": 20, "expect_errors": True})
    assert result.status_counts == {500: 20}
    assert result.error_types == {"HTTP 500": 20}


def _django_app() -> Any:
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="only-for-tests",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _django_view(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"path": request.path, "thread": threading.get_ident()})


def __getattr__(name: str) -> Any:
    # Django reads ROOT_URLCONF's urlpatterns lazily; importing django.urls at module import
    # would need the settings configured before the other tests of this module run
    if name == "urlpatterns":
        from django.urls import path

        return [path("hello/", _django_view)]
    raise AttributeError(name)


def test_a_django_wsgi_application_is_served() -> None:
    app = _django_app()
    result = run_load(app, {"path": "/hello/", "users": 2, "requests": 50})
    assert result.status_counts == {200: 50}
    assert result.bytes_received > 50 * len(b'{"path": "/hello/"}')


def test_serve_loop_is_refused_for_a_wsgi_app() -> None:
    with pytest.raises(LoadOptionError, match=r"serve='loop' needs an async app.*WSGI"):
        run_load(make_flask([]), {"serve": "loop", "requests": 1})


def _where_app(out: str) -> Any:
    app = flask.Flask("where")

    @app.get("/where")
    def where() -> str:
        Path(out).write_text(f"{os.getpid()} {threading.get_ident()}")
        return "ok"

    return app


def test_a_wsgi_factory_serves_in_a_child_process(tmp_path: Path) -> None:
    out = tmp_path / "where"
    result = run_load(
        AppFactory(_where_app, str(out)), {"path": "/where", "serve": "process", "requests": 5}
    )
    assert result.status_counts == {200: 5}
    assert int(out.read_text().split()[0]) != os.getpid()


def test_a_wsgi_factory_is_called_per_run() -> None:
    calls: list[Any] = []

    def create_app() -> Any:
        app = make_flask([])
        calls.append(app)
        return app

    for _ in range(2):
        run_load(create_app, {"path": "/items/1", "requests": 5, "app_factory": True})
    assert len(calls) == 2
    assert calls[0] is not calls[1]


def test_a_raising_wsgi_factory() -> None:
    def create_app() -> Any:
        raise RuntimeError("no config")

    with pytest.raises(LoadAppError, match="the app factory raised RuntimeError: no config"):
        run_load(create_app, {"requests": 1, "app_factory": True})


def test_the_run_waits_for_a_streamed_wsgi_body() -> None:
    closed: list[int] = []

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            try:
                yield b"a"
                yield b"b"
            finally:
                closed.append(1)

        return body()

    result = run_load(app, {"requests": 30, "users": 3})
    assert result.status_counts == {200: 30}
    # every body the server produced was closed by the time the run returned
    assert len(closed) >= 30
