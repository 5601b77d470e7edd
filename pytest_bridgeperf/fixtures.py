"""Fixtures: thin adapters from pytest to the pytest-free core."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .metrics import Recorder
from .plugin import baseline_value, recorder_for, settings_key
from .state import budgets_key

if TYPE_CHECKING:  # the optional dependencies are imported when a fixture is first used
    from .load.api import PerfLoad
    from .load.interrupts import Deadline
    from .memory import PerfMemory
    from .queries import PerfQueries


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Recorder:
    """Record custom metrics: ``perf.record(name, value_or_samples, unit="s", better="lower")``;
    time a function: ``perf.measure(fn, *args)`` (``await perf.ameasure(...)`` for coroutine
    functions); time a block: ``with perf.timer("render"):``.

    Works in any test; with ``--perf`` the recorded metrics are checked against the marker's
    budgets and compared with the baseline.
    """
    return recorder_for(request.node)


@pytest.fixture
def perf_load(request: pytest.FixtureRequest) -> Iterator[PerfLoad]:
    """Load tests: ``result = perf_load(target, users=16, duration="5s")`` or, in async tests,
    ``result = await perf_load.arun(...)``. ``target`` is a URL, a web app served on 127.0.0.1
    for the run (ASGI, WSGI, ``aiohttp.web.Application``; ``serve="loop"|"thread"|"process"``),
    an app factory (``app_factory=True`` or ``AppFactory(fn, ...)``) or a callable. Results are
    recorded per request name; marker budgets (``p95=``, ``error_rate=``, ``rps=``) apply to
    them."""
    from .load.api import PerfLoad

    config = request.config
    settings = config.stash[settings_key]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")

    def terminal(text: str) -> None:
        if reporter is None:
            return
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            reporter.write_line(text)

    progress = None
    if reporter is not None and reporter.isatty() and not settings.quiet:
        shown = [0]

        def progress(line: str | None) -> None:
            # drawn after the test's own status text and erased with backspaces, so the
            # terminal line pytest is writing stays intact
            n = shown[0]
            text = "" if line is None else " " + line
            with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
                # straight to the terminal, past the reporter: its line-width bookkeeping
                # (used to right-align the progress percentage) must not count these
                reporter.flush()
                sys.stdout.write("\b" * n + " " * n + "\b" * n + text)
                sys.stdout.flush()
            shown[0] = len(text)

    load = PerfLoad(
        recorder_for(request.node),
        allowed_hosts=settings.allowed_hosts,
        max_duration=settings.max_duration,
        progress=progress,
        report=terminal,
        deadline=lambda: _timeout_deadline(request.node),
        duration_cap=_round_option(config, "load_duration"),
        load_hosts=settings.load_hosts,
        queries_budget=_queries_budget(request.node),
    )
    yield load
    load.close()


def _round_option(config: pytest.Config, name: str) -> Any:
    """An option the ``--perf-against`` controller gave this round (in a side's session)."""
    side = config.pluginmanager.get_plugin("bridgeperf-side")
    request = getattr(side, "request", None)
    return getattr(request, "options", {}).get(name) if request is not None else None


def _queries_budget(item: pytest.Item) -> bool:
    budgets = item.stash.get(budgets_key, None)
    return budgets is not None and budgets.queries_per_request is not None


# ---------------------------------------------------------------------------------------------
# pytest-timeout: a load run ends itself, with a clear failure, before the test's timeout fires

_timeout_key = pytest.StashKey[tuple[float, Any]]()


@pytest.hookimpl(optionalhook=True, wrapper=True)  # optional: the hook is pytest-timeout's
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> Generator[None, Any, Any]:
    """Note when pytest-timeout starts the test's timer, and its settings as it resolved them
    (marker, option, ini, env): the timer starts before the fixtures (or, with ``func_only``,
    after them), so the fixture alone cannot know when it fires."""
    started = time.monotonic()
    result = yield
    item.stash[_timeout_key] = (started, settings)
    return result


@pytest.hookimpl(optionalhook=True, wrapper=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    if _timeout_key in item.stash:
        del item.stash[_timeout_key]
    return result


def _timeout_deadline(item: pytest.Item) -> Deadline | None:
    """When a load run must have ended so that the test fails with the run's own message
    rather than by pytest-timeout's signal or, with its thread method, by the process exiting."""
    from .load.interrupts import Deadline

    found = item.stash.get(_timeout_key, None)
    if found is None:
        return None
    started, settings = found
    timeout = float(getattr(settings, "timeout", 0) or 0)
    if timeout <= 0:
        return None
    if not getattr(settings, "disable_debugger_detection", False):
        try:
            from pytest_timeout import is_debugging
        except ImportError:
            pass
        else:
            if is_debugging():  # pytest-timeout will not fire either
                return None
    # after the run the test still has to close its connections, stop the in-process app
    # (aiohttp grants running handlers up to 0.5 s) and the worker processes (about 0.3 s for
    # two), raise, and have pytest report the failure: a fifth of the timeout, 0.5 s to 2 s.
    # (A quarter of a second was not enough on a 2-core machine at a load average of 15.)
    margin = min(2.0, max(0.5, timeout / 5))
    return Deadline(
        started + timeout - margin, f"the test's timeout of {timeout:g} s (pytest-timeout)"
    )


@pytest.fixture
def perf_queries(request: pytest.FixtureRequest) -> PerfQueries:
    """SQL query budgets: ``with perf_queries(*engines) as q:`` (no engine: every SQLAlchemy
    engine; an ``AsyncEngine`` works) — ``q.count``, ``q.statements``, ``q.fingerprints``,
    ``q.assert_count(n)``, ``q.assert_max(n)``, ``q.assert_no_n_plus_one(threshold=3)``. Each
    block records a ``queries`` metric (fingerprints included) compared with the baseline, and
    fails when a connection it checked out is still checked out at its end."""
    from .queries import PerfQueries

    library_modules = request.config.stash[settings_key].library_modules
    return PerfQueries(recorder_for(request.node), library_modules=library_modules)


@pytest.fixture
def perf_memory(request: pytest.FixtureRequest) -> PerfMemory:
    """Memory budgets: ``with perf_memory(budget="64MB", kind="python") as m:`` (also
    ``async with``) measures a block — ``m.peak``, ``m.current``, ``m.rss_peak`` — and records it;
    ``perf_memory.leaks(func, iterations=20)`` fails on steadily growing allocation sites."""
    from .memory import PerfMemory

    item = request.node
    return PerfMemory(recorder_for(item), baseline=lambda metric: baseline_value(item, metric))
