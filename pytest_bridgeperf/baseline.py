"""The baseline store: a JSON file committed next to the tests.

Layout (schema 1)::

    {
      "environments": {
        "<env>": {
          "machines": {"<id>": {"cores": 2, "cpu": "...", "platform": "...", "python": "..."}},
          "tests": {
            "<nodeid>": {"machine": "<id>", "metrics": {"<name>": {<metric entry>}},
                         "profile": {<top functions; only with ini perf_profile_baseline>}}
          }
        }
      },
      "schema": 1,
      "tool": "pytest-bridgeperf"
    }

Written with sorted keys, 2-space indent and a trailing newline, with nothing volatile at the top
level, so two branches that update different tests merge in git without a conflict. Writes go
to a temporary file in the same directory that is then ``os.replace``d over the old one.

Concurrent writers (two ``pytest --perf-update`` runs on one file) go through
:meth:`Baseline.update`: it holds an exclusive lock on a sidecar file (``.NAME.lock``, removed on
release), re-reads the baseline under the lock, applies the caller's change to what is there
*now*, and writes. Without the lock, the later writer replaced the file with its own stale copy
and the other run's entries were lost (10 of 10 trials with two processes). No pytest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import STATS, UNITS, Metric
from .stats import LatencyHistogram

try:  # POSIX; elsewhere (Windows) the lock falls back to an exclusively created file
    import fcntl
except ImportError:  # pragma: no cover - exercised through _USE_FLOCK in the tests
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SCHEMA_VERSION",
    "TOOL",
    "Baseline",
    "BaselineError",
    "BaselineLock",
    "BaselineMetric",
    "machine_fingerprint",
    "machine_id",
    "merge_documents",
    "read_bounded",
    "same_measurement",
    "split_conflict",
]

SCHEMA_VERSION = 1
TOOL = "pytest-bridgeperf"

#: How long a writer waits for another one's lock. A writer holds it for a re-read, a merge and a
#: write: 16 ms (44 ms median at load average ~11 on 2 cores) for the example app's 47 KB
#: baseline, fsync included, so tens of seconds for one at the 64 MiB size limit. Two minutes
#: means a lock that is never released (a stopped process), not a slow writer.
LOCK_TIMEOUT = 120.0
#: Without flock (the fallback), a lock file this old was left by a writer that crashed.
STALE_LOCK_AGE = 600.0
#: A temporary file of an interrupted write (``.NAME.*.tmp``) is removed by the next write once
#: it is this old and no live writer holds it: a write takes milliseconds, so a minute is a
#: margin of several orders of magnitude for a writer that does not lock (an older version).
STALE_TEMP_AGE = 60.0
#: The largest baseline (or report) file read. The example app's baseline holds 20 tests in 47 KB
#: (2.4 KB a test; its largest entry, a load test with per-request histograms, is 17 KB): 64 MiB
#: is ~4,000 such load tests or ~28,000 average ones, far beyond any suite, while a runaway input
#: (`bridgeperf show /dev/zero`, a log file passed by mistake) is refused before it is read.
MAX_FILE_SIZE = 64 * 1024 * 1024
#: Whether the lock uses flock(2); tests turn it off to exercise the portable fallback.
_USE_FLOCK = fcntl is not None


class BaselineError(Exception):
    """The baseline file cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# environment fingerprint


def _cpu_model() -> str:
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh,
    ):
        for line in fh:
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_fingerprint() -> dict[str, Any]:
    """What makes timings from two machines comparable."""
    return {
        "cores": os.cpu_count() or 0,
        "cpu": _cpu_model(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version_tuple()[0]}."
        f"{platform.python_version_tuple()[1]}",
    }


def machine_id(fingerprint: Mapping[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# metric entries


@dataclass
class BaselineMetric:
    """One stored metric, validated."""

    name: str
    unit: str
    better: str
    value: float
    stat: str
    noisy: bool
    role: str | None = None
    n: int = 1
    hdr: str | None = None
    samples: list[float] | None = None
    rounds: list[float] | None = None
    summary: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def histogram(self) -> LatencyHistogram | None:
        return LatencyHistogram.decode(self.hdr) if self.hdr else None

    def distribution(self) -> list[tuple[float, int]]:
        if self.rounds:
            return [(r, 1) for r in self.rounds]
        hist = self.histogram()
        if hist is not None:
            return list(hist.items())
        if self.samples is not None:
            return [(s, 1) for s in self.samples]
        return [(self.value, 1)]

    def statistic(self, stat: str) -> float | None:
        if stat == self.stat:
            return self.value
        return self.summary.get(stat)


def metric_entry(metric: Metric) -> dict[str, Any]:
    """The JSON form of a freshly measured metric."""
    entry: dict[str, Any] = {
        "better": metric.better,
        "n": metric.count,
        "noisy": metric.noisy,
        "stat": metric.stat,
        "unit": metric.unit,
        "value": metric.value,
    }
    if metric.role is not None:
        entry["role"] = metric.role
    if metric.histogram is not None:
        entry["hdr"] = metric.histogram.encode()
    if metric.samples is not None:
        entry["samples"] = list(metric.samples)
    if metric.rounds is not None:
        entry["rounds"] = list(metric.rounds)
    summary = metric.summary()
    if summary:
        entry["summary"] = summary
    # "explain" and "_"-prefixed details are for this run's messages and reports only: they
    # change every run, and would turn every baseline update into noise
    details = {k: v for k, v in metric.details.items() if k != "explain" and not k.startswith("_")}
    if details:
        entry["details"] = details
    return entry


def _key(name: str) -> str:
    """One step of a path inside the document: ``.name``, or ``["t.py::x"]`` when the key is
    not a plain word."""
    plain = name.replace("_", "a").replace("-", "a")
    return f".{name}" if plain.isalnum() and name.isascii() else f"[{json.dumps(name)}]"


#: What a negative value of each unit would be, for messages.
_NEGATIVE = {
    "s": "negative duration",
    "1/s": "negative rate",
    "bytes": "negative size",
    "count": "negative count",
    "ratio": "negative ratio",
}


class _Checker:
    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> BaselineError:
        return BaselineError(f"{self.path}: {where}: {problem}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        return value

    def number(self, value: Any, where: str, unit: str | None = None) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise self.fail(where, f"expected a finite number, got {_kind(value)}")
        # every unit measures a magnitude (durations, sizes, counts, rates, ratios)
        if unit is not None and value < 0:
            raise self.fail(where, f"{_NEGATIVE[unit]} {value!r}")
        return float(value)

    def numbers(self, value: Any, where: str, unit: str | None = None) -> list[float] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        if not value:
            return None  # as if absent (an older version wrote ``rounds=[]`` as given)
        return [self.number(v, f"{where}[{i}]", unit) for i, v in enumerate(value)]

    def string(self, value: Any, where: str, choices: Iterable[str] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self.fail(where, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    def metric(self, name: str, raw: Any, where: str) -> BaselineMetric:
        entry = self.obj(raw, where)
        unit = self.string(entry.get("unit"), f"{where}.unit", UNITS)
        better = self.string(entry.get("better"), f"{where}.better", ("lower", "higher"))
        value = self.number(entry.get("value"), f"{where}.value", unit)
        stat_ = self.string(entry.get("stat", "value"), f"{where}.stat", ("value", *STATS))
        noisy = entry.get("noisy", UNITS[unit])
        if not isinstance(noisy, bool):
            raise self.fail(f"{where}.noisy", f"expected true or false, got {_kind(noisy)}")
        role = entry.get("role")
        if role is not None:
            role = self.string(role, f"{where}.role")
        n = entry.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int):
            raise self.fail(f"{where}.n", f"expected a whole number, got {_kind(n)}")
        if n < 1:
            raise self.fail(f"{where}.n", f"a metric measured {n} times (expected at least 1)")
        hdr = entry.get("hdr")
        if hdr is not None:
            hdr = self.string(hdr, f"{where}.hdr")
            if unit != "s":
                raise self.fail(f"{where}.hdr", f"a latency histogram in a metric of unit {unit}")
            try:
                if LatencyHistogram.decode(hdr).count < 1:
                    raise self.fail(f"{where}.hdr", "an empty histogram")
            except ValueError as exc:
                raise self.fail(f"{where}.hdr", str(exc)) from None
        samples = self.numbers(entry.get("samples"), f"{where}.samples", unit)
        rounds = self.numbers(entry.get("rounds"), f"{where}.rounds", unit)
        summary = self.obj(entry.get("summary", {}), f"{where}.summary")
        for key, val in summary.items():
            self.number(val, f"{where}.summary{_key(key)}", unit)
        details = self.obj(entry.get("details", {}), f"{where}.details")
        return BaselineMetric(
            name=name,
            unit=unit,
            better=better,
            value=value,
            stat=stat_,
            noisy=noisy,
            role=role,
            n=n,
            hdr=hdr,
            samples=samples,
            rounds=rounds,
            summary={k: float(v) for k, v in summary.items()},
            details=details,
        )

    def profile(self, raw: Any, where: str) -> None:
        """A stored profile (ini perf_profile_baseline): its top functions, see profiling.py."""
        entry = self.obj(raw, where)
        functions = entry.get("functions")
        if not isinstance(functions, list):
            raise self.fail(f"{where}.functions", f"expected a list, got {_kind(functions)}")
        for index, function in enumerate(functions):
            fwhere = f"{where}.functions[{index}]"
            function = self.obj(function, fwhere)
            self.string(function.get("file"), f"{fwhere}.file")
            self.string(function.get("function"), f"{fwhere}.function")
            for key in ("line", "calls", "own", "cumulative"):
                self.number(function.get(key), f"{fwhere}.{key}")
        for key in ("total", "library", "idle"):
            if key in entry:
                self.number(entry[key], f"{where}.{key}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


# ---------------------------------------------------------------------------------------------
# the writers' lock


def lock_path(path: Path) -> Path:
    """The sidecar lock file of the baseline ``path`` (hidden, and removed on release)."""
    return path.with_name(f".{path.name}.lock")


class BaselineLock:
    """An exclusive lock on ``path`` between processes, held for one read-modify-write.

    With flock(2) the lock dies with its process, so a ``kill -9`` never leaves it held. The
    sidecar file is removed on release: a waiter that then acquires the lock on the removed
    file notices (the path names another file, or none) and retries on the new one. Without
    flock, the lock is the exclusive creation of the sidecar file; one older than
    :data:`STALE_LOCK_AGE` was left by a crashed writer and is taken over.
    """

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self.lock = lock_path(path)
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> BaselineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = self._try_flock() if _USE_FLOCK else self._try_create()
            if fd is not None:
                owner = f"{os.getpid()} {socket.gethostname()}\n".encode()
                os.ftruncate(fd, 0)
                os.write(fd, owner)
                self._fd = fd
                return
            if time.monotonic() >= deadline:
                raise BaselineError(
                    f"{self.path}: not updated: another writer ({self._holder()}) has held "
                    f"{self.lock.name} for over {self.timeout:g} s; if no such process runs, "
                    f"delete {self.lock}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _try_flock(self) -> int | None:
        assert fcntl is not None
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(self.lock)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)  # the previous holder removed this file on release: lock the new one
            return self._try_flock()
        return fd

    def _try_create(self) -> int | None:
        try:
            return os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        with contextlib.suppress(FileNotFoundError):
            if time.time() - self.lock.stat().st_mtime > STALE_LOCK_AGE:
                # rename first: of two waiters that both find it stale, only one takes it
                stale = self.lock.with_name(f"{self.lock.name}.{os.getpid()}.stale")
                os.replace(self.lock, stale)
                os.unlink(stale)
        return None

    def _holder(self) -> str:
        try:
            text = self.lock.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return "unknown process"
        return f"process {text[0]} on {text[1]}" if len(text) >= 2 else "unknown process"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # removed while still held, so no other writer can hold a lock on a file still named so
        with contextlib.suppress(OSError):
            os.unlink(self.lock)
        os.close(fd)  # closing releases the flock


def _temp_files(path: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(f".{path.name}.") and entry.name.endswith(".tmp"):
                yield Path(entry.path)


def remove_stale_temp_files(path: Path, *, now: float | None = None) -> list[Path]:
    """Remove temporary files of interrupted writes of ``path`` (a ``kill -9`` mid-write).

    Only files older than :data:`STALE_TEMP_AGE` whose writer is gone: a writer holds a flock on
    its temporary file while it writes, so one that can be locked has no live writer.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    for tmp in _temp_files(path):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if now - os.fstat(fd).st_mtime < STALE_TEMP_AGE:
                continue
            if _USE_FLOCK:
                assert fcntl is not None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            with contextlib.suppress(OSError):
                os.unlink(tmp)
                removed.append(tmp)
        finally:
            os.close(fd)
    return removed


# ---------------------------------------------------------------------------------------------
# reading files


def read_bounded(path: Path, what: str = "baseline file", limit: int | None = None) -> str:
    """The text of the regular file ``path``, read only when it is at most ``limit`` bytes
    (default :data:`MAX_FILE_SIZE`).

    A device, pipe or socket (``/dev/zero``, ``<(cmd)``) is refused before reading: it has no
    size to check and may never end. Raises :class:`FileNotFoundError` for a missing file and
    :class:`BaselineError` (naming the file and the problem) for anything else.
    """
    limit = MAX_FILE_SIZE if limit is None else limit
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise BaselineError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BaselineError(f"{path}: is a directory, not a {what}")
        raise BaselineError(
            f"{path}: not a regular file (a device, pipe or socket); a {what} must be a file"
        )
    with os.fdopen(fd, "rb") as fh:
        too_big = BaselineError(
            f"{path}: larger than {_size(limit)}, the limit for a {what}; is this the right file?"
        )
        if info.st_size > limit:
            raise too_big
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise BaselineError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:  # it grew while being read
        raise too_big
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: cannot be read: not UTF-8 text ({exc.reason})") from None


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit % mib == 0 else f"{limit} bytes"


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def parse_json(text: str, source: str) -> Any:
    """Parse JSON, refusing duplicate keys (``json`` would keep the last one silently: a hand
    merge that kept both sides of a test would lose one without a word)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as dup:
        needle = json.dumps(dup.key, ensure_ascii=False)
        lines = [
            number
            for number, line in enumerate(text.splitlines(), 1)
            if line.lstrip().startswith(needle + ":")
        ]
        where = f" (lines {', '.join(map(str, lines[:2]))})" if len(lines) >= 2 else ""
        raise BaselineError(
            f"{source}: duplicate key {needle} in one object{where}; keep one of them"
        ) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix or delete the file (it was left untouched)"
        ) from None


# ---------------------------------------------------------------------------------------------
# git merge conflicts

_OURS, _BASE, _THEIRS, _END = "<<<<<<<", "|||||||", "=======", ">>>>>>>"


@dataclass
class ConflictSides:
    """The versions of a file that git left with conflict markers."""

    ours: str
    theirs: str
    base: str | None  # the common ancestor's text, when every hunk has one (diff3/zdiff3 style)
    first_line: int  # where the first conflict starts, for messages
    hunks: int


def conflict_line(text: str) -> int | None:
    """The line number of the first git conflict marker in ``text``, or None."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(_OURS + " ") or line == _OURS:
            return number
    return None


def split_conflict(text: str, source: str) -> ConflictSides:
    """Split a file with git conflict markers into the ours / theirs (/ base) texts."""
    ours: list[str] = []
    theirs: list[str] = []
    base: list[str] = []
    complete_base = True
    seen_base = False
    state = "common"
    first = 0
    hunks = 0
    start = 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        bare = line.rstrip("\r\n")
        marker = bare[:7] if bare[:7] in (_OURS, _BASE, _THEIRS, _END) else None
        if marker is not None and len(bare) > 7 and bare[7] != " ":
            marker = None  # e.g. "========" is content, not a marker
        if state == "common" and marker == _OURS:
            state, start, hunks = "ours", number, hunks + 1
            first = first or number
            seen_base = False
            continue
        if state == "ours" and marker == _BASE:
            state, seen_base = "base", True
            continue
        if state in ("ours", "base") and marker == _THEIRS:
            complete_base = complete_base and seen_base
            state = "theirs"
            continue
        if state == "theirs" and marker == _END:
            state = "common"
            continue
        if (marker is not None and state != "common") or (state == "common" and marker == _END):
            raise BaselineError(
                f"{source}: line {number}: unexpected {bare!r} in a git conflict; the conflict "
                "markers are damaged: resolve by hand or check out one side"
            )
        if state in ("common", "ours"):
            ours.append(line)
        if state in ("common", "theirs"):
            theirs.append(line)
        if state in ("common", "base"):
            base.append(line)
    if state != "common":
        raise BaselineError(
            f"{source}: the git conflict starting on line {start} has no closing {_END} "
            "marker: resolve by hand or check out one side"
        )
    return ConflictSides(
        ours="".join(ours),
        theirs="".join(theirs),
        base="".join(base) if complete_base else None,
        first_line=first,
        hunks=hunks,
    )


def conflict_help(path: Path | str, line: int) -> str:
    return (
        f"{path}: unresolved git merge conflict (conflict markers from line {line}): two "
        f"branches both updated the baseline. Resolve it per test entry with "
        f"`bridgeperf merge --resolve {path}`, then `git add` it; to have git do this on every "
        "merge, set up the merge driver (README, Baselines: merge driver)"
    )


@dataclass
class MergeDecision:
    """A test that both sides changed differently, and which side the merge took."""

    env: str
    nodeid: str
    side: str  # "ours" or "theirs"
    why: str


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


def _valid_stamp(value: Any) -> bool:
    return isinstance(value, str) and _STAMP.fullmatch(value) is not None


def now_stamp(now: float | None = None) -> str:
    """The ``updated`` time of a test entry: UTC, milliseconds, sorts as text."""
    now = time.time() if now is None else now
    millis = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


def same_measurement(a: Any, b: Any) -> bool:
    """Whether two test entries hold the same measurement (their ``updated`` times aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: v for k, v in a.items() if k != "updated"} == {
            k: v for k, v in b.items() if k != "updated"
        }
    return bool(a == b)


def _stamp(entry: Any) -> str:
    value = entry.get("updated") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else ""


def merge_documents(
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    base: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], list[MergeDecision]]:
    """Three-way merge of validated baseline documents, per test entry.

    A test changed (or added, or pruned) on one side only takes that side. A test changed on
    both sides, differently, takes the newer measurement (each entry's ``updated`` time), and
    ours on a tie or without times; a test pruned on one side and updated on the other is kept.
    Without ``base`` (a two-way conflict) a test present on one side only is kept.
    """
    result: dict[str, Any] = {"environments": {}, "schema": SCHEMA_VERSION, "tool": TOOL}
    decisions: list[MergeDecision] = []
    missing = object()
    sides = {"ours": ours, "theirs": theirs}
    env_names = set(ours["environments"]) | set(theirs["environments"])
    if base is not None:
        env_names |= set(base["environments"])

    def tests_of(doc: Mapping[str, Any] | None, env: str) -> dict[str, Any]:
        if doc is None:
            return {}
        found: dict[str, Any] = doc["environments"].get(env, {}).get("tests", {})
        return found

    for env in sorted(env_names):
        o_tests, t_tests = tests_of(ours, env), tests_of(theirs, env)
        b_tests = tests_of(base, env)
        merged_tests: dict[str, Any] = {}
        machines: dict[str, Any] = {}
        for nodeid in sorted(set(o_tests) | set(t_tests) | set(b_tests)):
            o = o_tests.get(nodeid, missing)
            t = t_tests.get(nodeid, missing)
            b = b_tests.get(nodeid, missing) if base is not None else None
            side: str | None
            if same_measurement(o, t):
                side = "ours"
            elif base is not None and same_measurement(o, b):
                side = "theirs"
            elif base is not None and same_measurement(t, b):
                side = "ours"
            elif o is missing or t is missing:
                side = "theirs" if o is missing else "ours"  # pruned on one side, kept
            else:
                newer_theirs = _stamp(t) > _stamp(o)
                side = "theirs" if newer_theirs else "ours"
                if _stamp(o) or _stamp(t):
                    why = "the newer measurement" if _stamp(o) != _stamp(t) else "same time: ours"
                else:
                    why = "no measurement times: ours"
                decisions.append(MergeDecision(env, nodeid, side, why))
            entry = o if side == "ours" else t
            if entry is missing:
                continue
            merged_tests[nodeid] = copy.deepcopy(entry)
            mid = entry.get("machine")
            source_machines = sides[side]["environments"].get(env, {}).get("machines", {})
            if mid is not None and mid in source_machines:
                machines[mid] = copy.deepcopy(source_machines[mid])
        if merged_tests:
            result["environments"][env] = {"machines": machines, "tests": merged_tests}
    return result, decisions


# ---------------------------------------------------------------------------------------------
# the store


class Baseline:
    """A loaded (or new) baseline file. Keeps the raw document so untouched entries are written
    back exactly as they were read."""

    def __init__(self, path: Path, document: dict[str, Any] | None = None) -> None:
        self.path = path
        self.exists = document is not None
        self._doc: dict[str, Any] = document or {
            "environments": {},
            "schema": SCHEMA_VERSION,
            "tool": TOOL,
        }
        self._parsed: dict[tuple[str, str], dict[str, BaselineMetric]] = {}

    # loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Baseline:
        """Read and fully validate ``path``; a missing file is an empty baseline."""
        try:
            text = read_bounded(path)
        except FileNotFoundError:
            return cls(path)
        line = conflict_line(text)
        if line is not None:
            raise BaselineError(conflict_help(path, line))
        return cls(path, cls.validate(path, parse_json(text, str(path))))

    @staticmethod
    def validate(path: Path | str, document: Any) -> dict[str, Any]:
        """Check a parsed baseline document; errors name ``path`` and the place inside it."""
        check = _Checker(path)
        if not isinstance(document, dict) or document.get("tool") != TOOL:
            raise BaselineError(
                f'{path}: not a pytest-bridgeperf baseline (no "tool": "{TOOL}" at the top '
                "level); point --perf-baseline at another file or delete this one"
            )
        if "environments" not in document and "tests" in document:
            raise BaselineError(
                f"{path}: this is a --perf-report file (written by pytest --perf-report), not a "
                "baseline; a baseline is written by pytest --perf --perf-update"
            )
        schema = document.get("schema")
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise check.fail("schema", f"expected a whole number, got {_kind(schema)}")
        if schema > SCHEMA_VERSION:
            raise BaselineError(
                f"{path}: written by a newer pytest-bridgeperf (schema {schema}); this version "
                f"understands schema {SCHEMA_VERSION} — upgrade pytest-bridgeperf"
            )
        if schema < 1:
            raise check.fail("schema", f"unknown schema {schema}")
        envs = check.obj(document.get("environments"), "environments")
        for env_name, env in envs.items():
            where = f"environments{_key(env_name)}"
            env = check.obj(env, where)
            machines = check.obj(env.get("machines", {}), f"{where}.machines")
            for mid, fp in machines.items():
                check.obj(fp, f"{where}.machines{_key(mid)}")
            tests = check.obj(env.get("tests", {}), f"{where}.tests")
            for nodeid, test in tests.items():
                twhere = f"{where}.tests{_key(nodeid)}"
                test = check.obj(test, twhere)
                machine = test.get("machine")
                if machine is not None:
                    check.string(machine, f"{twhere}.machine")
                updated = test.get("updated")
                if updated is not None and not _valid_stamp(updated):
                    raise check.fail(
                        f"{twhere}.updated",
                        f"expected a time like 2025-01-31T12:00:00.000Z, got {_kind(updated)}",
                    )
                metrics = check.obj(test.get("metrics"), f"{twhere}.metrics")
                for name, raw in metrics.items():
                    check.metric(name, raw, f"{twhere}.metrics{_key(name)}")
                if "profile" in test:
                    check.profile(test["profile"], f"{twhere}.profile")
        return document

    # reading -------------------------------------------------------------------------------
    def _env(self, env: str) -> dict[str, Any]:
        envs: dict[str, dict[str, Any]] = self._doc["environments"]
        return envs.get(env, {})

    def tests(self, env: str) -> dict[str, Any]:
        tests: dict[str, Any] = self._env(env).get("tests", {})
        return tests

    def machine_of(self, env: str, nodeid: str) -> dict[str, Any] | None:
        test = self.tests(env).get(nodeid)
        if not test or "machine" not in test:
            return None
        machines: dict[str, Any] = self._env(env).get("machines", {})
        fp = machines.get(test["machine"])
        return fp if isinstance(fp, dict) else None

    def metrics(self, env: str, nodeid: str) -> dict[str, BaselineMetric]:
        key = (env, nodeid)
        if key not in self._parsed:
            test = self.tests(env).get(nodeid)
            check = _Checker(self.path)
            parsed: dict[str, BaselineMetric] = {}
            if test:
                for name, raw in test.get("metrics", {}).items():
                    parsed[name] = check.metric(name, raw, name)
            self._parsed[key] = parsed
        return self._parsed[key]

    def profile(self, env: str, nodeid: str) -> dict[str, Any] | None:
        """The profile stored for ``nodeid`` by ``--perf-update`` with ini
        ``perf_profile_baseline`` (validated when loaded), or None."""
        test = self.tests(env).get(nodeid)
        found = test.get("profile") if isinstance(test, dict) else None
        return found if isinstance(found, dict) else None

    def environments(self) -> list[str]:
        return sorted(self._doc["environments"])

    # writing -------------------------------------------------------------------------------
    def set_test(
        self,
        env: str,
        nodeid: str,
        entries: Mapping[str, dict[str, Any]],
        fingerprint: Mapping[str, Any],
        profile: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the entry of ``nodeid`` in ``env`` with ``entries`` (metric name → entry)
        and, with ini ``perf_profile_baseline``, the test's top functions (``profile``)."""
        environment = self._doc["environments"].setdefault(env, {})
        machines = environment.setdefault("machines", {})
        tests = environment.setdefault("tests", {})
        mid = machine_id(fingerprint)
        machines[mid] = dict(fingerprint)
        metrics = {k: copy.deepcopy(v) for k, v in entries.items()}
        stored = copy.deepcopy(dict(profile)) if profile is not None else None
        old = tests.get(nodeid)
        if (
            isinstance(old, dict)
            and old.get("machine") == mid
            and old.get("metrics") == metrics
            and old.get("profile") == stored
        ):
            return  # the same measurement: keep the entry, and its time, byte for byte
        # when it was measured: the merge driver takes the newer of two updates of one test
        tests[nodeid] = {"machine": mid, "metrics": metrics, "updated": now_stamp()}
        if stored is not None:
            tests[nodeid]["profile"] = stored
        self._parsed.pop((env, nodeid), None)

    def remove_test(self, env: str, nodeid: str) -> None:
        self.tests(env).pop(nodeid, None)
        self._parsed.pop((env, nodeid), None)

    def _drop_unused_machines(self) -> None:
        for environment in self._doc["environments"].values():
            used = {t.get("machine") for t in environment.get("tests", {}).values()}
            machines = environment.get("machines", {})
            for mid in [m for m in machines if m not in used]:
                del machines[mid]

    def dumps(self) -> str:
        self._drop_unused_machines()
        return json.dumps(self._doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def update(
        cls,
        path: Path,
        apply: Callable[[Baseline], bool],
        *,
        timeout: float = LOCK_TIMEOUT,
    ) -> Baseline:
        """Change the baseline file ``path`` safely beside other writers.

        Takes the writers' lock (waiting up to ``timeout`` seconds), re-reads the file as it is
        now, calls ``apply(baseline)`` and, when that returns True (it changed something),
        writes the result atomically before releasing the lock. Returns the baseline as
        written (or as read, when nothing changed). Raises :class:`BaselineError` when the
        file cannot be locked or read, and ``OSError`` when it cannot be written.
        """
        with BaselineLock(path, timeout):
            baseline = cls.load(path)
            if apply(baseline):
                baseline.save()
        return baseline

    def save(self) -> None:
        """Atomically replace the file: a crash mid-write leaves the old file intact.

        Call it under :class:`BaselineLock` (as :meth:`update` does) when another process may
        write the same file. Temporary files left by interrupted writes are removed here.
        """
        text = self.dumps()
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.path)
        mode = None
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(self.path.stat().st_mode)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            if _USE_FLOCK:
                assert fcntl is not None
                # tells remove_stale_temp_files of another writer that this one is alive
                fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode if mode is not None else 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.exists = True
