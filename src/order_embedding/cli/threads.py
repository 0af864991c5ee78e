"""The ``--threads`` setting of the commands that train on the CPU: torch's threads and numba's (the order
measure's kernels) alike."""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import torch


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads and at most ``n`` numba threads, then restore the caller's
    numbers."""
    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def idle_cores() -> int:
    """The cores this process may use less the recent load (the one-minute load average), at least 1: torch's
    threads wait for each other at every operation, so a thread on a core another process keeps busy slows
    the whole update (benchmarks/bench_demo_threads.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - round(os.getloadavg()[0]))


def thread_count(value: str) -> int | str:
    """``--threads``: a positive whole number, or ``auto`` (:func:`idle_cores` when the command starts)."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number or 'auto', got {value!r}")
    return n
