from __future__ import annotations

import numpy as np
import pytest

from framescope.calibration import Calibration, CalibrationError, DiskFit, bf_disk
from framescope.datasets import synthetic


def drawn_disk(shape, cy, cx, r, sub=16):
    """Each pixel's covered fraction of a sharp disk, from sub x sub samples per pixel."""
    h, w = shape
    o = (np.arange(sub) + 0.5) / sub - 0.5
    yy = np.arange(h)[:, None, None, None] + o[None, None, :, None]
    xx = np.arange(w)[None, :, None, None] + o[None, None, None, :]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).mean(axis=(2, 3))


@pytest.mark.parametrize(("cy", "cx", "r"), [(30.3, 33.71, 10.4), (20.5, 21.25, 4.6),
                                             (40.1, 28.9, 17.2)])
def test_drawn_disk(cy, cx, r):
    cover = drawn_disk((64, 64), cy, cx, r)
    assert cover.sum() == pytest.approx(np.pi * r * r, rel=1e-3)  # the reference is a disk
    exact = bf_disk(1000 * cover)
    assert exact.center == pytest.approx((cy, cx), abs=0.01)
    assert exact.radius == pytest.approx(r, abs=0.01)
    # Poisson noise, a dark-field halo around the disk, a background and a hot pixel
    yy, xx = np.mgrid[:64, :64]
    halo = 20 * np.exp(-np.hypot(yy - cy, xx - cx) / 8)
    noisy = np.random.default_rng(1).poisson(500 * cover + halo + 5).astype(float)
    noisy[5, 7] = 1e5
    fit = bf_disk(noisy)
    assert fit.center == pytest.approx((cy, cx), abs=0.05)
    assert fit.radius == pytest.approx(r, abs=0.05)
    assert fit.level == pytest.approx(500 + 5, rel=0.1)
    assert fit.background < 0.05 * fit.level


def test_synthetic_mean_frame_recovers_calibration():
    # smooth_phase=0: no long-range field, so the mean deflection (which would move the
    # mean frame's disk) is negligible; the descan offset moves the disk off the middle
    arr = synthetic(scan=(24, 24), det=(48, 48), semiconv=9.7, dose=1e3, smooth_phase=0.0,
                    descan_offset=(1.3, -0.7), seed=2)
    truth = arr.encoding["framescope_source"].reader.calibration()
    fit = bf_disk(arr.mean(("scan_y", "scan_x")), truth.semiconv)
    assert fit.center == pytest.approx(truth.center, abs=0.1)
    assert fit.radius == pytest.approx(9.7, abs=0.5)
    # the synthetic's aperture is anti-aliased in amplitude, so its intensity disk (the
    # noiseless vacuum pattern's area) is a little smaller than semiconv
    vacuum = synthetic(scan=(1, 1), det=(48, 48), semiconv=9.7, atom_phase=0.0,
                       smooth_phase=0.0, noise=False, dtype="float32").values[0, 0]
    assert fit.radius == pytest.approx(np.sqrt(vacuum.sum() / vacuum.max() / np.pi), abs=0.05)
    assert fit.angle_per_px == pytest.approx(truth.angle_per_px, rel=0.03)


def test_fields_and_calibration():
    fit = bf_disk(1000 * drawn_disk((48, 48), 22.0, 25.0, 8.0), "16 mrad")
    assert isinstance(fit, DiskFit)
    assert fit.semiconv == pytest.approx(0.016)
    assert fit.angle_per_px == pytest.approx(0.002, rel=0.01)
    cal = fit.calibration(Calibration(energy="200 kV"))
    assert cal.center == pytest.approx((22.0, 25.0), abs=0.01)
    assert cal.angle_per_px == fit.angle_per_px
    assert cal.energy == 200e3
    assert cal.sources["center"] == cal.sources["angle_per_px"] == "bf_disk"
    assert set(bf_disk(np.asarray(fit.frame)).fields()) == {"center"}  # no semiconv given


def test_overlay():
    hv = pytest.importorskip("holoviews")
    fit = bf_disk(1000 * drawn_disk((48, 48), 22.0, 25.0, 8.0))
    overlay = fit.overlay()
    image, circle, centre = overlay
    assert isinstance(image, hv.Image)
    assert isinstance(circle, hv.Ellipse)
    assert circle.x == pytest.approx(25.0, abs=0.01)
    assert circle.y == pytest.approx(22.0, abs=0.01)
    assert circle.width == pytest.approx(16.0, abs=0.02)
    assert centre.data.shape[0] == 1


@pytest.mark.parametrize(("frame", "match"), [
    (np.zeros((2, 8, 8)), "2D frame"),
    (np.ones((16, 16)), "flat"),
    (np.pad(np.ones((16, 8)), ((0, 0), (0, 8))), "border"),
])
def test_errors(frame, match):
    with pytest.raises(CalibrationError, match=match):
        bf_disk(frame)


def test_bad_semiconv():
    with pytest.raises(CalibrationError, match="semiconv"):
        bf_disk(drawn_disk((32, 32), 16, 16, 5), "5 nm")
