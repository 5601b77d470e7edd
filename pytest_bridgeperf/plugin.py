"""pytest hooks: options, the ``perf`` marker, budgets, baseline comparison and the summary.

The measuring and baseline code lives in pytest-free modules; this module wires them to pytest.
State lives on ``config.stash`` / ``item.stash`` only.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .baseline import (
    Baseline,
    BaselineError,
    BaselineMetric,
    machine_fingerprint,
    machine_id,
    metric_entry,
)
from .compare import VERDICTS, Verdict, judge, verdict_row
from .metrics import BUDGET_HELP, BUDGET_KEYS, Budgets, Metric, Recorder, check_budgets
from .report.junit import junit_properties
from .settings import DEFAULTS, Settings, SettingsError, resolve
from .units import format_value

pytest_plugins = ["pytest_bridgeperf.fixtures"]

__all__ = ["baseline_value", "recorder_for", "settings_key"]

SKIP_REASON = "perf test: run with --perf"

settings_key = pytest.StashKey[Settings]()
_recorder_key = pytest.StashKey[Recorder]()
_budgets_key = pytest.StashKey[Budgets]()
_outcome_key = pytest.StashKey[dict[str, Any]]()

#: Marker budgets that need the whole test body measured, and the module that measures them.
_BODY_PROBES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("queries",), "pytest_bridgeperf.queries"),
    (("memory", "rss"), "pytest_bridgeperf.memory"),
)


def recorder_for(item: pytest.Item) -> Recorder:
    """The metric recorder of ``item`` (created on first use)."""
    recorder = item.stash.get(_recorder_key, None)
    if recorder is None:
        recorder = item.stash[_recorder_key] = Recorder()
    return recorder


def baseline_value(item: pytest.Item, metric: str) -> float | None:
    """The baseline's compared value of ``metric`` for ``item`` (None without --perf or entry)."""
    session = item.config.pluginmanager.get_plugin("bridgeperf-session")
    if not isinstance(session, PerfSession):
        return None
    found = session.baseline.metrics(session.settings.env, item.nodeid).get(metric)
    return None if found is None else float(found.value)


# ---------------------------------------------------------------------------------------------
# options


def _marker_help() -> str:
    budgets = "; ".join(f"{key}: {BUDGET_HELP[key]}" for key in BUDGET_KEYS)
    return (
        "perf(**budgets): a performance test, run only with --perf; its metrics are compared "
        f"with the baseline. Budgets are absolute limits checked on every run — {budgets}. "
        "Durations like '50ms', sizes like '64MB'/'64MiB', percentages like '1%'."
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perf", "performance regression testing (pytest-bridgeperf)")

    def flag(name: str, ini: str | None, help: str) -> None:
        group.addoption(
            name, action="store_true", default=None, dest=name[2:].replace("-", "_"), help=help
        )
        if ini:
            parser.addini(ini, f"{help} (ini form of {name})", type="bool", default=False)

    def value(name: str, ini: str | None, metavar: str, help: str) -> None:
        dest = name[2:].replace("-", "_")
        default = DEFAULTS.get(dest)
        shown = f" (default: {default})" if default else ""
        # argparse %-formats help texts: a literal "10%" default would crash `pytest --help`
        cli_help = (help + shown).replace("%", "%%")
        group.addoption(
            name, action="store", default=None, dest=dest, metavar=metavar, help=cli_help
        )
        if ini:
            # perf_env's default must stay unset here, or the ini would always shadow PERF_ENV
            ini_default = None if dest == "perf_env" else default
            parser.addini(ini, help + shown, default=ini_default)

    flag("--perf", "perf", "run tests marked perf and compare their metrics with the baseline")
    value("--perf-baseline", "perf_baseline", "PATH", "baseline JSON file, relative to the rootdir")
    flag("--perf-update", None, "write this run's passing results into the baseline (merging)")
    flag(
        "--perf-accept",
        None,
        "with --perf-update: accept regressions (do not fail them) and write them too",
    )
    flag(
        "--perf-prune",
        None,
        "drop baseline entries of tests that no longer exist in the collected files",
    )
    value("--perf-tolerance", "perf_tolerance", "PCT", "allowed regression before a test fails")
    value(
        "--perf-env",
        "perf_env",
        "NAME",
        "baseline section to compare with (also env PERF_ENV)",
    )
    value("--perf-report", None, "PATH", "write every metric, its baseline and verdict as JSON")
    value(
        "--perf-markdown",
        "perf_markdown",
        "PATH",
        "write a Markdown summary",
    )
    parser.addini(
        "perf_step_summary",
        "append the Markdown summary to $GITHUB_STEP_SUMMARY when it is set (default: true)",
        type="bool",
        default=True,
    )
    value(
        "--perf-html",
        "perf_html",
        "PATH",
        "write a self-contained HTML report with latency percentile plots",
    )
    value(
        "--perf-openmetrics",
        "perf_openmetrics",
        "PATH",
        "write the results in the OpenMetrics text format (Prometheus textfile/Pushgateway)",
    )
    flag(
        "--perf-strict",
        "perf_strict",
        "also fail on stale baselines (improvements), new and missing entries",
    )
    value(
        "--perf-min-delta",
        "perf_min_delta",
        "DURATION",
        "absolute floor: smaller timing changes never count as regressions",
    )
    value(
        "--perf-confirm",
        "perf_confirm",
        "N",
        "rerun a test whose timings regressed up to N times; fail only if it reproduces",
    )
    flag(
        "--perf-memory-lines",
        "perf_memory_lines",
        "for a test that broke its memory budget, add a line-by-line memory report",
    )
    parser.addini(
        "perf_alpha",
        f"significance level of the timing regression test (default: {DEFAULTS['perf_alpha']})",
        default=DEFAULTS["perf_alpha"],
    )
    parser.addini(
        "perf_allowed_hosts",
        "hosts besides loopback that perf_load may send requests to",
        type="linelist",
        default=[],
    )
    parser.addini(
        "perf_max_duration",
        f"hard cap of one load run (default: {DEFAULTS['perf_max_duration']})",
        default=DEFAULTS["perf_max_duration"],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _marker_help())
    names = (
        "perf", "perf_baseline", "perf_update", "perf_accept", "perf_prune", "perf_tolerance",
        "perf_env", "perf_report", "perf_strict", "perf_min_delta", "perf_memory_lines",
        "perf_confirm",
        "perf_markdown", "perf_html", "perf_openmetrics",
    )  # fmt: skip
    cli = {name: config.getoption(name, None) for name in names}
    cli["quiet"] = config.get_verbosity() < 0
    try:
        settings = resolve(cli, config.getini, config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[settings_key] = settings
    if settings.enabled:
        try:
            baseline = Baseline.load(settings.baseline_path)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
        session = PerfSession(config, settings, baseline)
        config.pluginmanager.register(session, "bridgeperf-session")
        # xdist's hooks are unknown to pluggy without xdist: register them only beside it
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistHooks(session), "bridgeperf-xdist")


class _XdistHooks:
    """The xdist controller's side of the session."""

    def __init__(self, session: PerfSession) -> None:
        self.session = session

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker finished: note its full collection (before deselection), for missing/prune."""
        for nodeid in getattr(node, "workeroutput", {}).get("bridgeperf_collected", []):
            self.session.note_collected(nodeid)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so validation covers every perf test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = config.stash[settings_key].enabled
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        marker = item.get_closest_marker("perf")
        if marker is None:
            continue
        # validated even without --perf, so a typo fails the everyday run, not only CI's
        item.stash[_budgets_key] = _parse_budgets(item)
        if not enabled:
            item.add_marker(skip)


def _parse_budgets(item: pytest.Item) -> Budgets:
    merged: dict[str, Any] = {}
    # iter_markers yields the closest marker first: apply it last, so a function's budgets
    # override its class's and module's
    for marker in reversed(list(item.iter_markers("perf"))):
        if marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.perf takes keyword budgets only "
                f"(e.g. p95='50ms'), got positional {marker.args!r}"
            )
        merged.update(marker.kwargs)
    try:
        return Budgets.parse(merged)
    except ValueError as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.perf: {exc}") from None


# ---------------------------------------------------------------------------------------------
# the session (registered only with --perf)


@dataclass
class _Evaluation:
    failures: list[str]  # the failure message, line by line; empty when the test passes
    confirmable: bool  # every failure is a timing-like regression: worth a confirming rerun
    payload: dict[str, Any]  # what the report and the baseline update get


@dataclass
class _TestOutcome:
    payload: dict[str, Any] | None = None
    failed: bool = False


class PerfSession:
    """Compares metrics with the baseline, collects results (also from xdist workers), writes the
    baseline, the JSON report and the terminal summary."""

    def __init__(self, config: pytest.Config, settings: Settings, baseline: Baseline) -> None:
        self.config = config
        self.settings = settings
        self.baseline = baseline
        self.fingerprint = machine_fingerprint()
        self.machine = machine_id(self.fingerprint)
        self.worker = hasattr(config, "workerinput")
        self.outcomes: dict[str, _TestOutcome] = {}
        self.collected: set[str] = set()
        self.collected_files: set[str] = set()
        self.from_workers = False
        self.missing_tests: list[tuple[str, list[str]]] = []
        self.written: list[str] = []
        self.pruned: list[str] = []
        self.report_errors: list[str] = []

    # collection ------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # see every collected test, before -k/-m deselect some
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.note_collected(item.nodeid)
        if self.worker:
            output: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
            output["bridgeperf_collected"] = sorted(self.collected)

    def note_collected(self, nodeid: str) -> None:
        self.collected.add(nodeid)
        self.collected_files.add(nodeid.split("::", 1)[0])

    # running ---------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        recorder = recorder_for(item)
        budgets = item.stash.get(_budgets_key, None)
        with contextlib.ExitStack() as stack:
            if budgets is not None:
                for keys, module in _BODY_PROBES:
                    if any(getattr(budgets, key) is not None for key in keys):
                        probe = importlib.import_module(module).body_probe
                        cm = probe(budgets, recorder, self.settings, _rerun(item))
                        if cm is not None:
                            stack.enter_context(cm)
            result = yield
        budgets = budgets or Budgets()
        evaluation = self._evaluate(item, recorder, budgets)
        reruns = 0
        first_failure = ""
        while evaluation.confirmable and reruns < self.settings.confirm:
            # A timing regression on a shared machine may be a slow spell of the machine, not
            # of the code: measure the test body once more and fail only if it reproduces.
            reruns += 1
            first_failure = first_failure or evaluation.failures[0]
            earlier, recorder.metrics = recorder.metrics, {}
            item.runtest()
            for name, metric in earlier.items():  # metrics of body probes, not re-measured
                recorder.metrics.setdefault(name, metric)
            evaluation = self._evaluate(item, recorder, budgets)
        if reruns:
            note = (
                f"confirmed by {reruns} rerun(s)"
                if evaluation.failures
                else f"first run {first_failure.removeprefix('perf: ')}; not reproduced on rerun"
            )
            evaluation.payload["confirmation"] = note
            if evaluation.failures:
                evaluation.failures.insert(1, f"  ({note})")
        item.stash[_outcome_key] = evaluation.payload
        item.user_properties.extend(junit_properties(evaluation.payload["metrics"]))
        if evaluation.failures:
            pytest.fail("\n".join(evaluation.failures), pytrace=False)
        return result

    def _evaluate(self, item: pytest.Item, recorder: Recorder, budgets: Budgets) -> _Evaluation:
        """Budgets and baseline verdicts of the test's metrics."""
        settings = self.settings
        tolerance = budgets.tolerance if budgets.tolerance is not None else settings.tolerance
        env = settings.env
        base_metrics = self.baseline.metrics(env, item.nodeid)
        base_machine = self.baseline.machine_of(env, item.nodeid)
        comparable = base_machine is None or machine_id(base_machine) == self.machine
        checks = check_budgets(recorder.metrics.values(), budgets)
        failures: list[str] = []
        explain: dict[str, str] = {}
        for check in checks:
            if not check.passed:
                line = check.describe()
                base = base_metrics.get(check.metric)
                if base is not None:
                    line += (
                        f" — baseline {format_value(base.value, base.unit)}, "
                        f"tolerance {tolerance * 100:g} %"
                    )
                failures.append(line)
                explain[check.metric] = recorder.metrics[check.metric].details.get("explain", "")
        rows: list[dict[str, Any]] = []
        regressions: list[str] = []
        noisy_regressions = 0
        for name, metric in recorder.metrics.items():
            verdict = judge(
                metric,
                base_metrics.get(name),
                tolerance=tolerance,
                min_delta=settings.min_delta,
                alpha=settings.alpha,
                comparable=comparable,
            )
            fails = (verdict.verdict == "regressed" and not settings.accept) or (
                settings.strict and not settings.update and verdict.verdict in ("improved", "new")
            )
            if fails:
                noisy_regressions += verdict.verdict == "regressed" and metric.noisy
                line = f"✗ {verdict.describe()}: {verdict.verdict}"
                if verdict.verdict == "improved":
                    line += " (baseline is stale: run --perf-update)"
                elif verdict.verdict == "new":
                    line += " (no baseline entry; --perf-strict: run --perf-update)"
                regressions.append(line)
                diff = _diff_details(metric, base_metrics.get(name))
                extra = "\n".join(x for x in (diff, metric.details.get("explain", "")) if x)
                if extra:
                    explain[name] = extra
            checks_of = [c for c in checks if c.metric == name]
            rows.append(_row(metric, verdict, checks_of, base_metrics.get(name)))
        for name, base in base_metrics.items():
            if name not in recorder.metrics:
                verdict = Verdict(
                    name, "missing", base.unit, base.stat, None, base.value, basis="not recorded"
                )
                rows.append(_row(None, verdict, [], base))
                if settings.strict and not settings.update:
                    regressions.append(f"✗ {verdict.describe()}: missing (--perf-strict)")
        failures.extend(regressions)
        entries = {
            name: metric_entry(metric)
            for name, metric in recorder.metrics.items()
            if not (metric.noisy and metric.distorted)
        }
        kept = [n for n, m in recorder.metrics.items() if m.noisy and m.distorted]
        payload = {
            "metrics": rows,
            "entries": entries,
            "kept": kept,  # distorted timings: the stored entry (if any) stays as it was
            "machine": self.fingerprint,
            "worker": self.worker,
            "tolerance": tolerance,
        }
        # only timing-like regressions may be a fluke of the machine; budgets and exact
        # metrics fail at once
        confirmable = bool(regressions) and len(failures) == len(regressions) == noisy_regressions
        if not failures:
            return _Evaluation([], False, payload)
        # the first line is what `-rA`/the short summary shows: make it the most useful one
        parts = [f"perf: {failures[0].removeprefix('✗ ')}"]
        if len(failures) > 1:
            parts.extend("  " + line for line in failures)
        for name, text in explain.items():
            if text:
                parts.append(f"\n{name}:\n{text}")
        return _Evaluation(parts, confirmable, payload)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call":
            payload = item.stash.get(_outcome_key, None)
            if payload is not None:
                # travels with the report to the xdist controller (reports serialise __dict__)
                report.bridgeperf = payload  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = self.outcomes.setdefault(report.nodeid, _TestOutcome())
        if report.failed:
            outcome.failed = True
        payload = getattr(report, "bridgeperf", None)
        if report.when == "call" and payload is not None:
            outcome.payload = payload
            if payload.get("worker"):
                self.from_workers = True

    # finishing -------------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after xdist's own sessionfinish has collected the workers
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            return
        self._find_missing()
        self.update_error: str | None = None
        if self.settings.update or self.settings.prune:
            try:
                self.baseline = Baseline.update(self.settings.baseline_path, self._update_baseline)
            except (BaselineError, OSError) as exc:
                # a read-only directory, a full disk, a file in the way, a lock never released:
                # said in the summary, while the test outcomes and the reports still come out
                unwritten = [
                    nodeid
                    for nodeid, outcome in self.outcomes.items()
                    if self.settings.update
                    and not outcome.failed
                    and outcome.payload is not None
                    and outcome.payload["entries"]
                ]
                self.update_error = f"{_write_failure(exc)} ({len(unwritten)} test(s) not written)"
                self.written, self.pruned = [], []
        strict_missing = self.settings.strict and not self.settings.update and self.missing_tests
        if strict_missing and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self._write_reports()
        # a --perf-update that wrote nothing did not do its job: exit 1 when the run was
        # otherwise green, so CI notices (the summary says why); a report that cannot be
        # written is said in the summary and leaves the exit status alone (README, Reports)
        if self.update_error is not None and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _find_missing(self) -> None:
        """Baseline entries whose test is gone from a file that was collected this run."""
        for nodeid, test in sorted(self.baseline.tests(self.settings.env).items()):
            if nodeid in self.collected or nodeid.split("::", 1)[0] not in self.collected_files:
                continue
            self.missing_tests.append((nodeid, sorted(test.get("metrics", {}))))

    def _update_baseline(self, baseline: Baseline) -> bool:
        """Apply this run's entries (and prunes) to ``baseline``: the file as it is on disk now,
        re-read under the writers' lock (see ``Baseline.update``), so entries that a concurrent
        run wrote since this session started are kept."""
        env = self.settings.env
        changed = False
        if self.settings.update:
            for nodeid, outcome in sorted(self.outcomes.items()):
                if outcome.failed or outcome.payload is None or not outcome.payload["entries"]:
                    continue
                entries = dict(outcome.payload["entries"])
                old = baseline.tests(env).get(nodeid, {}).get("metrics", {})
                for name in outcome.payload["kept"]:
                    if name in old:
                        entries[name] = old[name]
                baseline.set_test(env, nodeid, entries, outcome.payload["machine"])
                self.written.append(nodeid)
                changed = True
        if self.settings.prune:
            rootpath = self.config.rootpath
            for nodeid in list(baseline.tests(env)):
                path = nodeid.split("::", 1)[0]
                gone_file = not (rootpath / path).exists()
                if gone_file or (path in self.collected_files and nodeid not in self.collected):
                    baseline.remove_test(env, nodeid)
                    self.pruned.append(nodeid)
                    changed = True
            self.missing_tests = []
        return changed

    def _results(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for nodeid, outcome in self.outcomes.items():
            if outcome.payload is not None and outcome.payload["metrics"]:
                yield nodeid, outcome.payload

    def _totals(self) -> dict[str, int]:
        totals = dict.fromkeys(VERDICTS, 0)
        for _, payload in self._results():
            for row in payload["metrics"]:
                totals[row["verdict"]] += 1
        for _, metrics in self.missing_tests:
            totals["missing"] += len(metrics)
        return totals

    def _report_document(self) -> dict[str, Any]:
        """The run as one JSON-able document: every report is built from it."""
        tests = {
            nodeid: {
                "outcome": "failed" if self.outcomes[nodeid].failed else "passed",
                "metrics": payload["metrics"],
                "tolerance": payload["tolerance"],
            }
            for nodeid, payload in sorted(self._results())
        }
        env = self.settings.env
        for nodeid, metrics in self.missing_tests:
            stored = self.baseline.metrics(env, nodeid)
            rows = []
            for name in metrics:
                base = stored.get(name)
                if base is None:
                    rows.append({"name": name, "verdict": "missing"})
                    continue
                verdict = Verdict(
                    name, "missing", base.unit, base.stat, None, base.value, basis="test not found"
                )
                rows.append(_row(None, verdict, [], base))
            tests[nodeid] = {"outcome": "missing", "metrics": rows}
        return {
            "tool": "pytest-bridgeperf",
            "schema": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": env,
            "machine": self.fingerprint,
            "baseline": str(self.settings.baseline_path),
            "settings": {
                "tolerance": self.settings.tolerance,
                "min_delta": self.settings.min_delta,
                "alpha": self.settings.alpha,
                "strict": self.settings.strict,
                "update": self.settings.update,
            },
            "xdist": self.from_workers,
            "totals": self._totals(),
            "tests": tests,
            "written": self.written,
            "pruned": self.pruned,
        }

    def _write_reports(self) -> None:
        settings = self.settings
        outputs = (
            settings.report_path,
            settings.markdown_path,
            settings.html_path,
            settings.openmetrics_path,
        )
        from .report.markdown import STEP_SUMMARY_ENV

        step_summary = settings.step_summary and bool(os.environ.get(STEP_SUMMARY_ENV))
        self.reports_written: list[Path] = []
        if all(path is None for path in outputs) and not step_summary:
            return
        from .report import write_outputs
        from .report.document import dumps_json, write_text

        document = self._report_document()

        # each report on its own: one that cannot be written must not cost the others
        def attempt(path: Path | None, write: Callable[[Path], object]) -> None:
            if path is None:
                return
            try:
                write(path)
                self.reports_written.append(path)
            except OSError as exc:  # a report that cannot be written must not hide the results
                self.report_errors.append(f"cannot write a report: {path}: {_write_failure(exc)}")

        attempt(settings.report_path, lambda p: write_text(p, dumps_json(document)))
        attempt(
            settings.markdown_path,
            lambda p: write_outputs(document, markdown=p, step_summary=False),
        )
        attempt(settings.html_path, lambda p: write_outputs(document, html=p, step_summary=False))
        attempt(
            settings.openmetrics_path,
            lambda p: write_outputs(document, openmetrics=p, step_summary=False),
        )
        if step_summary:
            try:
                write_outputs(document)
            except OSError as exc:
                self.report_errors.append(
                    f"cannot write a report: ${STEP_SUMMARY_ENV}: {_write_failure(exc)}"
                )

    # summary ---------------------------------------------------------------------------------
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker:
            return
        tr = terminalreporter
        results = sorted(self._results())
        if not results and not self.missing_tests and not self.pruned:
            return
        from .report.document import metric_label, status_of
        from .report.terminal import (
            detail_lines,
            metric_pieces,
            status_markup,
            verdict_markup,
        )

        verbose = self.config.get_verbosity() > 0
        tr.write_sep("=", f"perf summary (env {self.settings.env})")
        not_comparable = False
        # one column width for the whole table, so long request names do not break alignment
        width = min(
            70, max((len(metric_label(r)) for _, p in results for r in p["metrics"]), default=0)
        )
        for nodeid, payload in results:
            tr.write_line(nodeid, **status_markup(status_of(payload)))
            if payload.get("confirmation"):
                tr.write_line(f"  ({payload['confirmation']})", yellow=True)
            for row in payload["metrics"]:
                tr.write("  ")
                for text, markup in metric_pieces(row, width):
                    tr.write(text, **markup)
                tr.line("")
                if verbose:
                    for text, markup in detail_lines(row):
                        tr.write_line(f"      {text}", **markup)
                not_comparable |= row["verdict"] == "not comparable"
        for nodeid, metrics in self.missing_tests:
            tr.write_line(f"{nodeid}", bold=True)
            for name in metrics:
                tr.write_line(
                    f"  {name}: test not found — missing (run --perf-prune to drop it)",
                    **verdict_markup("missing"),
                )
        totals = self._totals()
        tr.write("perf: ")
        for index, (verdict, count) in enumerate(totals.items()):
            tr.write(", " if index else "")
            tr.write(f"{count} {verdict}", **(verdict_markup(verdict) if count else {}))
        tr.line("")
        for path in getattr(self, "reports_written", []):
            tr.write_line(f"perf: report written to {_relative(path, self.config.rootpath)}")
        for error in self.report_errors:
            tr.write_line(f"perf: {error}", red=True)
        if totals["improved"] and not self.settings.update:
            tr.write_line(
                f"perf: {totals['improved']} metric(s) improved beyond tolerance: the baseline "
                "is stale: run --perf-update",
                yellow=True,
            )
        if self.written or self.pruned:
            tr.write_line(
                f"perf: baseline {self.settings.baseline_path} updated: "
                f"{len(self.written)} test(s) written, {len(self.pruned)} pruned"
            )
        if getattr(self, "update_error", None):
            tr.write_line(
                f"perf: baseline {self.settings.baseline_path} NOT updated: {self.update_error}",
                red=True,
            )
        if not_comparable:
            tr.write_line(
                "perf: warning: some timings were not compared — the baseline was measured on "
                "another machine (or a memory tracer distorted them); deterministic metrics "
                "were still enforced",
                yellow=True,
            )
        if self.from_workers:
            tr.write_line(
                "perf: warning: timing metrics were measured under pytest-xdist; workers share "
                f"{os.cpu_count()} core(s), so timings are noisier than in a serial run",
                yellow=True,
            )


def _rerun(item: pytest.Item) -> Callable[[], object]:
    def rerun() -> object:
        item.runtest()
        return None

    # the test function itself, for reports that trace it line by line (--perf-memory-lines)
    rerun.function = getattr(item, "obj", None)  # type: ignore[attr-defined]
    return rerun


def _diff_details(metric: Metric, base: Any) -> str:
    """Extra explanation of a regression that compares stored details (e.g. query fingerprints)."""
    if base is None or metric.role != "queries":
        return ""
    try:
        from .queries import fingerprint_diff
    except ImportError:
        return ""
    try:
        return str(fingerprint_diff(base.details, metric.details))
    except Exception:  # a diff is a courtesy; never let it mask the verdict
        return ""


def _row(
    metric: Metric | None, verdict: Verdict, checks: list[Any], base: BaselineMetric | None
) -> dict[str, Any]:
    """One metric's line of the report: what reports and the summary need, JSON-able."""
    row = verdict_row(verdict, base)
    row["budgets"] = [
        {"budget": c.budget, "limit": c.limit, "measured": c.measured, "passed": c.passed}
        for c in checks
    ]
    if metric is not None:
        row.update(
            better=metric.better,
            n=metric.count,
            noisy=metric.noisy,
            summary=metric.summary(),
            distorted=metric.distorted,
            role=metric.role,
            details=metric.details,
        )
        if metric.histogram is not None:
            row["hdr"] = metric.histogram.encode()
        if metric.samples is not None:  # lets `bridgeperf compare` re-run the significance test
            row["samples"] = list(metric.samples)
    return row


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _write_failure(exc: BaseException) -> str:
    """Why a file could not be written, in one line: the file and the system's reason."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc)
