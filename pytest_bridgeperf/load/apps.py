"""What kind of web app a ``perf_load`` target is: aiohttp, ASGI 3, WSGI — or a factory of one.

Detection goes by the calling convention, never by a framework list: an ASGI 3 app is an async
callable taking exactly three positional arguments ``(scope, receive, send)``, a WSGI app a sync
callable taking exactly two ``(environ, start_response)``. Neither can be a load-tested callable
(``perf_load`` calls those with no argument), so an app is never mistaken for one, and a plain
callable never for an app. A *factory* — a callable returning an app — looks like a plain
callable, so it is only ever named explicitly: ``perf_load(create_app, app_factory=True)`` or
``perf_load(AppFactory(create_app, config), ...)``.

No pytest here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .safety import LoadTargetError

__all__ = ["AppFactory", "AppKind", "app_kind", "describe_app", "is_web_target"]

AppKind = Literal["aiohttp", "asgi", "wsgi"]


@dataclass(frozen=True)
class AppFactory:
    """``perf_load(AppFactory(create_app, *args, **kwargs), ...)``: ``create_app(*args,
    **kwargs)`` (sync or async) returns the app to serve. It is called for every run — every
    round and rerun of a perf test builds its own app, so nothing (a connection pool, a cache,
    an event loop binding) carries over — in the process and on the event loop that serve it.
    ``perf_load(create_app, app_factory=True)`` is the same without arguments."""

    factory: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, factory: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(factory):
            raise LoadTargetError(f"AppFactory({factory!r}): the factory must be callable")
        object.__setattr__(self, "factory", factory)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "kwargs", dict(kwargs))

    @property
    def name(self) -> str:
        return _qualname(self.factory)

    async def build(self) -> Any:
        """Call the factory (awaiting what an async one returns); the app it made."""
        app = self.factory(*self.args, **self.kwargs)
        if inspect.isawaitable(app):
            app = await app
        if app_kind(app) is None:
            raise LoadTargetError(
                f"app factory {self.name}() returned {type(app).__qualname__}, which is not an "
                "aiohttp.web.Application, an ASGI 3 app (async (scope, receive, send)) or a "
                "WSGI app ((environ, start_response))"
            )
        return app


def _qualname(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _is_aiohttp(target: object) -> bool:
    if not type(target).__module__.startswith("aiohttp"):
        return False
    from aiohttp import web

    return isinstance(target, web.Application)


def _positional(fn: Any) -> tuple[int, bool] | None:
    """(required positional parameters, accepts more) of ``fn``, None if it has no signature."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    required = 0
    more = False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            more = True
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            if parameter.default is parameter.empty:
                required += 1
            else:
                more = True
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            return None  # a required keyword: no server calls it that way
    return required, more


def _is_coroutine_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's, to see if it is async
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def app_kind(target: object) -> AppKind | None:
    """``"aiohttp"``, ``"asgi"`` or ``"wsgi"`` when ``target`` is such an app, else None."""
    if isinstance(target, (str, bytes, AppFactory)) or not callable(target):
        return "aiohttp" if _is_aiohttp(target) else None
    if _is_aiohttp(target):
        return "aiohttp"
    shape = _positional(target)
    if shape is None:
        return None
    required, _ = shape
    if _is_coroutine_callable(target):
        return "asgi" if required == 3 else None
    if inspect.isclass(target):
        return None  # calling a class makes an instance: not an app
    return "wsgi" if required == 2 else None


def is_web_target(target: object, app_factory: bool = False) -> bool:
    """An app (of any kind) or a factory of one: served by :mod:`.serving` for the run."""
    return app_factory or isinstance(target, AppFactory) or app_kind(target) is not None


def describe_app(target: object) -> str:
    """``FastAPI app``, ``create_app() factory``: how messages and results name the app."""
    if isinstance(target, AppFactory):
        return f"{target.name}() factory"
    return f"{type(target).__qualname__} app"


def check_callable_target(target: object) -> None:
    """A callable ``perf_load`` would call with no argument but which needs some: say what it
    looks like instead of failing every call with a ``TypeError``."""
    shape = _positional(target)
    if shape is None:
        return
    required, _ = shape
    if required == 0:
        return
    asynchronous = _is_coroutine_callable(target)
    hint = ""
    if asynchronous and required != 3:
        hint = " (an ASGI 3 app takes exactly (scope, receive, send))"
    elif not asynchronous and required != 2:
        hint = " (a WSGI app takes exactly (environ, start_response))"
    raise LoadTargetError(
        f"perf_load target {_qualname(target)} needs {required} positional argument(s), but a "
        f"callable target is called with none{hint}. To load-test a web app pass the app; to "
        "serve what a factory returns pass app_factory=True or AppFactory(fn, *args)."
    )
