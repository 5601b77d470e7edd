"""Build of the optional C extension; everything else is declared in pyproject.toml.

``optional=True``: without a compiler the install still succeeds and ``kind="python"`` memory
blocks fall back to tracemalloc.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pytest_bridgeperf.memory._heapcount",
            ["pytest_bridgeperf/memory/_heapcount.c"],
            optional=True,
        )
    ]
)
