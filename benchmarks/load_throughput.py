"""Throughput of perf_load's HTTP engine against wrk and an aiohttp ClientSession loop.

    python benchmarks/load_throughput.py [--seconds 5] [--rounds 5] [--users 16] [--skip-aiohttp]

Starts a loopback target (nginx when installed, else a small uvloop server of its own), then
measures, interleaved round by round (wrk and perf_load back to back, which goes first
alternating) so background load hits every tool alike:

* ``wrk -t1 -c16`` (when installed) — the C reference;
* an aiohttp ``ClientSession`` closed loop with 16 concurrent tasks — what hand-written Python
  load testers (and the Bridge guide's LoadTester) do;
* ``perf_load`` with 16 users — every latency recorded into the HDR histogram.

Prints requests/s per tool and round with the round's perf_load/wrk ratio, the load average
before and after, the medians with their spread (min–max), client CPU per request, and the
ratios perf_load/wrk and perf_load/aiohttp.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_bridgeperf.load import run_load

_NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "hello, world"; }}
  }}
}}
"""

_OWN_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 12\\r\\n"
                b"\\r\\nhello, world")
    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = b""
        def data_received(self, data):
            self.buffer += data
            while True:
                end = self.buffer.find(b"\\r\\n\\r\\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 4:]
                self.transport.write(RESPONSE)
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Server, "127.0.0.1", int(sys.argv[1]))
        print("ready", flush=True)
        await server.serve_forever()
    asyncio.run(main())
    """
)


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child to one CPU (``--pin``): the target on CPU 0, each load
    generator on CPU 1, so the scheduler does not move them around between rounds."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


PIN: dict[str, int | None] = {"target": None, "client": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"target on port {port} did not come up")


def start_target(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    nginx = shutil.which("nginx")
    if nginx:
        (tmp / "nginx.conf").write_text(_NGINX_CONF.format(dir=tmp, port=port))
        proc = subprocess.Popen(
            [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pinned(PIN["target"]),
        )
        name = "nginx (1 worker)"
    else:
        proc = subprocess.Popen(
            [sys.executable, "-c", _OWN_SERVER, str(port)],
            stdout=subprocess.DEVNULL,
            preexec_fn=_pinned(PIN["target"]),
        )
        name = "uvloop asyncio.Protocol server"
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}/", name


def run_child(cmd: list[str]) -> tuple[str, float]:
    """Run a tool; returns its stdout and the CPU seconds it used (user + system)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.DEVNULL, preexec_fn=_pinned(PIN["client"])
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{text}")
    return text, usage.ru_utime + usage.ru_stime


def bench_wrk(url: str, seconds: float, users: int) -> tuple[float, float] | None:
    wrk = shutil.which("wrk")
    if not wrk:
        return None
    out, cpu = run_child([wrk, "-t1", f"-c{users}", f"-d{seconds:g}s", url])
    rps = total = None
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if " requests in " in line:
            total = int(line.split()[0])
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return rps, cpu / total


_AIOHTTP_LOOP = textwrap.dedent(
    """
    import asyncio, sys, time
    import aiohttp
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    async def main(url, seconds, users):
        count = 0
        latencies = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as session:
            end = time.perf_counter() + seconds
            async def user():
                nonlocal count
                while time.perf_counter() < end:
                    start = time.perf_counter()
                    async with session.get(url) as response:
                        await response.read()
                    latencies.append(time.perf_counter() - start)
                    count += 1
            t0 = time.perf_counter()
            await asyncio.gather(*(user() for _ in range(users)))
            print(count / (time.perf_counter() - t0), count)
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
    """
)


def bench_aiohttp(url: str, seconds: float, users: int) -> tuple[float, float]:
    # in its own process, like the other two, so each tool has a fresh interpreter
    out, cpu = run_child([sys.executable, "-c", _AIOHTTP_LOOP, url, str(seconds), str(users)])
    rps, count = out.split()
    return float(rps), cpu / int(count)


_PERF_LOAD = textwrap.dedent(
    """
    import importlib.util, sys, time
    sys.path.insert(0, sys.argv[4])
    from pytest_bridgeperf.load import run_load
    if importlib.util.find_spec("numpy"):
        import numpy  # the fold's, imported once per process: an import, not request handling
    cpu = time.process_time()
    result = run_load(sys.argv[1], {"users": int(sys.argv[3]), "duration": float(sys.argv[2])})
    cpu = time.process_time() - cpu
    assert result.errors == 0, result.summary()
    assert result.latency_count == result.count, "every latency is recorded"
    print(result.rps, result.p50, result.p99, result.count, cpu)
    """
)


def bench_perf_load(url: str, seconds: float, users: int) -> tuple[float, float, float, float]:
    root = str(Path(__file__).resolve().parent.parent)
    out, _ = run_child([sys.executable, "-c", _PERF_LOAD, url, str(seconds), str(users), root])
    rps, p50, p99, count, cpu = (float(x) for x in out.split())
    # CPU of the run itself, measured in the child: connecting, the requests, folding every
    # latency into the histogram; not the interpreter's start-up nor the imports (numpy's
    # included: ~0.1 s, which would add ~1.5 µs per request to a 3 s run)
    return rps, p50, p99, cpu / count


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f}–{max(values):,.0f}" if values else "-"


# ------------------------------------------------------------------------------------ --profile
# Where perf_load's time goes, piece by piece: the kernel (syscalls per request), the Python hot
# path per response (on a stubbed transport, next to a bare httptools protocol: the floor of a
# Python client of this design), and the fold of the latencies into the HDR histogram.

_NGINX_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 02:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
    b"hello, world"
)


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


def _python_per_response(n: int = 200_000) -> tuple[float, float]:
    """Seconds per response: perf_load's data_received + on_message_complete (recording the
    latency, logging the status, writing the next request), and a bare httptools protocol that
    only appends the latency and writes."""
    import asyncio
    from array import array

    import httptools

    from pytest_bridgeperf.load.engine import Run
    from pytest_bridgeperf.load.http1 import FastHttpEngine, HttpUser
    from pytest_bridgeperf.load.options import build_options
    from pytest_bridgeperf.load.safety import parse_url

    loop = asyncio.new_event_loop()
    options = build_options({"users": 1, "duration": 5}, max_duration=60, default_path="/")
    run = Run(options, loop, label="profile")
    user = HttpUser(FastHttpEngine(run, parse_url("http://127.0.0.1:1/"), options))
    user.transport = _NullTransport()  # type: ignore[assignment]
    user._reset_parser()
    user.start_ns = time.perf_counter_ns()
    run.inflight = 1
    feed = user.data_received
    start = time.perf_counter()
    for _ in range(n):
        feed(_NGINX_RESPONSE)
    engine = (time.perf_counter() - start) / n
    run.flush()
    assert run.collectors[0].count == n
    loop.close()

    clock = time.perf_counter_ns
    latencies: array[int] = array("q")
    null = _NullTransport()

    class Bare:
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.start = clock()

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            now = clock()
            latencies.append(now - self.start)
            self.start = clock()
            null.write(b"")

    bare_feed = Bare().data_received
    start = time.perf_counter()
    for _ in range(n):
        bare_feed(_NGINX_RESPONSE)
    return engine, (time.perf_counter() - start) / n


def _fold_per_latency(n: int) -> tuple[float, float]:
    """Seconds per latency folding ``n`` latencies (log-normal around 150 µs), pure Python and
    with numpy (what the engine uses from 50,000 latencies on, when numpy is installed; its
    import, ~0.1 s of CPU, is left out)."""
    import random
    from array import array

    from pytest_bridgeperf.load import result
    from pytest_bridgeperf.stats import LatencyHistogram

    rng = random.Random(1)
    values = array("q", (int(rng.lognormvariate(11.9, 0.5)) for _ in range(n)))
    if importlib.util.find_spec("numpy") is not None:
        importlib.import_module("numpy")  # once per run, before the fold: not per latency
    times = []
    for threshold in (10**12, 0):  # pure Python, then numpy
        saved, result._NUMPY_FOLD_MIN = result._NUMPY_FOLD_MIN, threshold
        try:
            start = time.perf_counter()
            result.fold_latencies(LatencyHistogram(), values)
            times.append((time.perf_counter() - start) / n)
        finally:
            result._NUMPY_FOLD_MIN = saved
    return times[0], times[1]


def _syscalls(url: str, seconds: float, users: int) -> None:
    strace = shutil.which("strace")
    if strace is None:
        print("  (strace not installed: no syscall counts)")
        return
    root = str(Path(__file__).resolve().parent.parent)
    tools = {"perf_load": [sys.executable, "-c", _PERF_LOAD, url, str(seconds), str(users), root]}
    wrk = shutil.which("wrk")
    if wrk:
        tools["wrk"] = [wrk, "-t1", f"-c{users}", f"-d{seconds:g}s", url]
    for name, cmd in tools.items():
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
            out = subprocess.run(
                [strace, "-f", "-c", "-o", log.name, *cmd], capture_output=True, text=True
            ).stdout
            counts = {}
            for line in log.read().splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                    counts[parts[-1]] = int(parts[3])
        if name == "wrk":
            requests = next(int(x.split()[0]) for x in out.splitlines() if " requests in " in x)
        else:
            requests = int(float(out.split()[3]))
        wanted = ("read", "write", "epoll_ctl", "epoll_wait", "epoll_pwait")
        per = ", ".join(f"{k} {counts[k] / requests:.2f}" for k in wanted if k in counts)
        total = sum(counts.get(k, 0) for k in wanted) / requests
        print(f"  {name:<10} {total:.2f} syscalls per request under strace ({per})")


def profile(url: str, seconds: float, users: int) -> None:
    print("syscalls per request (strace -c -f; strace slows both tools alike):")
    _syscalls(url, min(seconds, 2.0), users)
    engine, bare = _python_per_response()
    print(
        f"Python per response (stubbed transport): perf_load {engine * 1e6:.2f} µs, bare "
        f"httptools protocol {bare * 1e6:.2f} µs (+{(engine - bare) * 1e6:.2f} µs for "
        "bookkeeping)"
    )
    pure, vectorised = _fold_per_latency(1_000_000)
    print(
        f"fold into the HDR histogram, per latency (1,000,000 latencies): pure Python "
        f"{pure * 1e9:.0f} ns, numpy {vectorised * 1e9:.0f} ns (after the run, not in rps)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument(
        "--pin", action="store_true", help="pin the target to CPU 0 and each tool to CPU 1"
    )
    parser.add_argument(
        "--skip-aiohttp", action="store_true", help="measure only wrk and perf_load (faster)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="show where perf_load's time goes (syscalls, Python per response, fold) and stop",
    )
    args = parser.parse_args()
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="bridgeperf-bench-") as tmp:
            proc, url, _ = start_target(Path(tmp))
            try:
                profile(url, args.seconds, args.users)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        return 0
    if args.pin and (os.cpu_count() or 1) >= 2:
        PIN.update(target=0, client=1)
    tools = ["wrk", "perf_load"] + ([] if args.skip_aiohttp else ["aiohttp"])
    rows: dict[str, list[float]] = {k: [] for k in tools}
    cpu: dict[str, list[float]] = {k: [] for k in tools}
    ratios: list[float] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bridgeperf-bench-") as tmp:
        proc, url, name = start_target(Path(tmp))
        try:
            run_load(url, {"users": 2, "duration": 0.5})  # warm the target up
            print(f"target: {name} at {url}; {args.users} connections, {args.seconds:g} s each")
            pinned = ", target on CPU 0, tools on CPU 1" if PIN["client"] is not None else ""
            print(f"machine: {os.cpu_count()} CPUs{pinned}, Python {sys.version.split()[0]}")
            print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*load_before))
            for i in range(args.rounds):
                # wrk and perf_load back to back in every round, the first of them alternating,
                # so both see the same background load
                order = ["wrk", "perf_load"] if i % 2 == 0 else ["perf_load", "wrk"]
                line = f"round {i + 1}: "
                got: dict[str, float] = {}
                for tool in order + tools[2:]:
                    if tool == "wrk":
                        wrk = bench_wrk(url, args.seconds, args.users)
                        if wrk is None:
                            continue
                        rps, per = wrk
                        line += f"wrk {rps:>9,.0f}/s  "
                    elif tool == "aiohttp":
                        rps, per = bench_aiohttp(url, args.seconds, args.users)
                        line += f"aiohttp {rps:>8,.0f}/s  "
                    else:
                        rps, p50, p99, per = bench_perf_load(url, args.seconds, args.users)
                        line += (
                            f"perf_load {rps:>9,.0f}/s (p50 {p50 * 1e6:.0f} µs, "
                            f"p99 {p99 * 1e6:.0f} µs)  "
                        )
                    rows[tool].append(rps)
                    cpu[tool].append(per)
                    got[tool] = rps
                if "wrk" in got:
                    ratios.append(got["perf_load"] / got["wrk"])
                    line += f"ratio {ratios[-1]:.2f}"
                print(line.rstrip(), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    load_after = os.getloadavg()
    print("load average after (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*load_after))
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    print("\nmedian of the rounds:     requests/s   (min–max)             client CPU per request")
    for key, value in med.items():
        spread = f"({_spread(rows[key])})"
        print(f"  {key:<10} {value:>20,.0f}   {spread:<21} {med_cpu[key] * 1e6:>8.2f} µs")
    print("ratios (medians; throughput, and CPU efficiency = requests per client CPU second):")
    if "wrk" in med:
        print(
            f"  perf_load / wrk     = {med['perf_load'] / med['wrk']:.2f} throughput, "
            f"{med_cpu['wrk'] / med_cpu['perf_load']:.2f} efficiency  (target >= 0.90); "
            f"per round {min(ratios):.2f}–{max(ratios):.2f}, "
            f"median {statistics.median(ratios):.2f}"
        )
    if "aiohttp" in med:
        print(
            f"  perf_load / aiohttp = {med['perf_load'] / med['aiohttp']:.2f} throughput, "
            f"{med_cpu['aiohttp'] / med_cpu['perf_load']:.2f} efficiency  (target >= 5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
