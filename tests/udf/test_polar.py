"""PolarTransform against plain numpy (np.hypot / np.arctan2 bins, np.bincount) and analytic
frames; pyFAI's integrate2d is in test_pyfai.py."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.udf import Meta, PolarTransform, RadialProfile
from framescope.udf._backend import cupy_available

SCAN = (4, 5)
DET = (13, 15)
CY, CX = 6.3, 7.6  # off-grid: no pixel centre on a sector edge
rng = np.random.default_rng(8)
HOT = np.zeros(DET, bool)
HOT[[0, 6, 12], [0, 7, 3]] = True


def _reference(frames, r_width, n_rad, n_chi, mask=None):
    """Per-frame sums and counts per (radial, chi) bin, from scratch in float64."""
    yy, xx = np.indices(DET)
    rad = np.floor(np.hypot(yy - CY, xx - CX) / r_width).astype(int)
    chi = np.degrees(np.arctan2(yy - CY, xx - CX))
    sector = np.floor((chi + 180) / (360 / n_chi)).astype(int)
    keep = rad < n_rad
    if mask is not None:
        keep &= ~mask
    flat = (rad * n_chi + sector)[keep]
    counts = np.bincount(flat, minlength=n_rad * n_chi)
    f = frames.reshape(-1, *DET).astype("f8")
    sums = np.stack([np.bincount(flat, weights=x[keep], minlength=counts.size) for x in f])
    return sums.reshape(*frames.shape[:-2], n_rad, n_chi), counts.reshape(n_rad, n_chi)


@pytest.mark.parametrize("dtype", ["uint16", "float64"])  # the fused kernel, the GEMM
@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_per_position_matches_numpy(dtype, normalize):
    ref = rng.integers(0, 1000, (*SCAN, *DET)).astype(dtype)
    arr = framescope.from_array(ref, chunks=(2, 5, *DET))
    got = arr.fs.polar(CY, CX, bin_width=1.5, r_max=7.5, n_chi=8, mask=HOT,
                       normalize=normalize, per_position=True, client="inline")
    sums, counts = _reference(ref, 1.5, 5, 8, HOT)
    assert got.dims == ("scan_y", "scan_x", "radius", "chi")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.counts, counts)
    np.testing.assert_allclose(got.chi, -180 + 45 * (np.arange(8) + 0.5))
    assert got.chi.attrs["units"] == "deg"
    with np.errstate(invalid="ignore", divide="ignore"):
        exp = sums / counts if normalize == "mean" else sums
    np.testing.assert_allclose(got.values, exp, rtol=2e-6)


def test_summed_is_the_polar_image_of_the_mean_or_sum_frame(client):
    ref = rng.integers(0, 1000, (*SCAN, *DET)).astype("uint16")
    roi = np.zeros(SCAN, bool)
    roi[1:3, [0, 2, 4]] = True
    sums, counts = _reference(ref[roi], 2, 4, 6)
    for c in ("inline", client):
        arr = framescope.from_array(ref, chunks=(1, 5, *DET))
        mean = arr.fs.polar(CY, CX, bin_width=2, n_bins=4, n_chi=6, roi=roi, client=c)
        assert mean.dims == ("radius", "chi")
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(mean.values, sums.mean(0) / counts, rtol=1e-12)
        total = arr.fs.polar(CY, CX, bin_width=2, n_bins=4, n_chi=6, roi=roi,
                             normalize="sum", client=c)
        np.testing.assert_allclose(total.values, sums.sum(0), rtol=1e-12)


def test_sectors_sum_to_the_radial_profile_and_chi_runs_towards_det_y():
    ref = rng.normal(100, 10, (*SCAN, *DET)).astype("float32")
    arr = framescope.from_array(ref)
    pol = arr.fs.polar(CY, CX, r_max=6, n_chi=12, normalize="sum", per_position=True,
                       client="inline")
    prof = arr.fs.radial_profile(CY, CX, r_max=6, normalize="sum", client="inline")
    np.testing.assert_array_equal(pol.counts.sum("chi"), prof.counts)
    np.testing.assert_allclose(pol.sum("chi"), prof, rtol=1e-5)
    # +1 below the centre (det_y > cy), -1 above: chi in (0, 180) below, (-180, 0) above
    frame = np.where(np.arange(DET[0])[:, None] > CY, 1.0, -1.0) * np.ones(DET)
    pol = framescope.from_array(np.broadcast_to(frame, (1, 2, *DET)).copy()).fs.polar(
        CY, CX, n_chi=4, client="inline")
    filled = pol.counts.values > 0
    side = np.broadcast_to(np.sign(pol.chi.values), pol.shape)
    np.testing.assert_array_equal(pol.values[filled], side[filled])


def test_calibrated_bins_in_q_have_every_coordinate():
    ref = rng.integers(0, 100, (*SCAN, *DET)).astype("uint16")
    cal = framescope.from_array(ref).fs.calibrate(energy="200 kV", angle_per_px="1 mrad",
                                                  center=(CY, CX))
    pol = cal.fs.polar(unit="q_nm^-1", bin_width=2.0, n_chi=6, client="inline")
    assert pol.dims == ("q", "chi")
    assert {"radius", "angle", "two_theta", "k", "counts"} <= set(pol.coords)
    assert pol.q.attrs["units"] == "1/nm"
    assert pol.radius.attrs["units"] == "px"
    assert pol.counts.values.sum() == DET[0] * DET[1]  # the default bins take every pixel
    prof = cal.fs.radial_profile(unit="q_nm^-1", bin_width=2.0, client="inline")
    np.testing.assert_array_equal(pol.counts.sum("chi"), prof.counts)
    np.testing.assert_allclose(pol.radius, prof.radius)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"n_chi: expected a positive integer, found 0"):
        PolarTransform(n_chi=0)
    udf = PolarTransform(n_bins=100, n_chi=360, per_position=True)
    meta = Meta((256, 256), (256, 256), np.dtype("uint16"))
    with pytest.raises(ValueError, match=r"65536 positions x 100 x 360 bins is 8.8 GiB, "
                                         r"expected at most 2 GiB"):
        udf.buffers(meta)
    assert PolarTransform(n_bins=100, n_chi=360).buffers(meta)  # summed: any size
    with pytest.raises(ValueError, match=r"no detector pixel in any bin"):
        framescope.from_array(np.ones((1, 1, *DET), "uint8")).fs.polar(
            r_min=30, n_bins=1, client="inline")
    assert PolarTransform().key != RadialProfile().key


@pytest.mark.skipif(not cupy_available(), reason="cupy with a CUDA device needed")
@pytest.mark.parametrize("per_position", [True, False])
def test_cupy_matches_numpy(per_position):
    ref = rng.integers(0, 1000, (*SCAN, *DET)).astype("uint16")
    arr = framescope.from_array(ref, chunks=(2, 5, *DET))
    udf = PolarTransform(CY, CX, bin_width=1.5, n_chi=8, mask=HOT, per_position=per_position)
    cpu = framescope.run(udf, arr, client="inline", backend="numpy")
    gpu = framescope.run(udf, arr, client="inline", backend="cupy")
    np.testing.assert_allclose(gpu["polar"].values, cpu["polar"].values, rtol=1e-6)
    np.testing.assert_array_equal(gpu["counts"].values, cpu["counts"].values)
