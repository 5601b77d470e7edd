"""Rounds: a perf test runs as many whole runs (setup, call, teardown, fresh function-scoped
fixtures) as its verdict needs.

* :class:`BodyProbes` wraps every run's body in the probes of the marker's budgets (queries,
  memory), told what the run is for by its :class:`~.state.RoundContext`.
* :class:`RoundRunner` owns the test protocol of perf tests under ``--perf`` (committed-baseline
  mode): it judges each measurement against the baseline and the budgets and decides whether
  another run is needed — a confirmation of a regression or breached budget that may be a fluke
  of the machine, the second half of a measurement, or a run that explains a broken budget.
  Only then are the reports logged, once, as pytest would log a single run.

Beside pytest-rerunfailures, each of its attempts runs our rounds (its protocol calls
``runtestprotocol``; :func:`run_with_rerunfailures` lends it ours for the duration).
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import itemrun
from .baseline import Baseline, machine_id
from .evaluation import Evaluation, evaluate
from .metrics import Budgets, Metric
from .report.junit import junit_properties
from .settings import Settings
from .state import (
    RoundContext,
    budgets_key,
    lines_key,
    recorder_for,
    round_key,
    settings_key,
)

if TYPE_CHECKING:
    from types import ModuleType

    from .profiling import Profile

__all__ = ["BodyProbes", "RoundRunner"]

#: Marker budgets that need the whole test body measured, and the module that measures them.
_BODY_PROBES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("queries",), "pytest_bridgeperf.queries"),
    (("memory", "rss"), "pytest_bridgeperf.memory"),
)


class BodyProbes:
    """Wraps the body of each run of a perf test in the probes its budgets need."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        budgets = item.stash.get(budgets_key, None)
        if budgets is None:
            return (yield)
        context = item.stash.get(round_key, None) or RoundContext()
        if context.mode in PROFILE_RUNS:
            # where the time went: the body alone under the profiler (the other probes' hooks
            # would show in the profile); the run records nothing that is judged
            with _profile_probe(item, context):
                return (yield)
        recorder = recorder_for(item)
        with contextlib.ExitStack() as stack:
            for keys, module in _BODY_PROBES:
                if all(getattr(budgets, key) is None for key in keys):
                    continue
                probe = _probe_of(importlib.import_module(module))
                if module.endswith("memory"):
                    cm = probe(
                        budgets,
                        recorder,
                        context.mode,
                        context.explanations,
                        getattr(item, "obj", None),
                    )
                else:
                    modules = item.config.stash[settings_key].library_modules
                    cm = probe(budgets, recorder, context.mode, modules)
                if cm is not None:
                    stack.enter_context(cm)
            return (yield)


def _probe_of(module: ModuleType) -> Callable[..., Any]:
    probe: Callable[..., Any] = module.body_probe
    return probe


# ---------------------------------------------------------------------------------------------
# where the time went (issue 13; the profiler and its messages are in profiling.py)

#: The explaining runs of a profile: cProfile over the body, then line_profiler over lines=.
PROFILE_RUNS = ("explain-profile", "explain-lines")


@contextlib.contextmanager
def _profile_probe(item: pytest.Item, context: RoundContext) -> Iterator[None]:
    """One explaining run under a profiler: the profile goes to ``context.profile`` (and its
    files to ``context.profile_to``), the line-by-line text to ``context.explanations``."""
    from . import profiling

    root = Path(item.config.rootpath)
    if context.mode == "explain-lines":
        lines = profiling.LineRun(())
        try:
            with profiling.line_profiling(_lines_of(item)) as lines:
                yield
        finally:
            context.explanations[profiling.EXPLAIN_KEY] = profiling.format_line_report(lines, root)
        return
    run = profiling.ProfileRun()
    try:
        with profiling.profiling(root) as run:
            yield
    finally:
        if run.unavailable:
            context.explanations[profiling.EXPLAIN_KEY] = run.unavailable
        profile = run.profile
        if profile is not None and context.profile_to:
            try:
                profiling.write_artifacts(profile, Path(context.profile_to), root, item.nodeid)
            except OSError as exc:  # the listing still stands; say why the files are missing
                profile.note = "; ".join(
                    x for x in (profile.note, f"its files could not be written: {exc}") if x
                )
        context.profile = profile


def _lines_of(item: pytest.Item) -> tuple[Callable[..., Any], ...]:
    empty: tuple[Callable[..., Any], ...] = ()
    return item.stash.get(lines_key, empty)


def _profile_modes(
    settings: Settings,
    evaluation: Evaluation,
    metrics: dict[str, Metric],
    lines: Sequence[Callable[..., Any]],
) -> list[str]:
    """The profiling runs after a verdict: for a timing failure (a regression or a broken
    latency/throughput budget) with ``--perf-profile=on-regression``, for every test with
    ``always``, and under ``--perf-update`` with ini ``perf_profile_baseline`` (to store it)."""
    if settings.profile == "off":
        return []
    timing = any(
        _is_timing(metrics.get(f.metric))
        for f in evaluation.failures
        if f.metric is not None and f.kind in ("regression", "budget")
    )
    store = settings.update and settings.profile_baseline
    if not (timing or store or settings.profile == "always"):
        return []
    if lines and (timing or settings.profile == "always"):
        return list(PROFILE_RUNS)
    return ["explain-profile"]


def _is_timing(metric: Metric | None) -> bool:
    return metric is not None and (metric.unit == "s" or metric.role in ("latency", "rps"))


# ---------------------------------------------------------------------------------------------
# the committed-baseline mode


@dataclass
class _Measurement:
    """The metrics of one measurement: one run, or two for tests with both a ``memory`` and an
    ``rss`` budget (the heap run contributes only its ``memory`` metric)."""

    metrics: dict[str, Metric] = field(default_factory=dict)

    def add(self, mode: str, metrics: dict[str, Metric]) -> None:
        if mode == "heap":
            if "memory" in metrics:
                self.metrics["memory"] = metrics["memory"]
        else:
            self.metrics.update(metrics)


class RoundRunner:
    """Runs perf tests in rounds under ``--perf`` and hands each test's evaluation to
    ``on_result`` (the session's collector)."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        baseline: Baseline,
        machine: dict[str, Any],
        worker: bool,
    ) -> None:
        self.config = config
        self.settings = settings
        self.baseline = baseline
        self.machine = machine
        self.machine_id = machine_id(machine)
        self.worker = worker

    # the protocol ------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # a perf test's runs are ours to schedule, before pytest's
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        if item.stash.get(budgets_key, None) is None:
            return None  # not a perf test: pytest (or another plugin) runs it
        if _rerunfailures_runs(item, self, nextitem):
            return True
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        self.run(item, log=True, nextitem=nextitem)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def run(
        self, item: pytest.Item, log: bool = False, nextitem: pytest.Item | None = None
    ) -> list[pytest.TestReport]:
        """All the runs of ``item``; returns the reports of the test as one run (setup, call,
        teardown), logged only when ``log`` (the signature of pytest's ``runtestprotocol``)."""
        reports = _Rounds(self, item, nextitem).run()
        if log:
            for report in reports:
                item.ihook.pytest_runtest_logreport(report=report)
        return reports

    # judging -----------------------------------------------------------------------------------
    def evaluate(self, item: pytest.Item, metrics: dict[str, Metric]) -> Evaluation:
        settings = self.settings
        budgets: Budgets = item.stash[budgets_key]
        env = settings.env
        base_machine = self.baseline.machine_of(env, item.nodeid)
        return evaluate(
            metrics,
            budgets,
            self.baseline.metrics(env, item.nodeid),
            tolerance=budgets.tolerance if budgets.tolerance is not None else settings.tolerance,
            min_delta=settings.min_delta,
            alpha=settings.alpha,
            comparable=base_machine is None or machine_id(base_machine) == self.machine_id,
            strict=settings.strict,
            update=settings.update,
            accept=settings.accept,
        )


class _Rounds:
    """The rounds of one test item (one attempt)."""

    def __init__(self, runner: RoundRunner, item: pytest.Item, nextitem: pytest.Item | None):
        from .memory.probe import phases

        self.runner = runner
        self.item = item
        self.nextitem = nextitem
        self.budgets: Budgets = item.stash[budgets_key]
        self.phases = phases(self.budgets)
        self.number = 0
        self.call_duration = 0.0
        self.earlier_verdict = False  # the verdict shown is an earlier run's
        self.lines = _lines_of(item)  # the marker's lines= functions
        self.profile: Profile | None = None  # what the explain-profile run found
        self.profile_diff = ""  # ... compared with the baseline's stored profile
        self.profile_lines = ""  # the lines= timings

    def _one(self, mode: str) -> tuple[list[pytest.TestReport], RoundContext]:
        """One run's setup and call (its teardown waits for the decision on what follows)."""
        self.number += 1
        context = RoundContext(mode=mode, number=self.number)
        artifacts = self.runner.settings.artifacts_dir
        if mode == "explain-profile" and artifacts is not None:
            from .profiling import artifact_stem

            context.profile_to = str(artifact_stem(artifacts, self.item.nodeid))
        self.item.stash[round_key] = context
        reports = itemrun.setup_and_call(self.item)
        if len(reports) == 2:
            self.call_duration += reports[1].duration
        return reports, context

    def run(self) -> list[pytest.TestReport]:
        item, runner = self.item, self.runner
        settings = runner.settings
        pending = list(self.phases)  # runs left in the current measurement
        explaining: list[str] = []  # runs left that explain a broken budget
        measurement = _Measurement()
        evaluations: list[Evaluation] = []
        exact_values: dict[str, list[Metric]] = {}
        deciding: list[pytest.TestReport] | None = None  # the run whose reports stand
        verdict: Evaluation | None = None
        explanations: dict[str, str] = {}
        first_failure = ""
        first_undecided = ""
        while True:
            mode = pending.pop(0) if pending else explaining.pop(0)
            reports, context = self._one(mode)
            passed = len(reports) == 2 and reports[1].passed
            metrics = dict(recorder_for(item).metrics) if len(reports) == 2 else {}
            decided_now = False
            if mode.startswith("explain"):
                if mode in PROFILE_RUNS:
                    # the profile and its lines share one heading: joined, not replaced
                    self.profile = context.profile or self.profile
                    for name, text in context.explanations.items():
                        joined = (explanations.get(name, ""), text)
                        explanations[name] = "\n".join(x for x in joined if x)
                else:
                    explanations.update(context.explanations)
                if not passed:
                    explanations.setdefault(
                        _explained_metric(mode),
                        f"(the run explaining it failed: {_last_line(reports[-1])})",
                    )
            else:
                measurement.add(mode, metrics)
                if not passed:
                    # The test failed on its own: no more runs. Its record stays, judged and
                    # marked as a failed test's; after a confirmation, the first verdict too.
                    pending, explaining = [], []
                    decided_now = True
                    verdict = (
                        runner.evaluate(item, measurement.metrics) if measurement.metrics else None
                    )
                    if evaluations and evaluations[-1].failures:
                        previous = evaluations[-1]
                        previous.notes.append(
                            f"run {self.number}, which was to confirm this verdict, failed"
                        )
                        verdict = previous
                        self.earlier_verdict = True
                elif not pending:
                    evaluation = runner.evaluate(item, measurement.metrics)
                    evaluations.append(evaluation)
                    for name, metric in measurement.metrics.items():
                        if not metric.noisy:
                            exact_values.setdefault(name, []).append(metric)
                    confirmations = len(evaluations) - 1
                    if evaluation.confirmable and confirmations < settings.confirm:
                        # A breach on a shared machine may be a slow spell of the machine, not
                        # of the code: measure once more, fail only if it reproduces. An
                        # undecided timing (its interval spans the tolerance) gets the same look.
                        if evaluation.failures:
                            first_failure = first_failure or evaluation.failures[0].text
                        else:
                            first_undecided = first_undecided or evaluation.undecided[0]
                        pending = ["confirm", *self.phases[1:]]
                        measurement = _Measurement()
                    else:
                        decided_now = True
                        verdict = evaluation
                        _note_rounds(
                            evaluation, confirmations, first_failure, first_undecided, exact_values
                        )
                        if evaluation.failures:
                            from .memory.probe import explain_modes

                            broken = {f.metric for f in evaluation.failures if f.metric is not None}
                            explaining = explain_modes(self.budgets, broken, settings.memory_lines)
                        # then where the time went: profiled runs, never measured
                        explaining += _profile_modes(
                            settings, evaluation, measurement.metrics, self.lines
                        )
            more = bool(pending or explaining)
            if decided_now:
                deciding = reports
            if not more:
                assert deciding is not None
                if self.profile is not None:
                    self._where_the_time_went(explanations)
                if verdict is not None and explanations:
                    _explain(verdict, explanations)
                # made while this run's fixtures are still up (plugins' makereport hooks read
                # them), before the teardown (rerunfailures decides there on a rerun)
                deciding = self._finalize(deciding, verdict)
            teardown = itemrun.teardown(item, self.nextitem, keep=more)
            if more and teardown.failed:
                # a kept run's teardown failed: stop, and report it as the test's teardown,
                # with the verdict reached so far
                finished = itemrun.finish(item, self.nextitem)
                if deciding is None and evaluations and len(reports) == 2:
                    deciding, verdict = reports, evaluations[-1]
                    verdict.notes.append(
                        f"the teardown of run {self.number} failed: no further run was made"
                    )
                head = deciding if deciding is not None else reports
                if verdict is not None and len(head) == 2:
                    head = self._finalize(head, verdict)
                return [*head, finished if finished is not None else teardown]
            if not more:
                assert deciding is not None
                return [*deciding, teardown]

    def _where_the_time_went(self, explanations: dict[str, str]) -> None:
        """The profile's listing, and its diff with the baseline's stored profile, first under
        their heading (the lines= timings follow)."""
        from .profiling import EXPLAIN_KEY, Profile, format_diff, format_profile

        assert self.profile is not None
        runner = self.runner
        parts = [format_profile(self.profile)]
        stored = runner.baseline.profile(runner.settings.env, self.item.nodeid)
        if stored is not None:
            try:
                before = Profile.from_json(stored)
            except ValueError as exc:
                parts.append(f"(the baseline's stored profile cannot be read: {exc})")
            else:
                self.profile_diff = format_diff(
                    before, self.profile, before_name="the baseline's profile"
                )
                parts.append(self.profile_diff)
        self.profile_lines = explanations.get(EXPLAIN_KEY, "")
        parts.append(self.profile_lines)
        explanations[EXPLAIN_KEY] = "\n".join(x for x in parts if x)

    def _finalize(
        self, reports: list[pytest.TestReport], evaluation: Evaluation | None
    ) -> list[pytest.TestReport]:
        """The setup and call reports of the deciding run, with the verdict: a failed call
        report when the verdict fails the test (made before the teardown, so neighbouring
        plugins see it as any failure), and the payload for the session."""
        if len(reports) < 2 or evaluation is None:
            return reports
        setup, call = reports[0], reports[1]
        failed_on_its_own = not call.passed
        if call.passed and evaluation.failures:
            call = _failed_call(self.item, evaluation.message(), self.call_duration)
        else:
            call.duration = self.call_duration
            if evaluation.failures:
                title = "perf: the first run's verdict" if self.earlier_verdict else "perf"
                call.sections.append((title, evaluation.message()))
        payload = evaluation.payload(self.runner.machine, self.runner.worker)
        payload["test_failed"] = failed_on_its_own
        if self.profile is not None:
            payload.update(_profile_payload(self))
        call.bridgeperf = payload  # type: ignore[attr-defined]
        # JUnit XML takes properties from the teardown report, made from the item's list later
        properties = junit_properties(evaluation.rows)
        self.item.user_properties.extend(properties)
        call.user_properties = [*call.user_properties, *properties]
        return [setup, call]


def _explain(evaluation: Evaluation, explanations: dict[str, str]) -> None:
    """What the explaining runs found, added to the message and the report rows."""
    for name, text in explanations.items():
        previous = evaluation.explain.get(name, "")
        evaluation.explain[name] = "\n".join(x for x in (previous, text) if x)
    for row in evaluation.rows:
        found = explanations.get(row["name"])
        if found:
            details = dict(row.get("details") or {})
            details["explain"] = "\n".join(x for x in (str(details.get("explain", "")), found) if x)
            row["details"] = details


#: Two runs of an exact metric that differ by more than this are "not exact here": a heap peak
#: that moves by a few dozen bytes (a list growing by one slot) is still a deterministic figure.
_EXACT_SPREAD = 0.01


def _spread(values: list[float]) -> float:
    low, high = min(values), max(values)
    if low <= 0:
        return 0.0 if high == low else math.inf
    return high / low - 1


def _note_rounds(
    evaluation: Evaluation,
    confirmations: int,
    first_failure: str,
    first_undecided: str,
    values: dict[str, list[Metric]],
) -> None:
    """Say what the confirmation rounds did (in the message and the report payload)."""
    for name, seen in values.items():
        if len(seen) > 1 and _spread([m.value for m in seen]) > _EXACT_SPREAD:
            shown = ", ".join(m.format() for m in seen)
            evaluation.notes.append(
                f"{name} varied between runs ({shown}): not exact here, judged like a noisy metric"
            )
    if not confirmations:
        return
    if not first_failure:
        evaluation.notes.insert(0, f"first run {first_undecided}; measured again")
    elif evaluation.failures:
        evaluation.notes.insert(0, f"confirmed by {confirmations} rerun(s)")
    else:
        evaluation.notes.insert(
            0, f"first run {first_failure.removeprefix('✗ ')}; not reproduced on rerun"
        )


def _failed_call(item: pytest.Item, message: str, duration: float) -> pytest.TestReport:
    """A call report failed by the verdict, made by pytest's own hook (so every plugin's
    makereport hook sees it) from a ``pytest.fail`` raised here."""

    def fail() -> None:
        pytest.fail(message, pytrace=False)

    call = pytest.CallInfo.from_call(fail, when="call")
    anyitem: Any = item
    released = hasattr(anyitem, "funcargs") and anyitem.funcargs is None
    if released:  # after the teardown: hooks that look up a fixture value find none
        anyitem.funcargs = {}
    try:
        report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    finally:
        if released:
            anyitem.funcargs = None
    report.duration = duration
    return report


def _is_perf_failure(report: pytest.TestReport) -> bool:
    return report.longreprtext.lstrip().startswith("perf: ")


def _explained_metric(mode: str) -> str:
    if mode in PROFILE_RUNS:
        from .profiling import EXPLAIN_KEY

        return EXPLAIN_KEY
    return "rss" if mode.endswith("-rss") else "memory"


def _profile_payload(rounds: _Rounds) -> dict[str, Any]:
    """The profile in the test's report payload (for the reports), and what --perf-update
    stores with ini perf_profile_baseline."""
    from .profiling import STORED_TOP, TOP

    profile = rounds.profile
    assert profile is not None
    report = profile.to_json(TOP)
    report["diff"] = rounds.profile_diff
    report["lines"] = rounds.profile_lines
    payload: dict[str, Any] = {"profile": report}
    settings = rounds.runner.settings
    if settings.update and settings.profile_baseline:
        stored = profile.to_json(STORED_TOP)
        stored.pop("artifacts", None)  # this run's files: not for a committed baseline
        stored.pop("note", None)
        payload["baseline_profile"] = stored
    return payload


def _last_line(report: pytest.TestReport) -> str:
    lines = report.longreprtext.strip().splitlines()
    return lines[-1] if lines else report.outcome


def _rerunfailures_runs(
    item: pytest.Item, runner: RoundRunner, nextitem: pytest.Item | None
) -> bool:
    """Beside pytest-rerunfailures with reruns set for this test, let it drive the attempts.

    Its protocol hook reruns a failed test by calling ``runtestprotocol``; for the duration of
    the call that name means our rounds, so each attempt is a whole rounds run. Returns
    whether it ran the test."""
    plugin: Any = item.config.pluginmanager.get_plugin("rerunfailures")
    if plugin is None:
        return False
    count = getattr(plugin, "get_reruns_count", None)
    protocol = getattr(plugin, "pytest_runtest_protocol", None)
    if count is None or protocol is None or not hasattr(plugin, "runtestprotocol"):
        return False  # a version we do not know: its reruns do not apply to perf tests
    if not count(item):
        return False
    original = plugin.runtestprotocol
    plugin.runtestprotocol = runner.run
    try:
        return bool(protocol(item=item, nextitem=nextitem))
    finally:
        plugin.runtestprotocol = original
