"""Concurrent writers of one baseline: the lock, the re-read under it, and real pytest processes.

Before the lock, two `pytest --perf --perf-update` runs on one baseline lost one run's tests in
10 of 10 trials: each read the file at start and wrote back its own copy at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_bridgeperf import baseline as baseline_module
from pytest_bridgeperf.baseline import (
    Baseline,
    BaselineError,
    BaselineLock,
    lock_path,
    remove_stale_temp_files,
)

FP = {"cores": 2, "cpu": "Test CPU", "platform": "Linux-x86_64", "python": "CPython 3.11"}
ENTRY = {"better": "lower", "n": 1, "noisy": False, "stat": "value", "unit": "count", "value": 3}


@pytest.fixture(params=["flock", "fallback"])
def lock_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both lock implementations: flock(2), and the exclusive-create file used without it."""
    if request.param == "flock" and not baseline_module._USE_FLOCK:
        pytest.skip("no flock on this platform")
    monkeypatch.setattr(baseline_module, "_USE_FLOCK", request.param == "flock")
    return str(request.param)


def _add(nodeid: str) -> Any:
    def apply(baseline: Baseline) -> bool:
        baseline.set_test("default", nodeid, {"queries": ENTRY}, FP)
        return True

    return apply


# ---------------------------------------------------------------------------------------------
# the lock


def test_lock_excludes_a_second_writer_and_names_the_holder(tmp_path: Path, lock_kind: str) -> None:
    path = tmp_path / "perf-baseline.json"
    with BaselineLock(path):
        assert lock_path(path).exists()
        started = time.monotonic()
        with pytest.raises(BaselineError) as info, BaselineLock(path, timeout=0.2):
            pass  # pragma: no cover - never acquired
        assert time.monotonic() - started >= 0.2
    message = str(info.value)
    assert message.startswith(f"{path}: not updated: another writer (process {os.getpid()} on ")
    assert str(lock_path(path)) in message
    # released and removed: nothing is left next to the user's baseline
    assert not lock_path(path).exists()
    with BaselineLock(path, timeout=0.2):
        pass


def test_waiting_writer_gets_the_lock_when_it_is_released(tmp_path: Path, lock_kind: str) -> None:
    path = tmp_path / "perf-baseline.json"
    order: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with BaselineLock(path):
            holding.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    # flock locks belong to an open file, so a second open in this process waits like another
    # process would
    with BaselineLock(path, timeout=30):
        order.append("second")
    thread.join()
    assert order == ["first done", "second"]


def test_fallback_takes_over_a_lock_left_by_a_crashed_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baseline_module, "_USE_FLOCK", False)
    path = tmp_path / "perf-baseline.json"
    lock = lock_path(path)
    lock.write_text("4242 elsewhere\n")
    with pytest.raises(BaselineError, match="process 4242 on elsewhere"):
        BaselineLock(path, timeout=0.1).acquire()
    old = time.time() - baseline_module.STALE_LOCK_AGE - 5
    os.utime(lock, (old, old))
    with BaselineLock(path, timeout=5):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()


def test_flock_is_released_by_a_killed_process(tmp_path: Path) -> None:
    if not baseline_module._USE_FLOCK:
        pytest.skip("no flock on this platform")
    path = tmp_path / "perf-baseline.json"
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from pytest_bridgeperf.baseline import BaselineLock
        lock = BaselineLock(Path({str(path)!r}))
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(BaselineError, match=f"process {proc.pid} on"):
            BaselineLock(path, timeout=0.1).acquire()
        proc.kill()  # like kill -9: no release, the lock file stays behind
        proc.wait(30)
        assert lock_path(path).exists()
        with BaselineLock(path, timeout=10):
            pass
    finally:
        proc.kill()
        proc.wait(30)


# ---------------------------------------------------------------------------------------------
# Baseline.update


def test_update_applies_to_the_file_as_it_is_now(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"
    mine = Baseline.load(path)  # loaded at the start of "my" run, still empty
    Baseline.update(path, _add("t.py::theirs"))  # another run wrote meanwhile
    result = Baseline.update(path, _add("t.py::mine"))
    assert set(result.tests("default")) == {"t.py::theirs", "t.py::mine"}
    assert set(Baseline.load(path).tests("default")) == {"t.py::theirs", "t.py::mine"}
    assert mine.tests("default") == {}


def test_update_without_a_change_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"
    Baseline.update(path, _add("t.py::a"))
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    result = Baseline.update(path, lambda baseline: False)
    assert path.stat().st_mtime_ns == before - 10**9
    assert set(result.tests("default")) == {"t.py::a"}
    assert not lock_path(path).exists()


def test_update_releases_the_lock_when_apply_fails(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"

    def broken(baseline: Baseline) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Baseline.update(path, broken)
    assert not lock_path(path).exists()
    Baseline.update(path, _add("t.py::a"), timeout=1)
    assert not path.with_name(".perf-baseline.json.lock").exists()


def test_concurrent_updates_in_threads_keep_every_entry(tmp_path: Path, lock_kind: str) -> None:
    path = tmp_path / "perf-baseline.json"
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for round_ in range(5):
                Baseline.update(path, _add(f"t.py::w{index}_{round_}"), timeout=60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    expected = {f"t.py::w{i}_{r}" for i in range(6) for r in range(5)}
    assert set(Baseline.load(path).tests("default")) == expected


# ---------------------------------------------------------------------------------------------
# stale temporary files


def test_stale_temp_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"
    old = time.time() - baseline_module.STALE_TEMP_AGE - 5
    stale = tmp_path / ".perf-baseline.json.abc123.tmp"
    stale.write_text('{"half": ')
    os.utime(stale, (old, old))
    fresh = tmp_path / ".perf-baseline.json.def456.tmp"
    fresh.write_text('{"being written": ')  # young: may belong to a writer that does not lock
    other = tmp_path / ".report.json.xyz.tmp"
    other.write_text("not ours")
    os.utime(other, (old, old))
    Baseline.update(path, _add("t.py::a"))
    assert not stale.exists()
    assert fresh.exists()
    assert other.exists()
    assert set(Baseline.load(path).tests("default")) == {"t.py::a"}


def test_temp_file_locked_by_a_live_writer_is_kept(tmp_path: Path) -> None:
    if not baseline_module._USE_FLOCK:
        pytest.skip("no flock on this platform")
    import fcntl

    path = tmp_path / "perf-baseline.json"
    tmp = tmp_path / ".perf-baseline.json.live.tmp"
    tmp.write_text("{")
    old = time.time() - baseline_module.STALE_TEMP_AGE - 5
    os.utime(tmp, (old, old))
    # a second open file, as another process holding it would be
    with open(tmp, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert remove_stale_temp_files(path) == []
        assert tmp.exists()
    assert remove_stale_temp_files(path) == [tmp]
    assert not tmp.exists()


def test_write_killed_midway_leaves_a_temp_file_the_next_write_removes(tmp_path: Path) -> None:
    """A writer killed (SIGKILL) while it writes: the baseline is intact and the next write
    cleans up what it left."""
    path = tmp_path / "perf-baseline.json"
    Baseline.update(path, _add("t.py::before"))
    original = path.read_bytes()
    code = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from pytest_bridgeperf import baseline as b
        real_fsync = os.fsync
        def stall(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = stall
        def apply(bl):
            bl.set_test("default", "t.py::killed", {{}}, {FP!r})
            return True
        b.Baseline.update(Path({str(path)!r}), apply)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait(30)
    leftovers = list(tmp_path.glob(".perf-baseline.json.*.tmp"))
    assert len(leftovers) == 1
    assert path.read_bytes() == original
    old = time.time() - baseline_module.STALE_TEMP_AGE - 5
    os.utime(leftovers[0], (old, old))
    Baseline.update(path, _add("t.py::after"))
    assert list(tmp_path.glob(".perf-baseline.json.*.tmp")) == []
    assert set(Baseline.load(path).tests("default")) == {"t.py::before", "t.py::after"}


# ---------------------------------------------------------------------------------------------
# real pytest processes


def _project(root: Path, writers: int) -> None:
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n")
    for index in range(writers):
        (root / f"test_w{index}.py").write_text(
            textwrap.dedent(
                f"""
                import pytest

                @pytest.mark.perf
                def test_a(perf):
                    perf.record("queries", {index + 1}, unit="count")

                @pytest.mark.perf
                def test_b(perf):
                    perf.record("items", {index + 100}, unit="count")
                """
            )
        )


@pytest.mark.parametrize("writers", [2, 4, 8])
def test_concurrent_pytest_updates_keep_every_test(tmp_path: Path, writers: int) -> None:
    """N real `pytest --perf --perf-update` processes, each updating its own file's tests of one
    baseline, started together: every test of every process is in the baseline afterwards."""
    _project(tmp_path, writers)
    # one existing entry no process runs: kept untouched by every merge
    Baseline.update(tmp_path / "perf-baseline.json", _add("test_gone.py::test_kept"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PERF_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "--perf", "--perf-update", f"test_w{i}.py"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(writers)
    ]
    outputs = []
    # bounded: eight processes start in ~10 s on two idle cores; five minutes covers a loaded CI
    # machine and still ends a hung lock
    deadline = time.monotonic() + 300
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("concurrent pytest --perf-update runs did not finish in 300 s")
        outputs.append(out)
        assert proc.returncode == 0, out
        assert "2 test(s) written, 0 pruned" in out, out
    document = json.loads((tmp_path / "perf-baseline.json").read_text())
    tests = document["environments"]["default"]["tests"]
    expected = {f"test_w{i}.py::test_{n}" for i in range(writers) for n in "ab"}
    assert set(tests) == expected | {"test_gone.py::test_kept"}
    for index in range(writers):
        assert tests[f"test_w{index}.py::test_a"]["metrics"]["queries"]["value"] == index + 1
    assert not lock_path(tmp_path / "perf-baseline.json").exists()
    assert list(tmp_path.glob(".perf-baseline.json.*")) == []
