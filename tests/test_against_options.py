"""``side_args``: the user's options for both sides' pytest sessions, less what must not run in a
side, with paths inside A's rootdir moved into the side's tree."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_bridgeperf.against.options import (
    RootPath,
    filter_args,
    neutralize,
    option_actions,
    side_args,
    with_files,
)


def kept(config: pytest.Config) -> list[object]:
    """The options a side keeps, without the seed pytest-randomly's presence adds."""
    return [
        a
        for a in side_args(config).options
        if not (isinstance(a, str) and a.startswith("--randomly-seed="))
    ]


def dropped(config: pytest.Config) -> list[str]:
    """What a side does not get, without the ``--basetemp`` pytester adds to every config."""
    own = f"--basetemp={config.invocation_params.args[-1].split('=', 1)[-1]}"
    return [written for written, _ in side_args(config).dropped if written != own]


def test_pytests_parser_is_reachable(pytester: pytest.Pytester) -> None:
    """``option_actions`` reads pytest's private argparse parser: fail here, loudly, if pytest
    moves it."""
    actions = option_actions(pytester.parseconfig())
    assert actions["--rootdir"].dest == "rootdir"
    assert actions["-x"].dest == "maxfail"
    assert actions["-k"].nargs is None
    assert actions["-v"].nargs == 0


@pytest.fixture(autouse=True)
def _stop_coverage_the_parsing_started() -> Iterator[None]:
    """``parseconfig("--cov", ...)`` makes pytest-cov start coverage in this process, and nothing
    here ends that session: it would trace every later test of this worker (whose timings then
    read "coverage tracing was active"). Stop what the test started, not an outer run's."""
    try:
        import coverage
    except ImportError:  # pragma: no cover - pytest-cov is in the [test] extra
        yield
        return
    before = coverage.Coverage.current()
    yield
    started = coverage.Coverage.current()
    if started is not None and started is not before:
        started.stop()


def test_the_users_options_are_kept_and_positionals_dropped(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig(
        "-v",
        "-k",
        "fast and not slow",
        "-m",
        "perf",
        "-p",
        "no:doctest",
        "-o",
        "xfail_strict=true",
        "--timeout",
        "5",
        "--cov",
        "src",
        "--perf",
        "--perf-tolerance=20%",
        "--tb=short",
        "-W",
        "error",
        "--capture=sys",
        "--import-mode=importlib",
        "tests/test_a.py",
        "tests/test_b.py::test_x",
    )
    assert kept(config) == [
        "-v",
        "-k",
        "fast and not slow",
        "-m",
        "perf",
        "-p",
        "no:doctest",
        "-o",
        "xfail_strict=true",
        "--timeout",
        "5",
        "--cov",
        "src",  # --cov takes an optional value: it is not a positional
        "--perf",
        "--perf-tolerance=20%",
        "--tb=short",
        "-W",
        "error",
        "--capture=sys",
        "--import-mode=importlib",
    ]
    assert dropped(config) == ["tests/test_a.py", "tests/test_b.py::test_x"]


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "2"],
        ["-n2"],
        ["--numprocesses=auto"],
        ["--dist", "loadscope"],
        ["--tx", "popen//python=python3"],
        ["--perf-update"],
        ["--perf-prune"],
        ["--perf-accept"],
        ["--perf-report=r.json"],
        ["--perf-markdown", "r.md"],
        ["--perf-html=r.html"],
        ["--perf-openmetrics=r.prom"],
        ["--junitxml=junit.xml"],
        ["--junit-xml", "junit.xml"],
        ["--lf"],
        ["--ff"],
        ["--sw"],
        ["--stepwise-skip"],
        ["-x"],
        ["--exitfirst"],
        ["--maxfail=3"],
        ["--pdb"],
        ["--trace"],
        ["--collect-only"],
        ["--co"],
        ["--basetemp=/tmp/bt"],
        ["--debug"],
        ["--benchmark-json=b.json"],
    ],
)
def test_excluded_options_are_dropped(pytester: pytest.Pytester, args: list[str]) -> None:
    config = pytester.parseconfig(*args, "-v")
    assert kept(config) == ["-v"]
    # as written, give or take a space between an option and its value
    assert [d.replace(" ", "") for d in dropped(config)] == ["".join(args)]
    assert all(why for _, why in side_args(config).dropped)


def test_the_comparison_options_are_dropped(tmp_path: Path) -> None:
    """``--perf-against*`` belong to the controller (registered by the plugin's controller
    part; an argparse table with them stands in here)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--perf-against", dest="perf_against")
    parser.add_argument("--perf-against-python", dest="perf_against_python")
    parser.add_argument("-v", action="count", dest="verbose")
    options, gone = filter_args(
        ["--perf-against=origin/main", "--perf-against-python", "/venv/bin/python", "-v"],
        parser._option_string_actions,
        tmp_path,
    )
    assert options == ["-v"]
    assert [written for written, _ in gone] == [
        "--perf-against=origin/main",
        "--perf-against-python /venv/bin/python",
    ]


def test_a_cluster_of_short_options_loses_only_the_excluded_ones(
    pytester: pytest.Pytester,
) -> None:
    config = pytester.parseconfig("-xvs", "-rA", "-pno:randomly", "-kfoo")
    assert kept(config) == ["-v", "-s", "-r", "A", "-p", "no:randomly", "-k", "foo"]
    assert dropped(config) == ["-x"]


def test_paths_inside_the_rootdir_are_translated(pytester: pytest.Pytester) -> None:
    root = pytester.path
    pytester.mkdir("sub")
    pytester.makefile(".ini", **{"sub/pytest": "[pytest]\n"})
    other = root.parent / f"{root.name}-other"  # beside the rootdir, not inside it
    config = pytester.parseconfig(
        f"--rootdir={root}",
        "-c",
        str(root / "sub" / "pytest.ini"),
        f"--confcutdir={root / 'sub'}",
        "-o",
        f"cache_dir={root / 'c'}",
        f"--cov-report=html:{root / 'htmlcov'}",
        f"--ignore={other}",
    )
    options = side_args(config).options
    assert RootPath("--rootdir=", ".") in options
    assert RootPath("", "sub/pytest.ini") in options
    assert RootPath("--confcutdir=", "sub") in options
    assert RootPath("cache_dir=", "c") in options
    assert RootPath("--cov-report=html:", "htmlcov") in options
    assert f"--ignore={other}" in options
    b_root = Path("/elsewhere/b")
    rendered = side_args(config).render(b_root, basetemp=Path("/t/side-B"))
    assert "--rootdir=/elsewhere/b" in rendered
    assert "/elsewhere/b/sub/pytest.ini" in rendered
    assert "--confcutdir=/elsewhere/b/sub" in rendered
    assert "cache_dir=/elsewhere/b/c" in rendered
    assert "--cov-report=html:/elsewhere/b/htmlcov" in rendered
    assert rendered.count("--rootdir=/elsewhere/b") == 1  # the user's, not a second one


def test_render_adds_the_sides_own_parts(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig("-p", "no:randomly", "-q")
    rendered = side_args(config).render(Path("/b/root"), basetemp=Path("/t/side-B"))
    assert rendered == [
        "-p",
        "no:randomly",
        "-q",
        "--rootdir=/b/root",
        "--basetemp=/t/side-B",
        "-p",
        "no:cacheprovider",
    ]
    assert with_files(rendered, ["tests/test_a.py"])[-2:] == ["--", "tests/test_a.py"]


def test_the_invocation_directory_is_mirrored(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    sub = pytester.mkdir("tests")
    monkeypatch.chdir(sub)
    config = pytester.parseconfig("-q")
    assert config.rootpath == pytester.path
    assert side_args(config).cwd == "tests"


def test_pytest_addopts_is_filtered_per_side(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pytester.path
    pytester.mkdir("tests")
    monkeypatch.setenv(
        "PYTEST_ADDOPTS", f"-n 3 -v --junitxml=/x/j.xml --confcutdir={root / 'tests'}"
    )
    config = pytester.parseconfig()
    args = side_args(config)
    assert args.environ(Path("/b")) == {"PYTEST_ADDOPTS": "-v --confcutdir=/b/tests"}
    assert "-n 3 (PYTEST_ADDOPTS)" in dropped(config)
    monkeypatch.delenv("PYTEST_ADDOPTS")
    assert side_args(pytester.parseconfig()).environ(Path("/b")) == {}


def test_argument_files_are_expanded_and_filtered(pytester: pytest.Pytester) -> None:
    pytester.makefile(".txt", args="-v\n-n\n2\ntests/test_a.py\n")
    config = pytester.parseconfig("@args.txt", "-q")
    assert kept(config) == ["-v", "-q"]
    assert dropped(config) == ["-n 2", "tests/test_a.py"]


def test_both_sides_get_pytest_randomlys_seed(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("-p", "randomly")
    seed = config.option.randomly_seed
    assert isinstance(seed, int)
    assert f"--randomly-seed={seed}" in side_args(config).options
    given = pytester.parseconfigure("-p", "randomly", "--randomly-seed=7")
    assert [a for a in side_args(given).options if "randomly-seed" in str(a)] == [
        "--randomly-seed=7"
    ]


def test_neutralize_resets_excluded_options_from_the_ini_file(pytester: pytest.Pytester) -> None:
    fresh = pytester.parseconfig().option
    pytester.makeini("[pytest]\naddopts = -n 2 --junitxml=j.xml -x --lf -v --perf-report=r.json\n")
    config = pytester.parseconfig()
    assert config.option.numprocesses == 2
    assert neutralize(config) == ["lf", "maxfail", "numprocesses", "perf_report", "xmlpath"]
    assert config.option.numprocesses is None
    assert config.option.xmlpath is None
    assert config.option.maxfail == fresh.maxfail
    assert config.option.lf is False
    assert config.option.perf_report is None
    assert config.option.verbose == 1  # kept
    assert neutralize(config) == []
