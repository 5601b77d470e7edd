"""``--perf-against=REF`` in the main pytest process: it decides and reports; the two sides
measure.

Every perf test runs on side A (this checkout, dirty tree included) and side B (REF, in a
temporary git worktree), each a fresh interpreter driven the same way (``sides.py``), in the
interleaved rounds of a :class:`~.trial.Trial`. This process never runs a perf test itself: it
hands pytest one setup, call and teardown report per test, made from the trial, so the terminal,
``-x``, ``--lf``, JUnit XML and the perf reports see one test with one verdict. Tests without
the ``perf`` marker run here as usual.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ..metrics import Budgets, Metric
from ..settings import Settings
from ..state import budgets_key, lines_key
from .errors import AgainstError
from .refs import Checkout, import_roots, open_checkout
from .sides import Collected, Side
from .trial import SideRun, Trial, TrialResult, TrialSettings

__all__ = ["AgainstRunner", "AgainstXdist", "checkout_from_workerinput"]

_WORKERINPUT_KEY = "bridgeperf_against"


def checkout_from_workerinput(config: pytest.Config) -> Checkout | None:
    """In an xdist worker: the checkout the controller opened (one worktree for all)."""
    data = getattr(config, "workerinput", {}).get(_WORKERINPUT_KEY)
    if not data:
        return None
    return Checkout(
        root=Path(data["root"]),
        toplevel=Path(data["toplevel"]),
        sha=data["sha"],
        label=data["label"],
        is_worktree=data["is_worktree"],
    )


class AgainstXdist:
    """The xdist controller's part: the worktree is made once, here, and shared."""

    def __init__(self, runner: AgainstRunner) -> None:
        self.runner = runner

    def pytest_configure_node(self, node: Any) -> None:
        checkout = self.runner.checkout
        node.workerinput[_WORKERINPUT_KEY] = {
            "root": str(checkout.root),
            "toplevel": str(checkout.toplevel),
            "sha": checkout.sha,
            "label": checkout.label,
            "is_worktree": checkout.is_worktree,
        }


class AgainstRunner:
    """Runs every perf test as an A/B trial on the two sides and reports it as one test."""

    def __init__(self, config: pytest.Config, settings: Settings, machine: dict[str, Any]):
        assert settings.against is not None
        self.config = config
        self.settings = settings
        self.machine = machine
        self.worker = hasattr(config, "workerinput")
        self._stack = contextlib.ExitStack()
        config.add_cleanup(self._stack.close)
        shared = checkout_from_workerinput(config)
        if shared is not None:
            self.checkout = shared
        else:
            try:
                self.checkout = self._stack.enter_context(
                    open_checkout(
                        settings.against, config.rootpath, cwd=config.invocation_params.dir
                    )
                )
            except AgainstError as exc:
                raise pytest.UsageError(str(exc)) from None
        self.sides: dict[str, Side] = {}
        self.collected: dict[str, Collected] = {}
        self.files: list[str] = []
        self.seed = int.from_bytes(os.urandom(4), "big")
        self.trials: dict[str, TrialResult] = {}
        #: where the time went, per test (the payload's "profile")
        self.profiles: dict[str, dict[str, Any]] = {}
        self._failed_start: str | None = None

    # collection ----------------------------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        files: list[str] = []
        for item in session.items:
            if item.stash.get(budgets_key, None) is None:
                continue
            path = item.nodeid.split("::", 1)[0]
            if path not in files:
                files.append(path)
        self.files = files

    # the sides -----------------------------------------------------------------------------------
    def _a_toplevel(self) -> Path:
        """This checkout's counterpart of the other side's ``toplevel``."""
        checkout = self.checkout
        rootdir = Path(self.config.rootpath).resolve()
        try:
            depth = len(checkout.root.resolve().relative_to(checkout.toplevel.resolve()).parts)
        except ValueError:
            depth = 0
        top = rootdir
        for _ in range(depth):
            top = top.parent
        return top

    def _start(self) -> None:
        if self.sides or self._failed_start is not None:
            if self._failed_start is not None:
                raise pytest.UsageError(self._failed_start)
            return
        from .options import side_args

        settings = self.settings
        checkout = self.checkout
        rootdir = Path(self.config.rootpath).resolve()
        a_top = self._a_toplevel()
        arguments = side_args(self.config)
        temp = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bridgeperf-sides-"))
        )
        paths = list(settings.against_paths) or None
        plans = {
            "A": (rootdir, sys.executable, [(checkout.toplevel, a_top)], "this checkout"),
            "B": (
                checkout.root,
                settings.against_python or sys.executable,
                [(a_top, checkout.toplevel)],
                checkout.label,
            ),
        }
        round_timeout = settings.against_max_time + 60.0
        try:
            for name, (root, python, relocate, label) in plans.items():
                side = Side(
                    name,
                    root,
                    python=python,
                    import_paths=import_roots(root, paths),
                    args=arguments.render(root, basetemp=temp / f"side-{name}"),
                    env=arguments.environ(root),
                    cwd=arguments.cwd,
                    relocate=relocate,
                    label=label,
                    round_timeout=round_timeout,
                )
                self._stack.callback(side.close)
                self.sides[name] = side
                self.collected[name] = side.start(self.files)
        except AgainstError as exc:
            self._failed_start = f"--perf-against={settings.against}: {exc}"
            if self.config.get_verbosity() > 0 and exc.details:
                self._failed_start += "\n" + exc.details
            raise pytest.UsageError(self._failed_start) from None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for side in self.sides.values():
            side.close()

    # the protocol --------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # a perf test runs on the sides, never in this process
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        budgets = item.stash.get(budgets_key, None)
        if budgets is None:
            return None
        failed_start: str | None = None
        try:
            self._start()
        except pytest.UsageError as exc:
            if not self.worker:
                raise
            # an xdist worker cannot stop the session with a usage error (xdist would take it
            # for a crash): each perf test errors with the reason instead
            failed_start = str(exc)
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        if failed_start is not None:
            reports = _error_reports(item, failed_start)
        else:
            reports = self._reports(item, budgets)
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _run_round(self, nodeid: str) -> Any:
        def run(side: str, mode: str) -> SideRun:
            if nodeid not in self.collected[side].nodeids:
                return SideRun("missing")
            options = {}
            if self.settings.against_load_duration is not None:
                options["load_duration"] = self.settings.against_load_duration
            result = self.sides[side].run_round(nodeid, mode=mode, options=options)
            metrics = {}
            for data in result.metrics:
                metric = Metric.from_json(data)
                metrics[metric.name] = metric
            crash = None
            if result.longrepr:
                lines = [line for line in result.longrepr.strip().splitlines() if line.strip()]
                crash = lines[-1].strip() if lines else None
            return SideRun(
                result.outcome,
                metrics,
                result.longrepr,
                crash,
                result.duration,
                list(result.sections),
            )

        return run

    def _reports(self, item: pytest.Item, budgets: Budgets) -> list[pytest.TestReport]:
        settings = self.settings
        tolerance = budgets.tolerance if budgets.tolerance is not None else settings.tolerance
        trial = Trial(
            TrialSettings(
                tolerance=tolerance,
                max_rounds=settings.against_rounds,
                max_time=settings.against_max_time,
                warmup=settings.against_warmup,
                label=self.checkout.label,
            ),
            budgets,
            random.Random(f"{self.seed}:{item.nodeid}"),
        )
        try:
            result = trial.run(self._run_round(item.nodeid))
        except AgainstError as exc:
            return _error_reports(item, f"--perf-against: {exc}")
        # where the time went: one profiled round on each side after a timing regression
        if result.status == "compared" and wants_profile(settings.profile, result):
            self._where_the_time_went(item, result)
        self.trials[item.nodeid] = result
        return self._reports_of(item, result, tolerance)

    def _reports_of(
        self, item: pytest.Item, result: TrialResult, tolerance: float
    ) -> list[pytest.TestReport]:
        a = result.a_last
        setup = _report(item, "setup", None)
        if a is not None and a.outcome == "error":
            # the test's own setup (or teardown) failed on this checkout: an error, as pytest
            # reports it
            text = f"on this checkout (side A): {a.crash}\n\n{a.longrepr or ''}"
            setup = _report(item, "setup", _failing(text))
            return [setup, _report(item, "teardown", None)]
        if result.status == "a-skipped" and a is not None:
            reason = (a.longrepr or "skipped").strip()
            return [
                setup,
                _report(item, "call", _skipping(reason)),
                _report(item, "teardown", None),
            ]
        if result.status == "a-failed" and a is not None:
            text = f"{a.crash}\n\n{a.longrepr or ''}"
            if result.failures:
                text += "\n\n" + result.message()
            call = _report(item, "call", _failing(text))
        elif result.failures:
            call = _report(item, "call", _failing(result.message()))
        else:
            call = _report(item, "call", None)
        if a is not None:
            call.sections.extend(a.sections)
        call.bridgeperf = {  # type: ignore[attr-defined]
            "metrics": result.rows,
            "entries": {},
            "kept": [],
            "machine": self.machine,
            "worker": self.worker,
            "tolerance": tolerance,
            "notes": result.notes,
            "test_failed": result.status == "a-failed",
            "against": {
                "label": self.checkout.label,
                "sha": self.checkout.sha,
                "blocks": result.blocks,
                "seconds": result.elapsed,
                "order": result.order,
                "status": result.status,
            },
        }
        if item.nodeid in self.profiles:
            call.bridgeperf["profile"] = self.profiles[item.nodeid]
        call.duration = result.elapsed
        return [setup, call, _report(item, "teardown", None)]

    # where the time went (profiling.py) -------------------------------------------------------
    def _where_the_time_went(self, item: pytest.Item, result: TrialResult) -> None:
        """Profile the test once on each side (rounds of mode ``explain-profile``, never
        measured), and add to the message A's top functions and the functions whose time grew
        the most from B to A; with ``lines=``, A's line-by-line timings."""
        from ..profiling import (
            EXPLAIN_KEY,
            TOP,
            Profile,
            artifact_stem,
            format_diff,
            format_profile,
        )

        nodeid = item.nodeid
        label = self.checkout.label
        profiles: dict[str, Profile] = {}
        notes: list[str] = []
        lines = ""
        modes = ["explain-profile"]
        if item.stash.get(lines_key, ()):
            modes.append("explain-lines")
        for side in ("B", "A"):  # A last: the line-by-line timings are this checkout's
            for mode in modes if side == "A" else modes[:1]:
                options: dict[str, Any] = {}
                artifacts = self.settings.artifacts_dir
                if mode == "explain-profile" and artifacts is not None:
                    options["profile_to"] = str(artifact_stem(artifacts, nodeid, f"-{side}"))
                try:
                    found = self.sides[side].run_round(nodeid, mode=mode, options=options)
                except AgainstError as exc:
                    notes.append(f"(the profiled run on side {side} failed: {exc})")
                    break
                if found.outcome != "passed":
                    reason = (found.longrepr or found.outcome).strip().splitlines()
                    notes.append(f"(the profiled run on side {side} did not pass: {reason[-1]})")
                if mode == "explain-lines":
                    lines = found.explanations.get(EXPLAIN_KEY, "")
                elif found.profile is not None:
                    try:
                        profiles[side] = Profile.from_json(found.profile)
                    except ValueError as exc:
                        notes.append(f"(side {side} sent no usable profile: {exc})")
                elif found.explanations.get(EXPLAIN_KEY):
                    notes.append(f"(side {side}: {found.explanations[EXPLAIN_KEY]})")
        parts = list(notes)
        diff = ""
        mine = profiles.get("A")
        if mine is not None:
            parts.append(format_profile(mine))
            if "B" in profiles:
                diff = format_diff(
                    profiles["B"], mine, before_name=label, after_name="this checkout"
                )
                parts.append(diff)
        parts.append(lines)
        text = "\n".join(x for x in parts if x)
        if text:
            result.explain[EXPLAIN_KEY] = text
        if mine is not None:
            report = mine.to_json(TOP)
            report["diff"] = diff
            report["lines"] = lines
            if "B" in profiles and profiles["B"].artifacts:
                report["against_artifacts"] = dict(profiles["B"].artifacts)
            self.profiles[nodeid] = report


def wants_profile(setting: str, result: TrialResult) -> bool:
    """A trial is profiled with ``--perf-profile=always``, and with ``on-regression`` when a
    timing metric (a duration, a throughput) regressed."""
    if setting == "always":
        return True
    if setting != "on-regression":
        return False
    timing = {
        row["name"]
        for row in result.rows
        if row.get("unit") == "s" or row.get("role") in ("latency", "rps")
    }
    return any(f.kind == "regression" and f.metric in timing for f in result.failures)


def _failing(message: str) -> Any:
    def fail() -> None:
        pytest.fail(message, pytrace=False)

    return fail


def _skipping(reason: str) -> Any:
    def skip() -> None:
        pytest.skip(reason)

    return skip


def _report(item: pytest.Item, when: Any, action: Any) -> pytest.TestReport:
    """A report made by pytest's own hook (so every plugin's makereport hook sees it) from a
    call that passes, fails or skips as the trial found."""
    call = pytest.CallInfo.from_call(action or (lambda: None), when=when)
    report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    return report


def _error_reports(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    return [
        _report(item, "setup", _failing(message)),
        _report(item, "teardown", None),
    ]
