"""Turn a :class:`FrameReader` into a lazy 4D ``xarray.DataArray`` backed by dask.

The dask graph holds the (small, picklable) reader and a slice per chunk; nothing of the data
is read or hashed when the array is built, so opening costs O(1) in the data size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from framescope.errors import ScanShapeError
from framescope.io._base import FrameReader, frame_runs, jsonable

__all__ = ["DIMS", "ReaderArray", "ScanLayout", "resolve_scan", "source_of", "to_dataarray"]

log = logging.getLogger(__name__)

DIMS = ("scan_y", "scan_x", "det_y", "det_x")
DEFAULT_PARTITION_MIB = 128


@dataclass(frozen=True, slots=True)
class ScanLayout:
    """How scan positions map to frames: position ``p`` (row-major) is frame ``p + sync_offset``.

    Frames outside ``[0, n_frames)`` (a negative offset pads leading positions) read as zeros.
    """

    scan: tuple[int, int]
    sync_offset: int = 0

    @property
    def n_positions(self) -> int:
        return self.scan[0] * self.scan[1]


def resolve_scan(
    reader: FrameReader, scan: tuple[int, int] | None, sync_offset: int = 0
) -> ScanLayout:
    """Choose and check the scan shape of a frame stack.

    ``scan`` (user) wins over the file's own scan shape; a square frame count is taken as a
    square scan. The scan must not need more frames than the file (after ``sync_offset``)
    holds; trailing surplus frames are ignored only when the scan shape was given.
    """
    n = reader.n_frames
    available = n - sync_offset
    if scan is not None:
        scan = (int(scan[0]), int(scan[1]))
        if min(scan) < 1:
            raise ScanShapeError(reader.path, scan, n, "scan dimensions must be >= 1")
        explicit = True
    elif reader.scan_shape is not None and sync_offset == 0:
        scan, explicit = reader.scan_shape, False
    else:
        side = math.isqrt(max(available, 0))
        if side < 1 or side * side != available:
            raise ScanShapeError(
                reader.path, (side, side), n,
                f"cannot infer the scan shape from {available} frames (sync_offset "
                f"{sync_offset}); pass scan=(ny, nx)",
            )
        scan, explicit = (side, side), False
    need = scan[0] * scan[1]
    if need > available:
        raise ScanShapeError(
            reader.path, scan, n,
            f"with sync_offset {sync_offset} only {available} frames are available",
        )
    if need < available:
        if not explicit:
            raise ScanShapeError(reader.path, scan, n, f"{available - need} frames left over")
        log.info("%s: %d trailing frames not in the %dx%d scan are ignored",
                 reader.path, available - need, *scan)
    return ScanLayout(scan, int(sync_offset))


class ReaderArray:
    """Array-like 4D view (scan_y, scan_x, det_y, det_x) of a reader for ``dask.array.from_array``.

    Thread-safe and picklable as long as the reader is.
    """

    def __init__(self, reader: FrameReader, layout: ScanLayout) -> None:
        self.reader = reader
        self.layout = layout
        self.shape = (*layout.scan, *reader.frame_shape)
        self.dtype = reader.dtype
        self.ndim = 4

    def read_positions(self, first: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames of scan positions ``first:stop`` (row-major) as ``(n, det_y, det_x)``."""
        n = stop - first
        if out is None:
            out = np.empty((n, *self.reader.frame_shape), dtype=self.dtype)
        lo = first + self.layout.sync_offset
        a, b = max(lo, 0), min(lo + n, self.reader.n_frames)
        if a >= b:
            out[...] = 0
            return out
        out[: a - lo] = 0
        out[b - lo :] = 0
        self.reader.read(a, b, out[a - lo : b - lo])
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (5 - len(key)) + key[i + 1 :]
        key = key + (slice(None),) * (4 - len(key))
        ny, nx = self.layout.scan
        ys = np.arange(ny)[key[0]]
        xs = np.arange(nx)[key[1]]
        ys1, xs1 = np.atleast_1d(ys), np.atleast_1d(xs)
        positions = (ys1[:, None] * nx + xs1[None, :]).ravel()
        out = np.empty((positions.size, *self.reader.frame_shape), dtype=self.dtype)
        for at, first, length in frame_runs(positions):
            self.read_positions(first, first + length, out[at : at + length])
        out = out.reshape(ys1.size, xs1.size, *self.reader.frame_shape)
        det_key = key[2:]
        if det_key != (slice(None), slice(None)):
            out = out[(slice(None), slice(None), *det_key)]
        squeeze = tuple(i for i, v in enumerate((ys, xs)) if np.ndim(v) == 0)
        return out.squeeze(axis=squeeze) if squeeze else out


def source_of(arr: xr.DataArray) -> ReaderArray | None:
    """The file source behind ``arr``, if ``arr`` still shows exactly what it reads.

    Lets tasks read partitions straight from the file (tiles, no dask copy); a sliced or
    transformed array has another shape or loses the encoding and goes through dask.
    """
    source = arr.encoding.get("framescope_source")
    # ``arr.compute()``/``load()`` keep the encoding but hold the frames in memory: those
    # are read from there, in chunks of their own
    if isinstance(source, ReaderArray) and source.shape == arr.shape and arr.chunks:
        return source
    return None


def default_chunks(
    shape: tuple[int, int, int, int], itemsize: int, chunks: Any, partition_mib: float
) -> tuple[tuple[int, ...], ...] | tuple[int, ...]:
    _, nx, h, w = shape
    if chunks is not None:
        if isinstance(chunks, dict):
            spec = tuple(chunks.get(d, -1) for d in DIMS)
            return da.core.normalize_chunks(spec, shape)
        if isinstance(chunks, int):  # scan rows per partition
            return ((chunks, nx, h, w))
        return da.core.normalize_chunks(chunks, shape)
    frame_bytes = h * w * itemsize
    target = max(partition_mib * 2**20, frame_bytes)
    row_bytes = nx * frame_bytes
    if row_bytes <= target:
        return (max(1, int(target // row_bytes)), nx, h, w)
    return (1, max(1, int(target // frame_bytes)), h, w)


def to_dataarray(
    reader: FrameReader,
    *,
    scan: tuple[int, int] | None = None,
    sync_offset: int = 0,
    chunks: Any = None,
    partition_mib: float = DEFAULT_PARTITION_MIB,
    options: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap ``reader`` as a lazy ``(scan_y, scan_x, det_y, det_x)`` DataArray.

    Parameters
    ----------
    reader : FrameReader
        The opened frame stack.
    scan : (int, int), optional
        Scan shape; default from the file, or a square scan.
    sync_offset : int
        Frames to skip (positive) or blank frames to insert (negative) before the scan.
    chunks : int, dict or tuple, optional
        Scan rows per partition (int), a dask chunk spec or a dict by dim name. Default:
        whole rows, about ``partition_mib`` MiB per partition.
    partition_mib : float
        Target partition size when ``chunks`` is not given.
    options : dict, optional
        Reader options, recorded in the token so different options give different graphs.
    """
    layout = resolve_scan(reader, scan, sync_offset)
    source = ReaderArray(reader, layout)
    chunk_spec = default_chunks(source.shape, reader.dtype.itemsize, chunks, partition_mib)
    name = "framescope-" + tokenize(reader.token(), layout, chunk_spec, options or {})
    data = da.from_array(
        source, chunks=chunk_spec, name=name, lock=False, asarray=False,
        inline_array=True, meta=np.empty((0, 0, 0, 0), dtype=reader.dtype),
    )
    coords = {
        dim: xr.Variable(dim, np.arange(n), attrs={"units": "px"})
        for dim, n in zip(DIMS, source.shape, strict=True)
    }
    attrs: dict[str, Any] = {
        "format": reader.format,
        "source": reader.path,
        "dtype": reader.dtype.name,
        "n_frames": reader.n_frames,
        "sync_offset": layout.sync_offset,
    }
    for key, value in jsonable(reader.metadata).items():
        attrs.setdefault(key, value)
    arr = xr.DataArray(data, dims=DIMS, coords=coords, attrs=attrs, name="frames")
    # lets the engine read partitions straight from the reader (tiles, no dask copy)
    arr.encoding["framescope_source"] = source
    return arr
