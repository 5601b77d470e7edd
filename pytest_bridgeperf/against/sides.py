"""The two sides of ``--perf-against``: one interpreter per checkout, each running that
checkout's pytest session, driven identically by the controller over an execnet channel.

Both sides — this checkout (A) and the other revision (B) — run in fresh interpreters started
the same way; the main pytest process only decides and reports. A side collects the files it
is given, then runs rounds of single test items on request: each round a whole setup, call and
teardown with fresh function-scoped fixtures, higher-scoped fixtures kept between rounds of the
same item (see ``pytest_bridgeperf/itemrun.py`` and ``worker.py``).

Environment of a side: the controller's, plus

- ``BRIDGEPERF_SIDE`` = the side's name (``A`` or ``B``), so that tests can keep per-side
  resources apart (a test database name, a port), as ``PYTEST_XDIST_WORKER`` does for xdist;
- ``PYTHONHASHSEED`` fixed and equal on both sides (the user's value when it is a number, else
  ``0``). Each interpreter otherwise draws its own string-hash seed, which decides the
  iteration order of sets and the collision pattern of dicts keyed by strings: the order in
  which code visits cache keys, query parameters or fixtures, and the cost of some lookups.
  A side keeps its interpreter for all its rounds, so a different seed per side would be a
  systematic difference between A and B that alternating rounds cannot average out — and one
  that has nothing to do with the change under test;
- ``PYTEST_ADDOPTS`` filtered as the command line is (``options.side_args``).

No pytest import here.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import execnet

from .errors import AgainstError

__all__ = [
    "PROTOCOL",
    "SIDE_ENV",
    "Collected",
    "CollectionError",
    "RoundResult",
    "Side",
    "hash_seed",
    "side_environ",
]

#: The message protocol spoken with a side's worker; ``worker.PROTOCOL`` is the same number
#: (the worker cannot import this module: it runs before pytest_bridgeperf may be imported).
#: 2: a round carries the profile and explanations of an explaining run (``RoundResult``).
PROTOCOL = 2
#: Tells code under test which side it runs on: ``A`` (this checkout) or ``B`` (the other).
SIDE_ENV = "BRIDGEPERF_SIDE"
OUTCOMES = ("passed", "failed", "skipped", "error", "missing")

#: Runs in the side's fresh interpreter: finds the pytest-bridgeperf of *that* interpreter's
#: environment and runs its worker, without importing the package yet (see worker.py).
_BOOTSTRAP = """
import os, sys
_cwd = os.getcwd()
# `python -c` puts the working directory first on sys.path: the side decides its import roots
sys.path[:] = [p for p in sys.path if p not in ("", ".", _cwd)]
try:
    import importlib.util
    _spec = importlib.util.find_spec("pytest_bridgeperf")
    if _spec is None or not _spec.submodule_search_locations:
        raise ImportError("pytest-bridgeperf is not installed")
    _package = list(_spec.submodule_search_locations)[0]
    _path = os.path.join(_package, "against", "worker.py")
    if not os.path.isfile(_path):
        raise ImportError(_package + " has no against/worker.py (a version without --perf-against)")
    _wspec = importlib.util.spec_from_file_location("pytest_bridgeperf.against.worker", _path)
    _worker = importlib.util.module_from_spec(_wspec)
    sys.modules[_wspec.name] = _worker
    _wspec.loader.exec_module(_worker)
except BaseException as _exc:
    channel.send(("hello", {
        "error": type(_exc).__name__ + ": " + str(_exc),
        "executable": sys.executable,
        "python": sys.version.split()[0],
    }))
else:
    _worker.serve(channel)
"""

# os.environ is what a new interpreter inherits: set per side only while it is spawned
_SPAWN_LOCK = threading.Lock()


@dataclass(frozen=True)
class CollectionError:
    """A collection error of a side (not an import failure: those stop :meth:`Side.start`)."""

    nodeid: str
    text: str


@dataclass(frozen=True)
class Collected:
    """What a side collected."""

    side: str
    #: node ids relative to the side's rootdir: the same string on both sides for one test
    nodeids: list[str]
    errors: list[CollectionError]
    #: requested files that do not exist in this side's tree (their tests are ``missing``)
    absent: list[str]
    #: top-level packages this side imports from the other checkout (only pytest-bridgeperf
    #: itself, when it is the project under test)
    shared: list[str]
    #: options of the side's ini ``addopts`` that were reset (``-n``, ``--junitxml``…)
    reset: list[str]
    pid: int
    executable: str
    python: str
    #: pytest-bridgeperf's version in the side's environment
    version: str | None
    hashseed: str | None
    #: seconds from :meth:`Side.start` to the collection's end
    startup: float


@dataclass(frozen=True)
class RoundResult:
    """One round of one test item on one side."""

    nodeid: str
    outcome: str  # passed | failed | skipped | error | missing
    #: ``Metric.to_json()`` of each metric the round recorded (``Metric.from_json`` reads them)
    metrics: list[dict[str, Any]]
    #: the failure text as pytest prints it (the skip reason for a skip); None when it passed
    longrepr: str | None
    #: seconds of the whole round (setup, call, teardown), measured in the side
    duration: float
    #: captured output: ``("Captured stdout call", text)``…
    sections: list[tuple[str, str]]
    #: seconds from sending the request to receiving the result, measured by the controller
    wall: float
    #: the error of tearing down the previous item's higher-scoped fixtures, if one raised
    finish_error: str | None = None
    #: a round of mode ``explain-profile``: its profile (``profiling.Profile.to_json``)
    profile: dict[str, Any] | None = None
    #: what an explaining round found, by heading (``explain-lines``: the lines= timings)
    explanations: dict[str, str] = field(default_factory=dict)


def hash_seed(environ: Mapping[str, str] = os.environ) -> str:
    """The ``PYTHONHASHSEED`` both sides use: the user's when it is a number, else ``0``."""
    value = environ.get("PYTHONHASHSEED", "").strip()
    return value if value.isdigit() else "0"


def side_environ(
    name: str, env: Mapping[str, str] | None = None, base: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment of side ``name``: ``base`` (the controller's), ``env`` on top, and the
    side's own ``BRIDGEPERF_SIDE`` and ``PYTHONHASHSEED``."""
    environ = dict(base)
    environ["PYTHONHASHSEED"] = hash_seed(base)
    environ.update(env or {})
    environ[SIDE_ENV] = name
    return environ


class Side:
    """One interpreter running one checkout's pytest session, driven over execnet.

    ``root`` is the side's rootdir (its counterpart of the controller's); ``args`` its pytest
    options (``SideArgs.render``); ``import_paths`` go first on its ``sys.path``
    (``refs.import_roots``); ``relocate`` pairs (other tree, this tree) whose code this side
    must never import (see ``worker.prepare_imports``); ``cwd`` is where in ``root`` it runs
    (the controller's invocation directory, mirrored). ``label`` names the side in messages.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        python: str = sys.executable,
        import_paths: list[Path],
        args: list[str],
        env: Mapping[str, str] | None = None,
        cwd: str = ".",
        relocate: Sequence[tuple[Path, Path]] = (),
        label: str | None = None,
        start_timeout: float | None = 600.0,
        round_timeout: float | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.python = python
        self.import_paths = [Path(p) for p in import_paths]
        self.args = list(args)
        self.env = dict(env or {})
        self.cwd = cwd
        self.relocate = [(Path(a), Path(b)) for a, b in relocate]
        self.label = label
        self.start_timeout = start_timeout
        self.round_timeout = round_timeout
        self.close_timeout = close_timeout
        self.collected: Collected | None = None
        self.pid: int | None = None
        self.finish_errors: list[str] = []
        self._group: execnet.Group | None = None
        self._channel: Any = None
        self._pending = False
        self._usable = False
        self._closed = False

    def __repr__(self) -> str:
        state = "usable" if self._usable else "closed" if self._closed else "not started"
        return f"<Side {self.name} {self.root} pid={self.pid} {state}>"

    @property
    def title(self) -> str:
        return f"side {self.name}" + (f" ({self.label})" if self.label else "")

    # starting -------------------------------------------------------------------------------
    def start(self, files: list[str]) -> Collected:
        """Start the interpreter and a pytest session collecting ``files`` (paths relative to
        ``root``, or node ids). Raises :class:`AgainstError` when the side cannot import its
        code or cannot run at all."""
        if self._group is not None:
            raise AgainstError(f"{self.title} was already started")
        began = time.monotonic()
        try:
            return self._start(files, began)
        except BaseException:
            self._terminate()
            raise

    def _start(self, files: list[str], began: float) -> Collected:
        workdir = self.root if self.cwd in ("", ".") else self.root / self.cwd
        if not workdir.is_dir():
            raise AgainstError(f"{self.title}: {workdir} is not a directory")
        spec = (
            f"execmodel=main_thread_only//popen//python={shlex.quote(self.python)}//chdir={workdir}"
        )
        self._group = execnet.Group()
        environ = side_environ(self.name, self.env)
        try:
            with _spawn_environment(environ):
                gateway = self._group.makegateway(spec)
        except Exception as exc:
            raise AgainstError(
                f"{self.title}: cannot start the interpreter {self.python}: {exc}"
            ) from None
        self._channel = gateway.remote_exec(_BOOTSTRAP)
        _, hello = self._receive(self.start_timeout, "starting")
        self._check_hello(hello)
        self.pid = int(hello["pid"])
        self._channel.send(
            (
                "start",
                {
                    "root": str(self.root),
                    "args": list(self.args),
                    "files": list(files),
                    "import_paths": [str(p) for p in self.import_paths],
                    "relocate": [(str(a), str(b)) for a, b in self.relocate],
                },
            )
        )
        name, data = self._receive(self.start_timeout, "collecting")
        if name == "startfailed":
            raise self._start_failure(data)
        if name != "collected":
            raise AgainstError(f"{self.title}: unexpected message {name!r} while collecting")
        if data["import_failures"]:
            raise self._import_failure(data["import_failures"])
        self._usable = True
        self.collected = Collected(
            side=self.name,
            nodeids=list(data["nodeids"]),
            errors=[CollectionError(e["nodeid"], e["text"]) for e in data["errors"]],
            absent=list(data["absent"]),
            shared=list(data["shared"]),
            reset=list(data["reset"]),
            pid=self.pid,
            executable=str(hello["executable"]),
            python=str(hello["python"]),
            version=hello.get("version"),
            hashseed=hello.get("hashseed"),
            startup=time.monotonic() - began,
        )
        return self.collected

    def _check_hello(self, hello: Mapping[str, Any]) -> None:
        if "error" in hello:
            raise AgainstError(
                f"{self.title}: the interpreter {hello.get('executable', self.python)} cannot "
                f"run a side: {hello['error']}. Install pytest-bridgeperf there (the same "
                "version as this run's), or point --perf-against-python at an environment "
                "that has it."
            )
        if hello.get("protocol") != PROTOCOL:
            raise AgainstError(
                f"{self.title}: the interpreter {hello.get('executable')} has pytest-bridgeperf "
                f"{hello.get('version')} (side protocol {hello.get('protocol')}); this run "
                f"needs side protocol {PROTOCOL}: install the same pytest-bridgeperf version "
                "in both environments."
            )

    def _start_failure(self, data: Mapping[str, Any]) -> AgainstError:
        error = data.get("error") or {}
        stderr = data.get("stderr") or ""
        details = "\n".join(x for x in (error.get("text", ""), stderr) if x) or None
        if error.get("file"):
            return AgainstError(
                f"{self.title} cannot import its code: {error['file']} failed to import "
                f"{error['module']!r} ({_first_line(error['error'])}). Run with -v for the "
                "full error.",
                details=details,
            )
        reason = _usage_line(error.get("error", "")) or _last_error_line(stderr)
        return AgainstError(
            f"{self.title}: its pytest session did not start (exit status "
            f"{data.get('exitstatus')}): {reason or 'no error message'}. Run with -v for "
            "the full output.",
            details=details,
        )

    def _import_failure(self, failures: Sequence[Mapping[str, str]]) -> AgainstError:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return AgainstError(
            f"{self.title} cannot import its code: {first['file']} failed to import "
            f"{first['module']!r} ({_first_line(first['error'])}){more}. Run with -v for "
            "the full error.",
            details="\n\n".join(f["text"] for f in failures),
        )

    # rounds ---------------------------------------------------------------------------------
    def run_round(
        self,
        nodeid: str,
        *,
        mode: str = "measure",
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RoundResult:
        """Run ``nodeid`` once as a whole (setup, call, teardown) and return the round.

        ``mode`` and ``options`` reach the side's plugins as ``SidePlugin.request``. A round
        longer than ``timeout`` (default: the side's ``round_timeout``) stops the interpreter:
        :class:`AgainstError`, and the side cannot be used any more.
        """
        self._require_usable()
        limit = self.round_timeout if timeout is None else timeout
        sent = time.perf_counter()
        name, data = self._request(
            ("run", {"nodeid": nodeid, "mode": mode, "options": dict(options or {})}),
            limit,
            f"a round of {nodeid}",
        )
        wall = time.perf_counter() - sent
        if name == "interrupted":
            self._usable = False
            raise AgainstError(
                f"{self.title} stopped during a round of {nodeid}: {data.get('error')}"
            )
        if name != "round":
            raise AgainstError(f"{self.title}: unexpected message {name!r} during a round")
        if data.get("finish_error"):
            self.finish_errors.append(data["finish_error"])
        return RoundResult(
            nodeid=data["nodeid"],
            outcome=data["outcome"],
            metrics=list(data["metrics"]),
            longrepr=data["longrepr"],
            duration=float(data["duration"]),
            sections=[(str(t), str(x)) for t, x in data["sections"]],
            wall=wall,
            finish_error=data.get("finish_error"),
            profile=data.get("profile"),
            explanations={str(k): str(v) for k, v in (data.get("explanations") or {}).items()},
        )

    def finish_item(self) -> str | None:
        """Tear down the higher-scoped fixtures the last item kept up (a later round of another
        item does this by itself); the error text when a finalizer raised."""
        self._require_usable()
        name, data = self._request(("finish", {}), self.round_timeout, "finishing")
        error = data.get("error") if name == "finished" else None
        if error:
            self.finish_errors.append(error)
        return error

    def _request(
        self, message: tuple[str, dict[str, Any]], timeout: float | None, what: str
    ) -> tuple[str, dict[str, Any]]:
        # stays set when the wait is interrupted (Ctrl-C): close() then knows a round runs
        self._pending = True
        self._channel.send(message)
        reply = self._receive(timeout, what)
        self._pending = False
        return reply

    # closing --------------------------------------------------------------------------------
    def close(self) -> None:
        """End the session (session-scoped finalizers run) and the interpreter. Bounded: after
        ``close_timeout`` seconds the interpreter is killed. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._usable and self._channel is not None and not self._channel.isclosed():
                deadline = time.monotonic() + self.close_timeout
                # interrupted while a round ran (Ctrl-C in the controller): a Ctrl-C at the
                # terminal reaches the side too; otherwise interrupt its round ourselves
                if self._pending and not self._wait_for_message(0.5):
                    self._signal(signal.SIGINT)
                with contextlib.suppress(Exception):
                    self._channel.send(("shutdown", {}))
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        name, data = self._channel.receive(left)
                    except Exception:  # timeout, or the channel closed: either way, done
                        break
                    if name == "bye":
                        if data.get("finish_error"):
                            self.finish_errors.append(data["finish_error"])
                        break
        finally:
            self._usable = False
            self._terminate()

    def _wait_for_message(self, seconds: float) -> bool:
        with contextlib.suppress(Exception):
            self._channel.receive(seconds)
            return True
        return False

    def __enter__(self) -> Side:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # internals ------------------------------------------------------------------------------
    def _require_usable(self) -> None:
        if not self._usable:
            state = "was closed" if self._closed else "is not started"
            raise AgainstError(f"{self.title} {state}: it cannot run rounds")

    def _receive(self, timeout: float | None, what: str) -> tuple[str, dict[str, Any]]:
        try:
            name, data = self._channel.receive(timeout)
        except self._channel.TimeoutError:
            self._usable = False
            self._terminate(kill=True)
            raise AgainstError(
                f"{self.title}: {what} did not end within {timeout:g} s; its interpreter was "
                "stopped and the side cannot be used any more"
            ) from None
        except EOFError:
            self._usable = False
            self._terminate()
            raise AgainstError(f"{self.title}: its interpreter ended during {what}") from None
        except execnet.RemoteError as exc:
            self._usable = False
            self._terminate()
            text = exc.formatted if isinstance(exc.formatted, str) else str(exc)
            raise AgainstError(
                f"{self.title}: its interpreter failed during {what}: {_last_error_line(text)}",
                details=text,
            ) from None
        return str(name), dict(data)

    def _signal(self, signum: int) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signum)

    def _terminate(self, *, kill: bool = False) -> None:
        """Stop the interpreter: politely (execnet's exit), then killed after a second."""
        group, self._group = self._group, None
        if group is None:
            return
        if kill:
            self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        with contextlib.suppress(Exception):
            group.terminate(timeout=1.0)
        self._closed = True


@contextlib.contextmanager
def _spawn_environment(environ: Mapping[str, str]) -> Iterator[None]:
    """``environ`` as the process environment while a side's interpreter is spawned
    (``PYTHONHASHSEED`` must be there when it starts; execnet's ``env:`` spec entries are set
    only once it runs)."""
    with _SPAWN_LOCK:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _usage_line(text: str) -> str:
    """The line of a pytest usage error that says what is wrong (argparse's ``…: error: …``
    comes after the usage line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    return lines[0] if lines else ""


def _last_error_line(text: str) -> str:
    """The line of a traceback or a pytest error output that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("ERROR:", "E ")):
            return line.removeprefix("E ").strip()
    return lines[-1] if lines else ""
