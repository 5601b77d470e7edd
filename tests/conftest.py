from __future__ import annotations

from hypothesis import settings

pytest_plugins = ["pytester"]

# The suite runs on shared, noisy 2-core machines: hypothesis' per-example deadline would turn a
# scheduler hiccup into a "flaky" failure without saying anything about the code under test.
settings.register_profile("bridgeperf", deadline=None)
settings.load_profile("bridgeperf")
