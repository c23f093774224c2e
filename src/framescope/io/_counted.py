"""Counted electrons (stempy's sparse HDF5 layout) opened as frames of counts.

The events are small (one uint32 per electron): they are read whole when the file is opened,
and every read densifies the requested frames into the caller's buffer, so any analysis runs
on counted data through ``framescope.open`` without a dense copy of the dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

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

    def __init__(self, path: str) -> None:
        from framescope.counting import load_counted

        self.path = os.fspath(path)
        counted = load_counted(self.path)
        self.offsets, self.indices = counted.offsets, counted.indices
        self.frame_shape = tuple(counted.frame_shape)
        self.scan_shape = tuple(counted.scan_shape)
        self.n_frames = counted.n_frames
        self.dtype = np.dtype(np.uint16)
        self.metadata: dict[str, Any] = {"events": int(counted.n_events),
                                         "counted": True}
        if counted.thresholds is not None:
            self.metadata["thresholds"] = counted.thresholds.to_json()

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        size = self.frame_shape[0] * self.frame_shape[1]
        flat = out.reshape(stop - start, size)
        flat[...] = 0
        lo, hi = self.offsets[start], self.offsets[stop]
        frame = np.repeat(np.arange(stop - start), np.diff(self.offsets[start:stop + 1]))
        np.add.at(flat, (frame, self.indices[lo:hi].astype(np.int64)), 1)
