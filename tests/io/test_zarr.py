from __future__ import annotations

import numpy as np
import pytest
import zarr

import framescope
from framescope.errors import DatasetNotFoundError
from framescope.io._write import write_zarr
from framescope.testing import ReaderContract


class TestZarr(ReaderContract):
    @pytest.fixture(params=[("uint16", "4d", 3), ("uint8", "3d", 2), ("float32", "group", 3),
                            ("uint32", "4d", 2)])
    def case(self, request, tmp_path):
        dtype, kind, fmt = request.param
        rng = np.random.default_rng(2)
        ref = rng.integers(0, 200, size=(5, 7, 6, 4)).astype(dtype)
        path = tmp_path / "d.zarr"
        kw = {}
        if kind == "4d":
            z = zarr.create_array(store=str(path), shape=ref.shape, chunks=(2, 3, 6, 4),
                                  dtype=ref.dtype, zarr_format=fmt)
            z[...] = ref
        elif kind == "3d":
            z = zarr.create_array(store=str(path), shape=(35, 6, 4), chunks=(4, 6, 4),
                                  dtype=ref.dtype, zarr_format=fmt)
            z[...] = ref.reshape(35, 6, 4)
            kw = {"scan": (5, 7)}
        else:
            g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
            g.create_array("meta/small", shape=(3,), dtype="f8")
            z = g.create_array("entry/frames", shape=ref.shape, chunks=(1, 7, 6, 4),
                               dtype=ref.dtype)
            z[...] = ref
        return path, ref, kw


def test_writer_roundtrip(tmp_path):
    ref = np.arange(5 * 3 * 4 * 4, dtype="uint16").reshape(5, 3, 4, 4)
    blocks = [ref.reshape(15, 4, 4)[i : i + 4] for i in range(0, 15, 4)]
    path = write_zarr(tmp_path / "w.zarr", blocks, n_frames=15, frame_shape=(4, 4),
                      dtype="uint16", scan=(5, 3), chunk_mib=64 / 2**20)
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], ref)
    np.testing.assert_array_equal(framescope.open(path).values, ref)


def test_no_suitable_array_lists_what_was_found(tmp_path):
    path = tmp_path / "g.zarr"
    g = zarr.open_group(str(path), mode="w")
    g.create_array("spectrum", shape=(100,), dtype="f4")
    with pytest.raises(DatasetNotFoundError, match=r"g\.zarr.*spectrum \(100,\)"):
        framescope.open(path)
    with pytest.raises(DatasetNotFoundError, match=r"no array '/nope'"):
        framescope.open(path, dataset="/nope")
