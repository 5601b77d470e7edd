"""Fixtures: thin adapters from pytest to the pytest-free core."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .metrics import Recorder
from .plugin import baseline_value, recorder_for, settings_key

if TYPE_CHECKING:  # the optional dependencies are imported when a fixture is first used
    from .load.api import PerfLoad
    from .memory import PerfMemory
    from .queries import PerfQueries


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Recorder:
    """Record custom metrics: ``perf.record(name, value_or_samples, unit="s", better="lower")``.

    Works in any test; with ``--perf`` the recorded metrics are checked against the marker's
    budgets and compared with the baseline.
    """
    return recorder_for(request.node)


@pytest.fixture
def perf_load(request: pytest.FixtureRequest) -> Iterator[PerfLoad]:
    """Load tests: ``result = perf_load(target, users=16, duration="5s")`` or, in async tests,
    ``result = await perf_load.arun(...)``. ``target`` is a URL, an ``aiohttp.web.Application``
    (served on 127.0.0.1) or a callable. Results are recorded per request name; marker budgets
    (``p95=``, ``error_rate=``, ``rps=``) apply to them."""
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
    )
    yield load
    load.close()


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
