"""The ``--threads`` setting of the commands that train on the CPU: torch's threads and numba's (the order
measure's kernels) alike."""
from __future__ import annotations

import argparse
import os
import time
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


def cpu_times() -> tuple[float, float] | None:
    """Busy and total CPU time of the whole machine so far (``/proc/stat``, all CPUs), or None where there is
    no such file."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def idle_cores(sample: float = 1.0) -> int:
    """The cores this process may use less those other processes keep busy, at least 1: the machine's busy
    share over ``sample`` seconds (:func:`cpu_times`; the one-minute load average where that is missing).
    torch's threads wait for each other at every operation, so a thread on a core another process keeps busy
    holds up the whole update (benchmarks/bench_demo_threads.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = cpu_times()
    if before is None:
        busy = os.getloadavg()[0]
    else:
        time.sleep(sample)
        after = cpu_times()
        assert after is not None
        share = (after[0] - before[0]) / max(after[1] - before[1], 1e-9)
        busy = share * (os.cpu_count() or cores)
    return max(1, cores - round(busy))


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
