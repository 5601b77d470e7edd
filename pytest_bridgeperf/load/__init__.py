"""Load testing: ``run_load``/``arun_load`` drive HTTP targets, in-process aiohttp apps and
Python callables under a closed (``users=``) or open (``rate=``) model. No pytest here."""

from __future__ import annotations

from .engine import LoadRateError
from .errors import LoadError
from .hosts import LoadHostError
from .options import LoadOptionError, LoadOptions, Request
from .result import HostShare, LoadResult
from .runner import LoadConnectionError, arun_load, run_load
from .safety import LoadTargetError

__all__ = [
    "HostShare",
    "LoadConnectionError",
    "LoadError",
    "LoadHostError",
    "LoadOptionError",
    "LoadOptions",
    "LoadRateError",
    "LoadResult",
    "LoadTargetError",
    "Request",
    "arun_load",
    "run_load",
]
