"""Real git repositories and small projects for the ``--perf-against`` tests."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

#: a fixed identity and no user or system configuration: the tests' commits do not depend on
#: the machine's git setup
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Perf Tester",
    "GIT_AUTHOR_EMAIL": "perf@example.invalid",
    "GIT_COMMITTER_NAME": "Perf Tester",
    "GIT_COMMITTER_EMAIL": "perf@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def commit(repo: Path, message: str, files: Mapping[str, str] | None = None) -> str:
    """Write ``files`` (relative path → text), commit everything, return the full sha."""
    write(repo, files or {})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def worktrees(repo: Path) -> list[Path]:
    """The worktrees git has registered for ``repo`` (the main one first)."""
    out = git(repo, "worktree", "list", "--porcelain")
    return [
        Path(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("worktree ")
    ]


# ---------------------------------------------------------------------------------------------
# projects


def flat_project(value: int, *, package: str = "calc") -> dict[str, str]:
    """A flat-layout project whose ``answer()`` returns ``value`` and a perf test recording it."""
    return {
        "pyproject.toml": f"""
            [project]
            name = "{package}"
            version = "0"

            [tool.setuptools.packages.find]
            include = ["{package}*"]

            [tool.pytest.ini_options]
            testpaths = ["tests"]
            """,
        f"{package}/__init__.py": f"""
            def answer():
                return {value}
            """,
        "tests/test_calc.py": f"""
            import pytest
            import {package}

            @pytest.mark.perf
            def test_answer(perf):
                perf.record("answer", {package}.answer(), unit="count")

            def test_where():
                # which file the code under test came from, for the tests of the sides
                print("FILE", {package}.__file__)
            """,
    }


def src_project(value: int) -> dict[str, str]:
    """A src-layout project (setuptools ``packages.find where = ["src"]``)."""
    return {
        "pyproject.toml": """
            [project]
            name = "srcpkg"
            version = "0"

            [tool.setuptools.packages.find]
            where = ["src"]
            """,
        "src/srcpkg/__init__.py": f"""
            def answer():
                return {value}
            """,
        "tests/test_src.py": """
            import pytest
            import srcpkg

            @pytest.mark.perf
            def test_answer(perf):
                perf.record("answer", srcpkg.answer(), unit="count")
            """,
    }


def fixtures_project() -> dict[str, str]:
    """Fixtures of every scope that log their setup and teardown to ``$FIXTURE_LOG`` (one line
    each), a test class whose instance counts its own runs, and a session finalizer."""
    return {
        "conftest.py": """
            import os
            import pytest

            def log(event):
                with open(os.environ["FIXTURE_LOG"], "a", encoding="utf-8") as f:
                    f.write(event + "\\n")

            @pytest.fixture(scope="session")
            def session_resource():
                log("session-setup")
                yield "session"
                log("session-teardown")
            """,
        "tests/test_fixtures.py": """
            import itertools
            import pytest
            from conftest import log

            _made = itertools.count(1)

            @pytest.fixture(scope="module")
            def module_resource(session_resource):
                log("module-setup")
                yield {"rounds": 0}
                log("module-teardown")

            @pytest.fixture
            def function_resource():
                number = next(_made)
                log(f"function-setup {number}")
                yield {"number": number, "used": False}
                log(f"function-teardown {number}")

            def test_rounds(perf, module_resource, function_resource):
                assert function_resource["used"] is False  # fresh: nobody used it before
                function_resource["used"] = True
                module_resource["rounds"] += 1
                perf.record("module rounds", module_resource["rounds"], unit="count")
                perf.record("function number", function_resource["number"], unit="count")

            class TestInstance:
                def test_fresh_instance(self, perf):
                    self.runs = getattr(self, "runs", 0) + 1
                    perf.record("instance runs", self.runs, unit="count")

            def test_other_module_user(module_resource):
                pass
            """,
        "tests/test_second.py": """
            def test_elsewhere(session_resource):
                assert session_resource == "session"
            """,
    }
