"""NumPy ``.npy`` files, memory-mapped: opening reads the header only."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from framescope.errors import FileSizeError, HeaderError
from framescope.io._base import FrameReader, row_pieces

__all__ = ["NpyReader"]


class NpyReader(FrameReader):
    """A 3D ``(frames, det_y, det_x)`` or 4D ``(scan_y, scan_x, det_y, det_x)`` ``.npy`` array."""

    format = "npy"
    suffixes = (".npy",)
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_mm",)

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
            except ValueError as e:
                raise HeaderError(path, f"not a valid .npy header: {e}") from None
            self._data_offset = f.tell()
        if len(shape) not in (3, 4):
            raise HeaderError(path, f"expected a 3D or 4D array, found shape {shape}")
        if dtype.kind not in "uif" or dtype.fields is not None:
            raise HeaderError(path, f"expected an integer or float dtype, found {dtype}")
        self._file_dtype = dtype
        self._shape = tuple(int(s) for s in shape)
        self._fortran = bool(fortran)
        self.dtype = dtype.newbyteorder("=")
        self.frame_shape = (self._shape[-2], self._shape[-1])
        self.n_frames = int(np.prod(self._shape[:-2]))
        self.scan_shape = (self._shape[0], self._shape[1]) if len(self._shape) == 4 else None
        self.metadata = {"fortran_order": self._fortran}
        expected = self._data_offset + int(np.prod(self._shape)) * dtype.itemsize
        found = os.stat(path).st_size
        if found != expected:
            raise FileSizeError(path, expected, found, f"array {self._shape} {dtype}")

    def _memmap(self) -> np.ndarray:
        mm = self.__dict__.get("_mm")
        if mm is None:
            mm = np.memmap(
                self.path, mode="r", dtype=self._file_dtype, offset=self._data_offset,
                shape=self._shape, order="F" if self._fortran else "C",
            )
            if not self._fortran:  # a free view; Fortran order would need a copy
                mm = mm.reshape((self.n_frames, *self.frame_shape))
            self._mm = mm
        return mm

    def view(self, start: int, stop: int) -> np.ndarray | None:
        """Zero-copy read-only view of frames ``start:stop`` (None for Fortran-ordered 4D)."""
        mm = self._memmap()
        return mm[start:stop] if mm.ndim == 3 else None

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        mm = self._memmap()
        if mm.ndim == 3:
            np.copyto(out, mm[start:stop], casting="unsafe")
            return
        for at, y0, y1, x0, x1 in row_pieces(start, stop, self._shape[1]):
            n = (y1 - y0) * (x1 - x0)
            out[at : at + n].reshape(y1 - y0, x1 - x0, *self.frame_shape)[...] = mm[y0:y1, x0:x1]
