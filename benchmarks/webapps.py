"""The example web apps under load: perf_load against wrk on one uvicorn server, and the
capacity of each ``serve=`` mode.

    python benchmarks/webapps.py wrk [--rounds 5] [--seconds 5] [--connections 8]
    python benchmarks/webapps.py serve-modes [--rounds 3] [--seconds 3] [--users 8]

``wrk``: examples/fastapi_app served by uvicorn in a process of its own (``python -m
fastapi_app``), its projects page loaded by ``wrk -t1`` and by ``perf_load`` with the same
connections, duration and ``Authorization`` header, back to back in every round (which goes
first alternating, so both see the same background load). perf_load runs in its own process too,
like wrk. Prints per round and as medians: requests/s, p50, p99.

``serve-modes``: the bridge example's dashboards page (aiohttp) and the FastAPI example's
projects page, each served by perf_load with ``serve="loop"``, ``"thread"`` and ``"process"``,
the modes interleaved round by round. Prints requests/s and p50 per mode (medians), and the
server's and the generator's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "fastapi_app"))
sys.path.insert(0, str(ROOT / "examples" / "bridge_app"))

PATH = "/projects?page=2&page_size=20"

_PERF_LOAD = """
import json, sys
from pytest_bridgeperf.load import run_load
url, seconds, users, token = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = run_load(url, {"users": users, "duration": seconds, "record": False, "progress": False,
                   "headers": {"Authorization": "Bearer " + token}})
print(json.dumps({"rps": r.rps, "p50": r.p50, "p99": r.p99, "count": r.count,
                  "errors": r.errors}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _login(base: str) -> str:
    request = urllib.request.Request(
        base + "/login",
        data=json.dumps({"username": "user3", "password": "correct horse"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["token"])


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _wrk(url: str, seconds: float, connections: int, token: str) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))

    def seconds_of(text: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(number) * _UNITS[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": seconds_of(found["50"]),
        "p99": seconds_of(found["99"]),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _perf_load(url: str, seconds: float, users: int, token: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PERF_LOAD, url, str(seconds), str(users), token],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _ms(value: float) -> str:
    return f"{value * 1e3:.2f} ms"


def bench_wrk(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastapi_app",
                "--port",
                str(port),
                "--database-url",
                f"sqlite:///{tmp}/bench.db",
            ],
            cwd=ROOT / "examples" / "fastapi_app",
        )
        try:
            _wait(port)
            base = f"http://127.0.0.1:{port}"
            token = _login(base)
            url = base + PATH
            _wrk(url, 1, args.connections, token)  # warm the server: caches, compiled SQL
            runs: dict[str, list[dict[str, float]]] = {"wrk": [], "perf_load": []}
            print(
                f"uvicorn serving examples/fastapi_app GET {PATH}; -c{args.connections}, "
                f"{args.seconds:g} s per run; load average {os.getloadavg()[0]:.1f}"
            )
            for i in range(args.rounds):
                order = ["wrk", "perf_load"] if i % 2 == 0 else ["perf_load", "wrk"]
                for tool in order:
                    run = (_wrk if tool == "wrk" else _perf_load)(
                        url, args.seconds, args.connections, token
                    )
                    runs[tool].append(run)
                    print(
                        f"  round {i + 1} {tool:<9} {run['rps']:>8,.0f}/s  p50 "
                        f"{_ms(run['p50'])}  p99 {_ms(run['p99'])}  errors {run['errors']:g}"
                    )
            print(f"load average after: {os.getloadavg()[0]:.1f}")
            print(f"{'tool':<10} {'requests/s':>12} {'p50':>10} {'p99':>10}")
            for tool, results in runs.items():
                print(
                    f"{tool:<10} {statistics.median(r['rps'] for r in results):>12,.0f} "
                    f"{_ms(statistics.median(r['p50'] for r in results)):>10} "
                    f"{_ms(statistics.median(r['p99'] for r in results)):>10}"
                )
            ratios = [
                p["rps"] / w["rps"] for p, w in zip(runs["perf_load"], runs["wrk"], strict=True)
            ]
            print(
                f"perf_load / wrk requests/s, per round: "
                f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}"
            )
        finally:
            server.terminate()
            server.wait()


def bench_serve_modes(args: argparse.Namespace) -> None:
    from bridge_app import create_app as create_bridge
    from fastapi_app import create_app as create_fastapi
    from fastapi_app import make_engine, seed

    from pytest_bridgeperf import AppFactory
    from pytest_bridgeperf.load import run_load

    async def login(user: Any) -> dict[str, str]:
        response = await user.post(
            "/login", json={"username": f"user{user.index % 20}", "password": "correct horse"}
        )
        return {"token": response.json()["token"]}

    with tempfile.TemporaryDirectory() as tmp:
        fastapi_url = f"sqlite:///{tmp}/fastapi.db"
        seed(make_engine(fastapi_url))
        bridge_url = f"sqlite:///{tmp}/bridge.db"
        apps: dict[str, tuple[AppFactory, dict[str, Any]]] = {
            "bridge_app (aiohttp) GET /api/v1/dashboards": (
                AppFactory(create_bridge, bridge_url, seed=True),
                {"path": "/api/v1/dashboards?page=2&page_size=20"},
            ),
            f"fastapi_app (uvicorn) GET {PATH}": (
                AppFactory(create_fastapi, fastapi_url),
                {"path": PATH, "on_start": login, "headers": {"Authorization": "Bearer {token}"}},
            ),
        }
        print(
            f"{args.users} users, {args.seconds:g} s per run, modes interleaved; load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        for name, (factory, options) in apps.items():
            results: dict[str, list[Any]] = {"loop": [], "thread": [], "process": []}
            modes = list(results)
            for i in range(args.rounds):
                for mode in modes[i % 3 :] + modes[: i % 3]:
                    r = run_load(
                        factory,
                        {
                            **options,
                            "serve": mode,
                            "users": args.users,
                            "duration": args.seconds,
                            "warmup": "0.5s",
                            "record": False,
                            "progress": False,
                        },
                    )
                    results[mode].append(r)
            print(name)
            base = statistics.median(r.rps for r in results["loop"])
            for mode, runs in results.items():
                rps = statistics.median(r.rps for r in runs)
                p50 = statistics.median(r.p50 for r in runs)
                server = statistics.median(r.server.cpu for r in runs if r.server)
                generator = statistics.median(r.generator.cpu for r in runs if r.generator)
                print(
                    f"  serve={mode!r:<10} {rps:>8,.0f}/s ({rps / base:.2f}x loop)  p50 "
                    f"{_ms(p50)}  server CPU {server:.0f} %  generator CPU {generator:.0f} %"
                )
        print(f"load average after: {os.getloadavg()[0]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    wrk = sub.add_parser("wrk")
    wrk.add_argument("--rounds", type=int, default=5)
    wrk.add_argument("--seconds", type=float, default=5.0)
    wrk.add_argument("--connections", type=int, default=8)
    modes = sub.add_parser("serve-modes")
    modes.add_argument("--rounds", type=int, default=3)
    modes.add_argument("--seconds", type=float, default=3.0)
    modes.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    if args.command == "wrk":
        bench_wrk(args)
    else:
        bench_serve_modes(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
