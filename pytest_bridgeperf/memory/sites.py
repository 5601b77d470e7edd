"""Allocation sites: where the memory of a peak (or a leak) was allocated, user code first."""

from __future__ import annotations

import os
import sysconfig
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..units import format_size

__all__ = [
    "AllocationSite",
    "format_sites",
    "is_user_file",
    "sites_from_memray",
    "sites_from_snapshot",
]

TOP_SITES = 10


@dataclass(frozen=True)
class AllocationSite:
    """Memory attributed to one source line."""

    filename: str
    lineno: int
    size: int  # bytes
    count: int  # allocations (blocks)
    user: bool  # the line is in the user's code (not the standard library, site-packages, ...)

    @property
    def location(self) -> str:
        return f"{display_path(self.filename)}:{self.lineno}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": display_path(self.filename),
            "line": self.lineno,
            "size": self.size,
            "count": self.count,
        }


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    here = str(Path(__file__).resolve().parent.parent)
    roots.add(here)
    return tuple(sorted(os.path.normcase(os.path.realpath(r)) + os.sep for r in roots if r))


@lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """True for files of the project under test; False for the interpreter, installed packages,
    pytest and this plugin."""
    if not filename or filename.startswith("<"):
        return False
    normalized = os.path.normcase(os.path.realpath(filename))
    if any(part in normalized for part in ("site-packages", "dist-packages")):
        return False
    return not normalized.startswith(_library_roots())


def _is_ours(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_MEMORY_PACKAGE)


_MEMORY_PACKAGE = str(Path(__file__).resolve().parent) + os.sep


def display_path(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def _pick(frames: Sequence[tuple[str, int]]) -> tuple[str, int, bool]:
    """Innermost frame in user code, else the innermost frame. ``frames`` innermost first."""
    for filename, lineno in frames:
        if is_user_file(filename):
            return filename, lineno, True
    filename, lineno = frames[0] if frames else ("<unknown>", 0)
    return filename, lineno, False


def _ranked(totals: dict[tuple[str, int, bool], list[int]], top: int) -> list[AllocationSite]:
    # Lines holding under 0.1 % of the total are noise (the test runner's own frames).
    floor = max(1, sum(size for size, _count in totals.values()) // 1000)
    sites = [
        AllocationSite(filename, lineno, size, count, user)
        for (filename, lineno, user), (size, count) in totals.items()
        if size >= floor
    ]
    # The user's lines first (that is where they can act), each group by size.
    sites.sort(key=lambda s: (not s.user, -s.size, s.filename, s.lineno))
    return sites[:top]


def _add(
    totals: dict[tuple[str, int, bool], list[int]],
    key: tuple[str, int, bool],
    size: int,
    count: int,
) -> None:
    entry = totals.setdefault(key, [0, 0])
    entry[0] += size
    entry[1] += count


_IGNORED_FILES = (
    tracemalloc.__file__,
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
)


# Innermost frame in the measuring machinery itself, the import system or code without a file.
_FILTERS = [
    tracemalloc.Filter(False, pattern)
    for pattern in (
        *_IGNORED_FILES,
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "*"),
        "<string>",
        "<unknown>",
    )
]


def sites_from_snapshot(
    snapshot: tracemalloc.Snapshot,
    base: tracemalloc.Snapshot | None = None,
    top: int = TOP_SITES,
) -> list[AllocationSite]:
    """Sites of the memory live in ``snapshot`` (minus what was live in ``base``)."""
    snapshot = snapshot.filter_traces(_FILTERS)
    totals: dict[tuple[str, int, bool], list[int]] = {}
    if base is None:
        for stat in snapshot.statistics("traceback"):
            frames = [(f.filename, f.lineno) for f in reversed(stat.traceback)]
            _add(totals, _pick(frames), stat.size, stat.count)
    else:
        base = base.filter_traces(_FILTERS)
        for diff in snapshot.compare_to(base, "traceback"):
            if diff.size_diff <= 0:
                continue
            frames = [(f.filename, f.lineno) for f in reversed(diff.traceback)]
            _add(totals, _pick(frames), diff.size_diff, max(diff.count_diff, 0))
    return _ranked(totals, top)


def sites_from_memray(records: Iterable[Any], top: int = TOP_SITES) -> list[AllocationSite]:
    """Sites from memray allocation records (high-water-mark or leaked records)."""
    totals: dict[tuple[str, int, bool], list[int]] = {}
    for record in records:
        try:
            stack = record.stack_trace()
        except Exception:  # a record without a resolvable Python stack
            stack = []
        frames = [(filename, int(lineno)) for _function, filename, lineno in stack]
        if frames and (frames[0][0] == tracemalloc.__file__ or _is_ours(frames[0][0])):
            continue  # the measuring machinery itself
        _add(totals, _pick(frames), int(record.size), int(record.n_allocations))
    return _ranked(totals, top)


def format_sites(sites: Sequence[AllocationSite], heading: str) -> str:
    """A numbered listing, e.g. for ``details["explain"]``."""
    if not sites:
        return f"{heading}: none found"
    width = max(len(s.location) for s in sites)
    lines = [f"{heading}:"]
    for number, site in enumerate(sites, 1):
        blocks = "block" if site.count == 1 else "blocks"
        lines.append(
            f"  {number:>2}. {site.location:<{width}}  {format_size(site.size):>9}  "
            f"in {site.count} {blocks}"
        )
    return "\n".join(lines)
