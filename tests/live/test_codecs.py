"""Payload codecs decode independent encodings (lz4 / bitshuffle libraries, framing by hand)."""

from __future__ import annotations

import struct

import bitshuffle
import lz4.block
import numpy as np
import pytest

from framescope.live import MessageError, _codecs

rng = np.random.default_rng(0)


def frame(dtype: str, shape=(37, 29)) -> np.ndarray:  # odd sizes: partial bitshuffle blocks
    return rng.poisson(2.0, shape).astype(dtype)


def h5_bslz4(a: np.ndarray, block: int, header: bool = True) -> bytes:
    payload = bitshuffle.compress_lz4(a, block).tobytes()
    if not header:
        return payload
    return struct.pack(">QI", a.nbytes, block * a.itemsize) + payload


@pytest.fixture(params=["dectris-compression", "bitshuffle"])
def backend(request, monkeypatch):
    if request.param == "bitshuffle":
        monkeypatch.setattr(_codecs, "_dectris_decompress", None)
    elif _codecs._dectris_decompress is None:
        pytest.skip("dectris-compression not installed")
    return request.param


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
@pytest.mark.parametrize("block", [0, 64, 2048])
def test_bslz4_with_hdf5_framing(backend, dtype, block):
    a = frame(dtype)
    size = block or _codecs._default_block(a.itemsize)
    out = _codecs.decode(h5_bslz4(a, size), "bslz4", a.shape, a.dtype)
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_bslz4_without_preamble_uses_the_default_block(backend, dtype):
    a = frame(dtype, (64, 48))
    out = _codecs.decode(h5_bslz4(a, 0, header=False), "bslz4", a.shape, a.dtype)
    np.testing.assert_array_equal(out, a)


def test_raw_and_bare_lz4_block():
    a = frame("uint16")
    np.testing.assert_array_equal(_codecs.decode(a.tobytes(), "raw", a.shape, a.dtype), a)
    packed = lz4.block.compress(a.tobytes(), store_size=False)
    np.testing.assert_array_equal(_codecs.decode(packed, "lz4", a.shape, a.dtype), a)


@pytest.mark.parametrize("stored", [False, True])
def test_lz4_in_hdf5_framing(stored):
    a = frame("uint32") if not stored else rng.integers(0, 2**32, (8, 8), dtype="uint32")
    data = a.tobytes()
    packed = lz4.block.compress(data, store_size=False)
    if stored:  # incompressible: the HDF5 LZ4 filter stores the block as it is
        packed = data
    blob = struct.pack(">QII", len(data), len(data), len(packed)) + packed
    np.testing.assert_array_equal(_codecs.decode(blob, "lz4-h5", a.shape, a.dtype), a)


def test_encode_matches_the_libraries():
    a = frame("uint16")
    block = _codecs._default_block(2)
    assert bytes(_codecs.encode(a, "bslz4")) == h5_bslz4(a, block)
    assert _codecs.decode(_codecs.encode(a, "lz4-h5"), "lz4-h5", a.shape, a.dtype).tobytes() \
        == a.tobytes()


@pytest.mark.parametrize("cut", [1, 5, 100])
def test_truncated_bslz4_is_an_error_not_a_crash(backend, cut):
    a = frame("uint16", (128, 128))
    blob = h5_bslz4(a, 4096)
    with pytest.raises(MessageError, match="truncated"):
        _codecs.decode(blob[:-cut], "bslz4", a.shape, a.dtype)


def test_bad_payloads_raise_message_errors(backend):
    a = frame("uint16", (64, 64))
    blob = bytearray(h5_bslz4(a, 4096))
    with pytest.raises(MessageError, match="header says"):
        _codecs.decode(bytes(blob), "bslz4", (32, 64), a.dtype)
    with pytest.raises(MessageError, match="too long"):
        _codecs.decode(bytes(blob) + b"xx", "bslz4", a.shape, a.dtype)
    blob[20:40] = b"\xff" * 20  # corrupt LZ4 data inside the first block
    with pytest.raises(MessageError):
        _codecs.decode(bytes(blob), "bslz4", a.shape, a.dtype)
    with pytest.raises(MessageError, match="raw frame of 3 B"):
        _codecs.decode(b"abc", "raw", (2, 2), np.uint16)
    with pytest.raises(MessageError, match="lz4"):
        _codecs.decode(b"\x00\x01garbage", "lz4", (8, 8), np.uint16)
    with pytest.raises(MessageError, match="truncated"):
        _codecs.decode(struct.pack(">QII", 128, 128, 99) + b"x", "lz4-h5", (8, 8), np.uint16)
    with pytest.raises(MessageError, match="unknown codec"):
        _codecs.decode(b"", "zstd", (1, 1), np.uint8)
