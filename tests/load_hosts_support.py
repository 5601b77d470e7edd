"""Helpers of the ``hosts=`` tests: a loopback server, generator processes found by a tag in
their command line, the ssh spec of ``.ci/sshd.sh``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from pytest_bridgeperf.load import LoadResult
from pytest_bridgeperf.stats import LatencyHistogram

SERVER = Path(__file__).with_name("load_server.py")


@contextmanager
def load_server() -> Iterator[str]:
    """tests/load_server.py on 127.0.0.1, in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()


def served(server: str) -> int:
    """Requests the server answered since the last call (it resets the count)."""
    with urllib.request.urlopen(server + "/count", timeout=10) as response:
        return int(response.read())


def wait_for_requests(server: str, timeout: float = 60.0) -> None:
    """Until the server has answered a request: the generators are running. Call it once the
    generator processes exist: it first drops what the server counted before (the last
    answers of a previous test's run), so that only this run's requests count."""
    served(server)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served(server) > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"no request reached {server} within {timeout:g} s")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def tagged_python(tag: str) -> str:
    """This interpreter, with ``-X bridgeperf_test=<tag>`` (an -X option Python ignores) so that
    the test finds the generator processes it started, over ssh too, and no one else's."""
    return f"{sys.executable} -X bridgeperf_test={tag}"


def generator_processes(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if f"bridgeperf_test={tag}" in cmdline and cmdline[0] == sys.executable:
            found.append(proc)
    return found


def wait_for_generators(tag: str, n: int, timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = generator_processes(tag)
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{n} generator processes tagged {tag} did not appear in {timeout:g} s")


def wait_gone(tag: str, timeout: float) -> list[psutil.Process]:
    """The generator processes still alive ``timeout`` seconds later (none, hopefully)."""
    deadline = time.monotonic() + timeout
    alive = generator_processes(tag)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return alive


def ssh_spec() -> str | None:
    """The execnet spec of the test sshd on 127.0.0.1 (``eval "$(.ci/sshd.sh)"``), if any."""
    return os.environ.get("BRIDGEPERF_TEST_SSH") or None


def buckets(histogram: LatencyHistogram) -> Counter[float]:
    """A histogram as {bucket value: count}: two histograms are equal when these are."""
    return Counter(dict(histogram.items()))


def assert_union(result: LoadResult) -> None:
    """The merged result is exactly the union of its generators' results: every latency
    bucket, count, error, status, error type and byte, in total and per request name."""
    shares = result.hosts
    assert shares, "not a run split over generators"
    union: Counter[float] = Counter()
    for share in shares:
        union.update(buckets(share.result.histogram))
    assert buckets(result.histogram) == union
    assert result.histogram.count == sum(s.result.histogram.count for s in shares)
    assert result.count == sum(s.count for s in shares)
    assert result.errors == sum(s.errors for s in shares)
    assert result.bytes_received == sum(s.result.bytes_received for s in shares)
    status: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    for share in shares:
        status.update(share.result.status_counts)
        kinds.update(share.result.error_types)
    assert result.status_counts == dict(status)
    assert result.error_types == dict(kinds)
    for name, part in result.by_name.items():
        per_name: Counter[float] = Counter()
        for share in shares:
            per_name.update(buckets(share.result.by_name[name].histogram))
        assert buckets(part.histogram) == per_name, name
        assert part.count == sum(s.result.by_name[name].count for s in shares)
    if shares[0].result.histogram.count:
        assert result.histogram.min == min(s.result.histogram.min for s in shares)
        assert result.histogram.max == max(s.result.histogram.max for s in shares)
