"""``perf_load(target, hosts=[...])``: one load run split over generator processes that execnet
starts — on this machine (``popen``) or others (``ssh=user@host``, ``socket=host:port``) — all
starting at one agreed instant, their results merged losslessly into one :class:`LoadResult`
that keeps each generator's share.

The controller (this module, in the test's process):

1. starts every gateway at once and checks each generator: the same pytest-bridgeperf version
   and message protocol (a mismatch fails with the host named and what to install), and
   whether it shares this machine's loopback — it reads back a random token from a socket this
   process listens on at 127.0.0.1 (``remote_worker.probe_loopback``). Only generators that do
   may load a loopback target (or an in-process app); the others need a target they can reach,
   listed in ``perf_allowed_hosts`` like any other non-loopback target;
2. sends each its share of the options (users, rate and requests divided as ``workers=``
   does); each generator validates them again under the same caps and connects its users;
3. once every generator is ready, estimates each one's clock offset (the best of a few
   ping/pong round trips, Cristian's method: the offset is known within half that round trip)
   and sends the start instant on each generator's own monotonic clock;
4. collects the results: a generator that dies, goes silent or fails ends the run for all —
   the others are stopped and their partial result is attached to the :class:`LoadHostError`
   that names the host. Ctrl-C and the test's timeout stop every generator the same way.

Every wait has a bound (connecting, getting ready, the run, stopping), and every generator also
stops by itself when its channel to the controller closes. No pytest here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from .engine import LoadRateError, ProgressCallback, check_rate
from .generators import merge_shares, options_to_raw, split_options, start_lead_ns
from .interrupts import TIMEOUT_SIGNAL, Stops, sigint_stops
from .options import LoadOptionError, LoadOptions
from .remote_worker import PROTOCOL
from .result import HostShare, LoadResult
from .runner import LoadConnectionError
from .safety import LoadTargetError, Target, is_loopback

__all__ = ["CONNECT_TIMEOUT_S", "LoadHostError", "run_hosts"]

#: Starting a generator, at most: the gateway (ssh's connection and authentication included),
#: the interpreter, importing pytest-bridgeperf there, the version check and the loopback
#: probe. Measured on a 2-core machine at a load average of 18: 0.85-1.0 s for a generator
#: over ssh to that machine, 0.4-0.5 s for a popen one.
CONNECT_TIMEOUT_S = 30.0
#: ssh's own ConnectTimeout (TCP connect and the protocol handshake), at most.
SSH_CONNECT_TIMEOUT_S = 10
#: ssh's keepalive: a host that vanishes mid-run ends its ssh within about 3 x 2 s.
_SSH_KEEPALIVE = (("ServerAliveInterval", "2"), ("ServerAliveCountMax", "3"))
#: Beyond the request timeout (each generator connects its users within it), for the slowest
#: generator to report ready.
READY_GRACE_S = 10.0
#: Beyond the run's end (warmup + duration + the request timeout of its last answers), for the
#: results to arrive.
RESULT_GRACE_S = 10.0
#: A running generator not heard from for this long is lost (it says it is alive every second;
#: ten missed beats are not a busy machine).
SILENCE_S = 10.0
#: After a stop, how long the generators have to send their partial results.
STOP_WAIT_S = 5.0
#: Round trips per generator for the clock offset; the shortest gives the tightest bound.
PING_ROUNDS = 5
#: The generators end this long before the test's timeout, to send their results.
_GENERATOR_EXIT_S = 1.0

#: Runs in the generator's fresh interpreter: imports pytest-bridgeperf from *that*
#: environment (never from the working directory) and serves, or says why it cannot.
_BOOTSTRAP = """
import os, signal, sys
try:
    # the controller stops its generators with a message: a Ctrl-C at the controller's
    # terminal reaches this process too (popen), and must not kill it before it reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except ValueError:
    pass
_cwd = os.getcwd()
sys.path[:] = [p for p in sys.path if p not in ("", ".", _cwd)]
try:
    from pytest_bridgeperf.load import remote_worker as _worker
except BaseException as _exc:
    import platform, socket
    channel.send(("hello", {
        "error": type(_exc).__name__ + ": " + str(_exc),
        "executable": sys.executable,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }))
else:
    _worker.serve(channel)
"""

_CLOSED = object()
_CONTROL = -1


class LoadHostError(ConnectionError):
    """A generator of ``hosts=`` could not be started or checked, or died, went silent or
    failed during the run. The message names it; ``.host`` is its spec and ``.result`` the
    merged partial result of the other generators (None when nothing was measured)."""

    def __init__(
        self, message: str, *, host: str | None = None, result: LoadResult | None = None
    ) -> None:
        super().__init__(message)
        self.host = host
        self.result = result


# ---------------------------------------------------------------------------------------------
# execnet's gateways, started so that a hung start can be killed


def _start_io(spec: Any) -> Any:
    """Spawn the process of a ``popen``/``ssh``/``vagrant_ssh`` gateway (execnet's own IO, with
    its ``popen``, ``wait``, ``kill``, ``close_write``).

    execnet's ``Group.makegateway`` spawns and then waits for the interpreter with no timeout,
    keeping the process to itself: a host that accepts the connection and never answers would
    hang the run. So the spawn and the bootstrap are done here in two steps (the same calls
    ``makegateway`` makes), and the process can be killed when the bootstrap overruns. Spawned
    with Ctrl-C ignored (the disposition survives exec, and ssh keeps an ignored SIGINT): a
    Ctrl-C at the terminal goes to the controller, which stops the generators with a message
    and still gets their partial results, rather than killing their ssh connections.
    ``tests/test_load_hosts.py`` runs this against real popen and ssh gateways.
    """
    from execnet import gateway_io
    from execnet.gateway_base import get_execmodel

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return gateway_io.create_io(spec, execmodel=get_execmodel("thread"))
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _bootstrap(io: Any, spec: Any) -> Any:
    """The second step of :func:`_start_io`: execnet's bootstrap over the spawned process."""
    from execnet import gateway_bootstrap

    return gateway_bootstrap.bootstrap(io, spec)


class _Probe:
    """Listens on 127.0.0.1 and hands a random token to whoever connects: a generator that
    reads it back shares this process's loopback."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="perf_load-probe", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.token.encode("ascii"))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
        self._sock.close()


class _Link:
    """One generator: its gateway, its channel, what it said about itself."""

    def __init__(self, index: int, text: str, *, connect_timeout: float) -> None:
        from execnet import XSpec

        self.index = index
        self.text = text  # the spec as the user wrote it
        self.spec = XSpec(text)
        self.id = str(self.spec.id) if self.spec.id else f"gw{index}"
        self.spec.id = self.id
        self.spec.execmodel = "main_thread_only"
        self.kind = next(
            k for k in ("popen", "ssh", "socket", "vagrant_ssh") if getattr(self.spec, k)
        )
        self.stage = "starting"
        self.io: Any = None
        self.group: Any = None
        self.gateway: Any = None
        self.channel: Any = None
        self.error: BaseException | None = None
        self.hello: dict[str, Any] = {}
        self.local = False
        self.offset_ns = 0
        self.best_rtt_ns = math.inf
        self.last_heard = 0.0
        self.ssh_log: str | None = None
        #: what the loopback probe read on the generator (the token when it shares ours)
        self.probe: str | None = None
        if self.kind == "ssh":
            self._prepare_ssh(connect_timeout)

    @property
    def title(self) -> str:
        return f"generator {self.id} ({self.text})"

    @property
    def hostname(self) -> str:
        return str(self.hello.get("hostname") or self.text)

    @property
    def where(self) -> str:
        """The title, with the host and process it ran as (for failures during a run)."""
        return f"{self.title} on {self.hostname} (pid {self.hello.get('pid', '?')})"

    def _prepare_ssh(self, connect_timeout: float) -> None:
        """Options that keep ssh from hanging the run, unless the spec sets them itself: no
        prompt (a password or host-key question would wait forever), a connect timeout, a
        keepalive; and ssh's own messages into a file, quoted when it fails."""
        fd, self.ssh_log = tempfile.mkstemp(prefix="bridgeperf-ssh-", suffix=".log")
        os.close(fd)
        value = str(self.spec.ssh)
        lowered = value.lower()
        timeout = str(max(1, min(SSH_CONNECT_TIMEOUT_S, int(connect_timeout))))
        options = (("BatchMode", "yes"), ("ConnectTimeout", timeout), *_SSH_KEEPALIVE)
        extra = [f"-o {key}={val}" for key, val in options if key.lower() not in lowered]
        self.spec.ssh = " ".join([*extra, f"-E {self.ssh_log}", value])

    # starting -------------------------------------------------------------------------------
    def spawn(self) -> None:
        """Start the gateway's process (in the main thread: see :func:`_start_io`)."""
        if self.kind == "socket":
            return
        self.stage = "starting its process"
        try:
            self.io = _start_io(self.spec)
        except OSError as exc:
            self.error = LoadHostError(
                f"{self.title}: cannot start {'ssh' if self.kind == 'ssh' else 'python'}: {exc}",
                host=self.text,
            )

    def connect(self, until: float, probe_port: int) -> None:
        """Bootstrap, hello, version check, setup and loopback probe (a thread per link)."""
        try:
            self.stage = "waiting for its interpreter"
            if self.kind == "socket":
                from execnet import Group

                self.group = Group()
                self.gateway = self.group.makegateway(self.spec)
            else:
                self.gateway = _bootstrap(self.io, self.spec)
            self.stage = "importing pytest-bridgeperf there"
            self.channel = self.gateway.remote_exec(_BOOTSTRAP)
            name, hello = self._receive(until)
            self._check_hello(name, hello)
            self.stage = "probing its loopback"
            setup: dict[str, Any] = {"probe_port": probe_port}
            if self.kind != "socket":  # execnet applies them itself for socket gateways
                setup.update(
                    chdir=self.spec.chdir or None,
                    nice=int(self.spec.nice or 0),
                    env=dict(self.spec.env),
                )
            self.channel.send(("setup", setup))
            _, reply = self._receive(until)
            self.probe = reply.get("probe")
            self.stage = "connected"
        except BaseException as exc:
            self.error = exc if isinstance(exc, LoadHostError) else self._start_error(exc)

    def _start_error(self, exc: BaseException) -> LoadHostError:
        from execnet import HostNotFound

        if isinstance(exc, HostNotFound) or self._exit_status() == 255:
            why = self._ssh_said() or "ssh exited with status 255"
            return LoadHostError(
                f"{self.title}: cannot reach it over ssh: {why}. Check that "
                f"`ssh {self.spec_destination} {self.spec.python or 'python'} -c pass` works "
                "with no prompt (a key, the host in known_hosts).",
                host=self.text,
            )
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return LoadHostError(
            f"{self.title}: could not start while {self.stage}: {why} ({self.exit_text()})",
            host=self.text,
        )

    @property
    def spec_destination(self) -> str:
        value = self.text.split("//")[0]
        return value.split("=", 1)[1] if "=" in value else value

    def _receive(self, until: float) -> tuple[str, dict[str, Any]]:
        left = until - time.monotonic()
        try:
            name, data = self.channel.receive(max(0.01, left))
        except self.channel.TimeoutError:
            raise LoadHostError(
                f"{self.title}: no answer while {self.stage}", host=self.text
            ) from None
        except EOFError:
            raise LoadHostError(
                f"{self.title}: its interpreter ended while {self.stage} ({self.exit_text()})",
                host=self.text,
            ) from None
        return str(name), dict(data)

    def _check_hello(self, name: str, hello: dict[str, Any]) -> None:
        self.hello = hello
        where = (
            f"{hello.get('executable', self.spec.python or 'python')} (Python "
            f"{hello.get('python', '?')}) on {hello.get('hostname', self.spec_destination)}"
        )
        install = (
            f"install pytest-bridgeperf[load]=={__version__} there (the version of this run) "
            "and point the spec's python= at that environment"
        )
        if name != "hello" or "error" in hello:
            raise LoadHostError(
                f"{self.title}: {where} cannot run a generator: "
                f"{hello.get('error', f'unexpected message {name!r}')}. To use it, {install}.",
                host=self.text,
            )
        if hello.get("version") != __version__ or hello.get("protocol") != PROTOCOL:
            raise LoadHostError(
                f"{self.title}: {where} has pytest-bridgeperf {hello.get('version')} "
                f"(generator protocol {hello.get('protocol')}); this run is {__version__} "
                f"(protocol {PROTOCOL}), and a generator must run the same code: {install}.",
                host=self.text,
            )

    # talking --------------------------------------------------------------------------------
    def listen(self, inbox: queue.Queue[tuple[int, Any]]) -> None:
        index = self.index
        self.channel.setcallback(lambda message: inbox.put((index, message)), endmarker=_CLOSED)

    def send(self, message: tuple[str, dict[str, Any]]) -> bool:
        if self.channel is None:
            return False
        try:
            self.channel.send(message)
        except (OSError, EOFError, ValueError):
            return False
        return True

    # ending ---------------------------------------------------------------------------------
    def _exit_status(self, wait: float = 0.0) -> int | None:
        popen = getattr(self.io, "popen", None)
        if popen is None:
            return None
        try:
            return int(popen.wait(wait)) if wait else popen.poll()
        except Exception:
            return None

    def _ssh_said(self) -> str:
        if not self.ssh_log:
            return ""
        try:
            with open(self.ssh_log, encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        return " / ".join(lines[-3:])

    def exit_text(self) -> str:
        """What became of its process (and what ssh said), for a failure message."""
        status = self._exit_status(wait=0.5)
        what = "ssh" if self.kind == "ssh" else "its process"
        if status is None:
            text = f"{what} still running" if self.io is not None else "its connection closed"
        elif status < 0:
            text = f"{what} was killed by signal {-status}"
        else:
            text = f"{what} exited with status {status}"
        said = self._ssh_said()
        return f"{text}; ssh said: {said}" if said else text

    def abort(self) -> None:
        """Kill the gateway's process now (a start that overran, a generator gone silent)."""
        if self.io is not None:
            with contextlib.suppress(Exception):
                self.io.kill()
        if self.group is not None:
            with contextlib.suppress(Exception):
                self.group.terminate(timeout=0.5)

    def begin_close(self) -> None:
        """Close our end: the generator sees its channel end and stops, its interpreter exits."""
        self.send(("bye", {}))
        if self.io is not None:
            with contextlib.suppress(Exception):
                self.io.close_write()

    def finish_close(self, until: float) -> None:
        popen = getattr(self.io, "popen", None)
        if popen is not None:
            try:
                popen.wait(max(0.0, until - time.monotonic()))
            except Exception:
                with contextlib.suppress(Exception):
                    popen.kill()
                    popen.wait(2.0)
        if self.group is not None:
            with contextlib.suppress(Exception):
                self.group.terminate(timeout=max(0.1, until - time.monotonic()))
        if self.gateway is not None:
            # execnet's receiver thread ends once the process has closed its output
            with contextlib.suppress(Exception):
                self.gateway.join(1.0)
        if self.ssh_log:
            with contextlib.suppress(OSError):
                os.unlink(self.ssh_log)
            self.ssh_log = None


# ---------------------------------------------------------------------------------------------
# the controller


class _Fleet:
    """The generators of one run, driven from one thread (an executor thread of the run's
    event loop: the loop stays free to serve an in-process app)."""

    def __init__(self, specs: Sequence[str], *, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.links = [_Link(i, s, connect_timeout=connect_timeout) for i, s in enumerate(specs)]
        self.inbox: queue.Queue[tuple[int, Any]] = queue.Queue()
        #: why the run is being stopped: "interrupt" (Ctrl-C), "timeout" (the test's), "host"
        self.stop_reason: str | None = None
        self._requested: str | None = None
        self._closed = False

    def request_stop(self, reason: str) -> None:
        """From any thread: Ctrl-C or the test's timeout."""
        if self._requested is None:
            self._requested = reason
        self.inbox.put((_CONTROL, ("stop", {"reason": reason})))

    def spawn(self) -> None:
        for link in self.links:
            link.spawn()

    # phases ---------------------------------------------------------------------------------
    def connect(self) -> bool:
        """Start and check every generator, all at once; False when stopped meanwhile."""
        probe = _Probe()
        try:
            until = time.monotonic() + self.connect_timeout
            threads = []
            for link in self.links:
                if link.error is None:
                    thread = threading.Thread(
                        target=link.connect, args=(until, probe.port), daemon=True
                    )
                    thread.start()
                    threads.append((link, thread))
            # until every generator is up, or one failed (no need to wait for the others)
            while True:
                alive = [(link, thread) for link, thread in threads if thread.is_alive()]
                if self._requested is not None:
                    return False
                if not alive or any(link.error is not None for link in self.links):
                    break
                if time.monotonic() >= until:
                    for link, thread in alive:
                        stage = link.stage
                        link.abort()
                        thread.join(2.0)
                        said = link._ssh_said()
                        link.error = LoadHostError(
                            f"{link.title}: not started within {self.connect_timeout:g} s (it "
                            f"was {stage})" + (f"; ssh said: {said}" if said else ""),
                            host=link.text,
                        )
                    break
                alive[0][1].join(0.05)
        finally:
            probe.close()
        failed = [link for link in self.links if link.error is not None]
        if failed:
            first = failed[0].error
            assert first is not None
            if len(failed) > 1:
                others = ", ".join(link.id for link in failed[1:])
                raise LoadHostError(
                    f"{first} (and {len(failed) - 1} more failed: {others})", host=failed[0].text
                ) from first
            raise first
        for link in self.links:
            link.local = link.probe == probe.token
        return self._requested is None

    def check_target(self, target: Target) -> None:
        remote = [link for link in self.links if not link.local]
        if remote and is_loopback(target.host):
            names = ", ".join(f"{link.id} on {link.hostname}" for link in remote)
            raise LoadTargetError(
                f"{target.url} is this machine's loopback (an in-process app is served there "
                f"too), which generator(s) {names} cannot reach: they are not on this machine "
                "(or in another network namespace) and would load their own loopback. Give "
                "them the server's network address, listed in perf_allowed_hosts."
            )

    def start_runs(self, requests: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for link, request in zip(self.links, requests, strict=True):
            link.listen(self.inbox)
            link.last_heard = now
            if not link.send(("run", request)):
                raise LoadHostError(
                    f"{link.title}: its channel closed before the run ({link.exit_text()})",
                    host=link.text,
                )

    def wait_ready(self, timeout: float) -> bool:
        """Every generator connected its users; False when stopped meanwhile."""
        pending = {link.index for link in self.links}
        until = time.monotonic() + timeout
        while pending:
            item = self._next(until)
            if item is None:
                names = ", ".join(self.links[i].title for i in sorted(pending))
                raise LoadHostError(
                    f"{names}: not ready within {timeout:g} s (connecting its users to the target)",
                    host=self.links[min(pending)].text,
                )
            index, message = item
            if index == _CONTROL:
                return False
            link = self.links[index]
            if message is _CLOSED:
                raise LoadHostError(
                    f"{link.title}: ended before its run started ({link.exit_text()})",
                    host=link.text,
                )
            name, data = message
            if name == "ready":
                pending.discard(index)
            elif name == "error":
                raise _generator_error(link, data)
        return True

    def sync_clocks(self) -> bool:
        """Each generator's clock offset from the best of ``PING_ROUNDS`` round trips."""
        for _ in range(PING_ROUNDS):
            sent = {}
            for link in self.links:
                sent[link.index] = time.monotonic_ns()
                link.send(("ping", {}))
            until = time.monotonic() + 5.0
            while sent:
                item = self._next(until)
                if item is None:
                    link = self.links[min(sent)]
                    raise LoadHostError(
                        f"{link.title}: did not answer a clock ping within 5 s", host=link.text
                    )
                index, message = item
                if index == _CONTROL:
                    return False
                link = self.links[index]
                if message is _CLOSED:
                    raise LoadHostError(
                        f"{link.title}: ended before its run started ({link.exit_text()})",
                        host=link.text,
                    )
                name, data = message
                if name == "pong" and index in sent:
                    received = time.monotonic_ns()
                    t0 = sent.pop(index)
                    rtt = received - t0
                    if rtt < link.best_rtt_ns:
                        link.best_rtt_ns = rtt
                        link.offset_ns = int(data["t"]) - (t0 + received) // 2
                elif name == "error":
                    raise _generator_error(link, data)
        return True

    def start(self) -> int:
        """Send the start instant; returns it on this process's monotonic clock (ns)."""
        lead = start_lead_ns([int(link.best_rtt_ns) for link in self.links])
        start_at = time.monotonic_ns() + lead
        for link in self.links:
            link.send(("start", {"at": start_at + link.offset_ns}))
        return start_at

    def collect(
        self, start_at_ns: int, run_seconds: float, on_tick: Callable[[float], None] | None
    ) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
        """Results (by generator) and failures (by generator), every wait bounded."""
        n = len(self.links)
        results: dict[int, dict[str, Any]] = {}
        failures: dict[int, str] = {}
        start_s = start_at_ns / 1e9
        end = start_s + run_seconds + RESULT_GRACE_S
        stop_until = math.inf
        if self._requested is not None:
            stop_until = self._stop(self._requested)
        while len(results) + len(failures) < n:
            now = time.monotonic()
            if now >= min(end, stop_until):
                late = "after being stopped" if stop_until <= end else "by the run's end"
                for link in self.links:
                    if link.index not in results and link.index not in failures:
                        link.abort()
                        failures[link.index] = f"sent no result {late}"
                break
            for link in self.links:
                done = link.index in results or link.index in failures
                if not done and now - link.last_heard > SILENCE_S:
                    link.abort()
                    failures[link.index] = (
                        f"stopped answering {now - start_s:.1f} s into the run (nothing heard "
                        f"for {SILENCE_S:g} s)"
                    )
                    stop_until = min(stop_until, self._stop("host"))
            item = self._next(min(end, stop_until, now + 0.5))
            if on_tick is not None:
                on_tick(time.monotonic() - start_s)
            if item is None:
                continue
            index, message = item
            if index == _CONTROL:
                stop_until = min(stop_until, self._stop(message[1]["reason"]))
                continue
            link = self.links[index]
            if index in results or index in failures:
                continue
            if message is _CLOSED:
                failures[index] = (
                    f"died {time.monotonic() - start_s:.1f} s into the run ({link.exit_text()})"
                )
                stop_until = min(stop_until, self._stop("host"))
                continue
            name, data = message
            if name == "result":
                results[index] = data
            elif name == "error":
                failures[index] = f"failed: {data.get('kind')}: {data.get('text')}"
                stop_until = min(stop_until, self._stop("host"))
        return results, failures

    def _stop(self, reason: str) -> float:
        """Stop every generator; returns until when their partial results are waited for."""
        if self.stop_reason is None:
            self.stop_reason = reason
            for link in self.links:
                link.send(("stop", {}))
        return time.monotonic() + STOP_WAIT_S

    def _next(self, until: float) -> tuple[int, Any] | None:
        try:
            item = self.inbox.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return None
        if item[0] != _CONTROL:
            self.links[item[0]].last_heard = time.monotonic()
        return item

    def close(self) -> None:
        """End every generator, bounded: its channel closed (it stops and exits), killed when
        it has not exited 2 s later."""
        if self._closed:
            return
        self._closed = True
        for link in self.links:
            link.begin_close()
        until = time.monotonic() + 2.0
        for link in self.links:
            link.finish_close(until)


def _generator_error(link: _Link, data: dict[str, Any]) -> Exception:
    """A generator's error before the run, raised here as the type it had there."""
    kind, text = str(data.get("kind")), str(data.get("text"))
    message = f"{link.title}: {text}"
    if kind == "LoadConnectionError":
        return LoadConnectionError(message)
    if kind == "LoadTargetError":
        return LoadTargetError(message)
    if kind == "LoadOptionError":
        return LoadOptionError(message)
    return LoadHostError(f"{link.title} failed: {kind}: {text}", host=link.text)


# ---------------------------------------------------------------------------------------------


async def run_hosts(
    target: Target,
    opts: LoadOptions,
    label: str,
    allowed_hosts: tuple[str, ...],
    progress: ProgressCallback | None,
    stops: Stops | None = None,
    *,
    connect_timeout: float | None = None,
) -> LoadResult:
    """Run ``opts`` against ``target`` on the generators of ``opts.hosts`` (see the module
    docstring); the target has passed ``check_allowed`` on this side already."""
    stops = stops or Stops()
    parts = split_options(opts, len(opts.hosts))
    raws = [options_to_raw(part) for part in parts]
    loop = asyncio.get_running_loop()
    fleet = _Fleet(
        opts.hosts,
        connect_timeout=CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout,
    )
    deadline = stops.deadline

    def requests() -> list[dict[str, Any]]:
        # built when sent: the test's deadline is passed on as seconds from now
        return [
            {
                "url": target.url,
                "options": raw,
                "label": label,
                "allowed_hosts": list(allowed_hosts),
                "max_duration": opts.max_duration,
                "deadline_in": (deadline.remaining() - _GENERATOR_EXIT_S) if deadline else None,
                "reason": deadline.reason if deadline else None,
            }
            for raw in raws
        ]

    shown = [False]
    last_tick = [0.0]

    def tick(elapsed: float) -> None:
        # the same rhythm as a local run's progress line: after 2 s, every 0.5 s
        if progress is None or elapsed < 2.0 or elapsed - last_tick[0] < 0.5:
            return
        last_tick[0] = elapsed
        total = opts.warmup + opts.run_length
        line = (
            f"[perf_load {label}: {min(elapsed, total):.1f}/{total:.1f} s on "
            f"{len(fleet.links)} generators]"
        )
        shown[0] = True
        loop.call_soon_threadsafe(progress, line)

    def drive() -> LoadResult:
        if not fleet.connect():
            return _empty(label, target, opts, interrupted=fleet._requested == "interrupt")
        fleet.check_target(target)
        fleet.start_runs(requests())
        if not fleet.wait_ready(opts.timeout + READY_GRACE_S) or not fleet.sync_clocks():
            return _empty(label, target, opts, interrupted=fleet._requested == "interrupt")
        start_at = fleet.start()
        run_seconds = opts.warmup + opts.run_length + opts.timeout
        results, failures = fleet.collect(start_at, run_seconds, tick)
        return _outcome(fleet, results, failures, label)

    unregister = stops.signal.on_fire(lambda: fleet.request_stop("timeout"))
    try:
        with sigint_stops(lambda: fleet.request_stop("interrupt"), loop):
            fleet.spawn()
            result = await loop.run_in_executor(None, drive)
    finally:
        unregister()
        fleet.close()
        if shown[0] and progress is not None:
            progress(None)
    check_rate(result)
    return result


def _empty(label: str, target: Target, opts: LoadOptions, *, interrupted: bool) -> LoadResult:
    """The result of a run stopped before it started."""
    from ..stats import LatencyHistogram

    result = LoadResult(
        name=label,
        histogram=LatencyHistogram(),
        count=0,
        errors=0,
        elapsed=0.0,
        model=opts.model,
        users=opts.users,
        workers=len(opts.hosts),
        target_rate=opts.rate,
        target=target.url,
    )
    result.interrupted = interrupted
    if not interrupted:
        result.stopped_by = TIMEOUT_SIGNAL
    return result


def _outcome(
    fleet: _Fleet, results: dict[int, dict[str, Any]], failures: dict[int, str], label: str
) -> LoadResult:
    shares = [_share(fleet.links[index], results[index]) for index in sorted(results)]
    merged = merge_shares(shares) if shares else None
    if merged is not None:
        merged.name = label
    if failures and fleet.stop_reason == "interrupt":
        # after a Ctrl-C, a generator that did not report (its ssh killed by the same Ctrl-C,
        # when something else started it) is part of the interruption, not news
        if merged is None:
            from ..stats import LatencyHistogram

            return LoadResult(
                label, LatencyHistogram(), count=0, errors=0, elapsed=0.0, interrupted=True
            )
        merged.interrupted = True
        return merged
    if failures:
        if merged is not None:
            merged.interrupted = True
        lines = [f"{fleet.links[i].where} {text}" for i, text in sorted(failures.items())]
        partial = (
            f"partial result of the other {len(shares)} generator(s): {merged.summary()}"
            if merged is not None
            else "no generator sent a result"
        )
        first = fleet.links[min(failures)]
        raise LoadHostError(
            f"perf_load on {len(fleet.links)} generators failed: {'; '.join(lines)}. {partial}",
            host=first.text,
            result=merged,
        )
    assert merged is not None
    if fleet.stop_reason == "interrupt":
        merged.interrupted = True
    elif fleet.stop_reason == "timeout":
        merged.interrupted = False
        merged.stopped_by = TIMEOUT_SIGNAL
    rate_errors = [
        (fleet.links[i], data["rate_error"])
        for i, data in sorted(results.items())
        if data.get("rate_error")
    ]
    if rate_errors and not merged.interrupted and merged.stopped_by is None:
        link, text = rate_errors[0]
        raise LoadRateError(f"{link.title}: {text}", merged)
    return merged


def _share(link: _Link, data: dict[str, Any]) -> HostShare:
    usage = data["usage"]
    return HostShare(
        id=link.id,
        spec=link.text,
        hostname=link.hostname,
        pid=int(link.hello.get("pid", 0)),
        local=link.local,
        result=LoadResult.from_dict(data["result"]),
        cpu_seconds=float(usage["cpu_seconds"]),
        wall_seconds=float(usage["wall_seconds"]),
        start_late=float(usage["start_late"]),
        clock_offset=link.offset_ns / 1e9,
        clock_error=link.best_rtt_ns / 2e9 if math.isfinite(link.best_rtt_ns) else math.nan,
    )
