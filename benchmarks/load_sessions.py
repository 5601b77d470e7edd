"""What a per-user session costs the load generator: static requests, the same with
``on_start`` filling a per-user header (fast engine), and with ``engine="aiohttp"``.

    python benchmarks/load_sessions.py [--seconds 2] [--rounds 5] [--users 16]

Against nginx on 127.0.0.1 (tests' fallback: a small uvloop server), in this process, the
variants interleaved round by round (the order rotating) so background load hits each alike.
Prints per variant the median requests/s and client CPU per request (``time.process_time``
around the run), with their min–max, and each variant's ratio to the static run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_throughput import start_target

from pytest_bridgeperf.load import run_load


def _token(user: Any) -> dict[str, str]:
    return {"token": f"token-of-user-{user.index}"}


VARIANTS: dict[str, dict[str, Any]] = {
    "static (fast engine)": {"headers": {"Authorization": "Bearer fixed"}},
    "on_start + template (fast engine)": {
        "headers": {"Authorization": "Bearer {token}"},
        "on_start": _token,
    },
    "on_start + template (aiohttp engine)": {
        "headers": {"Authorization": "Bearer {token}"},
        "on_start": _token,
        "engine": "aiohttp",
    },
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, name = start_target(Path(tmp))
        try:
            print(f"target: {name} at {url}; {args.users} users, {args.seconds:g} s rounds")
            rps: dict[str, list[float]] = {k: [] for k in VARIANTS}
            cpu: dict[str, list[float]] = {k: [] for k in VARIANTS}
            names = list(VARIANTS)
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for variant in order:
                    started = time.process_time()
                    result = run_load(
                        url,
                        {
                            **VARIANTS[variant],
                            "users": args.users,
                            "duration": args.seconds,
                            "record": False,
                            "progress": False,
                        },
                    )
                    used = time.process_time() - started
                    rps[variant].append(result.rps)
                    cpu[variant].append(used / result.count * 1e6)
                    print(f"  round {round_ + 1} {variant:<40} {result.rps:>9,.0f}/s")
            base_rps = statistics.median(rps[names[0]])
            base_cpu = statistics.median(cpu[names[0]])
            print()
            print(f"{'variant':<40} {'requests/s (min–max)':>28} {'CPU/request':>14} ratio")
            for variant in names:
                r, c = statistics.median(rps[variant]), statistics.median(cpu[variant])
                span = f"{min(rps[variant]):,.0f}–{max(rps[variant]):,.0f}"
                print(
                    f"{variant:<40} {r:>9,.0f} ({span:>16}) {c:>11.1f} µs "
                    f"{r / base_rps:.2f}x rps, {c / base_cpu:.2f}x CPU"
                )
        finally:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
