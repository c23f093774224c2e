"""Azimuthal integration in q, 2θ and χ against pyFAI on the same frames and geometry.

The geometry is an X-ray one (flat detector 5 cm away, 172 µm pixels, up to 2θ ≈ 14°), where
the exact ``2θ = atan(r p / L)`` and the linear ``r * p / L`` differ by up to 2 %: agreement
shows framescope uses the flat-detector geometry when camera length and pixel size are known.

Both sides bin whole pixels by their centre. pyFAI's pure-numpy engine (``("no",
"histogram", "python")``) then agrees bin for bin. Its Cython engines truncate the bin index
towards zero, so pixels up to one bin below ``radial_range`` land in the first bin; they are
compared with ranges that start at 0 (nothing below), and keep bin centres in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.calibration import photon_wavelength
from framescope.udf import RadialProfile

pyFAI = pytest.importorskip("pyFAI")
try:
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator
except ImportError:  # pyFAI < 2024.1
    from pyFAI.azimuthalIntegrator import AzimuthalIntegrator  # type: ignore[no-redef]
from pyFAI.detectors import Detector  # noqa: E402

H, W = 100, 110
PIXEL, DISTANCE, ENERGY = 172e-6, 0.05, 12.4e3  # m, m, eV (λ = 1.0 Å)
CY, CX = 47.3, 51.6  # off the pixel grid: no pixel centre on χ = 0, ±90, 180
EXACT = ("no", "histogram", "python")
CYTHON = ("no", "histogram", "cython")


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(1)
    r = np.hypot(*np.indices((H, W)) - np.array([CY, CX])[:, None, None])
    frames = (100 + 50 * np.cos(0.7 * r) + rng.normal(0, 5, (1, 2, H, W))).astype("f4")
    arr = framescope.from_array(frames).fs.calibrate(
        energy=ENERGY, radiation="xray", camera_length=DISTANCE, pixel_size=PIXEL,
        center=(CY, CX))
    # pyFAI's PONI is measured from the detector corner; pixel i's centre is at (i + 0.5) p
    ai = AzimuthalIntegrator(dist=DISTANCE, poni1=(CY + 0.5) * PIXEL,
                             poni2=(CX + 0.5) * PIXEL, wavelength=photon_wavelength(ENERGY),
                             detector=Detector(pixel1=PIXEL, pixel2=PIXEL, max_shape=(H, W)))
    return arr, frames, ai


def _integrate1d(ai, frame, n, unit, lo, hi, method):
    return ai.integrate1d(frame, n, unit=unit, radial_range=(lo, hi), method=method,
                          correctSolidAngle=False, polarization_factor=None)


@pytest.mark.parametrize(("unit", "dim", "lo", "hi"), [("q_nm^-1", "q", 0.5, 14.0),
                                                        ("2th_deg", "two_theta", 0.3, 13.0)])
def test_radial_profile_matches_pyfai_integrate1d(setup, unit, dim, lo, hi):
    arr, frames, ai = setup
    prof = arr.fs.radial_profile(unit=unit, r_min=lo, r_max=hi, n_bins=60, client="inline")
    assert prof.dims == ("scan_y", "scan_x", dim)
    for i in range(2):
        ref = _integrate1d(ai, frames[0, i], 60, unit, lo, hi, EXACT)
        np.testing.assert_allclose(prof[dim].values, ref.radial, rtol=1e-12)
        np.testing.assert_array_equal(prof.counts.values, ref.count)
        np.testing.assert_allclose(prof.values[0, i], ref.intensity, rtol=1e-6)
    # the Cython engine, from 0: the same bins, centres in float32
    prof = arr.fs.radial_profile(unit=unit, r_max=hi, n_bins=57, client="inline")
    ref = _integrate1d(ai, frames[0, 1], 57, unit, 0, hi, CYTHON)
    np.testing.assert_allclose(prof[dim].values, ref.radial, rtol=1e-6)
    np.testing.assert_array_equal(prof.counts.values, ref.count)
    np.testing.assert_allclose(prof.values[0, 1], ref.intensity, rtol=1e-6)


def test_every_bin_coordinate_is_pyfai_s_unit(setup):
    # binned in pixels: the q, 2θ of each bin centre are pyFAI's values at that radius
    arr, _, ai = setup
    res = framescope.run(RadialProfile(r_max=60, n_bins=20), arr, client="inline")
    radius = res["radius"].values
    tth = np.arctan(radius * PIXEL / DISTANCE)
    np.testing.assert_allclose(res["two_theta"].values, np.rad2deg(tth), rtol=1e-12)
    np.testing.assert_allclose(res["angle"].values, tth * 1e3, rtol=1e-12)
    q = 4 * np.pi * np.sin(tth / 2) / (ai.wavelength * 1e9)
    np.testing.assert_allclose(res["q"].values, q, rtol=1e-12)
    np.testing.assert_allclose(res["k"].values, q / (2 * np.pi) / 10, rtol=1e-12)
    assert res["q"].attrs["units"] == "1/nm"
    assert res["two_theta"].attrs["units"] == "deg"
    # pyFAI's own per-pixel q agrees with the binning's (pixel centres)
    ring = RadialProfile(unit="q_nm^-1").rings((H, W), arr.fs.calibration)
    np.testing.assert_allclose(ring.distance(), ai.center_array((H, W), unit="q_nm^-1"),
                               rtol=1e-9)


@pytest.mark.parametrize("per_position", [True, False])
def test_polar_matches_pyfai_integrate2d(setup, per_position):
    arr, frames, ai = setup
    pol = arr.fs.polar(unit="q_nm^-1", r_min=0.5, r_max=14.0, n_bins=30, n_chi=24,
                       per_position=per_position, client="inline")
    frame = frames[0, 1] if per_position else frames.mean(axis=(0, 1), dtype="f8")
    ref = ai.integrate2d(frame, 30, 24, unit="q_nm^-1", radial_range=(0.5, 14.0),
                         azimuth_range=(-180, 180), method=EXACT, correctSolidAngle=False,
                         polarization_factor=None)
    np.testing.assert_allclose(pol.q.values, ref.radial, rtol=1e-12)
    np.testing.assert_allclose(pol.chi.values, ref.azimuthal, atol=1e-9)
    np.testing.assert_array_equal(pol.counts.values, ref.count.T)  # pyFAI: (chi, radial)
    filled = pol.counts.values > 0
    got = pol.values[0, 1] if per_position else pol.values
    assert np.isnan(got[~filled]).all()
    np.testing.assert_allclose(got[filled], ref.intensity.T[filled], rtol=1e-6)
