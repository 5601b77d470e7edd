"""``perf_memory`` and the ``memory``/``rss`` marker budgets as a user meets them (pytester)."""

from __future__ import annotations

import json
import sys

import pytest

from pytest_bridgeperf.memory.tracers import HEAP_COUNTER_ENV, heap_counter

pytest_plugins = ["pytester"]

BUILD = """
    import pytest

    def build(n):
        return [{"id": i, "name": "row"} for i in range(n)]  # BUILD-LINE
"""


def _line_of(pytester: pytest.Pytester, marker: str, name: str = "test_mem.py") -> int:
    text = (pytester.path / name).read_text()
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def test_marker_memory_budget_passes_and_fails_with_sites_at_the_peak(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    @pytest.mark.perf(memory="64MB")
    def test_small():
        build(10_000)

    @pytest.mark.perf(memory="5MB")
    def test_big():
        rows = build(200_000)  # transient: freed before the test returns
        assert len(rows) == 200_000
    """
    )
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    line = _line_of(pytester, "BUILD-LINE")
    result.stdout.fnmatch_lines(
        [
            "*test_big*",
            "*memory*budget*",
            "*allocation sites at the peak*user code first*",
            f"*1. test_mem.py:{line} *MiB*in * blocks*",
        ]
    )


def test_marker_failure_without_memray_lists_the_sites_live_at_the_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default heap counter keeps no sites: the body runs again under tracemalloc."""
    monkeypatch.setitem(sys.modules, "memray", None)  # import memray raises ImportError
    pytester.makepyfile(
        test_mem=BUILD
        + """
    KEEP = []

    @pytest.mark.perf(memory="5MB")
    def test_big():
        KEEP[:] = build(200_000)
    """
    )
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    line = _line_of(pytester, "BUILD-LINE")
    result.stdout.fnmatch_lines(
        [
            "*allocation sites still live at the block's exit*",
            f"*1. test_mem.py:{line} *MiB*",
            "*sites at the peak unavailable: memray is not installed*",
        ]
    )


def test_fallback_backend_records_the_same_bytes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline written where the counter is built holds where it is not (and back)."""
    pytester.makepyfile(
        test_mem=BUILD
        + """
    @pytest.mark.perf(memory="500MB")
    def test_export():
        build(1000)  # warm-up: first-use caches belong to whichever run comes first
        build(50_000)
    """
    )
    pytester.runpytest("--perf-update", "-p", "no:randomly").assert_outcomes(passed=1)
    monkeypatch.setenv(HEAP_COUNTER_ENV, "0")
    pytester.runpytest("--perf", "-p", "no:randomly").assert_outcomes(passed=1)


def test_marker_memory_is_recorded_exactly_and_regression_is_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    import os

    @pytest.mark.perf(memory="500MB")
    def test_export():
        build(int(os.environ["ROWS"]))
    """
    )
    monkeypatch.setenv("ROWS", "50000")
    pytester.runpytest("--perf-update", "-p", "no:randomly").assert_outcomes(passed=1)
    stored = json.loads((pytester.path / "perf-baseline.json").read_text())
    text = json.dumps(stored)
    assert '"memory"' in text
    # Same code again: identical bytes, so no regression.
    pytester.runpytest("--perf", "-p", "no:randomly").assert_outcomes(passed=1)
    # 50 % more rows: a deterministic metric regresses beyond the 10 % tolerance.
    monkeypatch.setenv("ROWS", "75000")
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*memory*regressed*"])


def test_rss_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem="""
        import pytest

        @pytest.mark.perf(rss="20MB")
        def test_native():
            data = bytearray(60_000_000)
            del data

        @pytest.mark.perf(rss="200MB")
        def test_fits():
            data = bytearray(60_000_000)
            del data
        """
    )
    result = pytester.runpytest_subprocess("--perf", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_native*", "*rss*budget*"])


def test_memory_and_rss_budgets_together_keep_timings_clean(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    @pytest.mark.perf(memory="50MB", rss="300MB")
    def test_both(perf):
        rows = build(100_000)
        perf.record("latency", [0.01, 0.011, 0.012])
    """
    )
    result = pytester.runpytest("--perf-update", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    text = (pytester.path / "perf-baseline.json").read_text()
    for name in ('"memory"', '"rss"', '"latency"'):
        assert name in text, text


@pytest.mark.skipif(heap_counter() is None, reason="heap counter not built")
def test_timing_recorded_under_the_heap_counter_is_stored(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem="""
        import pytest

        @pytest.mark.perf(memory="50MB")
        def test_heap_only(perf):
            perf.record("latency", [0.01, 0.011, 0.012])
        """
    )
    result = pytester.runpytest("--perf-update", "-p", "no:randomly")
    stored = json.loads((pytester.path / "perf-baseline.json").read_text())
    text = json.dumps(stored)
    assert '"latency"' in text, result.stdout.str()
    assert '"backend": "heapcount"' in text


def test_timing_recorded_under_the_heap_tracer_is_not_stored(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEAP_COUNTER_ENV, "0")  # the fallback: tracemalloc, 6x
    pytester.makepyfile(
        test_mem="""
        import pytest

        @pytest.mark.perf(memory="50MB")
        def test_heap_only(perf):
            perf.record("latency", [0.01, 0.011, 0.012])
        """
    )
    result = pytester.runpytest("--perf-update", "-p", "no:randomly")
    text = (pytester.path / "perf-baseline.json").read_text()
    assert '"memory"' in text
    assert '"backend": "tracemalloc"' in text
    assert '"latency"' not in text, result.stdout.str()


def test_memory_lines_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    @pytest.mark.perf(memory="1MB")
    def test_lines():
        small = build(1_000)
        rows = build(100_000)  # THE-BIG-LINE
    """
    )
    result = pytester.runpytest("--perf", "--perf-memory-lines", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*line-by-line memory of the test function*",
            "*Line #*Mem usage*Increment*",
            "*MiB*MiB*rows = build(100_000)*THE-BIG-LINE*",
        ]
    )


def test_memory_lines_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nperf_memory_lines = true\n")
    pytester.makepyfile(
        test_mem=BUILD
        + """
    @pytest.mark.perf(memory="1MB")
    def test_lines():
        build(100_000)
    """
    )
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*line-by-line memory*"])
    without = pytester.runpytest("--perf", "-p", "no:randomly", "-o", "perf_memory_lines=false")
    assert "line-by-line" not in without.stdout.str()


@pytest.mark.skipif(heap_counter() is None, reason="heap counter not built")
def test_block_budget_failure_under_the_counter_says_how_to_get_sites(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    def test_block(perf_memory):
        with perf_memory(budget="1MB") as m:  # WITH-LINE
            rows = build(50_000)
    """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*with perf_memory(budget=*WITH-LINE*",
            "*MemoryBudgetExceeded*Python-heap peak*exceeds the budget 1MB*with heapcount*",
            "*heap counter keeps no allocation sites: give this block frames=5*",
        ]
    )


def test_block_budget_failure_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    def test_block(perf_memory):
        with perf_memory(budget="1MB", frames=5) as m:  # WITH-LINE
            rows = build(50_000)
    """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    line = _line_of(pytester, "BUILD-LINE")
    result.stdout.fnmatch_lines(
        [
            "*with perf_memory(budget=*WITH-LINE*",
            "*MemoryBudgetExceeded*Python-heap peak*exceeds the budget 1MB*no baseline*",
            "*allocation sites still live at the block's exit*",
            f"*1. test_mem.py:{line}*",
        ]
    )
    assert "_finish" not in result.stdout.str()  # the plugin's frames are hidden


def test_block_quotes_the_baseline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_mem=BUILD
        + """
    import os

    @pytest.mark.perf
    def test_block(perf_memory):
        with perf_memory(budget=os.environ["BUDGET"], name="export"):
            rows = build(20_000)
    """
    )
    monkeypatch.setenv("BUDGET", "100MB")
    pytester.runpytest("--perf-update", "-p", "no:randomly").assert_outcomes(passed=1)
    monkeypatch.setenv("BUDGET", "100kB")
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*'export'*exceeds the budget 100kB (baseline *MiB*"])


def test_blocks_nest_async_and_threads(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem="""
        import asyncio, threading
        import pytest

        MB = 1_000_000

        def test_nested(perf_memory, perf):
            with perf_memory() as outer:
                kept = bytearray(10 * MB)
                with perf_memory(name="inner") as inner:
                    temp = bytearray(20 * MB)
                    del temp
            assert 19 * MB < inner.peak < 21 * MB
            assert 29 * MB < outer.peak < 31 * MB
            assert set(perf.metrics) == {"memory.block", "inner"}

        def test_threads(perf_memory):
            out = []
            with perf_memory() as m:
                t = threading.Thread(target=lambda: out.append(bytearray(15 * MB)))
                t.start(); t.join()
            assert 14 * MB < m.peak < 16 * MB

        @pytest.mark.asyncio
        async def test_async(perf_memory):
            async with perf_memory(budget="64MB") as m:
                await asyncio.sleep(0)
                data = bytearray(12 * MB)
            assert 11 * MB < m.peak < 13 * MB
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=3)


def test_leaks_found_and_not_falsely_found(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem="""
        CACHE = []

        def leaky():
            CACHE.append(bytearray(4096))  # LEAK-LINE

        def clean():
            rows = [{"id": i} for i in range(1000)]
            return len(rows)

        def test_leaky(perf_memory):
            perf_memory.leaks(leaky, iterations=10)

        def test_clean(perf_memory):
            report = perf_memory.leaks(clean, iterations=10)
            assert not report.leaked
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    line = _line_of(pytester, "LEAK-LINE")
    result.stdout.fnmatch_lines(
        [
            "*LeakDetected: memory leak: 1 allocation site(s) grew steadily*",
            f"*test_mem.py:{line}*/iteration*",
        ]
    )


def test_perf_memory_works_without_perf(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mem="""
        def test_plain(perf_memory):
            with perf_memory(kind="rss") as m:
                data = bytearray(5_000_000)
            assert m.peak >= 0
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)
