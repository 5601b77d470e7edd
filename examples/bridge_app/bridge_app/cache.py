"""A small TTL cache that counts its hits and misses (the guide's cache hit ratio)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CacheStats", "TTLCache"]

V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int

    @property
    def requests(self) -> int:
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """Hits per lookup; 0.0 before the first lookup."""
        return self.hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": self.size,
            "hit_ratio": round(self.hit_ratio, 4),
        }


class TTLCache(Generic[V]):
    """Entries expire ``ttl`` seconds after they were stored; at most ``maxsize`` entries are kept
    (least recently used evicted first). ``clock`` is injectable so tests can expire entries
    without sleeping."""

    def __init__(
        self, ttl: float, maxsize: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize!r}")
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable) -> V | None:
        """The live value for ``key`` or None; counts a hit or a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if expires > self._clock():
                self._entries.move_to_end(key)
                self._hits += 1
                return value
            del self._entries[key]
        self._misses += 1
        return None

    def set(self, key: Hashable, value: V) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> tuple[V, bool]:
        """``(value, hit)``: the cached value, or ``compute()`` stored under ``key``."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = compute()
        self.set(key, value)
        return value, False

    def clear(self) -> None:
        """Drop every entry; the hit and miss counters are kept."""
        self._entries.clear()

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
