"""Virtual images with masks in mrad / 1/Å: the same numbers as the pixel masks they imply
and as plain numpy on the same frames, on every path (accessor, run, files, dask workers)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.calibration import Calibration, electron_wavelength
from framescope.datasets import synthetic
from framescope.engine._cache import results
from framescope.errors import MaskError
from framescope.udf import ApplyMasks, Meta

CY, CX, A = 15.5, 16.2, 0.5  # beam centre (px), mrad per pixel

PHYSICAL = {
    "adf": fm.ring(r_in=2.1, r_out=6.3, units="mrad"),
    "bf": fm.disk(r=1.7, units="mrad"),
    "box": fm.box(-3.1, -4.05, 2.2, 1.3, units="mrad"),
    "tri": fm.polygon([(-5.1, -4.3), (-4.7, 5.2), (4.9, 0.3)], units="mrad"),
    "pt": fm.point(1.9, -2.3, units="mrad"),
    "px": fm.disk(4, 5, 2.5),  # a pixel mask in the same stack
}
# the same detectors written out in pixels: px = centre + mrad / A
IMPLIED = {
    "adf": fm.ring(CY, CX, 2.1 / A, 6.3 / A),
    "bf": fm.disk(CY, CX, 1.7 / A),
    "box": fm.box(CY - 3.1 / A, CX - 4.05 / A, CY + 2.2 / A, CX + 1.3 / A),
    "tri": fm.polygon([(CY + y / A, CX + x / A) for y, x in PHYSICAL["tri"].vertices]),
    "pt": fm.point(CY + 1.9 / A, CX - 2.3 / A),
    "px": PHYSICAL["px"],
}


@pytest.fixture(scope="module")
def data():
    arr = synthetic(scan=(8, 8), det=(32, 32))
    frames = arr.values.astype("float64")
    return arr, frames


def _numpy(frames, mask):
    return (frames * mask).sum(axis=(2, 3))


def test_accessor_mrad_equals_implied_pixels_and_numpy(data):
    arr, frames = data
    cal = arr.fs.calibrate(angle_per_px="0.5 mrad", center=(CY, CX))
    got = cal.fs.virtual_image(PHYSICAL, client="inline", cache=False)
    ref = arr.fs.virtual_image(IMPLIED, client="inline", cache=False)
    np.testing.assert_array_equal(got.values, ref.values)
    # numpy reference mask from the array's own coordinates (mrad), not the conversion
    d = np.hypot(cal.det_y.values[:, None], cal.det_x.values[None, :])
    np.testing.assert_allclose(got.sel(mask="adf"), _numpy(frames, (d >= 2.1) & (d <= 6.3)),
                               rtol=1e-6)
    for name, spec in IMPLIED.items():
        np.testing.assert_allclose(got.sel(mask=name), _numpy(frames, spec.rasterize((32, 32))),
                                   rtol=1e-6, err_msg=name)
    assert fm.MaskStack.from_json(got.attrs["masks"]) == fm.MaskStack(PHYSICAL)
    px = fm.MaskStack.from_json(got.attrs["masks_px"])
    assert not px.is_physical
    assert got.attrs["calibration"] == cal.attrs["calibration"]


def test_run_resolves_with_the_meta_calibration(data):
    arr, frames = data
    cal = arr.fs.calibrate(angle_per_px="0.5 mrad", center=(CY, CX))
    res = framescope.run(ApplyMasks(PHYSICAL), cal, client="inline")["intensity"]
    for name, spec in IMPLIED.items():
        np.testing.assert_allclose(res.sel(mask=name), _numpy(frames, spec.rasterize((32, 32))),
                                   rtol=1e-6, err_msg=name)


def test_spatial_frequency_needs_and_uses_the_energy(data):
    arr, frames = data
    cal = arr.fs.calibrate(energy="300 kV", angle_per_px="0.5 mrad", center=(CY, CX))
    lam = electron_wavelength(300e3)  # m
    k_in, k_out = 0.15, 0.3  # 1/Å; theta = k * lambda
    ring = fm.ring(r_in=k_in, r_out=k_out, units="1/Å")
    got = cal.fs.virtual_image(ring, client="inline", cache=False)
    theta = np.hypot(cal.det_y.values[:, None], cal.det_x.values[None, :]) * 1e-3
    k = theta / lam * 1e-10
    np.testing.assert_allclose(got, _numpy(frames, (k >= k_in) & (k <= k_out)), rtol=1e-6)
    no_energy = arr.fs.calibrate(angle_per_px="0.5 mrad")
    with pytest.raises(MaskError, match=r"mask 'm0' is in 1/Å .*beam energy"):
        no_energy.fs.virtual_image(ring, client="inline")


def test_recalibrating_changes_the_image_despite_the_caches(data, monkeypatch):
    arr, frames = data
    results.clear()
    ring = fm.ring(r_in=2.1, r_out=6.3, units="mrad")
    a = arr.fs.calibrate(angle_per_px="0.5 mrad", center=(CY, CX))
    b = arr.fs.calibrate(angle_per_px="0.25 mrad", center=(CY, CX))
    ref_a = _numpy(frames, fm.ring(CY, CX, 4.2, 12.6).rasterize((32, 32)))
    ref_b = _numpy(frames, fm.ring(CY, CX, 8.4, 25.2).rasterize((32, 32)))
    # accessor: its result cache is keyed by data (not calibration) and mask
    np.testing.assert_allclose(a.fs.virtual_image(ring, client="inline"), ref_a, rtol=1e-6)
    np.testing.assert_allclose(b.fs.virtual_image(ring, client="inline"), ref_b, rtol=1e-6)
    # run(): the per-process prepared plans are keyed by the UDF (mrad masks) and the Meta
    for cal, ref in ((a, ref_a), (b, ref_b)):
        got = framescope.run(ApplyMasks(ring), cal, client="inline")["intensity"][..., 0]
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    # the mrad ring shares the accessor's cache with the pixel ring it implies
    seen = []
    real = ApplyMasks.prepare
    monkeypatch.setattr(ApplyMasks, "prepare", lambda self, meta: seen.append(1)
                        or real(self, meta))
    arr.fs.virtual_image(fm.ring(CY, CX, 4.2, 12.6), client="inline")
    assert seen == []


def test_file_run_on_dask_workers(data, tmp_path, client):
    arr, frames = data
    path = tmp_path / "d.npy"
    np.save(path, arr.values.reshape(64, 32, 32))
    opened = framescope.open(path, scan=(8, 8))
    cal = opened.fs.calibrate(angle_per_px="0.5 mrad", center=(CY, CX))
    # ApplyMasks ships the mrad specs; the workers resolve them with the run's Meta
    res = framescope.run(ApplyMasks(PHYSICAL), cal, client=client)["intensity"]
    for name, spec in IMPLIED.items():
        np.testing.assert_allclose(res.sel(mask=name), _numpy(frames, spec.rasterize((32, 32))),
                                   rtol=1e-6, err_msg=name)


def test_uncalibrated_data_is_a_clear_error_before_any_read(data):
    arr, _ = data
    udf = ApplyMasks({"adf": PHYSICAL["adf"], "px": PHYSICAL["px"]})
    meta = Meta(scan_shape=(8, 8), frame_shape=(32, 32), dtype=np.dtype("uint16"))
    # buffers() is declared before any frame is read: it raises there
    with pytest.raises(MaskError, match=r"mask 'adf' is in mrad, found uncalibrated data: "
                                        r"calibrate the data first"):
        udf.buffers(meta)
    with pytest.raises(MaskError, match=r"mask 'adf' is in mrad, found uncalibrated data"):
        framescope.run(udf, arr, client="inline")
    with pytest.raises(MaskError, match=r"mask 'bf' is in mrad, found uncalibrated data"):
        arr.fs.virtual_image({"bf": PHYSICAL["bf"]}, client="inline")
    # a calibration without the angle per pixel says so
    with pytest.raises(MaskError, match=r"without the angle per detector pixel"):
        arr.fs.calibrate(energy="300 kV").fs.virtual_image(PHYSICAL["bf"], client="inline")
    cal = Calibration(angle_per_px=0.5e-3, center=(CY, CX))
    assert list(udf.buffers(replace(meta, calibration=cal))) == ["intensity"]
    assert udf.pixel_masks(replace(meta, calibration=cal))["adf"] == IMPLIED["adf"]
