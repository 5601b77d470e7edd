"""The baseline store: a JSON file committed next to the tests.

Layout (schema 1)::

    {
      "environments": {
        "<env>": {
          "machines": {"<id>": {"cores": 2, "cpu": "...", "platform": "...", "python": "..."}},
          "tests": {
            "<nodeid>": {"machine": "<id>", "metrics": {"<name>": {<metric entry>}}}
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
]

SCHEMA_VERSION = 1
TOOL = "pytest-bridgeperf"

#: How long a writer waits for another one's lock. A writer holds it for a re-read, a merge and a
#: write: ~10 ms for the example app's 47 KB baseline, well under a second for a 64 MiB one; two
#: minutes means a lock that is never released (a stopped process), not a slow writer.
LOCK_TIMEOUT = 120.0
#: Without flock (the fallback), a lock file this old was left by a writer that crashed.
STALE_LOCK_AGE = 600.0
#: A temporary file of an interrupted write (``.NAME.*.tmp``) is removed by the next write once
#: it is this old and no live writer holds it: a write takes milliseconds, so a minute is a
#: margin of several orders of magnitude for a writer that does not lock (an older version).
STALE_TEMP_AGE = 60.0
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


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> BaselineError:
        return BaselineError(f"{self.path}: {where}: {problem}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        return value

    def number(self, value: Any, where: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise self.fail(where, f"expected a finite number, got {_kind(value)}")
        return float(value)

    def numbers(self, value: Any, where: str) -> list[float] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return [self.number(v, f"{where}[{i}]") for i, v in enumerate(value)]

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
        value = self.number(entry.get("value"), f"{where}.value")
        stat_ = self.string(entry.get("stat", "value"), f"{where}.stat", ("value", *STATS))
        noisy = entry.get("noisy", UNITS[unit])
        if not isinstance(noisy, bool):
            raise self.fail(f"{where}.noisy", f"expected true or false, got {_kind(noisy)}")
        role = entry.get("role")
        if role is not None:
            role = self.string(role, f"{where}.role")
        n = entry.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise self.fail(f"{where}.n", f"expected a whole number, got {_kind(n)}")
        hdr = entry.get("hdr")
        if hdr is not None:
            hdr = self.string(hdr, f"{where}.hdr")
            try:
                LatencyHistogram.decode(hdr)
            except ValueError as exc:
                raise self.fail(f"{where}.hdr", str(exc)) from None
        samples = self.numbers(entry.get("samples"), f"{where}.samples")
        rounds = self.numbers(entry.get("rounds"), f"{where}.rounds")
        summary = self.obj(entry.get("summary", {}), f"{where}.summary")
        for key, val in summary.items():
            self.number(val, f"{where}.summary.{key}")
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
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except IsADirectoryError:
            raise BaselineError(f"{path}: is a directory, not a baseline file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineError(f"{path}: cannot be read: {exc}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BaselineError(
                f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "fix or delete the file (it was left untouched)"
            ) from None
        baseline = cls(path, cls._validate(path, document))
        return baseline

    @staticmethod
    def _validate(path: Path, document: Any) -> dict[str, Any]:
        check = _Checker(path)
        if not isinstance(document, dict) or document.get("tool") != TOOL:
            raise BaselineError(
                f'{path}: not a pytest-bridgeperf baseline (no "tool": "{TOOL}" at the top '
                "level); point --perf-baseline at another file or delete this one"
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
            where = f"environments[{env_name!r}]"
            env = check.obj(env, where)
            machines = check.obj(env.get("machines", {}), f"{where}.machines")
            for mid, fp in machines.items():
                check.obj(fp, f"{where}.machines[{mid!r}]")
            tests = check.obj(env.get("tests", {}), f"{where}.tests")
            for nodeid, test in tests.items():
                twhere = f"{where}.tests[{nodeid!r}]"
                test = check.obj(test, twhere)
                machine = test.get("machine")
                if machine is not None:
                    check.string(machine, f"{twhere}.machine")
                metrics = check.obj(test.get("metrics"), f"{twhere}.metrics")
                for name, raw in metrics.items():
                    check.metric(name, raw, f"{twhere}.metrics[{name!r}]")
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

    def environments(self) -> list[str]:
        return sorted(self._doc["environments"])

    # writing -------------------------------------------------------------------------------
    def set_test(
        self,
        env: str,
        nodeid: str,
        entries: Mapping[str, dict[str, Any]],
        fingerprint: Mapping[str, Any],
    ) -> None:
        """Replace the entry of ``nodeid`` in ``env`` with ``entries`` (metric name → entry)."""
        environment = self._doc["environments"].setdefault(env, {})
        machines = environment.setdefault("machines", {})
        tests = environment.setdefault("tests", {})
        mid = machine_id(fingerprint)
        machines[mid] = dict(fingerprint)
        tests[nodeid] = {
            "machine": mid,
            "metrics": {k: copy.deepcopy(v) for k, v in entries.items()},
        }
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
