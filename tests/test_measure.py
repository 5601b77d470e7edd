"""Timing a function: ``perf.measure``, ``perf.ameasure`` and ``perf.timer``.

Timing assertions here are bounds a busy 2-core machine cannot break by accident: each says why
its margin is what it is. Speed itself is measured by benchmarks/measure_vs_pytest_benchmark.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import textwrap
import time
import timeit
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_bridgeperf import MeasureError, Recorder, Timer
from pytest_bridgeperf.measure import MIN_ROUNDS, describe, kept_rounds


def ten_microseconds() -> int:
    return sum(range(1000))


# ---------------------------------------------------------------------------------------------
# what is measured


def test_a_10us_function_is_calibrated_and_agrees_with_timeit() -> None:
    """Calibration gives a ~10 µs function many calls per round, and the per-call time agrees
    with timeit's on the same function.

    Both are measured here, interleaved in blocks of a few milliseconds, so a slow spell of the
    machine hits both alike: each block runs perf.measure and then timeit with the same number
    of calls per repeat, and the medians over all blocks are compared. The two run the same loop
    (`for _ in repeat(None, n): fn()` between two perf_counter reads) and agree within 1 % on a
    quiet machine; the 10 % margin absorbs the machine's drift between blocks and still catches
    a harness that times the wrong thing: a round's time not divided by its ~50 calls, or a
    round that also times the calibration or the setup.
    """
    perf = Recorder()
    perf.measure(ten_microseconds)
    metric = perf.metrics["ten_microseconds"]
    iterations = metric.details["iterations"]
    assert iterations > 1  # a round lasts min_time (500 µs), not one call

    ours: list[float] = []
    theirs: list[float] = []
    for block in range(10):
        perf.measure(ten_microseconds, name=f"block {block}", rounds=5, warmup=0)
        ours += perf.metrics[f"block {block}"].rounds or []
        n = perf.metrics[f"block {block}"].details["iterations"]
        theirs += [t / n for t in timeit.Timer(ten_microseconds).repeat(repeat=5, number=n)]
    ratio = statistics.median(ours) / statistics.median(theirs)
    assert 0.9 < ratio < 1.1, (statistics.median(ours), statistics.median(theirs))

    # timeit's classic figure: the best of its repeats. A median cannot be far below the fastest
    # repeat of the same code unless the harness loses calls: one-sided, so a slow spell of the
    # machine cannot fail it — the fastest is taken over every repeat above as well (50 spread
    # over the blocks), not only 5 right now, which a slow spell would all lengthen.
    now = timeit.Timer(ten_microseconds).repeat(repeat=5, number=iterations)
    best = min(min(theirs), min(now) / iterations)
    assert metric.value > 0.9 * best, (metric.value, best)


def test_the_recorded_metric_is_a_distribution_of_rounds() -> None:
    perf = Recorder()
    perf.measure(ten_microseconds, rounds=12)
    metric = perf.metrics["ten_microseconds"]
    assert metric.unit == "s"
    assert metric.role == "latency"
    assert metric.stat == "p50"
    assert metric.rounds is not None
    assert len(metric.rounds) == 12
    assert metric.histogram is not None
    assert metric.histogram.count == 12
    assert metric.value == metric.histogram.percentile(50)
    assert min(metric.rounds) * 0.999 <= metric.value <= max(metric.rounds) * 1.001
    assert metric.details["rounds"] == 12
    assert metric.details["clock"] == "wall"
    assert metric.details["function"] == f"{__name__}.ten_microseconds"
    assert "ten_microseconds" in metric.details["explain"]
    assert describe(metric.details) == f"({metric.details['iterations']:,} × 12, wall)"


def test_past_a_hundred_rounds_the_test_gets_medians_of_runs_of_rounds() -> None:
    """Every round goes into the histogram; the significance test (and the baseline) get the
    median of each of at most 100 runs of consecutive rounds."""
    assert kept_rounds([0.5] * 100) == [0.5] * 100
    values = [float(v) for v in range(1, 251)]  # 250 rounds: runs of 3, the last of 1
    kept = kept_rounds(values)
    assert len(kept) == 84
    assert kept[:3] == [2.0, 5.0, 8.0]
    assert kept[-1] == 250.0

    perf = Recorder()
    perf.measure(ten_microseconds, rounds=250, min_time="20us", max_time="60s")
    metric = perf.metrics["ten_microseconds"]
    assert metric.histogram is not None
    assert metric.histogram.count == 250
    assert metric.details["rounds"] == 250
    assert len(metric.rounds or []) == 84


def test_returns_what_the_last_call_returned() -> None:
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return calls

    perf = Recorder()
    assert perf.measure(count, rounds=5) == calls  # the last call's value, not the first's
    assert calls > 5 * perf.metrics["count"].details["iterations"]  # calibration ran it too


def test_arguments_reach_the_function() -> None:
    seen: list[tuple[Any, ...]] = []

    def add(a: int, b: int, *, scale: int) -> int:
        seen.append((a, b, scale))
        return (a + b) * scale

    perf = Recorder()
    assert perf.measure(add, 2, 3, scale=10, rounds=5, name="add") == 50
    assert set(seen) == {(2, 3, 10)}


def test_cpu_clock_does_not_count_sleep() -> None:
    """CPU time of this thread: a function that sleeps 20 ms costs microseconds of it.

    The bound, 2 ms, is a tenth of the sleep and ~100x the CPU a sleep syscall costs; the wall
    clock, by contrast, must see at least the 20 ms (a sleep never returns early)."""

    def sleepy() -> None:
        time.sleep(0.020)

    perf = Recorder()
    perf.measure(sleepy, name="cpu", clock="cpu", rounds=5, min_time=0, warmup=0)
    perf.measure(sleepy, name="wall", clock="wall", rounds=5, min_time=0, warmup=0)
    cpu, wall = perf.metrics["cpu"], perf.metrics["wall"]
    assert cpu.details["clock"] == "cpu"
    assert cpu.details["iterations"] == 1
    assert cpu.value < 0.002, cpu.value
    assert wall.statistic("min") >= 0.0199, wall.value


def test_max_time_bounds_the_measurement() -> None:
    """rounds=1000 of a 10 ms call would take 10 s; max_time=0.3s stops it after ~30 rounds and
    never before MIN_ROUNDS. The 2 s bound is 5x the planned time (a busy machine stretches the
    sleeps) and 5x below what an unbounded run takes."""

    def ten_ms() -> None:
        time.sleep(0.010)

    perf = Recorder()
    start = time.perf_counter()
    perf.measure(ten_ms, rounds=1000, max_time="300ms", min_time=0)
    elapsed = time.perf_counter() - start
    metric = perf.metrics["ten_ms"]
    assert MIN_ROUNDS <= len(metric.rounds or []) < 1000
    assert "max_time ended it" in metric.details["explain"]
    assert elapsed < 2.0


def test_max_time_still_runs_min_rounds() -> None:
    def five_ms() -> None:
        time.sleep(0.005)

    perf = Recorder()
    perf.measure(five_ms, name="slow", max_time="1ms", min_time=0)
    assert len(perf.metrics["slow"].rounds or []) == MIN_ROUNDS
    perf.measure(five_ms, name="fewer asked", rounds=2, max_time="1ms", min_time=0)
    assert len(perf.metrics["fewer asked"].rounds or []) == 2


def test_warmup_by_time_or_rounds() -> None:
    calls: list[int] = []

    def setup() -> None:
        calls.append(1)

    perf = Recorder()
    perf.measure(ten_microseconds, setup=setup, rounds=4, warmup=3, name="rounds")
    assert len(calls) == 7  # 3 warm-up rounds + 4 measured, each after a setup call
    calls.clear()
    perf.measure(ten_microseconds, setup=setup, rounds=4, warmup="50ms", name="time")
    assert len(calls) > 4 + 1  # 50 ms of ~10 µs rounds: many warm-up rounds


# ---------------------------------------------------------------------------------------------
# the garbage collector


@pytest.fixture
def gc_state() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("enabled_before", [True, False])
def test_gc_disable_restores_the_collector(enabled_before: bool) -> None:
    states: set[bool] = set()

    def probe() -> None:
        states.add(gc.isenabled())

    if enabled_before:
        gc.enable()
    else:
        gc.disable()
    perf = Recorder()
    perf.measure(probe, gc="disable", rounds=5)
    assert states == {False}
    assert gc.isenabled() is enabled_before
    states.clear()
    perf.measure(probe, gc="keep", rounds=5, name="kept")
    assert states == {enabled_before}
    assert gc.isenabled() is enabled_before


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("enabled_before", [True, False])
def test_gc_is_restored_when_the_function_raises(enabled_before: bool) -> None:
    calls = 0

    def fails_later() -> None:
        nonlocal calls
        calls += 1
        if calls == 50:
            raise KeyError("fiftieth call")

    if enabled_before:
        gc.enable()
    else:
        gc.disable()
    perf = Recorder()
    with pytest.raises(KeyError, match="fiftieth call"):
        perf.measure(fails_later, gc="disable")
    assert gc.isenabled() is enabled_before
    assert perf.metrics == {}


@pytest.mark.usefixtures("gc_state")
def test_gc_disable_collects_the_young_generation_between_rounds() -> None:
    """With gc="disable" each round's cyclic garbage is collected between the rounds: one
    generation-0 collection per measured round. The collector is off beforehand, so no
    automatic collection can add to the count; gc="keep" then collects nothing."""
    collections: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    def make_cycles() -> None:
        for _ in range(100):
            a: list[Any] = []
            a.append(a)

    gc.disable()
    gc.callbacks.append(callback)
    try:
        Recorder().measure(make_cycles, gc="disable", rounds=7, warmup=0)
        assert collections == [0] * 7
        collections.clear()
        Recorder().measure(make_cycles, gc="keep", rounds=7, warmup=0)
        assert collections == []
    finally:
        gc.callbacks.remove(callback)


# ---------------------------------------------------------------------------------------------
# setup


def test_setup_is_called_before_each_round_with_fresh_arguments() -> None:
    calls = 0

    def setup() -> tuple[list[Any], dict[str, Any]]:
        nonlocal calls
        calls += 1
        return [list(range(2000, 0, -1))], {"reverse": False}

    def sort_in_place(items: list[int], *, reverse: bool) -> int:
        assert items[0] == 2000, "setup's fresh list was sorted by an earlier call"
        items.sort(reverse=reverse)
        return items[0]

    perf = Recorder()
    assert perf.measure(sort_in_place, setup=setup, rounds=9, warmup=0) == 1
    metric = perf.metrics["sort_in_place"]
    assert calls == 9
    assert metric.details["iterations"] == 1  # a fresh argument per call: one call per round
    assert describe(metric.details) == "(1 × 9, wall)"


def test_setup_may_return_none() -> None:
    calls = 0

    def setup() -> None:
        nonlocal calls
        calls += 1

    Recorder().measure(ten_microseconds, setup=setup, rounds=3, warmup=1)
    assert calls == 4


def test_setup_and_arguments_together_are_refused() -> None:
    with pytest.raises(TypeError, match="either directly or from setup"):
        Recorder().measure(sorted, [3, 1], setup=lambda: None)


def test_setup_returning_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match=r"must return \(args, kwargs\)"):
        Recorder().measure(sorted, setup=lambda: [3, 1])


# ---------------------------------------------------------------------------------------------
# options and names


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clock": "monotonic"}, r"clock='monotonic': use 'wall'"),
        ({"gc": "off"}, r"gc='off': use 'keep'"),
        ({"rounds": 0}, r"rounds=0: expected a whole number ≥ 1"),
        ({"rounds": True}, r"rounds=True"),
        ({"min_time": "fast"}, r"min_time='fast': invalid duration"),
        ({"max_time": 0}, r"max_time=0: must be longer than 0"),
        ({"warmup": 0.5}, r"warmup=0.5: give a number of rounds"),
        ({"warmup": -1}, r"warmup=-1"),
        ({"warmup": "2s", "max_time": "1s"}, r"warmup='2s' is not shorter than max_time='1s'"),
        ({"name": ""}, r"name='': expected a non-empty string"),
    ],
)
def test_invalid_options_name_the_option(options: dict[str, Any], message: str) -> None:
    called = []
    with pytest.raises(MeasureError, match=message):
        Recorder().measure(called.append, 1, **options)
    assert called == []  # checked before anything ran


def test_a_second_measurement_under_the_same_name_is_refused_before_it_runs() -> None:
    perf = Recorder()
    perf.measure(ten_microseconds, rounds=3)
    calls = []
    with pytest.raises(MeasureError, match=r"'ten_microseconds' was already recorded.*name="):
        perf.measure(ten_microseconds, rounds=3, setup=lambda: calls.append(1))
    assert calls == []


def test_default_names() -> None:
    class Parser:
        def parse(self) -> int:
            return 1

    perf = Recorder()
    perf.measure(Parser().parse, rounds=3)
    perf.measure(len, "abc", rounds=3)
    assert set(perf.metrics) == {"Parser.parse", "len"}
    with pytest.raises(MeasureError, match="a lambda has no name of its own: pass name="):
        perf.measure(lambda: None)


def test_measure_refuses_a_coroutine_function() -> None:
    async def fetch() -> None:
        pass

    with pytest.raises(TypeError, match=r"coroutine function: use `await perf\.ameasure"):
        Recorder().measure(fetch)


# ---------------------------------------------------------------------------------------------
# async


@pytest.mark.asyncio
async def test_ameasure_runs_on_the_tests_loop(perf: Recorder) -> None:
    """Every call is awaited on the test's loop: another task of that loop keeps running
    (it ticks at every ``sleep(0)`` of the measured coroutine)."""
    loop = asyncio.get_running_loop()
    loops: set[asyncio.AbstractEventLoop] = set()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def handler(x: int) -> int:
        loops.add(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return sum(range(x))

    task = asyncio.create_task(ticker())
    try:
        result = await perf.ameasure(handler, 500, rounds=10)
    finally:
        task.cancel()
    assert result == sum(range(500))
    assert loops == {loop}
    metric = perf.metrics["handler"]
    assert metric.details["iterations"] > 1
    # the ticker ran about once per call: far more than the 10 rounds
    assert ticks > 10 * metric.details["iterations"]


@pytest.mark.asyncio
async def test_ameasure_refuses_a_function_without_awaitable(perf: Recorder) -> None:
    with pytest.raises(TypeError, match=r"returned int, not an awaitable: use perf\.measure"):
        await perf.ameasure(len, "abc")
    assert perf.metrics == {}


@pytest.mark.asyncio
async def test_ameasure_propagates_exceptions_and_records_nothing(perf: Recorder) -> None:
    async def broken() -> None:
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError, match="peer went away"):
        await perf.ameasure(broken)
    assert perf.metrics == {}


@pytest.mark.asyncio
async def test_ameasure_with_setup_and_cpu_clock(perf: Recorder) -> None:
    calls = 0

    def setup() -> tuple[tuple[int], dict[str, Any]]:
        nonlocal calls
        calls += 1
        return (calls,), {}

    async def echo(x: int) -> int:
        await asyncio.sleep(0)
        return x

    assert await perf.ameasure(echo, setup=setup, rounds=6, warmup=2, clock="cpu") == 8
    assert calls == 8
    assert perf.metrics["echo"].details["clock"] == "cpu"


# ---------------------------------------------------------------------------------------------
# timer


@pytest.fixture
def rendered_once(perf: Recorder) -> None:
    """A fixture timing its own part of the work under the test's metric name."""
    with perf.timer("render"):
        sum(range(20_000))


@pytest.mark.usefixtures("rendered_once")
def test_timer_in_a_loop_and_across_fixtures(perf: Recorder) -> None:
    for _ in range(3):
        with perf.timer("render"):
            sum(range(20_000))
    metric = perf.metrics["render"]
    assert metric.count == 4  # the fixture's entry and the test's three
    assert metric.details == {"clock": "wall", "entries": 4}
    assert describe(metric.details) == "(4 entries, wall)"
    assert metric.value == metric.statistic("p50")


def test_nested_timers() -> None:
    perf = Recorder()
    with perf.timer("page") as page:
        for _ in range(5):
            with perf.timer("row"):
                sum(range(5_000))
    rows = perf.metrics["row"]
    assert rows.count == 5
    assert perf.metrics["page"].count == 1
    assert isinstance(page, Timer)
    assert page.elapsed is not None
    # physically certain: the page block contains the five row blocks
    assert page.elapsed >= sum(rows.statistic("min") for _ in range(5))
    assert page.elapsed >= rows.statistic("max")


def test_timer_reads_stay_current() -> None:
    """The distribution is updated when the metrics are read: between reads it keeps growing."""
    perf = Recorder()
    with perf.timer("step"):
        pass
    assert perf.metrics["step"].count == 1
    for _ in range(4):
        with perf.timer("step"):
            sum(range(1000))
    assert perf.metrics["step"].count == 5
    assert perf.metrics["step"].details["entries"] == 5


def test_a_block_that_raises_records_nothing() -> None:
    perf = Recorder()
    with pytest.raises(ZeroDivisionError), perf.timer("div"):
        _ = 1 / 0
    assert perf.metrics == {}
    with perf.timer("div"):
        pass
    with pytest.raises(ZeroDivisionError), perf.timer("div"):
        _ = 1 / 0
    assert perf.metrics["div"].count == 1


def test_timer_cpu_clock() -> None:
    perf = Recorder()
    with perf.timer("sleep", clock="cpu"):
        time.sleep(0.02)
    assert perf.metrics["sleep"].value < 0.002  # a tenth of the sleep: see the measure test
    with (
        pytest.raises(ValueError, match="wall clock cannot join entries timed with the cpu"),
        perf.timer("sleep"),
    ):
        pass


def test_timer_names_do_not_mix_with_other_metrics() -> None:
    perf = Recorder()
    perf.record("latency", [0.1, 0.2])
    with (
        pytest.raises(ValueError, match=r"'latency' was already recorded.*timer a name"),
        perf.timer("latency"),
    ):
        pass
    with perf.timer("render"):
        pass
    with pytest.raises(ValueError, match="'render' was already recorded"):
        perf.record("render", 0.1)
    with pytest.raises(MeasureError, match="'render' was already recorded"):
        perf.measure(ten_microseconds, name="render")


def test_a_running_timer_cannot_be_entered_again() -> None:
    perf = Recorder()
    timer = perf.timer("x")
    with timer, pytest.raises(RuntimeError, match="already running"), timer:
        pass
    with timer:  # left: usable again
        pass
    assert perf.metrics["x"].count == 2  # the outer entry and the one after


def test_timer_after_the_metrics_were_replaced() -> None:
    """The plugin's confirmation rerun replaces the metrics and runs the body again: the timer
    then starts a new distribution instead of refusing the name."""
    perf = Recorder()
    with perf.timer("t"):
        pass
    perf.metrics = {}
    with perf.timer("t"):
        pass
    with perf.timer("t"):
        pass
    assert perf.metrics["t"].count == 2


def test_timer_invalid_arguments() -> None:
    with pytest.raises(MeasureError, match="name=''"):
        Recorder().timer("")
    with pytest.raises(MeasureError, match="clock='process'"):
        Recorder().timer("t", clock="process")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# in a pytest run


MEASURED = """
import pytest

SIZE = int(__import__("os").environ.get("SIZE", "2000"))

def parse():
    return sum(range(SIZE))

@pytest.mark.perf
def test_parse(perf):
    perf.measure(parse, clock="cpu", rounds=15)

@pytest.mark.perf
def test_render(perf):
    for _ in range(3):
        with perf.timer("render"):
            sum(range(SIZE))
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def test_round_trip_through_the_baseline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--perf-update stores the rounds and the histogram; an unchanged rerun is ok; a 4x slower
    function is a regression judged on those rounds (the floor is lowered to 0: the default 1 ms
    floor hides changes of microseconds)."""
    monkeypatch.setenv("SIZE", "2000")
    pytester.makeini(INI)
    pytester.makepyfile(test_measured=MEASURED)
    result = _run(pytester, "--perf", "--perf-update")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*parse p50 * new  (* × 15, cpu)*", "*render p50 * (3 entries, wall)*"]
    )
    stored = json.loads((pytester.path / "perf-baseline.json").read_text(encoding="utf-8"))
    tests = stored["environments"]["default"]["tests"]
    parse = tests["test_measured.py::test_parse"]["metrics"]["parse"]
    assert len(parse["rounds"]) == 15
    assert parse["n"] == 15
    assert parse["hdr"]
    assert parse["details"]["clock"] == "cpu"
    assert parse["details"]["iterations"] > 1
    assert parse["details"]["function"] == "test_measured.parse"
    assert "explain" not in parse["details"]  # a message, not something to diff in the baseline
    render = tests["test_measured.py::test_render"]["metrics"]["render"]
    assert render["n"] == 3
    assert render["details"] == {"clock": "wall", "entries": 3}

    result = _run(pytester, "--perf", "--perf-min-delta=0", "--perf-tolerance=50%")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*parse p50 * ok *(* × 15, cpu)*"])

    monkeypatch.setenv("SIZE", "8000")  # 4x the work: +300 %, far beyond the 50 % tolerance
    result = _run(pytester, "--perf", "--perf-min-delta=0", "--perf-tolerance=50%", "-k", "parse")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*perf: parse p50 * → * regressed*",
            "*measured test_measured.parse: * calls × 15 rounds, cpu clock*",
        ]
    )


def test_marker_budgets_apply(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_budgets="""
        import pytest

        def parse():
            return sum(range(2000))

        @pytest.mark.perf(p50="1ns")  # no function call takes 1 ns
        def test_over(perf):
            perf.measure(parse, rounds=5)

        @pytest.mark.perf(p50="1s", max="1s")  # ~20 µs calls: 50,000x below
        def test_within(perf):
            perf.measure(parse, rounds=5)
        """
    )
    result = _run(pytester, "--perf", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*perf: parse: p50 * (budget ≤ 1ns)*",
            "*measured test_budgets.parse: * calls × 5 rounds, wall clock*",
        ]
    )


def test_exception_fails_the_test_with_the_functions_traceback(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_broken="""
        import pytest

        def parse(text):
            fields = text.split(",")
            return int(fields[3])

        @pytest.mark.perf
        def test_parse(perf):
            perf.measure(parse, "a,b,c")
        """
    )
    result = _run(pytester, "--perf", "--perf-report=report.json")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        ['*perf.measure(parse, "a,b,c")*', "*return int(fields?3?)*", "E*IndexError*"]
    )
    assert "pytest_bridgeperf" not in out  # the harness's frames are hidden
    report = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    assert report["tests"] == {}  # nothing recorded


def test_markdown_and_html_show_iterations_rounds_and_clock(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_measured=MEASURED)
    result = _run(pytester, "--perf", "--perf-markdown=perf.md", "--perf-html=perf.html")
    assert result.ret == 0, result.stdout.str()
    markdown = (pytester.path / "perf.md").read_text(encoding="utf-8")
    html = (pytester.path / "perf.html").read_text(encoding="utf-8")
    # "new" metrics: the Markdown flat table, the HTML metric table
    assert "× 15, cpu)" in markdown
    assert "(3 entries, wall)" in markdown
    assert "× 15, cpu</small>" in html
    assert "3 entries, wall</small>" in html


# ---------------------------------------------------------------------------------------------
# packaging


def test_measure_module_imports_without_pytest() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None
        sys.modules["_pytest"] = None
        from pytest_bridgeperf.measure import Timer, describe
        from pytest_bridgeperf import Recorder
        perf = Recorder()
        perf.measure(sum, range(10), rounds=3)
        with perf.timer("t"):
            pass
        print(sorted(perf.metrics))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['sum', 't']"
