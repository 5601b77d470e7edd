"""The two sides of ``--perf-against``: real interpreters running real checkouts (git
repositories made in tmp_path), rounds of test items, imports that resolve to each side's own
code, errors a person can act on, and teardown however the run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from against_projects import commit, fixtures_project, flat_project, init_repo, src_project, write

from pytest_bridgeperf.against.errors import AgainstError
from pytest_bridgeperf.against.options import SideArgs
from pytest_bridgeperf.against.refs import import_roots, open_checkout
from pytest_bridgeperf.against.sides import (
    PROTOCOL,
    SIDE_ENV,
    RoundResult,
    Side,
    hash_seed,
    side_environ,
)
from pytest_bridgeperf.metrics import Metric

pytestmark = pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0,
    reason="git is not installed",
)

#: a side's start-up (an interpreter, pytest and this environment's plugins, a small project)
#: takes ~2 s here; a minute means it hangs
START = 60.0
#: a round of these tiny tests takes milliseconds; half a minute means it hangs
ROUND = 30.0

MakeSide = Callable[..., Side]


@pytest.fixture
def make_side(tmp_path: Path) -> Iterator[MakeSide]:
    """Sides made for a test, with the options a controller would give them; all closed at the
    end of the test."""
    made: list[Side] = []

    def make(name: str, root: Path, *, options: tuple[str, ...] = (), **kwargs: Any) -> Side:
        args = SideArgs(options=("-p", "no:randomly", *options)).render(
            root, basetemp=tmp_path / f"basetemp-{name}-{len(made)}"
        )
        kwargs.setdefault("import_paths", import_roots(root, None))
        kwargs.setdefault("start_timeout", START)
        kwargs.setdefault("round_timeout", ROUND)
        side = Side(name, root, args=args, **kwargs)
        made.append(side)
        return side

    yield make
    for side in made:
        side.close()


def value(result: RoundResult, name: str) -> float:
    assert result.outcome == "passed", result.longrepr
    metrics = {m["name"]: Metric.from_json(m) for m in result.metrics}
    return metrics[name].value


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# each side runs its own code


@pytest.mark.slow
def test_each_side_imports_its_own_revision_flat_layout(
    tmp_path: Path, make_side: MakeSide
) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(repo, "answer 1", flat_project(1))
    commit(repo, "answer 2", flat_project(2))
    with open_checkout("HEAD~1", repo, tempdir=tmp_path) as checkout:
        a = make_side("A", repo, relocate=[(checkout.toplevel, repo)])
        b = make_side("B", checkout.root, relocate=[(repo, checkout.toplevel)], label="HEAD~1")
        collected_a = a.start(["tests/test_calc.py"])
        collected_b = b.start(["tests/test_calc.py"])
        assert (
            collected_a.nodeids
            == collected_b.nodeids
            == [
                "tests/test_calc.py::test_answer",
                "tests/test_calc.py::test_where",
            ]
        )
        assert value(a.run_round("tests/test_calc.py::test_answer"), "answer") == 2
        assert value(b.run_round("tests/test_calc.py::test_answer"), "answer") == 1
        where = b.run_round("tests/test_calc.py::test_where")
        printed = dict(where.sections)["Captured stdout call"]
        assert printed.startswith(f"FILE {checkout.root / 'calc' / '__init__.py'}")
        b.close()
        a.close()


@pytest.mark.slow
def test_each_side_imports_its_own_revision_src_layout(tmp_path: Path, make_side: MakeSide) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(repo, "answer 10", src_project(10))
    commit(repo, "answer 20", src_project(20))
    with open_checkout("HEAD~1", repo, tempdir=tmp_path) as checkout:
        assert import_roots(checkout.root, None) == [checkout.root, checkout.root / "src"]
        a = make_side("A", repo)
        b = make_side("B", checkout.root, relocate=[(repo, checkout.toplevel)])
        a.start(["tests/test_src.py"])
        b.start(["tests/test_src.py"])
        assert value(a.run_round("tests/test_src.py::test_answer"), "answer") == 20
        assert value(b.run_round("tests/test_src.py::test_answer"), "answer") == 10


@pytest.mark.slow
def test_a_test_new_on_one_side_is_missing_on_the_other(
    tmp_path: Path, make_side: MakeSide
) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(repo, "one", flat_project(1))
    commit(
        repo,
        "two",
        {
            "tests/test_calc.py": flat_project(2)["tests/test_calc.py"]
            + "\ndef test_new():\n    pass\n",
            "tests/test_added.py": "def test_added():\n    pass\n",
        },
    )
    with open_checkout("HEAD~1", repo, tempdir=tmp_path) as checkout:
        b = make_side("B", checkout.root)
        collected = b.start(["tests/test_calc.py", "tests/test_added.py"])
        assert collected.absent == ["tests/test_added.py"]
        assert "tests/test_calc.py::test_new" not in collected.nodeids
        new = b.run_round("tests/test_calc.py::test_new")
        assert new.outcome == "missing"
        assert new.metrics == []
        assert b.run_round("tests/test_added.py::test_added").outcome == "missing"
        assert b.run_round("tests/test_calc.py::test_answer").outcome == "passed"


def test_a_side_given_only_absent_files_collects_nothing(
    tmp_path: Path, make_side: MakeSide
) -> None:
    write(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    side = make_side("B", tmp_path / "p")
    collected = side.start(["tests/test_gone.py"])
    assert collected.nodeids == []
    assert collected.absent == ["tests/test_gone.py"]
    assert side.run_round("tests/test_gone.py::test_x").outcome == "missing"


# ---------------------------------------------------------------------------------------------
# a REF whose code cannot be imported


def test_a_conftest_that_fails_to_import(tmp_path: Path, make_side: MakeSide) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(
        repo,
        "broken conftest",
        {**flat_project(1), "conftest.py": "import module_that_is_not_there\n"},
    )
    commit(repo, "fixed", {**flat_project(2), "conftest.py": "\n"})
    with open_checkout("HEAD~1", repo, tempdir=tmp_path) as checkout:
        b = make_side("B", checkout.root, label="HEAD~1 (abc1234)")
        with pytest.raises(AgainstError) as info:
            b.start(["tests/test_calc.py"])
    message = str(info.value)
    assert message.startswith("side B (HEAD~1 (abc1234)) cannot import its code: conftest.py ")
    assert "failed to import 'module_that_is_not_there'" in message
    assert "ModuleNotFoundError" in message
    assert "\n" not in message  # one paragraph; the traceback is in .details
    assert info.value.details is not None
    assert "import module_that_is_not_there" in info.value.details
    assert b.pid is not None
    assert wait_gone(b.pid)


def test_a_test_module_that_fails_to_import(tmp_path: Path, make_side: MakeSide) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_ok.py": "def test_ok():\n    pass\n",
            "tests/test_bad.py": "from calc.fast import speedy\n\ndef test_bad():\n    pass\n",
            "calc/__init__.py": "\n",
        },
    )
    side = make_side("B", root)
    with pytest.raises(AgainstError) as info:
        side.start(["tests/test_ok.py", "tests/test_bad.py"])
    message = str(info.value)
    assert message.startswith("side B cannot import its code: tests/test_bad.py failed to ")
    assert "'calc.fast'" in message
    assert "ImportError while importing test module" in (info.value.details or "")


def test_a_collection_error_that_is_not_an_import_failure(
    tmp_path: Path, make_side: MakeSide
) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_ok.py": "def test_ok():\n    pass\n",
            "tests/test_param.py": """
                import pytest

                @pytest.mark.parametrize("x", [1])
                def test_p(y):
                    pass
                """,
        },
    )
    side = make_side("B", root)
    collected = side.start(["tests/test_ok.py", "tests/test_param.py"])
    assert collected.nodeids == ["tests/test_ok.py::test_ok"]
    assert [e.nodeid for e in collected.errors] == ["tests/test_param.py"]
    assert "uses no argument 'x'" in collected.errors[0].text


def test_a_session_that_does_not_start_says_why(tmp_path: Path, make_side: MakeSide) -> None:
    write(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    side = make_side("B", tmp_path / "p", options=("--no-such-option",))
    with pytest.raises(AgainstError) as info:
        side.start(["tests/test_a.py"])
    message = str(info.value)
    assert message.startswith("side B: its pytest session did not start (exit status 4): ")
    assert "unrecognized arguments: --no-such-option" in message


# ---------------------------------------------------------------------------------------------
# rounds


def test_rounds_have_fresh_function_fixtures_and_keep_module_ones(
    tmp_path: Path, make_side: MakeSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    write(root, fixtures_project())
    log = tmp_path / "fixtures.log"
    monkeypatch.setenv("FIXTURE_LOG", str(log))

    def events() -> list[str]:
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    side = make_side("A", root)
    side.start(["tests/test_fixtures.py", "tests/test_second.py"])
    assert events() == []  # collecting sets nothing up
    rounds = [side.run_round("tests/test_fixtures.py::test_rounds") for _ in range(3)]
    assert [value(r, "module rounds") for r in rounds] == [1, 2, 3]  # one module fixture
    assert [value(r, "function number") for r in rounds] == [1, 2, 3]  # a new one each round
    assert events() == [
        "session-setup",
        "module-setup",
        "function-setup 1",
        "function-teardown 1",
        "function-setup 2",
        "function-teardown 2",
        "function-setup 3",
        "function-teardown 3",
    ]
    # another test of the same module: the module fixture is shared, as in a pytest run
    assert side.run_round("tests/test_fixtures.py::test_other_module_user").outcome == "passed"
    assert "module-teardown" not in events()
    instance = [side.run_round("tests/test_fixtures.py::TestInstance::test_fresh_instance")]
    instance.append(side.run_round("tests/test_fixtures.py::TestInstance::test_fresh_instance"))
    assert [value(r, "instance runs") for r in instance] == [1, 1]  # a fresh instance each
    # moving to another module tears down what it does not share (the module fixture)
    assert side.run_round("tests/test_second.py::test_elsewhere").outcome == "passed"
    assert events()[-1] == "module-teardown"
    assert side.finish_item() is None
    assert "session-teardown" in events()
    side.close()
    assert events().count("session-setup") == events().count("session-teardown") == 1


def test_finish_item_tears_down_the_module_fixture(
    tmp_path: Path, make_side: MakeSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    write(root, fixtures_project())
    log = tmp_path / "fixtures.log"
    monkeypatch.setenv("FIXTURE_LOG", str(log))
    side = make_side("A", root)
    side.start(["tests/test_fixtures.py"])
    side.run_round("tests/test_fixtures.py::test_rounds")
    side.run_round("tests/test_fixtures.py::test_rounds")
    before = log.read_text(encoding="utf-8").splitlines()
    assert before.count("module-setup") == 1
    assert "module-teardown" not in before
    side.finish_item()
    after = log.read_text(encoding="utf-8").splitlines()
    assert after[len(before) :] == ["module-teardown", "session-teardown"]
    # the next round sets everything up again
    assert value(side.run_round("tests/test_fixtures.py::test_rounds"), "module rounds") == 1


def test_round_outcomes_and_their_texts(tmp_path: Path, make_side: MakeSide) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_outcomes.py": """
                import sys
                import pytest

                @pytest.fixture
                def broken_setup():
                    raise RuntimeError("setup broke")

                @pytest.fixture
                def broken_teardown():
                    yield
                    raise RuntimeError("teardown broke")

                def test_pass():
                    print("to stdout")
                    print("to stderr", file=sys.stderr)

                def test_fail():
                    assert 1 + 1 == 3

                def test_setup_error(broken_setup):
                    pass

                def test_teardown_error(broken_teardown):
                    pass

                def test_skip():
                    pytest.skip("not today")

                @pytest.mark.xfail(reason="known")
                def test_xfail():
                    assert False
                """
        },
    )
    side = make_side("A", root)
    side.start(["tests/test_outcomes.py"])

    def run(name: str) -> RoundResult:
        return side.run_round(f"tests/test_outcomes.py::{name}")

    passed = run("test_pass")
    assert (passed.outcome, passed.longrepr) == ("passed", None)
    assert ("Captured stdout call", "to stdout\n") in passed.sections
    assert ("Captured stderr call", "to stderr\n") in passed.sections
    assert 0 < passed.duration < passed.wall
    failed = run("test_fail")
    assert failed.outcome == "failed"
    assert "assert (1 + 1) == 3" in (failed.longrepr or "")
    assert run("test_setup_error").outcome == "error"
    assert "setup broke" in (run("test_setup_error").longrepr or "")
    teardown = run("test_teardown_error")
    assert (teardown.outcome, "teardown broke" in (teardown.longrepr or "")) == ("error", True)
    skipped = run("test_skip")
    assert (skipped.outcome, skipped.longrepr) == ("skipped", "Skipped: not today")
    assert (run("test_xfail").outcome, run("test_xfail").longrepr) == ("skipped", "xfail: known")
    # the output of earlier rounds does not pile up in later ones
    again = run("test_pass")
    assert [t for t, _ in again.sections] == ["Captured stdout call", "Captured stderr call"]


def test_mode_and_options_reach_the_side(tmp_path: Path, make_side: MakeSide) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_mode.py": """
                from pytest_bridgeperf.state import round_key

                def test_mode(request, perf):
                    side = request.config.pluginmanager.get_plugin("bridgeperf-side")
                    perf.record("warmup", int(side.request.mode == "warmup"), unit="count")
                    perf.record("rounds", side.request.options["rounds"], unit="count")
                    # what the plugin's body probes read
                    context = request.node.stash[round_key]
                    perf.record("heap", int(context.mode == "heap"), unit="count")
                    perf.record("number", context.number, unit="count")
                """
        },
    )
    side = make_side("A", root)
    side.start(["tests/test_mode.py"])
    result = side.run_round("tests/test_mode.py::test_mode", mode="warmup", options={"rounds": 7})
    assert (value(result, "warmup"), value(result, "rounds")) == (1, 7)
    assert (value(result, "heap"), value(result, "number")) == (0, 1)
    again = side.run_round("tests/test_mode.py::test_mode", mode="heap", options={"rounds": 7})
    assert (value(again, "warmup"), value(again, "heap"), value(again, "number")) == (0, 1, 2)


def test_marker_budgets_are_measured_in_a_side(tmp_path: Path, make_side: MakeSide) -> None:
    """The plugin's side mode measures what the marker's budgets need (here the SQL statements
    of the test body), round by round."""
    pytest.importorskip("sqlalchemy")
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_budget.py": """
                import pytest
                import sqlalchemy as sa

                @pytest.mark.perf(queries=10)
                def test_three_queries():
                    engine = sa.create_engine("sqlite://")
                    with engine.connect() as connection:
                        for _ in range(3):
                            connection.execute(sa.text("select 1"))
                """
        },
    )
    side = make_side("B", root)
    side.start(["tests/test_budget.py"])
    for _ in range(2):
        assert value(side.run_round("tests/test_budget.py::test_three_queries"), "queries") == 3


def test_the_side_environment(tmp_path: Path, make_side: MakeSide) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_env.py": """
                import os

                def test_env(perf):
                    perf.record("seed", int(os.environ["PYTHONHASHSEED"]), unit="count")
                    perf.record("hash", hash("bridgeperf") % 1000, unit="count")
                    assert os.environ["BRIDGEPERF_SIDE"] in ("A", "B")
                    print(os.environ["BRIDGEPERF_SIDE"], os.getcwd())
                """
        },
    )
    results = {}
    for name in ("A", "B"):
        side = make_side(name, root)
        collected = side.start(["tests/test_env.py"])
        assert collected.hashseed == hash_seed()
        results[name] = side.run_round("tests/test_env.py::test_env")
        side.close()
    assert value(results["A"], "seed") == value(results["B"], "seed")
    # the same seed: the same string hashes in both interpreters
    assert value(results["A"], "hash") == value(results["B"], "hash")
    for name, result in results.items():
        assert dict(result.sections)["Captured stdout call"] == f"{name} {root}\n"


def test_side_environ_and_hash_seed() -> None:
    assert hash_seed({}) == "0"
    assert hash_seed({"PYTHONHASHSEED": "random"}) == "0"
    assert hash_seed({"PYTHONHASHSEED": "123"}) == "123"
    env = side_environ("B", {"DB": "x"}, base={"PATH": "/bin", "PYTHONHASHSEED": "7"})
    assert env == {"PATH": "/bin", "PYTHONHASHSEED": "7", "DB": "x", SIDE_ENV: "B"}


def test_a_round_longer_than_the_timeout_stops_the_side(
    tmp_path: Path, make_side: MakeSide
) -> None:
    root = tmp_path / "p"
    write(root, {"tests/test_slow.py": "import time\n\ndef test_slow():\n    time.sleep(60)\n"})
    side = make_side("B", root)
    side.start(["tests/test_slow.py"])
    assert side.pid is not None
    with pytest.raises(AgainstError) as info:
        side.run_round("tests/test_slow.py::test_slow", timeout=1.0)
    assert str(info.value).startswith(
        "side B: a round of tests/test_slow.py::test_slow did not end within 1 s"
    )
    assert wait_gone(side.pid)
    with pytest.raises(AgainstError, match="side B was closed: it cannot run rounds"):
        side.run_round("tests/test_slow.py::test_slow")


def test_close_is_bounded_when_a_finalizer_hangs(tmp_path: Path, make_side: MakeSide) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            "tests/test_hang.py": """
                import time
                import pytest

                @pytest.fixture(scope="session")
                def stubborn():
                    yield
                    time.sleep(60)

                def test_uses(stubborn):
                    pass
                """
        },
    )
    side = make_side("B", root, close_timeout=1.0)
    side.start(["tests/test_hang.py"])
    side.run_round("tests/test_hang.py::test_uses")
    assert side.pid is not None
    began = time.monotonic()
    side.close()
    # 1 s of waiting plus 1 s of execnet's exit before the kill; far below the 60 s finalizer
    assert time.monotonic() - began < 30
    assert wait_gone(side.pid)


# ---------------------------------------------------------------------------------------------
# the other interpreter


def test_the_worker_and_the_controller_speak_the_same_protocol() -> None:
    from pytest_bridgeperf.against import worker

    assert worker.PROTOCOL == PROTOCOL


@pytest.mark.slow
def test_an_interpreter_without_pytest_bridgeperf(tmp_path: Path, make_side: MakeSide) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
        check=True,
        timeout=120,
    )
    python = tmp_path / "bare" / "bin" / "python"
    write(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    side = make_side("B", tmp_path / "p", python=str(python))
    with pytest.raises(AgainstError) as info:
        side.start(["tests/test_a.py"])
    message = str(info.value)
    assert message.startswith(f"side B: the interpreter {python} cannot run a side: ")
    assert "pytest-bridgeperf is not installed" in message
    assert "Install pytest-bridgeperf there" in message


def test_an_interpreter_with_a_pytest_bridgeperf_without_sides(
    tmp_path: Path, make_side: MakeSide
) -> None:
    old = tmp_path / "other-env"
    write(old, {"pytest_bridgeperf/__init__.py": ""})
    write(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    side = make_side("B", tmp_path / "p", env={"PYTHONPATH": str(old)})
    with pytest.raises(AgainstError) as info:
        side.start(["tests/test_a.py"])
    assert "has no against/worker.py (a version without --perf-against)" in str(info.value)


def test_an_interpreter_with_another_protocol(tmp_path: Path, make_side: MakeSide) -> None:
    fake = tmp_path / "other-env"
    write(
        fake,
        {
            "pytest_bridgeperf/__init__.py": "",
            "pytest_bridgeperf/against/__init__.py": "",
            "pytest_bridgeperf/against/worker.py": """
                import os, sys

                PROTOCOL = 0

                def serve(channel):
                    channel.send(("hello", {"protocol": PROTOCOL, "version": "0.0.1",
                                            "pid": os.getpid(), "executable": sys.executable}))
                """,
        },
    )
    write(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    side = make_side("B", tmp_path / "p", env={"PYTHONPATH": str(fake)})
    with pytest.raises(AgainstError) as info:
        side.start(["tests/test_a.py"])
    assert str(info.value).startswith(
        f"side B: the interpreter {sys.executable} has pytest-bridgeperf 0.0.1 (side protocol "
        f"0); this run needs side protocol {PROTOCOL}"
    )


def _second_environment(path: Path) -> Path:
    """Another virtual environment of this Python that sees this environment's packages (a
    ``.pth`` file adds our site directories, with their own ``.pth`` files): what
    ``python -m venv --system-site-packages`` gives where the packages live in the base
    interpreter. Returns its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    import site

    ours = [*site.getsitepackages(), site.getusersitepackages()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in ours if os.path.isdir(d))
    Path(purelib, "_bridgeperf_test_parent_env.pth").write_text(lines, encoding="utf-8")
    return python


@pytest.mark.slow
def test_perf_against_python_and_an_editable_install_of_a(
    tmp_path: Path, make_side: MakeSide
) -> None:
    """B's interpreter comes from another environment, in which A's project is installed in
    editable mode (setuptools' PEP 660 finder maps ``calc`` to A's tree). B must still import
    REF's ``calc``, and must not find what only A has: a submodule (the finder maps a mapped
    package's children too) and a top-level package."""
    repo = init_repo(tmp_path / "repo")
    commit(
        repo,
        "ref",
        {
            **flat_project(1),
            "tests/test_only_ref.py": """
                import importlib
                import pytest

                @pytest.mark.parametrize("name", ["calc.newmod", "onlya"])
                def test_not_on_this_side(name):
                    with pytest.raises(ImportError):
                        importlib.import_module(name)
                """,
        },
    )
    commit(
        repo,
        "head",
        {
            **flat_project(2),
            "calc/newmod.py": "X = 1\n",
            "onlya/__init__.py": "Y = 1\n",
            "pyproject.toml": flat_project(2)["pyproject.toml"].replace(
                'include = ["calc*"]', 'include = ["calc*", "onlya*"]'
            ),
        },
    )
    python = _second_environment(tmp_path / "venv-b")
    installed = subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("--no-build-isolation", "--no-deps", "-e", str(repo)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # the editable install really maps calc to A's tree in that environment
    probe = subprocess.run(
        [str(python), "-c", "import calc, calc.newmod, onlya; print(calc.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.stdout.strip() == str(repo / "calc" / "__init__.py"), probe.stderr
    with open_checkout("HEAD~1", repo, tempdir=tmp_path) as checkout:
        b = make_side("B", checkout.root, python=str(python), relocate=[(repo, checkout.toplevel)])
        collected = b.start(["tests/test_calc.py", "tests/test_only_ref.py"])
        assert collected.executable == str(python)
        assert collected.shared == []
        assert value(b.run_round("tests/test_calc.py::test_answer"), "answer") == 1
        where = dict(b.run_round("tests/test_calc.py::test_where").sections)
        assert where["Captured stdout call"].startswith(f"FILE {checkout.root}")
        for name in ("calc.newmod", "onlya"):
            result = b.run_round(f"tests/test_only_ref.py::test_not_on_this_side[{name}]")
            assert result.outcome == "passed", result.longrepr
        # the same environment as side A runs A's code, new modules included
        a = make_side("A", repo, python=str(python), relocate=[(checkout.toplevel, repo)])
        a.start(["tests/test_calc.py"])
        assert value(a.run_round("tests/test_calc.py::test_answer"), "answer") == 2


# ---------------------------------------------------------------------------------------------
# Ctrl-C in the controller


_CONTROLLER = """
import sys, time
from pathlib import Path
from pytest_bridgeperf.against.options import SideArgs
from pytest_bridgeperf.against.sides import Side

root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
sides = []
try:
    for name in ("A", "B"):
        args = SideArgs(options=("-p", "no:randomly")).render(root, basetemp=tmp / f"bt-{name}")
        side = Side(name, root, import_paths=[root], args=args, close_timeout=20.0)
        sides.append(side)
        side.start(["tests/test_long.py"])
    sides[1].run_round("tests/test_long.py::test_quick")  # B's session resource is up
    print(" ".join(str(s.pid) for s in sides), flush=True)
    sides[0].run_round("tests/test_long.py::test_long")  # interrupted here
finally:
    for side in sides:
        side.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("to", ["controller", "process group"])
def test_ctrl_c_in_the_controller_stops_both_sides(tmp_path: Path, to: str) -> None:
    """Ctrl-C at a terminal reaches the whole foreground process group (the controller and
    both sides at once); ``kill -INT`` reaches the controller alone."""
    root = tmp_path / "p"
    marks = tmp_path / "marks"
    marks.mkdir()
    write(
        root,
        {
            "tests/test_long.py": f"""
                import os, time
                from pathlib import Path
                import pytest

                MARKS = Path({str(marks)!r})

                @pytest.fixture(scope="session")
                def resource():
                    yield
                    side = os.environ["BRIDGEPERF_SIDE"]
                    (MARKS / f"session-teardown-{{side}}").write_text("done")

                def test_quick(resource):
                    pass

                def test_long(resource):
                    (MARKS / "running").write_text("yes")
                    time.sleep(120)
                """
        },
    )
    controller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CONTROLLER), str(root), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert controller.stdout is not None
        line = controller.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, controller.stderr.read() if controller.stderr else ""
        deadline = time.monotonic() + START
        while not (marks / "running").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (marks / "running").exists()
        if to == "controller":
            controller.send_signal(signal.SIGINT)
        else:
            os.killpg(controller.pid, signal.SIGINT)
        _, err = controller.communicate(timeout=60)
    finally:
        if controller.poll() is None:
            controller.kill()
    assert "KeyboardInterrupt" in err
    for pid in pids:
        assert wait_gone(pid), f"side process {pid} still runs"
    # both sessions ended properly: their session finalizers ran
    assert (marks / "session-teardown-A").exists()
    assert (marks / "session-teardown-B").exists()


def test_sides_import_no_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None; sys.modules['_pytest'] = None\n"
        "import pytest_bridgeperf.against, pytest_bridgeperf.against.sides\n"
        "import pytest_bridgeperf.against.options\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
