"""Validated options of one load run, and the requests it sends.

Everything a user can pass to ``perf_load(target, **options)`` is checked here, before any
connection is opened, with a message naming the option.
"""

from __future__ import annotations

import json as jsonlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..units import UnitError, parse_count, parse_duration, parse_rate, parse_size

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_REQUESTS",
    "MAX_WORKERS",
    "LoadOptionError",
    "LoadOptions",
    "Request",
    "build_options",
]

#: Hard caps that protect the machine running the tests (and whatever it is pointed at).
MAX_CONNECTIONS = 1024  # users x workers; with hosts=, per generator
MAX_REQUESTS = 50_000_000
MAX_WORKERS = 64
MAX_RATE = 2_000_000.0
DEFAULT_DURATION = 5.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_OPEN_USERS = 32
DEFAULT_MAX_RESPONSE = 16 * 2**20

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class LoadOptionError(ValueError):
    """An option of ``perf_load`` is invalid; the message names it."""


BodyFactory = Callable[[], Any]


@dataclass(frozen=True)
class Request:
    """One request of a load run; several (with ``weight``) make a mix, reported per ``name``."""

    path: str = "/"
    method: str = "GET"
    name: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    data: bytes | str | Mapping[str, Any] | None = None
    body: BodyFactory | None = None  # called per request: bytes/str sent as is, else JSON-encoded
    weight: float = 1.0

    @property
    def label(self) -> str:
        return self.name if self.name else f"{self.method} {self.path}"

    def static_body(self) -> tuple[bytes | None, str | None]:
        """``(body, content_type)`` when the body is the same for every request."""
        if self.json is not None:
            return _json_bytes(self.json), "application/json"
        if self.data is not None:
            if isinstance(self.data, bytes):
                return self.data, None
            if isinstance(self.data, str):
                return self.data.encode(), "text/plain; charset=utf-8"
            return urlencode(dict(self.data), doseq=True).encode(), (
                "application/x-www-form-urlencoded"
            )
        return None, None


def _json_bytes(value: Any) -> bytes:
    return jsonlib.dumps(value, separators=(",", ":")).encode()


def encode_dynamic_body(value: Any) -> tuple[bytes, str | None]:
    """The body a ``body=`` factory returned."""
    if isinstance(value, bytes):
        return value, None
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    return _json_bytes(value), "application/json"


@dataclass(frozen=True)
class LoadOptions:
    users: int
    think_time: float
    rate: float | None
    duration: float | None
    requests: int | None
    warmup: float
    timeout: float
    workers: int
    mix: tuple[Request, ...]
    name: str | None
    engine: str  # auto | fast | aiohttp
    expect_status: frozenset[int] | None  # None: 200..399 is success
    max_response_size: int
    follow_redirects: bool
    verify_tls: bool
    record: bool
    progress: bool
    max_duration: float
    #: a run in which every request fails is what the test expects (no LoadError)
    expect_errors: bool = False
    #: execnet gateway specs of the generators the run is split over (``hosts=``), expanded
    hosts: tuple[str, ...] = ()
    #: per virtual user, once before the run (log in...): its state fills the requests'
    #: ``{placeholders}`` (see :mod:`.sessions`)
    on_start: Callable[[Any], Any] | None = None

    @property
    def model(self) -> str:
        return "open" if self.rate is not None else "closed"

    @property
    def run_length(self) -> float:
        """Wall-clock cap of the measured phase."""
        return self.duration if self.duration is not None else self.max_duration - self.warmup

    def schedule(self) -> list[int]:
        """A cyclic order of request indexes honouring the weights (cheap to walk per request)."""
        if len(self.mix) == 1:
            return [0]
        weights = [r.weight for r in self.mix]
        total = sum(weights)
        slots = 1000
        counts = [max(1, round(w / total * slots)) for w in weights]
        order: list[int] = []
        # interleave deterministically (largest remainder) so short runs see the mix, too
        credit = [0.0] * len(counts)
        for _ in range(sum(counts)):
            for i, c in enumerate(counts):
                credit[i] += c
            best = max(range(len(counts)), key=lambda i: credit[i])
            credit[best] -= sum(counts)
            order.append(best)
        return order

    def is_success(self, status: int) -> bool:
        if self.expect_status is None:
            return 200 <= status < 400  # 101 Switching Protocols: a load test cannot follow it
        return status in self.expect_status


def _duration(name: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except UnitError as exc:
        raise LoadOptionError(f"{name}={value!r}: {exc}") from None


def _request_from(item: Any, index: int) -> Request:
    if isinstance(item, Request):
        request = item
    elif isinstance(item, Mapping):
        unknown = set(item) - {
            "path",
            "method",
            "name",
            "headers",
            "json",
            "data",
            "body",
            "weight",
        }
        if unknown:
            raise LoadOptionError(
                f"mix[{index}]: unknown key(s) {', '.join(sorted(unknown))}; "
                "use path, method, name, headers, json, data, body, weight"
            )
        request = Request(**item)
    else:
        raise LoadOptionError(f"mix[{index}]: expected a Request or a dict, got {item!r}")
    return _validate_request(request, f"mix[{index}]")


def _validate_request(request: Request, where: str) -> Request:
    method = str(request.method).upper()
    if method not in _METHODS:
        raise LoadOptionError(
            f"{where}: method {request.method!r} is not one of {sorted(_METHODS)}"
        )
    if not isinstance(request.path, str) or not request.path.startswith("/"):
        raise LoadOptionError(f"{where}: path {request.path!r} must start with '/'")
    if any(c in request.path for c in " \r\n\t"):
        raise LoadOptionError(
            f"{where}: path {request.path!r} contains whitespace; percent-encode it"
        )
    bodies = [k for k in ("json", "data", "body") if getattr(request, k) is not None]
    if len(bodies) > 1:
        raise LoadOptionError(
            f"{where}: give only one of json=, data=, body= (got {', '.join(bodies)})"
        )
    if request.body is not None and not callable(request.body):
        raise LoadOptionError(
            f"{where}: body= is a per-request factory (a callable); use data= or json= for a "
            "fixed body"
        )
    if request.data is not None and not isinstance(request.data, (bytes, str, Mapping)):
        raise LoadOptionError(f"{where}: data= must be bytes, str or a dict, got {request.data!r}")
    if request.json is not None:
        try:
            _json_bytes(request.json)
        except (TypeError, ValueError) as exc:
            raise LoadOptionError(f"{where}: json= is not JSON-serialisable: {exc}") from None
    if not isinstance(request.headers, Mapping):
        raise LoadOptionError(f"{where}: headers= must be a mapping, got {request.headers!r}")
    for key, value in request.headers.items():
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or any(c in key + value for c in "\r\n")
            or not key
            or ":" in key
        ):
            raise LoadOptionError(f"{where}: invalid header {key!r}: {value!r}")
    weight = request.weight
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not (math.isfinite(weight) and weight > 0)
    ):
        raise LoadOptionError(f"{where}: weight {weight!r} must be a positive number")
    if request.name is not None and (not isinstance(request.name, str) or not request.name.strip()):
        raise LoadOptionError(f"{where}: name {request.name!r} must be a non-empty string")
    return Request(
        path=request.path,
        method=method,
        name=request.name,
        headers=dict(request.headers),
        json=request.json,
        data=request.data,
        body=request.body,
        weight=float(weight),
    )


_KNOWN_OPTIONS = [
    "users",
    "think_time",
    "rate",
    "duration",
    "requests",
    "warmup",
    "timeout",
    "workers",
    "method",
    "path",
    "headers",
    "json",
    "data",
    "body",
    "mix",
    "name",
    "engine",
    "expect_status",
    "max_response_size",
    "follow_redirects",
    "verify_tls",
    "record",
    "progress",
    "expect_errors",
    "hosts",
    "on_start",
]


def build_options(
    options: Mapping[str, Any],
    *,
    max_duration: float,
    default_path: str = "/",
    is_callable: bool = False,
) -> LoadOptions:
    """Validate ``perf_load`` keyword options; raises :class:`LoadOptionError`."""
    unknown = sorted(set(options) - set(_KNOWN_OPTIONS))
    if unknown:
        raise LoadOptionError(
            f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(_KNOWN_OPTIONS)}"
        )
    o = dict(options)

    rate: float | None = None
    if o.get("rate") is not None:
        try:
            rate = parse_rate(o["rate"])
        except UnitError as exc:
            raise LoadOptionError(f"rate={o['rate']!r}: {exc}") from None
        if not 0 < rate <= MAX_RATE:
            raise LoadOptionError(f"rate={o['rate']!r}: must be above 0 and at most {MAX_RATE:g}/s")

    users_raw = o.get("users")
    if users_raw is None:
        users = DEFAULT_OPEN_USERS if rate is not None else 1
    else:
        if isinstance(users_raw, bool) or not isinstance(users_raw, int) or users_raw < 1:
            raise LoadOptionError(f"users={users_raw!r}: expected a whole number >= 1")
        users = users_raw

    workers_raw = o.get("workers", 1)
    if (
        isinstance(workers_raw, bool)
        or not isinstance(workers_raw, int)
        or not (1 <= workers_raw <= MAX_WORKERS)
    ):
        raise LoadOptionError(f"workers={workers_raw!r}: expected a whole number 1..{MAX_WORKERS}")
    workers = workers_raw
    hosts = _hosts(o.get("hosts"), workers, is_callable)
    if users < workers:
        if users_raw is not None:
            raise LoadOptionError(
                f"users={users} is fewer than workers={workers}: every worker needs a user"
            )
        users = workers
    if users < len(hosts):
        if users_raw is not None:
            raise LoadOptionError(
                f"users={users} is fewer than the {len(hosts)} generators of hosts=: every "
                "generator needs a user"
            )
        users = len(hosts)
    if users > MAX_CONNECTIONS * max(1, len(hosts)):
        raise LoadOptionError(
            f"users={users}: at most {MAX_CONNECTIONS} concurrent users/connections per run"
            + (f" and generator ({len(hosts)} generators)" if hosts else "")
        )

    think_time = _duration("think_time", o.get("think_time", 0))
    if think_time and rate is not None:
        raise LoadOptionError(
            "think_time= belongs to the closed model (users=); with rate= the arrival rate "
            "already sets the pacing"
        )

    duration: float | None = None
    requests: int | None = None
    if o.get("requests") is not None:
        try:
            requests = parse_count(o["requests"])
        except UnitError as exc:
            raise LoadOptionError(f"requests={o['requests']!r}: {exc}") from None
        if not 1 <= requests <= MAX_REQUESTS:
            raise LoadOptionError(f"requests={requests}: expected 1..{MAX_REQUESTS}")
        if requests < len(hosts):
            raise LoadOptionError(
                f"requests={requests} is fewer than the {len(hosts)} generators of hosts="
            )
    if o.get("duration") is not None:
        duration = _duration("duration", o["duration"])
        if duration <= 0:
            raise LoadOptionError(f"duration={o['duration']!r}: must be above zero")
    elif requests is None:
        duration = DEFAULT_DURATION
    warmup = _duration("warmup", o.get("warmup", 0))
    total = (duration or 0) + warmup
    if total > max_duration:
        raise LoadOptionError(
            f"duration {(duration or 0):g}s + warmup {warmup:g}s exceeds the cap of "
            f"{max_duration:g}s (ini perf_max_duration)"
        )
    if duration is None and warmup >= max_duration:
        raise LoadOptionError(f"warmup={o['warmup']!r} leaves no time under perf_max_duration")

    timeout = _duration("timeout", o.get("timeout", DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise LoadOptionError(f"timeout={o.get('timeout')!r}: must be above zero")

    mix_raw = o.get("mix")
    single_keys = [k for k in ("method", "path", "headers", "json", "data", "body") if k in o]
    if mix_raw is not None:
        if single_keys and set(single_keys) - {"headers"}:
            raise LoadOptionError(
                f"mix= replaces {', '.join(single_keys)}: give those per request in the mix"
            )
        if isinstance(mix_raw, (str, bytes)) or not isinstance(mix_raw, Iterable):
            raise LoadOptionError(
                f"mix= must be a list of Request objects or dicts, got {mix_raw!r}"
            )
        mix = tuple(_request_from(item, i) for i, item in enumerate(mix_raw))
        if not mix:
            raise LoadOptionError("mix= is empty")
        shared = o.get("headers") or {}
        if shared:
            mix = tuple(
                _validate_request(
                    Request(**{**_fields(r), "headers": {**shared, **r.headers}}), f"mix[{i}]"
                )
                for i, r in enumerate(mix)
            )
    else:
        mix = (
            _validate_request(
                Request(
                    path=o.get("path", default_path),
                    method=o.get("method", "GET"),
                    headers=o.get("headers") or {},
                    json=o.get("json"),
                    data=o.get("data"),
                    body=o.get("body"),
                ),
                "request",
            ),
        )
    labels = [r.label for r in mix]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise LoadOptionError(f"mix= has duplicate request names {dup}; give each a name=")
    if hosts and any(r.body is not None for r in mix):
        raise LoadOptionError(
            "body= factories run in the test's process, not on generator hosts: with hosts= "
            "give each request a fixed json= or data="
        )
    if is_callable and (mix_raw is not None or single_keys):
        raise LoadOptionError(
            f"{', '.join(single_keys) or 'mix'}= only apply to HTTP targets, not to a callable"
        )

    name = o.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise LoadOptionError(f"name={name!r}: expected a non-empty string")
    engine = o.get("engine", "auto")
    if engine not in ("auto", "fast", "aiohttp"):
        raise LoadOptionError(f"engine={engine!r}: expected 'auto', 'fast' or 'aiohttp'")
    expect = o.get("expect_status")
    expect_status: frozenset[int] | None = None
    if expect is not None:
        values = [expect] if isinstance(expect, int) else expect
        try:
            expect_status = frozenset(int(v) for v in values)
        except (TypeError, ValueError):
            raise LoadOptionError(
                f"expect_status={expect!r}: expected a status code or a collection of them"
            ) from None
        if not expect_status or any(not 100 <= s <= 599 for s in expect_status):
            raise LoadOptionError(f"expect_status={expect!r}: status codes are 100..599")
    try:
        max_response_size = parse_size(o.get("max_response_size", DEFAULT_MAX_RESPONSE))
    except UnitError as exc:
        raise LoadOptionError(f"max_response_size: {exc}") from None
    if max_response_size < 64:
        raise LoadOptionError("max_response_size: at least 64 bytes")
    for flag in ("follow_redirects", "verify_tls", "record", "progress", "expect_errors"):
        if flag in o and not isinstance(o[flag], bool):
            raise LoadOptionError(f"{flag}={o[flag]!r}: expected True or False")
    on_start = o.get("on_start")
    if on_start is not None:
        if not callable(on_start):
            raise LoadOptionError(f"on_start={on_start!r}: expected a function of the user")
        if is_callable:
            raise LoadOptionError("on_start= prepares HTTP users; a callable target has none")
        if workers > 1 or hosts:
            raise LoadOptionError(
                "on_start= runs in this process, before the run; it cannot be combined with "
                f"{'hosts=' if hosts else 'workers='} yet"
            )
    return LoadOptions(
        users=users,
        think_time=think_time,
        rate=rate,
        duration=duration,
        requests=requests,
        warmup=warmup,
        timeout=timeout,
        workers=workers,
        mix=mix,
        name=name.strip() if isinstance(name, str) else None,
        engine=engine,
        expect_status=expect_status,
        max_response_size=max_response_size,
        follow_redirects=bool(o.get("follow_redirects", False)),
        verify_tls=bool(o.get("verify_tls", True)),
        record=bool(o.get("record", True)),
        progress=bool(o.get("progress", True)),
        max_duration=max_duration,
        expect_errors=bool(o.get("expect_errors", False)),
        hosts=hosts,
        on_start=on_start,
    )


def _hosts(value: Any, workers: int, is_callable: bool) -> tuple[str, ...]:
    from .hostspec import expand_hosts

    try:
        hosts = expand_hosts(value)
    except ValueError as exc:
        raise LoadOptionError(f"hosts=: {exc}") from None
    if hosts and is_callable:
        raise LoadOptionError(
            "hosts= runs HTTP targets on generator hosts; a callable runs in this process "
            "(use workers= to spread it over local processes)"
        )
    if hosts and workers > 1:
        raise LoadOptionError(
            f"give hosts= or workers=, not both: for {workers} processes on a host, repeat it "
            f"in hosts= ('{workers}*ssh=gen1', as pytest-xdist's --tx)"
        )
    return hosts


def _fields(r: Request) -> dict[str, Any]:
    return {
        "path": r.path,
        "method": r.method,
        "name": r.name,
        "headers": r.headers,
        "json": r.json,
        "data": r.data,
        "body": r.body,
        "weight": r.weight,
    }
