"""The frames of the live series, kept in memory as they arrive (no panel here)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

__all__ = ["FrameStore"]


class FrameStore:
    """A ``(scan_y, scan_x, det_y, det_x)`` array of the current series, filled frame by
    frame, and which scan positions have arrived.

    :meth:`add` is the live run's ``on_frames`` hook (the analysis thread). A new series
    gets a new array, so jobs still reading the previous one are not disturbed.

    Parameters
    ----------
    max_bytes : int
        Largest series kept; a bigger one is refused with a message in :attr:`error`
        (the receiver and its counters go on).
    """

    def __init__(self, max_bytes: int = 4 * 2**30) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.series: int | None = None
        self.data: np.ndarray | None = None
        self._received: np.ndarray | None = None
        self.error = ""
        self.token = ""  # identifies the current series' array (a new one per series)
        self.calibration: Any = None  # the series' (ZMQSource(calibration=) + its header)

    def add(self, series: Any, frames: np.ndarray, positions: np.ndarray) -> None:
        """Copy ``frames`` to their flat scan ``positions`` of ``series`` (a live ``Series``)."""
        with self._lock:
            if series.series != self.series:
                self._begin(series)
            if self.data is None:
                return
            ny, nx, h, w = self.data.shape
            self.data.reshape(ny * nx, h, w)[positions] = frames
            self._received.reshape(-1)[positions] = True

    def _begin(self, series: Any) -> None:
        meta = series.meta
        shape = (*meta.scan_shape, *meta.frame_shape)
        nbytes = int(np.prod(shape)) * np.dtype(meta.dtype).itemsize
        self.series, self.token = series.series, uuid.uuid4().hex
        self.calibration = meta.calibration
        if nbytes > self.max_bytes:
            self.data = self._received = None
            self.error = (f"series {series.series}: {nbytes / 2**30:.1f} GiB of frames "
                          f"({shape}, {np.dtype(meta.dtype)}) exceed the live view's "
                          f"{self.max_bytes / 2**30:.1f} GiB (max_gib=)")
            return
        self.data = np.zeros(shape, dtype=meta.dtype)
        self._received = np.zeros(meta.scan_shape, dtype=bool)
        self.error = ""

    def received(self) -> np.ndarray | None:
        """A copy of the arrived positions (bool, scan shape), or None before a series."""
        with self._lock:
            return None if self._received is None else self._received.copy()

    def array(self, partition_mib: float = 16) -> xr.DataArray:
        """The current series' frames as a dask-backed DataArray (whole scan rows per
        chunk); positions that have not arrived are zeros."""
        with self._lock:
            data, token, cal = self.data, self.token, self.calibration
        if data is None:
            raise ValueError("no series is being kept")
        ny, nx, h, w = data.shape
        rows = max(1, int(partition_mib * 2**20 // max(1, nx * h * w * data.itemsize)))
        # dask copies a numpy array into its graph, and would hash it for a name: wrapped,
        # every task reads the frames there are when it runs
        lazy = da.from_array(_Frames(data), chunks=(min(rows, ny), nx, h, w),
                             name=f"live-{token}", asarray=False, meta=data[:0, :0, :0, :0])
        arr = xr.DataArray(lazy, dims=("scan_y", "scan_x", "det_y", "det_x"),
                           attrs={"source": f"live series {self.series}"})
        if cal is None:
            return arr
        from framescope.calibration import with_calibration

        return with_calibration(arr, cal)  # the dashboard shows a calibrated stream in units


class _Frames:
    """The store's array as dask sees it: sliced when a task runs, not copied up front."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.data[key]
