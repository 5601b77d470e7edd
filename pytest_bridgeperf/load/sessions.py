"""Virtual users with a session: ``perf_load(app, on_start=login, headers={"Authorization":
"Bearer {token}"})``.

``on_start(user)`` (sync or async) runs once per virtual user, before the run starts — so before
its first request, warm-up included, and outside every measurement — and fills ``user.state``
(what it returns, when a mapping, is merged in). Each request's path, header values and the
strings of its ``json=``/``data=`` body are then templates: ``{token}`` is replaced by
``user.state["token"]`` for that user's requests.

The requests stay static per user, so they are encoded once per user and the fast engine sends
them from its hot path as before: a session costs one encoding per user and request kind, and
nothing per request. No pytest here.
"""

from __future__ import annotations

import asyncio
import inspect
import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .options import LoadOptionError, LoadOptions, Request

__all__ = ["UserResponse", "VirtualUser", "render_request", "start_sessions"]

#: on_start of this many users at once: logins are often deliberately slow (password hashing)
_CONCURRENT_STARTS = 32


@dataclass(frozen=True)
class UserResponse:
    """A response to a request ``on_start`` made."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)


@dataclass
class VirtualUser:
    """One virtual user, as ``on_start`` sees it."""

    #: 0 .. users-1
    index: int
    #: the target's base URL (``http://127.0.0.1:PORT``), for sync ``on_start`` functions with
    #: an HTTP client of their own
    url: str
    #: what the user's requests may use as ``{placeholders}``
    state: dict[str, Any] = field(default_factory=dict)
    _session: Any = field(default=None, repr=False)
    _timeout: float = field(default=5.0, repr=False)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> UserResponse:
        """Send one request to the target (not measured); ``await user.post("/login", ...)``."""
        if self._session is None:
            raise RuntimeError("user.request() is for async on_start functions (await it)")
        import aiohttp

        async with self._session.request(
            method,
            self.url + path,
            json=json,
            data=data,
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as resp:
            body = await resp.read()
            return UserResponse(resp.status, dict(resp.headers), body)

    async def get(self, path: str, **kwargs: Any) -> UserResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> UserResponse:
        return await self.request("POST", path, **kwargs)


def _render(value: Any, state: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        try:
            return value.format_map(state)
        except (KeyError, IndexError) as exc:
            raise LoadOptionError(
                f"{where}: {value!r} uses {{{exc.args[0]}}}, which on_start did not set "
                f"(user.state has: {', '.join(sorted(state)) or 'nothing'})"
            ) from None
        except ValueError as exc:
            raise LoadOptionError(
                f"{where}: {value!r} is not a valid template ({exc}); write a literal brace "
                "as {{ or }}"
            ) from None
    if isinstance(value, Mapping):
        return {k: _render(v, state, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, state, where) for v in value]
    return value


def render_request(request: Request, state: Mapping[str, Any], where: str) -> Request:
    """``request`` with its path, header values and body strings filled from ``state``."""
    return replace(
        request,
        path=_render(request.path, state, f"{where} path"),
        headers={k: _render(v, state, f"{where} header {k}") for k, v in request.headers.items()},
        json=_render(request.json, state, f"{where} json"),
        data=_render(request.data, state, f"{where} data")
        if isinstance(request.data, (str, Mapping))
        else request.data,
    )


async def _start_one(user: VirtualUser, on_start: Any) -> None:
    if inspect.iscoroutinefunction(on_start):
        outcome = await on_start(user)
    else:
        # a sync function may block (its own HTTP client, to an app served on this very loop)
        outcome = await asyncio.to_thread(on_start, user)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    if isinstance(outcome, Mapping):
        user.state.update(outcome)
    elif outcome is not None:
        raise LoadOptionError(
            f"on_start returned {type(outcome).__name__}; return None or a mapping to merge into "
            "user.state"
        )


async def start_sessions(base_url: str, opts: LoadOptions, users: int) -> list[tuple[Request, ...]]:
    """Run ``opts.on_start`` for each user; each user's requests, rendered from its state."""
    assert opts.on_start is not None
    import aiohttp

    on_start = opts.on_start
    limit = asyncio.Semaphore(_CONCURRENT_STARTS)
    connector = aiohttp.TCPConnector(limit=_CONCURRENT_STARTS)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        people = [
            VirtualUser(index=i, url=base_url, _session=session, _timeout=opts.timeout)
            for i in range(users)
        ]

        async def start(user: VirtualUser) -> None:
            async with limit:
                try:
                    await _start_one(user, on_start)
                except Exception as exc:
                    exc.add_note(f"(in perf_load's on_start of virtual user {user.index})")
                    raise

        await asyncio.gather(*(start(u) for u in people))
    return [
        tuple(render_request(r, u.state, f"user {u.index}, request {r.label!r}") for r in opts.mix)
        for u in people
    ]
