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
to a temporary file in the same directory that is then ``os.replace``d over the old one. No pytest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import STATS, UNITS, Metric
from .stats import LatencyHistogram

__all__ = [
    "SCHEMA_VERSION",
    "TOOL",
    "Baseline",
    "BaselineError",
    "BaselineMetric",
    "machine_fingerprint",
    "machine_id",
]

SCHEMA_VERSION = 1
TOOL = "pytest-bridgeperf"


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
        tests[nodeid] = {
            "machine": mid,
            "metrics": {k: copy.deepcopy(v) for k, v in entries.items()},
        }
        if profile is not None:
            tests[nodeid]["profile"] = copy.deepcopy(dict(profile))
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

    def save(self) -> None:
        """Atomically replace the file: a crash mid-write leaves the old file intact."""
        text = self.dumps()
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        mode = None
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(self.path.stat().st_mode)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
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
