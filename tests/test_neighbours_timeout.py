"""pytest-timeout beside perf_load: a timeout stops a load run and fails the test, for both of
its methods, sync and async tests, in-process apps, callables and worker processes — and
nothing the run started is left running.

The inner runs go through ``runpytest_subprocess``: the ``thread`` method ends the process with
``os._exit``, and the ``signal`` method's SIGALRM must not reach this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("pytest_timeout")

CONFTEST = """
import asyncio
import time
import pytest
from aiohttp import web

@pytest.fixture
def app():
    async def hello(request):
        return web.Response(text="hi")

    async def blocking(request):
        # blocks the event loop: the test's SIGALRM lands here, inside an aiohttp handler task
        time.sleep(0.6)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/blocking", blocking)
    return app
"""

TESTS = """
import pytest

def call():
    sum(range(1000))

def test_sync_app(perf_load, app):
    perf_load(app, users=2, duration="10s")

async def test_async_app(perf_load, app):
    await perf_load.arun(app, users=2, duration="10s")

def test_worker_processes(perf_load, app):
    perf_load(app, users=2, workers=2, duration="10s")

def test_callable(perf_load):
    perf_load(call, users=2, duration="10s")
"""

TIMEOUT_S = 3


def _tagged_processes(tag: str) -> list[int]:
    """Processes (the inner pytest's load workers among them) whose environment carries ``tag``."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("BRIDGEPERF_TEST_TAG") == tag:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[pytest.RunResult, float, str]:
    tag = uuid.uuid4().hex
    monkeypatch.setenv("BRIDGEPERF_TEST_TAG", tag)
    start = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--asyncio-mode=auto", *args
    )
    return result, time.monotonic() - start, tag


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_a_timeout_stops_the_load_run_and_fails_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_timeouts=TESTS)
    result, took, tag = _run(
        pytester, monkeypatch, f"--timeout={TIMEOUT_S}", f"--timeout-method={method}"
    )
    # every test failed, each with the run's own message, well before its 10 s run would end
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        ["*TimeoutError: the load run was stopped by the test's timeout of 3 s (pytest-timeout)*"]
        * 4,
        consecutive=False,
    )
    text = result.stdout.str() + result.stderr.str()
    assert "Task exception was never retrieved" not in text
    # four 10 s runs would take 40 s; four cut at 2.4 s take 10 s plus the interpreter and
    # worker start-ups — 30 s leaves a busy machine room while still proving the runs were cut
    assert took < 30, took
    assert _tagged_processes(tag) == []


def test_a_sigalrm_that_lands_in_a_handler_task_reaches_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_blocked="""
        from pytest_bridgeperf.load import run_load

        def test_blocked_loop(app):
            # the engine's entry point: no fixture, so no deadline; only the held alarm helps
            run_load(app, {"path": "/blocking", "users": 1, "duration": "10s"})
        """
    )
    result, took, tag = _run(pytester, monkeypatch, "--timeout=1", "--timeout-method=signal")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Failed: Timeout (>1.0s) from pytest-timeout*"])
    text = result.stdout.str() + result.stderr.str()
    assert "Task exception was never retrieved" not in text
    assert took < 20, took  # not the 10 s run plus teardown, on a busy machine
    assert _tagged_processes(tag) == []


def test_the_marker_and_func_only_are_honoured(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_marked="""
        import time
        import pytest

        @pytest.fixture
        def slow_setup():
            time.sleep(1.5)  # with func_only the timer starts after this

        @pytest.mark.timeout(3, func_only=True)
        def test_marked(slow_setup, perf_load, app):
            result = perf_load(app, users=1, duration="1s")
            assert result.count > 0  # fits: 1 s run within the 3 s the function has

        @pytest.mark.timeout(3, method="thread")
        def test_too_long(perf_load, app):
            perf_load(app, users=1, duration="8s")
        """
    )
    result, _, _ = _run(pytester, monkeypatch)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the load run was stopped by the test's timeout of 3 s*"])


def test_no_timeout_no_deadline(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_free="""
        def test_free(perf_load, app):
            result = perf_load(app, users=1, duration="1s")
            assert result.stopped_by is None
            assert result.elapsed == 1.0
        """
    )
    result, _, _ = _run(pytester, monkeypatch)
    result.assert_outcomes(passed=1)


# ---------------------------------------------------------------------------------------------
# the engine's side, without pytest-timeout


def test_a_held_alarm_stops_the_run_and_is_raised_by_the_runner() -> None:
    """The alarm lands while handler tasks run; the handler's exception comes out of run_load
    (not out of a task), promptly."""
    from aiohttp import web

    from pytest_bridgeperf.load import run_load

    class Alarm(Exception):
        pass

    def raise_alarm(signum: int, frame: object) -> None:
        raise Alarm("the test's time is up")

    async def busy(request: web.Request) -> web.Response:
        end = time.perf_counter() + 0.02  # CPU in the handler: where the signal lands
        while time.perf_counter() < end:
            pass
        return web.Response(text="busy")

    app = web.Application()
    app.router.add_get("/", busy)
    previous = signal.signal(signal.SIGALRM, raise_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        start = time.monotonic()
        with pytest.raises(Alarm, match="time is up"):
            run_load(app, {"users": 2, "duration": "5s"})
        took = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert took < 3.0, took  # the 5 s run was cut short after the alarm at 0.5 s


WORKERS_SCRIPT = """
import sys
from pytest_bridgeperf.load import run_load

print("started", flush=True)
run_load(sys.argv[1], {"users": 2, "workers": 2, "duration": "30s"})
"""


def test_worker_processes_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    """pytest-timeout's thread method ends the process with os._exit: its load workers stop by
    themselves."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Ok(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    httpd.daemon_threads = True
    Thread(target=httpd.serve_forever, daemon=True).start()
    script = tmp_path / "workers.py"
    script.write_text(textwrap.dedent(WORKERS_SCRIPT))
    parent = subprocess.Popen(
        [sys.executable, str(script), f"http://127.0.0.1:{httpd.server_address[1]}/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "started"
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 30  # two interpreters starting on a busy machine
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = psutil.Process(parent.pid).children()
            time.sleep(0.1)
        assert len(workers) == 2
        time.sleep(1.0)  # let the workers get into their run
        assert all(w.is_running() for w in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _gone, alive = psutil.wait_procs(workers, timeout=5)
        assert alive == [], alive
    finally:
        if parent.poll() is None:
            parent.kill()
        httpd.shutdown()
        httpd.server_close()
