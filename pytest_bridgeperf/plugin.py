"""pytest hooks: options, the ``perf`` marker, budgets, baseline comparison and the summary.

The measuring and baseline code lives in pytest-free modules; this module wires them to pytest.
State lives on ``config.stash`` / ``item.stash`` only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .baseline import Baseline, BaselineError, machine_fingerprint, machine_id
from .compare import VERDICTS, Verdict
from .evaluation import report_row
from .metrics import BUDGET_HELP, BUDGET_KEYS, Budgets
from .rounds import BodyProbes, RoundRunner
from .settings import DEFAULTS, Settings, SettingsError, resolve
from .state import budgets_key, fresh_recorder, lines_key, recorder_for, settings_key

pytest_plugins = ["pytest_bridgeperf.fixtures"]

__all__ = ["baseline_value", "recorder_for", "settings_key"]

SKIP_REASON = "perf test: run with --perf"

#: The name under which the pytest session of one side of ``--perf-against`` registers its
#: worker plugin: in that session perf tests run (never skipped) and only measure.
SIDE_PLUGIN = "bridgeperf-side"


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
        "Durations like '50ms', sizes like '64MB'/'64MiB', percentages like '1%'. "
        "lines=[func, ...]: when the test is profiled, also time these functions line by line."
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
        "run a test whose timings regressed (or stayed undecided) or broke a noisy budget up to "
        "N more times; fail only if it reproduces",
    )
    flag(
        "--perf-memory-lines",
        "perf_memory_lines",
        "for a test that broke its memory budget, add a line-by-line memory report",
    )
    value(
        "--perf-against",
        "perf_against",
        "REF",
        "measure every perf test on REF too, interleaved in this run, and compare with it "
        "instead of the baseline (a git revision, merge-base:REV, or another checkout's path)",
    )
    value(
        "--perf-against-python",
        None,
        "PATH",
        "with --perf-against: the interpreter of an environment where REF is installed",
    )
    parser.addini(
        "perf_against_paths",
        "with --perf-against: REF's import roots, relative to its checkout (default: detected)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "perf_against_rounds",
        "with --perf-against: measured rounds per side and test, at most "
        f"(default: {DEFAULTS['perf_against_rounds']})",
        default=DEFAULTS["perf_against_rounds"],
    )
    parser.addini(
        "perf_against_max_time",
        "with --perf-against: time one test's comparison may take, at most "
        f"(default: {DEFAULTS['perf_against_max_time']})",
        default=DEFAULTS["perf_against_max_time"],
    )
    parser.addini(
        "perf_against_load_duration",
        "with --perf-against: each duration-based perf_load run of a round lasts at most this "
        "(the rounds give the repetitions; default: as the test asks)",
        default="",
    )
    parser.addini(
        "perf_against_warmup",
        "with --perf-against: unmeasured rounds per side before a test's first measured one "
        f"(default: {DEFAULTS['perf_against_warmup']})",
        default=DEFAULTS["perf_against_warmup"],
    )
    # where the time went (profiling.py)
    value(
        "--perf-profile",
        "perf_profile",
        "MODE",
        "profile one more run of a perf test under cProfile and list its top functions: off, "
        "on-regression (a test whose timing regressed or broke a latency budget) or always",
    )
    value(
        "--perf-artifacts",
        "perf_artifacts",
        "DIR",
        "keep each profile in DIR, relative to the rootdir (.prof for pstats/snakeviz, "
        "speedscope JSON)",
    )
    parser.addini(
        "perf_profile_baseline",
        "with --perf-update: store each perf test's top functions in the baseline, so that a "
        "later regression lists the functions whose time grew (default: false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "perf_alpha",
        "timing verdicts use 1 - alpha confidence intervals of the change "
        f"(default: {DEFAULTS['perf_alpha']}, 99 %)",
        default=DEFAULTS["perf_alpha"],
    )
    parser.addini(
        "perf_allowed_hosts",
        "hosts besides loopback that perf_load may send requests to",
        type="linelist",
        default=[],
    )
    parser.addini(
        "perf_load_hosts",
        "execnet gateway specs (one per line, as pytest-xdist's --tx: 'ssh=gen1', '2*popen') "
        "of the load generators of perf_load runs that name neither hosts= nor workers=",
        type="linelist",
        default=[],
    )
    parser.addini(
        "perf_max_duration",
        f"hard cap of one load run (default: {DEFAULTS['perf_max_duration']})",
        default=DEFAULTS["perf_max_duration"],
    )
    parser.addini(
        "perf_library_modules",
        "your own modules (names or dotted prefixes, e.g. myapp.db) skipped like SQLAlchemy's "
        "when perf_queries names the line of your code that sent a statement",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _marker_help())
    names = (
        "perf", "perf_baseline", "perf_update", "perf_accept", "perf_prune", "perf_tolerance",
        "perf_env", "perf_report", "perf_strict", "perf_min_delta", "perf_memory_lines",
        "perf_confirm", "perf_against", "perf_against_python",
        "perf_markdown", "perf_html", "perf_openmetrics", "perf_profile", "perf_artifacts",
    )  # fmt: skip
    cli = {name: config.getoption(name, None) for name in names}
    cli["quiet"] = config.get_verbosity() < 0
    try:
        settings = resolve(cli, config.getini, config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[settings_key] = settings
    side = config.pluginmanager.get_plugin(SIDE_PLUGIN) is not None
    if settings.enabled or side:
        config.pluginmanager.register(BodyProbes(), "bridgeperf-probes")
    if settings.enabled and not side:
        if settings.against is not None:
            # judged against REF measured in this run: the committed baseline plays no part
            baseline = Baseline(settings.baseline_path)
        else:
            try:
                baseline = Baseline.load(settings.baseline_path)
            except BaselineError as exc:
                raise pytest.UsageError(str(exc)) from None
        session = PerfSession(config, settings, baseline)
        config.pluginmanager.register(session, "bridgeperf-session")
        if settings.against is not None:
            from .against.controller import AgainstRunner, AgainstXdist

            against = AgainstRunner(config, settings, session.fingerprint)
            session.against = against.checkout.label
            config.pluginmanager.register(against, "bridgeperf-against")
            if config.pluginmanager.hasplugin("xdist") and not session.worker:
                config.pluginmanager.register(AgainstXdist(against), "bridgeperf-against-xdist")
        else:
            runner = RoundRunner(config, settings, baseline, session.fingerprint, session.worker)
            config.pluginmanager.register(runner, "bridgeperf-rounds")
        # xdist's hooks are unknown to pluggy without xdist: register them only beside it
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistHooks(session), "bridgeperf-xdist")


@pytest.hookimpl(tryfirst=True)  # before fixtures are set up: the `perf` fixture takes it
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every run of a test records its own metrics: a round, an attempt of
    pytest-rerunfailures, a test run again by ``--lf``."""
    fresh_recorder(item)


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
    enabled = enabled or config.pluginmanager.get_plugin(SIDE_PLUGIN) is not None
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        marker = item.get_closest_marker("perf")
        if marker is None:
            continue
        # validated even without --perf, so a typo fails the everyday run, not only CI's
        item.stash[budgets_key] = _parse_budgets(item)
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
    if "lines" in merged:
        # not a budget: the functions to time line by line when the test is profiled
        from .profiling import parse_lines

        try:
            item.stash[lines_key] = parse_lines(merged.pop("lines"))
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.perf: {exc}") from None
    try:
        return Budgets.parse(merged)
    except ValueError as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.perf: {exc}") from None


# ---------------------------------------------------------------------------------------------
# the session (registered only with --perf)


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
        self.against: str | None = None  # --perf-against: how REF is named

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

    # results -----------------------------------------------------------------------------------
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
                baseline.set_test(
                    env,
                    nodeid,
                    entries,
                    outcome.payload["machine"],
                    profile=outcome.payload.get("baseline_profile"),  # perf_profile_baseline
                )
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
                # where the time went (profiling.py): only for profiled tests
                **({"profile": payload["profile"]} if payload.get("profile") else {}),
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
                rows.append(report_row(None, verdict, [], base))
            tests[nodeid] = {"outcome": "missing", "metrics": rows}
        return {
            "tool": "pytest-bridgeperf",
            "schema": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": env,
            "machine": self.fingerprint,
            "baseline": str(self.settings.baseline_path),
            # what the profiles' file paths are relative to (--perf-artifacts)
            "rootdir": str(self.config.rootpath),
            # --perf-against: what the run compared with instead of the baseline
            "against": {"ref": self.settings.against, "label": self.against}
            if self.against
            else None,
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
        title = f"vs {self.against}" if self.against else f"env {self.settings.env}"
        tr.write_sep("=", f"perf summary ({title})")
        not_comparable: dict[str, None] = {}  # why timings were not compared, in order seen
        # one column width for the whole table, so long request names do not break alignment
        width = min(
            70, max((len(metric_label(r)) for _, p in results for r in p["metrics"]), default=0)
        )
        for nodeid, payload in results:
            tr.write_line(nodeid, **status_markup(status_of(payload)))
            if payload.get("test_failed"):
                tr.write_line("  (the test failed: its metrics are shown, not written)", red=True)
            for note in payload.get("notes", ()):
                tr.write_line(f"  ({note})", yellow=True)
            for row in payload["metrics"]:
                tr.write("  ")
                for text, markup in metric_pieces(row, width):
                    tr.write(text, **markup)
                tr.line("")
                if verbose:
                    for text, markup in detail_lines(row):
                        tr.write_line(f"      {text}", **markup)
                if row["verdict"] == "not comparable":
                    basis = row.get("basis") or "baseline from another machine"
                    if basis == "baseline from another machine":
                        basis = "the baseline was measured on another machine"
                    not_comparable[basis] = None
        for nodeid, metrics in self.missing_tests:
            tr.write_line(f"{nodeid}", bold=True)
            for name in metrics:
                tr.write_line(
                    f"  {name}: test not found — missing (run --perf-prune to drop it)",
                    **verdict_markup("missing"),
                )
        totals = self._totals()
        tr.write("perf: ")
        shown = [(v, c) for v, c in totals.items() if c or v != "undecided"]  # only if any
        for index, (verdict, count) in enumerate(shown):
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
                f"perf: warning: some timings were not compared — {'; '.join(not_comparable)}; "
                "deterministic metrics (counts, heap bytes) were still enforced",
                yellow=True,
            )
        if self.from_workers:
            tr.write_line(
                "perf: warning: timing metrics were measured under pytest-xdist; workers share "
                f"{os.cpu_count()} core(s), so timings are noisier than in a serial run",
                yellow=True,
            )


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
