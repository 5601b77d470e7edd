"""The example's perf tests (run with ``pytest --perf``): the projects page under load with a
login per virtual user, SQL per request, memory, and the server's CPU and memory.

Loopback latency and throughput of an app served on this machine move with whatever else it
runs; the marker budgets are generous (they catch disasters) and the tolerance is 50 % (see
examples/bridge_app/tests/test_load_endpoints.py for the measurement behind it). The exact
guards are the statement counts: per request, and of the page itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi_app import create_app, list_projects
from sqlalchemy.orm import Session

from pytest_bridgeperf import AppFactory, PerfLoad, PerfMemory

AUTHORIZED = {"Authorization": "Bearer {token}"}
TOLERANCE = "50%"


@pytest.mark.perf(p95="500ms", error_rate="1%", queries_per_request=3, tolerance=TOLERANCE)
def test_projects_page_under_load(perf_load: PerfLoad, app_factory: AppFactory, login: Any) -> None:
    result = perf_load(
        app_factory,
        users=8,
        duration="3s",
        warmup="500ms",
        on_start=login,
        path="/projects?page=2&page_size=20",
        headers=AUTHORIZED,
        name="GET /projects page 2",
    )
    assert result.status_counts == {200: result.count}
    assert result.queries is not None
    # count, the page, its tasks in one IN (...): three for every request, none repeated
    assert result.queries.per_request.keys() == {3}
    result.queries.assert_no_n_plus_one()


def test_the_n_plus_one_variant_is_caught_under_load(
    perf_load: PerfLoad, database_url: str, login: Any
) -> None:
    result = perf_load(
        AppFactory(create_app, database_url, eager=False),
        users=4,
        requests=80,
        on_start=login,
        path="/projects?page_size=20",
        headers=AUTHORIZED,
        queries=True,
        record=False,
    )
    assert result.queries is not None
    (finding,) = result.queries.n_plus_one()
    assert finding.endpoint == "GET /projects"
    assert finding.count == 20  # one task query per project of the page
    assert finding.requests == 80
    with pytest.raises(AssertionError, match="N\\+1 queries under load"):
        result.queries.assert_no_n_plus_one()


@pytest.mark.perf(memory="1MB")
def test_memory_of_a_projects_page(perf_memory: PerfMemory, session: Session) -> None:
    list_projects(session, 1, 1, 20)  # warm-up: compiled statements, first-use caches
    session.expunge_all()
    with perf_memory(budget="1MB", name="projects page") as block:
        list_projects(session, 2, 1, 20)
    assert block.peak > 0


@pytest.mark.perf(p95="500ms", error_rate="1%", tolerance=TOLERANCE)
def test_server_cpu_and_memory_in_its_own_process(
    perf_load: PerfLoad, app_factory: AppFactory, login: Any
) -> None:
    # an open model at a rate the app serves easily: its CPU and memory, alone in a process
    # (pinned away from the generator), must stay far from a core and from 300 MB
    result = perf_load(
        app_factory,
        serve="process",
        rate=40,
        duration="3s",
        on_start=login,
        path="/projects?page=1&page_size=20",
        headers=AUTHORIZED,
        name="GET /projects, app in its own process",
    )
    result.check("p(95) < 500ms", "server_cpu < 80%", "server_rss < 300MB")
    assert result.server is not None
    assert result.server.shared is None
