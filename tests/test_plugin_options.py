"""Options, ini keys, markers and their validation, as a user meets them."""

from __future__ import annotations

import json
from typing import Any

import hypothesis  # noqa: F401  (imported once here: inner runs would re-import it each time)
import pytest

from pytest_bridgeperf.metrics import BUDGET_KEYS

SETTINGS_PROBE = """
import json
from dataclasses import asdict
from pytest_bridgeperf.plugin import settings_key

def test_settings(request):
    settings = asdict(request.config.stash[settings_key])
    print("SETTINGS " + json.dumps(settings, default=str))
"""


def _settings(pytester: pytest.Pytester, *args: str) -> dict[str, Any]:
    pytester.makepyfile(test_probe=SETTINGS_PROBE)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    for line in result.outlines:
        if "SETTINGS " in line:
            return json.loads(line.split("SETTINGS ", 1)[1])  # type: ignore[no-any-return]
    raise AssertionError("settings probe printed nothing")


def test_help_shows_the_perf_group_and_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "performance regression testing (pytest-bridgeperf):",
            "  --perf *run tests marked perf*",
            "  --perf-baseline=PATH*",
            "  --perf-update *",
            "  --perf-accept *",
            "  --perf-prune *",
            "  --perf-tolerance=PCT*",
            "  --perf-env=NAME*",
            "  --perf-report=PATH*",
            "  --perf-strict *",
            "  --perf-min-delta=DURATION*",
            "  --perf-memory-lines*",
        ]
    )
    text = result.stdout.str()
    assert "default: 10%" in text
    assert "PERF_ENV" in text
    for ini in (
        "perf ",
        "perf_baseline ",
        "perf_tolerance ",
        "perf_env ",
        "perf_strict ",
        "perf_min_delta ",
        "perf_memory_lines ",
        "perf_alpha ",
        "perf_allowed_hosts ",
        "perf_max_duration ",
    ):
        result.stdout.fnmatch_lines([f"  {ini}*"])


def test_markers_document_perf_and_every_budget(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["@pytest.mark.perf(**budgets): a performance test, run only*"])
    line = next(x for x in result.outlines if x.startswith("@pytest.mark.perf("))
    for key in BUDGET_KEYS:
        assert f"{key}: " in line, key
    assert "'50ms'" in line
    assert "'64MiB'" in line


# ---------------------------------------------------------------------------------------------
# every option CLI-only and ini-only (STYLE.md item 8)

OPTIONS = [
    # (setting, CLI args, ini line, expected)
    ("enabled", ["--perf"], "perf = true", True),
    ("tolerance", ["--perf-tolerance=25"], "perf_tolerance = 25%", 0.25),
    ("env", ["--perf-env=ci"], "perf_env = ci", "ci"),
    ("strict", ["--perf-strict"], "perf_strict = true", True),
    ("min_delta", ["--perf-min-delta=2ms"], "perf_min_delta = 2ms", 0.002),
    ("memory_lines", ["--perf-memory-lines"], "perf_memory_lines = true", True),
]
DEFAULTS = {
    "enabled": False,
    "tolerance": 0.10,
    "env": "default",
    "strict": False,
    "min_delta": 0.0,
    "memory_lines": False,
}


@pytest.mark.parametrize(("setting", "args", "ini", "expected"), OPTIONS)
def test_option_cli_only(
    pytester: pytest.Pytester, setting: str, args: list[str], ini: str, expected: object
) -> None:
    assert _settings(pytester)[setting] == pytest.approx(DEFAULTS[setting])
    assert _settings(pytester, *args)[setting] == pytest.approx(expected)


@pytest.mark.parametrize(("setting", "args", "ini", "expected"), OPTIONS)
def test_option_ini_only(
    pytester: pytest.Pytester, setting: str, args: list[str], ini: str, expected: object
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    assert _settings(pytester)[setting] == pytest.approx(expected)


def test_baseline_path_cli_and_ini(pytester: pytest.Pytester) -> None:
    root = pytester.path
    assert _settings(pytester)["baseline_path"] == str(root / "perf-baseline.json")
    assert _settings(pytester, "--perf-baseline=perf/cli.json")["baseline_path"] == str(
        root / "perf" / "cli.json"
    )
    absolute = root / "abs.json"
    assert _settings(pytester, f"--perf-baseline={absolute}")["baseline_path"] == str(absolute)
    pytester.makeini("[pytest]\nperf_baseline = perf/ini.json\n")
    assert _settings(pytester)["baseline_path"] == str(root / "perf" / "ini.json")
    assert _settings(pytester, "--perf-baseline=cli.json")["baseline_path"] == str(
        root / "cli.json"
    )


def test_ini_only_settings(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nperf_alpha = 0.05\nperf_max_duration = 5s\n"
        "perf_allowed_hosts =\n    staging.example\n    10.0.0.1\n"
    )
    settings = _settings(pytester)
    assert settings["alpha"] == 0.05
    assert settings["max_duration"] == 5.0
    assert settings["allowed_hosts"] == ["staging.example", "10.0.0.1"]


def test_cli_only_settings(pytester: pytest.Pytester) -> None:
    settings = _settings(
        pytester, "--perf-update", "--perf-accept", "--perf-prune", "--perf-report=out/r.json"
    )
    assert settings["update"] is True
    assert settings["accept"] is True
    assert settings["prune"] is True
    assert settings["enabled"] is True  # updating implies running the perf tests
    assert settings["report_path"] == str(pytester.path / "out" / "r.json")


def test_cli_overrides_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nperf_tolerance = 5%\nperf_min_delta = 1ms\nperf = false\n")
    settings = _settings(pytester, "--perf", "--perf-tolerance=20", "--perf-min-delta=3ms")
    assert settings["enabled"] is True
    assert settings["tolerance"] == pytest.approx(0.20)
    assert settings["min_delta"] == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("cli", "ini", "environ", "expected"),
    [
        (None, None, None, "default"),
        (None, None, "from-env", "from-env"),
        (None, "from-ini", "from-env", "from-ini"),
        ("from-cli", "from-ini", "from-env", "from-cli"),
        ("from-cli", None, "from-env", "from-cli"),
    ],
)
def test_env_precedence(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    cli: str | None,
    ini: str | None,
    environ: str | None,
    expected: str,
) -> None:
    if environ is None:
        monkeypatch.delenv("PERF_ENV", raising=False)
    else:
        monkeypatch.setenv("PERF_ENV", environ)
    if ini is not None:
        pytester.makeini(f"[pytest]\nperf_env = {ini}\n")
    args = [f"--perf-env={cli}"] if cli else []
    assert _settings(pytester, *args)["env"] == expected


# ---------------------------------------------------------------------------------------------
# invalid values: usage errors naming the option


@pytest.mark.parametrize(
    ("args", "ini", "names"),
    [
        (["--perf-tolerance=lots"], None, "--perf-tolerance"),
        (["--perf-tolerance=-5"], None, "--perf-tolerance"),
        (["--perf-tolerance=nan"], None, "--perf-tolerance"),
        ([], "perf_tolerance = ten", "perf_tolerance"),
        (["--perf-min-delta=fast"], None, "--perf-min-delta"),
        ([], "perf_min_delta = -1ms", "perf_min_delta"),
        ([], "perf_alpha = 2", "perf_alpha"),
        ([], "perf_alpha = often", "perf_alpha"),
        ([], "perf_max_duration = forever", "perf_max_duration"),
        (["--perf-accept"], None, "--perf-accept"),
    ],
)
def test_invalid_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], ini: str | None, names: str
) -> None:
    if ini is not None:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert names in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_invalid_option_values_with_perf(pytester: pytest.Pytester) -> None:
    """Checked before anything runs, with and without --perf."""
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest("--perf", "--perf-tolerance=%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --perf-tolerance*'%'*"])
    assert "passed" not in result.stdout.str()


# ---------------------------------------------------------------------------------------------
# invalid marker arguments: usage errors naming the test


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ('p95="fast"', "budget p95='fast'"),
        ('memory="64 furlongs"', "budget memory='64 furlongs'"),
        ("queries=-1", "budget queries=-1"),
        ("bogus=1", "unknown budget bogus=1"),
        ('"50ms"', "keyword budgets only"),
        ('tolerance="lots"', "budget tolerance='lots'"),
    ],
)
@pytest.mark.parametrize("perf", [True, False])
def test_invalid_marker_arguments(
    pytester: pytest.Pytester, marker: str, expected: str, perf: bool
) -> None:
    pytester.makepyfile(
        test_marked=f"""
        import pytest

        def test_fine():
            pass

        @pytest.mark.perf({marker})
        def test_broken(perf):
            pass
        """
    )
    result = pytester.runpytest(*(["--perf"] if perf else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_marked.py::test_broken: *{expected}*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_class_marker_budgets_merge_with_function_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(p95="1ms", max="1s")
        class TestA:
            @pytest.mark.perf(p95="50ms")
            def test_one(self, perf):
                perf.record("latency", [0.010] * 20)
        """
    )
    result = pytester.runpytest("--perf", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
