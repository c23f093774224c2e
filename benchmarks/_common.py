"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path


def best(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` wall-clock timings of ``fn()`` in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def plain_read(files: Iterable[Path]) -> None:
    """The ceiling: read every byte of ``files`` into one reused 4 MiB buffer."""
    view = memoryview(bytearray(4 * 2**20))
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
