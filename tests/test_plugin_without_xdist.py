"""The plugin must not depend on pytest-xdist being installed (its hooks are xdist's own)."""

from __future__ import annotations

import pytest


def test_perf_run_without_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest

        @pytest.mark.perf
        def test_a(perf):
            perf.record("work", 3, unit="count")
        """
    )
    # -p no:xdist: as if it were not installed, so its hook specifications are unknown too
    result = pytester.runpytest_subprocess("--perf", "--perf-update", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result = pytester.runpytest_subprocess("--perf", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["perf: 1 ok, *"])
