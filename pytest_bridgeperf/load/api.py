"""``PerfLoad``: what the ``perf_load`` fixture returns. Runs, records, reports interruptions.

The fixture hands in the recorder, the settings it needs and the terminal callbacks, so this
class knows nothing about pytest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..metrics import Recorder
from ..units import UnitError, parse_duration
from .apps import is_web_target
from .engine import ProgressCallback
from .interrupts import Deadline
from .options import LoadOptionError
from .record import record_result
from .result import LoadResult
from .runner import arun_load, new_runner, run_load
from .webapps import IN_CHILD

__all__ = ["SATURATED_CPU", "PerfLoad"]

#: CPU of a generator process (percent of one core) from which a run's report says it may
#: have been the bottleneck.
SATURATED_CPU = 90.0


class PerfLoad:
    """``perf_load(target, **options) -> LoadResult``; ``await perf_load.arun(target, ...)``.

    ``target``: a URL (loopback, or a host listed in ``perf_allowed_hosts``), a web app served
    on 127.0.0.1 for the run (ASGI, WSGI or ``aiohttp.web.Application``; where: ``serve=``), a
    factory of one (``app_factory=True``, or ``AppFactory(create_app, *args)``), or a callable,
    sync or async.
    Every result is recorded into the test's metrics (``record=False`` opts out).
    """

    def __init__(
        self,
        recorder: Recorder | None,
        *,
        allowed_hosts: Iterable[str] = (),
        max_duration: float = 60.0,
        progress: ProgressCallback | None = None,
        report: Callable[[str], None] | None = None,
        deadline: Callable[[], Deadline | None] | None = None,
        duration_cap: float | None = None,
        load_hosts: Iterable[str] = (),
        queries_budget: bool = False,
    ) -> None:
        self._recorder = recorder
        self._allowed_hosts = tuple(allowed_hosts)
        self._max_duration = max_duration
        self._progress = progress
        self._report = report
        #: asked at the start of each run: when it must have ended (the test's timeout)
        self._deadline = deadline
        #: --perf-against's ini perf_against_load_duration: each duration-based run of a round
        #: lasts at most this (the rounds give the repetitions)
        self._duration_cap = duration_cap
        #: ini perf_load_hosts: the generators of runs that name neither hosts= nor workers=
        self._load_hosts = tuple(load_hosts)
        #: the test has a queries_per_request= budget: attribute SQL in every app run
        self._queries_budget = queries_budget
        #: Every result of this test, in order.
        self.results: list[LoadResult] = []
        # one event loop for the test's sync runs: an aiohttp app can be load-tested repeatedly
        self._runner: asyncio.Runner | None = None

    def _kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "allowed_hosts": self._allowed_hosts,
            "max_duration": self._max_duration,
            "progress": self._progress if options.get("progress", True) else None,
            "deadline": self._deadline() if self._deadline is not None else None,
            "default_hosts": self._load_hosts,
        }

    def _capped(self, options: dict[str, Any]) -> dict[str, Any]:
        cap = self._duration_cap
        if cap is None or "requests" in options:
            return options
        asked = options.get("duration", "5s")
        try:
            seconds = parse_duration(asked) if isinstance(asked, str) else float(asked)
        except (UnitError, ValueError, TypeError):
            return options  # the run's own validation names the bad value
        return {**options, "duration": min(seconds, cap)}

    def _with_budget(self, target: Any, options: dict[str, Any]) -> dict[str, Any]:
        """A ``queries_per_request=`` budget turns on SQL attribution for app targets."""
        if not self._queries_budget or "queries" in options:
            return options
        if not is_web_target(target, options.get("app_factory") is True):
            return options
        if options.get("serve") == "process":
            raise LoadOptionError(
                f"the marker's queries_per_request= budget counts SQL per request: {IN_CHILD}"
            )
        return {**options, "queries": True}

    def __call__(self, target: Any, **options: Any) -> LoadResult:
        options = self._with_budget(target, self._capped(options))
        if self._runner is None:
            self._runner = new_runner()
        result = run_load(target, options, runner=self._runner, **self._kwargs(options))
        return self._finish(result, options)

    def close(self) -> None:
        """Close the event loop of the sync runs (fixture teardown)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    async def arun(self, target: Any, **options: Any) -> LoadResult:
        """The same as calling it, on the running event loop (for async tests)."""
        options = self._with_budget(target, self._capped(options))
        return self._finish(await arun_load(target, options, **self._kwargs(options)), options)

    def _finish(self, result: LoadResult, options: dict[str, Any]) -> LoadResult:
        self.results.append(result)
        self._warn_saturated(result)
        if result.stopped_by is not None:
            asked = ", ".join(
                f"{k}={options[k]!r}" for k in ("duration", "requests") if k in options
            )
            raise TimeoutError(
                f"the load run was stopped by {result.stopped_by}, "
                f"{result.elapsed:.1f} s into its measured phase ({asked or 'duration=5s'}): "
                "shorten the run or raise the timeout. Partial results, not recorded: "
                f"{result.summary()}"
            )
        if result.interrupted:
            if self._report is not None:
                self._report(f"perf_load interrupted, partial results: {result.summary()}")
            raise KeyboardInterrupt(f"perf_load interrupted: {result.summary()}")
        if self._recorder is not None and options.get("record", True):
            record_result(self._recorder, result)
        return result

    def _warn_saturated(self, result: LoadResult) -> None:
        """A generator that kept a CPU core busy set the pace itself (Locust warns the same)."""
        if self._report is None:
            return
        for share in result.hosts:
            if share.cpu >= SATURATED_CPU:
                self._report(
                    f"perf_load {result.name}: generator {share.id} on {share.hostname} used "
                    f"{share.cpu:.0f} % of a CPU core: it may have limited the load, and its "
                    "latencies include its own queueing. Add generators (hosts=, workers=) or "
                    "give each fewer users."
                )

    def __repr__(self) -> str:
        return f"<perf_load: {len(self.results)} run(s)>"
