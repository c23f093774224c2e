"""Calibration read from data combined with the user's: the user wins, conflicts logged."""

from __future__ import annotations

import logging

import pytest

from framescope.calibration import Calibration, CalibrationError, combine


def test_nothing_found_or_given_is_none():
    assert combine({}) is None


def test_found_fields_keep_where_they_were_read():
    cal = combine({"camera_length": (0.1, "a.h5:/detector_distance"),
                   "center": ((10.0, 12.0), "a.h5:/beam_center")})
    assert cal.camera_length == 0.1
    assert cal.center == (10.0, 12.0)
    assert cal.sources == {"camera_length": "a.h5:/detector_distance",
                           "center": "a.h5:/beam_center"}


def test_given_wins_and_a_contradiction_is_logged_once(caplog):
    found = {"camera_length": (0.1, "a.h5:/detector_distance"),
             "pixel_size": (55e-6, "a.h5:/x_pixel_size")}
    with caplog.at_level(logging.WARNING, logger="framescope.calibration"):
        cal = combine(found, {"camera_length": "200 mm", "energy": "300 kV"})
    assert cal.camera_length == pytest.approx(0.2)
    assert cal.pixel_size == 55e-6
    assert cal.sources["camera_length"] == "user"
    assert cal.sources["energy"] == "user"
    assert cal.sources["pixel_size"] == "a.h5:/x_pixel_size"
    warned = [r for r in caplog.records if "camera_length" in r.getMessage()]
    assert len(warned) == 1
    assert "a.h5:/detector_distance" in warned[0].getMessage()


def test_an_agreeing_value_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="framescope.calibration"):
        combine({"camera_length": (0.1, "f")}, Calibration(camera_length=0.1005))
    assert not caplog.records


def test_a_bad_found_value_names_where_it_was_read():
    with pytest.raises(CalibrationError, match=r"x.h5:/detector_distance.*camera_length"):
        combine({"camera_length": (-1.0, "x.h5:/detector_distance")})


def test_given_calibration_json_and_its_sources():
    given = Calibration(energy=200e3, sources={"energy": "notebook"})
    cal = combine({"energy": (300e3, "hdr")}, given.to_json())
    assert cal.energy == 200e3
    assert cal.sources["energy"] == "notebook"
