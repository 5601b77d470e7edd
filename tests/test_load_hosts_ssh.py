"""``hosts=`` through a real ssh gateway: the sshd that ``.ci/sshd.sh`` starts on 127.0.0.1
with a throwaway key (``eval "$(bash .ci/sshd.sh)"`` exports ``BRIDGEPERF_TEST_SSH``).

The generator at the other end of the ssh connection runs on this machine, which is what lets
these tests load a loopback server through it and kill it mid-run; the code path is the one a
generator on another machine takes (ssh's options, its log, the bootstrap, the channel).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from load_hosts_support import (
    assert_union,
    load_server,
    new_tag,
    served,
    ssh_spec,
    tagged_python,
    wait_for_generators,
    wait_for_requests,
    wait_gone,
)

from pytest_bridgeperf.load import LoadHostError, run_load

SSH = ssh_spec()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        SSH is None,
        reason='no test sshd: run `eval "$(bash .ci/sshd.sh)"` first (it sets BRIDGEPERF_TEST_SSH)',
    ),
]

# An ssh generator starts in 0.3-0.8 s on an idle 2-core machine (the handshake, a login
# shell, the interpreter, the imports) and in a few seconds at a load average of 10: the
# bounds below are the design's own (a stop is one message) plus that, several times over.
_STARTUP_SLACK_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with load_server() as url:
        yield url


def _ssh(tag: str) -> str:
    assert SSH is not None
    return f"{SSH}//python={tagged_python(tag)}"


def _popen(tag: str) -> str:
    return f"popen//python={tagged_python(tag)}"


def test_an_ssh_and_a_popen_generator_merge_losslessly(server: str) -> None:
    served(server)
    tag = new_tag()
    result = run_load(
        server + "/ok", {"users": 4, "requests": 1000, "hosts": [_ssh(tag), _popen(tag)]}
    )
    assert result.count == 1000 == served(server)
    assert [h.count for h in result.hosts] == [500, 500]
    assert_union(result)
    ssh_share, popen_share = result.hosts
    assert ssh_share.spec == _ssh(tag)
    # the sshd runs here: the generator reads the controller's loopback token back
    assert ssh_share.local
    assert popen_share.local
    assert ssh_share.hostname == socket.gethostname()
    assert ssh_share.pid != popen_share.pid
    # the same machine's monotonic clock at the other end of ssh: the estimated offset is zero
    # within its bound (the generator read its clock between the ping and the pong)
    assert abs(ssh_share.clock_offset) <= ssh_share.clock_error
    assert 0 < ssh_share.cpu <= 150
    assert wait_gone(tag, 5.0) == []


def test_an_unknown_host_key_fails_without_a_prompt(server: str, tmp_path: Path) -> None:
    """No prompt is ever waited for (BatchMode): an ssh config whose known_hosts lacks the
    server's key fails at once, and says so."""
    assert SSH is not None
    config = Path(SSH.split("ssh_config=", 1)[1].split("//")[0])
    strict = tmp_path / "ssh_config"
    strict.write_text(
        config.read_text().replace(
            str(config.with_name("known_hosts")), str(tmp_path / "empty_known_hosts")
        )
    )
    spec = SSH.replace(str(config), str(strict)) + f"//python={sys.executable}"
    start = time.monotonic()
    with pytest.raises(LoadHostError, match="Host key verification failed"):
        run_load(server + "/ok", {"duration": "1s", "hosts": [spec]})
    assert time.monotonic() - start < _STARTUP_SLACK_S


def test_an_ssh_generator_that_dies_mid_run_is_named(server: str) -> None:
    tag = new_tag()
    killed: list[int] = []

    def kill_the_remote_interpreter() -> None:
        procs = wait_for_generators(tag, 2)
        wait_for_requests(server)
        # the one that is not our child: the interpreter at the other end of ssh
        remote = next(p for p in procs if p.ppid() != os.getpid())
        remote.send_signal(signal.SIGKILL)
        killed.append(remote.pid)

    killer = threading.Thread(target=kill_the_remote_interpreter)
    killer.start()
    start = time.monotonic()
    with pytest.raises(LoadHostError) as caught:
        run_load(server + "/ok", {"users": 2, "duration": "30s", "hosts": [_ssh(tag), _popen(tag)]})
    took = time.monotonic() - start
    killer.join()
    message = str(caught.value)
    assert (
        f"generator gw0 ({_ssh(tag)}) on {socket.gethostname()} (pid {killed[0]}) died" in message
    )
    assert "ssh exited with status" in message
    assert took < 30  # not the run's length: the other generator was stopped at once
    partial = caught.value.result
    assert partial is not None
    assert [h.id for h in partial.hosts] == ["gw1"]
    assert partial.count > 0
    assert wait_gone(tag, 5.0) == []


_CTRL_C = textwrap.dedent(
    """
    import sys
    from pytest_bridgeperf.load import run_load
    r = run_load(sys.argv[1], {"users": 2, "duration": "30s", "hosts": sys.argv[2:]})
    print("INTERRUPTED", r.interrupted, r.count, *(h.id for h in r.hosts), flush=True)
    """
)


def test_ctrl_c_at_the_terminal_stops_the_ssh_generator_with_its_partial_result(
    server: str,
) -> None:
    """The terminal's Ctrl-C reaches the whole process group: the controller, its popen
    generator and its ssh client. The ssh client ignores it (spawned so), the controller stops
    the remote generator with a message, and its partial result is part of the run's."""
    tag = new_tag()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C, server + "/ok", _ssh(tag), _popen(tag)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_generators(tag, 2)
        wait_for_requests(server)
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.split()[:2] == ["INTERRUPTED", "True"]
    assert int(out.split()[2]) > 0
    assert out.split()[3:] == ["gw0", "gw1"]  # both partial results, the ssh one included
    assert took < 10
    assert wait_gone(tag, 5.0) == []
