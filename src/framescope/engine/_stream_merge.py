"""A stream job's results in this process: one :class:`Merge` of accumulators per series
(used by the in-process analysis thread and by a parallel job's merging thread), with the
series' coordinates and corrections."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from framescope.corrections import (
    Corrections,
    CorrectionsError,
    corrected_coords,
    corrected_meta,
    from_detector,
)
from framescope.engine._group import Group
from framescope.engine._job import Results, shaped
from framescope.engine._merge import Accumulator
from framescope.engine._tasks import Partial
from framescope.live import Series, Status
from framescope.udf._base import UDF

__all__ = ["Merge", "coords_of", "series_corrections", "with_dark"]

log = logging.getLogger(__name__)


def coords_of(series: Series) -> dict[str, Any]:
    """Coordinates of a series' scan and detector axes: physical where it is calibrated,
    pixel indices otherwise."""
    (ny, nx), (h, w) = series.meta.scan_shape, series.meta.frame_shape
    if series.meta.calibration is not None:
        return series.meta.calibration.coords((ny, nx, h, w))
    return {"scan_y": np.arange(ny), "scan_x": np.arange(nx), "det_y": np.arange(h),
            "det_x": np.arange(w)}


def series_corrections(given: Any, series: Series) -> Corrections | None:
    """The corrections of ``series``: ``given`` (a :class:`Corrections`, or False for none),
    else (None) what the detector states in the series header (``pixel_mask``, and the
    ``flatfield`` when the header says it was not applied); either way with the dark of the
    stream's last dark series (``series.dark_stats``, see :func:`with_dark`). A dark series
    itself is read raw."""
    if given is False or series.dark:
        return None
    base = given
    if base is None and series.arrays:
        base = from_detector(series.arrays, series.header, f"series {series.series}")
    return base if series.dark_stats is None else with_dark(base, series.dark_stats)


def with_dark(base: Corrections | None, stats: Any) -> Corrections:
    """``base`` with the dark statistics ``stats`` (a DarkStats): their mean subtracted
    unless ``base`` has a dark of its own, their bad pixels added to ``base``'s."""
    dark = stats.corrections()
    if base is not None and base.bad is not None and base.bad.shape != dark.bad.shape:
        raise CorrectionsError(f"dark series: its frames are {dark.bad.shape}, the "
                               f"corrections' arrays {base.bad.shape}")
    if base is None:
        return dark
    bad = dark.bad if base.bad is None else base.bad | dark.bad
    return dataclasses.replace(base, dark=dark.dark if base.dark is None else base.dark,
                               bad=bad)


class Merge:
    """The job's results in this process: one :class:`Accumulator` per UDF, per series.

    Used by the in-process runner's analysis thread and by the merging thread of a
    parallel job; readers in any thread take :meth:`publish` under the same lock, which is
    re-entrant: the merging thread calls in while holding it.
    """

    def __init__(self, named: dict[str, UDF], udfs: Any, task_udf: UDF,
                 on_series_end: Callable[[Results], None] | None = None,
                 corrections: Corrections | None = None) -> None:
        self.named, self.udfs, self.task_udf = named, udfs, task_udf
        self.given = corrections  # None: the detector's, from each series header
        self.corrections: Corrections | None = None  # the current series'
        self.applied: dict[int, Corrections | None] = {}  # of the last few series, by id
        self.lock = threading.RLock()
        self.finished = threading.Condition(self.lock)
        self.series: Series | None = None
        self.accs: dict[str, Accumulator] = {}
        self.final: Results | None = None
        self.last: Results | None = None
        self.finished_ids: list[int] = []
        self.finals: dict[int, Results] = {}
        self._on_series_end = on_series_end
        self._callbacks = ThreadPoolExecutor(1, thread_name_prefix="framescope-series-end")

    def use(self, named: dict[str, UDF], udfs: Any, task_udf: UDF) -> None:
        """Other UDFs from the next series on (called by the analysis thread at a start)."""
        with self.lock:
            self.named, self.udfs, self.task_udf = named, udfs, task_udf

    def begin(self, series: Series) -> None:
        corrections = series_corrections(self.given, series)
        meta = corrected_meta(series.meta, corrections)
        accs = {name: Accumulator(u, meta) for name, u in self.named.items()}
        with self.lock:
            self.series, self.accs, self.final = series, accs, None
            self.corrections = corrections
            self.applied[series.series] = corrections
            for old in list(self.applied)[:-8]:
                del self.applied[old]

    def recalibrate(self, calibration: Any) -> None:
        """The current series' calibration, learnt after it began (parallel receivers: the
        header reaches one receiver, not necessarily the first to report)."""
        with self.lock:
            if self.series is None:
                return
            self.series.meta = dataclasses.replace(self.series.meta, calibration=calibration)
            meta = corrected_meta(self.series.meta, self.corrections)
            for acc in self.accs.values():
                acc.meta = meta

    def add_header(self, header: dict[str, Any], arrays: dict[str, np.ndarray],
                   calibration: Any) -> None:
        """What another receiver saw of the current series' header: the header is the
        union of what each receiver saw (a stream v1 dheader and its config, sent as two
        messages, go to different receivers), the calibration that of the fuller header,
        from which that receiver derived it."""
        with self.lock:
            series = self.series
            if series is None or (not header and not arrays):
                return
            fuller = len(header) > len(series.header)
            series.header = ({**series.header, **header} if fuller
                             else {**header, **series.header})
            series.arrays = {**arrays, **series.arrays}
        if fuller and calibration is not None and calibration != series.meta.calibration:
            self.recalibrate(calibration)

    def admit(self, series: Series, positions: np.ndarray) -> np.ndarray | None:
        return None  # one receiver: its tracker already dropped repeated frame numbers

    def add(self, series: Series, part: Partial) -> None:
        pieces = (self.task_udf.split(part) if isinstance(self.task_udf, Group)
                  else dict.fromkeys(self.accs, part))
        with self.lock:
            if self.series is None or self.series.series != series.series:
                return
            for name, acc in self.accs.items():
                acc.add(pieces[name])

    def done_map(self) -> np.ndarray | None:
        """The positions merged so far (a copy), None before a series."""
        with self.lock:
            acc = next(iter(self.accs.values()), None)
            return None if acc is None else acc.done.copy()

    def publish(self, status: Status, source: str = "") -> Results | None:
        """Results of the current series so far (None before one), status in attrs."""
        with self.lock:
            return self._publish(status, source)

    def close(self, status: Status, source: str = "") -> None:
        """Publish an unfinished series as final (stopped, or superseded by the next)."""
        with self.finished:
            if self.series is not None and self.final is None:
                self.final = self.last = self._publish(status, source)
                self._keep(self.series.series, self.final)

    def _publish(self, status: Status, source: str) -> Results | None:
        if self.series is None:
            return None
        coords = corrected_coords(coords_of(self.series), self.corrections)
        # the series these results are of (the source may be on the next one already)
        attrs = {**status.as_dict(), "source": source, "series": self.series.series,
                 "frames_expected": self.series.n_frames}
        if self.corrections is not None:
            attrs["corrections"] = json.dumps(self.corrections.params())
        return shaped({name: acc.publish(coords, attrs) for name, acc in self.accs.items()},
                      self.udfs)

    def complete(self, series: Series, status: Status, source: str = "") -> Results | None:
        """Publish the final results of ``series`` (once) and wake :meth:`wait`."""
        with self.finished:
            if (self.series is None or self.series.series != series.series
                    or self.final is not None):
                return None
            self.final = self.last = self._publish(status, source)
            self._keep(series.series, self.final)
            final = self.final
        if self._on_series_end is not None:
            # in its own thread, in series order: never under the merge's lock, never
            # holding up the analysis or the merging of receivers (a slow callback would
            # otherwise make them look lost)
            self._callbacks.submit(self._call, final)
        return final

    def _call(self, final: Results) -> None:
        try:
            self._on_series_end(final)
        except Exception:  # a user's callback must not end the job
            log.exception("on_series_end failed")

    def _keep(self, sid: int, final: Results) -> None:
        """Keep ``final`` as series ``sid``'s (the last few) and wake waiters."""
        self.finished_ids.append(sid)
        self.finals[sid] = final
        for old in list(self.finals)[:-8]:
            del self.finals[old]
        self.finished.notify_all()

    def wait(self, timeout: float | None, alive: Callable[[], bool],
             series: int | None = None) -> Results | None:
        """Final results of series ``series``, else of the current (else next) one: the
        series in progress when the wait began, even if the next has started since. None
        on timeout or when not ``alive()`` any more."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.finished:
            if series is None and self.final is not None:
                return self.final
            target, known = series, set(self.finals)
            while True:
                if target is None:
                    fresh = [s for s in self.finals if s not in known]
                    if fresh:  # finished before this thread woke up: still the one
                        return self.finals[fresh[0]]
                    if self.series is not None:
                        target = self.series.series
                if target is not None and target in self.finals:
                    return self.finals[target]
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not alive():
                    return None
                self.finished.wait(0.1 if left is None else min(left, 0.1))
