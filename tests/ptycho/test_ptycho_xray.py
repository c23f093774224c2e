"""X-ray (far-field, zone-plate) ptychography: the probe against optics, a reconstruction
of a known complex object from Poisson-noisy frames."""

from __future__ import annotations

import numpy as np
import pytest
from _ptycho_helpers import illuminated, phase_r
from _ptycho_xray_sim import (
    ANGLE,
    DEFOCUS,
    DET_PIXEL,
    DIAMETER,
    DISTANCE,
    NA,
    OUTER_ZONE,
    PIXEL,
    STOP,
    WAVELENGTH,
    experiment,
)

from framescope.calibration import CalibrationError
from framescope.ptycho import ZonePlate, object_pixel, reconstruct, zone_plate_probe

H_C = 6.62607015e-34 * 299792458.0 / 1.602176634e-19  # eV m


def _radius_px(frame: int) -> np.ndarray:
    q = np.fft.fftfreq(frame, 1 / frame)
    return np.hypot(q[:, None], q[None, :])


@pytest.mark.parametrize("defocus", [0.0, DEFOCUS])
def test_zone_plate_far_field_is_the_annular_pupil(defocus):
    n = 64
    probe = zone_plate_probe((n, n), wavelength=WAVELENGTH, pixel_size_det=DET_PIXEL,
                             distance=DISTANCE, diameter=DIAMETER,
                             outer_zone_width=OUTER_ZONE, central_stop=STOP,
                             defocus=defocus, intensity=1e4)
    assert probe.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(probe) ** 2), 1e4, rtol=1e-4)
    far = np.abs(np.fft.fft2(np.fft.ifftshift(probe)))  # the pupil, numpy's layout
    q = _radius_px(n)
    # the optics, independently: NA = lambda / (2 dr), one detector px = p / z rad
    outer = (WAVELENGTH / (2 * OUTER_ZONE)) / (DET_PIXEL / DISTANCE)
    inner = outer * STOP / DIAMETER
    assert 13 < outer < 14
    assert 5 < inner < 6
    inside = (q < outer - 1) & (q > inner + 1)
    outside = (q > outer + 1) | (q < inner - 1)
    level = np.median(far[inside])
    np.testing.assert_allclose(far[inside] / level, 1.0, atol=1e-3)
    assert far[outside].max() < 1e-3 * level
    # defocus is a pure phase of the pupil: the same amplitude in and out of focus


def test_zone_plate_focus_has_its_first_zero_at_the_airy_radius():
    n = 128
    dr = 150e-9  # NA = 0.67 mrad: 10 detector px, the Airy radius 7.8 object px
    probe = zone_plate_probe((n, n), wavelength=WAVELENGTH, pixel_size_det=DET_PIXEL,
                             distance=DISTANCE, diameter=DIAMETER, outer_zone_width=dr)
    pixel = object_pixel(WAVELENGTH, DET_PIXEL / DISTANCE, (n, n))[0]
    np.testing.assert_allclose(pixel, WAVELENGTH * DISTANCE / (n * DET_PIXEL))
    airy = 0.61 * WAVELENGTH / (WAVELENGTH / (2 * dr)) / pixel
    profile = np.abs(probe[n // 2, n // 2:]) ** 2
    first_min = next(i for i in range(1, n // 2 - 1)
                     if profile[i] < profile[i - 1] and profile[i] <= profile[i + 1])
    assert abs(first_min - airy) <= 1.0, (first_min, airy)
    assert profile[first_min] < 0.02 * profile[0]  # a zero, not a shoulder
    # the focus is where the intensity peaks: defocus spreads it
    spread = zone_plate_probe((n, n), wavelength=WAVELENGTH, pixel_size_det=DET_PIXEL,
                              distance=DISTANCE, diameter=DIAMETER, outer_zone_width=dr,
                              defocus=2e-3)
    assert np.abs(spread).max() < 0.5 * np.abs(probe).max()


def test_zone_plate_checks_its_optics():
    with pytest.raises(ValueError, match=r"pupil .* does not fit the 32x32 frame"):
        zone_plate_probe((32, 32), wavelength=WAVELENGTH, pixel_size_det=DET_PIXEL,
                         distance=DISTANCE, diameter=DIAMETER, outer_zone_width=100e-9)
    with pytest.raises(CalibrationError, match="central_stop: expected less than"):
        ZonePlate("100 um", "50 nm", central_stop="120 um")
    with pytest.raises(CalibrationError, match="outer_zone_width: expected a length unit"):
        ZonePlate("100 um", "50 mrad")
    zp = ZonePlate("100 um", "50 nm", central_stop="40 um")
    assert zp.diameter == pytest.approx(100e-6)
    assert zp.central_stop == pytest.approx(40e-6)
    assert zp.na(1e-10) == pytest.approx(1e-3)
    assert zp.focal_length(1e-10) == pytest.approx(100e-6 * 50e-9 / 1e-10)


def test_xray_problem_reconstructs_the_known_object():
    arr, obj, _probe = experiment()
    ds = reconstruct(arr, iterations=10, probe=ZonePlate(DIAMETER, OUTER_ZONE, STOP),
                     defocus=f"{DEFOCUS * 1e3} mm", client="inline")
    # photons: lambda = h c / E; object pixel = lambda z / (N p)
    assert ds.attrs["radiation"] == "xray"
    np.testing.assert_allclose(ds.attrs["wavelength_m"], H_C / 6200.0, rtol=1e-9)
    np.testing.assert_allclose(ds.attrs["pixel_size_m"], [PIXEL, PIXEL], rtol=1e-9)
    np.testing.assert_allclose(ds.attrs["angle_per_px_rad"], ANGLE, rtol=1e-9)
    assert ds.attrs["zone_plate_outer_zone_width_m"] == pytest.approx(OUTER_ZONE)
    assert ds["object_phase"].shape == obj.shape  # whole-pixel grid from 0: the truth's
    region = illuminated(ds)
    assert region.sum() > 1500
    r = phase_r(ds["object_phase"].values, np.angle(obj), region)
    assert r >= 0.95, r
    amp = ds["object_amplitude"].values[region]
    scale = np.median(amp) / np.median(np.abs(obj)[region])  # the probe's scale is free
    assert np.corrcoef(amp / scale, np.abs(obj)[region])[0, 1] > 0.7  # 0.79 measured
    assert ds["error"].values[-1] < ds["error"].values[0] / 2
    # the refined probe still has the zone plate's NA: its far field ends at the pupil
    p = ds["probe_amplitude"].values * np.exp(1j * ds["probe_phase"].values)
    far = np.abs(np.fft.fft2(np.fft.ifftshift(p))) ** 2
    q = _radius_px(p.shape[0])
    assert far[q > NA / ANGLE + 2].sum() < 0.05 * far.sum()


def test_xray_reconstruct_names_what_the_geometry_lacks():
    arr, _obj, _probe = experiment()
    bare = arr.copy()
    bare.attrs = {}
    with pytest.raises(CalibrationError, match="energy, angle_per_px"):
        reconstruct(bare, iterations=1, probe=ZonePlate(DIAMETER, OUTER_ZONE, STOP),
                    client="inline")
    # given by keyword instead: the same reconstruction as from the calibration
    ds = reconstruct(bare, iterations=1, probe=ZonePlate(DIAMETER, OUTER_ZONE, STOP),
                     energy="6.2 keV", radiation="xray", camera_length="3 m",
                     pixel_size="75 um", scan_step=6 * PIXEL, defocus=DEFOCUS,
                     client="inline")
    ref = reconstruct(arr, iterations=1, probe=ZonePlate(DIAMETER, OUTER_ZONE, STOP),
                      defocus=DEFOCUS, client="inline")
    np.testing.assert_allclose(ds["object_phase"].values, ref["object_phase"].values,
                               atol=1e-5)
