"""Whole runs of one test item — setup, call, teardown through pytest's hooks — as many times as a
measurement needs, each with fresh function-scoped fixtures.

pytest runs an item once. Running it again the way pytest-rerunfailures does (the confirmation
rounds of a timing regression, the A/B rounds of ``--perf-against``, the explaining reruns of a
broken memory budget) needs a few of pytest's internals. They are all in this module, each with
its reason, and ``tests/test_itemrun.py`` fails loudly when pytest changes one of them.

Between two runs of the same item only the item's own (function-scoped) fixtures are torn down;
class-, module- and session-scoped fixtures stay up, as they would for the next test of the same
module. :func:`finish` then tears down what the next item does not share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

# The phases through every plugin's hooks (capture, logging, pytest-randomly's reseeding,
# pytest-timeout's func_only timer, ...), without logging the report: the same function
# pytest's own runtestprotocol uses, and pytest-rerunfailures relies on.
from _pytest.runner import call_and_report, get_reraise_exceptions

if TYPE_CHECKING:
    from _pytest.nodes import Node

__all__ = ["finish", "setup_and_call", "teardown"]


def setup_and_call(item: pytest.Item) -> list[pytest.TestReport]:
    """Set the item up with fresh function-scoped fixtures and, if that passed, call it.

    Returns the setup report and, when the setup passed, the call report; nothing is logged.
    """
    _fresh(item)
    reports = [call_and_report(item, "setup", log=False)]
    if reports[0].passed:
        if item.config.getoption("setupshow", False):
            _show_test_item(item)
        if not item.config.getoption("setuponly", False):
            reports.append(call_and_report(item, "call", log=False))
    return reports


def teardown(item: pytest.Item, nextitem: pytest.Item | None, *, keep: bool) -> pytest.TestReport:
    """Tear the item down, without logging the report.

    ``keep``: another run of the same item follows, so tear down only the item's own fixtures
    and keep the higher-scoped ones (call :func:`finish` after the last run). Otherwise tear
    down as pytest does before ``nextitem``.
    """
    target: Node | None = item.parent if keep else nextitem
    if item.session.shouldfail or item.session.shouldstop:
        # as runtestprotocol: a session about to stop tears everything down now (pytest #11706)
        target = None
    # pytest's own teardown hook only reads ``nextitem.listchain()``: the item's parent makes it
    # pop the item's node (its function-scoped fixtures) and nothing above it.
    report = call_and_report(item, "teardown", log=False, nextitem=target)
    _release(item)
    return report


def finish(item: pytest.Item, nextitem: pytest.Item | None) -> pytest.TestReport | None:
    """After a run that kept the higher-scoped fixtures: tear down what ``nextitem`` does not
    share (pytest's teardown would have done it). Returns an error report when a finalizer
    raised, else None."""

    def tear() -> None:
        # SetupState is pytest's stack of set-up nodes; teardown_exact is what pytest's own
        # pytest_runtest_teardown calls. No hook does this part alone.
        item.session._setupstate.teardown_exact(nextitem)

    call = pytest.CallInfo.from_call(
        tear, when="teardown", reraise=get_reraise_exceptions(item.config)
    )
    if call.excinfo is None:
        return None
    report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    return report


def _show_test_item(item: pytest.Item) -> None:
    """``--setup-show``'s line for the item, as runtestprotocol writes it (its own helper's
    signature changed in pytest 9.2)."""
    writer = item.config.get_terminal_writer()
    writer.line()
    writer.write(" " * 8)
    writer.write(item.nodeid)
    used = sorted(getattr(item, "fixturenames", []))
    if used:
        writer.write(" (fixtures used: {})".format(", ".join(used)))
    writer.flush()


def _fresh(item: pytest.Item) -> None:
    """What a new run of the item needs: a new fixture request (so no function-scoped fixture
    value is reused) and, for a method, a new instance of its class (as pytest gives each test
    its own)."""
    anyitem: Any = item
    # the captured output of earlier runs (pytest collects it on the item for one run's reports)
    anyitem._report_sections = []
    if hasattr(anyitem, "_request") and not anyitem._request:
        anyitem._initrequest()
    ran_before = getattr(anyitem, "_bridgeperf_ran", False)
    if ran_before and getattr(anyitem, "_instance", None) is not None:
        # both are recomputed lazily on the next access to ``item.obj``
        del anyitem._instance
        anyitem._obj = None
    anyitem._bridgeperf_ran = True


def _release(item: pytest.Item) -> None:
    """As runtestprotocol after the teardown: the fixture values of this run go away."""
    anyitem: Any = item
    if hasattr(anyitem, "_request"):
        anyitem._request = False
        anyitem.funcargs = None
