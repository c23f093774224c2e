"""RadialProfile and its kernel against plain numpy (np.hypot distances, np.bincount)."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.engine import _tasks
from framescope.errors import MaskError
from framescope.udf import Meta, RadialProfile, Tile
from framescope.udf._backend import cupy_available
from framescope.udf._radial_kernels import radial_sums, ring_runs

DTYPES = ["uint8", "uint16", "uint32", "float32"]
SCAN = (5, 7)
DET = (13, 15)  # odd: no run length is a multiple of the kernel's 8 lanes

rng = np.random.default_rng(5)
HOT = np.zeros(DET, bool)
HOT[[0, 6, 6, 12], [0, 7, 8, 3]] = True  # hot pixels, one at the centre


def _frames(dtype: str, shape=(*SCAN, *DET)) -> np.ndarray:
    if dtype == "float32":
        return rng.normal(100, 40, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _reference(ref, cy, cx, r_min, width, n_bins, mask=None, normalize="mean"):
    """Profiles ``(..., n_bins)`` and counts: one np.bincount per frame, in float64."""
    h, w = ref.shape[-2:]
    yy, xx = np.indices((h, w))
    b = np.floor((np.hypot(yy - cy, xx - cx) - r_min) / width).astype(np.int64)
    keep = (b >= 0) & (b < n_bins)
    if mask is not None:
        keep &= ~mask
    counts = np.bincount(b[keep], minlength=n_bins)
    flat = ref.reshape(-1, h, w).astype(np.float64)
    sums = np.stack([np.bincount(b[keep], weights=f[keep], minlength=n_bins) for f in flat])
    if normalize == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            sums = sums / counts
    return sums.reshape(*ref.shape[:-2], n_bins), counts


# ---- the kernel ------------------------------------------------------------------------------
def test_ring_runs_cover_the_bins_in_row_major_order():
    bin_map = rng.integers(-1, 4, DET)
    rows, x0, x1, bins = ring_runs(bin_map)
    assert bins.dtype == np.uint32
    assert (x1 > x0).all()
    assert np.all(np.diff(rows * DET[1] + x0) > 0)
    covered = np.full(DET, -1)
    p = 0
    for r, a, b in zip(rows, x0, x1, strict=True):
        assert a == 0 or covered[r, a - 1] < 0  # maximal runs
        covered[r, a:b] = bins[p:p + b - a]
        p += b - a
    np.testing.assert_array_equal(covered, bin_map)
    with pytest.raises(ValueError, match="2D integer bin map"):
        ring_runs(np.zeros(DET))


@pytest.mark.parametrize("dtype", DTYPES)
def test_radial_sums_match_bincount(dtype):
    tile = _frames(dtype, (9, *DET))
    tile.flags.writeable = False  # the variant the UDF passes
    bin_map = rng.integers(-1, 11, DET)
    bin_map[bin_map == 7] = -1  # an empty bin
    scale = rng.uniform(0.5, 2, 11)
    out = np.full((9, 11), np.nan, np.float32)
    radial_sums(tile, *ring_runs(bin_map), scale, out)
    keep = bin_map >= 0
    ref = np.stack([np.bincount(bin_map[keep], weights=f[keep].astype("f8"), minlength=11)
                    for f in tile]) * scale
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert (out[:, 7] == 0).all()


def test_radial_sums_of_large_counts_do_not_overflow():
    # 195 pixels of 2**32 - 1 per bin: a 32-bit accumulator would wrap
    tile = np.full((3, *DET), np.iinfo(np.uint32).max, np.uint32)
    tile.flags.writeable = False
    out = np.empty((3, 1), np.float32)
    radial_sums(tile, *ring_runs(np.zeros(DET, np.int64)), np.ones(1), out)
    assert out[0, 0] == np.float32((2**32 - 1) * DET[0] * DET[1])


# ---- the UDF on both executors ---------------------------------------------------------------
@pytest.fixture(params=DTYPES)
def dataset(request, tmp_path):
    ref = _frames(request.param)
    path = tmp_path / "d.raw"
    path.write_bytes(ref.tobytes())
    return framescope.open(path, shape=ref.shape, dtype=request.param, chunks=2), ref


@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_profile_matches_numpy(dataset, executor, client, monkeypatch):
    arr, ref = dataset
    monkeypatch.setattr(_tasks, "TILE_BYTES", 3 * 13 * 15 * 4)  # tiles of ~3 frames: edges
    c = "inline" if executor == "inline" else client
    params = {"cy": 6.3, "cx": 7.6, "bin_width": 1.5, "r_min": 0.5}
    got = arr.fs.radial_profile(**params, mask=HOT, client=c)
    exp, counts = _reference(ref, 6.3, 7.6, 0.5, 1.5, got.sizes["radius"], HOT)
    assert got.dims == ("scan_y", "scan_x", "radius")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.counts, counts)
    assert counts.sum() + HOT.sum() == DET[0] * DET[1]  # none below r_min, all below r_max
    np.testing.assert_allclose(got.values, exp, rtol=2e-6)
    mem = framescope.from_array(ref, chunks=(2, 3, *DET))  # blocks cut scan rows
    got = mem.fs.radial_profile(**params, mask=HOT, normalize="sum", client=c)
    exp, _ = _reference(ref, 6.3, 7.6, 0.5, 1.5, got.sizes["radius"], HOT, "sum")
    np.testing.assert_allclose(got.values, exp, rtol=2e-6)


@pytest.mark.parametrize("dtype", ["int16", "float64", ">u2"])
def test_other_dtypes_take_the_sparse_gemm(dtype):
    ref = (rng.integers(-50, 200, (*SCAN, *DET)) if dtype == "int16"
           else rng.uniform(0, 1e3, (*SCAN, *DET))).astype(dtype)
    got = framescope.from_array(ref).fs.radial_profile(r_max=8, client="inline")
    exp, _ = _reference(ref, 6, 7, 0, 1, 8)
    np.testing.assert_allclose(got.values, exp, rtol=1e-6)


def test_non_contiguous_tile_takes_the_fallback():
    udf = RadialProfile(6, 7, bin_width=2, mask=HOT, normalize="sum")
    meta = Meta((1, 6), DET, np.dtype("uint16"))
    plan = udf.prepare(meta)
    tile = _frames("uint16", (12, *DET))[::2]  # every other frame: not C-contiguous
    n_bins = udf.rings(DET).n_bins
    fused, slow = np.empty((6, n_bins), np.float32), np.empty((6, n_bins), np.float32)
    udf.process_tile(Tile(np.ascontiguousarray(tile), np.arange(6)), {"profile": fused}, plan)
    udf.process_tile(Tile(tile, np.arange(6)), {"profile": slow}, plan)
    np.testing.assert_allclose(slow, fused, rtol=1e-6)
    np.testing.assert_allclose(fused, _reference(tile, 6, 7, 0, 2, n_bins, HOT, "sum")[0],
                               rtol=1e-6)


def test_roi_leaves_nan_outside(dataset, client):
    arr, ref = dataset
    roi = np.zeros(SCAN, bool)
    roi[1:4, [0, 3, 6]] = True
    exp, _ = _reference(ref, 6, 7, 0, 1, 10)
    for c in ("inline", client):
        got = arr.fs.radial_profile(n_bins=10, roi=roi, client=c).values
        np.testing.assert_allclose(got[roi], exp[roi], rtol=2e-6)
        assert np.isnan(got[~roi]).all()


# ---- geometry --------------------------------------------------------------------------------
def test_a_function_of_radius_gives_its_profile():
    # f(r) = 3 * floor(r / 2) + 7 is constant on each 2-pixel ring: mean = 3 b + 7
    h, w, cy, cx = 21, 24, 10, 11
    yy, xx = np.indices((h, w))
    r = np.hypot(yy - cy, xx - cx)
    frame = (3 * np.floor(r / 2) + 7).astype(np.float32)
    arr = framescope.from_array(np.broadcast_to(frame, (2, 3, h, w)).copy())
    prof = arr.fs.radial_profile(cy, cx, bin_width=2, client="inline")
    n_bins = prof.sizes["radius"]
    assert n_bins == int(np.hypot(cy, w - 1 - cx) // 2) + 1  # out to the farthest corner
    np.testing.assert_array_equal(prof.radius, 2 * np.arange(n_bins) + 1.0)
    np.testing.assert_allclose(prof.values, np.broadcast_to(3 * np.arange(n_bins) + 7.0,
                                                            (2, 3, n_bins)))
    assert prof.counts.values.sum() == h * w  # the default bins take every pixel
    assert prof.counts.values[0] == 9  # r < 2: the centre, 4 at r = 1, 4 at sqrt(2)
    total = arr.fs.radial_profile(cy, cx, bin_width=2, normalize="sum", client="inline")
    np.testing.assert_allclose(total.sum("radius"), frame.sum(dtype="f8"), rtol=1e-6)


def test_rings_resolve_the_bins():
    assert RadialProfile(4, 4, r_max=3).rings((9, 9)).n_bins == 3
    rings = RadialProfile(4, 4, r_max=10, n_bins=4, r_min=2).rings((9, 9))
    assert (rings.bin_width, rings.r_max) == (2.0, 10.0)
    np.testing.assert_allclose(rings.edges, [2, 4, 6, 8, 10])
    rounded = RadialProfile(r_max=10, bin_width=3).rings((9, 9))
    assert (rounded.cy, rounded.cx, rounded.n_bins, rounded.r_max) == (4, 4, 4, 12.0)
    assert RadialProfile(r_max=10, bin_width=0.1).rings((9, 9)).n_bins == 100
    assert RadialProfile(n_bins=5, bin_width=0.5).rings((9, 9)).r_max == 2.5


def test_empty_bins_are_nan_means_and_zero_sums():
    # 0.25 px bins around a pixel centre: no pixel lies at 0.25 <= r < 1
    frames = np.ones((1, 2, 7, 7), np.uint8)
    arr = framescope.from_array(frames)
    mean = arr.fs.radial_profile(3, 3, bin_width=0.25, n_bins=6, client="inline")
    np.testing.assert_array_equal(mean.counts, [1, 0, 0, 0, 4, 4])  # r = 0, 1, sqrt(2)
    assert np.isnan(mean.values[..., [1, 2, 3]]).all()
    np.testing.assert_array_equal(mean.values[..., [0, 4, 5]], 1)
    total = arr.fs.radial_profile(3, 3, bin_width=0.25, n_bins=6, normalize="sum",
                                  client="inline")
    np.testing.assert_array_equal(total.values[0, 0], [1, 0, 0, 0, 4, 4])


def test_key_depends_on_mask_content_not_identity():
    a = RadialProfile(mask=HOT.copy())
    assert a.key == RadialProfile(mask=HOT.copy()).key
    assert a.key != RadialProfile(mask=~HOT).key
    assert a.key != RadialProfile().key


# ---- bad parameters --------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_bins": 0}, r"n_bins: expected a positive integer, found 0"),
    ({"n_bins": -3}, r"n_bins: expected a positive integer, found -3"),
    ({"n_bins": 2.5}, r"n_bins: expected a positive integer, found 2.5"),
    ({"bin_width": 0}, r"bin_width: expected a positive number of pixels, found 0"),
    ({"r_min": -1}, r"r_min: expected a number >= 0, found -1"),
    ({"r_max": 2, "r_min": 3}, r"r_max: expected a number > r_min = 3, found 2"),
    ({"n_bins": 2, "r_max": 4, "bin_width": 2}, r"at most two of n_bins, r_max and bin_width"),
    ({"normalize": "median"}, r"normalize: expected one of \('mean', 'sum'\), found 'median'"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RadialProfile(**kwargs)


def test_bad_geometry_is_named_before_any_read(client):
    arr = framescope.from_array(np.ones((2, 2, 8, 10), "uint16"))
    with pytest.raises(ValueError, match=r"centre \(cy, cx\) = \(9.0, 3.0\) is off the 8x10 "
                                         r"frame: expected -0.5 <= cy <= 7.5"):
        arr.fs.radial_profile(9, 3, client="inline")
    with pytest.raises(ValueError, match=r"-0.5 <= cx <= 9.5"):
        arr.fs.radial_profile(3, -1, client="inline")
    with pytest.raises(MaskError, match=r"expected the frame shape \(8, 10\), found \(10, 8\)"):
        arr.fs.radial_profile(mask=np.zeros((10, 8), bool), client="inline")
    with pytest.raises(MaskError, match=r"expected a 2D bool array \(True = exclude\), found "
                                        r"uint8 shape \(8, 10\)"):
        arr.fs.radial_profile(mask=np.zeros((8, 10), np.uint8), client="inline")
    with pytest.raises(ValueError, match=r"no detector pixel in any bin.* 80 pixels masked"):
        arr.fs.radial_profile(mask=np.ones((8, 10), bool), client="inline")
    with pytest.raises(ValueError, match=r"no detector pixel in any bin: radii 20.0 to 21.0"):
        arr.fs.radial_profile(r_min=20, n_bins=1, client="inline")
    # the engine alone raises the same (in prepare, on a worker)
    with pytest.raises(ValueError, match=r"no detector pixel in any bin"):
        framescope.run(RadialProfile(r_min=20, n_bins=1), arr, client=client)
    with pytest.raises(ValueError, match=r"is off the 8x10 frame"):
        framescope.run(RadialProfile(9, 3), arr, client=client)


def test_fused_dtypes_run_the_kernel_and_skip_masked_pixels(monkeypatch):
    from framescope.udf import _radial

    seen = []
    real = _radial.radial_sums
    monkeypatch.setattr(_radial, "radial_sums", lambda *a: seen.append(a[0].dtype) or real(*a))
    for dtype in DTYPES:
        framescope.from_array(_frames(dtype)).fs.radial_profile(client="inline")
    assert seen == [np.dtype(d) for d in DTYPES]
    # NaN (dead) pixels under the mask or beyond r_max are never read: NaN * 0 would leak
    ref = _frames("float32")
    ref[..., HOT] = np.nan
    ref[..., 0, 14] = np.nan  # the corner farthest from (6, 7), r = 9.9
    for fused in (True, False):
        arr = framescope.from_array(ref if fused else ref.astype("f8"))
        got = arr.fs.radial_profile(r_max=9, mask=HOT, normalize="sum", client="inline")
        assert np.isfinite(got.values).all()  # bin 0 (its only pixel masked) sums to 0
        np.testing.assert_allclose(got.values, _reference(ref, 6, 7, 0, 1, 9, HOT, "sum")[0],
                                   rtol=2e-6)


@pytest.mark.skipif(not cupy_available(), reason="cupy with a CUDA device needed")
@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_cupy_matches_numpy(executor, client):
    ref = _frames("uint16")
    arr = framescope.from_array(ref, chunks=(2, 7, *DET))
    c = "inline" if executor == "inline" else client
    udf = RadialProfile(6.3, 7.6, bin_width=1.5, mask=HOT)
    cpu = framescope.run(udf, arr, client=c, backend="numpy")
    gpu = framescope.run(udf, arr, client=c, backend="cupy")
    np.testing.assert_allclose(gpu["profile"].values, cpu["profile"].values, rtol=1e-6)
    np.testing.assert_array_equal(gpu["counts"].values, cpu["counts"].values)


# ---- physical units --------------------------------------------------------------------------
A = 0.5e-3  # rad per pixel


def _calibrated(ref, **fields):
    return framescope.from_array(ref).fs.calibrate(**fields)


def test_calibration_adds_every_unit_and_keeps_the_pixel_result():
    from framescope.calibration import electron_wavelength

    ref = _frames("uint16")
    plain = framescope.run(RadialProfile(6.3, 7.6, bin_width=1.5), framescope.from_array(ref),
                           client="inline")
    assert set(plain.coords) == {"scan_y", "scan_x", "radius"}
    cal = _calibrated(ref, energy="200 kV", angle_per_px=A)
    res = framescope.run(RadialProfile(6.3, 7.6, bin_width=1.5), cal, client="inline")
    np.testing.assert_array_equal(res["profile"], plain["profile"])
    np.testing.assert_array_equal(res["counts"], plain["counts"])
    r = res["radius"].values
    tth = r * A  # angle_per_px only: the linear mapping
    lam = electron_wavelength(200e3)
    expected = {"angle": (tth * 1e3, "mrad"), "two_theta": (np.degrees(tth), "deg"),
                "q": (4 * np.pi * np.sin(tth / 2) / lam * 1e-9, "1/nm"),
                "k": (2 * np.sin(tth / 2) / lam * 1e-10, "1/Å")}
    for name, (values, units) in expected.items():
        assert name in res.coords
        assert res[name].dims == ("radius",)
        np.testing.assert_allclose(res[name].values, values, rtol=1e-12)
        assert res[name].attrs["units"] == units
    # a flat detector (camera length and pixel size): 2θ = atan(r p / L)
    flat = _calibrated(ref, camera_length=0.1, pixel_size=55e-6)
    res = framescope.run(RadialProfile(r_max=9), flat, client="inline")
    np.testing.assert_allclose(res["angle"].values,
                               np.arctan(res["radius"].values * 55e-6 / 0.1) * 1e3, rtol=1e-12)
    assert "q" not in res.coords  # no energy, no wavelength


def test_bins_in_mrad_are_the_pixel_bins_they_equal():
    # integer centre: many pixel centres lie exactly on the edges (r = 1, 2, ...); at
    # 0.3 mrad/px, r * 0.3 / 0.3 rounds below r for 12 of them: the mrad bins must still
    # put them where the pixel bins do
    a = 0.3e-3
    ref = _frames("float32")
    arr = framescope.from_array(ref)
    cal = _calibrated(ref, angle_per_px=a, center=(6, 7))
    px = arr.fs.radial_profile(6, 7, r_max=8, mask=HOT, client="inline")
    mrad = cal.fs.radial_profile(unit="mrad", bin_width=a * 1e3, r_max=8 * a * 1e3,
                                 mask=HOT, client="inline")
    assert mrad.dims == ("scan_y", "scan_x", "angle")
    np.testing.assert_allclose(mrad.angle, 0.3 * (np.arange(8) + 0.5))
    np.testing.assert_allclose(mrad.radius, px.radius)
    np.testing.assert_array_equal(mrad.counts, px.counts)
    np.testing.assert_array_equal(mrad.values, px.values)
    assert (mrad.attrs["unit"], mrad.attrs["cy"], mrad.attrs["cx"]) == ("mrad", 6, 7)


def test_bins_in_q_against_numpy():
    from framescope.calibration import electron_wavelength

    ref = _frames("uint16")
    cal = _calibrated(ref, energy="300 kV", camera_length=0.2, pixel_size=1e-3,
                      center=(6.3, 7.6))
    got = cal.fs.radial_profile(unit="q_nm^-1", r_min=2, bin_width=3, client="inline")
    lam = electron_wavelength(300e3)
    yy, xx = np.indices(DET)
    q = 4 * np.pi * np.sin(np.arctan(np.hypot(yy - 6.3, xx - 7.6) * 1e-3 / 0.2) / 2) / lam
    b = np.floor((q * 1e-9 - 2) / 3).astype(int)
    n = got.sizes["q"]
    assert b.max() == n - 1  # the default bins reach the farthest pixel
    keep = b >= 0
    counts = np.bincount(b[keep], minlength=n)
    flat = ref.reshape(-1, *DET).astype("f8")
    exp = np.stack([np.bincount(b[keep], weights=f[keep], minlength=n) for f in flat])
    np.testing.assert_array_equal(got.counts, counts)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got.values.reshape(-1, n), exp / counts, rtol=2e-6)
    np.testing.assert_allclose(got.q, 2 + 3 * (np.arange(n) + 0.5))


def test_default_centre_is_the_calibration_s():
    ref = _frames("uint16")
    got = _calibrated(ref, center=(4.5, 9.0)).fs.radial_profile(r_max=4, client="inline")
    exp, _ = _reference(ref, 4.5, 9.0, 0, 1, 4)
    np.testing.assert_allclose(got.values, exp, rtol=2e-6)
    assert (got.attrs["cy"], got.attrs["cx"]) == (4.5, 9.0)


def test_units_the_calibration_cannot_give_are_named():
    from framescope.calibration import CalibrationError

    ref = _frames("uint8")
    with pytest.raises(ValueError, match=r"unit: expected one of \['px', 'mrad'"):
        RadialProfile(unit="nm")
    with pytest.raises(ValueError, match=r"bin_width: expected a positive number of 1/nm"):
        RadialProfile(unit="q_nm^-1", bin_width=-1)
    with pytest.raises(CalibrationError, match=r"angle_per_px .*found uncalibrated data"):
        framescope.from_array(ref).fs.radial_profile(unit="mrad", client="inline")
    with pytest.raises(CalibrationError, match=r"energy: .*'q_nm\^-1' needs.*energy="):
        _calibrated(ref, angle_per_px=A).fs.radial_profile(unit="q_nm^-1", client="inline")
    # the default bin width in mrad: one pixel
    with pytest.raises(ValueError, match=r"no detector pixel in any bin: radii 50.0 to "
                                         r"50.5 mrad"):
        _calibrated(ref, angle_per_px=A).fs.radial_profile(unit="mrad", r_min=50, n_bins=1,
                                                           client="inline")
