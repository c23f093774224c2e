"""Live analysis: batches from a receiver → ``run_frames`` → the offline ``Accumulator``.

The analysis thread takes the receiver's batches in order, runs every UDF on them with the
engine's :func:`~framescope.engine.run_frames` and merges the partial results exactly as an
offline run does, so a finished series equals ``framescope.run`` on the same frames.
Spilled frames are read back when the queue is empty, and at the latest before the series
finishes. :meth:`LiveRun.snapshot` may be called from any thread at any moment.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from framescope.engine import Accumulator, Partial, prepared, run_frames
from framescope.live._batch import Batch, Batcher, End, Start
from framescope.live._scan import Series
from framescope.live._status import Status
from framescope.udf._base import UDF

__all__ = ["LiveRun", "publish", "udf_dict"]

log = logging.getLogger(__name__)

_STOP = object()


def udf_dict(udfs: UDF | Sequence[UDF] | Mapping[str, UDF]) -> dict[str, UDF]:
    """Name the UDFs: a mapping keeps its names (used as variable prefixes), else none."""
    if isinstance(udfs, UDF):
        udfs = [udfs]
    named = dict(udfs) if isinstance(udfs, Mapping) else {f"#{i}": u for i, u in enumerate(udfs)}
    if not named or not all(isinstance(u, UDF) for u in named.values()):
        raise TypeError(f"udfs: expected UDF instances (one, a list or a dict), found {udfs!r}")
    return named


def coords_of(series: Series) -> dict[str, np.ndarray]:
    (ny, nx), (h, w) = series.meta.scan_shape, series.meta.frame_shape
    return {"scan_y": np.arange(ny), "scan_x": np.arange(nx), "det_y": np.arange(h),
            "det_x": np.arange(w)}


def publish(accs: dict[str, Accumulator], series: Series, attrs: dict[str, Any],
            ) -> xr.Dataset:
    """All UDFs' results of a series in one Dataset (names prefixed for named UDFs)."""
    if not accs:  # frames taken by on_frames only
        return xr.Dataset(attrs={**attrs, "udfs": [], "complete": False})
    coords = coords_of(series)
    parts = []
    seen: set[str] = set()
    for name, acc in accs.items():
        ds = acc.publish(coords)
        ds.attrs = {}
        keys = [k for k in ds.data_vars if k != "done"]
        if not name.startswith("#"):
            ds = ds.rename({k: f"{name}_{k}" for k in keys})
        elif seen & set(keys):  # the same outputs twice in a list: number them
            ds = ds.rename({k: f"{k}{name[1:]}" for k in keys})
        seen |= set(ds.data_vars)
        parts.append(ds)
    out = xr.merge(parts, compat="override", join="exact", combine_attrs="drop")
    out.attrs = {**attrs, "udfs": [type(a.udf).__name__ for a in accs.values()],
                 "complete": bool(out["done"].all())}
    return out


@dataclasses.dataclass(slots=True)
class _Analysed:
    """Analysis-side counters of the current series (written by the analysis thread)."""

    frames: int = 0
    latency_s: float = 0.0
    latency_max_s: float = 0.0
    state: str = "idle"
    error: str = ""


class LiveRun:
    """UDFs run on the frames of a :class:`ZMQSource`, results merged as frames arrive.

    Create it with :meth:`ZMQSource.run`. Each new series starts fresh results.

    Parameters
    ----------
    source : ZMQSource
    udfs : UDF, list of UDF or dict of name → UDF
        A dict prefixes each UDF's result names with its key.
    record : str, optional
        HDF5 file to record the analysed frames and headers into (see :func:`replay`).
    on_series_end : callable, optional
        Called (in the analysis thread) with the final Dataset of each series.
    on_frames : callable, optional
        Called (in the analysis thread, before the UDFs) with ``(series, frames,
        positions)`` for every batch: a series' ``Series`` (``series.series`` is its id,
        ``series.meta`` its shapes), the frames (a reused buffer: copy what you keep) and
        their flat scan positions. The live dashboard keeps the frames this way.
    kernel_threads : int
        Threads of the numba kernels in the analysis thread. Default 1: the receiver needs
        a core of its own, and idle OpenMP workers spinning after every batch took it on 2
        cores (one series ran at a third of the speed); raise it on machines with cores to
        spare when the analysis is the bottleneck (``status.queue_depth`` grows).
    """

    def __init__(self, source: Any, udfs: Any, *, record: str | None = None,
                 on_series_end: Callable[[xr.Dataset], None] | None = None,
                 on_frames: Callable[[Series, np.ndarray, np.ndarray], None] | None = None,
                 kernel_threads: int = 1) -> None:
        self.source = source
        # no UDF is fine when on_frames takes the frames (the live dashboard)
        self.udfs = {} if on_frames is not None and not udfs else udf_dict(udfs)
        self._handoff: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._series: Series | None = None
        self._batcher: Batcher | None = None
        self._accs: dict[str, Accumulator] = {}
        self._states: dict[str, Any] = {}
        self._a = _Analysed()
        self._final: xr.Dataset | None = None
        self._finished = threading.Condition(self._lock)
        self._finished_count = 0
        self._thread: threading.Thread | None = None
        self._buf: np.ndarray | None = None
        self._on_series_end = on_series_end
        self._on_frames = on_frames
        self.kernel_threads = int(kernel_threads)
        self._recorder = None
        if record is not None:
            from framescope.live._record import Recorder

            self._recorder = Recorder(record, protocol=source.protocol)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LiveRun:
        """Start the analysis thread and the source (returns self)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="framescope-analysis",
                                            daemon=True)
            self._thread.start()
            self.source.attach(self._handoff)
            try:
                self.source.start()
            except BaseException:  # e.g. a bad endpoint: no analysis thread left behind
                self._handoff.put(_STOP)
                self._thread.join()
                self._thread = None
                raise
        return self

    def stop(self) -> None:
        """Stop the source and the analysis (frames still queued are not analysed)."""
        self.source.stop()
        if self._thread is not None:
            self._handoff.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._recorder is not None:
            self._recorder.close()
        if self._a.state not in ("finished",):
            self._a.state = "stopped"

    def __enter__(self) -> LiveRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what users read -------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """The source's counters plus the analysis' (state, frames processed, latency)."""
        return self._status(self.source.status)

    def _status(self, s: Status) -> Status:
        a = self._a
        state = s.state
        if s.state in ("finished", "stopped"):  # received all: done when analysed
            same = self._series is not None and self._series.series == s.series
            state = a.state if a.state == "stopped" or (same and a.state == "finished") \
                else "draining"
        return dataclasses.replace(
            s, state=state, frames_processed=a.frames, latency_s=a.latency_s,
            latency_max_s=a.latency_max_s, last_error=a.error or s.last_error)

    def snapshot(self) -> xr.Dataset:
        """Results so far of the current series, with ``done`` and the status in attrs.

        Thread-safe and cheap enough to poll at a few Hz; an empty Dataset before the first
        series starts.
        """
        return self._snapshot(self.status)

    def _snapshot(self, status: Status) -> xr.Dataset:
        attrs = status.as_dict()
        with self._lock:
            if self._series is None:
                return xr.Dataset(attrs=attrs)
            return publish(self._accs, self._series, attrs)

    def wait(self, timeout: float | None = None) -> xr.Dataset | None:
        """Wait until the current (or next) series is finished; its final results or None.

        Returns None on ``timeout``; see :attr:`status` for why (e.g. ``stalled``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._finished:
            while self._final is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._finished.wait(0.1 if left is None else min(left, 0.1))
                if self._thread is None and self._final is None:
                    return None
            return self._final

    @property
    def results(self) -> xr.Dataset | None:
        """Final results of the last finished series (None before one finished)."""
        return self._final

    # -- analysis thread -------------------------------------------------------------------

    def _loop(self) -> None:
        import numba

        # per thread: only the kernels this thread launches
        numba.set_num_threads(max(1, min(self.kernel_threads, numba.config.NUMBA_NUM_THREADS)))
        while True:
            try:
                item = self._handoff.get(timeout=0.02)
            except queue.Empty:
                b = self._batcher
                if b is not None and b.spill.pending:
                    self._process_spill(b)
                continue
            if item is _STOP:
                return
            try:
                if isinstance(item, Batch):
                    self._process_batch(item)
                elif isinstance(item, Start):
                    self._begin(item)
                elif isinstance(item, End):
                    self._finish(item)
            except Exception as exc:  # a failing UDF must not stop the run silently
                log.exception("live analysis failed")
                self._a.error = f"{type(exc).__name__}: {exc}"

    def _begin(self, start: Start) -> None:
        series = start.series
        meta = series.meta
        states = {k: prepared(u, meta) for k, u in self.udfs.items()}
        blank = np.zeros((1, *meta.frame_shape), meta.dtype)
        for k, u in self.udfs.items():  # load JIT kernels now, not with the first batch
            run_frames(u, blank, np.zeros(1, np.int64), meta, states[k])
        accs = {k: Accumulator(u, meta) for k, u in self.udfs.items()}
        if self._recorder is not None:
            self._recorder.begin(series)
        with self._lock:
            if self._batcher is not None:
                self._batcher.spill.close()
            self._series, self._batcher, self._accs, self._states = (
                series, start.batcher, accs, states)
            self._a = _Analysed(state="running")
            self._final = None

    def _analyse(self, frames: np.ndarray, indices: np.ndarray, t0: float) -> None:
        series = self._series
        positions = series.positions(indices)
        if self._recorder is not None:
            self._recorder.write(series.series, indices, frames)
        if self._on_frames is not None:
            self._on_frames(series, frames, positions)
        parts: dict[str, Partial] = {
            k: run_frames(u, frames, positions, series.meta, self._states[k])
            for k, u in self.udfs.items()}
        self._merge(series, parts)
        a = self._a
        a.frames += len(indices)
        a.latency_s = time.monotonic() - t0
        a.latency_max_s = max(a.latency_max_s, a.latency_s)

    def _merge(self, series: Series, parts: dict[str, Partial]) -> None:
        with self._lock:
            for k, part in parts.items():
                self._accs[k].add(part)

    def _buffer(self, n: int) -> np.ndarray:
        """This thread's reused buffer for spilled frames, at least ``n`` frames."""
        meta = self._series.meta
        buf = self._buf
        if buf is None or len(buf) < n or buf.shape[1:] != meta.frame_shape \
                or buf.dtype != meta.dtype:
            buf = self._buf = np.empty((max(n, self._batcher.per_batch), *meta.frame_shape),
                                       meta.dtype)
        return buf[:n]

    def _process_batch(self, batch: Batch) -> None:
        try:
            if self._series is not None and batch.series == self._series.series:
                # analysed in place: the receiver copied each frame into the batch buffer
                indices = np.asarray(batch.indices, dtype=np.int64)
                self._analyse(batch.frames[: len(indices)], indices, batch.t0)
        finally:
            batch.release()

    def _process_spill(self, batcher: Batcher) -> None:
        t0 = time.monotonic()
        frames = self._buffer(batcher.per_batch)
        indices = batcher.spill.read_into(frames)
        self._analyse(frames[: len(indices)], indices, t0)

    def _finish(self, end: End) -> None:
        if self._series is None or end.series != self._series.series:
            return
        b = self._batcher
        self._a.state = "draining"
        while b is not None and b.spill.pending:
            self._process_spill(b)
        if b is not None:
            b.spill.close()
        self._a.state = "finished" if end.ended else "stopped"
        self._complete(end)

    def _complete(self, end: End) -> None:
        """Publish the final results of a series (after its last frame was analysed)."""
        status = self.source.status if end.status is None else end.status
        final = self._snapshot(dataclasses.replace(self._status(status), state=self._a.state))
        if self._recorder is not None:
            self._recorder.end(end.series, final.attrs)
        with self._finished:
            self._final = final
            self._finished.notify_all()
        if self._on_series_end is not None:
            self._on_series_end(final)
