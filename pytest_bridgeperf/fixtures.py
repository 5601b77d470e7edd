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
