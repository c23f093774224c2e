from __future__ import annotations

import os
import time

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import framescope
from framescope.errors import ScanShapeError, UnknownFormatError
from framescope.io import DIMS, available_readers


def _stack(tmp_path, n=30, det=(4, 5), dtype="uint16"):
    ref = np.arange(n * det[0] * det[1], dtype=dtype).reshape(n, *det)
    path = tmp_path / "s.npy"
    np.save(path, ref)
    return path, ref


@pytest.mark.parametrize("offset", [0, 3, -4])
def test_sync_offset_skips_or_pads(tmp_path, offset):
    path, ref = _stack(tmp_path)
    scan = (4, 5)
    arr = framescope.open(path, scan=scan, sync_offset=offset, chunks=1)
    expected = np.zeros((20, 4, 5), ref.dtype)
    for p in range(20):
        f = p + offset
        if 0 <= f < len(ref):
            expected[p] = ref[f]
    np.testing.assert_array_equal(arr.values, expected.reshape(*scan, 4, 5))
    assert arr.attrs["sync_offset"] == offset


def test_sync_offset_beyond_data_is_an_error(tmp_path):
    path, _ = _stack(tmp_path)
    with pytest.raises(ScanShapeError, match="sync_offset 11 only 19 frames"):
        framescope.open(path, scan=(4, 5), sync_offset=11)


def test_square_scan_is_inferred_else_asked_for(tmp_path):
    path, _ = _stack(tmp_path, n=36)
    assert framescope.open(path).shape[:2] == (6, 6)
    path2 = tmp_path / "odd.npy"
    np.save(path2, np.zeros((35, 2, 2), "uint8"))
    with pytest.raises(ScanShapeError, match="pass scan="):
        framescope.open(path2)


def test_default_partitions_are_whole_rows_of_target_size(tmp_path):
    ref = np.zeros((40, 8, 64, 64), "uint16")
    path = tmp_path / "p.npy"
    np.save(path, ref)
    row = 8 * 64 * 64 * 2
    arr = framescope.open(path, partition_mib=row * 5 / 2**20)
    assert arr.data.chunks[0] == (5,) * 8
    assert arr.data.chunks[1:] == ((8,), (64,), (64,))
    arr = framescope.open(path, chunks={"scan_y": 7})
    assert arr.data.chunks[0] == (7,) * 5 + (5,)
    # a row bigger than the target splits along scan_x, never inside a frame
    arr = framescope.open(path, partition_mib=3 * 64 * 64 * 2 / 2**20)
    assert arr.data.chunks[:2] == ((1,) * 40, (3, 3, 2))


def test_open_is_lazy_and_constant_time_on_a_20_gb_file(tmp_path):
    path = tmp_path / "big.raw"
    shape = (512, 320, 256, 256)  # 20 GiB of uint16, sparse on disk
    with open(path, "wb") as f:
        f.truncate(int(np.prod(shape)) * 2)
    t0 = time.perf_counter()
    arr = framescope.open(path, shape=shape, dtype="uint16")
    elapsed = time.perf_counter() - t0
    assert arr.nbytes == 20 * 2**30
    assert os.stat(path).st_blocks == 0  # nothing was written or read into existence
    np.testing.assert_array_equal(arr[100, 7].values, 0)
    print(f"open 20 GiB: {elapsed * 1e3:.1f} ms")  # reported, not asserted


def test_same_file_same_graph_name_changed_file_new_name(tmp_path):
    path, _ = _stack(tmp_path)
    a = framescope.open(path, scan=(5, 6))
    b = framescope.open(path, scan=(5, 6))
    assert a.data.name == b.data.name
    assert framescope.open(path, scan=(6, 5)).data.name != a.data.name
    np.save(path, np.ones((30, 4, 5), "uint16"))
    os.utime(path, ns=(1, 1))
    assert framescope.open(path, scan=(5, 6)).data.name != a.data.name


def test_unknown_format_lists_readers(tmp_path):
    path = tmp_path / "x.weird"
    path.write_text("hello")
    with pytest.raises(UnknownFormatError, match=r"x\.weird.*npy.*raw"):
        framescope.open(path)
    with pytest.raises(UnknownFormatError, match="unknown format 'tiff'"):
        framescope.open(path, format="tiff")


def test_from_array_numpy_and_dask():
    ref = np.random.default_rng(0).integers(0, 9, (4, 6, 3, 3)).astype("uint8")
    arr = framescope.from_array(ref)
    assert arr.dims == DIMS
    np.testing.assert_array_equal(arr.values, ref)
    lazy = framescope.from_array(da.from_array(ref.reshape(24, 3, 3), chunks=6), scan=(4, 6))
    np.testing.assert_array_equal(lazy.values, ref)
    with pytest.raises(ScanShapeError, match="needs 25 frames, found 24"):
        framescope.from_array(ref.reshape(24, 3, 3), scan=(5, 5))


def test_selection_stays_lazy(tmp_path):
    path, ref = _stack(tmp_path)
    arr = framescope.open(path, scan=(5, 6))
    with dask.config.set(scheduler=_forbid):
        sub = arr.isel(scan_y=slice(1, 3)).sum(("det_y", "det_x"))
    np.testing.assert_array_equal(sub.values, ref.reshape(5, 6, 4, 5)[1:3].sum((2, 3)))


def _forbid(*args, **kwargs):
    raise AssertionError("computed while building the graph")


def test_xarray_backend_entry_point(tmp_path):
    path, ref = _stack(tmp_path)
    ds = xr.open_dataset(path, engine="framescope", scan=(5, 6))
    assert ds["frames"].dims == DIMS
    np.testing.assert_array_equal(ds["frames"].values, ref.reshape(5, 6, 4, 5))


def test_third_party_reader_via_entry_point(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from framescope.io import _registry

    ep = EntryPoint(name="fake", value="framescope.io._npy:NpyReader",
                    group=_registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(_registry, "entry_points", lambda group: [ep])
    _registry.available_readers.cache_clear()
    try:
        assert "fake" in available_readers()
        path, ref = _stack(tmp_path)
        np.testing.assert_array_equal(framescope.open(path, format="fake", scan=(5, 6)).values,
                                      ref.reshape(5, 6, 4, 5))
    finally:
        _registry.available_readers.cache_clear()
