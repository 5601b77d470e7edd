"""The end of a duration-based run: nothing more is sent, the requests in flight are waited for
(never counted), and an in-process app has finished handling them when the run returns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp import web

from pytest_bridgeperf.load import run_load

# every slow request of the in-process app takes this long in its handler: longer than what
# aiohttp's shutdown grants running handlers (0.5 s to finish, 0.5 s more once cancelled; the
# handlers here do not notice a cancelled request), so only a run that waits for them sees them
# finish
HANDLER_S = 1.5
# the threaded URL server's handlers: any length shows whether the client waits
URL_HANDLER_S = 0.3


def slow_app(counts: dict[str, int]) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        counts["started"] += 1
        await asyncio.sleep(HANDLER_S)
        counts["finished"] += 1
        return web.Response(text="slow")

    async def streamed(request: web.Request) -> web.StreamResponse:
        # the client has the whole answer before the handler is done: what a FastAPI app does
        # when it closes a request-scoped session after the response is sent
        counts["started"] += 1
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"done")
        await response.write_eof()
        await asyncio.sleep(HANDLER_S)
        counts["finished"] += 1
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/streamed", streamed)
    return app


@pytest.mark.parametrize("path", ["/slow", "/streamed"])
def test_requests_in_flight_at_the_end_are_awaited_not_counted(path: str) -> None:
    counts = {"started": 0, "finished": 0}
    started = time.monotonic()
    result = run_load(slow_app(counts), {"path": path, "users": 4, "duration": "0.6s"})
    took = time.monotonic() - started
    # every user always has a request in flight (the next goes out in the callback of the last
    # answer), so the window closed on some; none of them is counted
    assert result.unfinished >= 1, result.summary()
    assert result.errors == 0
    assert result.count == result.sent - result.unfinished
    assert result.latency_count == result.count
    assert result.elapsed == pytest.approx(0.6)
    # the app has handled exactly what was sent, to the end of each handler
    assert counts["started"] == result.sent
    assert counts["finished"] == counts["started"]
    # waiting for them costs at most one handler's time, plus the run's own setup; 3 s is far
    # beyond any scheduling delay on a busy 2-core machine yet well below the 5 s request
    # timeout the wait is bounded by
    assert took < 0.6 + HANDLER_S + 3.0


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load engines use it
    answered = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        time.sleep(URL_HANDLER_S)
        with self.lock:  # counted before the answer leaves: an answer implies the count
            type(self).answered += 1
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"slow")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    _SlowHandler.answered = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_url_target_answers_every_request_before_the_run_returns(
    slow_server: str, engine: str
) -> None:
    result = run_load(slow_server + "/", {"users": 3, "duration": "0.6s", "engine": engine})
    with _SlowHandler.lock:
        answered = _SlowHandler.answered
    assert result.unfinished >= 1, result.summary()
    assert result.count == result.sent - result.unfinished
    # the server has answered everything that was sent, the requests in flight at the end too
    assert answered == result.sent


def test_open_model_waits_for_its_requests_in_flight_too() -> None:
    counts = {"started": 0, "finished": 0}
    result = run_load(
        slow_app(counts), {"path": "/slow", "rate": 20, "users": 64, "duration": "0.5s"}
    )
    # at 20/s with 1.5 s handlers the first 10 sends are all still in flight at the end
    assert result.unfinished >= 1, result.summary()
    assert result.count == result.sent - result.unfinished
    assert counts["finished"] == counts["started"] == result.sent


def test_a_ctrl_c_does_not_wait_for_requests_in_flight() -> None:
    from pytest_bridgeperf.load.engine import Run
    from pytest_bridgeperf.load.options import build_options

    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        run = Run(
            build_options({"duration": "10s", "timeout": "30s"}, max_duration=60), loop, label="x"
        )
        run.inflight = 3  # three requests were sent and never answer
        run.stop(drain=True)
        waited = asyncio.ensure_future(run.wait())
        await asyncio.sleep(0.05)
        drained_early = waited.done()
        start = time.monotonic()
        run.interrupt()
        await waited
        return drained_early, time.monotonic() - start

    drained_early, took = asyncio.run(main())
    assert not drained_early  # it was waiting for the three
    assert took < 1.0  # and the interrupt ended the wait at once (not the 30 s timeout)


PERF_QUERIES_APP = """
import asyncio
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    yield engine
    engine.dispose()

@pytest.fixture
def app(engine):
    async def item(request):
        # a request-scoped connection, returned to the pool when the handler ends
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            # longer than aiohttp's shutdown grants a running handler (see test_load_end.py)
            await asyncio.sleep(1.5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/item", item)
    return app
"""


def test_a_perf_queries_block_around_a_run_sees_every_connection_returned(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PERF_QUERIES_APP)
    pytester.makepyfile(
        """
        def test_load_under_a_query_block(perf_load, perf_queries, app, engine):
            with perf_queries(engine) as q:
                result = perf_load(app, path="/item", users=3, duration="0.6s")
            assert result.unfinished >= 1
            assert q.count == result.sent
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
