"""A live source as a tile source: the analysis thread and the in-process runner.

The receiver (:class:`framescope.live.ZMQSource`) hands its batches to a queue; the
:class:`Analysis` thread takes them in order, runs the job's UDF (a :class:`Group` for
several) on each with :func:`run_frames` and gives the partial result to a *sink*: the
:class:`~framescope.engine._stream_merge.Merge` of this process (the same
:class:`Accumulator` as a file job, so a finished series equals :func:`framescope.run` on
the same frames), or, in a receiver of a parallel job, the socket to the merging process.
Spilled frames are read back when the queue is empty, and at the latest before the series
finishes.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from framescope.corrections import Corrections, corrected_meta
from framescope.engine._group import Group
from framescope.engine._job import Results
from framescope.engine._stream_dark import DarkRun
from framescope.engine._stream_merge import Merge, series_corrections
from framescope.engine._tasks import Partial, prepared, run_frames
from framescope.live import Batch, Batcher, End, Series, Start, Status
from framescope.udf._base import UDF

__all__ = ["Analysis", "Sink", "StreamRunner"]

log = logging.getLogger(__name__)

_STOP = object()


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
    darks : bool
        Reduce dark series (:attr:`Series.dark`) to dark statistics that the source keeps
        (``source.use_dark``) and the following series are corrected with. Only where
        this thread sees every frame of the series (one receiver); otherwise a dark series
        is analysed as data (logged).

    UDFs (or members of a :class:`Group`) with a ``begin_series(series, meta)`` method are
    told of each data series before its first batch (after their ``prepare``; ``meta`` as
    they see the frames, corrected), and those with
    ``end_series(series, ended)`` after its last, or when the job stops (``ended`` False):
    a stream-only hook, e.g. for a UDF that writes a file per series.
    """

    def __init__(self, source: Any, udf: UDF, sink: Sink, *,
                 on_frames: Callable[[Series, np.ndarray, np.ndarray], None] | None = None,
                 kernel_threads: int = 1, corrections: Corrections | None = None,
                 darks: bool = False) -> None:
        self.source, self.udf, self.sink = source, udf, sink
        self.darks = darks
        self._dark: DarkRun | None = None  # the dark series being analysed
        self._hooked: tuple[UDF, Series] | None = None  # UDFs told of a series' begin
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
        self._end_hooks(ended=False)
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
        self._end_hooks(ended=False)  # a series superseded before its end
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:  # the UDF and the sink change together, between series
            self.udf = pending[2]
            self.sink.use(*pending)
        if series.dark and not self.darks:
            log.warning("series %d is a dark series: only a stream job with one receiver "
                        "takes darks; analysed as data", series.series)
            series.dark = False
        if series.dark:
            self._begin_dark(start)
            return
        self._dark = None
        if self.darks:  # the dark the following series are corrected with
            series.dark_stats = getattr(self.source, "dark", None)
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
        if not error:
            try:
                _hooks(self.udf, "begin_series", series, meta)
                self._hooked = (self.udf, series)
            except Exception as exc:
                log.exception("live analysis: begin_series failed on series %d",
                              series.series)
                self._broken = True
                self.counts.error = f"series {series.series}: {type(exc).__name__}: {exc}"

    def _begin_dark(self, start: Start) -> None:
        """A dark series: its frames go to dark statistics, not to the job's sink."""
        series = start.series
        error = ""
        try:
            self._dark = DarkRun(series)
        except Exception as exc:
            log.exception("live analysis: dark series %d cannot be analysed", series.series)
            self._dark, error = None, f"dark series {series.series}: {exc}"
        if self._batcher is not None:
            self._batcher.spill.close()
        self.series, self._batcher, self._state = series, start.batcher, None
        self._broken = self._dark is None
        self.counts = _Counts(state="running", error=error)
        log.info("series %d: a dark series; taking dark statistics", series.series)

    def _end_hooks(self, ended: bool) -> None:
        hooked, self._hooked = self._hooked, None
        if hooked is None:
            return
        try:
            _hooks(hooked[0], "end_series", hooked[1], ended)
        except Exception:
            log.exception("live analysis: end_series failed on series %d",
                          hooked[1].series)

    def _analyse(self, frames: np.ndarray, indices: np.ndarray, t0: float) -> None:
        if self._broken:  # the UDFs failed to prepare for this series
            return
        series = self.series
        positions = series.positions(indices)
        keep = None if self._dark is not None else self.sink.admit(series, positions)
        if keep is not None and not keep.all():
            self.counts.skipped += int((~keep).sum())
            frames, positions = frames[keep], positions[keep]
            if not len(positions):
                return
        if self.on_frames is not None:
            self.on_frames(series, frames, positions)
        if self._dark is not None:
            self._dark.add(frames, positions)
        else:
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
        if self._dark is not None:
            stats = self._dark.stats() if end.ended else None
            if stats is not None:
                self.source.use_dark(stats)
            elif not end.ended:
                log.warning("dark series %d ended unfinished: not used", end.series)
            self._dark = None
            return
        self._end_hooks(ended=end.ended)
        status = self.source.status if end.status is None else end.status
        self.sink.complete(self.series, end, self.counts.state,
                           dataclasses.replace(self.status(status), state=self.counts.state))


def _hooks(udf: UDF, name: str, *args: Any) -> None:
    """Call ``name(*args)`` on ``udf``, or on each member of a :class:`Group`, that has it."""
    for u in udf.udfs.values() if isinstance(udf, Group) else (udf,):
        hook = getattr(u, name, None)
        if callable(hook):
            hook(*args)


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
                                 corrections=corrections,
                                 darks=hasattr(source, "use_dark"))
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
