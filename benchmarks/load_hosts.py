"""Load from several generator processes: ``hosts=["N*popen"]`` against ``workers=N``.

    python benchmarks/load_hosts.py [--seconds 3] [--rounds 5] [--users 16] [--counts 1,2,4]
    python benchmarks/load_hosts.py --controller     # what the controller pays per generator

Starts nginx on 127.0.0.1 (Debian's, one worker, as benchmarks/load_throughput.py does; a small
uvloop server of that script's when nginx is missing), then runs, for each N of ``--counts``,
``perf_load`` with ``workers=N`` and with ``hosts=["N*popen"]`` — each run in a fresh process, the
order of the configurations rotating from round to round so that background load hits them
alike. Prints per round the load average and each configuration's requests/s, and at the end
per configuration the median and min–max of requests/s, generator CPU per request (CPU of the
generator processes over their runs, measured in them, divided by the requests), the
controller's CPU for the whole call (start-up, handshake, merge: measured in the controller
process, generators excluded) and the wall time beyond the measured duration (start-up and
shut-down), with the median of the per-round ratios hosts/workers.

``--controller`` measures the controller's cost per generator and per merged histogram: a run
of K popen generators doing almost nothing (K = 1, 2, 4, 8, 16), and the decode + merge of the
result messages of a real 4-generator run replicated 1-256 times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_throughput import start_target  # noqa: E402

_CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from pytest_bridgeperf.load import run_load
    if importlib.util.find_spec("numpy"):
        import numpy  # the fold's: an import, not a cost of the run
    url, kind = sys.argv[2], sys.argv[3]
    n, users, seconds = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    options = {"users": users, "duration": seconds}
    if kind == "hosts":
        options["hosts"] = [f"{n}*popen"]
    else:
        options["workers"] = n
    wall = time.perf_counter()
    cpu = time.process_time()
    result = run_load(url, options)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    assert result.errors == 0, result.summary()
    assert result.latency_count == result.count
    # workers=1 runs in this process: it is its own generator
    shares = [(h.cpu_seconds, h.cpu) for h in result.hosts] or [(cpu, cpu / seconds * 100)]
    print(json.dumps({
        "rps": result.rps,
        "count": result.count,
        "generator_cpu": sum(c for c, _ in shares),
        "generator_cpu_max": max(p for _, p in shares),
        "controller_cpu": cpu,
        "overhead": wall - seconds,
        "p50": result.p50,
        "p99": result.p99,
    }))
    """
)


def run_config(url: str, kind: str, n: int, users: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT), url, kind, str(n), str(users), str(seconds)],
            stdout=out,
            timeout=seconds + 120,
        )
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}={n} failed ({proc.returncode}):\n{text}")
    data: dict[str, float] = json.loads(text.strip().splitlines()[-1])
    return data


def _spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def throughput(url: str, counts: list[int], rounds: int, users: int, seconds: float) -> None:
    configs = [(kind, n) for n in counts for kind in ("workers", "hosts")]
    samples: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configs}
    ratios: dict[int, list[float]] = {n: [] for n in counts}
    loads: list[float] = []
    print(f"{users} users, {seconds:g} s per run, {rounds} rounds, configurations rotating")
    for r in range(rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        before = os.getloadavg()[0]
        line = []
        for kind, n in order:
            data = run_config(url, kind, n, users, seconds)
            samples[(kind, n)].append(data)
            line.append(f"{kind}={n} {data['rps']:,.0f}")
        after = os.getloadavg()[0]
        loads += [before, after]
        for n in counts:
            ratios[n].append(samples[("hosts", n)][-1]["rps"] / samples[("workers", n)][-1]["rps"])
        print(f"round {r + 1}: load {before:.1f} → {after:.1f}; " + ", ".join(line))
    print()
    print(
        f"load average over the rounds: median {statistics.median(loads):.1f}, "
        f"range {min(loads):.1f}–{max(loads):.1f}"
    )
    print(
        "| generators | requests/s median (min–max) | generator CPU per request µs | busiest "
        "generator CPU % | controller CPU per call ms | wall beyond the duration s |"
    )
    print("|---|---|---|---|---|---|")
    for kind, n in configs:
        runs = samples[(kind, n)]
        rps = [d["rps"] for d in runs]
        per_request = [d["generator_cpu"] / d["count"] * 1e6 for d in runs]
        busiest = [d["generator_cpu_max"] for d in runs]
        controller = [d["controller_cpu"] * 1e3 for d in runs]
        overhead = [d["overhead"] for d in runs]
        spec = f'hosts=["{n}*popen"]' if kind == "hosts" else f"workers={n}"
        print(
            f"| `{spec}` | {statistics.median(rps):,.0f} ({_spread(rps)}) | "
            f"{statistics.median(per_request):.1f} ({_spread(per_request, '{:.1f}')}) | "
            f"{statistics.median(busiest):.0f} | {statistics.median(controller):.0f} "
            f"({_spread(controller)}) | {statistics.median(overhead):.2f} "
            f"({_spread(overhead, '{:.2f}')}) |"
        )
    print()
    for n in counts:
        print(
            f"hosts/workers at N={n}: median of per-round ratios {statistics.median(ratios[n]):.2f}"
            f" ({_spread(ratios[n], '{:.2f}')})"
        )


def controller_cost(url: str, rounds: int) -> None:
    """The controller's CPU per generator, and per merged histogram."""
    from pytest_bridgeperf.load import LoadResult, run_load
    from pytest_bridgeperf.load.generators import merge_shares
    from pytest_bridgeperf.load.result import HostShare

    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| generators | controller CPU ms (median of rounds) | per generator ms | wall s |")
    print("|---|---|---|---|")
    for k in (1, 2, 4, 8, 16):
        cpus, walls = [], []
        for _ in range(rounds):
            wall = time.perf_counter()
            cpu = time.process_time()
            run_load(url, {"hosts": [f"{k}*popen"], "requests": k})
            cpus.append((time.process_time() - cpu) * 1e3)
            walls.append(time.perf_counter() - wall)
        cpu_ms = statistics.median(cpus)
        print(f"| {k} | {cpu_ms:.0f} | {cpu_ms / k:.1f} | {statistics.median(walls):.2f} |")
    # real result messages: a 3 s run of 4 generators with a mix of two names
    from pytest_bridgeperf.load import Request

    real = run_load(
        url,
        {
            "hosts": ["4*popen"],
            "users": 16,
            "duration": 3,
            "mix": [Request("/", name="a"), Request("/b", name="b")],
        },
    )
    messages = [h.to_dict() for h in real.hosts]
    size = statistics.median(len(json.dumps(m)) for m in messages)
    histograms = 3  # the total and two names
    print()
    print(
        f"a generator's result message: {size / 1024:.1f} KiB as JSON "
        f"({histograms} histograms, {real.count // 4:,} requests each)"
    )
    print("| generators merged | decode ms | merge ms | per generator ms | per histogram ms |")
    print("|---|---|---|---|---|")
    for n in (1, 4, 16, 64, 256):
        batch = [messages[i % len(messages)] for i in range(n)]
        decode = merge = 0.0
        for _ in range(rounds):
            t = time.perf_counter()
            shares = [HostShare.from_dict(m) for m in batch]
            decode += time.perf_counter() - t
            t = time.perf_counter()
            merged = merge_shares(shares)
            merge += time.perf_counter() - t
            assert isinstance(merged, LoadResult)
        decode, merge = decode / rounds * 1e3, merge / rounds * 1e3
        per = (decode + merge) / n
        print(f"| {n} | {decode:.1f} | {merge:.1f} | {per:.2f} | {per / histograms:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--counts", default="1,2,4", help="generator counts, e.g. 1,2,4")
    parser.add_argument("--controller", action="store_true", help="the controller's own cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, name = start_target(Path(tmp))
        try:
            print(f"target: {name} at {url}; {os.cpu_count()} CPUs")
            if args.controller:
                controller_cost(url, args.rounds)
            else:
                counts = [int(x) for x in args.counts.split(",")]
                throughput(url, counts, args.rounds, args.users, args.seconds)
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
