"""MaxFrame against ndarray.max over the frames."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.engine import _tasks
from framescope.udf import MaxFrame, Meta
from framescope.udf._backend import cupy_available

rng = np.random.default_rng(9)
SHAPE = (5, 7, 9, 11)


def _frames(dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(-50, 40, SHAPE).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, SHAPE, dtype=dt.newbyteorder("="),
                        endpoint=True).astype(dt)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int16", "int64", "float32",
                                   "float64", ">u2"])
@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_max_frame_matches_numpy(dtype, executor, client, tmp_path, monkeypatch):
    ref = _frames(dtype)
    monkeypatch.setattr(_tasks, "TILE_BYTES", 4 * 9 * 11 * 8)  # several tiles per partition
    c = "inline" if executor == "inline" else client
    path = tmp_path / "d.raw"
    native = np.dtype(dtype).newbyteorder("=")  # raw files take byte order as byteorder=
    path.write_bytes(ref.astype(native).tobytes())
    for arr in (framescope.open(path, shape=SHAPE, dtype=native, chunks=2),
                framescope.from_array(ref, chunks=(2, 3, 9, 11))):
        got = arr.fs.max_frame(client=c)
        assert got.dims == ("det_y", "det_x")
        assert got.dtype == native  # exact
        np.testing.assert_array_equal(got, ref.max(axis=(0, 1)))


def test_max_frame_of_an_roi_and_nan_propagation():
    ref = _frames("float32")
    ref[4, 6, 2, 3] = np.nan
    roi = np.zeros(SHAPE[:2], bool)
    roi[1:3, 2:6] = True
    arr = framescope.from_array(ref, chunks=(2, 7, 9, 11))
    np.testing.assert_array_equal(arr.fs.max_frame(roi=roi, client="inline"), ref[roi].max(0))
    full = arr.fs.max_frame(client="inline").values
    assert np.isnan(full[2, 3])
    assert np.isfinite(np.delete(full.ravel(), 2 * 11 + 3)).all()


def test_fill_is_the_identity_of_maximum():
    for dtype, low in (("uint16", 0), ("int8", -128), ("float32", -np.inf), ("bool", False)):
        buf = MaxFrame().buffers(Meta((1, 1), (2, 2), np.dtype(dtype)))["max"]
        assert buf.allocate(Meta((1, 1), (2, 2), np.dtype(dtype)))[0, 0] == low
    with pytest.raises(TypeError, match="expected integer, float or bool frames, found complex"):
        MaxFrame().buffers(Meta((1, 1), (2, 2), np.dtype("complex64")))


@pytest.mark.skipif(not cupy_available(), reason="cupy with a CUDA device needed")
@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_cupy_matches_numpy(executor, client):
    ref = _frames("float32")
    arr = framescope.from_array(ref, chunks=(2, 7, 9, 11))
    c = "inline" if executor == "inline" else client
    gpu = framescope.run(MaxFrame(), arr, client=c, backend="cupy")["max"].values
    np.testing.assert_array_equal(gpu, ref.max(axis=(0, 1)))
