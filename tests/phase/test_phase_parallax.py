"""parallax(arr) (tilt-corrected bright field) on the synthetic phase object with known
defocus, rotation and phase.

Parameters: 64x64 detector, BF disk radius 12 px, defocus 8 rad at the rim, a 32x32 scan of
step 2 object px (0.4 Å), 300 kV, dose 1e6, a weak phase object (atoms of 0.3 rad, waves
of 0.1 rad). Step 2 rather than 1 keeps the rim pixels' shift (13.6 object px) at 6.8 scan
px, a fifth of the scan, so the images still overlap enough to register.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from framescope.calibration import electron_wavelength
from framescope.datasets import synthetic
from framescope.datasets._synthetic import SyntheticReader
from framescope.phase import parallax

DET, SEMICONV, DEFOCUS_RAD, STEP, SCAN = 64, 12.0, 8.0, 2, 32
PIXEL, ENERGY = 0.2e-10, 300e3
SIM = {"scan": (SCAN, SCAN), "det": (DET, DET), "dose": 1e6, "semiconv": SEMICONV,
       "step": STEP, "smooth_phase": 0.1, "atom_phase": 0.3, "dtype": "float32",
       "pixel_size": PIXEL, "energy": ENERGY}


def _defocus_m(rad: float) -> float:
    # phase_common: Δf = defocus_rad λ / (π α²), α = semiconv px × λ / (det × pixel_size)
    lam = electron_wavelength(ENERGY)
    alpha = SEMICONV * lam / (DET * PIXEL)
    return rad * lam / (math.pi * alpha**2)


def _band(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``img`` band-passed to ``lo..hi`` times the aperture frequency (``SEMICONV / DET``
    cycles per object px, ``STEP`` times that per scan px)."""
    g_ap = SEMICONV / DET * STEP
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    g = np.hypot(fy, fx) / g_ap
    return np.fft.ifft2(np.fft.fft2(img - img.mean()) * ((g >= lo) & (g <= hi))).real


def _r(a: np.ndarray, b: np.ndarray, crop: int = 4) -> float:
    sl = slice(crop, a.shape[0] - crop)
    return float(np.corrcoef(a[sl, sl].ravel(), b[sl, sl].ravel())[0, 1])


@pytest.fixture(scope="module")
def positive():
    arr = synthetic(**SIM, defocus=DEFOCUS_RAD, calibrated=True)
    return arr, parallax(arr, upsample=2, client="inline")


def test_fitted_defocus_equals_simulated(positive):
    _, ds = positive
    expected_nm = _defocus_m(DEFOCUS_RAD) * 1e9  # 14.72 nm
    assert ds["defocus"].attrs["units"] == "nm"
    # measured 15.0 nm (+2 %); an x/y anisotropy of the registration gives ~0.3 nm of
    # spurious astigmatism
    assert float(ds["defocus"]) == pytest.approx(expected_nm, rel=0.05)
    # a round probe: astigmatism small against the defocus, no rotation
    assert abs(float(ds["astigmatism"])) < 0.05 * expected_nm
    assert abs(float(ds["rotation"])) < 1.0
    assert int(ds["fit_rows"]) == SCAN
    assert int(ds["bin"]) == 1


def test_negative_defocus_has_negative_sign():
    arr = synthetic(**SIM, defocus=-DEFOCUS_RAD, calibrated=True)
    ds = parallax(arr, client="inline")
    assert float(ds["defocus"]) == pytest.approx(_defocus_m(-DEFOCUS_RAD) * 1e9, rel=0.05)
    assert abs(float(ds["rotation"])) < 1.0  # the branch near the calibration's 0


def test_shifts_equal_lambda_defocus_k(positive):
    _, ds = positive
    # s = λ Δf k = Δf θ; θ = q λ/(det × pixel); in scan px: / (step × pixel)
    lam = electron_wavelength(ENERGY)
    per_px = _defocus_m(DEFOCUS_RAD) * lam / (DET * PIXEL) / (STEP * PIXEL)
    expected = per_px * np.asarray(ds["bf_k"])  # (n, 2) scan px, along (y, x)
    assert per_px * SEMICONV > 6  # the rim moves by several scan px
    np.testing.assert_allclose(ds["model_shifts"], expected, atol=0.06 * per_px * SEMICONV)
    measured = np.asarray(ds["shifts"])
    ok = np.isfinite(measured).all(axis=1)
    assert ok.mean() > 0.95
    err = np.hypot(*(measured[ok] - expected[ok]).T)
    assert np.median(err) < 0.3  # scan px (measured 0.13)
    assert np.percentile(err, 90) < 0.5


def test_tcbf_phase_correlates_with_true_phase(positive):
    """Band 0.2-0.55 of the aperture frequency: the first lobe of the tcBF transfer
    ``sin chi(g)`` (chi = 8 (g/g_ap)² rad: 0.3 to 2.4 rad; it crosses π at 0.63); below it
    the transfer vanishes, above it the aperture overlap and the zero at 0.63 do. Edges of
    4 scan px are cropped (shifted images cover them partly)."""
    arr, ds = positive
    truth = arr["true_phase"].values
    r = _r(_band(ds["phase"].values, 0.2, 0.55), _band(truth, 0.2, 0.55))
    assert r >= 0.9  # measured 0.96
    # the phase flip: in the second lobe (sin chi < 0) the flipped image still correlates
    # positively; unflipped it would anticorrelate
    r2 = _r(_band(ds["phase"].values, 0.65, 0.85), _band(truth, 0.65, 0.85))
    assert r2 > 0.5  # measured 0.78
    r_raw = _r(_band(ds["tcbf"].values, 0.65, 0.85), _band(truth, 0.65, 0.85))
    assert r_raw < 0


def test_upsampled_tcbf_on_the_object_grid(positive):
    _, ds = positive
    up = ds["phase_upsampled"].values
    assert up.shape == (2 * SCAN, 2 * SCAN)
    # step 2 upsampled 2x: one fine px is one object px; the probe centre of scan (0, 0)
    # is object pixel (DET // 2, DET // 2)
    reader = SyntheticReader(**SIM, defocus=DEFOCUS_RAD)
    truth = reader.phase[DET // 2:DET // 2 + 2 * SCAN, DET // 2:DET // 2 + 2 * SCAN]
    # the same physical band: aperture frequency is SEMICONV / DET per fine px
    g_ap = SEMICONV / DET
    fy = np.fft.fftfreq(2 * SCAN)[:, None]
    fx = np.fft.fftfreq(2 * SCAN)[None, :]
    keep = (np.hypot(fy, fx) / g_ap >= 0.2) & (np.hypot(fy, fx) / g_ap <= 0.55)
    a = np.fft.ifft2(np.fft.fft2(up - up.mean()) * keep).real
    b = np.fft.ifft2(np.fft.fft2(truth - truth.mean()) * keep).real
    assert _r(a, b, crop=8) >= 0.9


def test_rotated_scan_gives_the_rotation():
    arr = synthetic(**SIM, defocus=DEFOCUS_RAD, rotation=0.5, calibrated=True)
    # the given rotation (0 degrees) only picks the branch: the fit finds the scan's
    ds = parallax(arr, rotation=0.0, client="inline")
    assert float(ds["rotation"]) == pytest.approx(math.degrees(0.5), abs=1.0)
    assert float(ds["defocus"]) == pytest.approx(_defocus_m(DEFOCUS_RAD) * 1e9, rel=0.05)


def test_known_defocus_sets_the_model(positive):
    arr, fitted = positive
    given = _defocus_m(DEFOCUS_RAD)
    ds = parallax(arr, defocus=f"{given * 1e9} nm", client="inline")
    lam = electron_wavelength(ENERGY)
    per_px = given * lam / (DET * PIXEL) / (STEP * PIXEL)
    np.testing.assert_allclose(ds["model_shifts"], per_px * np.asarray(ds["bf_k"]),
                               rtol=1e-9, atol=1e-12)
    # the fit is still reported (registration started from the given model), and the
    # image is the fitted one's to within the fit error
    assert float(ds["defocus"]) == pytest.approx(given * 1e9, rel=0.05)
    assert _r(ds["tcbf"].values, fitted["tcbf"].values) > 0.99


def test_defocus_needs_calibration():
    arr = synthetic(**SIM, defocus=DEFOCUS_RAD)
    with pytest.raises(ValueError, match="defocus= needs a calibration"):
        parallax(arr, radius=SEMICONV, defocus=1e-8, client="inline")
