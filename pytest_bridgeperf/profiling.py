"""Where the time of a test went: one more run of its body under cProfile, the top functions of
the user's code, a diff between two profiles, and the files that snakeviz, ``pstats`` and
speedscope open. No pytest here.

**Why cProfile** (measured, see the README's "Where the time went"): the questions a regression
leads to are "which function got slower" and "which one is called more often now" — an N+1
in Python is a call count that grew, exactly, whatever the machine's load. A deterministic
profiler answers both: every call counted, own and cumulative time per function, and the
standard ``.prof`` file without conversion. A sampling profiler (pyinstrument) costs less on
call-heavy code, but has no call counts, and a run of a few hundred milliseconds gives it a
few hundred samples: too few to rank functions that each take a few per cent. The profiled run
is an extra run that is never measured, so the profiler's overhead only lengthens the job.

**What the listing shows.** The profile is of the thread that runs the test body — for an async
test its event loop, and for a load test of an in-process app (``perf_load(app, ...)`` serves
it on that loop) the server's handling as well as the load generator. The listing keeps the
user's code (:func:`~pytest_bridgeperf.memory.sites.is_user_file`: not the interpreter, installed
packages, pytest or this plugin) and folds into each user function the library calls it makes
(``json.dumps``, ``time.sleep``, a SQL query) — those are its cost. Library code that calls
back into user code (pytest, the event loop, aiohttp's server, the load generator) is a
framework: its own time is on the "outside your code" line, and so the load generator never
shows as the app's cost. Time the event loop spent waiting in its selector (an ``await`` on
I/O or a timer) is counted apart: cProfile sees the thread, and an awaiting coroutine costs it
nothing.
"""

from __future__ import annotations

import contextlib
import cProfile
import inspect
import linecache
import marshal
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .memory.sites import is_user_file
from .units import format_duration

__all__ = [
    "EXPLAIN_KEY",
    "PROFILE_MODES",
    "FunctionChange",
    "FunctionStat",
    "LineRun",
    "Profile",
    "ProfileRun",
    "artifact_stem",
    "diff_profiles",
    "format_diff",
    "format_line_report",
    "format_profile",
    "line_profiling",
    "parse_lines",
    "profiling",
    "speedscope_document",
    "summarize",
    "write_artifacts",
]

#: ``--perf-profile`` / ini ``perf_profile``.
PROFILE_MODES = ("off", "on-regression", "always")
#: The heading of the profile in a failure message (``Evaluation.explain``'s key).
EXPLAIN_KEY = "where the time went"
PROFILER = "cProfile"
#: Functions listed in a failure message, and in the HTML report.
TOP = 10
#: Functions of a profile kept in the baseline (``perf_profile_baseline``): small, diff-friendly.
STORED_TOP = 15
#: Functions of each side's profile brought back under ``--perf-against``: a function that
#: grew from nothing to the top must be found on the other side too.
SENT_TOP = 60
#: Changes listed in a profile diff.
DIFF_TOP = 5

Key = tuple[str, int, str]  # pstats: (filename, first line, function name)
EdgeStats = tuple[int, int, float, float]  # primitive calls, calls, own time, cumulative time
RawStats = dict[Key, tuple[int, int, float, float, dict[Key, EdgeStats]]]

LINE_PROFILER_MISSING = (
    "line_profiler is not installed: pip install 'pytest-bridgeperf[profile]' for the "
    "line-by-line timings of lines="
)

# The event loop's wait for I/O or a timer: time the thread was idle, not work. cProfile names
# C methods "<method 'poll' of 'select.epoll' objects>" and functions "<built-in method ...>".
_IDLE = re.compile(
    r"^<method '(poll|select|control)' of 'select\.\w+' objects>$"
    r"|^<built-in method select\.(select|poll)>$"
)


# ---------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class FunctionStat:
    """One function of the user's code in a profile."""

    file: str  # relative to the rootdir when inside it
    line: int
    name: str
    calls: int
    #: seconds in the function itself and in the library calls it makes (those that do not
    #: call back into user code): what the function costs, with json.dumps or a sleep in it
    own: float
    #: seconds from entry to return, everything it calls included (cProfile's cumtime)
    cumulative: float
    #: the function of the user's code that called it for most of its time, and that share
    #: (a shared helper made slow is named with the caller that pays for it)
    via: str = ""
    via_share: float = 0.0

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def label(self) -> str:
        return f"{self.file}:{self.line} {self.name}"

    @property
    def shown(self) -> str:
        """The label, with the main caller: ``app/db.py:5 busy ← serialize_item (98 %)``."""
        if not self.via:
            return self.label
        return f"{self.label} ← {self.via} ({self.via_share * 100:.0f} %)"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "calls": self.calls,
            "cumulative": _round(self.cumulative),
            "file": self.file,
            "function": self.name,
            "line": self.line,
            "own": _round(self.own),
        }
        if self.via:
            data["via"] = self.via
            data["via_share"] = round(self.via_share, 2)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FunctionStat:
        try:
            return cls(
                file=str(data["file"]),
                line=int(data["line"]),
                name=str(data["function"]),
                calls=int(data["calls"]),
                own=float(data["own"]),
                cumulative=float(data["cumulative"]),
                via=str(data.get("via", "")),
                via_share=float(data.get("via_share", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a profiled function: {dict(data)!r:.200} ({exc})") from None


@dataclass
class Profile:
    """A profile of one run of a test body, reduced to what the reports show."""

    #: the user's functions, most expensive (own time) first
    functions: list[FunctionStat]
    total: float  # seconds on the profiled threads (the test's, and those it started)
    library: float  # of which outside the user's code (not folded into a user function)
    idle: float  # of which the event loop waited for I/O or a timer
    profiler: str = PROFILER
    #: cProfile's data, for the files written (never serialized into reports)
    stats: RawStats | None = field(default=None, repr=False, compare=False)
    #: the files written (kind → path relative to the rootdir)
    artifacts: dict[str, str] = field(default_factory=dict)
    #: why the run's profile is partial (it raised)
    note: str = ""
    #: threads started during the run and profiled with it (an app served on a thread, a pool)
    threads: int = 0

    @property
    def where(self) -> str:
        """``the test's thread`` (and the threads it started, when there were any)."""
        if not self.threads:
            return "the test's thread"
        return f"the test's thread and {self.threads} it started"

    def top(self, count: int = TOP) -> list[FunctionStat]:
        return [f for f in self.functions if f.own > 0 or f.cumulative > 0][:count]

    def to_json(self, top: int = TOP) -> dict[str, Any]:
        data: dict[str, Any] = {
            "functions": [f.to_json() for f in self.top(top)],
            "idle": _round(self.idle),
            "library": _round(self.library),
            "profiler": self.profiler,
            "total": _round(self.total),
        }
        if self.artifacts:
            data["artifacts"] = dict(self.artifacts)
        if self.note:
            data["note"] = self.note
        if self.threads:
            data["threads"] = self.threads
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        """What :meth:`to_json` wrote; ``ValueError`` saying what is wrong otherwise."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a profile must be an object, got {type(data).__name__}")
        functions = data.get("functions")
        if not isinstance(functions, list):
            raise ValueError("a profile needs a list of functions")
        try:
            return cls(
                functions=[FunctionStat.from_json(f) for f in functions],
                total=float(data.get("total", 0.0)),
                library=float(data.get("library", 0.0)),
                idle=float(data.get("idle", 0.0)),
                profiler=str(data.get("profiler", PROFILER)),
                artifacts={str(k): str(v) for k, v in dict(data.get("artifacts") or {}).items()},
                note=str(data.get("note", "")),
                threads=int(data.get("threads", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a profile: {exc}") from None


def _round(seconds: float) -> float:
    """4 significant digits: what a reader compares, and a diff of a stored profile that does
    not change in every digit on every update."""
    if seconds == 0 or not math.isfinite(seconds):
        return 0.0
    return float(f"{seconds:.4g}")


def _display(filename: str, root: Path | None) -> str:
    """A file as the reports name it: relative to the rootdir (the same on both sides of an
    A/B comparison, each in its own checkout), an installed package from its top-level name."""
    if not filename or filename.startswith("<") or filename == "~":
        return filename
    path = os.path.realpath(filename)
    if root is not None:
        real_root = os.path.realpath(root)
        if path == real_root or path.startswith(real_root + os.sep):
            return Path(os.path.relpath(path, real_root)).as_posix()
    for marker in ("site-packages", "dist-packages"):
        _, found, rest = path.rpartition(os.sep + marker + os.sep)
        if found:
            return Path(rest).as_posix()
    return path


_PACKAGE = str(Path(__file__).resolve().parent) + os.sep


def _is_ours(filename: str) -> bool:
    return filename.startswith(_PACKAGE) or os.path.realpath(filename).startswith(_PACKAGE)


def _is_user(filename: str) -> bool:
    # cProfile files C functions (builtins, methods of C types) under "~"
    return filename != "~" and is_user_file(filename)


def summarize(stats: RawStats, root: Path | None = None) -> Profile:
    """The user's functions of a cProfile run (``Profile.stats`` after ``create_stats``), with
    the library calls each makes folded in; see the module docstring."""
    user = {key: _is_user(key[0]) for key in stats}
    # Library functions that (transitively) call user code: frameworks. Walk up the callers.
    frameworks: set[Key] = set()
    seen = {key for key, is_user in user.items() if is_user}
    frontier = list(seen)
    while frontier:
        key = frontier.pop()
        for caller in stats[key][4] if key in stats else ():
            if caller in seen:
                continue
            seen.add(caller)
            frontier.append(caller)
            if not user.get(caller, False):
                frameworks.add(caller)
    own = {key: stats[key][2] for key, is_user in user.items() if is_user}
    for callee, (_cc, _nc, _tt, _ct, callers) in stats.items():
        if user[callee] or callee in frameworks or _is_ours(callee[0]):
            # this plugin's own calls (perf.record, a timer) are the test's harness, not a
            # cost of the code under test
            continue
        for caller, edge in callers.items():
            if caller in own:
                own[caller] += edge[3]  # the callee's cumulative time under this caller
    total = math.fsum(value[2] for value in stats.values())
    functions = []
    for key, seconds in own.items():
        _cc, nc, _tt, ct, callers = stats[key]
        filename, line, name = key
        mine = [(edge[3], caller) for caller, edge in callers.items() if user.get(caller)]
        via, share = "", 0.0
        if mine and ct > 0:
            spent, caller = max(mine)
            via, share = caller[2], min(1.0, spent / ct)
        functions.append(
            FunctionStat(_display(filename, root), line, name, nc, min(seconds, ct), ct, via, share)
        )
    functions.sort(key=lambda f: (-f.own, -f.cumulative, f.file, f.line))
    folded = math.fsum(f.own for f in functions)
    idle = math.fsum(value[2] for key, value in stats.items() if _IDLE.match(key[2]))
    return Profile(
        functions=functions,
        total=total,
        library=max(0.0, total - folded),
        idle=idle,
        stats=stats,
    )


@dataclass
class ProfileRun:
    """What :func:`profiling` found (read after the block)."""

    profile: Profile | None = None
    #: why no profile was taken (another profiler active)
    unavailable: str = ""
    wall: float = 0.0


@contextlib.contextmanager
def profiling(root: Path | None = None) -> Iterator[ProfileRun]:
    """Profile what runs in the block on this thread under cProfile, and on the threads started
    in it (an app served on a thread of its own, the thread pool it hands sync work to). An
    exception of the block is noted on the profile (which covers the run up to it) and
    re-raised."""
    run = ProfileRun()
    profiler = cProfile.Profile()
    busy = sys.getprofile()
    if busy is not None:
        from .tracing import describe_hook

        module, name = describe_hook(busy)
        run.unavailable = f"another profiler is active ({module}.{name}): no profile taken"
        yield run
        return
    try:
        profiler.enable()
    except ValueError as exc:  # 3.12+: another sys.monitoring profiler holds the slot
        run.unavailable = f"cProfile could not start ({exc}): no profile taken"
        yield run
        return
    threads = _ThreadProfilers()
    start = time.perf_counter()
    note = ""
    try:
        with threads:
            yield run
    except BaseException as exc:
        note = f"the profiled run raised {type(exc).__name__}: the profile stops there"
        raise
    finally:
        profiler.disable()
        run.wall = time.perf_counter() - start
        profiler.create_stats()
        raw = cast(RawStats, profiler.stats)
        thread_stats = threads.stats()
        for other in thread_stats:
            raw = merge_stats(raw, other)
        run.profile = summarize(raw, root)
        run.profile.note = note
        run.profile.threads = len(thread_stats)


class _ThreadProfilers:
    """cProfile profiles one thread (up to Python 3.11: ``sys.setprofile`` is per thread), so
    each thread started inside the block gets a profiler of its own, started by the hook that
    ``threading.setprofile`` installs in new threads; their statistics are merged at the end.

    From Python 3.12 cProfile uses ``sys.monitoring``, whose events come from every thread, and
    only one profiler may hold it: the block's profiler already sees the threads, and this does
    nothing."""

    def __init__(self) -> None:
        self.enabled = sys.version_info < (3, 12)
        self._profilers: list[cProfile.Profile] = []
        self._previous: Any = None

    def __enter__(self) -> None:
        if self.enabled:
            self._previous = threading.getprofile()
            threading.setprofile(self._start)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            threading.setprofile(self._previous)

    def _start(self, frame: Any, event: str, arg: Any) -> None:
        # the first event of a new thread: hand the thread to a profiler of its own
        sys.setprofile(None)
        profiler = cProfile.Profile()
        try:
            profiler.enable()
        except ValueError:  # pragma: no cover - another profiler took the thread meanwhile
            return
        self._profilers.append(profiler)  # list.append is atomic

    def stats(self) -> list[RawStats]:
        """The threads' statistics. A thread that outlives the block (a pool kept for later)
        keeps its profiler until it ends; what it did up to now is read without stopping it
        (``snapshot_stats``: ``create_stats`` would disable profiling of *this* thread)."""
        out = []
        for profiler in list(self._profilers):
            profiler.snapshot_stats()
            stats = cast(RawStats, profiler.stats)
            if stats:
                out.append(stats)
        return out


def merge_stats(a: RawStats, b: RawStats) -> RawStats:
    """Two cProfile runs as one (what ``pstats.Stats.add`` does): counts, times and callers of
    a function seen in both are summed."""
    merged = dict(a)
    for key, value in b.items():
        if key not in merged:
            merged[key] = value
            continue
        cc, nc, tt, ct, callers = merged[key]
        cc2, nc2, tt2, ct2, callers2 = value
        both = dict(callers)
        for caller, counts in callers2.items():
            # cProfile's callers map to (calls, primitive calls, own, cumulative)
            old = both.get(caller)
            if old is not None:
                counts = (old[0] + counts[0], old[1] + counts[1], old[2] + counts[2],
                          old[3] + counts[3])  # fmt: skip
            both[caller] = counts
        merged[key] = (cc + cc2, nc + nc2, tt + tt2, ct + ct2, both)
    return merged


# ---------------------------------------------------------------------------------------------
# the message


def format_profile(profile: Profile, top: int = TOP) -> str:
    """The listing of a failure message: the user's functions by own time, then one line for
    everything else."""
    lines = [
        f"one more run under {profile.profiler}, {format_duration(profile.total)} on "
        f"{profile.where}; your code by own time:"
    ]
    if profile.note:
        lines.append(f"  ({profile.note})")
    functions = profile.top(top)
    if not functions:
        lines.append("  no function of your code ran in the profiled threads")
    else:
        lines.append(f"  {'own':>9}  {'cumulative':>10}  {'calls':>9}  function")
        for f in functions:
            lines.append(
                f"  {format_duration(f.own):>9}  {format_duration(f.cumulative):>10}  "
                f"{f.calls:>9,}  {f.shown}"
            )
    share = profile.library / profile.total * 100 if profile.total > 0 else 0.0
    outside = (
        f"  {format_duration(profile.library):>9}  {'':>10}  {'':>9}  outside your code "
        f"({share:.0f} %): libraries, pytest, the event loop, a load generator"
    )
    if profile.idle > 0:
        outside += f"; {format_duration(profile.idle)} of it idle, waiting for I/O or timers"
    lines.append(outside)
    lines.append(
        "  (own: in the function and in the library calls it makes; cumulative: with all it calls)"
    )
    if profile.artifacts:
        lines.append("  files: " + ", ".join(sorted(profile.artifacts.values())))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# diffs


@dataclass(frozen=True)
class FunctionChange:
    """One function in two profiles (``None`` where a profile does not list it)."""

    before: FunctionStat | None
    after: FunctionStat | None

    @property
    def more_calls(self) -> bool:
        """Called more often (a function missing from one profile's kept list is not known
        to be: its time there is unknown, not nothing)."""
        return (
            self.before is not None
            and self.after is not None
            and self.after.calls > self.before.calls
        )

    @property
    def growth(self) -> float:
        """How much more the function costs: for one called more often, the growth of its
        cumulative time (an N+1: the function whose calls multiplied, with all they do, ranks
        above the helpers it calls); otherwise of its own time (a function made slower, not
        its callers)."""
        which = "cumulative" if self.more_calls else "own"
        after = getattr(self.after, which) if self.after else 0.0
        before = getattr(self.before, which) if self.before else 0.0
        return float(after - before)

    @property
    def function(self) -> FunctionStat:
        found = self.after or self.before
        assert found is not None
        return found


def _match(
    before: Sequence[FunctionStat], after: Sequence[FunctionStat]
) -> list[tuple[FunctionStat | None, FunctionStat | None]]:
    """Pairs of the same function in two profiles. By file and name (an edit above a function
    moves its line), by file, line and name where a file has two functions of one name (two
    classes' ``__init__``)."""

    def groups(functions: Sequence[FunctionStat]) -> dict[tuple[str, str], list[FunctionStat]]:
        found: dict[tuple[str, str], list[FunctionStat]] = {}
        for f in functions:
            found.setdefault((f.file, f.name), []).append(f)
        return found

    old, new = groups(before), groups(after)
    pairs: list[tuple[FunctionStat | None, FunctionStat | None]] = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, []), new.get(key, [])
        if len(a) <= 1 and len(b) <= 1:
            pairs.append((a[0] if a else None, b[0] if b else None))
            continue
        by_line = {f.line: f for f in a}
        for f in b:
            pairs.append((by_line.pop(f.line, None), f))
        pairs.extend((f, None) for f in by_line.values())
    return pairs


def diff_profiles(before: Profile, after: Profile) -> list[FunctionChange]:
    """Every function of either profile, the one whose own time grew the most first."""
    changes = [FunctionChange(b, a) for b, a in _match(before.functions, after.functions)]
    changes.sort(key=lambda c: (-c.growth, c.function.file, c.function.line))
    return changes


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + format_duration(abs(seconds))


def _per_call(change: FunctionChange) -> str:
    """``; 0.41 ms → 37.2 ms own per call`` where both the calls and the time per call changed:
    a test that runs for a fixed time (``perf.measure``'s rounds, a load test's duration) does
    fewer calls of a slower function, and the totals alone would hide how much slower."""
    before, after = change.before, change.after
    if before is None or after is None or before.calls == after.calls:
        return ""
    if before.calls <= 0 or after.calls <= 0:
        return ""
    old, new = before.own / before.calls, after.own / after.calls
    if old > 0 and 2 / 3 <= new / old <= 1.5:
        return ""  # the same cost per call: the calls tell it all (an N+1)
    return f"; {format_duration(old)} → {format_duration(new)} own per call"


def format_diff(
    before: Profile,
    after: Profile,
    *,
    before_name: str,
    after_name: str = "this run",
    top: int = DIFF_TOP,
) -> str:
    """``+3.1 ms  app/items.py:46 serialize_item (1,000 calls → 11,000 calls)`` lines: the
    functions whose cost grew the most (:attr:`FunctionChange.growth`), then the time outside
    the user's code."""
    changes = diff_profiles(before, after)
    # below 1 % of the run (or 50 µs), a difference between two single runs is noise
    floor = max(5e-5, 0.01 * max(before.total, after.total))
    grown = [c for c in changes if c.growth > floor][:top]
    lines = [
        f"time that grew the most, {before_name} → {after_name} (one profiled run each: "
        f"{format_duration(before.total)} → {format_duration(after.total)} on "
        f"{after.where}; own time, or cumulative for a function called more often):"
    ]
    if not grown:
        lines.append(f"  no function of your code grew by more than {format_duration(floor)}")
    absent = False
    for change in grown:
        f = change.function
        old = f"{change.before.calls:,} calls" if change.before else "—"
        new = f"{change.after.calls:,} calls" if change.after else "—"
        absent = absent or change.before is None or change.after is None
        calls = old if old == new else f"{old} → {new}"
        calls += _per_call(change)
        lines.append(f"  {_signed(change.growth):>10}  {f.label} ({calls})")
    lines.append(f"  {_signed(after.library - before.library):>10}  outside your code")
    if absent:
        lines.append(f"  (—: not among the functions kept of that profile, {STORED_TOP} or more)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# files: .prof (pstats, snakeviz) and speedscope JSON


def artifact_stem(directory: Path, nodeid: str, suffix: str = "") -> Path:
    """Where the files of one test's profile go, inside ``directory``: a name made of the node
    id (nothing that could leave the directory) and a short hash that keeps two ids that
    flatten alike apart."""
    import hashlib

    flat = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid).strip("._")[:120] or "test"
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:8]
    return directory / f"{flat}-{digest}{suffix}"


def _atomic_write(path: Path, data: bytes) -> None:
    """Through a temporary file ``os.replace``d over ``path``: replaces a symlink at ``path``
    rather than writing through it, so nothing outside the directory is overwritten."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_artifacts(
    profile: Profile, stem: Path, root: Path | None = None, name: str = "profile"
) -> dict[str, str]:
    """Write ``stem.prof`` (pstats/snakeviz) and ``stem.speedscope.json``; returns them by kind
    (``pstats``, ``speedscope``), relative to ``root`` when inside it. Also noted on
    ``profile.artifacts``."""
    import json

    if profile.stats is None:
        return {}
    written: dict[str, str] = {}
    prof = stem.with_name(stem.name + ".prof")
    # the format pstats.Stats.dump_stats writes: the marshalled stats dict
    _atomic_write(prof, marshal.dumps(profile.stats))
    written["pstats"] = _relative(prof, root)
    document = speedscope_document(profile.stats, name, root)
    scope = stem.with_name(stem.name + ".speedscope.json")
    _atomic_write(scope, (json.dumps(document, separators=(",", ":")) + "\n").encode())
    written["speedscope"] = _relative(scope, root)
    profile.artifacts.update(written)
    return written


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
    return str(path)


#: Paths of the call tree finer than this share of the run are merged into their parent.
_SPEEDSCOPE_FLOOR = 1e-4
_SPEEDSCOPE_MAX_SAMPLES = 20_000
_SPEEDSCOPE_MAX_DEPTH = 200


def speedscope_document(stats: RawStats, name: str, root: Path | None = None) -> dict[str, Any]:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json) of a cProfile
    run: one "sampled" profile whose stacks are the call tree and whose weights are seconds.

    cProfile keeps caller → callee totals, not stacks: the tree is rebuilt from the roots down,
    each callee's time under a caller shared out in proportion where a function is reached by
    several paths (as gprof2dot and flameprof do). Totals per function are exact; how a shared
    function's time splits between its callers is an estimate."""
    frames: list[dict[str, Any]] = []
    index: dict[Key, int] = {}

    def frame(key: Key) -> int:
        if key not in index:
            filename, line, function = key
            entry: dict[str, Any] = {"name": function}
            if filename and filename != "~" and not filename.startswith("<"):
                entry["file"] = _display(filename, root)
                entry["line"] = line
            index[key] = len(frames)
            frames.append(entry)
        return index[key]

    callees: dict[Key, list[tuple[Key, float]]] = {}
    for callee, (_cc, _nc, _tt, _ct, callers) in stats.items():
        for caller, edge in callers.items():
            callees.setdefault(caller, []).append((callee, edge[3]))
    for children in callees.values():
        children.sort(key=lambda c: -c[1])
    total = math.fsum(value[2] for value in stats.values())
    floor = total * _SPEEDSCOPE_FLOOR
    samples: list[list[int]] = []
    weights: list[float] = []
    roots = [key for key, value in stats.items() if not value[4]]
    if not roots:  # every function has a caller (a cycle at the top): start from the largest
        roots = sorted(stats, key=lambda k: -stats[k][3])[:1]

    def walk(key: Key, seconds: float, stack: list[int]) -> None:
        _cc, _nc, tt, ct, _callers = stats[key]
        ratio = min(1.0, seconds / ct) if ct > 0 else 0.0
        here = [*stack, frame(key)]
        own = tt * ratio
        on_stack = set(stack)
        for callee, edge_ct in callees.get(key, ()):
            share = edge_ct * ratio
            deep = len(here) >= _SPEEDSCOPE_MAX_DEPTH or len(samples) >= _SPEEDSCOPE_MAX_SAMPLES
            if share < floor or deep or index.get(callee, -1) in on_stack:
                own += share  # recursion, a cap or a sliver: kept on this frame
            else:
                walk(callee, share, here)
        if own > 0:
            samples.append(here)
            weights.append(own)

    for key in roots:
        walk(key, stats[key][3], [])
    end = math.fsum(weights)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "activeProfileIndex": 0,
        "exporter": "pytest-bridgeperf",
        "name": name,
        "profiles": [
            {
                "endValue": end,
                "name": name,
                "samples": samples,
                "startValue": 0,
                "type": "sampled",
                "unit": "seconds",
                "weights": weights,
            }
        ],
        "shared": {"frames": frames},
    }


# ---------------------------------------------------------------------------------------------
# line by line: @pytest.mark.perf(lines=[func, ...])


def parse_lines(value: object) -> tuple[Callable[..., Any], ...]:
    """The marker keyword ``lines=``: a function or a list of functions (methods, decorated
    functions); ``ValueError`` naming what is not one."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError("lines= needs at least one function, e.g. lines=[serialize_item]")
    functions: list[Callable[..., Any]] = []
    for item in items:
        target: Any = inspect.unwrap(item) if callable(item) else item
        target = getattr(target, "__func__", target)  # a bound or class method
        if not hasattr(target, "__code__"):
            raise ValueError(
                f"lines= takes Python functions to profile line by line, got {item!r} "
                f"({type(item).__name__}); pass the function object itself, e.g. "
                "lines=[serialize_item]"
            )
        functions.append(target)
    return tuple(functions)


@dataclass
class LineRun:
    """What :func:`line_profiling` found (read after the block)."""

    functions: tuple[Callable[..., Any], ...]
    #: line_profiler's LineStats: ``timings`` {(file, first line, name): [(line, hits, time)]}
    stats: Any = None
    unavailable: str = ""
    note: str = ""


@contextlib.contextmanager
def line_profiling(functions: Sequence[Callable[..., Any]]) -> Iterator[LineRun]:
    """Time every line of ``functions`` while the block runs (line_profiler)."""
    run = LineRun(tuple(functions))
    try:
        from line_profiler import LineProfiler
    except ImportError:
        run.unavailable = LINE_PROFILER_MISSING
        yield run
        return
    profiler = LineProfiler()
    for function in functions:
        profiler.add_function(function)
    profiler.enable_by_count()
    try:
        yield run
    except BaseException as exc:
        run.note = f"the profiled run raised {type(exc).__name__}: the timings stop there"
        raise
    finally:
        profiler.disable_by_count()
        run.stats = profiler.get_stats()


def format_line_report(run: LineRun, root: Path | None = None) -> str:
    """line_profiler's table of each function of ``lines=``, with the source."""
    if run.unavailable:
        return f"line by line: {run.unavailable}"
    timings: Mapping[Key, list[tuple[int, int, int]]] = getattr(run.stats, "timings", {}) or {}
    unit = float(getattr(run.stats, "unit", 1e-9) or 1e-9)
    out: list[str] = []
    if run.note:
        out.append(f"({run.note})")
    for function in run.functions:
        code = function.__code__
        found = [
            lines
            for (filename, first, _name), lines in timings.items()
            if first == code.co_firstlineno
            and os.path.realpath(filename) == os.path.realpath(code.co_filename)
        ]
        hits: dict[int, tuple[int, float]] = {}
        for lines in found:
            for number, count, units in lines:
                old = hits.get(number, (0, 0.0))
                hits[number] = (old[0] + count, old[1] + units * unit)
        where = f"{_display(code.co_filename, root)}:{code.co_firstlineno} {code.co_name}"
        total = math.fsum(t for _, t in hits.values())
        out.append(
            f"line by line (line_profiler): {where} — {format_duration(total)} in its lines"
            + ("" if hits else "; it did not run in the profiled run")
        )
        if not hits:
            continue
        out.append(f"  {'line':>6}  {'hits':>9}  {'time':>9}  {'per hit':>9}  {'% time':>6}  code")
        for number, text in _source_lines(function):
            count, spent = hits.get(number, (0, 0.0))
            if count:
                share = spent / total * 100 if total > 0 else 0.0
                out.append(
                    f"  {number:>6}  {count:>9,}  {format_duration(spent):>9}  "
                    f"{format_duration(spent / count):>9}  {share:>5.1f}%  {text}"
                )
            else:
                out.append(f"  {number:>6}  {'':>9}  {'':>9}  {'':>9}  {'':>6}  {text}")
    return "\n".join(out)


def _source_lines(function: Callable[..., Any]) -> Iterable[tuple[int, str]]:
    code = function.__code__
    try:
        lines, first = inspect.getsourcelines(function)
    except (OSError, TypeError):
        numbers = sorted({line for _, _, line in code.co_lines() if line is not None})
        return [(n, linecache.getline(code.co_filename, n).rstrip()) for n in numbers]
    return [(first + i, text.rstrip()) for i, text in enumerate(lines)]
