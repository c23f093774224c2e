from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import framescope
from framescope.calibration import Calibration, CalibrationError, DpcRotation, dpc_rotation
from framescope.datasets import synthetic
from framescope.udf import CenterOfMass


def gradient_field(shape=(32, 32), spacing=(1.0, 1.0)):
    """Exact gradient of phi = Gaussian bumps + a plane wave on the sampled grid."""
    y = np.arange(shape[0])[:, None] * spacing[0]
    x = np.arange(shape[1])[None, :] * spacing[1]
    gy = np.zeros(np.broadcast_shapes(y.shape, x.shape))
    gx = np.zeros_like(gy)
    rng = np.random.default_rng(3)
    for (py, px), amp in zip(rng.random((12, 2)) * (y.max(), x.max()), rng.normal(size=12),
                             strict=True):
        bump = amp * np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * 3.0**2))
        gy += -bump * (y - py) / 3.0**2
        gx += -bump * (x - px) / 3.0**2
    k = 2 * np.pi / 40
    gy += 0.3 * k * np.cos(k * (y + 0.5 * x)) * 1.0
    gx += 0.3 * k * np.cos(k * (y + 0.5 * x)) * 0.5
    return gy, gx


def to_detector(gy, gx, rotation, flip):
    """The COM a detector sees of the scan-axes field: (R(rotation) F)^-1 = F R.T."""
    c, s = np.cos(rotation), np.sin(rotation)
    dy, dx = c * gy - s * gx, s * gy + c * gx
    return (-dy if flip else dy), dx


def rms_curl(fy, fx):
    return np.sqrt(np.mean((np.gradient(fx, axis=0) - np.gradient(fy, axis=1)) ** 2))


@pytest.mark.parametrize("degrees", [17.0, -35.0, 80.0, -89.0])
@pytest.mark.parametrize("flip", [False, True])
def test_rotated_gradient_field(degrees, flip):
    gy, gx = gradient_field()
    com_y, com_x = to_detector(gy, gx, np.radians(degrees), flip)
    res = dpc_rotation(com_y, com_x)
    assert isinstance(res, DpcRotation)
    assert res.flip is flip
    assert res.degrees == pytest.approx(degrees, abs=0.5)
    assert res.curl < 0.05 * res.divergence < res.curl_other_flip
    fy, fx = res.apply(com_y, com_x)
    np.testing.assert_allclose(fy, gy, atol=0.02 * np.abs(gy).max())
    np.testing.assert_allclose(fx, gx, atol=0.02 * np.abs(gx).max())
    # an independent brute-force search agrees with the closed form
    angles = np.radians(np.arange(-90, 90, 0.1))
    dy = -com_y if flip else com_y
    curls = [rms_curl(np.cos(t) * dy + np.sin(t) * com_x, -np.sin(t) * dy + np.cos(t) * com_x)
             for t in angles]
    best = np.degrees(angles[int(np.argmin(curls))])
    assert (res.degrees - best + 90) % 180 - 90 == pytest.approx(0, abs=0.1)
    assert res.curl == pytest.approx(min(curls), rel=0.01)
    np.testing.assert_allclose(res.curl_curves[int(flip)][::10], curls[::100], rtol=1e-6,
                               atol=1e-3 * res.divergence)


def test_non_square_scan_step():
    gy, gx = gradient_field(spacing=(1.0, 2.0))
    com_y, com_x = to_detector(gy, gx, np.radians(25.0), False)
    assert dpc_rotation(com_y, com_x, step=(1.0, 2.0)).degrees == pytest.approx(25.0, abs=0.5)


@pytest.mark.parametrize("degrees", [17.0, -35.0])
@pytest.mark.parametrize("flip", [False, True])
def test_synthetic_scan_rotation(degrees, flip):
    arr = synthetic(scan=(24, 24), det=(48, 48), rotation=np.radians(degrees), flip=flip,
                    dose=1e5, seed=1)
    com = framescope.run(CenterOfMass(), arr)
    res = dpc_rotation(com)  # the Dataset
    assert res.flip is flip
    assert res.degrees == pytest.approx(degrees, abs=1.0)
    # the found calibration makes CenterOfMass' field curl-free and equal to the truth
    fixed = framescope.run(CenterOfMass(rotation=res.degrees, flip_y=res.flip), arr)
    k = 48 / (2 * np.pi)
    for got, truth in ((fixed.field_y, arr.true_phase_gradient_y),
                       (fixed.field_x, arr.true_phase_gradient_x)):
        slope = np.polyfit(k * truth.values.ravel(), got.values.ravel(), 1)[0]
        assert 0.9 < slope < 1.1
    rms = {name: float(np.sqrt((fixed[name] ** 2).mean())) for name in ("curl", "divergence")}
    assert rms["curl"] < 0.25 * rms["divergence"]
    plain = framescope.run(CenterOfMass(), arr)
    assert float(np.sqrt((plain.curl ** 2).mean())) > 2 * rms["curl"]


def test_calibration_fields_and_dataarrays():
    gy, gx = gradient_field()
    com_y, com_x = to_detector(gy, gx, np.radians(-20.0), True)
    ds = xr.Dataset({"com_y": (("scan_y", "scan_x"), com_y),
                     "com_x": (("scan_y", "scan_x"), com_x)})
    res = dpc_rotation(ds)
    assert res == dpc_rotation(com_y, com_x)
    cal = res.calibration(Calibration(energy="300 kV"))
    assert cal.rotation == pytest.approx(np.radians(-20.0), abs=0.01)
    assert cal.flip is True
    assert cal.sources["rotation"] == "dpc_rotation"
    assert res.fields() == {"rotation": res.rotation, "flip": True}
    fy, fx = res.apply(ds)
    assert isinstance(fy, xr.DataArray)
    assert fy.name == "field_y"
    assert fx.dims == ds.com_x.dims
    np.testing.assert_allclose(fy.values, gy, atol=0.02 * np.abs(gy).max())


def test_nan_positions_are_left_out():
    gy, gx = gradient_field()
    com_y, com_x = to_detector(gy, gx, np.radians(40.0), False)
    com_y[3:6, 10:14] = np.nan
    assert dpc_rotation(com_y, com_x).degrees == pytest.approx(40.0, abs=0.5)


def test_overlay():
    hv = pytest.importorskip("holoviews")
    res = dpc_rotation(*to_detector(*gradient_field(), 0.3, False), n_angles=90)
    curves = [el for el in res.overlay() if isinstance(el, hv.Curve)]
    assert len(curves) == 2
    assert len(curves[0]) == 90
    assert res.angles.shape == (90,)
    assert res.curl_curves.shape == (2, 90)


@pytest.mark.parametrize(("args", "match"), [
    ((np.zeros((4, 4)), np.zeros((4, 5))), "one shape"),
    ((np.zeros(16), np.zeros(16)), "2D"),
    ((np.zeros((4, 4)), None), "com_x is missing"),
    ((xr.Dataset({"com_y": (("a", "b"), np.zeros((4, 4)))}), None), "lacks"),
    ((xr.Dataset({"com_y": (("a", "b"), np.zeros((4, 4)))}), np.zeros((4, 4))), "not both"),
    ((np.full((4, 4), np.nan), np.zeros((4, 4))), "finite"),
])
def test_errors(args, match):
    with pytest.raises(CalibrationError, match=match):
        dpc_rotation(*args)
