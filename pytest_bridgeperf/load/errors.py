"""A load run in which every request failed measured nothing but the failure: :class:`LoadError`.

No pytest here.
"""

from __future__ import annotations

from ..thresholds import describe_errors
from .result import LoadResult

__all__ = ["LoadError", "check_errors"]


class LoadError(AssertionError):
    """Every request of a load run failed (refused connections, timeouts, 5xx answers...):
    its latencies and throughput describe the failure, not the system. ``.result`` holds what
    was measured. ``perf_load(..., expect_errors=True)`` accepts such a run."""

    def __init__(self, message: str, result: LoadResult) -> None:
        super().__init__(message)
        self.result = result


def check_errors(result: LoadResult, *, expect_errors: bool) -> None:
    """Raise :class:`LoadError` when every finished request of ``result`` failed."""
    if expect_errors or result.count == 0 or result.errors < result.count:
        return
    if result.interrupted or result.stopped_by is not None:
        return  # partial results: the interruption is the news
    what = "calls" if result.target.endswith("()") else "requests"
    raise LoadError(
        f"every one of the {result.count} {what} of {result.name} to {result.target} failed — "
        f"{describe_errors(result.error_types, result.status_counts)}. Is the target up, and "
        "the path and method right? A test that expects every request to fail passes "
        "expect_errors=True.",
        result,
    )
