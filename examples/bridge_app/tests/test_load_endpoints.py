"""Load tests of the Bridge endpoints with ``perf_load`` (run with ``pytest --perf``).

The guide's LoadTester sent N users at an endpoint for D seconds and sorted the latencies; here
the fixture serves the app on 127.0.0.1, drives it with a closed (``users=``) or open
(``rate=``) model, records every latency in an HDR histogram, and records latency, throughput
and error rate per request name into the baseline. Marker budgets are deliberately generous
(catching disasters); the baseline catches drifts.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from bridge_app import cache_key

from pytest_bridgeperf import PerfLoad, Request

CONNECTOR_KINDS = ("postgres", "mysql", "s3", "bigquery", "http")

# Loopback latency and throughput of an app served in the test's own process move with whatever
# else the machine runs: on the 2-core CI machine one busy neighbour moved the statistics
# endpoint's p95 by +43 % (and rps by -18 %) with the code unchanged. A 50 % tolerance keeps the
# verdicts trustworthy there and still catches what matters in this app (the N+1 dashboards
# loader is 4x slower); the exact guards are the query counts and payload sizes of the other
# example tests. On a dedicated runner, tighten it.
TOLERANCE = "50%"


@pytest.mark.perf(p95="100ms", error_rate="1%", rps=100, tolerance=TOLERANCE)
def test_connector_metadata_is_served_from_the_cache(
    perf_load: PerfLoad, app: web.Application
) -> None:
    result = perf_load(
        app,
        path="/api/v1/connectors/metadata?kind=postgres",
        users=8,
        duration="2s",
        warmup="200ms",
        name="GET connectors metadata",
    )
    assert set(result.status_counts) == {200}
    # the guide's alert threshold: below a 0.7 hit ratio the cache is not earning its keep
    assert app[cache_key].stats.hit_ratio >= 0.7


@pytest.mark.perf(p95="1s", error_rate="1%", rps=5, tolerance=TOLERANCE)
def test_statistics_endpoint(perf_load: PerfLoad, app: web.Application) -> None:
    # the aggregation runs in the handler and holds the event loop: one user shows its own
    # latency; more users would only measure their queue
    result = perf_load(
        app,
        path="/api/v1/analytics/statistics?group_by=connector",
        users=1,
        duration="2s",
        warmup="200ms",
        name="GET statistics by connector",
    )
    # ~30 samples in 2 s: enough for the median, too few for a credible p(95)
    result.check("med < 500ms", "max < 2s", "error_rate < 1%")


@pytest.mark.perf(error_rate="1%", tolerance=TOLERANCE)
def test_dashboard_traffic_mix_at_a_steady_arrival_rate(
    perf_load: PerfLoad, app: web.Application
) -> None:
    # the open model: 40 requests/s whatever the app does, latencies counted from the intended
    # send time, so a slow spell shows in the tail instead of hiding behind waiting users. The
    # rate keeps the app's single event loop about half busy: near full utilisation the tail is
    # queueing, which swings by several times with the smallest change in the machine's speed
    # (at 100 requests/s this mix measured p95 19 ms in one run and 58 ms in the next).
    result = perf_load(
        app,
        rate=40,
        users=32,
        duration="4s",
        name="bridge mix",
        mix=[
            Request("/api/v1/dashboards?page=1&page_size=20", name="dashboards", weight=5),
            *(
                Request(f"/api/v1/connectors/metadata?kind={kind}", name=f"metadata {kind}")
                for kind in CONNECTOR_KINDS
            ),
            Request("/api/v1/analytics/statistics", name="statistics", weight=2),
            Request("/healthz", name="healthz"),
        ],
    )
    assert result.dropped == 0
    result.check("p(95) < 250ms", "error_rate < 1%", "rps >= 38")
    result["dashboards"].check("p(90) < 250ms")


@pytest.mark.perf(p99="2s", error_rate="5%", tolerance=TOLERANCE)
def test_guide_alert_thresholds(perf_load: PerfLoad, app: web.Application) -> None:
    # the guide's own scenario: users that wait 0.1 s between requests, and its alert levels
    # (response time 2 s, error rate 5 %) as budgets
    result = perf_load(
        app,
        path="/api/v1/dashboards",
        users=10,
        think_time="100ms",
        duration="2s",
        name="GET dashboards (guide scenario)",
    )
    assert result.count >= 100  # 10 users x 2 s / (0.1 s + service time)
