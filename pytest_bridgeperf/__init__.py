"""pytest-bridgeperf: performance regression testing for pytest."""

from __future__ import annotations

from .metrics import Budgets, Metric, Recorder
from .stats import LatencyHistogram
from .units import UnitError

__version__ = "0.1.0.dev0"

__all__ = [
    "Budgets",
    "LatencyHistogram",
    "Metric",
    "Recorder",
    "UnitError",
    "__version__",
]
