"""Decode compressed frames without the GIL, straight into batch buffers, on a thread pool.

The C functions of bitshuffle's extension (its LZ4 block decoder and its bit transpose,
the same code that ``bitshuffle.decompress_lz4`` runs) are called from numba kernels that
release the GIL: the receiver thread keeps parsing messages while pool threads decode, and
each frame is written once, into its slot of the batch buffer. The kernels walk the HDF5
filter framing themselves and check every length against the payload before a C call
reads it (the C code trusts them). Without bitshuffle's library or numba, frames are
decoded by :func:`framescope.live._codecs.decode` on the receiver thread, as before.

Layout (HDF5 bitshuffle filter, ``bslz4``): optional 12-byte header (u64 BE uncompressed
bytes, u32 BE block bytes), then per block of ``block`` elements a u32 BE compressed length
and an LZ4 block of the bit-transposed block; a last block of ``n % block`` rounded down to
a multiple of 8 elements; the final ``n % 8`` elements stored as they are.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numba
import numpy as np
from numba import types

from framescope.live._untrans import untrans16_64

__all__ = ["CODE", "DecodePool", "available", "decode_chunk", "error_message"]

log = logging.getLogger(__name__)

#: kernel codec numbers
CODE = {"bslz4": 1, "lz4": 2, "lz4-h5": 3}

# error codes the kernels return, and what they mean
_ERRORS = {
    -1: "truncated, the payload ends inside block headers",
    -2: "truncated block: a block's length runs past the payload",
    -3: "corrupt data: an LZ4 block does not decode to its size",
    -4: "payload length does not match its blocks",
    -5: "header's uncompressed size differs from the frame's",
    -6: "header's block size is not a positive multiple of 8 elements",
    -7: "payload shorter than its 12-byte header",
}


def error_message(codec: str, code: int, nbytes: int, found: int) -> str:
    """The malformed-message reason for a kernel's error ``code``."""
    what = _ERRORS.get(code, f"error {code}")
    return f"{codec}: {what} ({found} B payload for a {nbytes} B frame)"


def _load_library() -> bool:
    """Make bitshuffle's C symbols known to numba's linker; False when unavailable."""
    try:
        import bitshuffle.ext
        import llvmlite.binding as llvm
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    try:
        llvm.load_library_permanently(bitshuffle.ext.__file__)
    except RuntimeError as exc:  # pragma: no cover
        log.warning("bitshuffle's library cannot be loaded (%s); frames are decoded on the "
                    "receiver thread", exc)
        return False
    return True


_LOADED = _load_library()
# resolved by symbol name when compiled: the kernels stay cacheable (a ctypes function
# object would be a "dynamic global" and recompile in every process, ~3 s)
_lz4 = types.ExternalFunction(
    "LZ4_decompress_safe", types.int32(types.uintp, types.uintp, types.int32, types.int32))
_untrans = types.ExternalFunction(
    "bshuf_untrans_bit_elem", types.int64(types.uintp, types.uintp, types.uintp, types.uintp))


@numba.njit(nogil=True, cache=True)
def _u32(src: Any, pos: int) -> int:
    """The big-endian u32 at ``src[pos]``."""
    return ((np.int64(src[pos]) << 24) | (np.int64(src[pos + 1]) << 16)
            | (np.int64(src[pos + 2]) << 8) | np.int64(src[pos + 3]))


@numba.njit(nogil=True, cache=True)
def _bslz4(src: Any, pos: int, end: int, row: Any, itemsize: int, scratch: Any) -> int:
    nbytes = row.size
    n = nbytes // itemsize
    block = max(8, (8192 // itemsize) // 8 * 8)  # bitshuffle's default
    if end - pos >= 12 and _u32(src, pos) == 0:  # the optional header (see _codecs)
        if ((_u32(src, pos) << 32) | _u32(src, pos + 4)) != nbytes:
            return -5
        block_bytes = _u32(src, pos + 8)
        if block_bytes == 0 or block_bytes % (8 * itemsize):
            return -6
        block = block_bytes // itemsize
        pos += 12
    full = n // block
    last = n % block
    last -= last % 8
    src_at, row_at, tmp_at = src.ctypes.data, row.ctypes.data, scratch.ctypes.data
    off = 0
    for b in range(full + (1 if last else 0)):
        size = (block if b < full else last) * itemsize
        if pos + 4 > end:
            return -1
        clen = _u32(src, pos)
        pos += 4
        if clen > end - pos:
            return -2
        if size > scratch.size or _lz4(src_at + pos, tmp_at, clen, size) != size:
            return -3
        if itemsize == 2 and size % 128 == 0:  # whole steps of 64 pixels (see _untrans)
            nb = size // 16
            for c in range(0, nb, 8):
                untrans16_64(scratch, c, nb, row, off + 16 * c)
        else:
            _untrans(tmp_at, row_at + off, size // itemsize, itemsize)
        pos += clen
        off += size
    rest = nbytes - off  # the last n % 8 elements, as they are
    if end - pos != rest:
        return -4
    row[off:] = src[pos:end]
    return 0


@numba.njit(nogil=True, cache=True)
def _lz4_h5(src: Any, pos: int, end: int, row: Any) -> int:
    nbytes = row.size
    if end - pos < 12:
        return -7
    if ((_u32(src, pos) << 32) | _u32(src, pos + 4)) != nbytes:
        return -5
    block = _u32(src, pos + 8)
    if block == 0:
        block = nbytes
    pos += 12
    src_at, row_at = src.ctypes.data, row.ctypes.data
    off = 0
    while off < nbytes:
        want = min(block, nbytes - off)
        if pos + 4 > end:
            return -1
        clen = _u32(src, pos)
        pos += 4
        if clen > end - pos:
            return -2
        if clen == want:  # stored as it is when compression did not pay
            row[off : off + want] = src[pos : pos + want]
        elif _lz4(src_at + pos, row_at + off, clen, want) != want:
            return -3
        pos += clen
        off += want
    return 0 if pos == end else -4


@numba.njit(nogil=True, cache=True)
def _frames(codes: Any, src: Any, starts: Any, ends: Any, out: Any, slots: Any,
            itemsize: int, status: Any) -> None:
    scratch = np.empty(out.shape[1], np.uint8)  # one block at most
    for k in range(len(slots)):
        row = out[slots[k]]
        code, pos, end = codes[k], starts[k], ends[k]
        if code == 1:
            status[k] = _bslz4(src, pos, end, row, itemsize, scratch)
        elif code == 2:
            got = _lz4(src.ctypes.data + pos, row.ctypes.data, end - pos, row.size)
            status[k] = 0 if got == row.size else -3
        else:
            status[k] = _lz4_h5(src, pos, end, row)


def available() -> bool:
    """Whether frames can be decoded by the GIL-free kernels here."""
    return _LOADED


def decode_chunk(codes: np.ndarray, src: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 out: np.ndarray, slots: np.ndarray, itemsize: int) -> np.ndarray:
    """Decode payloads ``src[starts[k]:ends[k]]`` into ``out[slots[k]]`` (bytes of a frame).

    Returns the status of each (0, or a negative error code, see :func:`error_message`).
    The GIL is released while decoding.
    """
    status = np.empty(len(slots), np.int64)
    _frames(codes, src, starts, ends, out, slots, itemsize, status)
    return status


def warm() -> None:
    """Compile (or load from numba's cache) the kernel for the array types receivers pass.

    Called before a receiver connects: the first compile takes seconds, and meanwhile any
    other thread that decodes (a status message's latest frame) waits on numba's lock, and
    a connected socket would queue its share of the stream unread.
    """
    empty = np.empty(0, np.int64)
    for src in (np.frombuffer(bytearray(), np.uint8), np.frombuffer(b"", np.uint8)):
        decode_chunk(np.empty(0, np.int8), src, empty, empty, np.empty((0, 1), np.uint8),
                     empty, 1)


class DecodePool:
    """Threads that run decode tasks; a task is a callable, its result goes to ``done``.

    Parameters
    ----------
    threads : int
        Number of decoding threads (>= 1).

    The receiver thread puts tasks and reads ``done`` (a task's return value, or the
    exception it raised), so all bookkeeping stays on the receiver thread.
    """

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"decode threads: expected >= 1, found {threads}")
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"framescope-decode-{i}",
                                          daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, task: Any) -> None:
        if self._closed:  # (a closed pool decodes on the caller's thread: nothing waits)
            self.done.put(task())
        else:
            self.tasks.put(task)

    def _work(self) -> None:
        while (task := self.tasks.get()) is not None:
            try:
                self.done.put(task())
            except BaseException as exc:
                self.done.put(exc)

    def close(self) -> None:
        """Stop the threads once the queued tasks are done."""
        self._closed = True
        for _ in self._threads:
            self.tasks.put(None)
        for t in self._threads:
            t.join()
