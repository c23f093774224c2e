"""A stream's calibration: DECTRIS header fields, a framescope sender's calibration and the
user's, reaching live results (coordinates, attrs) in one receiver and in several."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import framescope
from framescope.calibration import electron_wavelength
from framescope.datasets import synthetic
from framescope.live import ZMQSource
from framescope.live._calibration import header_calibration
from framescope.udf import CenterOfMass

from .conftest import process_context, simulator_thread

SCAN, DET = (6, 7), (24, 24)


def test_stream2_start_fields_become_calibration_fields():
    lam = electron_wavelength(200e3)
    found = header_calibration({"beam_center_x": 130.5, "beam_center_y": 120.25,
                                "pixel_size_x": 75e-6, "pixel_size_y": 75e-6,
                                "detector_distance": 0.25, "incident_energy": 200e3,
                                "incident_wavelength": lam * 1e10})
    assert found["center"][0] == (120.25, 130.5)
    assert found["pixel_size"] == (75e-6, "header:pixel_size_x")
    assert found["camera_length"] == (0.25, "header:detector_distance")
    assert found["energy"][0] == pytest.approx(200e3)
    assert found["radiation"][0] == "electron"


def test_stream1_config_of_an_xray_detector_is_photons():
    # SIMPLON v1 config: wavelength in Å, x_pixel_size in m; 1 Å is 12.4 keV photons
    found = header_calibration({"wavelength": 1.0, "x_pixel_size": 75e-6,
                                "detector_distance": 5.0})
    assert found["radiation"][0] == "xray"
    assert found["energy"][0] == pytest.approx(12398.42, rel=1e-6)
    assert found["pixel_size"][1] == "header:x_pixel_size"


def test_a_header_without_calibration_gives_nothing():
    assert header_calibration({"number_of_images": 10, "beam_center_x": 0}) == {}


def _calibrated():
    return synthetic(scan=SCAN, det=DET, seed=3).fs.calibrate(
        energy="300 kV", angle_per_px="0.5 mrad", scan_step="0.25 nm", center=(12, 12))


def test_a_calibrated_replay_gives_results_in_physical_units(caplog):
    arr = _calibrated()
    offline = framescope.run(CenterOfMass(), arr)
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2",
                    calibration={"scan_step": "0.3 nm"})  # the user's wins over the header
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          source=arr) as endpoint, \
            caplog.at_level(logging.WARNING, logger="framescope.calibration"):
        src.endpoint = endpoint
        job = framescope.submit(CenterOfMass(), src)
        live = job.result(60)
        job.cancel()
    cal = job.series.meta.calibration
    assert cal.angle_per_px == 0.5e-3
    assert cal.sources["angle_per_px"] == "header:framescope_calibration"
    assert cal.scan_step == pytest.approx((0.3e-9, 0.3e-9))
    assert cal.sources["scan_step"] == "user"
    assert any("scan_step" in r.getMessage() for r in caplog.records)
    assert live["scan_x"].attrs["units"] == "nm"
    np.testing.assert_allclose(live["scan_x"].values, np.arange(SCAN[1]) * 0.3)
    assert "calibration" in live.attrs
    np.testing.assert_array_equal(live["com_x"].values, offline["com_x"].values)


def test_several_receivers_carry_the_header_calibration():
    arr = _calibrated()
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          peers=2, source=arr) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(CenterOfMass(), src, processes=2,
                                mp_context=process_context())
        live = job.result(120)
        job.cancel()
    # (said on failure: which receiver had the header, and whether one was lost)
    why = f"status {dict(live.attrs)}, receivers {job.receivers}"
    assert live["scan_y"].attrs.get("units") == "nm", why
    np.testing.assert_allclose(live["scan_y"].values, np.arange(SCAN[0]) * 0.25)


def test_a_bad_user_calibration_fails_at_construction():
    from framescope.calibration import CalibrationError

    with pytest.raises(CalibrationError, match="energy"):
        ZMQSource("tcp://127.0.0.1:0", calibration={"energy": "-3 kV"})
