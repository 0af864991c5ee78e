"""A small thread-safe least-recently-used mapping, and per-key locks."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class LRU:
    """At most ``limit`` entries; storing one more drops the least recently used."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a cache holds at least 1 entry, got {limit}")
        self.limit = limit
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> Any:
        """The entry under ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self.entries.get(key)
            if value is not None:
                self.entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` as the most recently used entry, dropping the oldest beyond the limit."""
        with self._lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.limit:
                self.entries.popitem(last=False)

    def drop(self, key: Hashable) -> None:
        """Forget the entry under ``key``, if any."""
        with self._lock:
            self.entries.pop(key, None)

    def key_lock(self, key: Hashable) -> threading.Lock:
        """One lock per key, so that one entry is built once while others are read."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())
