"""Calibration: wavelength against tabulated values, units, validation, coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest

import framescope as fs
from framescope.calibration import (
    Calibration,
    CalibrationError,
    electron_wavelength,
    energy_from_wavelength,
)


@pytest.mark.parametrize(("kv", "pm"), [(100, 3.7014), (200, 2.5079), (300, 1.9687)])
def test_relativistic_wavelength_matches_the_tables(kv, pm):
    # e.g. Williams & Carter, Transmission Electron Microscopy, table 1.1
    assert electron_wavelength(kv * 1e3) * 1e12 == pytest.approx(pm, abs=1e-4)


def test_units_parse_to_si():
    cal = Calibration(energy="300 kV", semiconv="20 mrad", angle_per_px="1 deg",
                      scan_step=("0.25 Å", "2 nm"), rotation="-90 deg")
    assert cal.energy == 300e3
    assert cal.semiconv == pytest.approx(0.02)
    assert cal.angle_per_px == pytest.approx(math.pi / 180)
    assert cal.scan_step == pytest.approx((2.5e-11, 2e-9))
    assert cal.rotation == pytest.approx(-math.pi / 2)
    assert Calibration(pixel_size="55 µm", camera_length="15 cm").detector_angle == \
        pytest.approx(55e-6 / 0.15)


@pytest.mark.parametrize(("fields", "message"), [
    ({"energy": -200e3}, "energy: expected a positive value"),
    ({"semiconv": "20 nm"}, "semiconv: expected a angle unit"),
    ({"scan_step": "fast"}, "scan_step: expected a number"),
    ({"angle_per_px": 1e-3, "pixel_size": 55e-6, "camera_length": 0.1},
     "angle_per_px: 1 mrad disagrees with pixel_size / camera_length = 0.55 mrad"),
    ({"centre": (1, 2)}, "centre"),
])
def test_bad_fields_name_the_field_and_what_was_expected(fields, message):
    with pytest.raises(CalibrationError, match=message):
        Calibration(**fields)


def test_json_round_trip_keeps_every_field():
    cal = Calibration(energy=200e3, semiconv=0.021, angle_per_px=4e-4, center=(31.5, 30.25),
                      scan_step=(3e-10, 2e-10), rotation=0.1, flip=True,
                      sources={"energy": "file.h5:/entry/beam/energy"})
    assert Calibration.from_json(cal.to_json()) == cal


def test_calibrate_gives_physical_coordinates_on_the_same_lazy_data():
    arr = fs.datasets.synthetic(scan=(4, 6), det=(32, 32))
    cal = arr.fs.calibrate(energy="300 kV", angle_per_px="0.5 mrad", center=(15, 16),
                           scan_step="0.25 nm")
    assert cal.data is arr.data  # nothing read or copied
    np.testing.assert_allclose(cal["scan_x"], np.arange(6) * 0.25)
    np.testing.assert_allclose(cal["det_y"], (np.arange(32) - 15) * 0.5)
    np.testing.assert_allclose(cal["det_x"], (np.arange(32) - 16) * 0.5)
    assert (cal["scan_x"].attrs["units"], cal["det_x"].attrs["units"]) == ("nm", "mrad")
    assert cal.fs.calibration.sources == dict.fromkeys(
        ["energy", "angle_per_px", "center", "scan_step"], "user")
    # selections in physical units, and results carry the coordinates
    assert cal.sel(scan_x=slice(0.4, 0.8)).sizes["scan_x"] == 2
    total = fs.run(fs.udf.SumFrame(), cal, client="inline")
    np.testing.assert_array_equal(total["sum"]["det_x"], cal["det_x"])
    np.testing.assert_array_equal(total["sum"].values,
                                  np.asarray(arr).sum((0, 1), dtype=np.float64))
    # a later calibrate keeps what was set and overrides what is given
    again = cal.fs.calibrate(scan_step=(1e-9, 2e-9))
    assert again.fs.calibration.energy == 300e3
    np.testing.assert_allclose(again["scan_x"], np.arange(6) * 2.0)
    uncal = arr.fs.calibrate(energy="200 kV")  # no geometry: the axes stay pixels
    assert uncal["det_x"].attrs["units"] == "px"


@pytest.mark.parametrize("kv", [60, 200, 300])
def test_energy_from_wavelength_inverts_the_electron_wavelength(kv):
    lam = electron_wavelength(kv * 1e3)
    assert energy_from_wavelength(lam) == pytest.approx(kv * 1e3, rel=1e-12)


def test_xray_wavelength_is_hc_over_e():
    # 12.398 419 84 keV photons have a 1 Å wavelength (CODATA hc = 12.398 419 84 keV Å)
    cal = Calibration(energy="12.39841984 keV", radiation="xray")
    assert cal.wavelength == pytest.approx(1e-10, rel=1e-9)
    assert energy_from_wavelength(1e-10, "xray") == pytest.approx(12398.41984, rel=1e-9)
    with pytest.raises(CalibrationError, match="radiation"):
        Calibration(radiation="neutron")


def test_beam_energy_tells_electrons_from_photons():
    from framescope.calibration import beam_energy

    lam = electron_wavelength(300e3)
    assert beam_energy(wavelength=lam) == (pytest.approx(300e3), "electron")
    assert beam_energy(energy=300e3, wavelength=lam) == (pytest.approx(300e3), "electron")
    # 8 keV photons: 1.5498 Å, both given or the wavelength alone
    assert beam_energy(energy=8000.0, wavelength=1.5498e-10) == (8000.0, "xray")
    e, kind = beam_energy(wavelength=1.5498e-10)
    assert kind == "xray"
    assert e == pytest.approx(8000.0, rel=1e-4)
    assert beam_energy(energy=200e3) == (200e3, "electron")
    assert beam_energy(energy=8000.0, radiation="xray") == (8000.0, "xray")
    assert beam_energy(energy=0.0, wavelength=float("nan")) is None


def test_spatial_frequency_coordinates_with_an_energy():
    arr = fs.datasets.synthetic(scan=(2, 3), det=(16, 16)).fs.calibrate(
        energy="300 kV", angle_per_px="1 mrad", center=(8, 7.5))
    lam_a = electron_wavelength(300e3) * 1e10
    np.testing.assert_allclose(arr["k_x"].values, (np.arange(16) - 7.5) * 1e-3 / lam_a)
    assert arr["k_y"].dims == ("det_y",)
    assert arr["k_y"].attrs["units"] == "1/Å"
    frame = arr.fs.sum_frame(client="inline")
    np.testing.assert_array_equal(frame["k_y"].values, arr["k_y"].values)
    # without an energy there is no k, and recalibrating drops a stale one
    again = arr.fs.calibrate(Calibration(angle_per_px=1e-3))
    assert "k_x" not in again.coords
