"""Counted electrons (stempy's sparse HDF5 layout) opened as frames of counts.

The events are small (one uint32 per electron, kept as uint16 on detectors of up to 65536
pixels): they are read whole when the file is opened (and once per worker process).
``read_events`` hands them out as they are: the engine runs tiles of events through the
UDFs' sparse kernels (virtual images, COM, sum frames) and densifies a tile only for a UDF
that needs frames. ``read_bits`` gives the same frames as bit planes (one bit per pixel),
built once per process on first use, for the single-valued virtual detectors
(``framescope.udf._bits``). ``read`` densifies the requested frames
into the caller's buffer, so dask and every other consumer see plain frames of counts.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framescope.errors import FormatError
from framescope.io._base import FrameReader

__all__ = ["CountedReader"]


class CountedReader(FrameReader):
    """Counted electrons written by :func:`framescope.counting.save_counted` or stempy,
    read as ``uint16`` frames of counts (the events of each scan position summed)."""

    format: ClassVar[str] = "counted"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        if Path(path).suffix.lower() not in cls.suffixes or not os.path.isfile(path):
            return False
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return "electron_events/frames" in f
        except OSError:
            return False

    # the events are dropped when the reader is pickled (a task ships the path, never
    # the events) and loaded again, once per process, on the first read there
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_events", "_bits")

    def __init__(self, path: str) -> None:
        from framescope.counting import load_counted

        self.path = os.fspath(path)
        counted = load_counted(self.path)
        self.frame_shape = tuple(counted.frame_shape)
        self._events: tuple[np.ndarray, np.ndarray] | None = (
            counted.offsets, _narrow(counted.indices, self.frame_shape))
        self.scan_shape = tuple(counted.scan_shape)
        self.n_frames = counted.n_frames
        self.n_events = int(counted.n_events)
        self.dtype = np.dtype(np.uint16)
        self.metadata: dict[str, Any] = {"events": self.n_events, "counted": True}
        if counted.thresholds is not None:
            self.metadata["thresholds"] = counted.thresholds.to_json()

    def _loaded(self) -> tuple[np.ndarray, np.ndarray]:
        events = getattr(self, "_events", None)
        if events is None:
            with _load_lock:  # threads of one process load the file once
                events = getattr(self, "_events", None)
                if events is None:
                    from framescope.counting import load_counted

                    counted = load_counted(self.path)
                    if (counted.n_frames, tuple(counted.frame_shape)) != (
                            self.n_frames, self.frame_shape):
                        raise FormatError(self.path, f"changed since it was opened: "
                                          f"expected {self.n_frames} frames of "
                                          f"{self.frame_shape}, found {counted.n_frames} of "
                                          f"{tuple(counted.frame_shape)}")
                    events = self._events = (counted.offsets,
                                             _narrow(counted.indices, self.frame_shape))
        return events

    def read_events(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, None]:
        """The events of frames ``start:stop``, without densifying them.

        Returns
        -------
        offsets : ndarray of int64, shape (stop - start + 1,)
            Start of every frame's events in ``indices``, from 0.
        indices : ndarray of uint16 (frames of up to 65536 pixels) or uint32
            Flat pixel index of every event (a view of the events read on opening).
        values : None
            One count per event.
        """
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"{self.path}: frame range {start}:{stop} outside the "
                             f"{self.n_frames} frames")
        offsets, indices = self._loaded()
        part = offsets[start : stop + 1]
        return part - part[0], indices[part[0] : part[-1]], None

    def read_bits(self, start: int, stop: int) -> np.ndarray | None:
        """Frames ``start:stop`` as bit planes, or None where the file's frames are not kept
        as bit planes.

        The planes of all frames are built on the first call in a process (a pass over the
        events, ~1 ns each) and kept while the reader lives. They are kept only for frames
        of at least :data:`BITS_MIN_DENSITY` events per pixel, where they take at most
        twice the memory of uint16 events (below that the event kernels are cheap anyway),
        and only if no pixel holds two events of one frame (several frames per scan
        position in a stempy file can).

        Returns
        -------
        ndarray of uint64, shape (stop - start, words), or None
            Bit ``p % 64`` of word ``p // 64`` of row ``f`` is set where frame
            ``start + f`` has an event on flat pixel ``p`` (a view: do not write).
        """
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"{self.path}: frame range {start}:{stop} outside the "
                             f"{self.n_frames} frames")
        bits = getattr(self, "_bits", None)
        if bits is None:
            pixels = self.frame_shape[0] * self.frame_shape[1]
            if self.n_events < BITS_MIN_DENSITY * pixels * max(1, self.n_frames):
                bits = self._bits = False
            else:
                offsets, indices = self._loaded()
                with _load_lock:
                    bits = getattr(self, "_bits", None)
                    if bits is None:
                        from framescope.udf._bits import events_to_bits, words_per_frame

                        planes = np.empty((self.n_frames, words_per_frame(pixels)),
                                          dtype=np.uint64)
                        binary = events_to_bits(offsets, indices, planes)
                        bits = self._bits = planes if binary else False
        return None if bits is False else bits[start:stop]

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        offsets, indices = self._loaded()
        size = self.frame_shape[0] * self.frame_shape[1]
        flat = out.reshape(-1)
        flat[...] = 0
        lo, hi = offsets[start], offsets[stop]
        frame = np.repeat(np.arange(stop - start), np.diff(offsets[start : stop + 1]))
        # np.add.at, not fancy +=: a pixel may repeat within a frame (several frames per
        # scan position in the file)
        np.add.at(flat, frame * size + indices[lo:hi], 1)


_load_lock = threading.Lock()
# events per pixel from which read_bits keeps bit planes: 1/32 (a plane then takes at most
# twice the memory of uint16 events, and AND + popcount beats a table lookup per event)
BITS_MIN_DENSITY = 1 / 32


def _narrow(indices: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """The event pixel indices as uint16 when a frame has at most 65536 pixels.

    Converted once per process, on loading: every event kernel then reads half the bytes
    (the one-mask ring kernel ran 0.50 vs 1.3 ns per event on one core, 256x256 frames),
    and the events of a process take half the memory. ``CountedData`` has checked that
    every index is inside the frame.
    """
    if frame_shape[0] * frame_shape[1] > 0x10000 or indices.dtype.itemsize <= 2:
        return indices
    return indices.astype(np.uint16)
