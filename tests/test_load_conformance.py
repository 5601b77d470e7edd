"""HTTP/1.1 conformance of both load engines, case by case, against scripted raw servers.

Each case is a tiny asyncio server on 127.0.0.1 (in a thread, with its own event loop) that
reads a request and answers with scripted bytes: whole, byte by byte (one write and one drain
per byte), or split in two at a position that moves by one byte per request, so that one run
puts a read boundary at every byte of the response (status line, headers, the blank line, body,
chunk sizes, trailers). Every case runs through the fast engine and the aiohttp engine with a
fixed request count, and both must give exactly the expected counts, statuses and error kinds.
The README's "HTTP conformance" table lists the same cases.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import pytest

from pytest_bridgeperf.load import LoadResult, run_load
from pytest_bridgeperf.load.options import LoadOptions

ENGINES = ["fast", "aiohttp"]

CLOSE = "close"  # step: close the connection (FIN)
RESET = "reset"  # step: close with SO_LINGER 0 (RST)


@dataclass
class Sleep:
    seconds: float


@dataclass
class Split:
    """Write ``data`` in two parts, the first ``at`` bytes long, with a pause between them."""

    data: bytes
    at: int


Step = bytes | str | Sleep | Split
Script = Callable[[int, int, str], list[Step]]  # (request on the connection, overall, method)


@dataclass
class Seen:
    connections: int = 0
    requests: int = 0
    methods: list[str] = field(default_factory=list)


class ScriptedServer:
    """Answers every request with ``script(n_on_connection, n_overall, method)``'s steps.

    ``bytewise``: every bytes step goes out one byte per write, each drained (TCP_NODELAY is on,
    so each is its own segment and the client's reads split anywhere)."""

    def __init__(self, script: Script, *, bytewise: bool = False) -> None:
        self.script = script
        self.bytewise = bytewise
        self.seen = Seen()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.seen.connections += 1
        on_connection = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].decode()
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.seen.requests += 1
                self.seen.methods.append(method)
                on_connection += 1
                for step in self.script(on_connection, self.seen.requests, method):
                    if step == CLOSE:
                        writer.close()
                        return
                    if step == RESET:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                        return
                    if isinstance(step, Sleep):
                        await asyncio.sleep(step.seconds)
                    elif isinstance(step, Split):
                        writer.write(step.data[: step.at])
                        await writer.drain()
                        await asyncio.sleep(0.001)
                        writer.write(step.data[step.at :])
                        await writer.drain()
                    elif isinstance(step, bytes):
                        await self._write(writer, step)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not self.bytewise:
            writer.write(data)
            await writer.drain()
            return
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()


# Several cases fail every request on purpose. Where perf_load refuses such a run unless told
# (expect_errors=True, LoadError), tell it: these tests check the errors themselves.
_ALL_ERRORS_OK = (
    {"expect_errors": True} if "expect_errors" in {f.name for f in fields(LoadOptions)} else {}
)


def load(url: str, engine: str, requests: int, users: int = 1, **options: Any) -> LoadResult:
    return run_load(
        url,
        {
            "requests": requests,
            "users": users,
            "engine": engine,
            "timeout": "3s",
            **_ALL_ERRORS_OK,
            **options,
        },
    )


def outcome(result: LoadResult) -> tuple[int, dict[int, int], dict[str, int], int]:
    return result.count, result.status_counts, result.error_types, result.errors


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"
HTTP10 = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
DELAY = 0.02  # a known hold inside a response; a latency can only be longer (busy machine)


def always(*steps: Step) -> Script:
    return lambda on_connection, overall, method: list(steps)


# ------------------------------------------------------------------------------- the matrix


@dataclass
class Case:
    name: str
    script: Script
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int] = field(default_factory=dict)
    min_latency: float = 0.0  # the response is held this long inside: latencies >= it
    options: dict[str, Any] = field(default_factory=dict)
    bytewise: bool = False


N = 12


def keepalive_limit(limit: int) -> Script:
    """nginx's keepalive_requests: the limit-th response says Connection: close, then closes."""

    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        if on_connection < limit:
            return [OK]
        return [OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), CLOSE]

    return script


def silent_close_after(limit: int) -> Script:
    """A server that closes a keep-alive connection when request limit + 1 arrives, without
    answering it and without having said Connection: close."""

    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        return [OK] if on_connection <= limit else [CLOSE]

    return script


def head_or_get(on_connection: int, overall: int, method: str) -> list[Step]:
    # a HEAD answer announces the length of the body it does not send
    return [OK[: OK.index(b"\r\n\r\n") + 4]] if method == "HEAD" else [OK]


CASES = [
    Case("Content-Length", always(OK), N, {200: N}),
    Case(
        "100 Continue, final response 20 ms later",
        always(CONTINUE, Sleep(DELAY), OK),
        N,
        {200: N},
        min_latency=DELAY,
    ),
    Case("103 Early Hints + 102 Processing", always(EARLY, PROCESSING, OK), N, {200: N}),
    Case("101 Switching Protocols", always(SWITCH, Sleep(0.05)), N, {101: N}, {"HTTP 101": N}),
    Case(
        "101 with expect_status=[101]",
        always(SWITCH, Sleep(0.05)),
        N,
        {101: N},
        options={"expect_status": [101]},
    ),
    Case(
        "body ends at close, 20 ms after the head",
        always(CLOSE_DELIMITED, Sleep(DELAY), b"hello, world", CLOSE),
        N,
        {200: N},
        min_latency=DELAY,
    ),
    Case("HTTP/1.0, body ends at close", always(HTTP10, b"hello", CLOSE), N, {200: N}),
    Case(
        "chunked + trailers, last chunk 20 ms later",
        always(CHUNKED[:-25], Sleep(DELAY), CHUNKED[-25:]),
        N,
        {200: N},
        min_latency=DELAY,
    ),
    Case("HEAD (Content-Length, no body)", head_or_get, N, {200: N}, options={"method": "HEAD"}),
    Case(
        "204 and 304 with Content-Length, no body",
        lambda c, n, m: [
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
            if n % 2
            else b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
        ],
        N,
        {204: N // 2, 304: N // 2},
    ),
    Case(
        "Connection: close on every response",
        always(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), CLOSE),
        N,
        {200: N},
    ),
    Case("keepalive_requests=3 (close on the 3rd)", keepalive_limit(3), N, {200: N}),
    Case("keep-alive closed silently at the 4th request, GET", silent_close_after(3), N, {200: N}),
    Case(
        "keep-alive closed silently at the 4th request, POST",
        silent_close_after(3),
        N,
        {200: N - N // 4},
        {"ServerDisconnected": N // 4},
        options={"method": "POST", "data": b"x"},
    ),
    Case("closed before any byte", always(CLOSE), N, {}, {"ServerDisconnected": N}),
    Case("reset before any byte", always(RESET), N, {}, {"ConnectionResetError": N}),
    Case(
        "100 Continue, then closed",
        always(CONTINUE, CLOSE),
        N,
        {},
        {"ServerDisconnected": N},
    ),
    Case(
        "Content-Length body cut short",
        always(OK[:-2], CLOSE),
        N,
        {},
        {"ServerDisconnected": N},
    ),
    Case("chunked body cut short", always(CHUNKED[:-12], CLOSE), N, {}, {"ServerDisconnected": N}),
    Case("not HTTP", always(b"\x00\x01garbage\r\n\r\n", CLOSE), N, {}, {"InvalidResponse": N}),
]

BYTEWISE = [
    Case("Content-Length, byte by byte", always(OK), N, {200: N}, bytewise=True),
    Case(
        "100 Continue, byte by byte",
        always(CONTINUE, Sleep(DELAY), OK),
        N,
        {200: N},
        min_latency=DELAY,
        bytewise=True,
    ),
    Case("chunked + trailers, byte by byte", always(CHUNKED), N, {200: N}, bytewise=True),
    Case(
        "body ends at close, byte by byte",
        always(CLOSE_DELIMITED, b"hello, world", CLOSE),
        N,
        {200: N},
        bytewise=True,
    ),
    Case("HEAD, byte by byte", head_or_get, N, {200: N}, options={"method": "HEAD"}, bytewise=True),
    Case(
        "101, byte by byte",
        always(SWITCH, Sleep(0.05)),
        N,
        {101: N},
        {"HTTP 101": N},
        bytewise=True,
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("case", CASES + BYTEWISE, ids=lambda c: c.name)
def test_conformance_matrix(case: Case, engine: str) -> None:
    with ScriptedServer(case.script, bytewise=case.bytewise) as server:
        result = load(server.url, engine, case.requests, **case.options)
    expected_errors = sum(case.errors.values())
    assert outcome(result) == (case.requests, case.statuses, case.errors, expected_errors), (
        result.summary()
    )
    answered = sum(case.statuses.values())
    assert result.latency_count == answered
    if answered and case.min_latency:
        # the whole response is inside the latency, not just its first bytes or an interim
        # answer; a busy machine can only make it longer (HDR rounding: 0.1 %)
        assert result.min >= case.min_latency * 0.999, result.summary()


def test_every_read_boundary_of_a_response(engine: str) -> None:
    # request i is answered in two writes split at byte i: over the run every byte of the
    # interim response, the head, each chunk size, chunk and trailer is once a read boundary
    response = CONTINUE + EARLY + CHUNKED

    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        return [Split(response, (overall - 1) % len(response) + 1)]

    with ScriptedServer(script) as server:
        result = load(server.url, engine, len(response))
    assert outcome(result) == (len(response), {200: len(response)}, {}, 0), result.summary()
    assert server.seen.connections <= 2  # one, and the aiohttp engine's connect check


def test_every_read_boundary_of_a_close_delimited_response(engine: str) -> None:
    response = CONTINUE + CLOSE_DELIMITED + b"hello, world"

    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        return [Split(response, (overall - 1) % len(response) + 1), CLOSE]

    with ScriptedServer(script) as server:
        result = load(server.url, engine, len(response))
    assert outcome(result) == (len(response), {200: len(response)}, {}, 0), result.summary()


def test_head_keeps_the_connection_in_step(engine: str) -> None:
    # HEAD and GET alternate on each connection; a HEAD answer whose announced body were read
    # would swallow the next answer and time out, or open new connections
    with ScriptedServer(head_or_get) as server:
        result = load(
            server.url,
            engine,
            40,
            users=2,
            mix=[{"path": "/", "method": "HEAD", "name": "head"}, {"path": "/", "name": "get"}],
        )
    assert result.count == 40
    assert result.errors == 0, result.summary()
    assert result["head"].status_counts == {200: 20}
    assert result["get"].status_counts == {200: 20}
    assert server.seen.connections <= 3  # two users, plus the aiohttp engine's connect check
    assert sorted(set(server.seen.methods)) == ["GET", "HEAD"]


def test_a_resent_request_counts_once_and_only_idempotent_ones_are_resent(engine: str) -> None:
    # silent close at the 4th request of each connection: 12 GETs reach the server as 12 + 3
    # (each 4th is sent again on a new connection); 12 POSTs as 12, three of them errors
    with ScriptedServer(silent_close_after(3)) as server:
        result = load(server.url, engine, 12)
    assert result.status_counts == {200: 12}
    assert server.seen.requests == 15
    with ScriptedServer(silent_close_after(3)) as server:
        posted = load(server.url, engine, 12, method="POST", data=b"x")
    assert posted.error_types == {"ServerDisconnected": 3}
    assert server.seen.requests == 12


def test_engines_agree_on_a_mixed_run() -> None:
    # the same scripted misbehaviour through both engines gives the same counts
    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        kind = overall % 4
        if kind == 0:
            return [CONTINUE, OK]
        if kind == 1:
            return [b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"]
        if kind == 2:
            return [CHUNKED]
        return [OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), CLOSE]

    outcomes = []
    for engine in ENGINES:
        with ScriptedServer(script) as server:
            outcomes.append(outcome(load(server.url, engine, 40)))
    assert outcomes[0] == outcomes[1] == (40, {200: 30, 503: 10}, {"HTTP 503": 10}, 10)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_duration_run_counts_every_status_and_its_rounds(engine: str) -> None:
    # a duration-bounded closed run takes the fast engine's inlined path, which logs statuses
    # and sizes and counts them in bulk: every count must still add up, per round too
    busy = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"

    def script(on_connection: int, overall: int, method: str) -> list[Step]:
        return [busy if overall % 3 == 0 else OK]

    with ScriptedServer(script) as server:
        result = run_load(server.url, {"users": 3, "duration": "0.5s", "engine": engine})
    n503 = result.status_counts.get(503, 0)
    assert result.count == sum(result.status_counts.values()) == result.latency_count > 30
    assert set(result.status_counts) == {200, 503}
    assert result.errors == n503 == result.error_types["HTTP 503"]
    assert result.count / 3 - 3 <= n503 <= result.count / 3 + 3  # every third of those served
    if engine == "fast":  # wire bytes, heads included
        assert result.bytes_received == n503 * len(busy) + result.status_counts[200] * len(OK)
    # the per-round counts (recorded into the baseline as rps and error-rate samples) see the
    # logged responses: a run of 0.5 s has 5 rounds of 100 ms (the last one may be cut by the
    # end of the run), all of them busy
    assert len(result.rounds) >= 4
    assert all(count > 0 and errors <= count for count, errors in result.rounds)
    # at least 4 of the 5 rounds are recorded; on a busy machine one round can carry much less
    # than a fifth of the run, hence half rather than four fifths (unflushed logs would give 0)
    assert sum(count for count, _ in result.rounds) >= 0.5 * result.count
    assert sum(errors for _, errors in result.rounds) >= 0.5 * result.errors
