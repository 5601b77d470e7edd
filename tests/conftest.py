from __future__ import annotations

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


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Inner pytest runs start without pytest-randomly (installed for the neighbour tests, and
    otherwise active in every run: it would shuffle the inner tests whose output the tests
    match in order). pytester clears PYTEST_ADDOPTS when it starts, so this comes after it; a
    test that wants it passes ``-p randomly``."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly")
    return pytester
