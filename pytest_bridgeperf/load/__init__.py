"""Load testing: ``run_load``/``arun_load`` drive HTTP targets, web apps served for the run
(ASGI, WSGI, aiohttp; or a factory of one) and Python callables under a closed (``users=``) or
open (``rate=``) model. No pytest here."""

from __future__ import annotations

from .apps import AppFactory
from .engine import LoadRateError
from .errors import LoadError
from .hosts import LoadHostError
from .options import LoadOptionError, LoadOptions, Request
from .resources import LoadGeneratorSaturated, ResourceUsage
from .result import HostShare, LoadResult
from .runner import LoadConnectionError, arun_load, run_load
from .safety import LoadTargetError
from .serving import LoadAppError

__all__ = [
    "AppFactory",
    "HostShare",
    "LoadAppError",
    "LoadConnectionError",
    "LoadError",
    "LoadGeneratorSaturated",
    "LoadHostError",
    "LoadOptionError",
    "LoadOptions",
    "LoadRateError",
    "LoadResult",
    "LoadTargetError",
    "Request",
    "ResourceUsage",
    "arun_load",
    "run_load",
]
