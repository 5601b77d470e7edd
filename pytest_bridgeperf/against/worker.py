"""The pytest plugin inside a ``--perf-against`` side's interpreter: it runs that side's pytest
session and serves rounds of test items to the controller over an execnet channel.

The controller (``sides.py``) starts the interpreter; a bootstrap loads *this file* from the
pytest-bridgeperf installed in that interpreter's environment and calls :func:`serve`. The file
is loaded on its own, without importing the ``pytest_bridgeperf`` package first: pytest marks
the installed plugin's package for assertion rewriting while it starts, and warns (an error
under ``-W error``) about a package imported before that. So nothing here imports
``pytest_bridgeperf`` at module level; the functions import what they need once pytest runs.

Messages (tuples ``(name, dict)`` of plain data):

- side → controller: ``hello`` (protocol, versions, pid), ``collected`` or ``startfailed``,
  ``round`` (one per ``run``), ``finished``, ``interrupted``, ``bye``;
- controller → side: ``start`` (args, files, import paths), ``run`` (nodeid, mode, options),
  ``finish``, ``shutdown``.

A round run in mode ``explain-profile`` (where the time went, ``profiling.py``) brings back its
profile (``Profile.to_json``; its files written at ``options["profile_to"]`` when given), one in
mode ``explain-lines`` its line-by-line text in ``explanations``.

The environment variable ``BRIDGEPERF_SIDE`` (``A`` or ``B``) tells code under test which side
it runs on, as ``PYTEST_XDIST_WORKER`` does for xdist workers — e.g. to give each side its own
test database name.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import io
import json
import os
import site
import sys
import time
import traceback
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

__all__ = ["PROTOCOL", "RoundRequest", "SidePlugin", "serve"]

#: Version of the messages above. The controller refuses a side whose number differs (an
#: interpreter of ``--perf-against-python`` with another pytest-bridgeperf).
#: 2: a ``round`` carries the ``profile`` and ``explanations`` of an explaining run.
PROTOCOL = 2

#: Names of the packages a side never takes from the other checkout: the measuring plugin
#: itself runs from the interpreter's environment, whatever the project under test is.
_PINNED = ("pytest_bridgeperf",)


@dataclass(frozen=True)
class RoundRequest:
    """What the controller asked of the round that runs now (``SidePlugin.request``)."""

    mode: str
    options: dict[str, Any] = field(default_factory=dict)


class SidePlugin:
    """Serves the controller's commands in place of pytest's run loop.

    Registered by ``pytest.main(args, plugins=[side])`` under the name ``bridgeperf-side``
    (pluggy names a plugin object by its ``__name__``); the main plugin checks
    ``config.pluginmanager.get_plugin("bridgeperf-side")`` to run in side mode.
    """

    __name__ = "bridgeperf-side"

    def __init__(
        self,
        channel: Any,
        *,
        root: Path,
        files: Sequence[str],
        absent: Sequence[str],
        shared: Sequence[str],
        stderr: _Stream,
    ) -> None:
        self.channel = channel
        self.root = root
        self.collect_nothing = not files
        self.absent = list(absent)
        self.shared = list(shared)
        self.stderr = stderr
        self.started = False
        self.reset: list[str] = []
        self.startup_error: BaseException | None = None
        self.import_failures: list[dict[str, str]] = []
        self.collect_errors: list[dict[str, str]] = []
        self.current: pytest.Item | None = None
        #: the round running now (None between rounds), with the controller's options
        self.request: RoundRequest | None = None
        self.rounds: dict[str, int] = {}
        self.finish_error: str | None = None

    # start-up -------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(
        self, pluginmanager: Any, args: list[str]
    ) -> Generator[None, pytest.Config, pytest.Config]:
        try:
            config = yield
        except BaseException as exc:
            self.startup_error = exc
            raise
        from pytest_bridgeperf.against.options import neutralize

        # options of the side's own ini `addopts` that must not run in a side (-n, --junitxml…)
        self.reset = neutralize(config)
        return config

    @pytest.hookimpl(wrapper=True)
    def pytest_load_initial_conftests(self) -> Generator[None, None, None]:
        try:
            return (yield)
        except BaseException as exc:
            # a conftest next to the rootdir failed to import: pytest.main prints it and returns
            self.startup_error = exc
            raise

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.stderr.release()
        if session.config.option.capture == "no":
            # -s: output the tests print reaches the user, on the controller's stderr (a side's
            # stdout is execnet's channel)
            with contextlib.suppress(OSError):
                os.dup2(2, 1)
            sys.stdout = sys.__stdout__

    @pytest.hookimpl(tryfirst=True)  # before pytest's own collection, which this replaces
    def pytest_collection(self, session: pytest.Session) -> bool | None:
        if not self.collect_nothing:
            return None
        session.items = []
        session.testscollected = 0
        return True

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append({"nodeid": report.nodeid, "text": report.longreprtext})

    def pytest_exception_interact(self, node: Any, call: pytest.CallInfo[Any], report: Any) -> None:
        if getattr(report, "when", None) != "collect" or call.excinfo is None:
            return
        failure = _import_failure(node, call.excinfo.value, self.root)
        if failure is not None:
            failure["text"] = report.longreprtext
            self.import_failures.append(failure)

    # the loop ---------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # replaces pytest's loop, which would run each item once
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self.started = True
        items = {item.nodeid: item for item in session.items}
        self.channel.send(
            (
                "collected",
                {
                    "nodeids": list(items),
                    "errors": self.collect_errors,
                    "import_failures": self.import_failures,
                    "reset": self.reset,
                    "absent": self.absent,
                    "shared": self.shared,
                },
            )
        )
        try:
            self._serve(items)
        except BaseException as exc:
            # Ctrl-C, pytest.exit() or a crash inside a round: say so, then let pytest finish
            # the session (its teardown runs every finalizer still pending)
            with contextlib.suppress(Exception):
                self.channel.send(
                    ("interrupted", {"error": f"{type(exc).__name__}: {exc}".strip(": ")})
                )
            raise
        return True

    def _serve(self, items: dict[str, pytest.Item]) -> None:
        while True:
            try:
                name, kwargs = self.channel.receive()
            except EOFError:  # the controller went away: tear down and end
                self._finish(None)
                return
            if name == "run":
                self.channel.send(("round", self._round(items, **kwargs)))
            elif name == "finish":
                self.channel.send(("finished", {"error": self._finish(None)}))
            elif name == "shutdown":
                self.finish_error = self._finish(None)
                return
            else:
                raise RuntimeError(f"unknown command from the controller: {name!r}")

    def _round(
        self,
        items: dict[str, pytest.Item],
        nodeid: str,
        mode: str = "measure",
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from pytest_bridgeperf import itemrun
        from pytest_bridgeperf.state import RoundContext, round_key

        item = items.get(nodeid)
        if item is None:
            return _round_result(nodeid, "missing", [], None, 0.0, [], None, None, {})
        finish_error = None
        if self.current is not None and self.current is not item:
            finish_error = self._finish(item)
        self.request = RoundRequest(mode, dict(options or {}))
        number = self.rounds[nodeid] = self.rounds.get(nodeid, 0) + 1
        # what the run is for, as the plugin's body probes read it (measure, heap, warmup…)
        context = RoundContext(mode=mode, number=number)
        context.profile_to = (options or {}).get("profile_to")  # explain-profile: its files
        item.stash[round_key] = context
        _clear_sections(item)
        start = time.perf_counter()
        try:
            reports = itemrun.setup_and_call(item)
            reports.append(itemrun.teardown(item, None, keep=True))
        finally:
            self.current = item
            self.request = None
        duration = time.perf_counter() - start
        outcome, longrepr = _outcome(reports)
        return _round_result(
            nodeid,
            outcome,
            _metrics_of(item),
            longrepr,
            duration,
            [(title, text) for title, text in reports[-1].sections],
            finish_error,
            _profile_of(context),
            dict(context.explanations),
        )

    def _finish(self, nextitem: pytest.Item | None) -> str | None:
        """Tear down the current item's higher-scoped fixtures that ``nextitem`` does not share
        (all of them for None); the error text when a finalizer raised."""
        from pytest_bridgeperf import itemrun

        if self.current is None:
            return None
        item, self.current = self.current, None
        report = itemrun.finish(item, nextitem)
        return None if report is None else report.longreprtext


def _round_result(
    nodeid: str,
    outcome: str,
    metrics: list[dict[str, Any]],
    longrepr: str | None,
    duration: float,
    sections: list[tuple[str, str]],
    finish_error: str | None,
    profile: dict[str, Any] | None,
    explanations: dict[str, str],
) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "outcome": outcome,
        "metrics": metrics,
        "longrepr": longrepr,
        "duration": duration,
        "sections": sections,
        "finish_error": finish_error,
        "profile": profile,
        "explanations": explanations,
    }


def _profile_of(context: Any) -> dict[str, Any] | None:
    """An explaining run's profile, as plain data: enough functions that one which grew from
    nothing on the other side is found on this one too."""
    if context.profile is None:
        return None
    from pytest_bridgeperf.profiling import SENT_TOP

    data: dict[str, Any] = json.loads(json.dumps(context.profile.to_json(SENT_TOP)))
    return data


def _metrics_of(item: pytest.Item) -> list[dict[str, Any]]:
    from pytest_bridgeperf.plugin import recorder_for

    out = []
    for metric in recorder_for(item).metrics.values():
        # through JSON text: `details` may hold values execnet cannot send (sets, objects)
        out.append(json.loads(json.dumps(metric.to_json(), default=repr)))
    return out


def _outcome(reports: Sequence[pytest.TestReport]) -> tuple[str, str | None]:
    """The round's outcome as pytest's summary would count it, and its text."""
    setup, teardown = reports[0], reports[-1]
    call = reports[1] if len(reports) == 3 else None
    if setup.failed:
        return "error", setup.longreprtext
    if setup.skipped:
        return "skipped", _skip_reason(setup)
    if call is not None and call.failed:
        return "failed", call.longreprtext
    if call is not None and call.skipped:
        return "skipped", _skip_reason(call)
    if teardown.failed:
        return "error", teardown.longreprtext
    return "passed", None


def _skip_reason(report: pytest.TestReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return f"xfail: {wasxfail}" if wasxfail else "xfail"
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    return report.longreprtext


def _clear_sections(item: pytest.Item) -> None:
    """pytest keeps an item's captured output (``Captured stdout call``…) in
    ``item._report_sections`` and puts all of it into every later report: rerun as is, each
    round would carry the output of every earlier round."""
    sections = getattr(item, "_report_sections", None)
    if isinstance(sections, list):
        sections.clear()


def _import_failure(node: Any, exc: BaseException, root: Path) -> dict[str, str] | None:
    """A test module or conftest that failed to import, described; None for other collection
    errors (a bad parametrization, a usage error)."""
    cause: BaseException | None
    if type(exc).__name__ == "ConftestImportFailure" and hasattr(exc, "cause"):
        path = Path(getattr(exc, "path", node.path))
        cause = exc.cause
    elif isinstance(node, (pytest.Module, pytest.Package)):
        path = Path(node.path)
        if isinstance(exc, pytest.Collector.CollectError):
            cause = exc.__cause__ or exc.__context__
            if cause is None:
                return None
        elif isinstance(exc, Exception) and not isinstance(exc, pytest.fail.Exception):
            cause = exc  # module-level code raised while the module was imported
        else:
            return None
    else:
        return None
    if isinstance(cause, ImportError) and cause.name:
        module = cause.name
    elif isinstance(cause, SyntaxError) and cause.filename:
        module = _relative(Path(cause.filename), root)
    else:
        module = _relative(path, root)
    return {
        "file": _relative(path, root),
        "module": module,
        "error": "".join(traceback.format_exception_only(type(cause), cause)).strip()
        if cause is not None
        else str(exc),
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# serving


def serve(channel: Any) -> None:
    """Run one side: say hello, wait for ``start``, run the pytest session, say goodbye."""
    channel.send(("hello", hello()))
    try:
        name, config = channel.receive()
    except EOFError:
        return
    if name != "start":
        return
    root = Path(config["root"])
    shared = prepare_imports(
        [Path(p) for p in config["import_paths"]],
        [(Path(a), Path(b)) for a, b in config["relocate"]],
    )
    present: list[str] = []
    absent: list[str] = []
    for entry in config["files"]:
        (present if (root / entry.split("::", 1)[0]).exists() else absent).append(entry)
    stderr = _Stream(sys.stderr)
    side = SidePlugin(
        channel, root=root, files=present, absent=absent, shared=shared, stderr=stderr
    )
    args = [*config["args"], "--", *(str(root / f) for f in present)]
    saved = sys.stdout, sys.stderr
    # pytest's terminal reporter writes to sys.stdout as it is when pytest configures: a side's
    # report goes nowhere (the controller reports); stderr is held until the session started,
    # so a failed start reaches the controller as one message instead of the user's terminal
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (closed below)
    sys.stderr = stderr
    exitstatus: int | str
    try:
        exitstatus = int(pytest.main(args, plugins=[side]))
    except BaseException as exc:  # SystemExit, KeyboardInterrupt while starting
        exitstatus = f"{type(exc).__name__}: {exc}"
        side.startup_error = side.startup_error or exc
    finally:
        devnull = sys.stdout
        sys.stdout, sys.stderr = saved
        with contextlib.suppress(Exception):
            if devnull is not saved[0] and not devnull.closed:
                devnull.close()
    if not side.started:
        startup = side.startup_error
        channel.send(
            (
                "startfailed",
                {
                    "exitstatus": exitstatus,
                    "stderr": stderr.held(),
                    "error": None if startup is None else _describe(startup, root),
                    "import_failures": side.import_failures,
                },
            )
        )
        return
    channel.send(("bye", {"exitstatus": exitstatus, "finish_error": side.finish_error}))


def hello() -> dict[str, Any]:
    version = None
    with contextlib.suppress(Exception):
        import importlib.metadata

        version = importlib.metadata.version("pytest-bridgeperf")
    return {
        "protocol": PROTOCOL,
        "version": version,
        "pid": os.getpid(),
        "executable": sys.executable,
        "python": sys.version.split()[0],
        "prefix": sys.prefix,
        "hashseed": os.environ.get("PYTHONHASHSEED"),
        "side": os.environ.get("BRIDGEPERF_SIDE"),
        "pytest": pytest.__version__,
    }


def _describe(exc: BaseException, root: Path) -> dict[str, str]:
    cause = getattr(exc, "cause", None) if type(exc).__name__ == "ConftestImportFailure" else None
    if cause is not None:
        path = Path(getattr(exc, "path", ""))
        module = (
            cause.name if isinstance(cause, ImportError) and cause.name else _relative(path, root)
        )
        return {
            "file": _relative(path, root),
            "module": module,
            "error": "".join(traceback.format_exception_only(type(cause), cause)).strip(),
            "text": "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)),
        }
    return {
        "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        "text": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class _Stream:
    """sys.stderr while the side starts: held in memory until the session has started, then
    passed through. pytest's capture saves and restores this object, so it must stay the
    same object throughout."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._held: io.StringIO | None = io.StringIO()

    def write(self, text: str) -> int:
        if self._held is not None:
            return self._held.write(text)
        return self._target.write(text)

    def flush(self) -> None:
        if self._held is None:
            self._target.flush()

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return False if self._held is not None else self._target.isatty()

    def release(self) -> None:
        self._held = None

    def held(self) -> str:
        return "" if self._held is None else self._held.getvalue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


# ---------------------------------------------------------------------------------------------
# imports: this side's code, never the other checkout's


def prepare_imports(
    import_paths: Sequence[Path], relocate: Sequence[tuple[Path, Path]]
) -> list[str]:
    """Make imports resolve to this side's checkout.

    ``import_paths`` go first on ``sys.path`` (before site-packages, so an installed copy of the
    project does not win). ``relocate`` pairs (other tree, this tree): ``sys.path`` entries
    inside the other tree (a ``.pth`` line of an editable install) move to the same place in
    this tree, or go when this tree has no such directory; and a meta-path finder placed first
    keeps every other finder — setuptools' PEP 660 editable finders above all — from handing
    out a module of the other tree (it takes this tree's copy at the same place, or reports
    the module missing, as it is on this side).

    Returns the top-level modules already imported from the other tree, which stay shared (the
    plugin itself when the project under test is pytest-bridgeperf).
    """
    moves = [(a.resolve(), b.resolve()) for a, b in relocate]
    environment = _environment_dirs()
    # this file is pytest_bridgeperf/against/worker.py of the interpreter's environment
    pinned = {_PINNED[0]: str(Path(__file__).resolve().parent.parent.parent)}
    finder = _SideFinder(moves, environment, pinned)
    entries = [str(p) for p in import_paths]
    for entry in sys.path:
        moved = finder.move(entry)
        if moved is None:
            entries.append(entry)
        elif os.path.isdir(moved):
            entries.append(moved)
    sys.path[:] = _unique(entries)
    # subprocesses of the tests (load workers, servers) import the same code
    pythonpath = [str(p) for p in import_paths]
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        moved = finder.move(entry) if entry else None
        if entry and (moved is None or os.path.isdir(moved)):
            pythonpath.append(entry if moved is None else moved)
    os.environ["PYTHONPATH"] = os.pathsep.join(_unique(pythonpath))
    shared = set()
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if "." not in name and where and finder.move(where) is not None:
            shared.add(name)
    finder.exempt.update(shared)
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    shared.update(n for n, d in pinned.items() if finder.move(d) is not None)
    return sorted(shared)


class _SideFinder:
    """A meta-path finder, first in ``sys.meta_path``: asks the finders after it, and refuses a
    module they find in the other checkout's tree."""

    def __init__(
        self,
        moves: list[tuple[Path, Path]],
        environment: list[Path],
        pinned: dict[str, str],
    ) -> None:
        self.moves = moves
        self.environment = environment
        self.pinned = pinned
        self.exempt: set[str] = set(pinned)

    def move(self, path: str) -> str | None:
        """Where ``path`` of the other tree is in this one; None when it is not in the other
        tree (or belongs to the interpreter's environment, e.g. a virtualenv inside the
        project)."""
        try:
            target = Path(os.path.abspath(path))
        except (OSError, ValueError):
            return None
        if any(_within(target, d) for d in self.environment):
            return None
        for other, own in self.moves:
            if _within(target, other) and not _within(target, own):
                return str(own / target.relative_to(other))
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        top = fullname.partition(".")[0]
        if fullname in self.pinned:
            return importlib.machinery.PathFinder.find_spec(fullname, [self.pinned[fullname]])
        if top in self.exempt:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None:
            return None
        origin = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or ())
        where = origin or next((loc for loc in locations if os.path.isabs(loc)), None)
        if where is None or self.move(where) is None:
            return spec
        if "." not in fullname:
            # a top-level name the other tree provides (an editable install's mapping): this
            # tree's copy at the same place, if it has one
            here = Path(self.move(where) or "")
            directory = here.parent.parent if here.name == "__init__.py" else here.parent
            own = importlib.machinery.PathFinder.find_spec(fullname, [str(directory)])
            if own is not None:
                return own
        raise ModuleNotFoundError(
            f"No module named {fullname!r} on this side (only the other checkout has it: {where})",
            name=fullname,
        )

    def invalidate_caches(self) -> None:
        pass


def _environment_dirs() -> list[Path]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    with contextlib.suppress(Exception):
        dirs.update(site.getsitepackages())
    with contextlib.suppress(Exception):
        dirs.add(site.getusersitepackages())
    return [Path(os.path.abspath(d)) for d in dirs if d]


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
