"""pytest-bridgeperf: performance regression testing for pytest.

The classes the fixtures return are exported here for type annotations::

    def test_export(perf_load: PerfLoad, perf_queries: PerfQueries) -> None: ...

Importing this package imports neither pytest nor the optional dependencies (aiohttp,
SQLAlchemy, psutil): the load, query and memory classes are loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .metrics import Budgets, Metric, Recorder
from .stats import LatencyHistogram
from .units import UnitError

if TYPE_CHECKING:
    from .load import AppFactory, LoadAppError, LoadError, LoadResult, Request, ResourceUsage
    from .load.api import PerfLoad
    from .load.sessions import VirtualUser
    from .measure import MeasureError, Timer
    from .memory import LeakDetected, LeakReport, MemoryBlock, MemoryBudgetExceeded, PerfMemory
    from .queries import PerfQueries, QueryCapture, Statement, fingerprint
    from .thresholds import ThresholdError

__version__ = "0.1.0.dev0"

_LAZY = {
    "AppFactory": "pytest_bridgeperf.load",
    "LoadAppError": "pytest_bridgeperf.load",
    "LoadError": "pytest_bridgeperf.load",
    "LoadResult": "pytest_bridgeperf.load",
    "Request": "pytest_bridgeperf.load",
    "ResourceUsage": "pytest_bridgeperf.load",
    "VirtualUser": "pytest_bridgeperf.load.sessions",
    "PerfLoad": "pytest_bridgeperf.load.api",
    "ThresholdError": "pytest_bridgeperf.thresholds",
    "Timer": "pytest_bridgeperf.measure",
    "MeasureError": "pytest_bridgeperf.measure",
    "PerfQueries": "pytest_bridgeperf.queries",
    "QueryCapture": "pytest_bridgeperf.queries",
    "Statement": "pytest_bridgeperf.queries",
    "fingerprint": "pytest_bridgeperf.queries",
    "PerfMemory": "pytest_bridgeperf.memory",
    "MemoryBlock": "pytest_bridgeperf.memory",
    "MemoryBudgetExceeded": "pytest_bridgeperf.memory",
    "LeakReport": "pytest_bridgeperf.memory",
    "LeakDetected": "pytest_bridgeperf.memory",
}

__all__ = [
    "AppFactory",
    "Budgets",
    "LatencyHistogram",
    "LeakDetected",
    "LeakReport",
    "LoadAppError",
    "LoadError",
    "LoadResult",
    "MeasureError",
    "MemoryBlock",
    "MemoryBudgetExceeded",
    "Metric",
    "PerfLoad",
    "PerfMemory",
    "PerfQueries",
    "QueryCapture",
    "Recorder",
    "Request",
    "ResourceUsage",
    "Statement",
    "ThresholdError",
    "Timer",
    "UnitError",
    "VirtualUser",
    "__version__",
    "fingerprint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_bridgeperf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
