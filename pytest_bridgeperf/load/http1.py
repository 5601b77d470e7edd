"""A lean HTTP/1.1 keep-alive client for ``http://`` targets: asyncio ``Protocol`` + httptools.

One :class:`HttpUser` per connection, no coroutine and no future per request: a response completes
in the parser callback, the latency goes into an ``array``, and the next pre-encoded request is
written from the same callback. No pipelining (one request in flight per connection), so each
latency is what one client would see.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httptools

from .engine import Run
from .options import LoadOptions, Request, encode_dynamic_body
from .safety import Target

__all__ = ["HttpUser", "encode_request"]

perf_counter_ns = time.perf_counter_ns
_USER_AGENT = "pytest-bridgeperf"
_RECONNECT_BACKOFF = 0.01


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
    """A slot of the run: one keep-alive connection, at most one request in flight."""

    __slots__ = (
        "connect_task",
        "engine",
        "link",
        "loop",
        "max_bytes",
        "parser",
        "req",
        "resp_bytes",
        "run",
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
        self.max_bytes = engine.options.max_response_size
        self.transport: asyncio.Transport | None = None
        self.link: _Link | None = None
        self.parser: Any = None
        self.connect_task: asyncio.Task[None] | None = None
        self.req = 0
        self.start_ns = 0
        self.sent_ns = 0
        self.resp_bytes = 0

    # connection ------------------------------------------------------------------------------
    async def preconnect(self) -> None:
        link = self.link = _Link(self)
        await self.loop.create_connection(lambda: link, self.engine.host, self.engine.port)

    def connected(self, link: _Link, transport: asyncio.Transport) -> None:
        if self.link is not link:
            transport.abort()
            return
        self.transport = transport
        self.parser = httptools.HttpResponseParser(self)
        self.resp_bytes = 0
        if self.start_ns:
            self._write()

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
                    start, self.start_ns, self.sent_ns = self.start_ns, 0, 0
                    self.run.fail(
                        self, self.req, start, type(exc).__name__, backoff=_RECONNECT_BACKOFF
                    )

    def lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.link = None
        if self.start_ns:
            start, self.start_ns, self.sent_ns = self.start_ns, 0, 0
            kind = type(exc).__name__ if exc is not None else "ServerDisconnected"
            self.run.fail(self, self.req, start, kind, backoff=_RECONNECT_BACKOFF)

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
        if self.transport is None:
            self.sent_ns = perf_counter_ns()
            if self.link is None:
                self._connect()
            return
        self._write()

    def _write(self) -> None:
        wire = self.wire[self.req]
        if wire is None:
            try:
                wire = self.engine.build(self.req)
            except Exception as exc:  # the user's body factory: stop and show it
                self.run.abort_with(exc)
                return
        self.sent_ns = perf_counter_ns()
        self.transport.write(wire)  # type: ignore[union-attr]

    def abort(self, kind: str) -> None:
        self.close()
        if self.start_ns:
            start, self.start_ns, self.sent_ns = self.start_ns, 0, 0
            self.run.fail(self, self.req, start, kind)

    def data_received(self, data: bytes) -> None:
        self.resp_bytes += len(data)
        if self.resp_bytes > self.max_bytes:
            self.abort("ResponseTooLarge")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort("InvalidResponse")

    def on_message_complete(self) -> None:  # httptools callback
        now = perf_counter_ns()
        start = self.start_ns
        if not start:  # an answer nobody asked for: the connection is out of step
            self.abort("InvalidResponse")
            return
        self.start_ns = 0
        nbytes = self.resp_bytes
        self.resp_bytes = 0
        parser = self.parser
        status = parser.get_status_code()
        run = self.run
        if not parser.should_keep_alive():
            self.close()
        elif run.hot and not run.stopped:
            # the closed model's hot path, inlined: record, then send the next request at once
            if start >= run.measure_start_ns:
                c = run.collectors[self.req]
                c.lat.append(now - start)
                c.count += 1
                counts = c.status
                counts[status] = counts.get(status, 0) + 1
                c.bytes += nbytes
                expect = run.expect
                if (status >= 400) if expect is None else (status not in expect):
                    c.errors += 1
                    kind = f"HTTP {status}"
                    c.error_types[kind] = c.error_types.get(kind, 0) + 1
            seq = run.seq
            run.seq = seq + 1
            req = run.schedule[seq % run.schedule_len]
            wire = self.wire[req]
            if wire is not None:
                self.req = req
                self.start_ns = self.sent_ns = started = perf_counter_ns()
                if started >= run.measure_start_ns:
                    run.sent += 1
                self.transport.write(wire)  # type: ignore[union-attr]
                return
            run.seq = seq
            run.inflight -= 1
            run.next(self)
            return
        run.ok(self, self.req, start, now, status, nbytes)


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

    def build(self, req: int) -> bytes:
        request = self.options.mix[req]
        assert request.body is not None
        body, content_type = encode_dynamic_body(request.body())
        return encode_request(request, self.target, body, content_type)

    async def open(self, users: int) -> list[HttpUser]:
        slots = [HttpUser(self) for _ in range(users)]
        await slots[0].preconnect()  # a refused connection fails here, before the others
        await asyncio.gather(*(s.preconnect() for s in slots[1:]))
        return slots

    def close(self, slots: list[HttpUser]) -> None:
        for slot in slots:
            slot.close()
