"""Expensive work (loading a model or a data split, encoding a split) on a bounded pool of workers.

A burst of requests that need the same preparation shares one job; requests that
need different ones queue for the workers instead of each taking its own memory.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .cache import LRU

#: Expensive jobs run at once by default.
WORKERS = 1
#: Failed jobs whose errors are remembered (for the runs table).
MAX_FAILURES = 256


class Jobs:
    """At most ``workers`` jobs at once; one job per key while it runs."""

    def __init__(self, workers: int = WORKERS) -> None:
        if workers < 1:
            raise ValueError(f"at least 1 worker, got {workers}")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="order-embedding-job")
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}
        self._failed = LRU(MAX_FAILURES)
        self._inside = threading.local()

    def _call(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        self._inside.active = True
        try:
            out = fn()
        except BaseException as e:
            self._failed.put(key, str(e) or type(e).__name__)
            raise
        finally:
            self._inside.active = False
        self._failed.drop(key)
        return out

    def _done(self, key: Hashable, fut: Future) -> None:
        with self._lock:
            if self._running.get(key) is fut:
                del self._running[key]

    def submit(self, key: Hashable, fn: Callable[[], Any]) -> Future:
        """The job running under ``key``, or a new one calling ``fn`` queued for a worker."""
        with self._lock:
            fut = self._running.get(key)
            if fut is None:
                fut = self._pool.submit(self._call, key, fn)
                self._running[key] = fut
        fut.add_done_callback(lambda f: self._done(key, f))
        return fut

    def run(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        """``fn()``'s result computed by a worker (directly when already on one, so jobs may nest)."""
        if getattr(self._inside, "active", False):
            return fn()
        return self.submit(key, fn).result()

    def running(self, key: Hashable) -> bool:
        """Whether a job under ``key`` is queued or running."""
        with self._lock:
            return key in self._running

    def failure(self, key: Hashable) -> str | None:
        """The error of the last job under ``key`` when it failed (and none has succeeded since)."""
        return self._failed.get(key)

    def close(self) -> None:
        """Drop the queued jobs; a running one finishes on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
