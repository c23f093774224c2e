"""The sparse result of electron counting: event pixel indices per frame, CSR-style."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from framescope.errors import CountingError

if TYPE_CHECKING:
    import xarray as xr

    from framescope.calibration import Calibration
    from framescope.counting._thresholds import Thresholds

__all__ = ["CountedData", "CountingError"]

# to_dense refuses to allocate more than this unless told otherwise
_DENSE_LIMIT = 2 * 2**30


@dataclass(frozen=True, eq=False)
class CountedData:
    """Counted electrons of a scan: for every frame, the pixels an electron hit.

    The layout is CSR-like: the events of flat (row-major) frame ``i`` are
    ``indices[offsets[i]:offsets[i + 1]]``, flat row-major pixel indices
    ``det_y * frame_shape[1] + det_x``. A pixel may repeat within a frame: two electrons
    found there by ``count_electrons(method="fit")``, or data read from a file that stores
    several frames per scan position.

    Attributes
    ----------
    scan_shape : (int, int)
        ``(scan_y, scan_x)``; a stack of frames counts as a ``1 x n`` scan.
    frame_shape : (int, int)
        ``(det_y, det_x)``.
    offsets : ndarray of int64, shape (n_frames + 1,)
        Start of every frame's events in ``indices``; ``offsets[0] == 0``.
    indices : ndarray of uint32, shape (n_events,)
        Event pixels.
    centroids : ndarray of float32, shape (n_events, 2), optional
        Sub-pixel ``(y, x)`` of every event in detector px, pixel centres on integers.
    thresholds : Thresholds, optional
        The thresholds the events were found with.
    calibration : Calibration, optional
        The counted array's calibration, if it had one.
    """

    scan_shape: tuple[int, int]
    frame_shape: tuple[int, int]
    offsets: np.ndarray
    indices: np.ndarray
    centroids: np.ndarray | None = None
    thresholds: Thresholds | None = None
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        n = self.scan_shape[0] * self.scan_shape[1]
        offsets, indices = self.offsets, self.indices
        if offsets.dtype != np.int64 or offsets.shape != (n + 1,):
            raise CountingError(f"CountedData: offsets must be int64 of shape ({n + 1},) for "
                                f"scan {self.scan_shape}, found {offsets.dtype} {offsets.shape}")
        if indices.dtype != np.uint32 or indices.ndim != 1:
            raise CountingError(f"CountedData: indices must be 1D uint32, found "
                                f"{indices.dtype} {indices.shape}")
        if offsets[0] != 0 or offsets[-1] != len(indices) or np.any(np.diff(offsets) < 0):
            raise CountingError(f"CountedData: offsets must rise from 0 to the {len(indices)} "
                                f"events, found {offsets[0]}..{offsets[-1]}")
        size = self.frame_shape[0] * self.frame_shape[1]
        if len(indices) and int(indices.max()) >= size:
            raise CountingError(f"CountedData: event pixel {int(indices.max())} outside the "
                                f"{self.frame_shape} frame")
        if self.centroids is not None and (self.centroids.shape != (len(indices), 2)
                                           or self.centroids.dtype != np.float32):
            raise CountingError(f"CountedData: centroids must be float32 of shape "
                                f"({len(indices)}, 2), found {self.centroids.dtype} "
                                f"{self.centroids.shape}")

    @property
    def n_frames(self) -> int:
        """Number of frames (scan positions)."""
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        """Total number of events."""
        return len(self.indices)

    @property
    def events_per_frame(self) -> np.ndarray:
        """Events of every frame, int64 of shape ``scan_shape``."""
        return np.diff(self.offsets).reshape(self.scan_shape)

    @property
    def nbytes(self) -> int:
        """Bytes held by offsets, indices and centroids."""
        extra = 0 if self.centroids is None else self.centroids.nbytes
        return self.offsets.nbytes + self.indices.nbytes + extra

    def _flat(self, frame: int | tuple[int, int]) -> int:
        if isinstance(frame, tuple):
            iy, ix = frame
            if not (0 <= iy < self.scan_shape[0] and 0 <= ix < self.scan_shape[1]):
                raise IndexError(f"scan position {frame} outside the scan {self.scan_shape}")
            return int(iy) * self.scan_shape[1] + int(ix)
        i = int(frame)
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"frame {frame} outside the {self.n_frames} frames")
        return i % self.n_frames

    def events(self, frame: int | tuple[int, int]) -> np.ndarray:
        """Event pixel indices of one frame (flat index or ``(scan_y, scan_x)``)."""
        i = self._flat(frame)
        return self.indices[self.offsets[i]:self.offsets[i + 1]]

    def frame(self, frame: int | tuple[int, int], dtype: str = "uint16") -> np.ndarray:
        """One frame as dense counts of shape ``frame_shape``.

        Parameters
        ----------
        frame : int or (int, int)
            Flat frame index or scan position.
        dtype : str
            Dtype of the counts.
        """
        size = self.frame_shape[0] * self.frame_shape[1]
        counts = np.bincount(self.events(frame), minlength=size)
        return counts.astype(dtype).reshape(self.frame_shape)

    def to_dense(self, dtype: str = "uint16", *, max_bytes: int = _DENSE_LIMIT) -> np.ndarray:
        """All frames as dense counts, shape ``scan_shape + frame_shape``.

        Parameters
        ----------
        dtype : str
            Dtype of the counts (counts are at most the frames per scan position).
        max_bytes : int
            Refuse larger results (2 GiB by default); see :meth:`to_dataarray` for a lazy
            one.
        """
        size = self.frame_shape[0] * self.frame_shape[1]
        need = self.n_frames * size * np.dtype(dtype).itemsize
        if need > max_bytes:
            raise MemoryError(f"to_dense: {self.scan_shape + self.frame_shape} {dtype} needs "
                              f"{need} bytes, more than max_bytes={max_bytes}; use "
                              f"to_dataarray() for a lazy array")
        return self._dense_rows(0, self.scan_shape[0], np.dtype(dtype))

    def _dense_rows(self, r0: int, r1: int, dtype: np.dtype) -> np.ndarray:
        size = self.frame_shape[0] * self.frame_shape[1]
        nx = self.scan_shape[1]
        lo, hi = self.offsets[r0 * nx], self.offsets[r1 * nx]
        frame_of = np.repeat(np.arange(r0 * nx, r1 * nx) - r0 * nx,
                             np.diff(self.offsets[r0 * nx:r1 * nx + 1]))
        flat = frame_of * size + self.indices[lo:hi]
        out = np.bincount(flat, minlength=(r1 - r0) * nx * size).astype(dtype)
        return out.reshape(r1 - r0, nx, *self.frame_shape)

    def to_dataarray(self, rows: int | None = None, dtype: str = "uint16") -> xr.DataArray:
        """A lazy dense ``(scan_y, scan_x, det_y, det_x)`` DataArray of the counts.

        Each dask chunk of ``rows`` scan rows (default: about 128 MiB) is expanded only when
        computed, so framescope's analyses run on counted data as on frames.
        """
        import dask.array as da
        import xarray as xr

        ny, nx = self.scan_shape
        h, w = self.frame_shape
        dt = np.dtype(dtype)
        if rows is None:
            rows = max(1, min(ny, (128 * 2**20) // max(1, nx * h * w * dt.itemsize)))
        chunks = ((rows,) * (ny // rows) + ((ny % rows,) if ny % rows else ()), (nx,), (h,),
                  (w,))

        def block(block_info: dict | None = None) -> np.ndarray:
            r0, r1 = block_info[None]["array-location"][0]
            return self._dense_rows(r0, r1, dt)

        data = da.map_blocks(block, chunks=chunks, dtype=dt, meta=np.empty((0,) * 4, dt))
        coords = {d: np.arange(n) for d, n in zip(("scan_y", "scan_x", "det_y", "det_x"),
                                                  (ny, nx, h, w), strict=True)}
        arr = xr.DataArray(data, dims=tuple(coords), coords=coords, name="counts")
        if self.calibration is None:
            return arr
        from framescope.calibration import with_calibration

        return with_calibration(arr, self.calibration)
