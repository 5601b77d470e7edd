"""Running perf tests, writing and comparing baselines, verdicts, reports — end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported once here: inner runs would re-import it each time)
import pytest

# Synthetic but real measurements: SCALE (an environment variable read at run time) scales every
# metric, so a test can regress, improve or stay put between runs without touching its code.
PERF_TESTS = """
import os
import pytest

def scale(name):
    return float(os.environ.get("SCALE_" + name, os.environ.get("SCALE", "1")))

@pytest.mark.perf
def test_a(perf):
    s = scale("A")
    perf.record("latency", [0.010 * s * (1 + i / 1000) for i in range(30)])
    perf.record("queries", round(10 * s), unit="count", role="queries")

@pytest.mark.perf
def test_b(perf):
    s = scale("B")
    perf.record("latency", [0.020 * s * (1 + i / 1000) for i in range(30)])

def test_plain():
    pass
"""


QUERIES_LINE = 'perf.record("queries", round(10 * s), unit="count", role="queries")'
assert QUERIES_LINE in PERF_TESTS


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("SCALE", "SCALE_A", "SCALE_B", "PERF_ENV"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_perf=PERF_TESTS)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def _baseline(pytester: pytest.Pytester, name: str = "perf-baseline.json") -> dict[str, Any]:
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _update(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = _run(pytester, "--perf", "--perf-update", *args)
    assert result.ret == 0, result.stdout.str()
    return result


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


# ---------------------------------------------------------------------------------------------
# running


def test_perf_tests_skipped_without_perf(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_other="""
        def test_fails():
            assert False
        """
    )
    result = _run(project, "-rs")
    result.assert_outcomes(passed=1, skipped=2, failed=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_perf.py:*: perf test: run with --perf"])
    assert "perf summary" not in result.stdout.str()
    assert not (project.path / "perf-baseline.json").exists()
    result = _run(project, "--perf")
    result.assert_outcomes(passed=3, failed=1)


def test_perf_fixture_in_ordinary_tests(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_plain="""
        def test_records(perf):
            metric = perf.record("hit_ratio", 0.72, unit="ratio", better="higher")
            assert metric.value == 0.72
            assert "hit_ratio" in perf.metrics
        """
    )
    _run(project, "test_plain.py").assert_outcomes(passed=1)
    assert not (project.path / "perf-baseline.json").exists()


def test_update_writes_the_baseline(project: pytest.Pytester) -> None:
    result = _update(project)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*perf summary (env default)*",
            "test_perf.py::test_a",
            "  latency p50 * — → 10.* ms * new",
            "  queries * — → 10 * new",
            "perf: 0 ok, 0 regressed, 0 improved, 3 new, 0 not comparable, 0 missing",
            "perf: baseline *perf-baseline.json updated: 2 test(s) written, 0 pruned",
        ]
    )
    path = project.path / "perf-baseline.json"
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert document["tool"] == "pytest-bridgeperf"
    tests = document["environments"]["default"]["tests"]
    assert set(tests) == {"test_perf.py::test_a", "test_perf.py::test_b"}
    latency = tests["test_perf.py::test_a"]["metrics"]["latency"]
    assert latency["n"] == 30
    assert latency["hdr"].startswith("HIST")
    assert latency["value"] == pytest.approx(0.010, rel=0.03)
    assert tests["test_perf.py::test_a"]["metrics"]["queries"]["value"] == 10
    # an unchanged rerun is all ok and leaves the file as it was
    result = _run(project, "--perf")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["perf: 3 ok, 0 regressed, 0 improved, 0 new, *"])
    assert path.read_text(encoding="utf-8") == text


def test_regression_fails_the_test_itself(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project)
    monkeypatch.setenv("SCALE", "1.5")
    result = _run(project, "--perf", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=2, errors=0)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*_ test_a _*",
            "perf: latency p50 10.* ms → 15.* ms (+50 %, tolerance 10 %, *"
            "99 % CI of the shift +* … +*, p = *): regressed",
            "  ✗ queries 10 → 15 (+50 %, tolerance 10 %, exact): regressed",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_perf.py::test_a - Failed: perf: latency p50*"])
    result.stdout.fnmatch_lines(["perf: 0 ok, 3 regressed, *"])
    root = ET.parse(project.path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    for name in ("test_a", "test_b"):
        assert cases[name].find("failure") is not None
        assert cases[name].find("error") is None
        assert "regressed" in (cases[name].find("failure").get("message") or "")  # type: ignore[union-attr]
    assert cases["test_plain"].find("failure") is None
    # a failure, not an error: -x stops after the first regressed test (in file order: with
    # pytest-randomly's shuffling, test_plain ran first in 1 of 3 runs and passed)
    result = _run(project, "--perf", "-x", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    # the baseline is not touched by a failing comparison run
    assert (
        _baseline(project)["environments"]["default"]["tests"]["test_perf.py::test_a"]["metrics"][
            "queries"
        ]["value"]
        == 10
    )


def test_per_test_tolerance_and_cli_tolerance(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project)
    monkeypatch.setenv("SCALE", "1.3")
    _run(project, "--perf", "--perf-tolerance=40").assert_outcomes(passed=3)
    project.makepyfile(
        test_perf=PERF_TESTS.replace(
            "@pytest.mark.perf\ndef test_b", '@pytest.mark.perf(tolerance="50%")\ndef test_b'
        )
    )
    result = _run(project, "--perf")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_perf.py::test_a *"])


def test_improvement_passes_but_says_stale(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project)
    monkeypatch.setenv("SCALE_A", "0.5")
    result = _run(project, "--perf")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "  latency p50 * 10.* ms → 5.* ms * -50 %  improved",
            "perf: 1 ok, 0 regressed, 2 improved, *",
            "*baseline is stale: run --perf-update*",
        ]
    )
    result = _run(project, "--perf", "--perf-strict")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["perf: latency p50 * → * (-50 %, *): improved (baseline is stale: run --perf-update)"]
    )


def test_new_entries_fail_only_under_strict(project: pytest.Pytester) -> None:
    _run(project, "--perf").assert_outcomes(passed=3)
    result = _run(project, "--perf", "--perf-strict")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*latency * (no baseline yet): new (no baseline entry*"])
    pytest_ini = "[pytest]\nperf_strict = true\n"
    project.makeini(pytest_ini)
    _run(project, "--perf").assert_outcomes(passed=1, failed=2)


def test_missing_entries(project: pytest.Pytester) -> None:
    _update(project)
    project.makepyfile(test_perf=PERF_TESTS.replace("def test_b(perf)", "def _gone(perf)"))
    result = _run(project, "--perf")
    assert result.ret == 0
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "test_perf.py::test_b",
            "  latency: test not found — missing (run --perf-prune to drop it)",
            "perf: 2 ok, 0 regressed, 0 improved, 0 new, 0 not comparable, 1 missing",
        ]
    )
    result = _run(project, "--perf", "--perf-strict")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # a metric the test stopped recording is missing too
    project.makepyfile(test_perf=PERF_TESTS.replace(QUERIES_LINE, "pass"))
    result = _run(project, "--perf", "test_perf.py::test_a")
    result.stdout.fnmatch_lines(["  queries * 10 → — * missing"])
    result.assert_outcomes(passed=1)
    _run(project, "--perf", "--perf-strict", "test_perf.py::test_a").assert_outcomes(failed=1)


def test_update_merges_and_keeps_other_entries_byte_for_byte(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project)
    path = project.path / "perf-baseline.json"
    before = path.read_text(encoding="utf-8")
    monkeypatch.setenv("SCALE", "1.2")
    result = _update(project, "-k", "test_a", "--perf-accept")
    result.stdout.fnmatch_lines(["perf: baseline * updated: 1 test(s) written, 0 pruned"])
    after = path.read_text(encoding="utf-8")
    old, new = json.loads(before), json.loads(after)
    tests_old, tests_new = (
        old["environments"]["default"]["tests"],
        new["environments"]["default"]["tests"],
    )
    assert tests_new["test_perf.py::test_b"] == tests_old["test_perf.py::test_b"]
    assert tests_new["test_perf.py::test_a"]["metrics"]["queries"]["value"] == 12
    block = json.dumps(tests_old["test_perf.py::test_b"], sort_keys=True, indent=2)
    block = "\n".join(" " * 8 + line if i else line for i, line in enumerate(block.splitlines()))
    assert block in before
    assert block in after


def test_failed_tests_are_not_written(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(
        test_failing="""
        import pytest

        @pytest.mark.perf
        def test_broken(perf):
            perf.record("latency", [0.001] * 5)
            assert False, "the code under test is wrong"
        """
    )
    result = _run(project, "--perf", "--perf-update")
    result.assert_outcomes(passed=3, failed=1)
    tests = _baseline(project)["environments"]["default"]["tests"]
    assert "test_failing.py::test_broken" not in tests
    assert "test_perf.py::test_a" in tests
    # a regressed test fails --perf-update too and keeps its old entry ...
    path = project.path / "perf-baseline.json"
    before = path.read_bytes()
    monkeypatch.setenv("SCALE_A", "2")
    result = _run(project, "--perf", "--perf-update", "test_perf.py")
    result.assert_outcomes(passed=2, failed=1)
    assert path.read_bytes() == before
    # ... unless the regression is accepted explicitly
    result = _run(project, "--perf", "--perf-update", "--perf-accept", "test_perf.py")
    result.assert_outcomes(passed=3)
    metrics = _baseline(project)["environments"]["default"]["tests"]["test_perf.py::test_a"]
    assert metrics["metrics"]["queries"]["value"] == 20


def test_prune(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_other="""
        import pytest

        @pytest.mark.perf
        def test_kept(perf):
            perf.record("queries", 1, unit="count")
        """,
        test_deleted="""
        import pytest

        @pytest.mark.perf
        def test_x(perf):
            perf.record("queries", 1, unit="count")
        """,
    )
    _update(project)
    assert len(_baseline(project)["environments"]["default"]["tests"]) == 4
    (project.path / "test_deleted.py").unlink()
    project.makepyfile(test_perf=PERF_TESTS.replace("def test_b(perf)", "def _gone(perf)"))
    result = _run(project, "--perf", "--perf-prune", "test_perf.py")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["perf: baseline * updated: 0 test(s) written, 2 pruned"])
    tests = _baseline(project)["environments"]["default"]["tests"]
    # gone from a collected file, or the file is gone: dropped; a file not collected: kept
    assert set(tests) == {"test_perf.py::test_a", "test_other.py::test_kept"}


# ---------------------------------------------------------------------------------------------
# environments and machines


@pytest.mark.parametrize(
    ("args", "ini", "environ", "section"),
    [
        ([], None, None, "default"),
        (["--perf-env=cli"], None, None, "cli"),
        ([], "perf_env = ini", None, "ini"),
        ([], None, "envvar", "envvar"),
        ([], "perf_env = ini", "envvar", "ini"),
        (["--perf-env=cli"], "perf_env = ini", "envvar", "cli"),
    ],
)
def test_environment_sections(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    ini: str | None,
    environ: str | None,
    section: str,
) -> None:
    if ini:
        project.makeini(f"[pytest]\n{ini}\n")
    if environ:
        monkeypatch.setenv("PERF_ENV", environ)
    result = _update(project, *args)
    result.stdout.fnmatch_lines([f"*perf summary (env {section})*"])
    assert list(_baseline(project)["environments"]) == [section]


def test_sections_are_independent(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project, "--perf-env=fast")
    monkeypatch.setenv("SCALE", "2")
    _update(project, "--perf-env=slow")
    document = _baseline(project)
    assert set(document["environments"]) == {"fast", "slow"}
    _run(project, "--perf", "--perf-env=slow").assert_outcomes(passed=3)
    _run(project, "--perf", "--perf-env=fast").assert_outcomes(passed=1, failed=2)
    result = _run(project, "--perf", "--perf-env=other")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["perf: 0 ok, 0 regressed, 0 improved, 3 new, *"])


def test_other_machine_timings_not_comparable_counts_enforced(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _update(project)
    path = project.path / "perf-baseline.json"
    document = json.loads(path.read_text())
    (machine,) = document["environments"]["default"]["machines"].values()
    machine["cpu"] = "Some Other CPU @ 5 GHz"
    path.write_text(json.dumps(document, sort_keys=True, indent=2) + "\n")
    monkeypatch.setenv("SCALE_B", "3")  # a timing regression only
    result = _run(project, "--perf")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "test_perf.py::test_b",
            "  latency p50 * 20.* ms → 60.* ms * not comparable",
            "*warning: some timings were not compared*",
        ]
    )
    monkeypatch.setenv("SCALE_A", "3")  # timing and query count regress
    result = _run(project, "--perf")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["perf: queries 10 → 30 (+200 %, tolerance 10 %, exact): regressed"]
    )
    assert "latency p50 10" not in result.stdout.str().split("perf summary")[0]


# ---------------------------------------------------------------------------------------------
# bad baselines: usage error naming the file, no traceback, file untouched


def _valid_baseline(project: pytest.Pytester) -> dict[str, Any]:
    _update(project)
    return _baseline(project)


BAD_BASELINES = [
    ("unparsable", lambda d: '{"tool": "pytest-bridgeperf", ', "not valid JSON"),
    ("foreign", lambda d: '{"name": "package.json", "version": "1"}', "not a pytest-bridgeperf"),
    ("list", lambda d: "[]", "not a pytest-bridgeperf baseline"),
    ("newer", lambda d: {**d, "schema": 99}, "newer pytest-bridgeperf (schema 99)"),
    ("environments", lambda d: {**d, "environments": []}, "environments: expected an object"),
    (
        "metric value",
        lambda d: _deep_set(d, ["latency", "value"], "10ms"),
        ".metrics.latency.value: expected a finite number, got the string '10ms'",
    ),
    (
        "hdr",
        lambda d: _deep_set(d, ["latency", "hdr"], "HISTnonsense"),
        ".metrics.latency.hdr: not an HdrHistogram",
    ),
    ("unit", lambda d: _deep_set(d, ["queries", "unit"], "rows"), "unit: expected one of"),
]


def _deep_set(document: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    target = document["environments"]["default"]["tests"]["test_perf.py::test_a"]["metrics"]
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return document


@pytest.mark.parametrize(
    ("case", "make", "problem"), BAD_BASELINES, ids=[b[0] for b in BAD_BASELINES]
)
@pytest.mark.parametrize("mode", ["compare", "update"])
def test_bad_baseline_is_a_usage_error(
    project: pytest.Pytester, case: str, make: Any, problem: str, mode: str
) -> None:
    content = make(_valid_baseline(project))
    if not isinstance(content, str):
        content = json.dumps(content, indent=2)
    path = project.path / "perf-baseline.json"
    path.write_text(content, encoding="utf-8")
    before = path.read_bytes()
    args = ["--perf"] + (["--perf-update", "--perf-prune"] if mode == "update" else [])
    result = _run(project, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = _output(result)
    assert "Traceback" not in output
    result.stderr.fnmatch_lines([f"ERROR: {path}: *"])
    assert problem in result.stderr.str()
    assert path.read_bytes() == before
    assert sorted(p.name for p in project.path.iterdir() if "perf-baseline" in p.name) == [
        "perf-baseline.json"
    ]


def test_bad_baseline_ignored_without_perf(project: pytest.Pytester) -> None:
    (project.path / "perf-baseline.json").write_text("{")
    _run(project).assert_outcomes(passed=1, skipped=2)


# ---------------------------------------------------------------------------------------------
# the JSON report


def test_report(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _update(project)
    monkeypatch.setenv("SCALE_B", "1.5")
    result = _run(project, "--perf", "--perf-report=reports/perf.json")
    result.assert_outcomes(passed=2, failed=1)
    report = json.loads((project.path / "reports" / "perf.json").read_text(encoding="utf-8"))
    assert report["tool"] == "pytest-bridgeperf"
    assert report["environment"] == "default"
    assert report["baseline"] == str(project.path / "perf-baseline.json")
    assert report["settings"]["tolerance"] == pytest.approx(0.1)
    assert report["xdist"] is False
    assert report["totals"] == {
        "ok": 2,
        "regressed": 1,
        "improved": 0,
        "new": 0,
        "not comparable": 0,
        "missing": 0,
        "undecided": 0,
    }
    assert set(report["machine"]) == {"cores", "cpu", "platform", "python"}
    assert set(report["tests"]) == {"test_perf.py::test_a", "test_perf.py::test_b"}
    b = report["tests"]["test_perf.py::test_b"]
    assert b["outcome"] == "failed"
    assert b["tolerance"] == pytest.approx(0.1)
    (row,) = b["metrics"]
    assert row["name"] == "latency"
    assert row["verdict"] == "regressed"
    assert row["unit"] == "s"
    assert row["stat"] == "p50"
    assert row["baseline"] == pytest.approx(0.020, rel=0.03)
    assert row["current"] == pytest.approx(0.030, rel=0.03)
    assert row["change"] == pytest.approx(0.5, abs=0.01)
    assert 0 <= row["p_value"] < 0.01
    assert row["n"] == 30
    assert row["better"] == "lower"
    assert set(row["summary"]) >= {"p50", "p95", "p99", "max", "mean"}
    a = report["tests"]["test_perf.py::test_a"]
    assert a["outcome"] == "passed"
    assert {r["name"]: r["verdict"] for r in a["metrics"]} == {"latency": "ok", "queries": "ok"}


# ---------------------------------------------------------------------------------------------
# git merge of two branches that updated different tests


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_branches_updating_different_tests_merge_without_conflict(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project.path
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(key, raising=False)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.name", "Perf Tester")
    _git(root, "config", "user.email", "perf@example.invalid")
    _git(root, "config", "commit.gpgsign", "false")
    _update(project)
    _git(
        root,
        "add",
        "perf-baseline.json",
        "test_perf.py",
        "tox.ini" if (root / "tox.ini").exists() else "pytest.ini",
    )
    _git(root, "commit", "-q", "-m", "baseline")

    _git(root, "checkout", "-q", "-b", "faster-a")
    monkeypatch.setenv("SCALE_A", "0.5")
    _update(project, "-k", "test_a")
    _git(root, "commit", "-q", "-am", "a got faster")

    _git(root, "checkout", "-q", "main")
    monkeypatch.setenv("SCALE_A", "1")
    monkeypatch.setenv("SCALE_B", "0.5")
    _update(project, "-k", "test_b")
    _git(root, "commit", "-q", "-am", "b got faster")

    _git(root, "merge", "--no-edit", "-q", "faster-a")
    merged = _baseline(project)
    tests = merged["environments"]["default"]["tests"]
    assert tests["test_perf.py::test_a"]["metrics"]["queries"]["value"] == 5
    assert tests["test_perf.py::test_b"]["metrics"]["latency"]["value"] == pytest.approx(
        0.010, rel=0.03
    )
    text = (root / "perf-baseline.json").read_text()
    assert "<<<<<<<" not in text
    assert text == json.dumps(merged, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    # the merged file is a valid baseline both branches' values agree with
    monkeypatch.setenv("SCALE_A", "0.5")
    _run(project, "--perf").assert_outcomes(passed=3)


def test_environment_variable_cleanup() -> None:
    """The SCALE variables of these tests never leak into the outer session."""
    assert "SCALE" not in os.environ
