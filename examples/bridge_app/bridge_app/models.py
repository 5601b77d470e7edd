"""The Bridge data model: connectors feed measurements; dashboards hold widgets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Connector", "Dashboard", "Measurement", "Widget"]


class Base(DeclarativeBase):
    pass


class Connector(Base):
    """A data source Bridge pulls from (a database, an object store, an HTTP API)."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Dashboard(Base):
    __tablename__ = "dashboards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(50), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # Lazy "select" loading on purpose: touching ``dashboard.widgets`` without an eager-load
    # option issues one query per dashboard -- the N+1 that ``list_dashboards_naive`` shows.
    widgets: Mapped[list[Widget]] = relationship(
        back_populates="dashboard", order_by="Widget.position", cascade="all, delete-orphan"
    )


class Widget(Base):
    __tablename__ = "widgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dashboard_id: Mapped[int] = mapped_column(ForeignKey("dashboards.id"), index=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id"))
    kind: Mapped[str] = mapped_column(String(30))
    title: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    dashboard: Mapped[Dashboard] = relationship(back_populates="widgets")


class Measurement(Base):
    """One observation reported by a connector (sync latency, rows synced, ...)."""

    __tablename__ = "measurements"
    # The statistics query partitions by metric and orders by value: this index serves both.
    __table_args__ = (Index("ix_measurements_metric_value", "metric", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id"), index=True)
    metric: Mapped[str] = mapped_column(String(40))
    value: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
