"""What the endpoints compute, as plain functions of a SQLAlchemy session.

The handlers in :mod:`bridge_app.web` only parse the request and serialise the result, so tests
(and perf tests) can call these directly with a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from .models import Connector, Dashboard, Measurement

__all__ = [
    "MAX_PAGE_SIZE",
    "PERCENTILES",
    "Pagination",
    "compute_statistics",
    "connector_metadata",
    "list_dashboards",
    "list_dashboards_naive",
]

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
#: Nearest-rank percentiles the statistics endpoint reports.
PERCENTILES = (50, 95, 99)

GroupBy = Literal["metric", "connector"]


def connector_metadata(session: Session, kind: str | None = None) -> list[dict[str, Any]]:
    """Every connector (optionally of one ``kind``) with its measurement count and last report.

    One grouped query over connectors and measurements; costly enough to be worth caching.
    """
    stmt = (
        select(
            Connector,
            func.count(Measurement.id).label("measurement_count"),
            func.max(Measurement.recorded_at).label("last_recorded_at"),
        )
        .outerjoin(Measurement, Measurement.connector_id == Connector.id)
        .group_by(Connector.id)
        .order_by(Connector.id)
    )
    if kind is not None:
        stmt = stmt.where(Connector.kind == kind)
    return [
        {
            "id": connector.id,
            "name": connector.name,
            "kind": connector.kind,
            "status": connector.status,
            "version": connector.version,
            "created_at": connector.created_at.isoformat(),
            "measurement_count": count,
            "last_recorded_at": last.isoformat() if last is not None else None,
        }
        for connector, count, last in session.execute(stmt)
    ]


def compute_statistics(
    session: Session,
    *,
    group_by: GroupBy = "metric",
    metric: str | None = None,
    connector_id: int | None = None,
) -> list[dict[str, Any]]:
    """count, mean, min, max and nearest-rank p50/p95/p99 of measurement values, all in SQL.

    A window subquery numbers each group's values in order; the outer query aggregates, taking
    percentile q as the smallest value whose row number reaches ``q/100 * n`` (nearest rank).
    One statement, whatever the number of groups.
    """
    keys: list[InstrumentedAttribute[Any]] = [Measurement.metric]
    if group_by == "connector":
        keys = [Measurement.connector_id, Measurement.metric]
    elif group_by != "metric":
        raise ValueError(f"group_by must be 'metric' or 'connector', got {group_by!r}")
    ranked_stmt = select(
        *keys,
        Measurement.value,
        func.row_number().over(partition_by=keys, order_by=Measurement.value).label("rn"),
        func.count().over(partition_by=keys).label("n"),
    )
    if metric is not None:
        ranked_stmt = ranked_stmt.where(Measurement.metric == metric)
    if connector_id is not None:
        ranked_stmt = ranked_stmt.where(Measurement.connector_id == connector_id)
    ranked = ranked_stmt.subquery()
    group_cols = [ranked.c[key.key] for key in keys]
    percentile_cols = [
        func.min(case((ranked.c.rn >= ranked.c.n * (q / 100.0), ranked.c.value))).label(f"p{q}")
        for q in PERCENTILES
    ]
    stmt = (
        select(
            *group_cols,
            func.count().label("count"),
            func.avg(ranked.c.value).label("mean"),
            func.min(ranked.c.value).label("min"),
            func.max(ranked.c.value).label("max"),
            *percentile_cols,
        )
        .group_by(*group_cols)
        .order_by(*group_cols)
    )
    result = []
    for row in session.execute(stmt).mappings():
        entry: dict[str, Any] = {key.key: row[key.key] for key in keys}
        entry["count"] = row["count"]
        for name in ("mean", "min", "max", *(f"p{q}" for q in PERCENTILES)):
            entry[name] = round(float(row[name]), 6)
        result.append(entry)
    return result


@dataclass(frozen=True)
class Pagination:
    """``page`` counts from 1. ``page_size`` above :data:`MAX_PAGE_SIZE` is clamped to it (as the
    guide's ``PaginatedQuery`` does); ``requested_page_size`` keeps what the client asked for."""

    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    requested_page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(cls, page: str | None, page_size: str | None) -> Pagination:
        """From query-string values; raises ``ValueError`` for non-integers and values below 1."""
        page_no = _positive_int("page", page, 1)
        requested = _positive_int("page_size", page_size, DEFAULT_PAGE_SIZE)
        return cls(page_no, min(requested, MAX_PAGE_SIZE), requested)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def clamped(self) -> bool:
        return self.requested_page_size != self.page_size


def _positive_int(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def list_dashboards(session: Session, pagination: Pagination) -> dict[str, Any]:
    """One page of dashboards with their widgets: three statements whatever the page size
    (count, the page, and one ``SELECT ... WHERE dashboard_id IN (...)`` for all widgets)."""
    stmt = _page_stmt(pagination).options(selectinload(Dashboard.widgets))
    return _page(session, pagination, session.scalars(stmt).all())


def list_dashboards_naive(session: Session, pagination: Pagination) -> dict[str, Any]:
    """Same result as :func:`list_dashboards`, loaded the naive way: the widgets of each dashboard
    are lazy-loaded one query at a time -- 2 + page_size statements (the N+1 problem). Kept for
    the query-budget examples."""
    return _page(session, pagination, session.scalars(_page_stmt(pagination)).all())


# Select[Any]: the row type is Select[tuple[Dashboard]] in SQLAlchemy 2.0, Select[Dashboard] in 2.1.
def _page_stmt(pagination: Pagination) -> Select[Any]:
    return (
        select(Dashboard)
        .order_by(Dashboard.id)
        .offset(pagination.offset)
        .limit(pagination.page_size)
    )


def _page(
    session: Session, pagination: Pagination, dashboards: Sequence[Dashboard]
) -> dict[str, Any]:
    total = session.scalar(select(func.count()).select_from(Dashboard)) or 0
    total_pages = (total + pagination.page_size - 1) // pagination.page_size
    return {
        "data": [
            {
                "id": dashboard.id,
                "name": dashboard.name,
                "owner": dashboard.owner,
                "created_at": dashboard.created_at.isoformat(),
                "widgets": [
                    {
                        "id": widget.id,
                        "kind": widget.kind,
                        "title": widget.title,
                        "position": widget.position,
                        "connector_id": widget.connector_id,
                    }
                    for widget in dashboard.widgets
                ],
            }
            for dashboard in dashboards
        ],
        "pagination": {
            "page": pagination.page,
            "page_size": pagination.page_size,
            "requested_page_size": pagination.requested_page_size,
            "clamped": pagination.clamped,
            "total_count": total,
            "total_pages": total_pages,
            "has_next": pagination.page < total_pages,
            "has_prev": pagination.page > 1,
        },
    }
