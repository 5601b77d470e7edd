"""``hosts=`` and ini ``perf_load_hosts`` checked before anything starts; what a generator is
sent; the merge of generators' results (no processes here: see test_load_hosts.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from load_hosts_support import buckets

from pytest_bridgeperf.load import HostShare, LoadOptionError, LoadResult, Request
from pytest_bridgeperf.load.generators import (
    merge_shares,
    options_to_raw,
    split_options,
    start_lead_ns,
)
from pytest_bridgeperf.load.hostspec import MAX_HOSTS, expand_hosts
from pytest_bridgeperf.load.options import MAX_CONNECTIONS, build_options
from pytest_bridgeperf.settings import SettingsError, resolve
from pytest_bridgeperf.stats import LatencyHistogram


def test_specs_expand_like_xdist_tx() -> None:
    assert expand_hosts(["2*popen", "ssh=gen1//python=/opt/venv/bin/python"]) == (
        "popen",
        "popen",
        "ssh=gen1//python=/opt/venv/bin/python",
    )
    assert expand_hosts("3 * popen") == ("popen",) * 3  # one spec as a string
    assert expand_hosts(None) == expand_hosts([]) == ()
    assert expand_hosts(["socket=10.0.0.5:8888", "ssh=-p 2222 u@h//env:X=1//chdir=/tmp"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["gen1"], "names no gateway type .* e.g. 'ssh=gen1' for a host reached over ssh"),
        (["popen//pyhton=/usr/bin/python3"], "unknown key 'pyhton'"),
        (["popen//ssh=gen1"], "one gateway type, not popen and ssh"),
        (["python=/usr/bin/python3"], "names no gateway type"),
        (["popen//bogus"], "unknown key 'bogus'"),
        (["ssh"], "ssh= needs a value"),
        (["ssh=gen1//via=gw0"], "via= gateways are not supported"),
        (["popen//execmodel=thread"], "main_thread_only"),
        (["0*popen"], "count must be"),
        ([f"{MAX_HOSTS + 1}*popen"], "count must be"),
        ([f"{MAX_HOSTS}*popen", "popen"], f"at most {MAX_HOSTS} generators"),
        (["popen//id=a", "popen//id=a"], "id=a names more than one"),
        (["2*popen//id=a"], "id=a names more than one"),
        ([""], "not an execnet gateway spec"),
        ([42], "not an execnet gateway spec"),
        (b"popen", "expected a list"),
        (["popen//python=a//python=b"], "duplicate key"),
    ],
)
def test_bad_specs_are_named(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_hosts(value)
    with pytest.raises(LoadOptionError, match="hosts=: .*" + message):
        build_options({"hosts": value}, max_duration=60)


def test_users_are_split_over_the_generators() -> None:
    opts = build_options({"hosts": ["3*popen"]}, max_duration=60)
    assert opts.users == 3  # closed model default of 1 user, raised to one per generator
    opts = build_options({"hosts": ["3*popen"], "users": 10, "rate": 90}, max_duration=60)
    parts = split_options(opts, 3)
    assert [p.users for p in parts] == [4, 3, 3]
    assert [p.rate for p in parts] == [30, 30, 30]
    assert all(p.hosts == () and p.workers == 1 for p in parts)
    opts = build_options({"hosts": ["2*popen"], "requests": 7}, max_duration=60)
    assert [p.requests for p in split_options(opts, 2)] == [4, 3]
    # connections are capped per generator, not per run
    assert build_options({"hosts": ["2*popen"], "users": 2048}, max_duration=60).users == 2048


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hosts": ["2*popen"], "workers": 2}, "not both"),
        ({"hosts": ["3*popen"], "users": 2}, "fewer than the 3 generators"),
        ({"hosts": ["3*popen"], "requests": 2}, "requests=2 is fewer than the 3 generators"),
        ({"hosts": ["2*popen"], "users": 2 * MAX_CONNECTIONS + 1}, "and generator"),
        ({"hosts": ["popen"], "body": lambda: b"x"}, "body= factories"),
        ({"hosts": ["popen"], "duration": "2h"}, "perf_max_duration"),
    ],
)
def test_bad_combinations_fail_before_anything_starts(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(LoadOptionError, match=message):
        build_options(options, max_duration=60)


def test_a_callable_target_refuses_hosts() -> None:
    with pytest.raises(LoadOptionError, match="hosts= runs HTTP targets"):
        build_options({"hosts": ["popen"]}, max_duration=60, is_callable=True)


_names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _requests(draw: st.DrawFn, index: int) -> Request:
    body = draw(st.sampled_from(["none", "json", "bytes", "text", "form"]))
    return Request(
        path="/" + draw(_names) + f"/{index}",
        method=draw(st.sampled_from(["GET", "POST", "PUT"])),
        name=draw(st.none() | _names.map(lambda n: f"{n}-{index}")),
        headers=draw(st.dictionaries(_names.map(lambda n: "X-" + n), _names, max_size=2)),
        json=draw(_json.filter(lambda v: v is not None)) if body == "json" else None,
        data=(
            draw(st.binary(max_size=8))
            if body == "bytes"
            else draw(st.text(max_size=8))
            if body == "text"
            else draw(st.dictionaries(_names, _names, max_size=2))
            if body == "form"
            else None
        ),
        weight=draw(st.floats(0.1, 10)),
    )


@given(
    users=st.integers(2, 50),
    rate=st.none() | st.floats(1, 5000),
    duration=st.none() | st.floats(0.1, 20),
    requests=st.none() | st.integers(2, 10_000),
    warmup=st.floats(0, 5),
    n=st.integers(1, 2),
    mix=st.integers(1, 3).flatmap(lambda k: st.tuples(*(_requests(i) for i in range(k)))),
    expect_status=st.none() | st.sets(st.integers(100, 599), min_size=1, max_size=3),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_what_a_generator_is_sent_rebuilds_its_options_exactly(
    users: int,
    rate: float | None,
    duration: float | None,
    requests: int | None,
    warmup: float,
    n: int,
    mix: tuple[Request, ...],
    expect_status: set[int] | None,
    flags: tuple[bool, bool, bool],
) -> None:
    """A generator validates its share again with build_options from plain data: the result is
    the share itself (the same requests, caps and flags), so both sides apply the same rules."""
    options: dict[str, Any] = {
        "users": users,
        "warmup": warmup,
        "mix": list(mix),
        "hosts": [f"{n}*popen"],
        "expect_status": expect_status,
        "verify_tls": flags[0],
        "expect_errors": flags[1],
        "follow_redirects": flags[2],
        "name": "run",
    }
    if rate is not None:
        options["rate"] = rate
    if duration is not None:
        options["duration"] = duration
    if requests is not None:
        options["requests"] = requests
    opts = build_options(options, max_duration=60)
    for part in split_options(opts, n):
        assert build_options(options_to_raw(part), max_duration=60) == part


def _result(latencies_ns: list[int], status: dict[int, int], name: str = "GET /") -> LoadResult:
    histogram = LatencyHistogram()
    for value in latencies_ns:
        histogram.record_ns(value)
    errors = sum(c for s, c in status.items() if s >= 400)
    return LoadResult(
        name=name,
        histogram=histogram,
        count=len(latencies_ns),
        errors=errors,
        elapsed=1.0,
        status_counts=status,
        error_types={f"HTTP {s}": c for s, c in status.items() if s >= 400},
        bytes_received=10 * len(latencies_ns),
        rounds=[(len(latencies_ns), errors)],
    )


@given(
    st.lists(st.lists(st.integers(1_000, 10**10), min_size=1, max_size=200), min_size=1, max_size=6)
)
def test_merged_generators_are_the_union_of_their_histograms(parts: list[list[int]]) -> None:
    shares = []
    for i, latencies in enumerate(parts):
        status = {200: len(latencies) - len(latencies) // 3, 503: len(latencies) // 3}
        result = _result(latencies, status)
        result.by_name = {"GET /": _result(latencies, status)}
        shares.append(
            HostShare(f"gw{i}", "popen", "h", i, True, result, cpu_seconds=0.5, wall_seconds=1.0)
        )
    merged = merge_shares(shares)
    one = LatencyHistogram()
    for latencies in parts:
        for value in latencies:
            one.record_ns(value)
    # the merge of the generators' histograms equals one histogram fed every latency
    assert buckets(merged.histogram) == buckets(one)
    assert buckets(merged["GET /"].histogram) == buckets(one)
    assert merged.count == sum(len(p) for p in parts)
    assert merged.status_counts[503] == sum(len(p) // 3 for p in parts)
    assert merged.error_types.get("HTTP 503", 0) == merged.errors
    assert merged.rounds == [(merged.count, merged.errors)]
    assert merged.workers == len(parts)
    assert [h.id for h in merged.hosts] == [f"gw{i}" for i in range(len(parts))]
    assert sum(h.rps for h in merged.hosts) == pytest.approx(merged.rps)
    assert all(h.cpu == pytest.approx(50.0) for h in merged.hosts)
    # and it survives the trip through plain data (a perf-against side, a report)
    again = LoadResult.from_dict(merged.to_dict())
    assert [h.to_dict() for h in again.hosts] == [h.to_dict() for h in merged.hosts]


def test_start_lead_covers_the_slowest_round_trip() -> None:
    assert start_lead_ns([]) == 50_000_000
    # a generator 30 ms away: the start instant leaves room for two of its round trips
    assert start_lead_ns([100_000, 30_000_000]) == 50_000_000 + 60_000_000 + 2_000_000


def test_settings_read_perf_load_hosts() -> None:
    ini = {"perf_load_hosts": ["2*popen", "ssh=-p 2222 gen1"]}
    settings = resolve({}, ini.get, rootdir=Path("."))
    assert settings.load_hosts == ("2*popen", "ssh=-p 2222 gen1")
    assert resolve({}, {}.get, rootdir=Path(".")).load_hosts == ()
    with pytest.raises(SettingsError, match="ini perf_load_hosts: 'gen1' names no gateway type"):
        resolve({}, {"perf_load_hosts": ["gen1"]}.get, rootdir=Path("."))


def test_help_lists_perf_load_hosts(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*perf_load_hosts (linelist):", "*execnet gateway specs*"])


def test_a_bad_ini_spec_fails_the_session_at_its_start(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nperf_load_hosts =\n    popen\n    ssh\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*ini perf_load_hosts*'ssh'*ssh= needs a value*"])


def test_new_modules_import_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import pytest_bridgeperf.load.hosts, pytest_bridgeperf.load.remote_worker\n"
        "import pytest_bridgeperf.load.generators, pytest_bridgeperf.load.hostspec\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
