"""Frame payload codecs of the DECTRIS streams: raw, LZ4 and bitshuffle+LZ4.

Decompression is done by maintained libraries: ``lz4`` for LZ4 blocks, DECTRIS'
``dectris-compression`` for bitshuffle+LZ4 when it is installed (about 3x faster here), else
``bitshuffle`` (the reference implementation, a binary wheel). Only the HDF5-filter framing
(sizes and block lengths) is parsed here, and it is checked against the buffer before any
library call: bitshuffle trusts the block lengths and reads past a truncated buffer.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import math
import os
import struct
import threading
from typing import Any, Literal

import lz4.block
import numpy as np

from framescope.live._messages import MessageError

__all__ = ["CODECS", "Codec", "Encoded", "decode", "decode_frame", "defer_frames", "encode",
           "h5_chunk"]

Codec = Literal["raw", "lz4", "lz4-h5", "bslz4"]
#: ``lz4``: one bare LZ4 block (stream v1 ``lz4<``); ``lz4-h5``: LZ4 blocks in the HDF5 LZ4
#: filter framing (stream2 ``lz4``); ``bslz4``: bitshuffle+LZ4 in the HDF5 bitshuffle framing
CODECS: tuple[str, ...] = ("raw", "lz4", "lz4-h5", "bslz4")

_HEADER = struct.Struct(">QI")  # uncompressed bytes, block size in bytes
_BLOCK = struct.Struct(">I")  # compressed length of the next block

_local = threading.local()


@functools.cache
def _bundled_openmp() -> tuple[ctypes.CDLL, ...]:
    """The private libgomp of a bitshuffle wheel (``bitshuffle.libs/``), if any."""
    import bitshuffle

    root = os.path.dirname(os.path.dirname(bitshuffle.__file__))
    libs = []
    for path in glob.glob(os.path.join(root, "bitshuffle.libs", "libgomp*.so*")):
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL(path)  # already loaded: the same handle
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            libs.append(lib)
    return tuple(libs)


def _bitshuffle() -> Any:
    """bitshuffle, with its OpenMP team limited to one thread for the calling thread.

    A frame is a few blocks: threads only cost. Worse, next to the other OpenMP runtime
    that ``import framescope`` loads (numba's), the wheel's private one made a 128 KiB
    frame take ~4 ms to compress instead of ~60 µs here. ``omp_set_num_threads`` acts on
    the calling thread only, hence once per thread.
    """
    import bitshuffle

    if not getattr(_local, "single", False):
        for lib in _bundled_openmp():
            lib.omp_set_num_threads(1)
        _local.single = True
    return bitshuffle


try:  # optional accelerator, built from source (no wheel on PyPI)
    from dectris.compression import decompress as _dectris_decompress
except ImportError:  # pragma: no cover - depends on the environment
    _dectris_decompress = None


def _default_block(itemsize: int) -> int:
    """bitshuffle's automatic block size in elements (~8 KiB, a multiple of 8)."""
    return max(8, (8192 // itemsize) // 8 * 8)


def _bitshuffle_blocks(n: int, block: int) -> list[int]:
    """Element counts of the LZ4 blocks bitshuffle writes for ``n`` elements."""
    last = n % block
    sizes = [block] * (n // block)
    if last - last % 8:
        sizes.append(last - last % 8)
    return sizes


def _split_header(blob: memoryview, nbytes: int, itemsize: int,
                  ) -> tuple[int, memoryview, bool]:
    """(block size in elements, payload, had header); the 12-byte header is optional.

    A headerless blob starts with a block's 4-byte length (never 0), so a first u64 equal
    to the frame size, or with four zero high bytes, can only be a header.
    """
    if len(blob) >= _HEADER.size and blob[:4] == b"\0\0\0\0":
        total, block_bytes = _HEADER.unpack_from(blob)
        if total != nbytes:
            raise MessageError(f"bslz4: header says {total} uncompressed bytes, expected "
                               f"{nbytes}")
        if block_bytes == 0 or block_bytes % (8 * itemsize):
            raise MessageError(f"bslz4: block size {block_bytes} B is not a positive "
                               f"multiple of 8 elements of {itemsize} B")
        return block_bytes // itemsize, blob[_HEADER.size:], True
    return _default_block(itemsize), blob, False


def _check_bitshuffle(payload: memoryview, n: int, itemsize: int, block: int) -> None:
    pos = 0
    size = len(payload)
    for _ in _bitshuffle_blocks(n, block):
        if pos + _BLOCK.size > size:
            raise MessageError(f"bslz4: truncated, {size} B end inside block headers")
        (clen,) = _BLOCK.unpack_from(payload, pos)
        pos += _BLOCK.size + clen
    pos += (n % 8) * itemsize  # the last n % 8 elements are stored as they are
    if pos != size:
        what = "truncated" if pos > size else "too long"
        raise MessageError(f"bslz4: {what}: blocks need {pos} B, found {size} B")


def _bslz4(blob: memoryview, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    itemsize = dtype.itemsize
    n = math.prod(shape)
    block, payload, had_header = _split_header(blob, n * itemsize, itemsize)
    _check_bitshuffle(payload, n, itemsize, block)
    try:
        if _dectris_decompress is not None:
            framed = blob if had_header else (
                _HEADER.pack(n * itemsize, block * itemsize) + payload)
            raw = _dectris_decompress(framed, "bslz4", elem_size=itemsize)
            return np.frombuffer(raw, dtype).reshape(shape)
        return _bitshuffle().decompress_lz4(np.frombuffer(payload, np.uint8), shape, dtype,
                                            block)
    except (ValueError, RuntimeError) as exc:
        raise MessageError(f"bslz4: corrupt data ({exc})") from exc


def _lz4_h5(blob: memoryview, nbytes: int) -> bytes:
    if len(blob) < _HEADER.size:
        raise MessageError(f"lz4: {len(blob)} B, shorter than the 12-byte header")
    total, block = _HEADER.unpack_from(blob)
    if total != nbytes:
        raise MessageError(f"lz4: header says {total} uncompressed bytes, expected {nbytes}")
    block = block or nbytes
    out = bytearray()
    pos = _HEADER.size
    while len(out) < nbytes:
        want = min(block, nbytes - len(out))
        if pos + _BLOCK.size > len(blob):
            raise MessageError(f"lz4: truncated, {len(blob)} B end inside block headers")
        (clen,) = _BLOCK.unpack_from(blob, pos)
        pos += _BLOCK.size
        if pos + clen > len(blob):
            raise MessageError(f"lz4: truncated block, needs {pos + clen} B, found {len(blob)}")
        chunk = blob[pos : pos + clen]
        pos += clen
        # the HDF5 LZ4 filter stores a block as it is when compression did not pay
        out += chunk if clen == want else _lz4_block(chunk, want)
    if pos != len(blob):
        raise MessageError(f"lz4: {len(blob) - pos} B left after the last block")
    return bytes(out)


def _lz4_block(blob: memoryview, nbytes: int) -> bytes:
    try:
        raw = lz4.block.decompress(blob, uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError as exc:
        raise MessageError(f"lz4: corrupt block ({exc})") from exc
    if len(raw) != nbytes:
        raise MessageError(f"lz4: decompressed {len(raw)} B, expected {nbytes}")
    return raw


def decode(blob: memoryview | bytes, codec: str, shape: tuple[int, ...], dtype: np.dtype,
           ) -> np.ndarray:
    """Decode one frame payload into an array of ``shape`` and ``dtype``.

    Parameters
    ----------
    blob : bytes-like
        The payload as received (not copied for ``raw``: the result views it).
    codec : {"raw", "lz4", "lz4-h5", "bslz4"}
    shape : tuple of int
    dtype : numpy dtype (little-endian)

    Raises
    ------
    MessageError
        Wrong size, truncated or corrupt payload, unknown codec.
    """
    blob = memoryview(blob).cast("B")
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # (np.prod costs ~5 µs per frame)
    if codec == "raw":
        if len(blob) != nbytes:
            raise MessageError(f"raw frame of {len(blob)} B, expected {nbytes} B for "
                               f"{dtype.name} {shape}")
        return np.frombuffer(blob, dtype).reshape(shape)
    if codec == "bslz4":
        return _bslz4(blob, shape, dtype)
    if codec == "lz4":
        raw = _lz4_block(blob, nbytes)
    elif codec == "lz4-h5":
        raw = _lz4_h5(blob, nbytes)
    else:
        raise MessageError(f"unknown codec {codec!r}; expected one of {CODECS}")
    return np.frombuffer(raw, dtype).reshape(shape)


class Encoded:
    """A compressed frame payload whose decoding is left to the batch it goes into.

    What a decoder gives for a compressed frame on a thread that defers decoding (see
    :func:`decode_frame`): it has the frame's ``shape`` and ``dtype``, and decodes when
    asked (:meth:`decode_into`, or ``np.asarray``), raising :class:`MessageError` if the
    payload is corrupt. ``blob`` views the message (the message lives while this does).
    """

    __slots__ = ("blob", "codec", "dtype", "shape")

    def __init__(self, blob: memoryview, codec: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.blob, self.codec, self.shape, self.dtype = blob, codec, shape, dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def decode_into(self, out: np.ndarray) -> None:
        """Decode into ``out`` (C-contiguous, of the frame's size and pixel size)."""
        from framescope.live import _decode

        row = out.reshape(1, -1).view(np.uint8)
        src = np.frombuffer(self.blob, np.uint8)
        status = _decode.decode_chunk(
            np.array([_decode.CODE[self.codec]], np.int8), src, np.zeros(1, np.int64),
            np.array([len(src)], np.int64), row, np.zeros(1, np.int64), self.dtype.itemsize)
        if status[0]:
            raise MessageError(_decode.error_message(self.codec, int(status[0]),
                                                     self.nbytes, len(src)))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.decode_into(out)
        return out if dtype is None else out.astype(dtype, copy=False)


def defer_frames(on: bool) -> None:
    """Make :func:`decode_frame` on the calling thread defer decoding (receiver threads)."""
    from framescope.live import _decode

    _local.defer = bool(on) and _decode.available()


def decode_frame(blob: memoryview | bytes, codec: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> np.ndarray | Encoded:
    """A frame's payload as :func:`decode` gives it, or as :class:`Encoded` to decode later.

    A protocol decoder calls this for detector frames. On a thread that asked for it
    (:func:`defer_frames`, a receiver thread with a decode pool), a compressed payload is
    not decoded here but by the batch it goes into, on the pool's threads, straight into
    the batch buffer; elsewhere this is :func:`decode`.
    """
    if codec == "raw" or not getattr(_local, "defer", False):
        return decode(blob, codec, shape, dtype)
    if codec not in ("bslz4", "lz4", "lz4-h5"):
        raise MessageError(f"unknown codec {codec!r}; expected one of {CODECS}")
    view = memoryview(blob)
    if view.format != "B" or view.ndim != 1:  # (bytes: already bytes)
        view = view.cast("B")
    return Encoded(view, codec, shape, np.dtype(dtype))


def encode(frame: np.ndarray, codec: str) -> bytes | np.ndarray:
    """Encode a frame as a sender would (simulator, tests); ``raw`` returns the array itself.

    ``bslz4`` and ``lz4-h5`` carry the 12-byte HDF5-filter header.
    """
    frame = np.ascontiguousarray(frame)
    if frame.dtype.byteorder == ">":
        frame = frame.astype(frame.dtype.newbyteorder("<"))
    if codec == "raw":
        return frame
    data = frame.tobytes() if codec != "bslz4" else b""
    if codec == "lz4":
        return lz4.block.compress(data, store_size=False)
    if codec == "lz4-h5":
        packed = lz4.block.compress(data, store_size=False)
        if len(packed) >= len(data):  # stored as it is, like the HDF5 filter
            packed = data
        return _HEADER.pack(len(data), len(data)) + _BLOCK.pack(len(packed)) + packed
    if codec == "bslz4":
        block = _default_block(frame.itemsize)
        packed = _bitshuffle().compress_lz4(frame, block)
        return _HEADER.pack(frame.nbytes, block * frame.itemsize) + packed.tobytes()
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


def h5_chunk(codec: str, blob: Any, nbytes: int, itemsize: int) -> Any:
    """A received compressed payload as the chunk an HDF5 filter would have written.

    Parameters
    ----------
    codec : {"bslz4", "lz4-h5", "lz4"}
        How ``blob`` is compressed (after :func:`decode` accepted it).
    blob : bytes-like
    nbytes, itemsize : int
        Uncompressed size of the frame and its pixel size.

    Returns
    -------
    bytes-like or None
        For the bitshuffle filter (``bslz4``; the 12-byte header added when the sender
        left it out) or the LZ4 filter (``lz4-h5`` as it is; a bare ``lz4`` block framed
        as one block). None when there is no such chunk (``raw``, unknown codecs, or a
        bare LZ4 block as long as the frame, which the filter would read as stored).
    """
    blob = memoryview(blob).cast("B")
    if codec == "bslz4":
        if len(blob) >= _HEADER.size and blob[:4] == b"\0\0\0\0":  # see _split_header
            return blob
        return _HEADER.pack(nbytes, _default_block(itemsize) * itemsize) + blob
    if codec == "lz4-h5":
        return blob
    if codec == "lz4" and len(blob) != nbytes:
        return _HEADER.pack(nbytes, nbytes) + _BLOCK.pack(len(blob)) + blob
    return None
