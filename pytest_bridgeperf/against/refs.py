"""The other revision of ``--perf-against=REF``: resolve it, check it out, find its import roots.

A git revision is checked out with ``git worktree add --detach`` into a temporary directory
outside the user's tree and removed at the end — after an exception and after Ctrl-C too. The
user's working tree and index are never touched (a worktree has its own index) and may be dirty.
A run killed with ``kill -9`` leaves its temporary directory and worktree registration behind:
the next run removes them (the directory's name carries the process id of its owner).

No pytest here.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AgainstError

__all__ = ["MERGE_BASE", "STALE_PREFIX", "Checkout", "import_roots", "open_checkout"]

#: ``--perf-against=merge-base:REV`` compares with ``git merge-base HEAD REV``.
MERGE_BASE = "merge-base:"
#: Name prefix of our temporary directories (``bridgeperf-against-<pid>-<random>``): how a later
#: run recognises the leftovers of a killed one.
STALE_PREFIX = "bridgeperf-against-"
_OWNER_FILE = "bridgeperf-against.json"
#: git commands are local and fast (a checkout of a large repository takes seconds); a git that
#: hangs (a lock held by a dead process, a credential prompt) must not hang the test run.
_GIT_TIMEOUT = 300.0
#: Where a process id cannot be checked (Windows), a leftover this old is taken as stale.
_STALE_AGE = 24 * 3600.0


@dataclass(frozen=True)
class Checkout:
    """The other side's source tree."""

    #: the directory that corresponds to this run's pytest rootdir inside the other tree
    root: Path
    #: the top of the other tree (the worktree, or the checkout given as a path)
    toplevel: Path
    #: the full commit id; None for a checkout given as a path
    sha: str | None
    #: how reports name it: ``origin/main (3f2a9c1)``, ``merge-base:origin/main (3f2a9c1)``,
    #: or the path as given
    label: str
    #: a temporary git worktree (removed at the end), not a path given by the user
    is_worktree: bool


@contextlib.contextmanager
def open_checkout(
    spec: str, rootdir: Path, *, cwd: Path | None = None, tempdir: Path | None = None
) -> Iterator[Checkout]:
    """Resolve ``spec`` (a git revision, ``merge-base:REV``, or the path of another checkout)
    for the pytest rootdir ``rootdir`` and yield its :class:`Checkout`.

    A relative path is taken from ``cwd`` (default: the current directory). A git revision is
    checked out into a temporary worktree under ``tempdir`` (default: the system's temporary
    directory), removed when the block ends, however it ends.
    """
    spec = spec.strip()
    option = f"--perf-against={spec}"
    if not spec:
        raise AgainstError(
            "--perf-against: empty value; give a git revision (origin/main, a tag, a sha, "
            "HEAD~1), merge-base:REV, or the path of another checkout"
        )
    rootdir = Path(rootdir).resolve()
    base_dir = Path.cwd() if cwd is None else Path(cwd)
    if not spec.startswith(MERGE_BASE):
        path = _as_path(spec, base_dir)
        if path is not None:
            yield _path_checkout(spec, path, rootdir)
            return
    yield from _worktree_checkout(spec, option, rootdir, tempdir)


def _as_path(spec: str, cwd: Path) -> Path | None:
    """The directory ``spec`` names, or None when it is a git revision.

    Explicit path forms (absolute, ``./``, ``../``, ``~``) are always paths; any other value is
    a path only when such a directory exists (``origin/main`` is a revision unless a directory
    of that name is there).
    """
    explicit = (
        spec in (".", "..")
        or spec.startswith(("./", "../", "~", ".\\", "..\\"))
        or Path(spec).is_absolute()
    )
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute():
        path = cwd / path
    if path.is_dir():
        return path.resolve()
    if explicit:
        what = "is not a directory" if path.exists() else "does not exist"
        path = Path(os.path.normpath(path))
        raise AgainstError(
            f"--perf-against={spec}: {path} {what}; give the path of another checkout, a git "
            "revision, or merge-base:REV"
        )
    return None


def _path_checkout(spec: str, path: Path, rootdir: Path) -> Checkout:
    """Another checkout given as a path: used in place, not copied."""
    prefix = _rootdir_prefix(rootdir)
    root = path / prefix if prefix and (path / prefix).is_dir() else path
    toplevel = path
    if root == path and shutil.which("git"):
        # given the counterpart of the rootdir itself: its own repository's top, when it has one
        found = _git(path, "rev-parse", "--show-toplevel", check=False)
        if found.returncode == 0 and found.stdout.strip():
            toplevel = Path(found.stdout.strip()).resolve()
    return Checkout(root=root, toplevel=toplevel, sha=None, label=spec, is_worktree=False)


def _rootdir_prefix(rootdir: Path) -> str:
    """Where the rootdir sits in its git repository (``examples/bridge_app``; ``""`` at the
    top, or outside any repository)."""
    if not shutil.which("git"):
        return ""
    found = _git(rootdir, "rev-parse", "--show-prefix", check=False)
    return found.stdout.strip().rstrip("/") if found.returncode == 0 else ""


def _worktree_checkout(
    spec: str, option: str, rootdir: Path, tempdir: Path | None
) -> Iterator[Checkout]:
    if shutil.which("git") is None:
        raise AgainstError(
            f"{option}: git is not installed (not found on PATH); it is needed to check out the "
            "revision. Install git, or give the path of another checkout instead."
        )
    found = _git(rootdir, "rev-parse", "--show-toplevel", "--show-prefix", check=False)
    if found.returncode != 0:
        raise AgainstError(
            f"{option}: {rootdir} is not in a git repository ({_first_line(found.stderr)}); "
            "give the path of another checkout instead of a revision",
            details=found.stderr,
        )
    lines = found.stdout.splitlines()
    toplevel = Path(lines[0]).resolve()
    prefix = lines[1].rstrip("/") if len(lines) > 1 else ""
    sha, label = _resolve(spec, option, toplevel)
    _prune_stale(toplevel, tempdir)
    base = Path(tempfile.mkdtemp(prefix=f"{STALE_PREFIX}{os.getpid()}-", dir=tempdir))
    tree = base / (toplevel.name or "tree")
    try:
        (base / _OWNER_FILE).write_text(
            json.dumps({"pid": os.getpid(), "repo": str(toplevel), "created": time.time()}),
            encoding="utf-8",
        )
        # hooks off: a post-checkout hook of the user's (pre-commit installs some) has no
        # business running on our temporary checkout
        added = _git(
            toplevel,
            "-c",
            f"core.hooksPath={os.devnull}",
            "worktree",
            "add",
            "--detach",
            "--quiet",
            str(tree),
            sha,
            check=False,
        )
        if added.returncode != 0:
            raise AgainstError(
                f"{option}: git worktree add failed: {_first_line(added.stderr)}",
                details=added.stderr,
            )
        root = tree / prefix if prefix else tree
        if not root.is_dir():
            raise AgainstError(
                f"{option}: the rootdir {prefix}/ does not exist at {label}: nothing to compare "
                "with there"
            )
        yield Checkout(root=root, toplevel=tree, sha=sha, label=label, is_worktree=True)
    finally:
        with _no_interrupt():
            _remove(toplevel, tree, base)


def _resolve(spec: str, option: str, toplevel: Path) -> tuple[str, str]:
    """The full commit id and the label of a revision or ``merge-base:REV``."""
    merge_base = spec.startswith(MERGE_BASE)
    rev = spec[len(MERGE_BASE) :].strip() if merge_base else spec
    if not rev:
        raise AgainstError(f"{option}: give the revision after {MERGE_BASE}, e.g. merge-base:main")
    if rev.startswith("-"):  # never let a value become an option of git's
        raise AgainstError(f"{option}: {rev!r} is not a git revision")
    sha = _rev_parse(rev, option, toplevel)
    if merge_base:
        found = _git(toplevel, "merge-base", "HEAD", sha, check=False)
        if found.returncode != 0 or not found.stdout.strip():
            reason = _first_line(found.stderr) or "no common ancestor"
            if _is_shallow(toplevel):
                raise AgainstError(
                    f"{option}: git merge-base HEAD {rev} failed in this shallow clone "
                    f"({reason}): fetch the whole history (actions/checkout with "
                    "`fetch-depth: 0`, or `git fetch --unshallow`)",
                    details=found.stderr,
                )
            raise AgainstError(
                f"{option}: git merge-base HEAD {rev} failed ({reason})", details=found.stderr
            )
        sha = found.stdout.strip()
    return sha, f"{spec} ({sha[:7]})"


def _rev_parse(rev: str, option: str, toplevel: Path) -> str:
    found = _git(toplevel, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    # --verify --quiet says nothing; ask again for git's own reason
    why = _git(toplevel, "rev-parse", f"{rev}^{{commit}}", check=False)
    reason = _first_line(why.stderr).removeprefix("fatal: ") or "not a commit"
    hint = ""
    if _is_shallow(toplevel):
        hint = (
            "; this is a shallow clone: fetch the revision or the whole history "
            "(actions/checkout with `fetch-depth: 0`)"
        )
    raise AgainstError(
        f"{option}: git cannot resolve {rev!r} (git rev-parse: {reason}){hint}",
        details=why.stderr,
    )


def _is_shallow(toplevel: Path) -> bool:
    found = _git(toplevel, "rev-parse", "--is-shallow-repository", check=False)
    return found.stdout.strip() == "true"


# ---------------------------------------------------------------------------------------------
# removal, now and after a killed run


def _remove(toplevel: Path, tree: Path, base: Path) -> None:
    """Remove our worktree and its registration; never raises (it runs in ``finally``)."""
    if tree.exists():
        _git(toplevel, "worktree", "remove", "--force", str(tree), check=False)
    shutil.rmtree(base, ignore_errors=True)
    # drops the registration when `worktree remove` could not (e.g. the tree was half made)
    _git(toplevel, "worktree", "prune", check=False)


def _prune_stale(toplevel: Path, tempdir: Path | None) -> None:
    """Remove what killed runs left: worktrees whose directory is gone (``git worktree prune``)
    and our temporary directories whose owning process is dead, wherever the repository."""
    _git(toplevel, "worktree", "prune", check=False)
    candidates: set[Path] = set()
    scan = Path(tempdir) if tempdir is not None else Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        candidates.update(p for p in scan.iterdir() if p.name.startswith(STALE_PREFIX))
    # a worktree of this repository made under another temporary directory (TMPDIR changed)
    listed = _git(toplevel, "worktree", "list", "--porcelain", check=False)
    for line in listed.stdout.splitlines():
        if line.startswith("worktree "):
            parent = Path(line[len("worktree ") :]).parent
            if parent.name.startswith(STALE_PREFIX):
                candidates.add(parent)
    for base in sorted(candidates):
        if not _is_stale(base):
            continue
        repo = toplevel
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            repo = Path(json.loads((base / _OWNER_FILE).read_text(encoding="utf-8"))["repo"])
        trees = []
        with contextlib.suppress(OSError):
            trees = [p for p in base.iterdir() if p.is_dir()]
        for tree in trees:
            if repo.is_dir():
                _git(repo, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(base, ignore_errors=True)
        if repo.is_dir() and repo != toplevel:
            _git(repo, "worktree", "prune", check=False)
    _git(toplevel, "worktree", "prune", check=False)


def _is_stale(base: Path) -> bool:
    """A directory of ours whose owning process no longer runs."""
    pid_text = base.name[len(STALE_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # an open checkout of this very process
    if sys.platform == "win32":
        # os.kill(pid, 0) would send CTRL_C_EVENT there: go by age instead
        with contextlib.suppress(OSError):
            return time.time() - base.stat().st_mtime > _STALE_AGE
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Let the cleanup finish when the user presses Ctrl-C again meanwhile (it takes well under
    a second); the interrupt that started it still propagates afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _git(cwd: Path, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
    try:
        # a session of its own: a Ctrl-C at the terminal reaches us, not a git in the middle of
        # removing our worktree
        return subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=_GIT_TIMEOUT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["git", *args], 1, "", f"git {args[0]}: {exc}")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---------------------------------------------------------------------------------------------
# import roots


def import_roots(checkout_root: Path, override: Sequence[str] | None) -> list[Path]:
    """The directories that must come first on ``sys.path`` so that imports resolve to the
    code of ``checkout_root``: the project root, plus its source directory in a src layout.

    ``override`` (ini ``perf_against_paths``, relative to the checkout root) replaces the
    detection when given.
    """
    root = Path(checkout_root).resolve()
    if override:
        paths = []
        for entry in override:
            if Path(entry).is_absolute():
                raise AgainstError(
                    f"ini perf_against_paths: {entry!r} must be relative to the project root "
                    "(it is looked up in each side's checkout)"
                )
            path = (root / entry).resolve()
            if not path.is_dir():
                raise AgainstError(
                    f"ini perf_against_paths: {entry!r} is not a directory in {root}"
                )
            paths.append(path)
        return _unique(paths)
    found = [root]
    for relative in _declared_sources(root):
        path = (root / relative).resolve()
        if path.is_dir() and path != root:
            found.append(path)
    src = root / "src"
    if len(found) == 1 and src.is_dir() and _holds_importable(src):
        found.append(src.resolve())
    return _unique(found)


def _declared_sources(root: Path) -> list[str]:
    """Source directories the build configuration names (pyproject.toml, setup.cfg)."""
    dirs: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        tool = _table(data.get("tool"))
        setuptools = _table(tool.get("setuptools"))
        package_dir = _table(setuptools.get("package-dir"))
        for name, where in package_dir.items():
            if isinstance(where, str):
                dirs.append(where if name == "" else _parent_if_named(where, name))
        find = _table(_table(setuptools.get("packages")).get("find"))
        dirs.extend(w for w in _strings(find.get("where")))
        hatch_wheel = _table(_table(_table(tool.get("hatch")).get("build")).get("targets"))
        hatch_wheel = _table(hatch_wheel.get("wheel"))
        for package in _strings(hatch_wheel.get("packages")):
            dirs.append(str(Path(package).parent))
        sources = hatch_wheel.get("sources")
        if isinstance(sources, dict):
            dirs.extend(k for k, v in sources.items() if isinstance(k, str) and v in ("", "."))
        elif isinstance(sources, list):
            dirs.extend(_strings(sources))
        poetry = _table(tool.get("poetry"))
        packages = poetry.get("packages")
        if isinstance(packages, list):
            dirs.extend(p["from"] for p in packages if isinstance(p, dict) and "from" in p)
        pdm_dir = _table(_table(tool.get("pdm")).get("build")).get("package-dir")
        if isinstance(pdm_dir, str):
            dirs.append(pdm_dir)
        maturin_dir = _table(tool.get("maturin")).get("python-source")
        if isinstance(maturin_dir, str):
            dirs.append(maturin_dir)
    setup_cfg = root / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
            parser.read(setup_cfg, encoding="utf-8")
            raw = parser.get("options", "package_dir", fallback="")
            for line in raw.replace(",", "\n").splitlines():
                name, sep, where = line.partition("=")
                if sep and where.strip():
                    name, where = name.strip(), where.strip()
                    dirs.append(where if not name else _parent_if_named(where, name))
            where = parser.get("options.packages.find", "where", fallback="")
            dirs.extend(w for w in where.split() if w)
    return [d.strip().strip("/") for d in dirs if d and d.strip() not in ("", ".")]


def _parent_if_named(where: str, name: str) -> str:
    """``package-dir = {"mypkg" = "lib/mypkg"}``: on sys.path that works as ``lib`` only when
    the directory carries the package's name."""
    path = Path(where)
    return str(path.parent) if path.name == name.split(".")[-1] else ""


def _holds_importable(directory: Path) -> bool:
    with contextlib.suppress(OSError):
        for child in directory.iterdir():
            if child.is_dir() and (child / "__init__.py").is_file():
                return True
            if child.suffix == ".py" and child.is_file():
                return True
    return False


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _unique(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen
