"""Which scan positions the receivers of a parallel stream job have taken for analysis.

A receiver claims a batch's positions before analysing it and analyses only those granted:
a frame delivered to two receivers is analysed by whoever claims it first, so sums stay
exact. Kept for the last few series, for claims that come late.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["Claims"]


class Claims:
    """Claimed positions per series (thread-safe)."""

    def __init__(self, keep: int = 4) -> None:
        self._lock = threading.Lock()
        self._taken: dict[int, np.ndarray] = {}
        self._keep = keep

    def grant(self, series: int, n_positions: int, positions: np.ndarray) -> np.ndarray:
        """Mark ``positions`` of ``series`` taken; which of them nobody had (bool each)."""
        with self._lock:
            taken = self._taken.get(series)
            if taken is None:
                taken = self._taken[series] = np.zeros(n_positions, dtype=bool)
                for old in list(self._taken)[:-self._keep]:
                    del self._taken[old]
            fresh = ~taken[positions]
            taken[positions] = True
        return fresh

    def unmerged(self, series: int, done: np.ndarray) -> int:
        """Positions of ``series`` claimed but not in ``done`` (merged)."""
        with self._lock:
            taken = self._taken.get(series)
            return 0 if taken is None else int((taken & ~done).sum())
