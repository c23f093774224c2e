"""Record received live frames (and series headers) to HDF5, and read recordings back.

A :class:`ZMQSource` made with ``record=`` hands every frame it accepts to a
:class:`RecordingThread`, in its receiver thread, before the drop/spill policy sees the
frame: the recording holds what came on the wire, whatever the analysis kept up with. The
receiver only queues a reference to the frame (the received message's memory); the
recording thread writes it with :class:`Recorder` (h5py releases the GIL while it writes),
so the receiver never waits on the disk.

Layout (one group per series, frames at their frame number)::

    /                         attrs: framescope_recording = 1, protocol
    /series_<id>/frames       (n_frames, det_y, det_x), one chunk per frame
    /series_<id>/received     (n_frames,) bool: which frames were recorded
    /series_<id>/arrays/<name>  header arrays (pixel_mask, flatfield, ...), as sent
    /series_<id>              attrs: series, scan_shape, scan_order, header (JSON),
                              status (JSON: the receiver's counters when the series
                              closed), ended (bool: closed by its end message)

A repeated series id gets a group ``series_<id>_<k>``. Frames that never arrived, were
malformed or repeated a frame number already recorded stay ``received = False`` (a
duplicate is recorded once, as it first came) and are not replayed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import hdf5plugin  # its filters: to write compressed recordings, and to read them
import numpy as np

from framescope.live import _codecs
from framescope.live._messages import SeriesStart
from framescope.live._scan import Series

__all__ = ["Recorder", "RecordingThread", "read_recording"]

log = logging.getLogger(__name__)

Compression = Literal["bslz4", "lz4"]
# the received payloads a recording with this compression can store as they came
_WIRE = {"bslz4": ("bslz4",), "lz4": ("lz4-h5", "lz4")}


def _runs(indices: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first frame, stop, rows of the batch) for runs of consecutive frame numbers."""
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    cuts = np.flatnonzero(np.diff(ordered) != 1) + 1
    for rows in np.split(order, cuts):
        yield int(indices[rows[0]]), int(indices[rows[-1]]) + 1, rows


@dataclass(slots=True)
class _Open:
    """A series being recorded: its group, the frames' dataset id, what was recorded."""

    group: h5py.Group
    frames: h5py.h5d.DatasetID
    received: np.ndarray  # written to the file when the series ends (not per frame)
    nbytes: int
    itemsize: int
    count: int = 0


class Recorder:
    """Writes series headers and frames into an HDF5 file as they are received.

    Parameters
    ----------
    path : str or PathLike
        New HDF5 file (an existing one is refused).
    protocol : str
        Recorded in the attrs (informative: replays may use any protocol).
    compression : {None, "bslz4", "lz4"}
        HDF5 filter of the frames (hdf5plugin's bitshuffle+LZ4 or LZ4; reading needs
        ``import hdf5plugin``). None (default) writes each frame as it is, the cheapest.
        A frame that arrived compressed the same way is stored as it came, without
        compressing again; others are compressed in the receiver thread (see
        docs/live.md for what that costs).

    Raises
    ------
    FileExistsError
        ``path`` exists.
    ValueError
        Unknown ``compression``.

    Notes
    -----
    Frames go in with ``write_direct_chunk``, one chunk per frame: no HDF5 selection or
    filter pipeline per frame. An uncompressed frame then costs about what the kernel
    needs to copy it into the page cache (~35 µs per 128 KiB frame on the development VM)
    plus ~20 µs of HDF5.
    """

    def __init__(self, path: str | os.PathLike[str], *, protocol: str = "",
                 compression: Compression | None = None) -> None:
        if compression not in (None, *_WIRE):
            raise ValueError(f"compression: expected None, 'bslz4' or 'lz4', found "
                             f"{compression!r}")
        self.path = os.fspath(path)
        if os.path.exists(self.path):
            raise FileExistsError(f"{self.path}: recording exists; choose a new file name")
        self.compression = compression
        self._filters: dict[str, Any] = {}
        if compression is not None:
            self._filters = dict(hdf5plugin.Bitshuffle(cname="lz4") if compression == "bslz4"
                                 else hdf5plugin.LZ4())
        self._wire = _WIRE.get(compression, ())
        self._codec = {"bslz4": "bslz4", "lz4": "lz4-h5"}.get(compression)
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._file = h5py.File(self.path, "w")
        self._file.attrs["framescope_recording"] = 1
        self._file.attrs["protocol"] = protocol

    @property
    def closed(self) -> bool:
        return not self._file.id.valid

    def reopen(self) -> None:
        """Open the file again after :meth:`close` to record more series (no-op if open)."""
        with self._lock:
            if not self._file.id.valid:
                self._file = h5py.File(self.path, "r+")

    def begin(self, series: Series) -> None:
        """Create the series' group, with its header and header arrays."""
        meta = series.meta
        with self._lock:
            self._end(series.series, None, None)  # a series id repeated before its end
            name = f"series_{series.series}"
            k = 1
            while name in self._file:
                k += 1
                name = f"series_{series.series}_{k}"
            g = self._file.create_group(name)
            frames = g.create_dataset("frames", (series.n_frames, *meta.frame_shape),
                                      meta.dtype, chunks=(1, *meta.frame_shape),
                                      **self._filters)
            g.create_dataset("received", (series.n_frames,), bool)
            g.attrs.update({"series": series.series, "scan_shape": list(meta.scan_shape),
                            "scan_order": series.order, "header": json.dumps(series.header)})
            if series.arrays:
                arrays = g.create_group("arrays")
                for key, value in series.arrays.items():
                    arrays.create_dataset(key, data=value)
            self._open[series.series] = _Open(
                g, frames.id, np.zeros(series.n_frames, bool),
                meta.n_pixels * meta.dtype.itemsize, meta.dtype.itemsize)

    def write_frame(self, series: int, index: int, frame: np.ndarray,
                    wire: tuple[str, Any] | None = None) -> bool:
        """Store one frame (C-contiguous, the series' shape and dtype) at its number.

        ``wire`` is the frame's payload as received (:attr:`Frame.wire`): stored as it is
        when the recording's compression matches. False when ``series`` is not being
        recorded; errors of the file (e.g. a full disk) are raised.
        """
        with self._lock:
            o = self._open.get(series)
            if o is None:
                return False
            chunk = None
            if wire is not None and wire[0] in self._wire:
                chunk = _codecs.h5_chunk(wire[0], wire[1], o.nbytes, o.itemsize)
            if chunk is None:
                chunk = (np.ascontiguousarray(frame) if self._codec is None
                         else _codecs.encode(frame, self._codec))
            o.frames.write_direct_chunk((index, 0, 0), chunk)
            if not o.received[index]:
                o.received[index] = True
                o.count += 1
            return True

    def write(self, series: int, indices: np.ndarray, frames: np.ndarray) -> None:
        """Store a batch of frames at their frame numbers (through HDF5's own selection)."""
        with self._lock:
            o = self._open.get(series)
            if o is None:
                return
            dset = o.group["frames"]
            for first, stop, rows in _runs(np.asarray(indices)):
                block = frames[rows[0]:rows[-1] + 1] if np.all(np.diff(rows) == 1) \
                    else frames[rows]
                dset[first:stop] = block
                o.count += int(np.count_nonzero(~o.received[first:stop]))
                o.received[first:stop] = True

    def recorded(self, series: int) -> int:
        """Frames of ``series`` recorded so far (0 when it is not being recorded)."""
        o = self._open.get(series)
        return 0 if o is None else o.count

    def end(self, series: int, status: Mapping[str, Any], *, ended: bool | None = None,
            ) -> None:
        """Close a series: store which frames were recorded, its final status, and flush.

        ``status`` is stored as JSON (e.g. the receiver's counters); ``ended``: whether
        the series closed by its end message.
        """
        with self._lock:
            self._end(series, status, ended)
            self._file.flush()

    def _end(self, series: int, status: Mapping[str, Any] | None, ended: bool | None) -> None:
        o = self._open.pop(series, None)
        if o is None:
            return
        o.group["received"][...] = o.received
        if status is not None:
            o.group.attrs["status"] = json.dumps(dict(status), default=str)
        if ended is not None:
            o.group.attrs["ended"] = bool(ended)

    def close(self) -> None:
        """Close the file (a series still open keeps what was recorded, without status)."""
        with self._lock:
            if self._file.id.valid:
                for series in list(self._open):
                    self._end(series, None, None)
                self._file.close()


_STOP = object()


class RecordingThread:
    """A :class:`Recorder` fed from its own thread, through a queue bounded in bytes.

    The receiver thread calls :meth:`begin`, :meth:`frame` and :meth:`end` (they only
    queue); the recording thread writes, in order. A frame that would take the queue
    beyond ``buffer_bytes`` is not queued: :meth:`frame` returns False and the receiver
    counts it (``status.record_dropped``). That happens only when the disk is slower than
    the stream for longer than the buffer lasts; writing synchronously would instead stall
    the receiver in the kernel (dirty-page throttling), and the detector behind it.

    Parameters
    ----------
    recorder : Recorder
        Written only by this thread once :meth:`start` has been called.
    buffer_bytes : int
        Bound of the frames queued for writing (their received messages stay in memory
        until written).

    Notes
    -----
    Per-series counters (:meth:`recorded`, :meth:`failed`, :meth:`error`) are written by
    the recording thread only and read by anyone; they lag the receiver by the queue.
    """

    def __init__(self, recorder: Recorder, buffer_bytes: int) -> None:
        self.recorder, self.buffer_bytes = recorder, int(buffer_bytes)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.queued = 0  # bytes queued (receiver thread)
        self.written = 0  # bytes written or given up on (recording thread)
        self._recorded: dict[int, int] = {}
        self._failed: dict[int, int] = {}
        self._errors: dict[int, str] = {}

    @property
    def path(self) -> str:
        return self.recorder.path

    @property
    def pending_bytes(self) -> int:
        """Bytes of frames queued and not yet written."""
        return self.queued - self.written

    def recorded(self, series: int) -> int:
        """Frames of ``series`` (the latest series with this id) written so far."""
        return self._recorded.get(series, 0)

    def failed(self, series: int) -> int:
        """Frames of ``series`` queued but not written because writing failed."""
        return self._failed.get(series, 0)

    def error(self, series: int) -> str:
        """Why writing ``series`` failed ("" if it did not)."""
        return self._errors.get(series, "")

    def start(self) -> None:
        """Open the file again if it was closed, and start the recording thread.

        Raises
        ------
        OSError
            The file cannot be opened.
        """
        if self._thread is not None:
            return
        self.recorder.reopen()
        self._thread = threading.Thread(target=self._loop, name="framescope-recorder",
                                        daemon=True)
        self._thread.start()

    def begin(self, series: Series) -> None:
        self._queue.put((self._begin, series))

    def frame(self, series: int, index: int, data: np.ndarray, wire: Any) -> bool:
        """Queue a frame (a reference, no copy); False when the queue is full."""
        size = data.nbytes + (0 if wire is None else len(wire[1]))  # memory it holds
        if self.queued - self.written + size > self.buffer_bytes:
            return False
        self.queued += size
        self._queue.put((self._frame, series, index, data, wire, size))
        return True

    def end(self, series: int, status: dict[str, Any], ended: bool) -> None:
        """Queue the end of ``series`` with the receiver's final counters."""
        self._queue.put((self._end, series, status, ended))

    def close(self) -> None:
        """Write what is queued (this waits for the disk), stop the thread, close the file."""
        if self._thread is not None:
            self._queue.put((_STOP,))
            self._thread.join()
            self._thread = None
        self.recorder.close()

    def _loop(self) -> None:
        get = self._queue.get
        while True:
            op = get()
            if op[0] is _STOP:
                return
            try:
                op[0](*op[1:])
            except Exception:  # a bug here must not end the thread (and the recording)
                log.exception("recording to %s: %s failed", self.path, op[0].__name__)

    def _begin(self, series: Series) -> None:
        sid = series.series
        self._recorded[sid], self._failed[sid], self._errors[sid] = 0, 0, ""
        try:
            self.recorder.begin(series)
        except Exception as exc:  # e.g. a full disk: the receiver goes on
            self._fail(sid, exc)

    def _frame(self, series: int, index: int, data: np.ndarray, wire: Any,
               size: int) -> None:
        try:
            if self._errors.get(series):  # failing already: do not try each frame
                self._failed[series] += 1
            elif self.recorder.write_frame(series, index, data, wire):
                self._recorded[series] += 1
        except Exception as exc:
            self._failed[series] += 1
            self._fail(series, exc)
        finally:
            self.written += size

    def _end(self, series: int, status: dict[str, Any], ended: bool) -> None:
        status = {**status, "recorded": self.recorded(series),
                  "record_dropped": status.get("record_dropped", 0) + self.failed(series)}
        if self._errors.get(series):
            status["last_error"] = self._errors[series]
        try:
            self.recorder.end(series, status, ended=ended)
        except Exception as exc:
            self._fail(series, exc)

    def _fail(self, series: int, exc: Exception) -> None:
        if not self._errors.get(series):
            why = f"recording to {self.path} failed: {type(exc).__name__}: {exc}"
            self._errors[series] = why
            log.error("series %d: %s; its further frames are not recorded (see "
                      "status.record_dropped)", series, why)


def read_recording(path: str | os.PathLike[str], series: int | None = None,
                   ) -> Iterator[tuple[SeriesStart, Iterator[tuple[int, np.ndarray]]]]:
    """Yield ``(header, frames)`` per recorded series; ``frames`` yields (number, frame).

    Parameters
    ----------
    path : str or PathLike
        A file written by :class:`Recorder`.
    series : int, optional
        Only this series id.

    Yields
    ------
    SeriesStart
        The series as recorded, header arrays (``arrays``) included.
    iterator of (int, numpy.ndarray)
        Its recorded frames in frame-number order, read block by block while iterated.

    Raises
    ------
    framescope.errors.FormatError
        The file is not a framescope recording.
    """
    from framescope.errors import FormatError

    with h5py.File(path, "r") as f:
        if f.attrs.get("framescope_recording") != 1:
            raise FormatError(path, "not a framescope live recording (attribute "
                              "framescope_recording missing)")
        heads = []
        for name in sorted(f, key=lambda n: (int(f[n].attrs["series"]), n)):
            g = f[name]
            sid = int(g.attrs["series"])
            if series is not None and sid != series:
                continue
            frames = g["frames"]
            arrays = {k: v[()] for k, v in g["arrays"].items()} if "arrays" in g else {}
            heads.append((name, SeriesStart(
                sid, tuple(frames.shape[1:]), frames.dtype, len(frames),
                tuple(int(v) for v in g.attrs["scan_shape"]), str(g.attrs["scan_order"]),
                json.loads(g.attrs["header"]), arrays)))
    for name, start in heads:
        yield start, _frames(path, name)


def _frames(path: str | os.PathLike[str], name: str, block: int = 256,
            ) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, frame) of the recorded frames of group ``name``, in order."""
    with h5py.File(path, "r") as f:
        frames, received = f[name]["frames"], f[name]["received"][()]
        for first in range(0, len(frames), block):
            got = received[first : first + block]
            if not got.any():
                continue
            data = frames[first : first + len(got)]
            for k in np.flatnonzero(got):
                yield first + int(k), data[k]
