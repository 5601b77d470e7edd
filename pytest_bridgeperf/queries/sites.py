"""Call sites: which line of the user's code sent a statement or checked out a connection.

Pure Python (no SQLAlchemy, no pytest). The statement hooks in :mod:`.capture` read the state
here on every statement: the rules below are applied once per source file and cached by file
name, and a statement from one of the last few call sites (:data:`RECENT`) costs one frame
lookup and two attribute reads instead of a walk through SQLAlchemy's frames.

The rule, in order, for the file a frame runs:

1. ``<frozen ...>`` (the import system, ``runpy``): **library**.
2. other ``<...>`` names (code compiled from strings, SQLAlchemy's generated functions):
   **third-party**.
3. a module named in :data:`LIBRARY_MODULES` or in the ``perf_library_modules`` ini (the module
   itself or anything below it: ``myapp.db`` covers ``myapp.db.session``, not ``myapp.dbx``):
   **library**.
4. a file under a ``site-packages`` / ``dist-packages`` directory: **third-party**.
5. a file of the standard library: **library**.
6. anything else: **user code** (tests, the application, scripts).

The call site is the first frame of user code, counted from the database call outwards. Only
when there is none (a thread that runs nothing but installed packages) is it the first
third-party frame, and failing that, none. Third-party code is skipped rather than named
because an installed package that issues queries for you (pagination helpers, admin panels)
is called from a line of your code, and that line is the one to change. An application
installed into site-packages (a non-editable install) is therefore third-party too: install it
editable (``pip install -e .``) to have its own lines named.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterable
from types import CodeType, FrameType

__all__ = [
    "LIBRARY_MODULES",
    "RawSite",
    "call_site",
    "configure",
    "display",
    "display_stack",
    "library_modules",
    "short_stack",
    "validate_module_name",
]

USER, THIRD_PARTY, LIBRARY = 0, 1, 2

#: Packages and modules whose frames are never a call site: the database stack, the web
#: frameworks and servers that call into an application, the concurrency machinery that runs
#: it, the test runner, and this plugin. The standard library is skipped as a whole (rule 5);
#: its modules are listed too where an application's stack commonly passes through them.
LIBRARY_MODULES: tuple[str, ...] = (
    # databases and ORMs
    "sqlalchemy", "sqlmodel", "alembic", "greenlet",
    "asyncpg", "psycopg", "psycopg2", "psycopg_pool", "aiosqlite", "sqlite3",
    "pymysql", "aiomysql", "asyncmy", "MySQLdb", "oracledb", "pyodbc",
    # web frameworks, servers and clients that call into an application
    "fastapi", "starlette", "pydantic", "pydantic_core", "aiohttp", "django", "flask",
    "werkzeug", "uvicorn", "gunicorn", "hypercorn", "httpx", "httpcore",
    # concurrency
    "asyncio", "anyio", "sniffio", "uvloop", "concurrent.futures", "threading", "contextlib",
    "functools",
    # test runners and this plugin
    "_pytest", "pytest", "pluggy", "pytest_asyncio", "anyio.pytest_plugin", "pytest_bridgeperf",
)  # fmt: skip

#: A call site as captured on the hot path: the code object and the byte offset of the
#: instruction; the line number is worked out only when someone reads it.
RawSite = tuple[CodeType, int]

_getframe = sys._getframe

# -- state read by the statement hooks (capture.py) on every statement --------------------------
# Never rebound, only cleared or overwritten in place, so the hooks can hold direct references.

#: file name → USER / THIRD_PARTY / LIBRARY, filled on first sight of each file.
KINDS: dict[str, int] = {}
#: ``RECENT[0]``: the call sites of the last few statements that needed a walk, as (depth of the
#: site's frame counted from the statement hook's frame, its code object, its instruction
#: offset), newest first. Statements mostly come from a handful of lines (a loop's lazy loads),
#: so the hook first checks whether the frame at one of these depths runs that code at that
#: instruction: one frame lookup and two attribute reads, ~40 ns, where walking all of
#: SQLAlchemy's frames to the first user frame costs 1–3 µs. A frame that matches ran a user
#: frame found by a walk at the same depth; it would be wrong only if the same instruction now
#: reached the database through a path of exactly the same length with user code inside it
#: (a polymorphic call whose user override replaces one library frame), and then the statement
#: is attributed to the line that made that call. One list for all threads: a miss only costs
#: a walk.
RECENT: list[tuple[tuple[int, CodeType, int], ...]] = [()]
#: How many sites :data:`RECENT` keeps: enough for a loop alternating between a few lines.
RECENT_SITES = 4
#: :data:`RECENT` for the pool's checkouts (their depths differ from the statements').
CHECKOUTS: list[tuple[tuple[int, CodeType, int], ...]] = [()]
#: :data:`RECENT` for an ``AsyncEngine``'s statements, whose driver call runs in a greenlet of
#: SQLAlchemy's own while the user's coroutine waits in the parent greenlet: (steps from the hook
#: to the child greenlet's outermost frame, that frame's code, steps from the parent's innermost
#: frame to the user frame, its code, its offset). Checking it costs one frame lookup and a few
#: steps up the parent; walking both stacks measured ~6 µs a statement.
ASYNC_RECENT: list[tuple[tuple[int, CodeType, int, CodeType, int], ...]] = [()]

_configured: tuple[str, ...] = ()


def validate_module_name(name: str) -> str:
    """``myapp.db`` → ``myapp.db``; raises ValueError for anything that is not a module name."""
    text = name.strip()
    if text.endswith(".*"):
        text = text[:-2]
    if not text or not all(part.isidentifier() for part in text.split(".")):
        raise ValueError(
            f"{name!r} is not a module name (expected dotted names like 'myapp.db' or 'myapp')"
        )
    return text


def library_modules() -> tuple[str, ...]:
    """The user's extra library modules in force (``perf_library_modules``)."""
    return _configured


def configure(extra: Iterable[str]) -> None:
    """Treat ``extra`` modules (the user's own database wrappers) as library code too.

    Called by the captures when they start; the per-file cache is kept as long as the set does
    not change, so consecutive tests with the same ini value classify each file only once.
    """
    global _configured
    modules = tuple(sorted(set(extra)))
    if modules == _configured:
        return
    _configured = modules
    KINDS.clear()
    RECENT[0] = ()
    CHECKOUTS[0] = ()
    ASYNC_RECENT[0] = ()


def _matches(module: str, names: Iterable[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def _path_prefixes(*paths: str | None) -> tuple[str, ...]:
    found: list[str] = []
    for path in paths:
        if path:
            found.append(os.path.join(path, ""))
            found.append(os.path.join(os.path.realpath(path), ""))
    return tuple(dict.fromkeys(found))


_paths = sysconfig.get_paths()
_STDLIB = _path_prefixes(_paths.get("stdlib"), _paths.get("platstdlib"))
_SEP = os.sep
_ALT_SEP = os.altsep or os.sep


def _classify(filename: str, module: object) -> int:
    if filename.startswith("<frozen"):
        return LIBRARY
    if filename.startswith("<"):
        return THIRD_PARTY
    if isinstance(module, str) and (
        _matches(module, LIBRARY_MODULES) or _matches(module, _configured)
    ):
        return LIBRARY
    parts = set(filename.replace(_ALT_SEP, _SEP).split(_SEP))
    if "site-packages" in parts or "dist-packages" in parts:
        return THIRD_PARTY
    if filename.startswith(_STDLIB) or os.path.realpath(filename).startswith(_STDLIB):
        return LIBRARY
    return USER


def kind_of(frame: FrameType) -> int:
    """USER, THIRD_PARTY or LIBRARY for the file ``frame`` runs (cached by file name)."""
    filename = frame.f_code.co_filename
    kind = KINDS.get(filename)
    if kind is None:
        kind = KINDS[filename] = _classify(filename, frame.f_globals.get("__name__"))
    return kind


def _first(frame: FrameType | None, wanted: int) -> tuple[FrameType | None, FrameType | None, int]:
    """The first frame of kind ``wanted`` from ``frame`` outwards, the frame below it and how
    many steps outwards from ``frame`` that one is — or, when there is none, None, the
    outermost frame and its steps from ``frame``."""
    below = None
    steps = -1
    while frame is not None:
        if kind_of(frame) == wanted:
            return frame, below, steps
        below = frame
        frame = frame.f_back
        steps += 1
    return None, below, steps


def _suspended_parents() -> Iterable[FrameType]:
    """The stacks of the greenlets above this one, innermost first.

    An AsyncEngine runs the DBAPI call in a greenlet whose own stack ends in SQLAlchemy; the
    awaiting coroutine is suspended in a parent greenlet.
    """
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return
    parent = greenlet.getcurrent().parent
    while parent is not None:
        if parent.gr_frame is not None:
            yield parent.gr_frame
        parent = parent.parent


def site_frame(
    start: FrameType | None,
    learn: bool = False,
    recent: list[tuple[tuple[int, CodeType, int], ...]] = RECENT,
) -> FrameType | None:
    """The call-site frame of a call whose innermost frame of interest is ``start``.

    ``learn=True`` (the hooks, with their own frame as ``start``) adds the site found to
    ``recent`` (:data:`RECENT` for statements, :data:`CHECKOUTS` for pool checkouts).
    """
    user, root, steps = _first(start, USER)
    if user is not None:
        if learn:
            depth, code, offset = steps + 1, user.f_code, user.f_lasti
            kept = (e for e in recent[0] if not (e[0] == depth and e[1] is code and e[2] == offset))
            recent[0] = ((depth, code, offset), *kept)[:RECENT_SITES]
        return user
    parents = list(_suspended_parents())
    for number, parent in enumerate(parents):
        user, _, parent_steps = _first(parent, USER)
        if user is not None:
            if learn and number == 0 and root is not None and recent is RECENT:
                entry = (steps, root.f_code, parent_steps + 1, user.f_code, user.f_lasti)
                kept_async = (e for e in ASYNC_RECENT[0] if e[1:] != entry[1:] or e[0] != steps)
                ASYNC_RECENT[0] = (entry, *kept_async)[:RECENT_SITES]
            return user
    for top in (start, *parents):
        third_party, _, _ = _first(top, THIRD_PARTY)
        if third_party is not None:
            return third_party
    return None


def _async_recent(level: int) -> RawSite | None:
    """:data:`ASYNC_RECENT`'s check for a statement hook ``level`` frames above the caller."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None
    parent = greenlet.getcurrent().parent
    if parent is None:
        return None
    for root_depth, root_code, steps, code, offset in ASYNC_RECENT[0]:
        try:
            root = _getframe(level + 1 + root_depth)
        except ValueError:
            continue
        if root.f_code is not root_code or root.f_back is not None:
            continue
        frame = parent.gr_frame
        for _ in range(steps):
            if frame is None:
                break
            frame = frame.f_back
        if frame is not None and frame.f_code is code and frame.f_lasti == offset:
            return code, offset
    return None


def call_site(depth: int = 1, *, learn: bool = False) -> RawSite | None:
    """The call site of the frame ``depth`` levels above the caller (1: the caller's caller).

    ``learn=True`` is for the statement hooks: ``depth`` must then name the hook's own frame.
    """
    if learn and ASYNC_RECENT[0]:
        found = _async_recent(depth + 1)
        if found is not None:
            return found
    frame = site_frame(_getframe(depth + 1), learn)
    if frame is None:
        return None
    return frame.f_code, frame.f_lasti


def short_stack(depth: int = 1, limit: int = 6) -> tuple[RawSite, ...]:
    """The call site (of the frame ``depth`` levels above the caller) and up to ``limit - 1``
    frames of user code calling it; the pool's checkout listener calls it.

    Checkouts come the same few ways over and over too, so :data:`CHECKOUTS` spares most of
    them the walk through SQLAlchemy's pool (measured 2–3 µs a checkout).
    """
    frame: FrameType | None = None
    for known, code, offset in CHECKOUTS[0]:
        try:
            candidate = _getframe(known + depth + 1)
        except ValueError:
            continue
        if candidate.f_code is code and candidate.f_lasti == offset:
            frame = candidate
            break
    else:
        frame = site_frame(_getframe(depth + 1), True, CHECKOUTS)
    if frame is None:
        return ()
    stack: list[RawSite] = [(frame.f_code, frame.f_lasti)]
    kinds = KINDS
    frame = frame.f_back
    while frame is not None and len(stack) < limit:
        code = frame.f_code
        kind = kinds.get(code.co_filename)
        if kind is None:
            kind = kind_of(frame)
        if kind == USER:
            stack.append((code, frame.f_lasti))
        frame = frame.f_back
    return tuple(stack)


def frames_contain(top: FrameType | None, codes: Iterable[CodeType]) -> bool:
    """Whether the stack from ``top`` outwards runs any of ``codes``."""
    wanted = set(codes)
    while top is not None:
        if top.f_code in wanted:
            return True
        top = top.f_back
    return False


# -- reading sites ------------------------------------------------------------------------------

_display_paths: dict[str, str] = {}
_lines: dict[RawSite, int] = {}


def line(site: RawSite) -> int:
    number = _lines.get(site)
    if number is None:
        code, offset = site
        number = code.co_firstlineno
        for start, end, found in code.co_lines():
            if start <= offset < end:
                number = found if found is not None else number
                break
        _lines[site] = number
    return number


def _path(filename: str) -> str:
    shown = _display_paths.get(filename)
    if shown is None:
        shown = filename
        try:
            relative = os.path.relpath(filename)
        except ValueError:  # another drive on Windows
            relative = filename
        if not relative.startswith(".."):
            shown = relative
        _display_paths[filename] = shown
    return shown


def display(site: RawSite | None) -> str | None:
    """``path:line`` (relative to the working directory when below it)."""
    if site is None:
        return None
    return f"{_path(site[0].co_filename)}:{line(site)}"


def display_stack(stack: Iterable[RawSite]) -> list[str]:
    """``path:line in function`` for each frame."""
    return [f"{display(site)} in {site[0].co_name}" for site in stack]
