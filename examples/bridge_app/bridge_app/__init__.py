"""Bridge: a small analytics service (connectors, statistics, dashboards) on aiohttp + SQLAlchemy,
the example application of pytest-bridgeperf."""

from __future__ import annotations

from .cache import CacheStats, TTLCache
from .db import make_engine, make_session_factory
from .models import Base, Connector, Dashboard, Measurement, Widget
from .seed import SeedCounts, seed_database
from .services import (
    MAX_PAGE_SIZE,
    Pagination,
    compute_statistics,
    connector_metadata,
    list_dashboards,
    list_dashboards_naive,
)
from .web import cache_key, create_app, engine_key, session_factory_key

__all__ = [
    "MAX_PAGE_SIZE",
    "Base",
    "CacheStats",
    "Connector",
    "Dashboard",
    "Measurement",
    "Pagination",
    "SeedCounts",
    "TTLCache",
    "Widget",
    "cache_key",
    "compute_statistics",
    "connector_metadata",
    "create_app",
    "engine_key",
    "list_dashboards",
    "list_dashboards_naive",
    "make_engine",
    "make_session_factory",
    "seed_database",
    "session_factory_key",
]
