"""Baselines in git: the merge driver, and conflicts without it, with a real repository and real
`pytest --perf --perf-update` runs on two branches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_bridgeperf.baseline import Baseline

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

BASELINE = "perf-baseline.json"
#: the driver as the README sets it up, through this interpreter (the venv's bin may not be on
#: PATH where the suite runs)
DRIVER = f"{sys.executable} -m pytest_bridgeperf merge-driver %O %A %B %P"


def _env(**values: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PERF_", "GIT_"))}
    env.update({k: str(v) for k, v in values.items()})
    return env


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", *args], cwd=repo, env=_env(), capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


def perf_update(repo: Path, select: str, *options: str, **values: int) -> None:
    """A real `pytest --perf --perf-update` run, measuring the counts given as env vars."""
    command = ["pytest", "--perf", "--perf-update", "--perf-accept", "-k", select, *options]
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=repo,
        env=_env(**values),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def values(repo: Path) -> dict[str, float]:
    baseline = Baseline.load(repo / BASELINE)  # also: a valid baseline
    return {
        nodeid.split("[")[1].rstrip("]"): baseline.metrics("default", nodeid)["queries"].value
        for nodeid in baseline.tests("default")
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main with a baseline of three tests, committed."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.invalid")
    git(root, "config", "user.name", "Dev")
    git(root, "config", "commit.gpgsign", "false")
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    (root / "test_app.py").write_text(
        textwrap.dedent(
            """
            import os
            import pytest

            @pytest.mark.parametrize("name", ["one", "two", "three"])
            @pytest.mark.perf
            def test_q(perf, name):
                perf.record("queries", int(os.environ.get(name.upper(), "1")), unit="count")
            """
        )
    )
    perf_update(root, "q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "baseline")
    return root


def use_driver(repo: Path) -> None:
    """The README's setup: one .gitattributes line and one git config command."""
    (repo / ".gitattributes").write_text(f"{BASELINE} merge=bridgeperf\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "merge driver")
    git(repo, "config", "merge.bridgeperf.driver", DRIVER)


def branches(repo: Path, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """`feature` updates the tests in ``theirs``, then `main` those in ``ours``."""
    git(repo, "checkout", "-q", "-b", "feature")
    perf_update(repo, " or ".join(theirs), **{k.upper(): v for k, v in theirs.items()})
    git(repo, "commit", "-q", "-am", "feature: update")
    git(repo, "checkout", "-q", "main")
    perf_update(repo, " or ".join(ours), **{k.upper(): v for k, v in ours.items()})
    git(repo, "commit", "-q", "-am", "main: update")


def test_driver_merges_different_tests(repo: Path) -> None:
    use_driver(repo)
    branches(repo, ours={"one": 10}, theirs={"two": 20})
    result = git(repo, "merge", "-q", "--no-edit", "feature")
    assert "CONFLICT" not in result.stdout
    assert values(repo) == {"one": 10, "two": 20, "three": 1}
    assert "<<<<<<<" not in (repo / BASELINE).read_text()


@pytest.mark.parametrize("direction", ["feature into main", "main into feature"])
def test_driver_takes_the_newer_measurement_of_one_test(repo: Path, direction: str) -> None:
    use_driver(repo)
    branches(repo, ours={"one": 10, "three": 30}, theirs={"one": 99, "two": 20})
    main_doc = json.loads(git(repo, "show", f"main:{BASELINE}").stdout)
    feature_doc = json.loads(git(repo, "show", f"feature:{BASELINE}").stdout)
    stamp = "environments", "default", "tests", "test_app.py::test_q[one]"

    def when(doc: Any) -> str:
        for key in stamp:
            doc = doc[key]
        return str(doc["updated"])

    assert when(main_doc) >= when(feature_doc)  # main measured it last
    main_newer = when(main_doc) > when(feature_doc)  # a tie to the millisecond takes ours
    if direction == "main into feature":
        git(repo, "checkout", "-q", "feature")
        result = git(repo, "merge", "--no-edit", "main")
        side, expected_one = ("theirs", 10) if main_newer else ("ours", 99)
    else:
        result = git(repo, "merge", "--no-edit", "feature")
        side, expected_one = "ours", 10
    # the newer measurement (main's) wins whichever branch the merge is made on
    assert values(repo) == {"one": expected_one, "two": 20, "three": 30}
    output = result.stdout + result.stderr
    assert f"[default] test_app.py::test_q[one]: changed on both sides, took {side}" in output
    # the merged file is what the plugin reads
    check = subprocess.run(
        [sys.executable, "-m", "pytest", "--perf", "-q"],
        cwd=repo,
        env=_env(ONE=expected_one, TWO=20, THREE=30),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_the_driver_the_plugin_names_the_conflict_and_the_fix(repo: Path) -> None:
    branches(repo, ours={"one": 10, "three": 30}, theirs={"one": 99, "two": 20})
    result = git(repo, "merge", "--no-edit", "feature", check=False)
    assert result.returncode != 0
    assert f"CONFLICT (content): Merge conflict in {BASELINE}" in result.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--perf", "-q"],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 4  # a usage error, before any test ran
    assert "unresolved git merge conflict" in run.stderr
    assert f"bridgeperf merge --resolve {repo / BASELINE}" in run.stderr
    assert "Traceback" not in run.stderr
    # the fix it names works, and is idempotent
    resolve = [sys.executable, "-m", "pytest_bridgeperf", "merge", "--resolve", BASELINE]
    done = subprocess.run(resolve, cwd=repo, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "now `git add perf-baseline.json`" in done.stdout
    assert values(repo) == {"one": 10, "two": 20, "three": 30}
    again = subprocess.run(resolve, cwd=repo, env=_env(), capture_output=True, text=True)
    assert "no git conflict markers, nothing to resolve" in again.stdout


def test_diff3_conflict_style_is_resolved_three_way(repo: Path) -> None:
    """With the ancestor in the conflict (diff3 style), a test pruned on one side and untouched
    on the other stays pruned (a two-way merge could not tell a prune from an addition)."""
    git(repo, "config", "merge.conflictStyle", "diff3")
    git(repo, "checkout", "-q", "-b", "feature")
    test_file = repo / "test_app.py"
    test_file.write_text(test_file.read_text().replace(', "three"]', "]"))
    perf_update(repo, "one or two", "--perf-prune", ONE=99, TWO=20)
    git(repo, "commit", "-q", "-am", "feature: drop test three, update one and two")
    git(repo, "checkout", "-q", "main")
    perf_update(repo, "one", ONE=10)
    git(repo, "commit", "-q", "-am", "main: update one")
    git(repo, "merge", "--no-edit", "feature", check=False)
    text = (repo / BASELINE).read_text()
    assert "|||||||" in text
    done = subprocess.run(
        [sys.executable, "-m", "pytest_bridgeperf", "merge", "--resolve", BASELINE],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # one: changed on both sides, main's measurement is the newer
    assert values(repo) == {"one": 10, "two": 20}


def test_driver_leaves_git_a_conflict_for_a_broken_side(repo: Path) -> None:
    use_driver(repo)
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / BASELINE).write_text('{"tool": "pytest-bridgeperf", "schema": 1, "environments": 7}\n')
    git(repo, "commit", "-q", "-am", "feature: a broken baseline")
    git(repo, "checkout", "-q", "main")
    perf_update(repo, "one", ONE=10)
    git(repo, "commit", "-q", "-am", "main: update")
    result = git(repo, "merge", "--no-edit", "feature", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "bridgeperf merge-driver: perf-baseline.json: not merged:" in output
    assert "environments: expected an object, got the number 7" in output
    assert "<<<<<<< ours" in (repo / BASELINE).read_text()
