from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import framescope
from framescope.calibration import CalibrationError, DescanFit, descan_fit
from framescope.datasets import synthetic
from framescope.udf import CenterOfMass

DESCAN = ((0.05, 0.02), (-0.03, 0.08))
OFFSET = (1.3, -0.7)


def test_exact_plane_with_noise():
    iy, ix = np.mgrid[:20, :30]
    rng = np.random.default_rng(0)
    com_y = 0.4 * iy - 0.1 * ix + 3.0 + rng.normal(0, 0.05, iy.shape)
    com_x = -0.2 * iy + 0.25 * ix - 1.0 + rng.normal(0, 0.05, iy.shape)
    fit = descan_fit(com_y, com_x)
    assert isinstance(fit, DescanFit)
    np.testing.assert_allclose(fit.slope, [[0.4, -0.1], [-0.2, 0.25]], atol=0.003)
    np.testing.assert_allclose(fit.offset, [3.0, -1.0], atol=0.05)
    assert fit.residual == pytest.approx(0.05, rel=0.1)
    assert fit.shape == (20, 30)
    left_y, left_x = fit.remove(com_y, com_x)
    assert abs(left_y.mean()) < 0.01
    assert abs(left_x.mean()) < 0.01
    np.testing.assert_allclose(descan_fit(left_y, left_x).slope, 0, atol=1e-12)


def test_mask_and_nan_are_left_out():
    iy, ix = np.mgrid[:16, :16]
    com_y, com_x = 0.1 * iy + 0.0, 0.2 * ix + 0.0
    specimen = (iy > 8) & (ix > 4)
    com_y = np.where(specimen, com_y + 5.0, com_y)  # a specimen where the plane is not
    com_x = com_x.astype(float)
    com_x[0, 0] = np.nan
    fit = descan_fit(com_y, com_x, mask=~specimen)
    np.testing.assert_allclose(fit.slope, [[0.1, 0.0], [0.0, 0.2]], atol=1e-12)
    assert abs(descan_fit(com_y, com_x).slope[0][0] - 0.1) > 0.05  # without it: wrong


def test_synthetic_descan():
    # smooth_phase=0: no long-range field that a plane could take for descan
    arr = synthetic(scan=(24, 24), det=(48, 48), dose=1e4, smooth_phase=0.0, seed=1,
                    descan=DESCAN, descan_offset=OFFSET)
    com = framescope.run(CenterOfMass(), arr)
    fit = descan_fit(com)
    np.testing.assert_allclose(fit.slope, DESCAN, atol=0.01)  # 0.1 px/step asked
    np.testing.assert_allclose(fit.offset, OFFSET, atol=0.15)
    com_y, com_x = fit.remove(com)
    assert isinstance(com_y, xr.DataArray)
    assert com_y.dims == ("scan_y", "scan_x")
    assert com_y.name == "com_y"
    assert com_x.name == "com_x"
    # what is left is the specimen's own deflection: the ground truth
    k = 48 / (2 * np.pi)
    truth = k * arr.true_phase_gradient_x.values
    assert np.corrcoef(com_x.values.ravel(), truth.ravel())[0, 1] > 0.9
    assert np.abs(com_x.values - truth).mean() < np.abs(com.com_x.values - truth).mean() / 3
    py, _ = fit.plane()
    np.testing.assert_allclose(com.com_y.values - com_y.values, py, rtol=1e-6, atol=1e-6)


def test_overlay():
    hv = pytest.importorskip("holoviews")
    iy, ix = np.mgrid[:40, :40]
    fit = descan_fit(0.1 * iy, 0.1 * ix)
    field = fit.overlay(max_arrows=10)
    assert isinstance(field, hv.VectorField)
    assert len(field) == 100
    np.testing.assert_allclose(field.dimension_values("magnitude").max(),
                               np.hypot(3.6, 3.6))


@pytest.mark.parametrize(("args", "kw", "match"), [
    ((np.zeros((4, 4)), np.zeros((4, 5))), {}, "one shape"),
    ((np.zeros((4, 4)), np.zeros((4, 4))), {"mask": np.ones((3, 3), bool)}, "mask"),
    ((np.zeros((4, 4)), np.zeros((4, 4))), {"mask": np.eye(4, dtype=bool)}, "one line"),
    ((np.full((4, 4), np.nan), np.zeros((4, 4))), {}, "usable positions"),
])
def test_errors(args, kw, match):
    with pytest.raises(CalibrationError, match=match):
        descan_fit(*args, **kw)


def test_remove_checks_shape():
    fit = descan_fit(*np.mgrid[:4, :4].astype(float))
    with pytest.raises(CalibrationError, match="shape"):
        fit.remove(np.zeros((5, 4)), np.zeros((5, 4)))
