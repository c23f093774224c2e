"""A stream's dark series, reduced to dark statistics by the analysis thread.

The frames of a dark series (:attr:`framescope.live.Series.dark`) go through the engine like
any others, but to :class:`~framescope.udf.FrameStats` (per-pixel mean and variance, merged
batch by batch with Chan et al.'s pairwise update, the same UDF and merge that
:func:`framescope.corrections.from_dark` runs on files) instead of the job's analyses. When
the series ends, the statistics become a :class:`~framescope.corrections.DarkStats` that the
source keeps (:attr:`framescope.live.ZMQSource.dark`) and the following series are
corrected with (:func:`~framescope.engine._stream_merge.with_dark`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from framescope.corrections import DarkStats
from framescope.engine._merge import Accumulator
from framescope.engine._tasks import Partial, prepared, run_frames
from framescope.live import Series
from framescope.udf import FrameStats

__all__ = ["DarkRun", "dark_stats"]

log = logging.getLogger(__name__)


def dark_stats(mean: np.ndarray, std: np.ndarray, n: int, k_noisy: float = 5.0,
               ) -> DarkStats:
    """:class:`DarkStats` of per-pixel ``mean`` and ``std`` over ``n`` dark frames, with
    the bad-pixel rule of :func:`framescope.corrections.from_dark` (dead: ``std == 0``;
    noisy: ``std > k_noisy * median(std)`` of the live pixels; no bright reference)."""
    return DarkStats.from_moments(mean, std, n, k_noisy=k_noisy)


class DarkRun:
    """The statistics of one dark series, merged batch by batch (analysis thread only).

    Parameters
    ----------
    series : Series
        The dark series; its raw frames are analysed (no corrections).
    """

    def __init__(self, series: Series) -> None:
        self.series = series
        self.meta = series.meta
        self.udf = FrameStats()
        self.state = prepared(self.udf, self.meta)
        self.acc = Accumulator(self.udf, self.meta)
        self.frames = 0

    def add(self, frames: np.ndarray, positions: np.ndarray) -> None:
        """Merge a batch of the series' frames."""
        part: Partial = run_frames(self.udf, frames, positions, self.meta, self.state)
        self.acc.add(part)
        self.frames += len(positions)

    def stats(self) -> DarkStats | None:
        """The series' dark statistics, None when no frame came."""
        if not self.frames:
            log.warning("dark series %d: no frame analysed; the dark in use stays",
                        self.series.series)
            return None
        out: dict[str, Any] = self.udf.finalize(
            {k: v.copy() for k, v in self.acc.buffers.items()}, self.meta)
        stats = dark_stats(out["mean"], out["std"], int(out["n"]))
        log.info("dark series %d: %d frames, %d bad pixels (%s)", self.series.series,
                 stats.n, int(stats.bad.sum()), stats.report())
        return stats
