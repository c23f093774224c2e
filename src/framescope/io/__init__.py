"""Readers: one module per format, each a :class:`FrameReader`; ``open`` picks one."""

from framescope.io._base import FrameReader
from framescope.io._export import save, write_netcdf
from framescope.io._lazy import DIMS, ReaderArray, ScanLayout, to_dataarray
from framescope.io._open import from_array, open
from framescope.io._registry import ENTRY_POINT_GROUP, available_readers, reader_for

__all__ = [
    "DIMS",
    "ENTRY_POINT_GROUP",
    "FrameReader",
    "ReaderArray",
    "ScanLayout",
    "available_readers",
    "from_array",
    "open",
    "reader_for",
    "save",
    "to_dataarray",
    "write_netcdf",
]
