"""``--perf-against=REF``: resolving REF, its temporary worktree, and its import roots — on real
git repositories made in tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from against_projects import commit, flat_project, git, init_repo, worktrees, write

from pytest_bridgeperf.against.errors import AgainstError
from pytest_bridgeperf.against.refs import STALE_PREFIX, import_roots, open_checkout

needs_git = pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0,
    reason="git is not installed",
)
pytestmark = needs_git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: v1 (tag) → v2; branch ``feature`` off v1 with its own commit; HEAD on main."""
    path = init_repo(tmp_path / "project")
    commit(path, "v1", flat_project(1))
    git(path, "tag", "v1")
    git(path, "branch", "feature")
    commit(path, "v2", flat_project(2))
    git(path, "checkout", "-q", "feature")
    commit(path, "feature work", {"FEATURE.txt": "feature\n"})
    git(path, "checkout", "-q", "main")
    return path


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """The checkouts' temporary directory: per test, so parallel tests never see each other's."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def answer_in(root: Path) -> str:
    return (root / "calc" / "__init__.py").read_text(encoding="utf-8").split("return")[1].strip()


def test_a_revision_is_checked_out_into_a_temporary_worktree_and_removed(
    repo: Path, tmp: Path
) -> None:
    old = git(repo, "rev-parse", "HEAD~1")
    with open_checkout("HEAD~1", repo, tempdir=tmp) as checkout:
        assert checkout.sha == old
        assert checkout.label == f"HEAD~1 ({old[:7]})"
        assert checkout.is_worktree
        assert checkout.root == checkout.toplevel
        assert checkout.root.name == "project"  # the tree keeps the project's directory name
        assert tmp in checkout.root.parents  # outside the user's tree
        assert answer_in(checkout.root) == "1"
        assert answer_in(repo) == "2"
        assert checkout.toplevel in worktrees(repo)
        made = checkout.root
    assert not made.exists()
    assert list(tmp.iterdir()) == []
    assert worktrees(repo) == [repo.resolve()]


def test_a_branch_a_tag_and_a_full_sha(repo: Path, tmp: Path) -> None:
    feature = git(repo, "rev-parse", "feature")
    for spec, expected in [
        ("feature", feature),
        ("v1", git(repo, "rev-parse", "v1^{commit}")),
        (feature, feature),
    ]:
        with open_checkout(spec, repo, tempdir=tmp) as checkout:
            assert checkout.sha == expected
            assert checkout.label == f"{spec} ({expected[:7]})"
            assert (checkout.root / "FEATURE.txt").exists() == (spec != "v1")


def test_merge_base_of_head_and_a_revision(repo: Path, tmp: Path) -> None:
    git(repo, "checkout", "-q", "feature")
    base = git(repo, "rev-parse", "v1^{commit}")
    with open_checkout("merge-base:main", repo, tempdir=tmp) as checkout:
        assert checkout.sha == base
        assert checkout.label == f"merge-base:main ({base[:7]})"
        assert answer_in(checkout.root) == "1"
        assert not (checkout.root / "FEATURE.txt").exists()


def test_the_users_dirty_tree_and_index_are_left_alone(repo: Path, tmp: Path) -> None:
    write(repo, {"calc/__init__.py": "def answer():\n    return 99\n"})  # modified
    write(repo, {"staged.py": "X = 1\n"})
    git(repo, "add", "staged.py")  # staged
    write(repo, {"untracked.txt": "mine\n"})  # untracked
    status = git(repo, "status", "--porcelain")
    staged = git(repo, "diff", "--cached")
    head = git(repo, "rev-parse", "HEAD")
    with open_checkout("HEAD", repo, tempdir=tmp) as checkout:
        assert answer_in(checkout.root) == "2"  # the commit, not the dirty file
        assert not (checkout.root / "untracked.txt").exists()
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "diff", "--cached") == staged
    assert git(repo, "rev-parse", "HEAD") == head
    assert answer_in(repo) == "99"


def test_a_rootdir_below_the_top_of_the_repository(tmp_path: Path, tmp: Path) -> None:
    repo = init_repo(tmp_path / "mono")
    commit(repo, "app v1", {"examples/app/VERSION": "1\n", "README": "top\n"})
    commit(repo, "app v2", {"examples/app/VERSION": "2\n"})
    with open_checkout("HEAD~1", repo / "examples" / "app", tempdir=tmp) as checkout:
        assert checkout.root == checkout.toplevel / "examples" / "app"
        assert (checkout.root / "VERSION").read_text() == "1\n"
        assert (checkout.toplevel / "README").exists()


def test_a_rootdir_that_did_not_exist_at_the_revision(tmp_path: Path, tmp: Path) -> None:
    repo = init_repo(tmp_path / "mono")
    commit(repo, "one", {"README": "top\n"})
    commit(repo, "two", {"examples/new/VERSION": "1\n"})
    with (
        pytest.raises(AgainstError, match=r"rootdir examples/new/ does not exist at HEAD~1"),
        open_checkout("HEAD~1", repo / "examples" / "new", tempdir=tmp),
    ):
        pass
    assert list(tmp.iterdir()) == []
    assert worktrees(repo) == [repo.resolve()]


def test_worktree_removed_after_an_exception(repo: Path, tmp: Path) -> None:
    made: list[Path] = []

    def use_and_fail() -> None:
        with open_checkout("v1", repo, tempdir=tmp) as checkout:
            made.append(checkout.root)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    assert made
    assert not made[0].exists()
    assert worktrees(repo) == [repo.resolve()]


def test_an_unknown_revision(repo: Path, tmp: Path) -> None:
    with pytest.raises(AgainstError) as info, open_checkout("nope", repo, tempdir=tmp):
        pass
    message = str(info.value)
    assert message.startswith("--perf-against=nope: git cannot resolve 'nope' (git rev-parse: ")
    assert "unknown revision" in message
    assert "\n" not in message
    assert list(tmp.iterdir()) == []


def test_a_value_that_would_be_an_option_of_git(repo: Path, tmp: Path) -> None:
    with (
        pytest.raises(AgainstError, match="'--output=x' is not a git revision"),
        open_checkout("merge-base:--output=x", repo, tempdir=tmp),
    ):
        pass


def test_not_a_git_repository(tmp_path: Path, tmp: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(AgainstError) as info, open_checkout("main", plain, tempdir=tmp):
        pass
    assert str(info.value).startswith(f"--perf-against=main: {plain} is not in a git repository")
    assert "path of another checkout" in str(info.value)


def test_git_not_installed(repo: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with (
        pytest.raises(AgainstError, match=r"--perf-against=HEAD~1: git is not installed"),
        open_checkout("HEAD~1", repo, tempdir=tmp),
    ):
        pass


def test_merge_base_in_a_shallow_clone_says_to_fetch_the_history(repo: Path, tmp: Path) -> None:
    shallow = repo.parent / "shallow"
    git(
        repo.parent,
        "clone",
        "-q",
        "--depth",
        "1",
        "--no-single-branch",
        f"file://{repo}",
        str(shallow),
    )
    with (
        pytest.raises(AgainstError) as info,
        open_checkout("merge-base:origin/feature", shallow, tempdir=tmp),
    ):
        pass
    message = str(info.value)
    assert message.startswith("--perf-against=merge-base:origin/feature: git merge-base HEAD")
    assert "shallow clone" in message
    assert "fetch-depth: 0" in message


def test_a_path_to_another_checkout_is_used_in_place(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(repo), str(other))
    with open_checkout(str(other), repo) as checkout:
        assert checkout.root == other.resolve()
        assert checkout.toplevel == other.resolve()
        assert checkout.sha is None
        assert checkout.label == str(other)
        assert not checkout.is_worktree
    assert other.exists()  # never removed: it is the user's
    # relative to the current directory, and mapped to the rootdir's place in it
    sub_repo = init_repo(tmp_path / "mono")
    commit(sub_repo, "x", {"examples/app/VERSION": "1\n"})
    copy = tmp_path / "mono-copy"
    git(tmp_path, "clone", "-q", str(sub_repo), str(copy))
    with open_checkout("../mono-copy", sub_repo / "examples" / "app", cwd=sub_repo) as checkout:
        assert checkout.root == copy.resolve() / "examples" / "app"
        assert checkout.toplevel == copy.resolve()


def test_a_path_that_does_not_exist(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(AgainstError) as info, open_checkout("../nowhere", repo, cwd=repo):
        pass
    assert str(info.value).startswith(f"--perf-against=../nowhere: {tmp_path / 'nowhere'}")
    assert "does not exist" in str(info.value)


_HOLDER = """
import sys, time
from pathlib import Path
from pytest_bridgeperf.against.refs import open_checkout
with open_checkout("HEAD~1", Path(sys.argv[1]), tempdir=Path(sys.argv[2])) as checkout:
    print(checkout.root, flush=True)
    time.sleep(60)
"""


def _hold_checkout(repo: Path, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), str(repo), str(tmp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise AssertionError(f"the checkout holder did not start: {proc.communicate()[1]}")
    return proc, Path(line)


@pytest.mark.slow
def test_worktree_removed_after_ctrl_c(repo: Path, tmp: Path) -> None:
    proc, made = _hold_checkout(repo, tmp)
    assert made.is_dir()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert not made.exists()
    assert list(tmp.iterdir()) == []
    assert worktrees(repo) == [repo.resolve()]


@pytest.mark.slow
def test_leftovers_of_a_killed_run_are_pruned_by_the_next(repo: Path, tmp: Path) -> None:
    proc, made = _hold_checkout(repo, tmp)
    proc.kill()  # SIGKILL: no cleanup can run
    proc.communicate(timeout=60)
    assert made.is_dir()
    assert made.parent.name.startswith(f"{STALE_PREFIX}{proc.pid}-")
    assert made in worktrees(repo)
    # a killed run whose directory someone already deleted: only git's registration is left
    proc2, made2 = _hold_checkout(repo, tmp)
    proc2.kill()
    proc2.communicate(timeout=60)
    import shutil

    shutil.rmtree(made2.parent)
    assert made2 in worktrees(repo)
    # a live run's checkout is not touched by another run's pruning
    live, live_tree = _hold_checkout(repo, tmp)
    try:
        with open_checkout("v1", repo, tempdir=tmp) as checkout:
            assert not made.parent.exists()
            assert made not in worktrees(repo)
            assert made2 not in worktrees(repo)
            assert live_tree.is_dir()
            assert set(worktrees(repo)) == {repo.resolve(), live_tree, checkout.toplevel}
    finally:
        live.terminate()
        live.communicate(timeout=60)
    assert live.returncode is not None


def test_a_stale_directory_of_a_live_process_is_kept(repo: Path, tmp: Path) -> None:
    # our own pid: a checkout this very process holds open
    mine = tmp / f"{STALE_PREFIX}{os.getpid()}-abcd"
    mine.mkdir()
    # a name we did not make
    other = tmp / f"{STALE_PREFIX}notapid"
    other.mkdir()
    with open_checkout("v1", repo, tempdir=tmp):
        pass
    assert mine.exists()
    assert other.exists()


# ---------------------------------------------------------------------------------------------
# import roots


def test_import_roots_of_a_flat_layout(tmp_path: Path) -> None:
    write(tmp_path, flat_project(1))
    assert import_roots(tmp_path, None) == [tmp_path.resolve()]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"pyproject.toml": '[tool.setuptools]\npackage-dir = {"" = "src"}\n'},
            ["src"],
        ),
        (
            {"pyproject.toml": '[tool.setuptools.packages.find]\nwhere = ["lib"]\n'},
            ["lib"],
        ),
        (
            {"pyproject.toml": '[tool.hatch.build.targets.wheel]\npackages = ["code/pkg"]\n'},
            ["code"],
        ),
        (
            {"pyproject.toml": '[tool.poetry]\npackages = [{include = "pkg", from = "lib"}]\n'},
            ["lib"],
        ),
        (
            {"pyproject.toml": '[tool.maturin]\npython-source = "python"\n'},
            ["python"],
        ),
        ({"setup.cfg": "[options]\npackage_dir =\n    =source\n"}, ["source"]),
        ({"setup.cfg": "[options.packages.find]\nwhere = src\n"}, ["src"]),
        # no build configuration: a src/ directory holding a package is a src layout
        ({"pyproject.toml": "[project]\nname = 'x'\n"}, ["src"]),
    ],
)
def test_import_roots_of_src_layouts(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    write(tmp_path, files)
    for directory in ("src", "lib", "code", "python", "source"):
        write(tmp_path, {f"{directory}/pkg/__init__.py": ""})
    roots = import_roots(tmp_path, None)
    assert roots == [tmp_path.resolve(), *(tmp_path.resolve() / e for e in expected)]


def test_a_src_dir_without_code_is_not_a_src_layout(tmp_path: Path) -> None:
    write(tmp_path, {"src/README.txt": "not code\n"})
    assert import_roots(tmp_path, None) == [tmp_path.resolve()]


def test_perf_against_paths_overrides_the_detection(tmp_path: Path) -> None:
    write(tmp_path, {"src/pkg/__init__.py": "", "vendor/x.py": ""})
    assert import_roots(tmp_path, ["vendor", "."]) == [
        tmp_path.resolve() / "vendor",
        tmp_path.resolve(),
    ]
    with pytest.raises(AgainstError, match=r"perf_against_paths: 'missing' is not a directory"):
        import_roots(tmp_path, ["missing"])
    with pytest.raises(AgainstError, match="must be relative to the project root"):
        import_roots(tmp_path, [str(tmp_path)])


def test_refs_imports_no_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None; sys.modules['_pytest'] = None\n"
        "import pytest_bridgeperf.against.refs, pytest_bridgeperf.against.errors\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
