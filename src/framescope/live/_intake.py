"""What the receiver thread does with each message: decode, check, track, record, hand on.

One :class:`Intake` per source, used by its receiver thread only (other threads read its
counters and state, or leave requests in attributes it picks up). Malformed messages are
counted by reason and logged (rate-limited), never raised; those skipped while no series is
open count for the next series.

A series that cannot be received (frames without a usable header: no frame shape, no number
of images, no ``scan=``) is given up after ``header_timeout`` seconds: the state becomes
``failed`` with the reason in ``last_error``, and its further frames are skipped quietly
(counted), until a series with a usable header comes.

With a :class:`~framescope.live._record.RecordingThread`, every accepted frame goes to the
recording here, before the batcher's drop/spill decision, and every series' header and end
(with the counters) too: the recording is of the series as it came, not of what was
analysed. Malformed messages are not recorded; a repeated frame number is recorded once.
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

from framescope.live._batch import Batcher, End, FrameTracker, Policy, Start
from framescope.live._intake_fast import FastIntake
from framescope.live._messages import (
    Frame,
    HeaderPart,
    MessageError,
    ScanOrder,
    SeriesEnd,
    SeriesStart,
)
from framescope.live._scan import Series, resolve_series
from framescope.live._status import RECEIVER_FIELDS, Counters, Status

if TYPE_CHECKING:
    from framescope.live._record import RecordingThread

__all__ = ["Intake"]

log = logging.getLogger(__name__)

_LOG_FIRST = 10  # malformed messages logged per series before thinning out


class Intake(FastIntake):
    """Series state and counters of one source, driven by its receiver thread.

    ``recorder``, if given, is handed every accepted frame and each series' header and end
    (see the module docstring); it is started and closed by the owner.
    """

    def __init__(self, name: str, decoder: Any, *, scan: tuple[int, int] | None,
                 order: ScanOrder | None, policy: Policy, buffer_bytes: int,
                 batch_frames: int | None, spill_dir: str | None, spill_limit: int,
                 stall_timeout: float, max_message_bytes: int,
                 recorder: RecordingThread | None = None,
                 calibration: str | None = None, header_timeout: float = 10.0) -> None:
        self.name, self.decoder = name, decoder
        self.calibration = calibration  # the user's, as JSON
        self.scan, self.order, self.policy = scan, order, policy
        self.buffer_bytes, self.batch_frames = buffer_bytes, batch_frames
        self.spill_dir, self.spill_limit = spill_dir, spill_limit
        self.stall_timeout, self.max_message_bytes = stall_timeout, max_message_bytes
        self.header_timeout = header_timeout
        # series without a usable header: id -> (first skipped frame's time, why); and those
        # given up (failed)
        self._headless: dict[int, tuple[float, str]] = {}
        self._failed: deque[int] = deque(maxlen=16)
        self._failed_series: int | None = None
        # skipped while no series was open: counted for the next one too
        self._between: dict[str, int] = {}
        self.flush_s = 0.05  # a batch waits at most this long for more frames
        self.counters = Counters()
        self.state = "idle"
        self.series: Series | None = None
        self.ended = False
        self._pending: SeriesStart | None = None  # header waiting for its first frame
        # a header part that named no series (its dheader went to another receiver): for
        # the next series opened without a complete header
        self._orphan: SeriesStart | None = None
        self.finished_ids: deque[int] = deque(maxlen=16)
        self.tracker: FrameTracker | None = None
        self.batcher: Batcher | None = None
        self._handoff: queue.SimpleQueue | None = None
        self.attach_request: queue.SimpleQueue | None = None  # set from other threads
        self.end_request: tuple[int, float] | None = None  # set from other threads
        self.dark_requests = 0  # next series to mark dark (ZMQSource.take_dark)
        self._dark_lock = threading.Lock()
        self.latest: np.ndarray | None = None
        self._last_msg = time.monotonic()
        self._idle_since: float | None = None  # receiver thread waiting on an empty socket
        self.last_size = 0  # bytes of the last message (the receiver's copy choice)
        self._logged = 0
        self.recorder = recorder
        self._recording = False  # the current series is being recorded
        self._record_warned = False
        self.fast_init(decoder)

    def status(self) -> Status:
        """Counters and state of the current series (a consistent-enough snapshot)."""
        c, s, tracker, batcher = self.counters, self.series, self.tracker, self.batcher
        rec = None if s is None else self.recorder
        if self.state == "failed":  # the series given up, not the last one received
            sid, expected = self._failed_series, None
        else:
            sid, expected = (None, None) if s is None else (s.series, s.n_frames)
        return Status(
            state=self.state, series=sid, frames_expected=expected,
            frames_received=c.frames_received, bytes_received=c.bytes_received,
            rate_hz=c.rate_hz, mb_per_s=c.mb_per_s, dropped=c.dropped, spilled=c.spilled,
            spill_pending=0 if batcher is None else batcher.spill.pending,
            malformed=c.malformed,
            recorded=0 if rec is None else rec.recorded(s.series),
            record_dropped=c.record_dropped + (0 if rec is None else rec.failed(s.series)),
            gaps=0 if tracker is None else tracker.gaps(self.ended),
            duplicates=c.duplicates, out_of_order=c.out_of_order,
            queue_depth=0 if batcher is None else batcher.depth,
            queue_capacity=0 if batcher is None else batcher.capacity,
            policy=self.policy,
            last_error=(rec is not None and rec.error(s.series)) or c.last_error,
            malformed_by=c.malformed_by,
        )

    def close(self) -> None:
        """The socket closed: hand an open series on as unfinished."""
        if self.series is not None and not self.ended:
            self._close_series(ended=False)

    def take_attach(self) -> None:
        """Start handing batches on (receiver thread; the request came from another)."""
        self._handoff, self.attach_request = self.attach_request, None
        s = self.series
        if s is not None and not self.ended:
            self.batcher = self._new_batcher(s)

    def idle(self, now: float) -> None:
        """The receiver thread found its socket empty (a receive timed out) at ``now``."""
        if self._idle_since is None:
            self._idle_since = now

    def quiet_for(self) -> float:
        """Seconds the receiver thread has waited on an empty socket, 0 while it handles
        messages or has not waited yet (other threads: messages may wait unread while the
        receiver thread is busy, e.g. a first header importing the calibration model)."""
        since = self._idle_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def housekeeping(self, now: float) -> None:
        """Between bursts: flush a waiting batch, rates, requested ends, stall detection."""
        if self.batcher is not None:
            self.batcher.flush(older_than=self.flush_s)
        self.counters.update_rate(now)
        quiet = now - self._last_msg
        if self.end_request is not None:
            series, grace = self.end_request
            s = self.series
            if s is None or s.series != series or self.ended:
                self.end_request = None
            elif quiet >= grace:
                self.end_request = None
                self._close_series(ended=True)
        if self._headless:
            self._give_up(now)
        if self.state == "receiving" and quiet > self.stall_timeout:
            self.state = "stalled"
            log.warning("series %s: no message for %.1f s, %d of %s frames received; "
                        "state 'stalled'", getattr(self.series, "series", None), quiet,
                        self.counters.frames_received, getattr(self.series, "n_frames", "?"))

    def _malformed(self, why: str, reason: str, quiet: bool = False) -> None:
        c = self.counters
        c.skipped(reason, why)
        if (self.series is None or self.ended) and self.state != "failed":
            self._between[reason] = self._between.get(reason, 0) + 1
        self._logged += 1
        if not quiet and (self._logged <= _LOG_FIRST or self._logged % 1000 == 0):
            log.warning("%s: skipped message (%d so far): %s", self.name, c.malformed, why)

    def _headerless(self, series: int, why: str) -> None:
        """A frame of ``series``, which cannot be opened: skipped; given up in time."""
        if series in self._failed:
            self._malformed(f"frame of series {series}, given up: {why}", "no usable header",
                            quiet=True)
            return
        self._headless.setdefault(series, (time.monotonic(), why))
        self._malformed(why, "no usable header")

    def _give_up(self, now: float) -> None:
        for series, (since, why) in list(self._headless.items()):
            if now - since >= self.header_timeout:
                self._fail(series, f"no usable header after {self.header_timeout:g} s "
                                   f"({why}); its frames are skipped")

    def _fail(self, series: int, why: str) -> None:
        """Give up ``series``: state ``failed``, unless another series is being received."""
        self._headless.pop(series, None)
        self._failed.append(series)
        if self.series is not None and not self.ended:
            return  # another series is being received: its status stays
        self.state, self._failed_series = "failed", series
        self._between = {}  # its skipped frames are counted in its own status
        self.counters.last_error = msg = f"series {series}: {why}"
        log.error("%s: %s", self.name, msg)

    def handle(self, parts: list[Any]) -> None:
        """One ZeroMQ message (its frames, received with ``copy=False``)."""
        if self.attach_request is not None:  # before any message that came after attach()
            self.take_attach()
        self._idle_since = None
        self._last_msg = time.monotonic()
        size = self.last_size = sum(map(len, parts))
        if size > self.max_message_bytes:
            self._malformed(f"oversized message of {size} B (limit {self.max_message_bytes})",
                            "oversized")
            return
        try:
            # (parts are bytes when the receiver copied a small message: no zmq.Frame)
            event = self.decoder.decode(
                parts if type(parts[0]) is bytes else [p.buffer for p in parts])
        except MessageError as exc:
            self._malformed(str(exc), exc.reason)
            return
        except Exception as exc:  # a decoder bug must not end the receiver
            log.exception("%s: decoder failed", self.name)
            self._malformed(f"{type(exc).__name__}: {exc}", "decoder error")
            return
        # None: a header part whose header is not complete yet (stream v1)
        if isinstance(event, Frame):
            self._frame(event, size)
        elif isinstance(event, SeriesStart):
            self._start(event)
        elif isinstance(event, SeriesEnd):
            self._end(event)
        elif isinstance(event, HeaderPart):
            self._header_part(event.start)

    def _header_part(self, part: SeriesStart) -> None:
        log.info("%s: a header part without its series' header message (%s); kept for the "
                 "next series", self.name, ", ".join(sorted(part.header)[:4] + sorted(
                     part.arrays)) or "empty")
        self._orphan = part if self._orphan is None else _completed(part, self._orphan)

    def _frame(self, f: Frame, size: int) -> None:
        s = self.series
        if s is None or f.series != s.series or self.ended:
            s = self._implicit_start(f)
            if s is None:
                return
        data = f.data
        meta = s.meta
        if data.shape != meta.frame_shape or data.dtype != meta.dtype:
            self._malformed(f"frame {f.index}: {data.dtype} {data.shape}, series {s.series} "
                            f"has {meta.dtype} {meta.frame_shape}", "wrong frame shape")
            return
        c = self.counters
        why = self.tracker.accept(f.index)
        if why and why != "duplicate":
            self._malformed(why, "outside the scan")
            return
        c.frames_received += 1
        c.bytes_received += size
        if self.state != "receiving":
            self.state = "receiving"
        if why:  # a duplicate: counted, neither recorded nor analysed again
            return
        self.latest = data
        if self.fast_series != s.series and self.fast_on:
            self.fast_learn(s.series, f.wire)  # (the compiled loop takes the next ones)
        # recorded before the batcher, which may drop the frame (a reference is queued:
        # the message's memory stays until the frame is written)
        if self._recording and not self.recorder.frame(s.series, f.index, data, f.wire):
            self._record_full(s)
        if self.batcher is not None:
            self.batcher.put(f.index, data)

    def _record_full(self, s: Series) -> None:
        self.counters.record_dropped += 1
        if not self._record_warned:
            self._record_warned = True
            log.warning("series %d: the recording's buffer is full (%.0f MiB; the disk is "
                        "slower than the stream): frames are not recorded until it drains, "
                        "see status.record_dropped", s.series,
                        self.recorder.buffer_bytes / 2**20)

    def _implicit_start(self, f: Frame) -> Series | None:
        """The series a frame belongs to when it is not the open one."""
        if f.series in self.finished_ids:
            self._malformed(f"frame {f.index} of finished series {f.series}",
                            "frame of a finished series")
            return None
        pending = self._pending if self._pending and self._pending.series == f.series else None
        if pending is None and self._orphan is not None:
            pending = SeriesStart(f.series)  # completed by the header part in _open
        if pending is None and self.scan is None:
            self._headerless(f.series, f"frame {f.index} of series {f.series} without its "
                                       f"header; give scan= to join a running series")
            return None
        start = pending or SeriesStart(f.series)
        start = dataclasses.replace(start, frame_shape=start.frame_shape or f.data.shape,
                                    dtype=start.dtype or f.data.dtype)
        return self._open(start, from_header=pending is not None)

    def _start(self, start: SeriesStart) -> None:
        if self.series is not None and not self.ended:
            log.warning("series %d: a header for series %d came before its end",
                        self.series.series, start.series)
            self._close_series(ended=False)
        self._pending = start
        if start.frame_shape is not None and start.dtype is not None:
            self._open(start, from_header=True)

    def _open(self, start: SeriesStart, from_header: bool) -> Series | None:
        orphan, self._orphan = self._orphan, None
        if orphan is not None and start.n_frames is None:  # a header without its config
            start = _completed(start, orphan)
        series = resolve_series(start, self.scan, self.order, self.calibration)
        if isinstance(series, str):
            self._headerless(start.series, series)
            return None
        if self.series is not None and not self.ended:
            self._close_series(ended=False)
        self.fast_series = -1  # (a series id may come again: learn its dimage_d anew)
        series.from_header = from_header
        if not series.dark:
            series.dark = self._take_dark_request()
        self._pending = None
        self._headless.pop(series.series, None)
        self._failed_series = None
        c, between, last = self.counters, self._between, self.counters.last_error
        c.reset()
        if between:  # messages skipped since the last series count for this one
            c.malformed, c.malformed_by, c.last_error = sum(between.values()), between, last
            self._between = {}
        self._logged = 0
        self.series, self.ended = series, False
        self.tracker = FrameTracker(series.n_frames, self.counters)
        self.state = "receiving"
        if self.recorder is not None:
            self._recording, self._record_warned = True, False
            self.recorder.begin(series)
        self.batcher = self._new_batcher(series) if self._handoff is not None else None
        log.info("series %d: %s %s frames, scan %s (%s)%s%s", series.series,
                 series.meta.dtype, series.meta.frame_shape, series.meta.scan_shape,
                 series.order, "" if from_header else ", header not seen",
                 ", a dark series" if series.dark else "")
        return series

    def request_dark(self, n_series: int) -> None:
        """Mark the next ``n_series`` series dark (any thread; 0 cancels the requests)."""
        with self._dark_lock:
            self.dark_requests = n_series if n_series == 0 else self.dark_requests + n_series

    def _take_dark_request(self) -> bool:
        with self._dark_lock:
            if self.dark_requests <= 0:
                return False
            self.dark_requests -= 1
            return True

    def _new_batcher(self, series: Series) -> Batcher:
        old = self.batcher
        # buffers come back only from the analysis they went to: a new one gets a new pool
        same = old is not None and old.handoff is self._handoff
        batcher = Batcher(series, self._handoff, self.counters, policy=self.policy,
                          buffer_bytes=self.buffer_bytes, batch_frames=self.batch_frames,
                          spill_dir=self.spill_dir, spill_limit_bytes=self.spill_limit,
                          pool=old.pool if same else None, tracker=self.tracker)
        if old is not None and not same:  # buffers the stopped analysis gave back
            batcher.pool.adopt(old.pool)
        self._handoff.put(Start(series, batcher))
        return batcher

    def _end(self, end: SeriesEnd) -> None:
        s = self.series
        if s is None or s.series != end.series or self.ended:
            self._malformed(f"end of series {end.series}, which is not being received",
                            "end of a series not received")
            headless = self._headless.get(end.series)
            if headless is not None:  # nothing more to wait for
                self._fail(end.series, f"ended without a usable header ({headless[1]})")
            return
        self._close_series(ended=True)

    def _close_series(self, ended: bool) -> None:
        s = self.series
        self.ended = True
        self.finished_ids.append(s.series)
        self.state = "finished" if ended else "stopped"
        if self.batcher is not None:
            self.batcher.flush()
            self._handoff.put(End(s.series, ended, self.status()))
        if self._recording:
            self._recording = False
            status = self.status().as_dict()
            # the recording thread adds the frames it failed to write itself, counted when
            # it writes the end: here only those never queued (a race counted some twice)
            status["record_dropped"] = self.counters.record_dropped
            status["malformed_by"] = dict(self.counters.malformed_by)  # (stored as JSON)
            self.recorder.end(s.series, {k: status[k] for k in RECEIVER_FIELDS}, ended)
        gaps = self.tracker.gaps(ended=True) if self.tracker is not None else 0
        log.info("series %d %s: %d frames received, %d missing, %d dropped, %d spilled, "
                 "%d malformed", s.series, "ended" if ended else "closed unfinished",
                 self.counters.frames_received, gaps, self.counters.dropped,
                 self.counters.spilled, self.counters.malformed)


def _completed(start: SeriesStart, part: SeriesStart) -> SeriesStart:
    """``start`` with what it lacks from the header part ``part`` (``start``'s own fields
    win)."""
    return dataclasses.replace(
        start, frame_shape=start.frame_shape or part.frame_shape,
        dtype=start.dtype or part.dtype, n_frames=start.n_frames or part.n_frames,
        scan_shape=start.scan_shape or part.scan_shape,
        scan_order=start.scan_order or part.scan_order,
        header={**part.header, **start.header}, arrays={**part.arrays, **start.arrays})
