"""Is something tracing or profiling this process? Timings measured under it are not comparable.

coverage.py, debuggers, profilers and allocation trackers hook into the interpreter and slow the
code they watch: the best of 30 runs of a recursive ``fib(18)`` took 243 µs here, 1.79 ms under
``coverage run`` (7.4x) and 1.23 ms under cProfile (5x) — enough to fail every timing compared
with a baseline measured without them. The recorder asks
:func:`timing_distortion` each time it records a timing, and a timing recorded while anything is
found is marked ``Metric.distorted`` with the reason: reported ``not comparable``, never
``regressed``, and never written into the baseline. Counts and heap bytes stay enforced.

Only public interfaces of the interpreter and of the tools are read (``sys.gettrace``,
``sys.getprofile``, their ``threading`` counterparts, ``sys.monitoring``,
``coverage.Coverage.current()``, ``yappi.is_running()``, ``memray.start_thread_trace``), and only
for tools already imported, so a check costs a few microseconds (3.5 µs measured), once per
recorded metric, never per sample. No pytest here.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["active_tracers", "describe_hook", "timing_distortion"]

COVERAGE = "coverage tracing was active"
MEMRAY = "memray was tracking allocations (pytest-memray or memray.Tracker)"

#: Module prefixes of debuggers that install a trace function (pdb's is a bdb.Bdb method).
_DEBUGGERS = ("bdb", "pdb", "pydevd", "_pydevd", "debugpy", "pudb", "ipdb", "wdb", "web_pdb")
#: Module prefixes of profilers that install a profile function.
_PROFILERS = ("cProfile", "_lsprof", "profile", "yappi", "pyinstrument", "line_profiler")

# sys.monitoring's reserved tool ids (PEP 669): 0 debugger, 1 coverage, 2 profiler, 5 optimizer
_MONITORING_KINDS = {0: "debugger", 1: "coverage", 2: "profiler"}


def timing_distortion() -> str | None:
    """Why timings measured now would be distorted (reasons joined by ``; ``), or ``None``."""
    reasons = active_tracers()
    return "; ".join(reasons) if reasons else None


def active_tracers() -> list[str]:
    """One short reason per tracer, profiler or allocation tracker active in this process."""
    reasons: list[str] = []

    def add(reason: str | None) -> None:
        if reason and reason not in reasons:
            reasons.append(reason)

    add(_trace_reason(sys.gettrace()))
    add(_trace_reason(threading.gettrace()))  # set for new threads only (e.g. coverage's)
    add(_profile_reason(sys.getprofile()))
    add(_profile_reason(threading.getprofile()))
    add(_coverage_reason())
    add(_yappi_reason())
    for reason in _monitoring_reasons():
        add(reason)
    return reasons


def describe_hook(hook: Any) -> tuple[str, str]:
    """``(module, qualified name)`` of a trace or profile hook: a function, a bound method or a
    callable object such as coverage's ``CTracer`` or ``cProfile.Profile``."""
    owner = getattr(hook, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):
        target: Any = type(owner)  # a bound method: name its class, e.g. pdb.Pdb
    elif hasattr(hook, "__qualname__") and hasattr(hook, "__module__"):
        target = hook  # a plain function
    else:
        target = type(hook)  # a callable object
    module = str(getattr(target, "__module__", None) or "")
    name = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", "?"))
    return module, name


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _trace_reason(hook: Any) -> str | None:
    if hook is None:
        return None
    module, name = describe_hook(hook)
    top = _top(module)
    if top == "coverage":
        return COVERAGE
    bdb = sys.modules.get("bdb")
    owner = getattr(hook, "__self__", None)
    if (bdb is not None and isinstance(owner, bdb.Bdb)) or top.startswith(_DEBUGGERS):
        return f"a debugger was active ({_qualified(module, name)})"
    return f"a trace function was active ({_qualified(module, name)})"


def _profile_reason(hook: Any) -> str | None:
    if hook is None:
        return None
    memray = sys.modules.get("memray")
    if memray is not None and hook is getattr(memray, "start_thread_trace", None):
        # memray.Tracker installs its C-level hook for the current thread (invisible to
        # sys.getprofile) and this one for threads started while it tracks
        return MEMRAY
    module, name = describe_hook(hook)
    top = _top(module)
    if top == "coverage":
        return COVERAGE
    if top in ("cProfile", "_lsprof"):
        return "a profiler was active (cProfile)"
    if top.startswith(_PROFILERS):
        return f"a profiler was active ({top})"
    return f"a profiler was active ({_qualified(module, name)})"


def _coverage_reason() -> str | None:
    """coverage.py started in this process — also when it measures without a trace function
    visible here (its ``sys.monitoring`` core, or this thread started before it)."""
    coverage = sys.modules.get("coverage")
    control = getattr(coverage, "Coverage", None)
    current = getattr(control, "current", None)
    if current is None:
        return None
    try:
        return COVERAGE if current() is not None else None
    except Exception:  # a half-imported or unusual coverage must not break a measurement
        return None


def _yappi_reason() -> str | None:
    yappi = sys.modules.get("yappi")
    is_running = getattr(yappi, "is_running", None)
    if is_running is None:
        return None
    try:
        return "a profiler was active (yappi)" if is_running() else None
    except Exception:
        return None


def _monitoring_reasons() -> list[str]:
    """Tools registered with ``sys.monitoring`` (Python 3.12+): coverage's sysmon core,
    debuggers (debugpy registers as ``pydevd``), profilers."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return []
    reasons: list[str] = []
    for tool_id in range(6):  # ids 0-5 are for tools; 6 and 7 carry sys.settrace/setprofile
        try:
            name = monitoring.get_tool(tool_id)
        except ValueError:
            continue
        if not name:
            continue
        kind = _MONITORING_KINDS.get(tool_id, "")
        lowered = str(name).lower()
        if kind == "coverage" or "coverage" in lowered:
            reasons.append(COVERAGE)
        elif kind == "debugger" or any(d in lowered for d in ("pydevd", "debug", "pdb")):
            reasons.append(f"a debugger was active ({name})")
        elif kind == "profiler" or "prof" in lowered:
            reasons.append(f"a profiler was active ({name})")
        else:
            reasons.append(f"a sys.monitoring tool was active ({name})")
    return reasons


def _qualified(module: str, name: str) -> str:
    return f"{module}.{name}" if module and module != "builtins" else name
