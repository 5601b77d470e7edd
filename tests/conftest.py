from __future__ import annotations

import os

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

# The suite runs on shared, noisy 2-core machines: hypothesis' per-example deadline would turn a
# scheduler hiccup into a "flaky" failure without saying anything about the code under test.
settings.register_profile("bridgeperf", deadline=None)
settings.load_profile("bridgeperf")


@pytest.fixture(autouse=True)
def _no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin appends to $GITHUB_STEP_SUMMARY when it is set: the suite's own inner pytest
    runs must not write into the real job summary of a CI run on GitHub."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(autouse=True)
def _inner_runs_in_file_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-randomly is installed for the neighbour tests; pyproject turns it off for this
    suite, but not for the inner pytest runs (pytester, subprocesses), which it shuffled: tests
    expecting failures in file order failed in some orders (-x stopping at another test, the
    failure sections of two tests swapped). A test that wants it passes ``-p randomly``."""
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} -p no:randomly".strip())
