"""Which errors, not only how many: thresholds and budgets on errors list the error types, and a
run in which every request failed raises LoadError (real servers answering 500, real refused
connections)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiohttp import web

import pytest_bridgeperf
from pytest_bridgeperf.load import LoadError, LoadOptionError, run_load
from pytest_bridgeperf.thresholds import describe_errors


def test_describe_errors_ranks_and_caps_the_types() -> None:
    assert describe_errors({}) == ""
    text = describe_errors({"HTTP 500": 561, "TimeoutError": 3}, {500: 561, 200: 36})
    assert text == (
        "errors by type: HTTP 500 ×561, TimeoutError ×3; responses by status: 500 ×561, 200 ×36"
    )
    many = {f"E{i}": 10 - i for i in range(8)}
    assert describe_errors(many) == (
        "errors by type: E0 ×10, E1 ×9, E2 ×8, E3 ×7, E4 ×6, 3 more type(s) ×12"
    )


def test_load_error_is_public() -> None:
    assert pytest_bridgeperf.LoadError is LoadError
    assert issubclass(LoadError, AssertionError)


def error_app() -> web.Application:
    seen = [0]

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def half(request: web.Request) -> web.Response:
        seen[0] += 1
        return web.Response(status=500 if seen[0] % 2 else 200, text="half")

    app = web.Application()
    app.router.add_get("/fail", fail)
    app.router.add_get("/half", half)
    return app


def test_every_request_answered_500_raises_load_error() -> None:
    with pytest.raises(LoadError) as info:
        run_load(error_app(), {"path": "/fail", "users": 2, "requests": 20})
    message = str(info.value)
    assert "every one of the 20 requests of GET /fail" in message
    assert "errors by type: HTTP 500 ×20; responses by status: 500 ×20" in message
    assert "expect_errors=True" in message
    assert info.value.result.count == 20
    assert info.value.result.errors == 20


def test_expect_errors_accepts_a_failing_run() -> None:
    result = run_load(error_app(), {"path": "/fail", "requests": 10, "expect_errors": True})
    assert result.errors == result.count == 10
    with pytest.raises(LoadOptionError, match="expect_errors=1: expected True or False"):
        run_load(error_app(), {"path": "/fail", "requests": 10, "expect_errors": 1})


def test_a_failing_error_threshold_lists_the_error_types() -> None:
    result = run_load(error_app(), {"path": "/half", "requests": 40})
    assert result.errors == 20
    with pytest.raises(AssertionError) as info:
        result.check("errors == 0", "count >= 40")
    text = str(info.value)
    assert "✗ errors == 0  (measured 20)" in text
    assert "errors by type: HTTP 500 ×20; responses by status: 200 ×20, 500 ×20" in text
    with pytest.raises(AssertionError) as rate:
        result.check("error_rate < 1%")
    assert "errors by type: HTTP 500 ×20" in str(rate.value)
    # a failure that is not about errors does not list them
    with pytest.raises(AssertionError) as other:
        result.check("count >= 1000")
    assert "errors by type" not in str(other.value)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listening: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_every_call_refused_raises_load_error(refused_port: int) -> None:
    def connect() -> None:
        with socket.create_connection(("127.0.0.1", refused_port), timeout=1):
            pass

    with pytest.raises(LoadError) as info:
        run_load(connect, {"users": 2, "requests": 30})
    message = str(info.value)
    assert "every one of the 30 calls of" in message
    assert "errors by type: ConnectionRefusedError ×30" in message


def test_a_server_that_closes_every_connection_raises_load_error() -> None:
    """The first connection is accepted (so it is no LoadConnectionError), then every request
    finds the connection closed under it."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def accept_and_close() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.recv(65536)  # wait for the request, then hang up without an answer
            conn.close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(LoadError) as info:
            run_load(url, {"users": 1, "requests": 10})
    finally:
        stop.set()
        thread.join()
        listener.close()
    failed = info.value.result
    assert failed.errors == failed.count == 10
    # a FIN or, when the request was not read to the end yet, a reset
    assert set(failed.error_types) <= {"ServerDisconnected", "ConnectionResetError"}
    assert describe_errors(failed.error_types) in str(info.value)


PLUGIN_APP = """
import pytest
from aiohttp import web

@pytest.fixture
def app():
    seen = [0]

    async def fail(request):
        return web.Response(status=500, text="boom")

    async def half(request):
        seen[0] += 1
        return web.Response(status=503 if seen[0] % 4 == 0 else 200, text="half")

    app = web.Application()
    app.router.add_get("/fail", fail)
    app.router.add_get("/half", half)
    return app
"""


def test_plugin_messages_name_the_errors(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_APP)
    pytester.makepyfile(
        """
        import pytest

        def test_all_failed(perf_load, app):
            perf_load(app, path="/fail", requests=12)

        def test_expected(perf_load, app):
            result = perf_load(app, path="/fail", requests=12, expect_errors=True)
            assert result.errors == 12

        @pytest.mark.perf(error_rate="1%")
        def test_budget(perf_load, app):
            perf_load(app, path="/half", requests=40)

        def test_check(perf_load, app):
            perf_load(app, path="/half", requests=40).check("errors == 0")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "--perf")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*LoadError: every one of the 12 requests of GET /fail * failed — errors by type: "
            "HTTP 500 ×12; responses by status: 500 ×12. *expect_errors=True*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "perf: GET /half error_rate: error_rate 25.0 % (budget ≤ 1%)",
            "GET /half error_rate:",
            "errors by type: HTTP 503 ×10; responses by status: 200 ×30, 503 ×10",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*✗ errors == 0  (measured 10)",
            "*errors by type: HTTP 503 ×10; responses by status: 200 ×30, 503 ×10",
        ]
    )
