"""A FastAPI + SQLAlchemy example app, and the perf tests that guard it (``tests/``)."""

from __future__ import annotations

from .db import DATABASE_URL_ENV, PASSWORD, make_engine, seed
from .main import create_app, list_projects

__all__ = ["DATABASE_URL_ENV", "PASSWORD", "create_app", "list_projects", "make_engine", "seed"]
