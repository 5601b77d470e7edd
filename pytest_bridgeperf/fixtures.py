"""Fixtures: thin adapters from pytest to the pytest-free core."""

from __future__ import annotations

import pytest

from .metrics import Recorder
from .plugin import recorder_for


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Recorder:
    """Record custom metrics: ``perf.record(name, value_or_samples, unit="s", better="lower")``.

    Works in any test; with ``--perf`` the recorded metrics are checked against the marker's
    budgets and compared with the baseline.
    """
    return recorder_for(request.node)


import typing  # noqa: E402 (appended with the perf_memory fixture)

if typing.TYPE_CHECKING:  # the memory package is imported when the fixture is first used
    from .memory import PerfMemory


@pytest.fixture
def perf_memory(request: pytest.FixtureRequest) -> PerfMemory:
    """Memory budgets: ``with perf_memory(budget="64MB", kind="python") as m:`` (also
    ``async with``) measures a block — ``m.peak``, ``m.current``, ``m.rss_peak`` — and records it;
    ``perf_memory.leaks(func, iterations=20)`` fails on steadily growing allocation sites."""
    from .memory import PerfMemory
    from .plugin import settings_key

    item = request.node
    config = request.config

    def baseline(metric: str) -> float | None:
        session = config.pluginmanager.get_plugin("bridgeperf-session")
        store = getattr(session, "baseline", None)
        if store is None or settings_key not in config.stash:
            return None
        found = store.metrics(config.stash[settings_key].env, item.nodeid).get(metric)
        return None if found is None else float(found.value)

    return PerfMemory(recorder_for(item), baseline=baseline)
