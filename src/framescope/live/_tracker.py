"""Which frame numbers of a series arrived: gaps, duplicates, out-of-order arrival."""

from __future__ import annotations

import numpy as np

from framescope.live._status import Counters

__all__ = ["FrameTracker"]


class FrameTracker:
    """Which frame numbers of a series arrived: gaps, duplicates, out-of-order arrival."""

    def __init__(self, n_frames: int, counters: Counters) -> None:
        self.seen = np.zeros(n_frames, dtype=bool)
        self.highest = -1
        self.unique = 0
        self.counters = counters

    def accept(self, index: int) -> str:
        """"" if frame ``index`` is new and inside the series, else why it is rejected."""
        if index >= len(self.seen):
            return f"frame {index} outside the {len(self.seen)} scan positions"
        if self.seen[index]:
            self.counters.duplicates += 1
            return "duplicate"
        self.seen[index] = True
        self.unique += 1
        if index < self.highest:
            self.counters.out_of_order += 1
        else:
            self.highest = index
        return ""

    def forget(self, index: int) -> None:
        """Frame ``index`` turned out unusable (a corrupt payload): missing, not received."""
        if 0 <= index < len(self.seen) and self.seen[index]:
            self.seen[index] = False
            self.unique -= 1

    def gaps(self, ended: bool = False) -> int:
        """Missing frame numbers below the highest received (all missing ones if ``ended``)."""
        top = len(self.seen) if ended else self.highest + 1
        return max(0, top - self.unique)
