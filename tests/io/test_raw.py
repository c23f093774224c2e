from __future__ import annotations

import json

import numpy as np
import pytest

import framescope
from framescope.errors import FileSizeError, HeaderError, ScanShapeError
from framescope.io._write import write_raw
from framescope.testing import ReaderContract, file_digest

DTYPES = ["uint8", "uint16", "uint32", "float32", ">u2"]


def _ref(scan, det, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 250, size=(*scan, *det)).astype(dtype)


class TestRawExplicit(ReaderContract):
    @pytest.fixture(params=[("uint16", (5, 7)), ("uint8", (13, 17)), ("float32", (4, 4)),
                            ("uint32", (3, 5)), (">u2", (6, 3))])
    def case(self, request, tmp_path):
        dtype, scan = request.param
        ref = _ref(scan, (9, 11), dtype)
        path = tmp_path / "data.bin"
        path.write_bytes(b"\x00" * 64 + ref.tobytes())  # a 64-byte file header
        byteorder = "big" if np.dtype(dtype).byteorder == ">" else "little"
        kw = {"shape": ref.shape, "dtype": np.dtype(dtype).name, "offset": 64,
              "byteorder": byteorder}
        return path, ref.astype(np.dtype(dtype).newbyteorder("=")), kw


class TestRawSidecar(ReaderContract):
    @pytest.fixture
    def case(self, tmp_path):
        ref = _ref((5, 6), (8, 8), "uint16")
        path = tmp_path / "scan.raw"
        path.write_bytes(ref.reshape(30, 8, 8).tobytes())
        (tmp_path / "scan.raw.json").write_text(
            json.dumps({"shape": [30, 8, 8], "dtype": "uint16", "metadata": {"hv": 300}}))
        return path, ref, {"scan": (5, 6)}


class TestRawFrameHeaders(ReaderContract):
    """Per-frame header and footer bytes (as some cameras write) are skipped."""

    @pytest.fixture
    def case(self, tmp_path):
        ref = _ref((4, 5), (6, 7), "uint16")
        frames = ref.reshape(20, -1)
        blob = b"".join(b"H" * 16 + f.tobytes() + b"F" * 8 for f in frames)
        path = tmp_path / "hdr.raw"
        path.write_bytes(blob)
        kw = {"shape": (20, 6, 7), "dtype": "uint16", "frame_header": 16, "frame_footer": 8,
              "scan": (4, 5)}
        return path, ref, kw


def test_writer_roundtrip_and_sidecar(tmp_path):
    ref = _ref((3, 4), (5, 5), "uint16")
    path = write_raw(tmp_path / "w.raw", iter(ref.reshape(3, 4, 5, 5)), n_frames=12,
                     frame_shape=(5, 5), dtype="uint16", scan=(3, 4), metadata={"a": 1})
    np.testing.assert_array_equal(np.fromfile(path, "<u2").reshape(ref.shape), ref)
    arr = framescope.open(path)
    assert arr.attrs["a"] == 1
    np.testing.assert_array_equal(arr.values, ref)
    with pytest.raises(FileExistsError, match=r"w\.raw"):
        write_raw(path, iter([]), n_frames=0, frame_shape=(5, 5), dtype="uint16")


@pytest.mark.parametrize(("extra", "word"), [(-2, "truncated"), (+3, "longer")])
def test_size_mismatch_names_file_and_sizes(tmp_path, extra, word):
    ref = _ref((2, 3), (4, 4), "uint16")
    path = tmp_path / "bad.raw"
    data = ref.tobytes()
    path.write_bytes(data[:extra] if extra < 0 else data + b"\0" * extra)
    before = file_digest(path)
    with pytest.raises(FileSizeError) as info:
        framescope.open(path, shape=ref.shape, dtype="uint16")
    msg = str(info.value)
    assert str(path) in msg
    assert word in msg
    assert str(ref.nbytes) in msg
    assert str(ref.nbytes + extra) in msg
    assert file_digest(path) == before


def test_wrong_dtype_is_a_size_error(tmp_path):
    path = tmp_path / "x.raw"
    path.write_bytes(np.zeros((4, 4, 4), "uint16").tobytes())
    with pytest.raises(FileSizeError, match="uint32"):
        framescope.open(path, shape=(4, 4, 4), dtype="uint32", scan=(2, 2))


def test_missing_shape_and_sidecar(tmp_path):
    path = tmp_path / "lonely.raw"
    path.write_bytes(b"\0" * 8)
    with pytest.raises(HeaderError, match=r"lonely\.raw.*shape="):
        framescope.open(path)


def test_bad_sidecar_names_field(tmp_path):
    path = tmp_path / "s.raw"
    path.write_bytes(b"\0" * 32)
    (tmp_path / "s.json").write_text(json.dumps({"shape": [2, 2, 4], "dtype": "complex64"}))
    with pytest.raises(HeaderError, match=r"s\.json.*dtype"):
        framescope.open(path)


def test_scan_needs_more_frames(tmp_path):
    path = tmp_path / "f.raw"
    path.write_bytes(np.zeros((10, 2, 2), "uint8").tobytes())
    with pytest.raises(ScanShapeError, match=r"f\.raw.*3x4 needs 12 frames, found 10"):
        framescope.open(path, shape=(10, 2, 2), dtype="uint8", scan=(3, 4))
    with pytest.raises(ScanShapeError, match="pass scan="):
        framescope.open(path, shape=(10, 2, 2), dtype="uint8")


def test_byte_order_named_by_the_dtype_is_kept(tmp_path):
    ref = np.arange(2 * 3 * 4 * 5, dtype=">u2").reshape(2, 3, 4, 5)
    path = tmp_path / "be.raw"
    path.write_bytes(ref.tobytes())
    arr = framescope.open(path, shape=ref.shape, dtype=">u2")
    np.testing.assert_array_equal(arr.values, ref)
    with pytest.raises(ValueError, match="big-endian but byteorder='little'"):
        framescope.open(path, shape=ref.shape, dtype=">u2", byteorder="little")
