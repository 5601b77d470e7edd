from __future__ import annotations

import os
import signal
import threading

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
    """pytester, with inner pytest runs (in process and in subprocesses) in file order.

    pytest-randomly is installed for the neighbour tests; pyproject turns it off for this suite
    but not for the inner runs, which it shuffled: tests that expect failures in file order
    failed in some orders (-x stopping at another test, two failure sections swapped). pytester
    clears PYTEST_ADDOPTS when it is set up, hence this override. A test that wants the plugin
    passes ``-p randomly``."""
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} -p no:randomly".strip())
    return pytester


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`cmd &`, nohup in a script)
    # inherits an ignored SIGINT, and every Python it starts keeps it ignored: the Ctrl-C tests
    # (which interrupt a run and check what it cleans up) need it delivered.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)
