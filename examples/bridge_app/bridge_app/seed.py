"""Deterministic demo data: the same rows on every machine and every run."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from .models import Base, Connector, Dashboard, Measurement, Widget

__all__ = [
    "CONNECTOR_KINDS",
    "METRICS",
    "SeedCounts",
    "create_schema",
    "is_seeded",
    "seed_database",
]

CONNECTOR_KINDS = ("postgres", "mysql", "s3", "bigquery", "http")
#: Measurement metrics and the (mu, sigma) of the log-normal their values follow.
METRICS = {
    "sync_latency_ms": (4.0, 0.6),
    "rows_synced": (7.0, 1.0),
    "payload_kb": (3.0, 0.8),
    "lag_seconds": (0.0, 0.9),
}
WIDGET_KINDS = ("line_chart", "bar_chart", "table", "kpi", "heatmap")
OWNERS = ("analytics", "growth", "finance", "platform", "support", "sales")
EPOCH = datetime(2024, 1, 1)


@dataclass(frozen=True)
class SeedCounts:
    connectors: int = 20
    dashboards: int = 200
    widgets_per_dashboard: int = 5
    measurements: int = 10_000


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def is_seeded(engine: Engine) -> bool:
    with Session(engine) as session:
        return bool(session.scalar(select(func.count()).select_from(Connector)))


def seed_database(engine: Engine, counts: SeedCounts = SeedCounts(), seed: int = 20240101) -> None:
    """Create the schema and insert the demo rows in one transaction (bulk executemany)."""
    create_schema(engine)
    rng = random.Random(seed)
    connectors = [
        {
            "id": i,
            "name": f"connector-{i:03d}",
            "kind": CONNECTOR_KINDS[(i - 1) % len(CONNECTOR_KINDS)],
            "status": "active" if i % 7 else "paused",
            "version": f"1.{i % 4}.{i % 3}",
            "created_at": EPOCH + timedelta(days=i),
        }
        for i in range(1, counts.connectors + 1)
    ]
    dashboards = [
        {
            "id": i,
            "name": f"Dashboard {i:03d}",
            "owner": OWNERS[i % len(OWNERS)],
            "created_at": EPOCH + timedelta(hours=i),
        }
        for i in range(1, counts.dashboards + 1)
    ]
    widgets = [
        {
            "dashboard_id": d,
            "connector_id": (d * 7 + p) % counts.connectors + 1,
            "kind": WIDGET_KINDS[(d + p) % len(WIDGET_KINDS)],
            "title": f"Widget {d}.{p}",
            "position": p,
        }
        for d in range(1, counts.dashboards + 1)
        for p in range(counts.widgets_per_dashboard)
    ]
    metric_names = list(METRICS)
    measurements = []
    for i in range(counts.measurements):
        metric = metric_names[i % len(metric_names)]
        mu, sigma = METRICS[metric]
        measurements.append(
            {
                "connector_id": rng.randrange(counts.connectors) + 1,
                "metric": metric,
                # Rounded so that the last-ulp differences of libm across platforms vanish.
                "value": round(rng.lognormvariate(mu, sigma), 3),
                "recorded_at": EPOCH + timedelta(minutes=i),
            }
        )
    with Session(engine) as session, session.begin():
        session.execute(insert(Connector), connectors)
        session.execute(insert(Dashboard), dashboards)
        session.execute(insert(Widget), widgets)
        session.execute(insert(Measurement), measurements)
