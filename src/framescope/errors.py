"""Exception types of framescope.

Every error names the file (or message) it is about and says what was expected versus what
was found. Each class also inherits the builtin exception users already catch.
"""

from __future__ import annotations

import os

__all__ = [
    "ClusterError",
    "ClusterVersionError",
    "CompressionPluginError",
    "CountingError",
    "DatasetNotFoundError",
    "DimensionError",
    "FileSizeError",
    "FormatError",
    "FramescopeError",
    "HeaderError",
    "MaskError",
    "ParameterError",
    "ScanShapeError",
    "UnknownFormatError",
]


class FramescopeError(Exception):
    """Base class of all framescope errors."""


class FormatError(FramescopeError, ValueError):
    """A file does not hold what its format promises."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


class FileSizeError(FormatError):
    """A file's size does not match the shape and dtype it is opened with."""

    def __init__(
        self, path: str | os.PathLike[str], expected: int, found: int, detail: str = ""
    ) -> None:
        what = "truncated" if found < expected else "longer than expected"
        extra = f" ({detail})" if detail else ""
        super().__init__(
            path, f"file is {what}: expected {expected} bytes{extra}, found {found} bytes"
        )
        self.expected, self.found = expected, found


class HeaderError(FormatError):
    """A header (MIB frame header, npy header, JSON sidecar, …) is malformed."""


class DatasetNotFoundError(FormatError, KeyError):
    """An HDF5/Zarr container holds no dataset usable as a frame stack."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CompressionPluginError(FormatError):
    """A compressed dataset needs an HDF5 filter plugin that is not available."""


class ScanShapeError(FramescopeError, ValueError):
    """A scan shape does not fit the number of frames in a file."""

    def __init__(self, path: str, scan: tuple[int, int], n_frames: int, detail: str = "") -> None:
        need = scan[0] * scan[1]
        extra = f"; {detail}" if detail else ""
        super().__init__(
            f"{path}: scan shape {scan[0]}x{scan[1]} needs {need} frames, "
            f"found {n_frames} frames{extra}"
        )
        self.path, self.scan, self.n_frames = path, scan, n_frames


class UnknownFormatError(FramescopeError, ValueError):
    """No reader recognises a file."""


class MaskError(FramescopeError, ValueError):
    """A virtual-detector mask is invalid, or empty or misshapen on a detector."""


class DimensionError(FramescopeError, ValueError):
    """A DataArray lacks the ``(scan_y, scan_x, det_y, det_x)`` dims framescope needs."""


class ClusterError(FramescopeError, ConnectionError):
    """A dask scheduler cannot be reached, or was lost before a job finished."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"dask scheduler {address}: {message}")
        self.address = address


class ClusterVersionError(FramescopeError, ImportError):
    """The workers of a dask cluster lack framescope, or have an incompatible version."""

    def __init__(self, address: str, expected: str, found: dict[str, str | None]) -> None:
        shown = ", ".join(f"{w}: {v or 'not importable'}" for w, v in sorted(found.items()))
        super().__init__(
            f"dask scheduler {address}: workers need framescope compatible with {expected} "
            f"(same major.minor), found {shown}; install the same framescope in the "
            f"workers' environment"
        )
        self.address, self.expected, self.found = address, expected, found


class CountingError(FramescopeError, ValueError):
    """Input to electron counting (frames, dark reference, thresholds) does not fit."""


class ParameterError(FramescopeError, ValueError):
    """A scan parameter update is invalid: not JSON-able, or rejected by its model."""
