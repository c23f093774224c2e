"""Any (scan_y, scan_x, det_y, det_x) DataArray, on both executors, against numpy."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import framescope
import framescope.masks as fm
from framescope.engine import run
from framescope.io._lazy import DIMS
from framescope.udf import ApplyMasks, CenterOfMass, MaxFrame, SumFrame

RING = fm.ring(8, 7, 2, 6)


@pytest.fixture(scope="module")
def ref():
    """A 12x10 scan of 16x14 uint16 frames: det chunks of 5 do not divide the frame."""
    return np.random.default_rng(11).integers(0, 500, size=(12, 10, 16, 14)).astype("u2")


def _kinds(ref, path):
    """Every way a user may hand framescope the same frames (name, DataArray, numpy view)."""
    yield "numpy", xr.DataArray(ref, dims=DIMS), ref
    yield "dask-det-chunks", xr.DataArray(da.from_array(ref, chunks=(4, 5, 8, 7)), dims=DIMS), ref
    yield "dask-odd-chunks", framescope.from_array(da.from_array(ref, chunks=(5, 3, 5, 14))), ref
    yield "dask-det-only", xr.DataArray(da.from_array(ref, chunks=(12, 10, 3, 5)), dims=DIMS), ref
    arr = framescope.open(path, shape=ref.shape, dtype=ref.dtype, chunks=5)
    yield "file", arr, ref
    yield "file-isel", arr.isel(scan_y=slice(1, 11, 2), scan_x=[0, 3, 4, 9]), \
        ref[1:11:2][:, [0, 3, 4, 9]]
    yield "file-sel-det", arr.sel(det_y=slice(2, 13)), ref[:, :, 2:14]
    ds = xr.open_dataset(path, engine="framescope", shape=ref.shape, dtype=ref.dtype.name,
                         chunks=None)
    yield "open_dataset", ds["frames"], ref


@pytest.fixture(scope="module")
def raw_path(ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "d.raw"
    path.write_bytes(ref.tobytes())
    return path


@pytest.mark.parametrize("executor", ["inline", "cluster"])
def test_every_input_kind_matches_numpy(ref, raw_path, executor, client):
    c = client if executor == "cluster" else "inline"
    for label, arr, want in _kinds(ref, raw_path):
        mask = RING.rasterize(arr.shape[2:]) if label != "file-sel-det" else \
            RING.rasterize(ref.shape[2:])[2:14]
        vi = arr.fs.virtual_image(mask, client=c, cache=False)
        np.testing.assert_allclose(vi.values, (want * mask).sum((2, 3)), rtol=1e-6,
                                   err_msg=label)
        total, mx = run([SumFrame(), MaxFrame()], arr, client=c)
        np.testing.assert_array_equal(total["sum"], want.sum((0, 1), dtype="f8"), err_msg=label)
        np.testing.assert_array_equal(mx["max"], want.max((0, 1)), err_msg=label)
        assert total["sum"].shape == want.shape[2:]
        np.testing.assert_array_equal(vi.scan_y, arr.scan_y)  # coords of the slice kept


def test_lazily_indexed_array_from_netcdf(ref, tmp_path):
    """xr.open_dataarray without chunks: lazily indexed, read by the engine in partitions."""
    path = tmp_path / "frames.nc"
    xr.DataArray(ref, dims=DIMS, name="frames").to_netcdf(path)
    with xr.open_dataarray(path) as arr:
        assert arr.chunks is None
        res = run(CenterOfMass(), arr, client="inline")
        np.testing.assert_allclose(res["com_y"],
                                   run(CenterOfMass(), framescope.from_array(ref),
                                       client="inline")["com_y"], rtol=1e-6)


def test_roi_as_dataarray_in_any_dim_order(ref):
    roi = np.zeros(ref.shape[:2], bool)
    roi[3:7, 2:9] = True
    as_da = xr.DataArray(roi.T, dims=("scan_x", "scan_y"))
    res = run(SumFrame(), xr.DataArray(ref, dims=DIMS), roi=as_da, client="inline")
    np.testing.assert_array_equal(res["sum"], ref[roi].sum(0, dtype="f8"))


def test_wrong_dims_are_refused():
    arr = xr.DataArray(np.zeros((2, 2, 4, 4)), dims=("y", "x", "ky", "kx"))
    with pytest.raises(framescope.errors.DimensionError, match="scan_y"):
        run(SumFrame(), arr, client="inline")


@pytest.mark.parametrize("executor", ["inline", "cluster"])
def test_one_answer_outside_the_roi(ref, raw_path, executor, client):
    """NaN outside the ROI for every float result and entry point, with the done map."""
    c = client if executor == "cluster" else "inline"
    arr = framescope.open(raw_path, shape=ref.shape, dtype=ref.dtype, chunks=5)
    roi = np.zeros(ref.shape[:2], bool)
    roi[2:9, 1:4] = True
    mask = RING.rasterize(ref.shape[2:])
    want = np.where(roi, (ref * mask).sum((2, 3)), np.nan)
    by_accessor = arr.fs.virtual_image(mask, roi=roi, client=c, cache=False)
    by_run = run(ApplyMasks(mask), arr, roi=roi, client=c)
    np.testing.assert_allclose(by_accessor.values, want, rtol=1e-6)
    np.testing.assert_allclose(by_run["intensity"].values[..., 0], want, rtol=1e-6)
    np.testing.assert_array_equal(by_run["done"], roi)
    com = arr.fs.com(roi=roi, client=c)
    for key in ("com_y", "com_x", "field_y", "magnitude"):
        assert np.isnan(com[key].values[~roi]).all(), key
        assert np.isfinite(com[key].values[roi]).all(), key
    prof = arr.fs.radial_profile(roi=roi, client=c)
    assert np.isnan(prof.values[~roi]).all()
    assert np.isfinite(prof.values[roi]).all()
