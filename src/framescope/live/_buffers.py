"""Memory for frames waiting for the analysis: reused batch buffers, a spill file, and
the compressed payloads of a chunk of frames waiting for the decoders.

All are bounded; none ever blocks the receiver thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.live import _decode

if TYPE_CHECKING:
    from framescope.live._codecs import Encoded

__all__ = ["Chunk", "Pool", "Spill"]

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


class Chunk:
    """Compressed payloads of up to ``CHUNK_FRAMES`` frames of one batch, decoded together.

    The payloads are joined into one buffer for the kernel by the decoding thread (one
    copy, sized once), not by the receiver thread as they come: appending each to a
    growing buffer there reallocated and copied it again on most appends. Until then the
    payloads view their messages, which stay alive (a few kB each, ``CHUNK_FRAMES``).
    """

    __slots__ = ("blobs", "codecs", "ends", "indices", "joined", "size", "slots", "starts")

    def __init__(self) -> None:
        self.blobs: list[memoryview] = []
        self.joined: bytes | None = None  # the payloads already joined (compiled receive)
        self.size = 0
        self.slots: list[int] = []
        self.indices: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.codecs: list[str] = []

    def add(self, slot: int, index: int, frame: Encoded) -> None:
        blob = frame.blob  # (bytes, format "B": its len is its size)
        self.starts.append(self.size)
        self.size += len(blob)
        self.ends.append(self.size)
        self.blobs.append(blob)
        self.slots.append(slot)
        self.indices.append(index)
        self.codecs.append(frame.codec)

    def run(self, batch: Any) -> tuple[Any, Chunk, np.ndarray]:
        """Decode into the batch's buffer (a pool thread, or the receiver's)."""
        frames = batch.frames
        joined = self.joined if self.joined is not None else b"".join(self.blobs)
        self.blobs = []  # (the messages may go now)
        try:
            status = _decode.decode_chunk(
                np.array([_decode.CODE[c] for c in self.codecs], np.int8),
                np.frombuffer(joined, np.uint8), np.array(self.starts, np.int64),
                np.array(self.ends, np.int64), frames.reshape(len(frames), -1).view(np.uint8),
                np.array(self.slots, np.int64), frames.dtype.itemsize)
        except Exception:  # a bug must not lose the batch: its frames count as malformed
            log.exception("decoding a chunk of series %d failed", batch.series)
            status = np.full(len(self.slots), -99, np.int64)
        return batch, self, status
