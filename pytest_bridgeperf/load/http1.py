"""A lean HTTP/1.1 keep-alive client for ``http://`` targets: asyncio ``Protocol`` + httptools.

One :class:`HttpUser` per connection, no coroutine and no future per request: a response completes
in the parser callback, the latency goes into an ``array``, and the next pre-encoded request is
written from the same callback. No pipelining (one request in flight per connection), so each
latency is what one client would see.

What it does with the parts of HTTP/1.1 a load test meets (README, "HTTP conformance"):

* interim ``1xx`` responses (``100 Continue``, ``103 Early Hints``) are skipped: the latency runs
  to the end of the final response. ``101 Switching Protocols`` ends the connection (a load test
  cannot speak the new protocol) and is an error unless ``expect_status`` names it;
* bodies delimited by the server closing the connection (no ``Content-Length``, no chunked
  encoding; HTTP/1.0 style) end at that close; a ``Content-Length`` or chunked body cut short by
  a close is a ``ServerDisconnected`` error;
* responses to ``HEAD`` and ``204``/``304`` responses have no body, whatever their headers say;
* ``Connection: close`` (and HTTP/1.0 without keep-alive) closes the connection after the response;
  the user's next request opens a new one;
* a request whose connection closes (or is reset) before the head of its response is complete is
  sent once more on a new connection when its method is idempotent (RFC 9112 §9.3.1; aiohttp does
  the same), with its latency counted from the first attempt: a keep-alive connection that the
  server closed (``keepalive_requests``, an idle timeout) costs a reconnect, not an error. A second
  close counts as one error (``ServerDisconnected``, or ``ConnectionResetError`` for a reset);
  non-idempotent requests are not resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

import httptools

from .engine import Run
from .options import LoadOptions, Request, encode_dynamic_body
from .safety import Target

__all__ = ["IDEMPOTENT_METHODS", "HttpUser", "encode_request"]

perf_counter_ns = time.perf_counter_ns
_USER_AGENT = "pytest-bridgeperf"
_RECONNECT_BACKOFF = 0.01
#: RFC 9110 §9.2.2 (and aiohttp's list): these may be resent after a premature close
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: the first bytes of a response kept in case its connection closes mid-response (a larger
#: head counts as incomplete; aiohttp refuses header lines over 8 KiB)
_KEEP_HEAD = 64 * 1024


def encode_request(
    request: Request, target: Target, body: bytes | None = None, content_type: str | None = None
) -> bytes:
    """The wire bytes of one request."""
    if body is None and request.body is None:
        body, content_type = request.static_body()
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {target.host_header}"]
    names = {k.lower() for k in request.headers}
    if "user-agent" not in names:
        lines.append(f"User-Agent: {_USER_AGENT}")
    if "accept" not in names:
        lines.append("Accept: */*")
    for key, value in request.headers.items():
        lines.append(f"{key}: {value}")
    if body is not None or request.method in ("POST", "PUT", "PATCH"):
        if content_type and "content-type" not in names:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


class _HeadEnd(Exception):
    """Raised from ``on_headers_complete`` to stop the parser at the end of a head."""


class _Framing:
    """Re-parses the first bytes of a response to tell whether its head was complete and how
    its body ends — the slow path, taken only when a connection closes mid-response. httptools
    does not expose llhttp's framing flags, and a header or head callback would cost every
    response a Python call (``on_headers_complete`` alone: ~4 % of the engine's CPU per request,
    measured with benchmarks/load_throughput.py)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transfer_encoding = b""
        self.content_length = False
        self.final = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"transfer-encoding":
            self.transfer_encoding = value.strip().lower()
        elif name == b"content-length":
            self.content_length = True

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # an interim response: the next head follows
            self.transfer_encoding, self.content_length = b"", False
            return
        self.final = True
        raise _HeadEnd

    @classmethod
    def read(cls, raw: bytes) -> tuple[bool, bool]:
        """(the final head is complete, its body ends when the server closes the connection —
        RFC 9112 §6.3) for a response that starts with ``raw`` (interim responses included)."""
        framing = cls()
        with contextlib.suppress(httptools.HttpParserError):  # _HeadEnd, or a broken head
            framing.parser.feed_data(raw)
        if not framing.final:
            return False, False
        if framing.transfer_encoding:
            return True, not framing.transfer_encoding.endswith(b"chunked")
        return True, not framing.content_length


class _Hooks:
    """The callbacks a connection's parser calls (httptools looks them up once, at creation)."""

    __slots__ = ("on_headers_complete", "on_message_complete")

    on_headers_complete: Callable[[], None]
    on_message_complete: Callable[[], None]


class _Link(asyncio.Protocol):
    """One TCP connection of a user. ``data_received`` is the user's bound method itself, so
    the indirection costs nothing per chunk; a late ``connection_lost`` of a replaced link is
    ignored."""

    __slots__ = ("data_received", "user")

    def __init__(self, user: HttpUser) -> None:
        self.user = user
        self.data_received = user.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.user.connected(self, transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.user.link is self:
            self.user.lost(exc)

    def eof_received(self) -> bool | None:
        return None


class HttpUser:
    """A slot of the run: one keep-alive connection, at most one request in flight.

    Per response the hot path is one ``data_received`` and one parser callback (the
    ``on_message_complete`` closure of :meth:`_new_parser`). State of the response in flight:
    ``resp_bytes`` (wire bytes so far, interim responses included) and ``early`` (the reads of a
    response that spans several, up to its first 64 KiB, kept only for :class:`_Framing` should
    the connection close)."""

    __slots__ = (
        "connect_task",
        "early",
        "engine",
        "link",
        "loop",
        "max_bytes",
        "only",
        "out",
        "parser",
        "req",
        "requests",
        "resent",
        "resp_bytes",
        "run",
        "rx",
        "schedule",
        "sent_ns",
        "start_ns",
        "transport",
        "wire",
    )

    def __init__(self, engine: FastHttpEngine) -> None:
        self.engine = engine
        self.run = engine.run
        self.loop = engine.run.loop
        self.wire = engine.wire
        self.schedule = engine.run.schedule
        #: per request: bytes of the responses the hot path recorded, not yet counted
        self.rx = [0] * len(engine.wire)
        self.only = engine.wire[0] if len(engine.wire) == 1 else None  # one static request
        self.max_bytes = engine.options.max_response_size
        self.transport: asyncio.Transport | None = None
        self.link: _Link | None = None
        self.parser: Any = None
        self.connect_task: asyncio.Task[None] | None = None
        self.req = 0
        self.start_ns = 0
        self.sent_ns = 0
        self.resp_bytes = 0
        self.early: list[bytes] = []
        self.resent = 0  # start_ns of the request sent a second time (never 0 for a request)
        self.out = b""
        #: this user's own requests (``on_start`` filled their templates), None: the run's
        self.requests: tuple[Request, ...] | None = None

    # connection ------------------------------------------------------------------------------
    async def preconnect(self) -> None:
        link = self.link = _Link(self)
        await self.loop.create_connection(lambda: link, self.engine.host, self.engine.port)

    def connected(self, link: _Link, transport: asyncio.Transport) -> None:
        if self.link is not link:
            transport.abort()
            return
        self.transport = transport
        self._reset_parser()
        if self.start_ns:
            self._write()

    def _reset_parser(self) -> None:
        self.parser = self._new_parser()
        self.resp_bytes = 0
        if self.early:
            self.early = []

    def _new_parser(self) -> Any:
        """This connection's parser. Its ``on_message_complete`` is a closure over what stays
        the same for the connection (the run, the engine's logs, the parser's and the
        transport's bound methods): cell reads instead of attribute chains take ~13 % off the
        Python time per response (measured on a stubbed transport, see
        ``benchmarks/load_throughput.py --profile``)."""
        user = self
        run = self.run
        lats = self.engine.lats
        odds = self.engine.odd
        rx = self.rx
        only = self.only
        schedule = self.schedule
        wires = self.wire
        transport = self.transport
        write = transport.write if transport is not None else None

        def on_message_complete() -> None:
            now = perf_counter_ns()
            status = status_of()
            if status < 200:  # an interim response (100 Continue, 103 Early Hints): keep waiting
                return
            start = user.start_ns
            if not start:  # an answer nobody asked for: the connection is out of step
                user.abort("InvalidResponse")
                return
            nbytes = user.resp_bytes
            user.resp_bytes = 0
            if user.early:
                user.early = []
            if run.hot and keep_alive():
                # the closed model's hot path, inlined: record, then send the next request now
                req = user.req
                wire = only
                if wire is None:  # a mix, or a body factory: follow the schedule
                    seq = run.seq
                    nxt = schedule[seq % run.schedule_len]
                    wire = wires[nxt]
                    if wire is None:  # a body factory: through the controller
                        user.start_ns = 0
                        run.ok(user, req, start, now, status, nbytes)
                        return
                    run.seq = seq + 1
                    user.req = nxt
                measure = run.measure_start_ns
                if start >= measure:
                    # into the engine's logs, counted in bulk by FastHttpEngine.flush: a status
                    # other than 200 and the bytes cost a compare and an add, not a dict update
                    lats[req].append(now - start)
                    if status != 200:
                        odds[req].append(status)
                    rx[req] += nbytes
                    user.start_ns = user.sent_ns = perf_counter_ns()
                    run.sent += 1
                else:
                    user.start_ns = user.sent_ns = started = perf_counter_ns()
                    if started >= measure:
                        run.sent += 1
                write(wire)  # type: ignore[misc]
                return
            user.start_ns = 0
            if not keep_alive():
                user.close()
            run.ok(user, user.req, start, now, status, nbytes)

        hooks = _Hooks()
        hooks.on_message_complete = on_message_complete
        if isinstance(self, HeadAwareUser):
            hooks.on_headers_complete = self.on_headers_complete
        parser = httptools.HttpResponseParser(hooks)
        status_of = parser.get_status_code
        keep_alive = parser.should_keep_alive
        return parser

    def _connect(self) -> None:
        self.connect_task = self.loop.create_task(self._do_connect())

    async def _do_connect(self) -> None:
        link = self.link = _Link(self)
        try:
            await self.loop.create_connection(lambda: link, self.engine.host, self.engine.port)
        except OSError as exc:
            if self.link is link:
                self.link = None
                if self.start_ns:
                    self._fail(type(exc).__name__, _RECONNECT_BACKOFF)

    def lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.link = None
        if not self.start_ns:
            return
        head_complete, ends_at_close = _Framing.read(b"".join(self.early))
        if head_complete:
            if exc is None and ends_at_close:
                self._complete(perf_counter_ns(), close=False)
                return
        elif self.resent != self.start_ns and self.engine.idempotent[self.req]:
            # closed before the head of the answer: send it once more on a new connection
            self.resent = self.start_ns
            self._connect()
            return
        self._fail(type(exc).__name__ if exc is not None else "ServerDisconnected", 0.0)

    def close(self) -> None:
        self.link = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()

    # requests --------------------------------------------------------------------------------
    def begin(self, req: int, start_ns: int) -> None:
        self.req = req
        self.start_ns = start_ns
        self.sent_ns = perf_counter_ns()  # the timeout covers a resend, too
        if self.transport is None:
            if self.link is None:
                self._connect()
            return
        self._write()

    def _write(self) -> None:
        wire = self.wire[self.req]
        if wire is None:
            if self.resent == self.start_ns:
                wire = self.out  # the same body again, not a new one from the factory
            else:
                try:
                    wire = self.out = self.engine.build(self.req, self.requests)
                except Exception as exc:  # the user's body factory: stop and show it
                    self.run.abort_with(exc)
                    return
        self.transport.write(wire)  # type: ignore[union-attr]

    def _fail(self, kind: str, backoff: float) -> None:
        start, self.start_ns, self.sent_ns = self.start_ns, 0, 0
        self.run.fail(self, self.req, start, kind, backoff=backoff)

    def abort(self, kind: str) -> None:
        self.close()
        if self.start_ns:
            self._fail(kind, 0.0)

    def _complete(self, now: int, *, close: bool) -> None:
        """The response in flight ended outside the hot path (at a close, at a HEAD's head, a
        101); ``close`` drops the connection first, else the parser starts afresh."""
        start, self.start_ns = self.start_ns, 0
        status = self.parser.get_status_code()
        nbytes = self.resp_bytes
        if close:
            self.close()
        self._reset_parser()
        self.run.ok(self, self.req, start, now, status, nbytes)

    def data_received(self, data: bytes) -> None:
        n = self.resp_bytes = self.resp_bytes + len(data)
        if n > self.max_bytes:
            self.abort("ResponseTooLarge")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserError:
            self.abort("InvalidResponse")
            return
        if self.resp_bytes and n - len(data) < _KEEP_HEAD:  # the response goes on: keep its
            self.early.append(data)  # start for _Framing

    def _upgraded(self) -> None:
        """``101 Switching Protocols``: the rest of the connection speaks another protocol."""
        now = perf_counter_ns()
        if not self.start_ns:
            self.abort("InvalidResponse")
            return
        self._complete(now, close=True)


class HeadAwareUser(HttpUser):
    """A user whose mix has ``HEAD`` requests. A response to ``HEAD`` has no body whatever its
    ``Content-Length`` says (RFC 9110 §9.3.2), and httptools cannot be told so; so the head is
    fed line by line and the parser stopped at its end, which also finds any bytes after it."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if not self.engine.head_reqs[self.req] or not self.start_ns:
            HttpUser.data_received(self, data)
            return
        n = self.resp_bytes = self.resp_bytes + len(data)
        if n > self.max_bytes:
            self.abort("ResponseTooLarge")
            return
        begin, size = 0, len(data)
        while begin < size:
            end = data.find(b"\n", begin) + 1 or size
            try:
                self.parser.feed_data(data[begin:end])
            except httptools.HttpParserCallbackError as exc:
                if not isinstance(exc.__context__, _HeadEnd):
                    self.abort("InvalidResponse")
                    return
                # bytes after a HEAD's head: the connection is out of step, drop it
                self._complete(perf_counter_ns(), close=end < size)
                return
            except httptools.HttpParserUpgrade:
                self._upgraded()
                return
            except httptools.HttpParserError:
                self.abort("InvalidResponse")
                return
            begin = end
        if self.resp_bytes and n - size < _KEEP_HEAD:
            self.early.append(data)

    def on_headers_complete(self) -> None:  # httptools callback
        parser = self.parser
        if self.start_ns and self.engine.head_reqs[self.req] and parser.get_status_code() >= 200:
            raise _HeadEnd


class FastHttpEngine:
    def __init__(self, run: Run, target: Target, options: LoadOptions) -> None:
        self.run = run
        self.target = target
        self.options = options
        self.host = target.host
        self.port = target.port
        self.wire: list[bytes | None] = [
            None if r.body is not None else encode_request(r, target) for r in options.mix
        ]
        self.idempotent = [r.method in IDEMPOTENT_METHODS for r in options.mix]
        self.head_reqs = [r.method == "HEAD" for r in options.mix]
        #: per request: latencies the hot path recorded, and their statuses other than 200;
        #: flush() moves them into the collectors
        self.lats = [array("q") for _ in options.mix]
        self.odd = [array("H") for _ in options.mix]
        self.users: list[HttpUser] = []
        #: per user, its requests with their templates filled (``on_start``); set before open()
        self.user_requests: list[tuple[Request, ...]] | None = None
        run.flushers.append(self.flush)

    def flush(self) -> None:
        """Count what the hot path logged into the collectors (before rounds, progress and
        results): ~30 ns per response, once, instead of a count, a status-dict update, an error
        check and a byte sum per response."""
        expect = self.run.expect
        for req, (collector, lats, odd) in enumerate(
            zip(self.run.collectors, self.lats, self.odd, strict=True)
        ):
            n = len(lats)
            if not n:
                continue
            collector.lat.extend(lats)
            del lats[:]
            statuses = Counter(odd)
            del odd[:]
            rest = n - statuses.total()
            if rest:
                statuses[200] += rest
            for status, k in statuses.items():
                collector.count += k
                collector.status[status] = collector.status.get(status, 0) + k
                if (not 200 <= status < 400) if expect is None else (status not in expect):
                    collector.errors += k
                    kind = f"HTTP {status}"
                    collector.error_types[kind] = collector.error_types.get(kind, 0) + k
            for user in self.users:
                collector.bytes += user.rx[req]
                user.rx[req] = 0

    def build(self, req: int, requests: tuple[Request, ...] | None = None) -> bytes:
        request = (requests or self.options.mix)[req]
        assert request.body is not None
        body, content_type = encode_dynamic_body(request.body())
        return encode_request(request, self.target, body, content_type)

    async def open(self, users: int) -> list[HttpUser]:
        cls = HeadAwareUser if any(self.head_reqs) else HttpUser
        slots = self.users = [cls(self) for _ in range(users)]
        if self.user_requests is not None:
            # a session per user: its requests encoded once, before its connection exists (the
            # parser's closure reads the user's wire when it is made)
            for slot, requests in zip(slots, self.user_requests, strict=True):
                slot.requests = requests
                slot.wire = [
                    None if r.body is not None else encode_request(r, self.target) for r in requests
                ]
                slot.only = slot.wire[0] if len(slot.wire) == 1 else None
        await slots[0].preconnect()  # a refused connection fails here, before the others
        await asyncio.gather(*(s.preconnect() for s in slots[1:]))
        return slots

    def close(self, slots: list[HttpUser]) -> None:
        for slot in slots:
            slot.close()
