"""The reader protocol: a file seen as a flat stack of detector frames.

Every format module provides a :class:`FrameReader` subclass. A reader is small and
picklable: it holds paths and parsed header facts, never an open handle (handles are opened
lazily per process and dropped on pickling), so a reader can travel to dask workers inside
a task and read its own slice there.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["FrameReader", "frame_runs", "jsonable", "row_pieces"]


class FrameReader(abc.ABC):
    """A read-only stack of ``n_frames`` detector frames of ``frame_shape`` in a file.

    Subclasses set the instance attributes in ``__init__`` (reading headers only: opening
    must cost O(1) in the data size) and implement :meth:`_read`.

    Attributes
    ----------
    path : str
        The file (or directory) the frames live in.
    n_frames : int
        Number of frames stored.
    frame_shape : tuple of int
        ``(det_y, det_x)`` of one frame.
    dtype : numpy.dtype
        Native-endian dtype of the frames as returned by :meth:`read`.
    scan_shape : tuple of int or None
        ``(scan_y, scan_x)`` when the file itself says it (a 4D dataset, a header).
    metadata : dict
        Detector metadata found in the file; values are JSON-able scalars, strings or lists.
    calibration_fields : dict
        Physical calibration found in the file: :class:`~framescope.calibration.Calibration`
        field name -> ``(value, where)``, the value in SI units (or a string with a unit)
        and ``where`` naming the file and field it was read from (``"scan_master.h5:
        /entry/instrument/detector/detector_distance"``). Empty when the file has none.
    calibration_defaults : dict
        Like ``calibration_fields``, for known properties of the detector that the file does
        not store (a Medipix3's 55 µm pixels). ``framescope.open`` uses them only when some
        calibration is read or given, below everything else.
    """

    #: short format name, e.g. ``"mib"``; used by ``framescope.open(format=...)``
    format: ClassVar[str]
    #: file suffixes that make :meth:`guess_can_open` answer yes
    suffixes: ClassVar[tuple[str, ...]] = ()

    path: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype
    scan_shape: tuple[int, int] | None = None
    metadata: dict[str, Any]
    calibration_fields: dict[str, tuple[Any, str]] = {}  # noqa: RUF012 (never mutated)
    calibration_defaults: dict[str, tuple[Any, str]] = {}  # noqa: RUF012 (never mutated)

    # names of attributes holding per-process handles; dropped when pickled
    _handle_attrs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        """Cheap check (suffix, magic bytes) whether this reader recognises ``path``."""
        return Path(path).suffix.lower() in cls.suffixes

    @abc.abstractmethod
    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy frames ``start:stop`` (``0 <= start < stop <= n_frames``) into ``out``."""

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read frames ``start:stop`` into ``out`` (allocated when None) and return it.

        Parameters
        ----------
        start, stop : int
            Frame range; must lie within ``[0, n_frames]``.
        out : numpy.ndarray, optional
            C-contiguous buffer of shape ``(stop - start, *frame_shape)`` and ``self.dtype``,
            reused by callers that read tile after tile.
        """
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(
                f"{self.path}: frame range {start}:{stop} outside the {self.n_frames} frames"
            )
        shape = (stop - start, *self.frame_shape)
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype:
            raise ValueError(
                f"out buffer: expected shape {shape} dtype {self.dtype}, "
                f"found {out.shape} {out.dtype}"
            )
        if stop > start:
            self._read(start, stop, out)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data (excluding headers)."""
        return self.n_frames * int(np.prod(self.frame_shape)) * self.dtype.itemsize

    def token(self) -> tuple[Any, ...]:
        """What identifies the data: class, path, file size and mtime, header facts.

        Cheap (one ``stat``), so opening stays O(1); used to name dask graphs and, later, to
        key caches.
        """
        st = os.stat(self.path)
        return (
            type(self).__qualname__, os.path.abspath(self.path), st.st_size, st.st_mtime_ns,
            self.n_frames, self.frame_shape, self.dtype.str,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._handle_attrs:
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.path!r}: {self.n_frames} frames of "
            f"{self.frame_shape[0]}x{self.frame_shape[1]} {self.dtype}>"
        )


def frame_runs(frames: np.ndarray) -> list[tuple[int, int, int]]:
    """Split ascending-by-one runs of frame indices.

    Returns ``(position, first_frame, length)`` triples where ``position`` indexes into
    ``frames``; lets readers serve any fancy selection with few contiguous reads.
    """
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [frames.size]))
    return [(int(s), int(frames[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Keep metadata values that xarray attrs and NetCDF can hold (scalars, str, 1D lists)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            if value.ndim == 0:
                value = value.item()
            elif value.ndim == 1 and value.size <= 64:
                value = value.tolist()
            else:
                continue
        if isinstance(value, str | int | float | bool) or (
            isinstance(value, list) and all(isinstance(v, int | float | str) for v in value)
        ):
            out[key] = value
    return out


def row_pieces(start: int, stop: int, nx: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Split flat frames ``start:stop`` of a row-major ``(ny, nx)`` scan into boxes.

    Yields ``(pos, y0, y1, x0, x1)``: rows ``y0:y1`` and columns ``x0:x1`` fill
    ``out[pos:]``. At most three pieces: a partial first row, the full rows, a partial last
    row, so 4D containers (HDF5, Zarr, Fortran-ordered npy) serve a frame range in few reads.
    """
    pos = 0
    y0, x0 = divmod(start, nx)
    y1, x1 = divmod(stop, nx)
    if y0 == y1:
        if x1 > x0:
            yield 0, y0, y0 + 1, x0, x1
        return
    if x0:
        yield 0, y0, y0 + 1, x0, nx
        pos, y0 = nx - x0, y0 + 1
    if y1 > y0:
        yield pos, y0, y1, 0, nx
        pos += (y1 - y0) * nx
    if x1:
        yield pos, y1, y1 + 1, 0, x1
