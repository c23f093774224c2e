"""A live source as a tile source: the analysis thread, the merge, the in-process runner.

The receiver (:class:`framescope.live.ZMQSource`) hands its batches to a queue; the
:class:`Analysis` thread takes them in order, runs the job's UDF (a :class:`Group` for
several) on each with :func:`run_frames` and gives the partial result to a *sink*: the
:class:`Merge` of this process (the same :class:`Accumulator` as a file job, so a finished
series equals :func:`framescope.run` on the same frames), or, in a receiver of a parallel
job, the socket to the merging process. Spilled frames are read back when the queue is
empty, and at the latest before the series finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from framescope.corrections import (
    Corrections,
    corrected_coords,
    corrected_meta,
    from_detector,
)
from framescope.engine._group import Group
from framescope.engine._job import Results, shaped
from framescope.engine._merge import Accumulator
from framescope.engine._tasks import Partial, prepared, run_frames
from framescope.live import Batch, Batcher, End, Series, Start, Status
from framescope.udf._base import UDF

__all__ = ["Analysis", "Merge", "Sink", "StreamRunner", "coords_of"]

log = logging.getLogger(__name__)

_STOP = object()


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
    ``flatfield`` when the header says it was not applied)."""
    if given is False:
        return None
    if given is not None:
        return given
    if not series.arrays:
        return None
    return from_detector(series.arrays, series.header, f"series {series.series}")


class Sink(Protocol):
    """Where the analysis thread's partial results go."""

    def begin(self, series: Series) -> None:
        """A new series: its results start empty."""

    def admit(self, series: Series, positions: np.ndarray) -> np.ndarray | None:
        """Which of a batch's frames to analyse (bool per frame), None for all."""

    def add(self, series: Series, part: Partial) -> None:
        """The partial result of one batch."""

    def complete(self, series: Series, end: End, state: str, status: Status) -> None:
        """The series' last frame has been analysed; ``state`` "finished" or "stopped"."""


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


@dataclasses.dataclass(slots=True)
class _Counts:
    """Analysis-side counters of the current series (written by the analysis thread)."""

    frames: int = 0
    skipped: int = 0  # frames another receiver had analysed already
    latency_s: float = 0.0
    latency_max_s: float = 0.0
    state: str = "idle"
    error: str = ""


class Analysis:
    """The analysis thread of one source: its batches → the UDF → ``sink``.

    Parameters
    ----------
    source : ZMQSource
    udf : UDF
        What runs on every batch (a :class:`Group` for several UDFs).
    sink : Sink
    on_frames : callable, optional
        Called before the UDF with ``(series, frames, positions)`` of every batch: the
        frames are a reused buffer (copy what you keep), positions flat scan positions.
    kernel_threads : int
        numba threads of the kernels in this thread. Default 1: the receiver needs a core
        of its own, and idle OpenMP workers spinning after every batch took it on 2 cores
        (one series ran at a third of the speed); raise it on machines with cores to spare
        when the analysis is the bottleneck (``status.queue_depth`` grows).
    """

    def __init__(self, source: Any, udf: UDF, sink: Sink, *,
                 on_frames: Callable[[Series, np.ndarray, np.ndarray], None] | None = None,
                 kernel_threads: int = 1, corrections: Corrections | None = None) -> None:
        self.source, self.udf, self.sink = source, udf, sink
        self.corrections = corrections  # None: the detector's, from each series header
        self._meta: Any = None  # the series' Meta as the UDFs see it (corrected)
        self.on_frames = on_frames
        self.kernel_threads = int(kernel_threads)
        self.handoff: queue.SimpleQueue = queue.SimpleQueue()
        self.series: Series | None = None
        self.counts = _Counts()
        self._batcher: Batcher | None = None
        self._state: Any = None
        self._broken = False
        self._buf: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._pending: tuple[dict[str, UDF], Any, UDF] | None = None
        self._pending_lock = threading.Lock()

    def use(self, named: dict[str, UDF], udfs: Any, task_udf: UDF) -> None:
        """Run other UDFs from the next series on (the sink must have a ``use`` too)."""
        with self._pending_lock:
            self._pending = (named, udfs, task_udf)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the analysis thread, then the source (a bad endpoint raises here)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="framescope-analysis",
                                        daemon=True)
        self._thread.start()
        self.source.attach(self.handoff)
        try:
            self.source.start()
        except BaseException:  # no analysis thread left behind
            self.handoff.put(_STOP)
            self._thread.join()
            self._thread = None
            raise

    def stop(self) -> None:
        """Stop the source and the analysis (frames still queued are not analysed)."""
        self.source.stop()
        if self._thread is not None:
            self.handoff.put(_STOP)
            self._thread.join()
            self._thread = None
        if self.counts.state != "finished":
            self.counts.state = "stopped"

    @property
    def alive(self) -> bool:
        return self._thread is not None

    def status(self, s: Status | None = None) -> Status:
        """The source's counters (or ``s``) plus the analysis' state, frames and latency."""
        s = self.source.status if s is None else s
        a = self.counts
        state = s.state
        if s.state in ("finished", "stopped"):  # received all: done when analysed
            same = self.series is not None and self.series.series == s.series
            state = a.state if a.state == "stopped" or (same and a.state == "finished") \
                else "draining"
        return dataclasses.replace(
            s, state=state, frames_processed=a.frames, duplicates=s.duplicates + a.skipped,
            latency_s=a.latency_s, latency_max_s=a.latency_max_s,
            last_error=a.error or s.last_error)

    # -- the thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        import numba

        # per thread: only the kernels this thread launches
        numba.set_num_threads(max(1, min(self.kernel_threads, numba.config.NUMBA_NUM_THREADS)))
        while True:
            try:
                item = self.handoff.get(timeout=0.02)
            except queue.Empty:
                b = self._batcher
                if b is not None and b.spill.pending:
                    self._spilled(b)
                continue
            if item is _STOP:
                return
            try:
                if isinstance(item, Batch):
                    self._batch(item)
                elif isinstance(item, Start):
                    self._begin(item)
                elif isinstance(item, End):
                    self._finish(item)
            except Exception as exc:  # a failing UDF must not stop the run silently
                log.exception("live analysis failed")
                self.counts.error = f"{type(exc).__name__}: {exc}"

    def _begin(self, start: Start) -> None:
        series = start.series
        meta = series.meta
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:  # the UDF and the sink change together, between series
            self.udf = pending[2]
            self.sink.use(*pending)
        error = ""
        try:
            meta = self._meta = corrected_meta(meta,
                                               series_corrections(self.corrections, series))
            state = prepared(self.udf, meta)
            # load the JIT kernels now, not with the first batch
            raw_shape, raw_dtype = meta.raw or (meta.frame_shape, meta.dtype)
            run_frames(self.udf, np.zeros((1, *raw_shape), raw_dtype),
                       np.zeros(1, np.int64), meta, state)
        except Exception as exc:  # e.g. a mask of another detector shape
            log.exception("live analysis: the UDFs cannot run on series %d", series.series)
            state, error = None, f"series {series.series}: {type(exc).__name__}: {exc}"
        # the series begins either way: it ends (with nothing analysed, the error in the
        # status) instead of leaving its job waiting for ever
        self.sink.begin(series)
        if self._batcher is not None:
            self._batcher.spill.close()
        self.series, self._batcher, self._state = series, start.batcher, state
        self._broken = bool(error)
        self.counts = _Counts(state="running", error=error)

    def _analyse(self, frames: np.ndarray, indices: np.ndarray, t0: float) -> None:
        if self._broken:  # the UDFs failed to prepare for this series
            return
        series = self.series
        positions = series.positions(indices)
        keep = self.sink.admit(series, positions)
        if keep is not None and not keep.all():
            self.counts.skipped += int((~keep).sum())
            frames, positions = frames[keep], positions[keep]
            if not len(positions):
                return
        if self.on_frames is not None:
            self.on_frames(series, frames, positions)
        self.sink.add(series, run_frames(self.udf, frames, positions, self._meta,
                                         self._state))
        a = self.counts
        a.frames += len(positions)
        a.latency_s = time.monotonic() - t0
        a.latency_max_s = max(a.latency_max_s, a.latency_s)

    def _batch(self, batch: Batch) -> None:
        try:
            if self.series is not None and batch.series == self.series.series:
                # analysed in place: the receiver copied each frame into the batch buffer
                indices = np.asarray(batch.indices, dtype=np.int64)
                self._analyse(batch.frames[: len(indices)], indices, batch.t0)
        finally:
            batch.release()

    def _spilled(self, batcher: Batcher) -> None:
        t0 = time.monotonic()
        meta = self.series.meta
        buf = self._buf
        if buf is None or buf.shape[1:] != meta.frame_shape or buf.dtype != meta.dtype \
                or len(buf) < batcher.per_batch:
            buf = self._buf = np.empty((batcher.per_batch, *meta.frame_shape), meta.dtype)
        indices = batcher.spill.read_into(buf[: batcher.per_batch])
        self._analyse(buf[: len(indices)], indices, t0)

    def _finish(self, end: End) -> None:
        if self.series is None or end.series != self.series.series:
            return
        b = self._batcher
        self.counts.state = "draining"
        while b is not None and b.spill.pending:
            self._spilled(b)
        if b is not None:
            b.spill.close()
        self.counts.state = "finished" if end.ended else "stopped"
        status = self.source.status if end.status is None else end.status
        self.sink.complete(self.series, end, self.counts.state,
                           dataclasses.replace(self.status(status), state=self.counts.state))


class _LocalSink:
    """The in-process runner's sink: straight into the :class:`Merge`."""

    def __init__(self, merge: Merge, source: str) -> None:
        self.merge, self.source = merge, source
        self.begin, self.admit, self.add, self.use = merge.begin, merge.admit, merge.add, \
            merge.use

    def complete(self, series: Series, end: End, state: str, status: Status) -> None:
        self.merge.complete(series, status, self.source)


class StreamRunner:
    """A stream job in this process: the source's receiver thread and one analysis thread."""

    def __init__(self, source: Any, named: dict[str, UDF], udfs: Any, task_udf: UDF, *,
                 on_series_end: Callable[[Results], None] | None = None,
                 on_frames: Callable[[Series, np.ndarray, np.ndarray], None] | None = None,
                 kernel_threads: int = 1, corrections: Corrections | None = None) -> None:
        self.source = source
        self.merge = Merge(named, udfs, task_udf, on_series_end, corrections)
        self.analysis = Analysis(source, task_udf, _LocalSink(self.merge, source.endpoint),
                                 on_frames=on_frames, kernel_threads=kernel_threads,
                                 corrections=corrections)
        self._cancelled = False

    def start(self) -> StreamRunner:
        self.analysis.start()
        return self

    def status(self) -> Status:
        return self.analysis.status()

    def update(self, named: dict[str, UDF], udfs: Any, task_udf: UDF) -> None:
        self.analysis.use(named, udfs, task_udf)

    @property
    def udfs(self) -> dict[str, UDF]:
        """The UDFs of the current series, by name."""
        return dict(self.merge.named)

    def partial(self) -> Results | None:
        return self.merge.publish(self.status(), self.source.endpoint)

    def wait(self, timeout: float | None, series: int | None = None) -> Results | None:
        return self.merge.wait(timeout, lambda: self.analysis.alive, series)

    def finished(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True
        self.analysis.stop()

    @property
    def results(self) -> Results | None:
        return self.merge.last

    def latest_frame(self) -> np.ndarray | None:
        return self.source.latest_frame()
