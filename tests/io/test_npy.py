from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.errors import FileSizeError, HeaderError
from framescope.io._write import write_npy
from framescope.testing import ReaderContract


class TestNpy(ReaderContract):
    @pytest.fixture(params=[("uint16", "4d", "C"), ("uint8", "3d", "C"), ("uint32", "4d", "F"),
                            ("float32", "4d", "C"), (">u2", "3d", "C")])
    def case(self, request, tmp_path):
        dtype, kind, order = request.param
        rng = np.random.default_rng(1)
        ref = rng.integers(0, 200, size=(13, 17, 6, 5)).astype(dtype)
        path = tmp_path / "d.npy"
        stored = ref if kind == "4d" else ref.reshape(-1, 6, 5)
        np.save(path, np.asarray(stored, order=order))
        kw = {"scan": (13, 17)} if kind == "3d" else {}
        return path, ref.astype(np.dtype(dtype).newbyteorder("=")), kw


def test_writer_roundtrip(tmp_path):
    ref = np.arange(2 * 3 * 4 * 4, dtype="uint16").reshape(2, 3, 4, 4)
    path = write_npy(tmp_path / "w.npy", iter(ref.reshape(6, 4, 4)[i : i + 4] for i in (0, 4)),
                     n_frames=6, frame_shape=(4, 4), dtype="uint16", scan=(2, 3))
    np.testing.assert_array_equal(np.load(path), ref)


def test_truncated_npy(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.zeros((4, 3, 3), "uint16"))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FileSizeError, match=r"t\.npy.*truncated"):
        framescope.open(path, scan=(2, 2))


def test_not_npy_or_wrong_ndim(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"this is not numpy")
    with pytest.raises(HeaderError, match=r"bad\.npy"):
        framescope.open(bad)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 4)))
    with pytest.raises(HeaderError, match=r"flat\.npy.*3D or 4D.*\(4, 4\)"):
        framescope.open(flat)
