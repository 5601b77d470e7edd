"""The aiohttp client engine: https, and redirects (checked against the allowed hosts).

Slower per request than :mod:`.http1` (a coroutine and aiohttp's machinery per request), so the
fast engine is the default for plain ``http://``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin

import aiohttp

from .callables import TaskSlot
from .engine import Run
from .options import LoadOptions, Request, encode_dynamic_body
from .safety import LoadTargetError, Target, check_allowed, parse_url

__all__ = ["AiohttpEngine"]

perf_counter_ns = time.perf_counter_ns
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
_BACKOFF = 0.01


class _TooLarge(Exception):
    pass


def _kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "TimeoutError"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error is not None:
        return type(exc.os_error).__name__
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno:
        # aiohttp wraps a reset or a broken pipe: name it as the fast engine does
        return type(OSError(exc.errno, exc.strerror)).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        # aiohttp raises ClientPayloadError only when the connection ended inside a body
        # (Content-Length or chunks cut short): the fast engine's ServerDisconnected
        return "ServerDisconnected"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "InvalidResponse"
    if isinstance(exc, _TooLarge):
        return "ResponseTooLarge"
    return type(exc).__name__


class AiohttpSlot(TaskSlot):
    __slots__ = ("engine", "user")

    backoff = _BACKOFF

    def __init__(self, engine: AiohttpEngine, user: int = 0) -> None:
        super().__init__(engine.run)
        self.engine = engine
        self.user = user

    async def _send(self, req: int) -> tuple[int, int]:
        return await self.engine.request(req, self.user)

    def _error_kind(self, exc: Exception) -> str:
        return _kind(exc)


class AiohttpEngine:
    def __init__(
        self, run: Run, target: Target, options: LoadOptions, allowed_hosts: Iterable[str]
    ) -> None:
        self.run = run
        self.target = target
        self.options = options
        self.allowed_hosts = tuple(allowed_hosts)
        self.session: aiohttp.ClientSession | None = None
        self.static = self._encode(options.mix)
        #: per user, its requests with their templates filled (``on_start``); set before open()
        self.user_requests: list[tuple[Request, ...]] | None = None
        self.user_static: list[list[tuple[bytes | None, dict[str, str]]]] = []

    @staticmethod
    def _encode(requests: Iterable[Request]) -> list[tuple[bytes | None, dict[str, str]]]:
        static = []
        for request in requests:
            body, ctype = request.static_body() if request.body is None else (None, None)
            headers = dict(request.headers)
            if ctype and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = ctype
            static.append((body, headers))
        return static

    async def request(self, req: int, user: int = 0) -> tuple[int, int]:
        assert self.session is not None
        if self.user_requests is not None:
            request = self.user_requests[user][req]
            body, headers = self.user_static[user][req]
        else:
            request = self.options.mix[req]
            body, headers = self.static[req]
        if request.body is not None:
            try:
                body, ctype = encode_dynamic_body(request.body())
            except Exception as exc:
                self.run.abort_with(exc)
                raise
            headers = dict(headers)
            if ctype and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = ctype
        url = self.target.origin + request.path
        method = request.method
        limit = self.options.max_response_size
        for _ in range(_MAX_REDIRECTS + 1):
            async with self.session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status == 101:
                    # Switching Protocols: the connection now speaks something else; drop it
                    # (an error unless expect_status names 101, as in the fast engine)
                    resp.close()
                    return 101, 0
                nbytes = 0
                async for chunk in resp.content.iter_any():
                    nbytes += len(chunk)
                    if nbytes > limit:
                        raise _TooLarge()
                location = resp.headers.get("Location")
                if not (self.options.follow_redirects and resp.status in _REDIRECTS and location):
                    return resp.status, nbytes
            url = urljoin(url, location)
            try:
                check_allowed(parse_url(url), self.allowed_hosts)
            except LoadTargetError as exc:
                self.run.abort_with(exc)
                raise
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        raise aiohttp.TooManyRedirects(resp.request_info, ())

    async def open(self, users: int) -> list[AiohttpSlot]:
        connector = aiohttp.TCPConnector(
            limit=users,
            limit_per_host=users,
            # verify_tls=False: for loopback servers with a self-signed certificate
            ssl=self.options.verify_tls,
        )
        timeout = aiohttp.ClientTimeout(total=None)  # the run's sweeper enforces timeout=
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, trust_env=False
        )
        if self.user_requests is not None:
            self.user_static = [self._encode(requests) for requests in self.user_requests]
        return [AiohttpSlot(self, i) for i in range(users)]

    def close(self, slots: list[Any]) -> None:
        for slot in slots:
            slot.close()

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
