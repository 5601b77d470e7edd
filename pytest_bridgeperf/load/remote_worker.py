"""A load generator of ``perf_load(target, hosts=[...])``: an interpreter on this machine
(``popen``) or another (``ssh=``, ``socket=``) that runs its share of the run with the same
engine as a local run, driven by the controller (``hosts.py``) over an execnet channel.

The controller's bootstrap imports this module from the pytest-bridgeperf installed in the
generator's environment and calls :func:`serve` in the interpreter's main thread (execnet's
``main_thread_only`` model: the run handles signals there, as a local run does).

Messages, tuples ``(name, dict)`` of plain data (the generator never unpickles anything):

- generator → controller: ``hello`` (protocol, version, host name, pid, Python), ``setup``
  (what the loopback probe read), ``ready`` (its users are connected), ``pong`` (its monotonic
  clock), ``alive`` (every second of the run), ``result`` or ``error``;
- controller → generator: ``setup`` (the probe's port, ``chdir``/``env``/``nice`` of the spec),
  ``run`` (URL, options, allowed hosts, caps), ``ping``, ``start`` (the instant, on the
  generator's own monotonic clock), ``stop``, ``bye``.

The generator validates the target and the options itself, with the same rules and caps as
the controller (``check_allowed``, ``build_options`` under ``perf_max_duration``), and stops by
itself when the controller goes away (its channel closes). No pytest here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["HEARTBEAT_S", "PROTOCOL", "hello", "probe_loopback", "serve"]

#: Version of the messages above; the controller refuses a generator whose number differs.
PROTOCOL = 1
#: The generator says it is alive this often during a run (the controller gives up on one it
#: has not heard from for ``hosts.SILENCE_S``).
HEARTBEAT_S = 1.0
#: How long a ready generator waits for its start instant beyond the run's connect timeout:
#: the controller waits for the slowest generator to connect, then sends the start at once.
_START_WAIT_S = 60.0

_CLOSED = object()


def hello() -> dict[str, Any]:
    """Who this generator is: the controller checks the version and names the host in
    messages."""
    from .. import __version__

    return {
        "protocol": PROTOCOL,
        "version": __version__,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpus": os.cpu_count() or 1,
    }


def probe_loopback(port: int, timeout: float = 1.0) -> str | None:
    """What a server at ``127.0.0.1:port`` of *this* machine sends before closing (at most 64
    bytes), None when nothing answers. The controller listens there with a random token: a
    generator that reads it back shares the controller's loopback (same machine and network
    namespace), whatever the gateway spec says."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while len(data) < 64:
                chunk = sock.recv(64 - len(data))
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    return data.decode("ascii", "replace")


def serve(channel: Any) -> None:
    """The generator's main loop: handshake, then one run (see the module docstring)."""
    channel.send(("hello", hello()))
    while True:
        try:
            name, data = channel.receive()
        except EOFError:  # the controller went away before the run
            return
        if name == "setup":
            channel.send(("setup", _setup(data)))
        elif name == "run":
            break
        else:  # "bye", or anything this version does not know: nothing to run
            return
    _Generator(channel).run(data)


def _setup(data: Mapping[str, Any]) -> dict[str, Any]:
    # the spec's env:/chdir=/nice= (execnet applies them only for gateways it starts itself)
    for key, value in dict(data.get("env") or {}).items():
        os.environ[str(key)] = str(value)
    if data.get("chdir"):
        path = str(data["chdir"])
        os.makedirs(path, exist_ok=True)
        os.chdir(path)
    if data.get("nice") and hasattr(os, "nice"):
        os.nice(int(data["nice"]))
    port = data.get("probe_port")
    return {"probe": probe_loopback(int(port)) if port else None}


class _Generator:
    """One run: the channel's messages arrive on execnet's receiver thread (``on_message``),
    the run goes on in the main thread."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._lock = threading.Lock()
        self._starts: queue.Queue[int | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._finished = threading.Event()
        from .interrupts import Stops

        self.stops = Stops()

    # receiver thread ------------------------------------------------------------------------
    # Nothing here may raise: an exception in execnet's receiver thread ends that thread
    # before it lets the interpreter exit (seen as a generator outliving its controller's
    # close by the 2 s it is given).
    def on_message(self, message: Any) -> None:
        if message is _CLOSED:  # the controller is gone: stop, nobody reads the result
            self.stop()
            return
        try:
            name, data = message
            if name == "ping":
                self.send(("pong", {"t": time.monotonic_ns()}))
            elif name == "start":
                self._starts.put(int(data["at"]))
            elif name == "stop":
                self.stop()
        except Exception:  # a message this version does not understand: stop rather than hang
            self.stop()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop = self._loop
        if loop is not None:
            # before the start instant is released below: the run then sees it stopped
            with contextlib.suppress(RuntimeError):  # the run's loop closed meanwhile
                loop.call_soon_threadsafe(self.stops.signal.fire)
        self._starts.put(None)

    def send(self, message: tuple[str, dict[str, Any]]) -> bool:
        try:
            self.channel.send(message)
        except (OSError, EOFError, ValueError):  # the channel closed: the controller is gone
            return False
        return True

    # main thread ----------------------------------------------------------------------------
    def run(self, request: Mapping[str, Any]) -> None:
        self.channel.setcallback(self.on_message, endmarker=_CLOSED)
        heartbeat = threading.Thread(target=self._beat, name="perf_load-alive", daemon=True)
        heartbeat.start()
        try:
            outcome = self._generate(request)
        except BaseException as exc:  # the controller raises it, naming this host
            self.send(("error", {"kind": type(exc).__name__, "text": str(exc)}))
        else:
            self.send(("result", outcome))
        finally:
            self._finished.set()

    def _beat(self) -> None:
        while not self._finished.wait(HEARTBEAT_S):
            if not self.send(("alive", {})):
                return

    def _generate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        from .engine import LoadRateError
        from .generators import GeneratorUsage
        from .interrupts import Deadline, Stops, mark_worker_process
        from .options import build_options
        from .runner import execute, new_runner
        from .safety import check_allowed, parse_url

        mark_worker_process()  # a second Ctrl-C here must not become a hard interrupt
        target = parse_url(request["url"])
        allowed = tuple(request["allowed_hosts"])
        check_allowed(target, allowed)
        opts = build_options(
            request["options"], max_duration=float(request["max_duration"]), default_path="/"
        )
        if request.get("deadline_in") is not None:
            deadline = Deadline(time.monotonic() + request["deadline_in"], request["reason"])
            self.stops = Stops(deadline, self.stops.signal)
        usage = GeneratorUsage()
        start_wait = opts.timeout + _START_WAIT_S

        def wait_for_start() -> int:
            from .generators import local_start_ns

            self.send(("ready", {"users": opts.users}))
            try:
                at = self._starts.get(timeout=start_wait)
            except queue.Empty:
                raise TimeoutError(
                    f"no start instant from the controller within {start_wait:g} s of being ready"
                ) from None
            if at is None:  # stopped before the start: the run sees its stop signal
                return time.perf_counter_ns()
            usage.begin(at)
            return local_start_ns(at)

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            with self._lock:
                self._loop = loop
                stopped = self._stopped
            if stopped:
                self.stops.signal.fire()

            async def before_start() -> int:
                return await loop.run_in_executor(None, wait_for_start)

            return await execute(
                target,
                opts,
                str(request["label"]),
                allowed,
                None,
                before_start=before_start,
                stops=self.stops,
            )

        rate_error: str | None = None
        try:
            with new_runner() as runner:
                try:
                    result = runner.run(main())
                except LoadRateError as exc:  # judged on the whole run by the controller
                    result, rate_error = exc.result, str(exc)
        finally:
            with self._lock:
                self._loop = None  # a stop from now on has no run to stop
        usage.end()
        if self._stopped:  # the controller stopped it (Ctrl-C, its timeout, another host)
            result.stopped_by = None
            result.interrupted = True
        if result.distorted:
            result.distorted = (
                f"{result.distorted} in a perf_load generator on {socket.gethostname()}"
            )
        return {"result": result.to_dict(), "usage": usage.to_dict(), "rate_error": rate_error}
