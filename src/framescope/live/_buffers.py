"""Memory for frames waiting for the analysis: reused batch buffers, and a spill file.

Both are bounded; neither ever blocks the receiver thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque

import numpy as np

__all__ = ["Pool", "Spill"]

log = logging.getLogger(__name__)


class Pool:
    """At most ``buffers`` batch buffers of ``per_batch`` frames, reused.

    Kept from series to series of the same frames (a new buffer costs a page fault per
    4 KiB when first filled). Taken by the receiver thread only, given back by the analysis.
    """

    def __init__(self, per_batch: int, frame_shape: tuple[int, int], dtype: np.dtype,
                 buffers: int) -> None:
        self.per_batch, self.frame_shape, self.dtype = per_batch, frame_shape, dtype
        self.buffers = buffers
        self.free: deque[np.ndarray] = deque()  # (appends and pops are thread-safe)
        self.allocated = 0

    def fits(self, per_batch: int, frame_shape: tuple[int, int], dtype: np.dtype,
             buffers: int) -> bool:
        return (self.per_batch, self.frame_shape, self.dtype, self.buffers) == (
            per_batch, frame_shape, dtype, buffers)

    def adopt(self, other: Pool) -> None:
        """Take ``other``'s free buffers (given back by an analysis that has stopped) when
        they fit: a new analysis of the same source reuses memory already paged in. (Pages
        touched the first time cost ~10 µs each on a VM that returned them to its host:
        up to 3x the CPU per frame while a new pool grows.)"""
        if other is self or not other.fits(self.per_batch, self.frame_shape, self.dtype,
                                           self.buffers):
            return
        while other.free and self.allocated < self.buffers:
            self.free.append(other.free.popleft())  # (oldest first: the warm last)
            self.allocated += 1

    def take(self) -> np.ndarray | None:
        """A free buffer (the last given back: warm), a new one while fewer exist, or None."""
        if self.free:
            return self.free.pop()
        if self.allocated >= self.buffers:
            return None
        self.allocated += 1
        return np.empty((self.per_batch, *self.frame_shape), self.dtype)


class Spill:
    """Frames of one series in an unlinked temp file, read back in arrival order.

    One writer (receiver) appends with ``pwrite``; one reader (analysis) reads completed
    frames with ``preadv``, so neither waits on the other.
    """

    def __init__(self, frame_shape: tuple[int, int], dtype: np.dtype,
                 directory: str | None, limit_bytes: int) -> None:
        self.frame_bytes = int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
        self.directory, self.limit = directory, limit_bytes
        self.indices: list[int] = []
        self.written = 0  # frames completely written
        self.read = 0  # frames handed to the analysis
        self._file = None

    @property
    def pending(self) -> int:
        return self.written - self.read

    def write(self, index: int, frame: np.ndarray) -> bool:
        """Append a frame; False when the spill is full (or cannot be written)."""
        if (self.written + 1) * self.frame_bytes > self.limit:
            return False
        try:
            if self._file is None:
                # unlinked at once: nothing left behind, closed in close()
                self._file = tempfile.TemporaryFile(  # noqa: SIM115
                    prefix="framescope-spill-", dir=self.directory)
            os.pwrite(self._file.fileno(), np.ascontiguousarray(frame).data.cast("B"),
                      self.written * self.frame_bytes)
        except OSError as exc:
            log.error("spill file in %s failed (%s); dropping frames",  # noqa: TRY400
                      self.directory or "the temp dir", exc)
            self.limit = 0
            return False
        self.indices.append(index)
        self.written += 1  # after the write: the reader only sees whole frames
        return True

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out[:n]`` with the next spilled frames; their frame numbers (n ≤ len(out))."""
        n = min(len(out), self.pending)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        first = self.read
        got = os.preadv(self._file.fileno(), [out[:n].data.cast("B")],
                        first * self.frame_bytes)
        if got != n * self.frame_bytes:
            raise OSError(f"spill file: read {got} B of {n * self.frame_bytes}")
        self.read += n
        return np.asarray(self.indices[first : first + n], dtype=np.int64)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
