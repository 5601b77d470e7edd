"""The ``bridgeperf`` command: exit codes, output, bad input, merge and prune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import report_samples as samples

from pytest_bridgeperf.baseline import Baseline, machine_fingerprint
from pytest_bridgeperf.cli import main
from pytest_bridgeperf.report.document import load_report


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_exits_1_on_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, report = samples.write(tmp_path)
    code, out, err = run(capsys, "compare", str(baseline), str(report))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == f"perf: {report} against {baseline} (env default)"
    assert lines[1] in (samples.API, samples.MEMORY, samples.QUERIES)  # regressions come first
    assert "regressed" in out
    assert lines[-1] == ("perf: 4 ok, 4 regressed, 1 improved, 1 new, 0 not comparable, 0 missing")
    assert "\x1b[" not in out  # not a terminal: no colour


def test_compare_exits_0_without_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, report = samples.write(tmp_path, regress=False)
    code, out, _ = run(capsys, "compare", str(baseline), str(report))
    assert code == 0
    assert "0 regressed" in out


def test_compare_options_change_the_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, report = samples.write(tmp_path)
    assert run(capsys, "compare", str(baseline), str(report), "--tolerance", "500")[0] == 0
    code, out, _ = run(
        capsys, "compare", str(baseline), str(report), "--tolerance=500%", "--strict"
    )
    assert code == 1  # new and improved metrics fail under --strict
    code, out, _ = run(capsys, "compare", str(baseline), str(report), "-k", "mem")
    assert code == 1
    assert samples.MEMORY in out
    assert samples.API not in out
    code, out, _ = run(capsys, "compare", str(baseline), str(report), "-k", "cache or odd")
    assert code == 0
    assert "perf: 7 baseline test(s) not in the report" not in out
    assert "baseline test(s) not in the report" not in out  # -k narrows the baseline side too


def test_compare_verbose_and_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline, report = samples.write(tmp_path)
    _, out, _ = run(capsys, "compare", str(baseline), str(report), "-v", "--color=yes")
    assert "\x1b[31;1mregressed\x1b[0m" in out
    assert "      basis: tolerance 10 %, exact" in out
    assert "budget p99 ≤ 20.0 ms:" in out


def test_compare_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline, report = samples.write(tmp_path)
    out_dir = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "compare",
        str(baseline),
        str(report),
        "--tolerance=500",
        f"--json={out_dir / 'r.json'}",
        f"--markdown={out_dir / 'r.md'}",
        f"--html={out_dir / 'r.html'}",
        f"--openmetrics={out_dir / 'r.prom'}",
    )
    assert code == 0
    again = load_report(out_dir / "r.json")
    assert again["totals"]["regressed"] == 0
    assert again["settings"]["tolerance"] == 5.0
    headline = (out_dir / "r.md").read_text().splitlines()[0]
    assert headline.startswith("## 🔴 Performance: 0 regressed")  # the p99 budget still fails
    assert headline.endswith(" · 1 test(s) over budget")
    assert "<svg" in (out_dir / "r.html").read_text()
    assert (out_dir / "r.prom").read_text().endswith("# EOF\n")


def test_compare_with_an_unknown_environment_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, report = samples.write(tmp_path)
    code, out, _ = run(capsys, "compare", str(baseline), str(report), "--env", "ci")
    assert code == 0
    assert "has no environment 'ci' (it has: default); every metric is new" in out
    assert "0 regressed" in out


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("report", None, "report.json: no such file"),
        ("baseline", None, "baseline.json: no such file"),
        ("report", "{not json", "report.json: not valid JSON (line 1, column 2"),
        ("baseline", "[1, 2", "baseline.json: not valid JSON"),
        ("report", '{"tool": "other"}', "not a pytest-bridgeperf report"),
        ("baseline", '{"tool": "pytest-bridgeperf", "schema": 1}', "environments"),
        ("report", "DIR", "report.json: is a directory"),
        ("baseline", "DIR", "baseline.json: is a directory"),
        ("report", '{"a": 1, "a": 2}', 'report.json: duplicate key "a"'),
        ("baseline", '{"tool": "x", "tool": "y"}', 'baseline.json: duplicate key "tool"'),
        ("report", b"\xff\xfe{}", "report.json: cannot be read: not UTF-8 text"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    content: str | bytes | None,
    message: str,
) -> None:
    baseline, report = samples.write(tmp_path)
    target = baseline if which == "baseline" else report
    target.unlink()
    if content == "DIR":
        target.mkdir()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    elif content is not None:
        target.write_text(content)
    code, out, err = run(capsys, "compare", str(baseline), str(report))
    assert code == 2
    assert out == ""
    assert err.startswith("bridgeperf: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_baseline_given_as_the_report_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, _ = samples.write(tmp_path)
    code, _, err = run(capsys, "compare", str(baseline), str(baseline))
    assert code == 2
    assert "baseline.json: a baseline file, not a report" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["compare", "only-one.json"],
        ["compare", "a.json", "b.json", "--tolerance", "lots"],
        ["compare", "a.json", "b.json", "--alpha", "2"],
        ["show"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    # one line: what is wrong and where to look, not argparse's usage block
    assert err.startswith("bridgeperf")
    assert "error: " in err
    assert err.endswith("--help)\n")
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (None, ["compare", "show", "merge", "prune", "Exit status"]),
        ("compare", ["BASELINE", "REPORT", "--tolerance", "--strict", "--markdown", "-k EXPR"]),
        ("show", ["BASELINE", "-k EXPR", "--env NAME"]),
        ("merge", ["OUT", "IN", "--base"]),
        ("prune", ["BASELINE", "--rootdir", "--dry-run"]),
    ],
)
def test_help(command: str | None, words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"] if command else ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    baseline, report = samples.write(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest_bridgeperf", "compare", str(baseline), str(report)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "regressed" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pytest_bridgeperf", "show", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr == f"bridgeperf: error: {tmp_path / 'nope.json'}: no such file\n"


# ---------------------------------------------------------------------------------------------
# show


def test_show_lists_tests_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline, _ = samples.write(tmp_path)
    code, out, _ = run(capsys, "show", str(baseline))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "environment default — 6 test(s)"
    assert samples.API in lines
    row = next(line for line in lines if line.strip().startswith("GET /api/v1/dashboards p50"))
    assert "n = 3000" in row
    assert "timing-like, lower is better" in row
    queries = next(line for line in lines if line.strip().startswith("queries"))
    assert queries.split()[1] == "4"
    assert "2 distinct statement(s); exact" in queries


def test_show_selects_with_k_and_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline, _ = samples.write(tmp_path)
    _, out, _ = run(capsys, "show", str(baseline), "-k", "db and queries", "-v")
    assert samples.QUERIES in out
    assert samples.API not in out
    assert "   3× SELECT * FROM settings WHERE connector_id = ?" in out
    _, out, _ = run(capsys, "show", str(baseline), "-k", "nothing_matches")
    assert "no tests matching -k 'nothing_matches'" in out
    code, _, err = run(capsys, "show", str(baseline), "--env", "ci")
    assert code == 2
    assert "no environment 'ci' (it has: default)" in err
    code, _, err = run(capsys, "show", str(baseline), "-k", "api and (")
    assert code == 2
    assert "unexpected end of the expression" in err


# ---------------------------------------------------------------------------------------------
# merge and prune


def _baseline(path: Path, values: dict[str, float], env: str = "default") -> Path:
    baseline = Baseline.load(path)
    for nodeid, value in values.items():
        entry = {
            "better": "lower",
            "noisy": False,
            "stat": "value",
            "unit": "count",
            "value": value,
        }
        baseline.set_test(env, nodeid, {"queries": entry}, machine_fingerprint())
    baseline.save()
    return path


def _values(path: Path, env: str = "default") -> dict[str, float]:
    baseline = Baseline.load(path)
    return {n: baseline.metrics(env, n)["queries"].value for n in baseline.tests(env)}


def test_merge_with_a_base_keeps_every_jobs_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _baseline(tmp_path / "base.json", {"t.py::a": 1, "t.py::b": 2, "t.py::c": 3})
    job1 = _baseline(tmp_path / "job1.json", {"t.py::a": 10, "t.py::b": 2, "t.py::c": 3})
    job2 = _baseline(tmp_path / "job2.json", {"t.py::a": 1, "t.py::b": 20, "t.py::new": 5})
    code, out, _ = run(capsys, "merge", str(base), str(job1), str(job2), "--base", str(base))
    assert code == 0
    # job1 changed a; job2 changed b, added new and pruned c
    assert _values(base) == {"t.py::a": 10, "t.py::b": 20, "t.py::new": 5}
    assert f"wrote {base}: 1 from {job1}, 2 from {job2}; 1 removed" in out
    assert "warning" not in out


def test_merge_without_a_base_unites_and_the_later_input_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _baseline(tmp_path / "one.json", {"t.py::a": 1, "t.py::b": 2})
    two = _baseline(tmp_path / "two.json", {"t.py::b": 20, "t.py::c": 3})
    _baseline(two, {"t.py::x": 9}, env="ci")
    out_path = tmp_path / "merged.json"
    code, out, _ = run(capsys, "merge", str(out_path), str(one), str(two))
    assert code == 0
    assert _values(out_path) == {"t.py::a": 1, "t.py::b": 20, "t.py::c": 3}
    assert _values(out_path, "ci") == {"t.py::x": 9}
    assert "warning: changed by two inputs, the later won: default: t.py::b" in out
    text = out_path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text)["tool"] == "pytest-bridgeperf"


def test_merge_refuses_bad_inputs_and_leaves_out_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _baseline(tmp_path / "good.json", {"t.py::a": 1})
    before = good.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text('{"tool": "pytest-bridgeperf", "schema": 1, "environments": {"default": 3}}')
    code, _, err = run(capsys, "merge", str(good), str(good), str(bad))
    assert code == 2
    assert err.startswith(f"bridgeperf: error: {bad}: environments.default: expected an object")
    assert good.read_text() == before
    code, _, err = run(capsys, "merge", str(good), str(tmp_path / "missing.json"))
    assert code == 2
    assert "missing.json: no such file" in err


def test_prune_drops_entries_of_deleted_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kept.py").write_text("")
    path = _baseline(
        tmp_path / "perf-baseline.json",
        {"tests/test_kept.py::test_a": 1, "tests/test_gone.py::test_b": 2},
    )
    before = path.read_text()
    code, out, _ = run(capsys, "prune", str(path), "--dry-run")
    assert code == 0
    assert "would drop [default] tests/test_gone.py::test_b: tests/test_gone.py not found" in out
    assert path.read_text() == before
    code, out, _ = run(capsys, "prune", str(path))
    assert code == 0
    assert _values(path) == {"tests/test_kept.py::test_a": 1}
    assert "1 entry dropped" in out


def test_prune_with_k_drops_selected_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _baseline(tmp_path / "b.json", {"t.py::test_old_a": 1, "t.py::test_b": 2})
    code, _, _ = run(capsys, "prune", str(path), "-k", "old", "--rootdir", str(tmp_path))
    assert code == 0
    assert _values(path) == {"t.py::test_b": 2}
    code, _, err = run(capsys, "prune", str(path), "--rootdir", str(tmp_path / "nope"))
    assert code == 2
    assert "not a directory (--rootdir)" in err


def test_compare_a_real_run(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    """A report written by ``pytest --perf`` judged offline gives the run's own verdicts."""
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.perf
        def test_q(perf):
            perf.record("rows", int(os.environ.get("ROWS", "10")), unit="count")
            perf.record("t", [0.001 * (1 + i % 7) for i in range(50)])
        """
    )
    pytester.runpytest("--perf-update").assert_outcomes(passed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROWS", "15")
        pytester.runpytest("--perf", "--perf-report=r.json").assert_outcomes(failed=1)
    run_report = load_report(pytester.path / "r.json")
    code, _, _ = run(
        capsys,
        "compare",
        str(pytester.path / "perf-baseline.json"),
        str(pytester.path / "r.json"),
        f"--json={pytester.path / 'again.json'}",
    )
    assert code == 1
    again = load_report(pytester.path / "again.json")
    verdicts = {
        r["name"]: r["verdict"]
        for r in again["tests"]["test_compare_a_real_run.py::test_q"]["metrics"]
    }
    # the run's own verdicts ("t": 50 samples spread over 1-7 ms bound their median only to about
    # ±15 %, so against a 10 % tolerance the verdict is honest about not knowing)
    run_verdicts = {
        r["name"]: r["verdict"]
        for r in run_report["tests"]["test_compare_a_real_run.py::test_q"]["metrics"]
    }
    assert verdicts == run_verdicts
    assert verdicts == {"rows": "regressed", "t": "undecided"}
    assert again["totals"] == run_report["totals"]


# ---------------------------------------------------------------------------------------------
# hostile input: every bad input is one line on stderr and exit 2


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_a_report_given_as_the_baseline_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = samples.write(tmp_path)
    err = _one_line_error(capsys, ["compare", str(report), str(report)])
    assert f"{report}: this is a --perf-report file" in err
    assert "not a baseline" in err
    err = _one_line_error(capsys, ["show", str(report)])
    assert "this is a --perf-report file" in err


@pytest.mark.parametrize("command", ["show", "prune", "merge-out", "compare-report"])
def test_devices_and_pipes_are_refused_without_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`bridgeperf show /dev/zero` read until the kernel killed it; a FIFO would block."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    baseline, _ = samples.write(tmp_path)
    for source in ("/dev/zero", str(fifo)):
        argv = {
            "show": ["show", source],
            "prune": ["prune", source],
            "merge-out": ["merge", str(tmp_path / "out.json"), source],
            "compare-report": ["compare", str(baseline), source],
        }[command]
        err = _one_line_error(capsys, argv)
        assert f"{source}: not a regular file" in err


def test_files_over_the_size_limit_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_bridgeperf import baseline as baseline_module

    baseline, report = samples.write(tmp_path)
    monkeypatch.setattr(baseline_module, "MAX_FILE_SIZE", baseline.stat().st_size)
    assert run(capsys, "show", str(baseline))[0] == 0  # at the limit: read
    monkeypatch.setattr(baseline_module, "MAX_FILE_SIZE", baseline.stat().st_size - 1)
    err = _one_line_error(capsys, ["show", str(baseline)])
    assert f"{baseline}: larger than" in err
    assert "the limit for a baseline file" in err
    monkeypatch.setattr(baseline_module, "MAX_FILE_SIZE", report.stat().st_size - 1)
    err = _one_line_error(capsys, ["compare", str(report), str(report)])
    assert "the limit for a" in err


def test_sparse_huge_file_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 40)  # 1 TiB, sparse: costs no disk, would cost the reader everything
    err = _one_line_error(capsys, ["show", str(huge)])
    assert "larger than 64 MiB" in err


@pytest.mark.parametrize("form", [["--tolerance", "-5%"], ["--tolerance=-5%"]])
def test_negative_option_values_are_parsed_then_refused_by_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: list[str]
) -> None:
    baseline, report = samples.write(tmp_path)
    err = _one_line_error(capsys, ["compare", str(baseline), str(report), *form])
    assert "argument --tolerance: invalid percentage '-5%': must be a finite, non-negative" in err


def test_option_values_starting_with_a_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, report = samples.write(tmp_path)
    # -k takes "-x" as its expression (which selects nothing here)
    code, out, _ = run(capsys, "compare", str(baseline), str(report), "-k", "-x")
    assert code == 0
    assert "perf: 0 ok, 0 regressed" in out
    # a known option after a value option is still an option: the value is missing
    err = _one_line_error(capsys, ["compare", str(baseline), str(report), "--env", "-v"])
    assert "argument --env: expected one argument" in err
    code, out, _ = run(capsys, "compare", str(baseline), str(report), "--tolerance", "+500%")
    assert code == 0


def test_every_value_option_is_known_to_the_dash_rule() -> None:
    from pytest_bridgeperf.cli import _value_options, build_parser

    options = _value_options(build_parser())
    assert {"--tolerance", "--min-delta", "--alpha", "--env", "-k", "--json", "--base"} <= options
    assert {"--resolve", "--rootdir", "--color"} <= options
    assert "--strict" not in options


def test_resolve_names_the_side_that_is_not_a_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _baseline(tmp_path / "good.json", {"t.py::a": 1}).read_text()
    path = tmp_path / "perf-baseline.json"
    path.write_text(f"<<<<<<< HEAD\n{good}=======\n{{broken\n>>>>>>> feature\n")
    before = path.read_text()
    err = _one_line_error(capsys, ["merge", "--resolve", str(path)])
    assert f"{path} (theirs: the >>>>>>> side of the conflict): not valid JSON" in err
    assert path.read_text() == before
    path.write_text(f"<<<<<<< HEAD\n{good}=======\n{good}")
    err = _one_line_error(capsys, ["merge", "--resolve", str(path)])
    assert "has no closing >>>>>>> marker" in err
    path.write_text(good)
    code, out, _ = run(capsys, "merge", "--resolve", str(path))
    assert code == 0
    assert "no git conflict markers, nothing to resolve" in out
    err = _one_line_error(capsys, ["merge", "--resolve", str(path), str(path)])
    assert "merge --resolve FILE takes no other files" in err
    err = _one_line_error(capsys, ["merge", str(path)])
    assert "merge needs OUT and at least one IN" in err
