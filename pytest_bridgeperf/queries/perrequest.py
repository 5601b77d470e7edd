"""SQL statements attributed to the HTTP request that issued them, while an app is served in
this process under load: ``perf_load(app, queries=True)`` → ``result.queries``.

The server's request handling sets a context variable (``RequestQueryTap.enter``) to a list for
the request; the capture's hooks hand each statement to whatever list the context holds. Context
variables follow the request into the tasks it spawns and the thread pools it hands sync work to
(Starlette's ``run_in_threadpool``, ``asyncio.to_thread``), so a statement lands in its request's
list from wherever it runs; statements outside any request (the test's own, a background job)
land nowhere.

Hot-path cost: per statement, one extra Python call and a context-variable read on top of the
capture's own (see the README, "Cost"); per request, the statements' shape — SQL, call site,
flags, without the timings — is made a tuple and counted: requests to one endpoint repeat a few
shapes, so a run of any length keeps a handful of shapes and one small record per request.

No pytest here; SQLAlchemy is imported by :mod:`.capture`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from operator import itemgetter
from time import perf_counter_ns
from typing import Any

from .capture import DEFAULT_N_PLUS_ONE_THRESHOLD, QueryCapture, statements_of
from .statements import Statement, find_n_plus_one, format_statements

__all__ = [
    "EndpointQueries",
    "RequestNPlusOne",
    "RequestQueries",
    "RequestQueryTap",
    "describe_request_n_plus_one",
]

_current: ContextVar[list[Any] | None] = ContextVar("bridgeperf_request_sql", default=None)

# the parts of a hook entry that make a statement's shape: (sql, params, duration, rows, flags,
# site code, site offset) without the duration and the row count, which vary from call to call
_shape_of = itemgetter(0, 1, 4, 5, 6)


class _ToRequest(list[Any]):
    """The capture's sink: a statement goes to the request being handled, or nowhere."""

    __slots__ = ()

    def extend(self, entry: Any) -> None:  # called by the capture's hooks, per statement
        bucket = _current.get()
        if bucket is not None:
            bucket.append(entry)  # one tuple per statement here, not the capture's flat items

    def __iadd__(self, entry: Any) -> _ToRequest:  # type: ignore[misc]  # when one capture records
        self.extend(entry)
        return self


class RequestQueryTap:
    """Counts each request's statements while active (``with tap:``); the server calls
    :meth:`enter` when a request starts and :meth:`leave` when it ends."""

    def __init__(self, *engines: Any) -> None:
        self._capture = QueryCapture(*engines, check_pool=False, sink=_ToRequest())
        #: per request: (when it started, perf_counter_ns; endpoint; shape)
        self.records: list[tuple[int, str, tuple[Any, ...]]] = []
        #: shape -> the entries of one request that had it (a representative, for listings)
        self._examples: dict[tuple[Any, ...], list[Any]] = {}

    def __enter__(self) -> RequestQueryTap:
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._capture.__exit__(None, None, None)

    def enter(self) -> tuple[int, list[Any], Token[list[Any] | None]]:
        bucket: list[Any] = []
        return perf_counter_ns(), bucket, _current.set(bucket)

    def leave(self, handle: tuple[int, list[Any], Token[list[Any] | None]], endpoint: str) -> None:
        started, bucket, token = handle
        try:
            _current.reset(token)
        except ValueError:  # ended in another context than it began (a WSGI body closed late)
            _current.set(None)
        shape = tuple(map(_shape_of, bucket))
        if shape not in self._examples:
            self._examples[shape] = list(bucket)
        self.records.append((started, endpoint, shape))

    def result(self, window: tuple[int, int] | None) -> RequestQueries:
        """The requests that began inside ``window`` (perf_counter_ns; all when None)."""
        per_endpoint: dict[str, Counter[tuple[Any, ...]]] = {}
        for started, endpoint, shape in self.records:
            if window is not None and not window[0] <= started <= window[1]:
                continue
            per_endpoint.setdefault(endpoint, Counter())[shape] += 1
        statements: dict[tuple[Any, ...], list[Statement]] = {}
        for shapes in per_endpoint.values():
            for shape in shapes:
                if shape not in statements:
                    counted = [
                        s for s in statements_of(self._examples[shape]) if not s.transaction_control
                    ]
                    statements[shape] = counted
        return RequestQueries(
            {
                endpoint: EndpointQueries(
                    endpoint, [(n, statements[shape]) for shape, n in shapes.items()]
                )
                for endpoint, shapes in sorted(per_endpoint.items())
            }
        )


@dataclass(frozen=True)
class RequestNPlusOne:
    """One statement repeated from one call site within single requests of an endpoint."""

    endpoint: str
    fingerprint: str
    call_site: str
    #: the most times one request issued it
    count: int
    #: how many requests repeated it at least the threshold's times
    requests: int


class _Counts:
    """Statements per request, as a distribution over requests."""

    def __init__(self, per_request: Counter[int]) -> None:
        self.per_request = per_request
        self.requests = per_request.total()

    @property
    def count(self) -> int:
        """Statements issued by all the measured requests together."""
        return sum(k * n for k, n in self.per_request.items())

    def percentile(self, q: float) -> float:
        """Statements per request at percentile ``q`` (0..100; nan without requests)."""
        if not self.requests:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.requests))
        seen = 0
        for value in sorted(self.per_request):
            seen += self.per_request[value]
            if seen >= rank:
                return float(value)
        return float(max(self.per_request))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def max(self) -> int:
        return max(self.per_request, default=0)

    @property
    def mean(self) -> float:
        return self.count / self.requests if self.requests else math.nan


class EndpointQueries(_Counts):
    """The statements of one endpoint's measured requests."""

    def __init__(self, endpoint: str, shapes: Sequence[tuple[int, list[Statement]]]) -> None:
        counts: Counter[int] = Counter()
        for n, statements in shapes:
            counts[len(statements)] += n
        super().__init__(counts)
        self.endpoint = endpoint
        #: (how many requests, their statements) per distinct sequence of statements
        self.shapes = sorted(shapes, key=lambda item: (-item[0], len(item[1])))

    @property
    def fingerprints(self) -> Counter[str]:
        """Every statement shape and how often the endpoint's requests issued it in total."""
        total: Counter[str] = Counter()
        for n, statements in self.shapes:
            for statement in statements:
                total[statement.fingerprint] += n
        return total

    def n_plus_one(self, threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD) -> list[RequestNPlusOne]:
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for n, statements in self.shapes:
            for finding in find_n_plus_one(statements, threshold):
                key = (finding.fingerprint, finding.call_site)
                worst, requests = found.get(key, (0, 0))
                found[key] = (max(worst, finding.count), requests + n)
        return [
            RequestNPlusOne(self.endpoint, fp, site, worst, requests)
            for (fp, site), (worst, requests) in found.items()
        ]

    def explain(self) -> str:
        head = (
            f"{self.endpoint}: {self.requests} request(s), statements per request "
            f"p50 {self.p50:g}, max {self.max}"
        )
        if not self.shapes:
            return head
        heaviest = max(self.shapes, key=lambda item: len(item[1]))
        title = f"the heaviest request ({len(heaviest[1])} statements; {heaviest[0]} like it)"
        listing = format_statements(heaviest[1], title=title)
        return head + "\n" + "\n".join("  " + line for line in listing.splitlines())

    def __repr__(self) -> str:
        return f"<EndpointQueries {self.endpoint!r}: {self.requests} requests, max {self.max}>"


class RequestQueries(_Counts):
    """``result.queries``: SQL statements per measured request of a load run — ``p50``,
    ``p95``, ``max``, ``mean``, ``percentile(q)``, ``count``, ``requests``; per endpoint
    (``by_endpoint``, ``result.queries["GET /items"]``) with ``fingerprints``; N+1 loading."""

    def __init__(self, by_endpoint: dict[str, EndpointQueries]) -> None:
        counts: Counter[int] = Counter()
        for endpoint in by_endpoint.values():
            counts.update(endpoint.per_request)
        super().__init__(counts)
        self.by_endpoint = by_endpoint

    def __getitem__(self, endpoint: str) -> EndpointQueries:
        try:
            return self.by_endpoint[endpoint]
        except KeyError:
            raise KeyError(
                f"no requests to {endpoint!r} were measured; endpoints: "
                f"{', '.join(self.by_endpoint) or 'none'}"
            ) from None

    @property
    def fingerprints(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for endpoint in self.by_endpoint.values():
            total.update(endpoint.fingerprints)
        return total

    def n_plus_one(self, threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD) -> list[RequestNPlusOne]:
        """Statements that one request issued ``threshold`` or more times from one line."""
        return [f for e in self.by_endpoint.values() for f in e.n_plus_one(threshold)]

    def explain(self) -> str:
        lines = [
            f"{self.requests} measured request(s), {self.count} statement(s); per request "
            f"p50 {self.p50:g}, max {self.max}"
        ]
        lines += [e.explain() for e in self.by_endpoint.values()]
        return "\n".join(lines)

    def assert_max(self, limit: int) -> None:
        """No request issued more than ``limit`` statements."""
        __tracebackhide__ = True
        if self.max > limit:
            over = [e for e in self.by_endpoint.values() if e.max > limit]
            raise AssertionError(
                f"a request issued {self.max} SQL statements, more than {limit} "
                f"({', '.join(e.endpoint for e in over)})\n" + "\n".join(e.explain() for e in over)
            )

    def assert_no_n_plus_one(self, threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD) -> None:
        """No request repeated one statement ``threshold`` or more times from one line."""
        __tracebackhide__ = True
        findings = self.n_plus_one(threshold)
        if findings:
            raise AssertionError(describe_request_n_plus_one(findings, threshold))

    def summary(self) -> str:
        if not self.requests:
            return "queries: no measured request reached the app"
        return f"queries per request p50 {self.p50:g}, max {self.max}"

    def to_details(self) -> dict[str, Any]:
        """JSON-able, for the baseline: per endpoint, the fingerprints per request."""
        return {
            "requests": self.requests,
            "per_endpoint": {
                name: {
                    "max": e.max,
                    "p50": e.p50,
                    "fingerprints": {
                        fp: round(n / e.requests, 3) for fp, n in sorted(e.fingerprints.items())
                    },
                }
                for name, e in self.by_endpoint.items()
                if e.requests
            },
        }

    def __repr__(self) -> str:
        return f"<RequestQueries {self.requests} requests: {self.summary()}>"


def describe_request_n_plus_one(findings: Iterable[RequestNPlusOne], threshold: int) -> str:
    found = list(findings)
    lines = [
        f"N+1 queries under load: {len(found)} statement(s) repeated within single requests "
        f"(threshold {threshold}):"
    ]
    for f in found:
        lines.append(
            f"  {f.endpoint}: up to ×{f.count} per request at {f.call_site} "
            f"({f.requests} request(s))"
        )
        lines.append(f"      {f.fingerprint}")
    lines.append(
        "Load the related rows in one query instead: options(selectinload(Parent.children)) or "
        "joinedload(...) on the query that fetches the parents."
    )
    return "\n".join(lines)
