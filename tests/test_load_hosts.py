"""``perf_load(target, hosts=[...])`` with real popen gateways against a loopback server: the
merge, the shares, the start, and every way a generator can fail or be stopped.

The ssh gateway gets the same checks in test_load_hosts_ssh.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from load_hosts_support import (
    assert_union,
    generator_processes,
    load_server,
    new_tag,
    served,
    tagged_python,
    wait_for_generators,
    wait_for_requests,
    wait_gone,
)

from pytest_bridgeperf import __version__
from pytest_bridgeperf.load import (
    LoadConnectionError,
    LoadHostError,
    LoadTargetError,
    Request,
    arun_load,
    hosts,
    run_load,
)

pytestmark = pytest.mark.slow

# Bounds of the failure tests. Starting a popen generator takes 0.2-0.5 s on an idle 2-core
# machine and up to ~3 s at a load average of 10; stopping one takes a message. The bounds are
# what the design promises (hosts.STOP_WAIT_S, hosts.SILENCE_S...) plus that start-up time,
# several times over: they separate "bounded" from "hangs until the 20-30 s run ends".
_STARTUP_SLACK_S = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with load_server() as url:
        yield url


def _popen(tag: str, n: int = 1) -> list[str]:
    return [f"popen//python={tagged_python(tag)}"] * n


def test_generators_split_the_run_and_merge_losslessly(server: str) -> None:
    served(server)
    tag = new_tag()
    mix = [Request("/ok", name="ok", weight=3), Request("/status/503", name="fail")]
    result = run_load(server, {"users": 4, "requests": 800, "mix": mix, "hosts": _popen(tag, 2)})
    # every request counted once, by the server too
    assert result.count == 800 == served(server)
    assert result.workers == 2
    assert [h.id for h in result.hosts] == ["gw0", "gw1"]
    assert [h.count for h in result.hosts] == [400, 400]  # requests= split exactly
    assert [h.users for h in result.hosts] == [2, 2]
    assert_union(result)
    assert result.status_counts.keys() == {200, 503}
    assert result.error_types == {"HTTP 503": result.status_counts[503]}
    assert result["ok"].count + result["fail"].count == 800
    for share in result.hosts:
        assert share.local  # popen: this machine's loopback
        assert share.hostname == socket.gethostname()
        assert share.pid not in (0, os.getpid())
        assert share.cpu_seconds > 0
        # a single-threaded engine: a bit over one core at most (the idle execnet receiver and
        # heartbeat threads); far below two, which would mean a wrong CPU or wall clock
        assert 0 < share.cpu <= 150
        # the same machine, so the same monotonic clock: the estimated offset is zero within
        # its bound (the generator read its clock between the ping and the pong)
        assert abs(share.clock_offset) <= share.clock_error
    assert "2 generators, busiest CPU" in result.summary()
    # the generators are gone with the run
    assert wait_gone(tag, 5.0) == []


def test_generators_exit_by_themselves_when_the_run_ends(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a generator's channel ends its interpreter; killing it (after 2 s) is for
    generators that hang. A receiver-thread exception once kept 1 in ~12 of them alive past
    their run: 20 generators here catch that most of the time."""
    statuses: list[int | None] = []
    finish_close = hosts._Link.finish_close

    def recording(link: hosts._Link, until: float) -> None:
        finish_close(link, until)
        statuses.append(link.io.popen.returncode)

    monkeypatch.setattr(hosts._Link, "finish_close", recording)
    for _ in range(10):
        run_load(server + "/ok", {"users": 2, "requests": 20, "hosts": ["2*popen"]})
    assert statuses == [0] * 20


def test_a_duration_run_shares_one_window(server: str) -> None:
    tag = new_tag()
    result = run_load(server + "/ok", {"users": 2, "duration": "1s", "hosts": _popen(tag, 2)})
    assert result.elapsed == pytest.approx(1.0)
    assert all(h.result.elapsed == pytest.approx(1.0) for h in result.hosts)
    # the throughput of the run is the sum of the generators' over the common window
    assert result.rps == pytest.approx(sum(h.rps for h in result.hosts))
    assert sum(h.count for h in result.hosts) == result.count > 0
    # rounds (0.1 s each) line up because the generators started together: they add up. The
    # last one is lost when the run's end fires before it (a round counts once every generator
    # completed it)
    assert len(result.rounds) == min(len(h.result.rounds) for h in result.hosts) in (9, 10)
    for i, (count, errors) in enumerate(result.rounds):
        assert count == sum(h.result.rounds[i][0] for h in result.hosts)
        assert errors == 0
    assert_union(result)


def test_the_rate_is_divided_between_generators(server: str) -> None:
    tag = new_tag()
    result = run_load(
        server + "/ok", {"rate": 200, "duration": "1s", "users": 4, "hosts": _popen(tag, 2)}
    )
    assert result.target_rate == 200
    assert [h.result.target_rate for h in result.hosts] == [100, 100]
    assert result.intended == pytest.approx(200, abs=2)
    assert result.sent >= 0.95 * result.intended
    assert_union(result)


def test_an_in_process_app_is_served_to_popen_generators() -> None:
    from aiohttp import web

    handled = [0]

    async def hello(request: web.Request) -> web.Response:
        handled[0] += 1
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    tag = new_tag()
    result = run_load(app, {"users": 2, "requests": 300, "hosts": _popen(tag, 2)})
    assert result.count == 300 == handled[0]
    assert result.errors == 0
    assert_union(result)


def test_a_socket_gateway_generator(server: str) -> None:
    """``socket=host:port``: execnet's socket server (here on 127.0.0.1) runs the generator in
    its own process; the controller has no process of its own to start."""
    import execnet.script.socketserver as socketserver

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, socketserver.__file__, f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "execnet's socket server did not start"
                time.sleep(0.05)
        served(server)
        result = run_load(
            server + "/ok", {"users": 2, "requests": 200, "hosts": [f"socket=127.0.0.1:{port}"]}
        )
        assert result.count == 200 == served(server)
        (share,) = result.hosts
        assert share.local
        assert share.pid == proc.pid  # the socket server's own process ran it
        assert_union(result)
    finally:
        proc.kill()
        proc.wait()


def test_ini_generators_apply_unless_a_run_names_its_own(server: str) -> None:
    tag = new_tag()
    options = {"users": 2, "requests": 40}
    via_ini = run_load(server + "/ok", options, default_hosts=_popen(tag, 2))
    assert len(via_ini.hosts) == 2
    assert (
        run_load(server + "/ok", {**options, "hosts": None}, default_hosts=_popen(tag)).hosts == []
    )
    local = run_load(server + "/ok", {**options, "workers": 2}, default_hosts=_popen(tag))
    assert [h.id for h in local.hosts] == ["worker0", "worker1"]
    # a callable runs in this process whatever the ini says
    assert run_load(lambda: None, {"requests": 10}, default_hosts=_popen(tag)).hosts == []


def test_a_generator_in_another_network_namespace_may_not_load_loopback(server: str) -> None:
    """The loopback probe, not the spec, decides: this generator runs on this machine but in a
    network namespace of its own, where 127.0.0.1 is not this server."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to start a generator in a network namespace of its own")
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not let unshare create a network namespace")
    served(server)
    spec = f"popen//python=unshare -rn {sys.executable}"
    with pytest.raises(LoadTargetError, match=r"generator\(s\) gw1 on .* cannot reach"):
        run_load(server + "/ok", {"users": 2, "duration": "1s", "hosts": ["popen", spec]})
    assert served(server) == 0  # refused before anything was sent


def test_a_refused_target_fails_naming_the_generator_and_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    tag = new_tag()
    start = time.monotonic()
    with pytest.raises(
        LoadConnectionError,
        match=rf"generator gw\d \(popen.*\): cannot connect to 127\.0\.0\.1:{port}",
    ):
        run_load(f"http://127.0.0.1:{port}/", {"duration": "30s", "hosts": _popen(tag, 2)})
    assert time.monotonic() - start < _STARTUP_SLACK_S  # at once, not after the 30 s run
    assert wait_gone(tag, 5.0) == []


def test_a_generator_with_another_version_is_refused(tmp_path: Path, server: str) -> None:
    package = Path(__import__("pytest_bridgeperf").__file__).parent
    shutil.copytree(package, tmp_path / "pytest_bridgeperf")
    init = tmp_path / "pytest_bridgeperf" / "__init__.py"
    init.write_text(init.read_text().replace(__version__, "0.0.1"))
    spec = f"popen//python=env PYTHONPATH={tmp_path} {sys.executable}"
    start = time.monotonic()
    with pytest.raises(LoadHostError) as caught:
        run_load(server + "/ok", {"users": 2, "duration": "1s", "hosts": ["popen", spec]})
    message = str(caught.value)
    assert f"generator gw1 ({spec})" in message
    assert f"has pytest-bridgeperf 0.0.1 (generator protocol 1); this run is {__version__}" in (
        message
    )
    assert f"install pytest-bridgeperf[load]=={__version__} there" in message
    assert caught.value.host == spec
    assert time.monotonic() - start < _STARTUP_SLACK_S


def test_a_generator_without_the_package_is_refused(server: str) -> None:
    spec = f"popen//python={sys.executable} -S"  # no site-packages: no pytest-bridgeperf
    with pytest.raises(LoadHostError, match=r"cannot run a generator: ModuleNotFoundError"):
        run_load(server + "/ok", {"duration": "1s", "hosts": [spec]})


def test_an_unreachable_host_fails_at_once_with_what_ssh_said(server: str) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    spec = f"ssh=-p {port} 127.0.0.1//python={sys.executable}"
    start = time.monotonic()
    with pytest.raises(LoadHostError, match=rf"cannot reach it over ssh: .*port {port}.*refused"):
        run_load(server + "/ok", {"duration": "1s", "hosts": ["popen", spec]})
    # a refused connection ends ssh at once; the popen generator was stopped with it
    assert time.monotonic() - start < _STARTUP_SLACK_S


def test_a_host_that_never_answers_fails_in_bounded_time(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ssh server that accepts the connection and never speaks: ssh's ConnectTimeout (set
    from the connect timeout) ends it."""
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    monkeypatch.setattr(hosts, "CONNECT_TIMEOUT_S", 3.0)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        spec = f"ssh=-p {mute.getsockname()[1]} 127.0.0.1//python={sys.executable}"
        start = time.monotonic()
        with pytest.raises(LoadHostError, match=r"banner exchange|not started within 3 s"):
            run_load(server + "/ok", {"duration": "1s", "hosts": [spec]})
        took = time.monotonic() - start
    assert 2.0 < took < 3.0 + _STARTUP_SLACK_S


def test_an_interpreter_that_hangs_is_killed_after_the_connect_timeout(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "CONNECT_TIMEOUT_S", 2.0)
    tag = new_tag()
    # an interpreter that never reads execnet's bootstrap (the tag ends up in its sys.argv)
    spec = f"popen//python={sys.executable} -c 'import time; time.sleep(1000)' {tag}"
    start = time.monotonic()
    with pytest.raises(LoadHostError, match=r"not started within 2 s \(it was waiting for its"):
        run_load(server + "/ok", {"duration": "1s", "hosts": [spec]})
    assert time.monotonic() - start < 2.0 + _STARTUP_SLACK_S
    hung = [p for p in psutil.Process().children() if tag in p.cmdline()]
    assert all(p.status() == psutil.STATUS_ZOMBIE for p in hung)  # killed, not yet reaped


def _kill_one_generator_mid_run(server: str, tag: str, sig: int) -> tuple[int, list[int]]:
    """In a thread: once requests flow, send ``sig`` to one generator; returns its pid."""
    procs = wait_for_generators(tag, 2)
    wait_for_requests(server)
    victim = procs[0]
    victim.send_signal(sig)
    return victim.pid, [p.pid for p in procs]


def test_a_generator_that_dies_mid_run_fails_it_with_the_host_named(server: str) -> None:
    tag = new_tag()
    served(server)
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.append(_kill_one_generator_mid_run(server, tag, signal.SIGKILL)[0])
    )
    killer.start()
    start = time.monotonic()
    with pytest.raises(LoadHostError) as caught:
        run_load(server + "/ok", {"users": 2, "duration": "30s", "hosts": _popen(tag, 2)})
    took = time.monotonic() - start
    killer.join()
    message = str(caught.value)
    assert f"(pid {killed[0]}) died" in message
    assert "its process was killed by signal 9" in message
    # the other generator was stopped and its partial result attached: far from the 30 s
    assert took < 30
    partial = caught.value.result
    assert partial is not None
    assert partial.interrupted
    assert len(partial.hosts) == 1
    assert partial.hosts[0].pid != killed[0]
    assert partial.count > 0
    assert "partial result of the other 1 generator(s)" in message
    assert wait_gone(tag, 5.0) == []


def test_a_generator_that_stops_answering_is_given_up(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "SILENCE_S", 2.0)
    tag = new_tag()
    frozen: list[int] = []
    freezer = threading.Thread(
        target=lambda: frozen.append(_kill_one_generator_mid_run(server, tag, signal.SIGSTOP)[0])
    )
    freezer.start()
    start = time.monotonic()
    try:
        with pytest.raises(LoadHostError, match=r"stopped answering .*nothing heard for 2 s"):
            run_load(server + "/ok", {"users": 2, "duration": "30s", "hosts": _popen(tag, 2)})
        assert time.monotonic() - start < 30
    finally:
        freezer.join()
        for proc in generator_processes(tag):
            proc.kill()
    assert wait_gone(tag, 5.0) == []


def test_a_failing_test_stops_every_generator(server: str) -> None:
    """A test that fails while an ``arun`` is under way (here: cancels it, as pytest-asyncio
    does to the tasks of a failed test's loop) leaves no generator behind."""
    tag = new_tag()

    async def main() -> float:
        task = asyncio.create_task(
            arun_load(server + "/ok", {"users": 2, "duration": "30s", "hosts": _popen(tag, 2)})
        )
        await asyncio.to_thread(wait_for_generators, tag, 2)
        await asyncio.to_thread(wait_for_requests, server)
        task.cancel()
        start = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    took = asyncio.run(main())
    assert took < 10
    assert wait_gone(tag, 5.0) == []


_CTRL_C = textwrap.dedent(
    """
    import sys
    from pytest_bridgeperf.load import run_load
    r = run_load(sys.argv[1], {"users": 2, "duration": "30s", "hosts": sys.argv[2:]})
    pids = [h.pid for h in r.hosts]
    print("INTERRUPTED", r.interrupted, r.count, len(r.hosts), *pids, flush=True)
    """
)


@pytest.mark.parametrize("group", [False, True], ids=["controller-only", "process-group"])
def test_ctrl_c_stops_every_generator_with_partial_results(server: str, group: bool) -> None:
    """Ctrl-C at a terminal reaches the whole process group (controller and popen generators);
    ``kill -INT`` only the controller. Either way every generator stops and reports."""
    tag = new_tag()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C, server + "/ok", *_popen(tag, 2)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_generators(tag, 2)
        wait_for_requests(server)
        start = time.monotonic()
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    flag, interrupted, count, n, *pids = out.split()
    assert (flag, interrupted, n) == ("INTERRUPTED", "True", "2")
    assert int(count) > 0
    assert took < 10  # a message to each generator, their partial results, the exit
    assert wait_gone(tag, 5.0) == []
    assert not any(psutil.pid_exists(int(p)) for p in pids)


def test_the_test_timeout_stops_every_generator(pytester: pytest.Pytester, server: str) -> None:
    """pytest-timeout's signal method: the run is cut before the timeout and fails the test
    with its own message; the generators end first."""
    tag = new_tag()
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.timeout(6, method="signal")
        def test_long(perf_load):
            perf_load({server + "/ok"!r}, users=2, duration="20s", hosts={_popen(tag, 2)!r})
        """
    )
    start = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    took = time.monotonic() - start
    result.assert_outcomes(failed=1)
    # the generators ended at the deadline passed to them, before the alarm had to fire
    result.stdout.fnmatch_lines(
        ["*TimeoutError: the load run was stopped by the test's timeout of 6 s (pytest-timeout)*"]
    )
    assert took < 20
    assert wait_gone(tag, 5.0) == []
