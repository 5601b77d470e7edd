"""Memory budgets of the Bridge app's measurement export: streamed in chunks vs loaded at once.

The guide's ``MemoryEfficientProcessor`` reads a large table in chunks so that memory stays flat
however many rows there are. These tests hold the export to that: the streamed export has a
Python-heap budget (exact, so a drift is caught against the baseline, not only a disaster), and
it must stay well below the naive export that loads every row as ORM objects first.

Python-heap bytes are exact, so a measured block should start after a warm-up run: caches that
fill on first use (compiled statements, lazy imports) are otherwise counted or not depending on
which test ran first.

Run with ``pytest --perf examples/bridge_app``; the ``perf_memory`` blocks also run without it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import pytest
from bridge_app.models import Measurement
from sqlalchemy import select
from sqlalchemy.orm import Session

COLUMNS = ("id", "connector_id", "metric", "value")


def export_naive(session: Session, out: io.TextIOBase) -> int:
    """Load every measurement, build every CSV row, then write: memory grows with the table."""
    rows = session.scalars(select(Measurement).order_by(Measurement.id)).all()
    lines = [[m.id, m.connector_id, m.metric, m.value] for m in rows]
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows(lines)
    return len(lines)


def export_chunked(session: Session, out: io.TextIOBase, chunk_size: int = 500) -> int:
    """Stream plain rows ``chunk_size`` at a time: memory stays flat as the table grows."""
    stmt = (
        select(Measurement.id, Measurement.connector_id, Measurement.metric, Measurement.value)
        .order_by(Measurement.id)
        .execution_options(yield_per=chunk_size)
    )
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for partition in session.execute(stmt).partitions():
        chunk: Iterable[Any] = partition
        writer.writerows(chunk)
        count += len(partition)
    return count


class Discard(io.TextIOBase):
    """A file that keeps nothing (a socket or a file on disk in production)."""

    def write(self, text: str) -> int:
        return len(text)


@pytest.mark.perf
def test_chunked_export_stays_within_its_heap_budget(session: Session, perf_memory: Any) -> None:
    # Warm up first: SQLAlchemy compiles and caches the statement on first use, and whether an
    # earlier test already did depends on test order. The measured run is then the same bytes
    # in any order, so the baseline can hold it exactly.
    export_chunked(session, Discard())
    with perf_memory(budget="2MB", name="export.chunked"):
        assert export_chunked(session, Discard()) == 10_000


def test_chunked_export_uses_a_fraction_of_the_naive_one(
    session: Session, perf_memory: Any
) -> None:
    export_naive(session, Discard())
    export_chunked(session, Discard())
    session.expunge_all()
    with perf_memory(name="export.naive") as naive:
        export_naive(session, Discard())
    session.expunge_all()
    with perf_memory(name="export.chunked") as chunked:
        export_chunked(session, Discard())
    # 10,000 rows: the naive export holds every ORM object and row list at its peak.
    assert chunked.peak * 5 < naive.peak, (chunked, naive)


def test_chunked_export_does_not_leak(session: Session, perf_memory: Any) -> None:
    perf_memory.leaks(lambda: export_chunked(session, Discard()), iterations=10)
