"""CPU and memory of the server and the generator during a load run (``result.server``,
``result.generator``), against what the kernel's own counters say about a known busy loop and
a known allocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("uvicorn")

from pytest_bridgeperf import AppFactory  # noqa: E402
from pytest_bridgeperf.load import resources, run_load  # noqa: E402
from pytest_bridgeperf.load.resources import (  # noqa: E402
    LoadGeneratorSaturated,
    ResourceSampler,
    ResourceUsage,
    Side,
    attach_usage,
)
from pytest_bridgeperf.thresholds import evaluate  # noqa: E402

# ---------------------------------------------------------------------------------------------
# a known busy loop: a thread that spins and logs its own CPU clock against the wall clock


def _spin(log: list[tuple[int, float]], stop: threading.Event) -> None:
    next_log = 0
    while not stop.is_set():
        now = time.perf_counter_ns()
        if now >= next_log:
            log.append((now, time.thread_time()))
            next_log = now + 10_000_000
        sum(range(200))


def _cpu_between(log: list[tuple[int, float]], start: int, end: int) -> float:
    """The spinner's CPU percent of one core between two perf_counter_ns instants, from its own
    log (linear between its 10 ms entries)."""

    def at(t: int) -> float:
        before = max((e for e in log if e[0] <= t), default=log[0])
        after = min((e for e in log if e[0] >= t), default=log[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0])

    return (at(end) - at(start)) / ((end - start) / 1e9) * 100


def _spinning_app(log: list[tuple[int, float]], out: str | None = None) -> Any:
    from contextlib import asynccontextmanager

    import fastapi

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        stop = threading.Event()
        spinner = threading.Thread(target=_spin, args=(log, stop), daemon=True)
        spinner.start()
        yield
        stop.set()
        spinner.join()
        if out is not None:
            Path(out).write_text(json.dumps(log))

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/")
    async def root() -> str:
        return "ok"

    return app


def _spinning_child(out: str) -> Any:
    return _spinning_app([], out)


# The spinner and the sampler read the same kernel counters over the same span (the usage's
# window), so they differ only by what else the server does: handling 20 requests/s (a few
# tenths of a millisecond of CPU each) and uvicorn's 10 Hz housekeeping — a few percent of a
# core. The 10 % (plus 3 points for that work) holds whatever share of a core the spinner gets
# on a busy machine, because both sides see the same share.
def _close(measured: float, expected: float) -> bool:
    return expected - 1.0 <= measured <= expected * 1.10 + 3.0


def test_server_cpu_of_an_in_process_app_matches_a_known_busy_loop() -> None:
    log: list[tuple[int, float]] = []
    result = run_load(_spinning_app(log), {"rate": 20, "duration": "2s", "users": 2})
    assert result.server is not None
    assert result.server.window is not None
    expected = _cpu_between(log, *result.server.window)
    assert expected > 10, f"the spinner got {expected:.0f} % of a core: the machine is starved"
    assert _close(result.server.cpu, expected), (result.server.cpu, expected)
    # the generator's thread does little at 20 requests/s; the spinner is not billed to it
    assert result.generator is not None
    assert result.generator.cpu < expected / 2
    assert "whole process" in (result.server.shared or "")


def test_server_cpu_of_a_child_process_matches_a_known_busy_loop(tmp_path: Path) -> None:
    out = tmp_path / "spin.json"
    result = run_load(
        AppFactory(_spinning_child, str(out)),
        {"rate": 20, "duration": "2s", "users": 2, "serve": "process"},
    )
    log = [tuple(e) for e in json.loads(out.read_text())]
    assert result.server is not None
    assert result.server.window is not None
    expected = _cpu_between(log, *result.server.window)  # type: ignore[arg-type]
    assert expected > 10, f"the spinner got {expected:.0f} % of a core: the machine is starved"
    assert _close(result.server.cpu, expected), (result.server.cpu, expected)
    assert result.server.shared is None


_BLOCK = 200 * 2**20


def _allocating_child(out: str) -> Any:
    import fastapi

    app = fastapi.FastAPI()
    app.state.block = bytearray(b"\x01") * _BLOCK  # written: every page resident
    Path(out).write_text(str(psutil.Process().memory_info().rss))

    @app.get("/")
    async def root() -> str:
        return "ok"

    return app


def test_server_rss_of_a_child_process_matches_a_known_allocation(tmp_path: Path) -> None:
    out = tmp_path / "rss"
    result = run_load(
        AppFactory(_allocating_child, str(out)),
        {"requests": 200, "users": 2, "serve": "process"},
    )
    reported = int(out.read_text())  # psutil in the child, right after the allocation
    assert reported > _BLOCK
    assert result.server is not None
    assert result.server.rss_peak is not None
    # sampled at 10 Hz while the block is held: at least what psutil saw, and the 200 requests
    # add far less than 10 % of it
    assert reported * 0.98 <= result.server.rss_peak <= reported * 1.10
    assert result.generator is not None
    assert result.generator.rss_peak is not None
    # the block is not ours: the generator's peak is this process's size (which, in a test
    # worker that ran a thousand tests, may itself exceed the child's), not that plus the block
    own = psutil.Process().memory_info().rss
    assert result.generator.rss_peak < own + _BLOCK / 2


def test_serve_loop_counts_the_shared_thread_on_both_sides() -> None:
    log: list[tuple[int, float]] = []
    app = _spinning_app(log)  # a thread of the app's, beside the shared loop

    @app.get("/async")
    async def on_the_loop() -> str:
        return "ok"

    result = run_load(app, {"path": "/async", "rate": 20, "duration": "1s", "serve": "loop"})
    assert result.server is not None
    assert result.generator is not None
    assert result.server.window is not None
    # the server: the whole process — the loop the two share, and the app's own thread
    spinner = _cpu_between(log, *result.server.window)
    assert result.server.cpu >= result.generator.cpu + spinner * 0.9 - 1.0
    assert "shares the generator's thread" in (result.server.shared or "")


@pytest.fixture
def http_server() -> Iterator[tuple[int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parent,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        port = int(line.split(" port ")[1].split()[0])
        yield proc.pid, port
    finally:
        proc.kill()
        proc.wait()


def test_a_url_target_finds_the_process_listening_on_its_port(
    http_server: tuple[int, int],
) -> None:
    pid, port = http_server
    # a second of requests: a short run's CPU (psutil reads it in 10 ms clock ticks) between two
    # samples 100 ms apart could round to nothing
    result = run_load(f"http://127.0.0.1:{port}/conftest.py", {"duration": "1s", "users": 2})
    assert result.count > 10
    assert result.server is not None
    assert result.server.cpu > 0  # http.server answered every request: it used some CPU
    assert result.server.rss_peak == pytest.approx(psutil.Process(pid).memory_info().rss, rel=0.10)


def test_a_callable_has_no_server_and_a_generator() -> None:
    result = run_load(lambda: None, {"requests": 100})
    assert result.server is None
    assert result.generator is not None
    assert "generator CPU" in result.summary()


def test_without_psutil_other_processes_are_unknown_not_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resources, "_psutil", lambda: None)
    sampler = ResourceSampler(Side(pids=(os.getpid(),)), Side(this_process=True, own_rss=True))
    assert sampler.server is None
    with sampler:
        time.sleep(0.25)
    server, generator = sampler.usage(None)
    assert server is None
    assert generator is not None
    assert generator.rss_peak is not None  # /proc/self/statm, without psutil


# ---------------------------------------------------------------------------------------------
# controlled samples: the arithmetic, the saturation warning, the thresholds


class _Result:
    name = "GET /"
    interrupted = False
    count = 10
    errors = 0
    measured_ns: tuple[int, int] | None = None
    server: ResourceUsage | None = None
    generator: ResourceUsage | None = None
    queries: Any = None


def _fake_sampler(generator_rate: float, server_rate: float) -> ResourceSampler:
    sampler = ResourceSampler(Side(threads=(1,)), Side(threads=(2,)))
    for i in range(11):  # one second, a sample every 100 ms
        t = i * 100_000_000
        sampler.samples.append(
            resources._Sample(
                t=t,
                server=server_rate * i / 10,
                generator=generator_rate * i / 10,
                units={"thread 2": generator_rate * i / 10},
                server_rss=100 + i,
                generator_rss=50,
            )
        )
    return sampler


def test_usage_arithmetic_on_controlled_samples() -> None:
    server, generator = _fake_sampler(0.5, 1.5).usage((200_000_000, 800_000_000))
    assert server is not None
    assert generator is not None
    assert server.cpu == pytest.approx(150.0)  # 1.5 s of CPU per second: 1.5 cores
    assert server.window == (200_000_000, 800_000_000)
    assert server.samples == (150.0,) * 6
    assert server.rss_peak == 110  # the highest of the whole run
    assert generator.cpu == pytest.approx(50.0)


def test_a_saturated_generator_warns_and_an_idle_one_does_not() -> None:
    result = _Result()
    with pytest.warns(LoadGeneratorSaturated, match="kept a core 95 % busy"):
        attach_usage(result, _fake_sampler(0.95, 0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attach_usage(result, _fake_sampler(0.6, 0.3))
    # split over generator processes: each saturated one is named by perf_load instead
    split = _Result()
    split.hosts = [object()]  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attach_usage(split, _fake_sampler(0.95, 0.3))


def test_serve_loop_does_not_call_its_busy_shared_thread_a_saturated_generator() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoadGeneratorSaturated)
        # a closed-model run without think time keeps the one thread busy by design
        result = run_load(app, {"users": 4, "duration": "1s"})
    assert result.serve == "loop"
    assert result.generator is not None


def test_resource_thresholds() -> None:
    result = _Result()
    attach_usage(result, _fake_sampler(0.2, 0.7), warn=False)
    outcomes = evaluate(result, ["server_cpu < 80%", "server_rss < 300MB", "generator_cpu < 10"])
    assert [o.passed for o in outcomes] == [True, True, False]
    assert outcomes[0].measured == pytest.approx(0.7)
    assert "measured 20.0 %" in outcomes[2].describe()
    result.server = None
    missing = evaluate(result, ["server_cpu < 80%"])[0]
    assert not missing.passed
    assert "resources were not measured" in missing.reason
