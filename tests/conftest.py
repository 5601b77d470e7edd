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
