"""The plugin's state on pytest's stash: per configuration and per test item. Nothing else
keeps state: no module globals, no attributes on ``config``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from .metrics import Budgets, Recorder
from .settings import Settings

__all__ = [
    "RoundContext",
    "budgets_key",
    "fresh_recorder",
    "lines_key",
    "recorder_for",
    "round_key",
    "settings_key",
]

settings_key = pytest.StashKey[Settings]()
#: the marker's budgets, parsed at collection (only perf tests have them)
budgets_key = pytest.StashKey[Budgets]()
#: the marker's ``lines=`` functions, validated at collection (perf tests that name some)
lines_key = pytest.StashKey[tuple[Callable[..., Any], ...]]()
_recorder_key = pytest.StashKey[Recorder]()


@dataclass
class RoundContext:
    """What the current run of a perf test is for (set by whoever runs the rounds)."""

    #: measure | confirm | heap | explain-sites | explain-lines-heap | explain-lines-rss | warmup
    #: | explain-profile | explain-lines (the last two: where the time went, profiling.py)
    mode: str = "measure"
    number: int = 1
    #: explanations left by the body probes of an explaining run, per metric name
    explanations: dict[str, str] = field(default_factory=dict)
    #: an ``explain-profile`` run: where to write its profile's files (a path without suffix;
    #: None: none written), and the profile it took (a ``profiling.Profile``)
    profile_to: str | None = None
    profile: Any = None


round_key = pytest.StashKey[RoundContext]()


def recorder_for(item: pytest.Item) -> Recorder:
    """The metric recorder of the current run of ``item`` (created on first use)."""
    recorder = item.stash.get(_recorder_key, None)
    if recorder is None:
        recorder = item.stash[_recorder_key] = Recorder()
    return recorder


def fresh_recorder(item: pytest.Item) -> Recorder:
    """A new recorder for a new run of ``item``: every run — a round, a rerun of
    pytest-rerunfailures, another ``--lf`` session — records its own metrics."""
    recorder = item.stash[_recorder_key] = Recorder()
    return recorder
