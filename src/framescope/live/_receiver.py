"""ZeroMQ receiver: one thread that receives, decodes, checks and hands frames on.

The thread never waits on analysis: frames go into bounded batches (see ``_batch``), and
what does not fit is dropped or spilled by the user's policy, always counted. Malformed
messages are counted and logged (rate-limited), never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from framescope.live._batch import Batcher, End, FrameTracker, Policy, Start
from framescope.live._messages import Frame, MessageError, ScanOrder, SeriesEnd, SeriesStart
from framescope.live._protocols import make_decoder
from framescope.live._scan import Series, resolve_series
from framescope.live._status import Counters, Status

if TYPE_CHECKING:
    from framescope.live._parallel import ParallelRun
    from framescope.live._run import LiveRun

__all__ = ["ZMQSource"]

log = logging.getLogger(__name__)

_POLL_MS = 20
_BURST = 512  # messages taken per poll before housekeeping
_LOG_FIRST = 10  # malformed messages logged per series before thinning out


def _pair(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (height, width), found {value!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{name}: expected positive sizes, found {value!r}")
    return a, b


class ZMQSource:
    """Frames from a detector's ZeroMQ PUSH socket (DECTRIS stream v1/stream2, native).

    The source connects a PULL socket (detectors bind PUSH), decodes messages in a thread
    and keeps counters and the latest frame. :meth:`run` attaches analyses.

    Parameters
    ----------
    endpoint : str
        ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:9999"``.
    protocol : {"dectris-stream2", "dectris-stream1", "native"}
    scan : (int, int), optional
        Scan shape ``(scan_y, scan_x)``; default from the series header. Needed to join a
        series whose header was missed (frames carry their shape and dtype).
    order : {"raster", "snake"}, optional
        Scan order; default from the header, else raster.
    channel : str, optional
        stream2 channel to analyse (default the first).
    policy : {"drop", "spill"}
        What happens to frames that arrive when the in-memory buffer is full: dropped
        (counted in ``status.dropped``) or written to a temp file and analysed later
        (``status.spilled``).
    buffer_mib : float
        Memory for frames waiting for analysis.
    spill_dir : str, optional
        Directory of spill files (default the system temp dir; pick a disk, not tmpfs).
    spill_limit_gib : float
        Spill file size beyond which frames are dropped (counted).
    stall_timeout : float
        Seconds without a message, mid-series, after which the state becomes ``stalled``.
    max_message_bytes : int
        Larger messages are counted as malformed and skipped.
    bind : bool
        Bind instead of connect (to receive from senders that connect).
    rcvhwm : int, optional
        ZeroMQ receive high-water mark (messages queued in ZeroMQ).
    batch_frames : int, optional
        Frames per batch handed to the analysis (default ~16 MiB of frames); a batch also
        leaves after 50 ms when frames arrive slowly.

    Examples
    --------
    >>> src = ZMQSource("tcp://127.0.0.1:9999", protocol="dectris-stream2", scan=(128, 128))
    >>> run = src.run([ApplyMasks(ring), CenterOfMass()])  # doctest: +SKIP
    >>> run.snapshot()["done"].mean()  # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:9999",
        protocol: str = "dectris-stream2",
        *,
        scan: tuple[int, int] | None = None,
        order: ScanOrder | None = None,
        channel: str | None = None,
        policy: Policy = "drop",
        buffer_mib: float = 512,
        spill_dir: str | None = None,
        spill_limit_gib: float = 8,
        stall_timeout: float = 5.0,
        max_message_bytes: int = 256 * 2**20,
        bind: bool = False,
        rcvhwm: int | None = None,
        batch_frames: int | None = None,
    ) -> None:
        if policy not in ("drop", "spill"):
            raise ValueError(f"policy: expected 'drop' or 'spill', found {policy!r}")
        if order not in (None, "raster", "snake"):
            raise ValueError(f"order: expected 'raster' or 'snake', found {order!r}")
        # the options again, for receiver processes (ZMQSource.run(processes=N))
        self._options = {
            "channel": channel, "policy": policy, "buffer_mib": buffer_mib,
            "spill_dir": spill_dir, "spill_limit_gib": spill_limit_gib,
            "stall_timeout": stall_timeout, "max_message_bytes": max_message_bytes,
            "rcvhwm": rcvhwm, "batch_frames": batch_frames}
        self.endpoint, self.protocol = endpoint, protocol
        self.scan, self.order = _pair(scan, "scan"), order
        self.policy: Policy = policy
        self.buffer_bytes = int(buffer_mib * 2**20)
        self.spill_dir, self.spill_limit = spill_dir, int(spill_limit_gib * 2**30)
        self.stall_timeout = float(stall_timeout)
        self.max_message_bytes = int(max_message_bytes)
        self.bind, self.rcvhwm = bind, rcvhwm
        self.batch_frames = batch_frames
        self.flush_s = 0.05  # a batch waits at most this long for more frames
        self._decoder = make_decoder(protocol, channel=channel,
                                     max_frame_bytes=min(self.max_message_bytes, 2**31))
        self.counters = Counters()
        self._state = "idle"
        self._series: Series | None = None
        self._ended = False
        self._pending: SeriesStart | None = None  # header waiting for its first frame
        self._finished_ids: deque[int] = deque(maxlen=16)
        self._tracker: FrameTracker | None = None
        self._batcher: Batcher | None = None
        self._handoff: queue.SimpleQueue | None = None
        self._attach: queue.SimpleQueue | None = None  # set from other threads
        self._end_request: tuple[int, float] | None = None
        self._latest: np.ndarray | None = None
        self._last_msg = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._logged = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ZMQSource:
        """Open the socket and start receiving (returns self; no-op if started).

        Raises
        ------
        zmq.ZMQError
            The endpoint cannot be connected/bound.
        """
        if self._thread is not None:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="framescope-receiver",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop receiving and close the socket; an open series is handed on as unfinished."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._state = "stopped"

    def __enter__(self) -> ZMQSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, udfs: Any, *, record: str | None = None, processes: int = 1,
            mp_context: Any = "spawn", on_series_end: Any = None, kernel_threads: int = 1,
            ) -> LiveRun | ParallelRun:
        """Start analysing received frames with ``udfs`` (and start receiving).

        Parameters
        ----------
        udfs : UDF, list of UDF or dict of name → UDF
            A dict prefixes each UDF's result names with its key.
        record : str, optional
            HDF5 file to record analysed frames into (single process only).
        processes : int
            1: receive and analyse in this process (:class:`LiveRun`); more: that many
            receiver processes PULL from the endpoint, each analysing its share, and their
            partial results merge here (:class:`ParallelRun`; needs ``scan``; this source's
            own socket stays closed).
        mp_context : str or multiprocessing context
            How receiver processes start ("spawn", "forkserver").
        on_series_end : callable, optional
            Called with each series' final Dataset (single process only; in the analysis
            thread, so keep it short).
        kernel_threads : int
            numba threads of the analysis (see :class:`LiveRun`).

        Returns
        -------
        LiveRun or ParallelRun
            Started; poll ``snapshot()`` and ``status``, ``wait()`` for the series' end.
        """
        if processes > 1:
            from framescope.live._parallel import ParallelRun

            if record is not None or on_series_end is not None:
                raise ValueError("record= and on_series_end= work with processes=1 only")
            return ParallelRun(self.endpoint, self.protocol, udfs, processes=processes,
                               scan=self.scan, order=self.order,
                               source_options=self._options, mp_context=mp_context).start()
        from framescope.live._run import LiveRun

        return LiveRun(self, udfs, record=record, on_series_end=on_series_end,
                       kernel_threads=kernel_threads).start()

    # -- what users read -------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Counters and state of the current series (a consistent-enough snapshot)."""
        c, s, tracker, batcher = self.counters, self._series, self._tracker, self._batcher
        return Status(
            state=self._state, series=None if s is None else s.series,
            frames_expected=None if s is None else s.n_frames,
            frames_received=c.frames_received, bytes_received=c.bytes_received,
            rate_hz=c.rate_hz, mb_per_s=c.mb_per_s, dropped=c.dropped, spilled=c.spilled,
            spill_pending=0 if batcher is None else batcher.spill.pending,
            malformed=c.malformed,
            gaps=0 if tracker is None else tracker.gaps(self._ended),
            duplicates=c.duplicates, out_of_order=c.out_of_order,
            queue_depth=0 if batcher is None else batcher.depth,
            queue_capacity=0 if batcher is None else batcher.capacity,
            policy=self.policy, last_error=c.last_error,
        )

    def latest_frame(self) -> np.ndarray | None:
        """A copy of the last frame received (for display at a few Hz), or None."""
        frame = self._latest
        return None if frame is None else frame.copy()

    @property
    def series(self) -> Series | None:
        """The series being (or last) received."""
        return self._series

    @property
    def series_open(self) -> bool:
        """True while a series is being received (started and not ended/closed)."""
        return self._series is not None and not self._ended

    def frame_progress(self) -> tuple[int, int]:
        """(distinct frame numbers received, highest frame number) of the series."""
        t = self._tracker
        return (0, -1) if t is None else (t.unique, t.highest)

    # -- hooks for LiveRun / parallel workers ----------------------------------------------

    def attach(self, handoff: queue.SimpleQueue) -> None:
        """Hand batches to ``handoff`` from now on (from the current series' next frame)."""
        if self._thread is None:
            self._handoff = handoff
        else:  # the receiver thread picks it up: it alone touches series state
            self._attach = handoff

    def request_end(self, series: int, grace: float) -> None:
        """End ``series`` once no message came for ``grace`` s (its end went elsewhere)."""
        self._end_request = (series, grace)

    # -- receiver thread -------------------------------------------------------------------

    def _open_socket(self) -> zmq.Socket:
        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        if self.rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        if self.bind:
            sock.bind(self.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            sock.connect(self.endpoint)
        return sock

    def _loop(self) -> None:
        try:
            sock = self._open_socket()
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                if sock.poll(_POLL_MS):
                    for _ in range(_BURST):
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(parts)
                if self._attach is not None:
                    self._take_attach()
                self._housekeeping(time.monotonic())
        finally:
            sock.close(linger=0)
            if self._series is not None and not self._ended:
                self._close_series(ended=False)

    def _take_attach(self) -> None:
        self._handoff, self._attach = self._attach, None
        s = self._series
        if s is not None and not self._ended:
            self._batcher = self._new_batcher(s)

    def _housekeeping(self, now: float) -> None:
        if self._batcher is not None:
            self._batcher.flush(older_than=self.flush_s)
        self.counters.update_rate(now)
        quiet = now - self._last_msg
        if self._end_request is not None:
            series, grace = self._end_request
            s = self._series
            if s is None or s.series != series or self._ended:
                self._end_request = None
            elif quiet >= grace:
                self._end_request = None
                self._close_series(ended=True)
        if self._state == "receiving" and quiet > self.stall_timeout:
            self._state = "stalled"
            log.warning("series %s: no message for %.1f s, %d of %s frames received; "
                        "state 'stalled'", getattr(self._series, "series", None), quiet,
                        self.counters.frames_received, getattr(self._series, "n_frames", "?"))

    def _malformed(self, why: str) -> None:
        c = self.counters
        c.malformed += 1
        c.last_error = why
        self._logged += 1
        if self._logged <= _LOG_FIRST or self._logged % 1000 == 0:
            log.warning("%s: skipped message (%d so far): %s", self.endpoint, c.malformed, why)

    def _handle(self, parts: list[zmq.Frame]) -> None:
        if self._attach is not None:  # before any message that came after attach()
            self._take_attach()
        self._last_msg = time.monotonic()
        size = sum(len(p) for p in parts)
        if size > self.max_message_bytes:
            self._malformed(f"oversized message of {size} B (limit {self.max_message_bytes})")
            return
        try:
            event = self._decoder.decode([p.buffer for p in parts])
        except MessageError as exc:
            self._malformed(str(exc))
            return
        except Exception as exc:  # a decoder bug must not end the receiver
            log.exception("decoder %s failed", self.protocol)
            self._malformed(f"{type(exc).__name__}: {exc}")
            return
        if isinstance(event, Frame):
            self._frame(event, size)
        elif isinstance(event, SeriesStart):
            self._start(event)
        elif isinstance(event, SeriesEnd):
            self._end(event)

    def _frame(self, f: Frame, size: int) -> None:
        s = self._series
        if s is None or f.series != s.series or self._ended:
            s = self._implicit_start(f)
            if s is None:
                return
        data = f.data
        meta = s.meta
        if data.shape != meta.frame_shape or data.dtype != meta.dtype:
            self._malformed(f"frame {f.index}: {data.dtype} {data.shape}, series {s.series} "
                            f"has {meta.dtype} {meta.frame_shape}")
            return
        c = self.counters
        why = self._tracker.accept(f.index)
        if why and why != "duplicate":
            self._malformed(why)
            return
        c.frames_received += 1
        c.bytes_received += size
        if self._state != "receiving":
            self._state = "receiving"
        if why:
            return
        self._latest = data
        if self._batcher is not None:
            self._batcher.put(f.index, data)

    def _implicit_start(self, f: Frame) -> Series | None:
        """The series a frame belongs to when it is not the open one."""
        if f.series in self._finished_ids:
            self._malformed(f"frame {f.index} of finished series {f.series}")
            return None
        pending = self._pending if self._pending and self._pending.series == f.series else None
        if pending is None and self.scan is None:
            self._malformed(f"frame {f.index} of series {f.series} without its header; give "
                            f"scan= to join a running series")
            return None
        start = pending or SeriesStart(f.series)
        start = dataclasses.replace(start, frame_shape=start.frame_shape or f.data.shape,
                                    dtype=start.dtype or f.data.dtype)
        return self._open(start, from_header=pending is not None)

    def _start(self, start: SeriesStart) -> None:
        if self._series is not None and not self._ended:
            log.warning("series %d: a header for series %d came before its end",
                        self._series.series, start.series)
            self._close_series(ended=False)
        self._pending = start
        if start.frame_shape is not None and start.dtype is not None:
            self._open(start, from_header=True)

    def _open(self, start: SeriesStart, from_header: bool) -> Series | None:
        series = resolve_series(start, self.scan, self.order)
        if isinstance(series, str):
            self._malformed(series)
            return None
        if self._series is not None and not self._ended:
            self._close_series(ended=False)
        series.from_header = from_header
        self._pending = None
        self.counters.reset()
        self._logged = 0
        self._series, self._ended = series, False
        self._tracker = FrameTracker(series.n_frames, self.counters)
        self._state = "receiving"
        self._batcher = self._new_batcher(series) if self._handoff is not None else None
        log.info("series %d: %s %s frames, scan %s (%s)%s", series.series, series.meta.dtype,
                 series.meta.frame_shape, series.meta.scan_shape, series.order,
                 "" if from_header else ", header not seen")
        return series

    def _new_batcher(self, series: Series) -> Batcher:
        batcher = Batcher(series, self._handoff, self.counters, policy=self.policy,
                          buffer_bytes=self.buffer_bytes, batch_frames=self.batch_frames,
                          spill_dir=self.spill_dir, spill_limit_bytes=self.spill_limit)
        self._handoff.put(Start(series, batcher))
        return batcher

    def _end(self, end: SeriesEnd) -> None:
        s = self._series
        if s is None or s.series != end.series or self._ended:
            self._malformed(f"end of series {end.series}, which is not being received")
            return
        self._close_series(ended=True)

    def _close_series(self, ended: bool) -> None:
        s = self._series
        self._ended = True
        self._finished_ids.append(s.series)
        self._state = "finished" if ended else "stopped"
        if self._batcher is not None:
            self._batcher.flush()
            self._handoff.put(End(s.series, ended, self.status))
        gaps = self._tracker.gaps(ended=True) if self._tracker is not None else 0
        log.info("series %d %s: %d frames received, %d missing, %d dropped, %d spilled, "
                 "%d malformed", s.series, "ended" if ended else "closed unfinished",
                 self.counters.frames_received, gaps, self.counters.dropped,
                 self.counters.spilled, self.counters.malformed)
