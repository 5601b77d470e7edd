"""Build of the optional C extension (the heap counter); everything else is in pyproject.toml.

``optional=True``: without a compiler the install still succeeds and ``kind="python"`` memory
blocks fall back to tracemalloc. Not built on free-threaded Python, whose allocator hooks run
without the GIL that the counter relies on.
"""

from __future__ import annotations

import sysconfig

from setuptools import Extension, setup

extensions = []
if not sysconfig.get_config_var("Py_GIL_DISABLED"):
    extensions.append(
        Extension(
            "pytest_bridgeperf.memory._heapcount",
            ["pytest_bridgeperf/memory/_heapcount.c"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
