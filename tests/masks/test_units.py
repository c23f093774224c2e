"""Masks in physical units (mrad, rad, 1/Å, 1/nm) against the pixel masks they imply.

References are independent of the conversion code: the detector coordinates that
``arr.fs.calibrate`` puts on the array (``Calibration.coords``: mrad from the centre), and
pixel specs written out by hand from ``px = centre + value / angle_per_px``.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import framescope.masks as fm
from framescope.calibration import Calibration, electron_wavelength
from framescope.datasets import synthetic
from framescope.errors import MaskError

DET = (32, 32)
CY, CX = 15.5, 16.2  # non-integer centre
A = 0.5  # mrad per pixel


@pytest.fixture(scope="module")
def cal_arr():
    arr = synthetic(scan=(8, 8), det=DET)
    return arr.fs.calibrate(angle_per_px="0.5 mrad", center=(CY, CX))


@pytest.fixture(scope="module")
def grid(cal_arr):
    """Detector coordinates (mrad) of every pixel centre, as the calibrated array has them."""
    y = cal_arr.det_y.values[:, None] * np.ones(DET[1])
    x = cal_arr.det_x.values[None, :] * np.ones(DET[0])[:, None]
    return y, x


def _raster(spec, cal):
    return spec.resolved(cal, DET).rasterize(DET) > 0


def _implies(spec, cal, px):
    """``spec`` resolves to the pixel spec ``px`` written by hand (to float noise) and to
    the same pixels."""
    got = spec.resolved(cal, DET)
    assert type(got) is type(px)
    assert got.units == "px"
    for k, v in px.params.items():
        np.testing.assert_allclose(got.params[k], v, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.rasterize(DET), px.rasterize(DET))


def test_calibrated_coords_are_what_the_reference_assumes(cal_arr):
    assert cal_arr.det_y.attrs["units"] == "mrad"
    np.testing.assert_allclose(cal_arr.det_y.values, (np.arange(32) - CY) * A)
    np.testing.assert_allclose(cal_arr.det_x.values, (np.arange(32) - CX) * A)


# ---- every shape equals its reference, on the calibrated detector -------------------------


def test_ring_and_disk_select_by_scattering_angle(cal_arr, grid):
    cal = cal_arr.fs.calibration
    y, x = grid
    d = np.hypot(y, x)
    ring = fm.ring(r_in=2.1, r_out=6.3, units="mrad")
    np.testing.assert_array_equal(_raster(ring, cal), (d >= 2.1) & (d <= 6.3))
    _implies(ring, cal, fm.ring(CY, CX, 2.1 / A, 6.3 / A))
    disk = fm.disk(r=3.3, units="mrad")
    np.testing.assert_array_equal(_raster(disk, cal), d <= 3.3)
    # an off-centre disk: its centre is in mrad from the beam too
    off = fm.disk(1.2, -2.6, 1.9, units="mrad")
    np.testing.assert_array_equal(_raster(off, cal), np.hypot(y - 1.2, x + 2.6) <= 1.9)
    _implies(off, cal, fm.disk(CY + 1.2 / A, CX - 2.6 / A, 1.9 / A))


def test_box_point_and_polygon(cal_arr, grid):
    cal = cal_arr.fs.calibration
    y, x = grid
    box = fm.box(-3.1, -4.05, 2.2, 1.3, units="mrad")
    ref = (y >= -3.1) & (y < 2.2) & (x >= -4.05) & (x < 1.3)
    np.testing.assert_array_equal(_raster(box, cal), ref)
    _implies(box, cal, fm.box(CY - 3.1 / A, CX - 4.05 / A, CY + 2.2 / A, CX + 1.3 / A))
    # the pixel whose extent (centre +- half a pixel, in mrad) holds the point
    pt = fm.point(1.9, -2.3, units="mrad")
    half = A / 2
    ref = (y - half <= 1.9) & (y + half > 1.9) & (x - half <= -2.3) & (x + half > -2.3)
    assert ref.sum() == 1
    np.testing.assert_array_equal(_raster(pt, cal), ref)
    np.testing.assert_array_equal(_raster(fm.point(units="mrad"), cal),
                                  fm.point(CY, CX).rasterize(DET) > 0)
    # a convex triangle: inside = on the left of every (counter-clockwise) edge
    tri = [(-5.1, -4.3), (-4.7, 5.2), (4.9, 0.3)]
    cross = []
    for (y1, x1), (y2, x2) in zip(tri, tri[1:] + tri[:1], strict=True):
        cross.append((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1))
    ref = np.all(np.stack(cross) > 0, axis=0) | np.all(np.stack(cross) < 0, axis=0)
    poly = fm.polygon(tri, units="mrad")
    np.testing.assert_array_equal(_raster(poly, cal), ref)
    _implies(poly, cal, fm.polygon([(CY + v / A, CX + u / A) for v, u in tri]))
    _implies(pt, cal, fm.point(CY + 1.9 / A, CX - 2.3 / A))


@pytest.mark.parametrize("units", ["1/Å", "1/A", "1/nm"])
def test_spatial_frequency_is_angle_over_wavelength(units):
    cal = Calibration(energy="300 kV", angle_per_px="0.5 mrad", center=(CY, CX))
    lam_a = electron_wavelength(300e3) * 1e10  # Å; 0.01969 Å at 300 kV
    assert lam_a == pytest.approx(0.019687, abs=2e-6)
    per = 10.0 if units == "1/nm" else 1.0  # 1/nm numbers are ten times 1/Å numbers
    ring = fm.ring(r_in=0.11 * per, r_out=0.29 * per, units=units)
    assert ring.units == ("1/nm" if units == "1/nm" else "1/Å")
    y = (np.arange(32)[:, None] - CY) * A * 1e-3
    x = (np.arange(32)[None, :] - CX) * A * 1e-3
    k = np.hypot(y, x) / (lam_a * 1e-10) / 1e10  # theta / lambda in 1/Å
    np.testing.assert_array_equal(_raster(ring, cal), (k >= 0.11) & (k <= 0.29))
    got = ring.resolved(cal, DET)
    assert got.r_in == pytest.approx(0.11 * lam_a / (A * 1e-3), rel=1e-9)


def test_rad_and_mrad_agree():
    cal = Calibration(angle_per_px="0.5 mrad", center=(CY, CX))
    assert (fm.ring(r_in=2.1e-3, r_out=6.3e-3, units="rad").resolved(cal, DET)
            == fm.ring(r_in=2.1, r_out=6.3, units="mrad").resolved(cal, DET))


def test_default_centre_is_the_detector_middle_like_the_coords():
    cal = Calibration(angle_per_px="1 mrad")  # no centre: the middle, as coords() has it
    assert fm.disk(r=3, units="mrad").resolved(cal, (32, 40)) == fm.disk(16, 20, 3)


def test_round_numbers_stay_round():
    # 20 mrad / 0.5 mrad in floats is 40 within 1 ulp; snapped, it is the px ring 40
    px = fm.ring(r_in=20, r_out=60, units="mrad").to_pixels(0.5e-3, (127.5, 128))
    assert px == fm.ring(127.5, 128, 40, 120)
    assert px.key == fm.ring(127.5, 128, 40, 120).key


# ---- stacks, identity, serialisation -------------------------------------------------------


def test_stack_mixes_units_and_resolves_to_pixels():
    cal = Calibration(angle_per_px="0.5 mrad", center=(CY, CX))
    stack = fm.MaskStack({"bf": fm.disk(r=3, units="mrad"), "px": fm.box(0, 0, 4, 4),
                          "hot": fm.array(np.eye(32, dtype=bool))})
    assert stack.is_physical
    got = stack.resolved(cal, DET)
    assert not got.is_physical
    assert got.names == stack.names
    assert got["bf"] == fm.disk(CY, CX, 6)
    assert got["px"] is stack["px"]
    assert got["hot"] is stack["hot"]
    assert stack.to_pixels(0.5e-3, (CY, CX)) == got
    np.testing.assert_array_equal(got.dense(DET)[:, 0],
                                  fm.disk(CY, CX, 6).rasterize(DET).ravel())
    assert got.resolved(cal, DET) is got  # all pixels: nothing to do
    with pytest.raises(MaskError, match=r"mask 'bf'.*in mrad"):
        stack.dense(DET)


def test_json_pickle_and_keys():
    specs = [fm.disk(r=3, units="mrad"), fm.ring(1, 2, 3, 4, units="rad"),
             fm.box(-1, -2, 1, 2, units="1/nm"), fm.point(units="1/A"),
             fm.polygon([(0, 0), (0, 4), (4, 0)], units="mrad")]
    stack = fm.MaskStack({f"s{i}": s for i, s in enumerate(specs)} | {"p": fm.disk(1, 2, 3)})
    back = fm.MaskStack.from_json(stack.to_json())
    assert back == stack
    assert [back[n].units for n in back] == [s.units for s in specs] + ["px"]
    for s in specs:
        assert pickle.loads(pickle.dumps(s)) == s
        assert fm.MaskSpec.from_dict(s.to_dict()) == s
        assert s.to_dict()["params"]["units"] == s.units
    # the same numbers in pixels are another mask; pixel specs keep their old JSON
    assert fm.disk(0, 0, 3, units="mrad").key != fm.disk(0, 0, 3).key
    assert fm.disk(0, 0, 3, units="mrad").key != fm.disk(0, 0, 3, units="rad").key
    assert "units" not in fm.disk(0, 0, 3).to_dict()["params"]
    assert fm.disk(1, 2, 3, units="px") == fm.disk(1, 2, 3)
    assert repr(fm.disk(r=3, units="mrad")) == "Disk(cy=0.0, cx=0.0, r=3.0, units='mrad')"


def test_keys_identical_in_another_process():
    code = ("from framescope.masks import ring; "
            "print(ring(r_in=20, r_out=60, units='1/A').key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == fm.ring(r_in=20, r_out=60, units="1/Å").key


def test_masks_do_not_import_pydantic():
    code = ("import sys, framescope.masks as fm; "
            "fm.ring(r_in=1, r_out=2, units='mrad').to_pixels(1e-3, (4, 4)).rasterize((9, 9)); "
            "print('pydantic' in sys.modules, 'framescope.calibration._model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda: fm.ring(r_in=2, r_out=6, units="mrad").rasterize(DET),
      r"is in mrad: rasterising needs detector pixels; calibrate"),
     (lambda: fm.ring(r_in=2, r_out=6, units="mrad").resolved(None, DET, name="adf"),
      r"mask 'adf' is in mrad, found uncalibrated data: calibrate the data first, e\.g\. "
      r"arr\.fs\.calibrate\(angle_per_px="),
     (lambda: fm.disk(r=2, units="mrad").resolved(Calibration(energy="300 kV"), DET),
      r"found a calibration without the angle per detector pixel"),
     (lambda: fm.disk(r=2, units="1/Å").resolved(Calibration(angle_per_px=1e-3), DET, "g"),
      r"mask 'g' is in 1/Å .*without the beam energy.*calibrate\(energy="),
     (lambda: fm.disk(r=2, units="1/nm").to_pixels(1e-3, (4, 4)), r"needs the wavelength"),
     (lambda: fm.disk(r=2, units="mrad").to_pixels(0, (4, 4)),
      r"angle_per_px: expected a positive angle per pixel \(rad\), found 0"),
     (lambda: fm.disk(r=2, units="mrad").to_pixels(1e-3, (4,)), r"center: expected \(cy, cx\)"),
     (lambda: fm.disk(r=2, units="furlong"),
      r"disk: units must be one of \['px', 'mrad', 'rad', '1/Å', '1/nm'\], found 'furlong'"),
     (lambda: fm.ring(r_in=2, r_out=6), r"ring: expected both cy and cx \(in px they are "
                                        r"required"),
     (lambda: fm.ring(20, 60, units="mrad"), r"ring: missing r_in, r_out"),
     (lambda: fm.disk(1, units="mrad"), r"disk: missing r"),
     (lambda: fm.point(units="px"), r"point: missing y, x"),
     (lambda: fm.disk(r=-1, units="mrad"), r"disk: r must be >= 0"),
     (lambda: fm.MaskSpec.from_dict({"kind": "disk", "params": {"r": 1, "units": "mrad"}}),
      r"disk: expected parameters \['cy', 'cx', 'r'\], found \['r', 'units'\] \(optional")],
)
def test_errors(make, message):
    with pytest.raises(MaskError, match=message):
        make()
