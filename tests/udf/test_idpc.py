"""IDPC UDF and the Fourier integration, against analytic fields and numpy on the same
COM values."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.datasets import synthetic
from framescope.udf import IDPC, CenterOfMass
from framescope.udf._idpc import integrate_gradient


def _cosines(shape, step, terms):
    """phi = sum a cos(2 pi (my y / (ny dy) + mx x / (nx dx)) + c) on a grid of physical
    spacing ``step``, periodic on the grid, and its analytic gradient per unit length."""
    ny, nx = shape
    dy, dx = step
    y, x = np.mgrid[:ny, :nx].astype(float)
    y, x = y * dy, x * dx
    phi, gy, gx = (np.zeros(shape) for _ in range(3))
    for a, my, mx, c in terms:
        fy, fx = my / (ny * dy), mx / (nx * dx)  # cycles per unit length
        arg = 2 * np.pi * (fy * y + fx * x) + c
        phi += a * np.cos(arg)
        gy += -a * np.sin(arg) * 2 * np.pi * fy
        gx += -a * np.sin(arg) * 2 * np.pi * fx
    return phi, gy, gx


def test_periodic_integration_recovers_a_sum_of_cosines_exactly():
    terms = [(0.7, 1, 0, 0.3), (0.2, 3, -5, 1.0), (0.05, -7, 9, 2.0), (0.3, 0, 2, -0.4)]
    step = (0.8, 1.3)  # non-square scan step, gradient per length unit
    phi, gy, gx = _cosines((24, 30), step, terms)
    got = integrate_gradient(gy, gx, step=step, boundary="periodic")
    np.testing.assert_allclose(got, phi - phi.mean(), atol=1e-12)


def test_highpass_damps_each_frequency_by_its_analytic_transfer():
    hp = 0.08  # cycles per step
    for my, mx in ((1, 0), (2, 3), (0, 6)):
        phi, gy, gx = _cosines((32, 32), (1.0, 1.0), [(1.0, my, mx, 0.5)])
        k2 = (my / 32) ** 2 + (mx / 32) ** 2
        got = integrate_gradient(gy, gx, highpass=hp, boundary="periodic")
        np.testing.assert_allclose(got, phi * k2 / (k2 + hp**2), atol=1e-12)


def test_mirror_boundary_integrates_a_non_periodic_field():
    y, x = np.mgrid[:24, :40].astype(float)
    bump = np.exp(-((y - 9) ** 2 + (x - 25) ** 2) / 32)
    phi = bump + 0.02 * y + 5e-4 * x**2  # a ramp and a curvature: far from periodic
    gy = -(y - 9) / 16 * bump + 0.02
    gx = -(x - 25) / 16 * bump + 1e-3 * x
    errors = {}
    for boundary in ("mirror", "periodic"):
        got = integrate_gradient(gy, gx, boundary=boundary)
        errors[boundary] = np.sqrt(np.mean((got - got.mean() - phi + phi.mean()) ** 2))
    assert errors["mirror"] < 0.01 * phi.std()
    assert errors["periodic"] > 0.3 * phi.std()  # the wrapped ramp rings everywhere


def test_nan_counts_as_zero_gradient():
    _, gy, gx = _cosines((16, 16), (1.0, 1.0), [(1.0, 1, 2, 0.0)])
    gy[5:], gx[5:] = np.nan, np.nan
    zeros_y, zeros_x = np.nan_to_num(gy), np.nan_to_num(gx)
    np.testing.assert_array_equal(integrate_gradient(gy, gx),
                                  integrate_gradient(zeros_y, zeros_x))
    assert np.isfinite(integrate_gradient(gy, gx)).all()


def test_bad_parameters_name_what_is_wrong():
    g = np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"one shape, found \(4, 4\) and \(4, 5\)"):
        integrate_gradient(g, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="highpass"):
        integrate_gradient(g, g, highpass=-1)
    with pytest.raises(ValueError, match="boundary"):
        integrate_gradient(g, g, boundary="zero")
    with pytest.raises(ValueError, match="step"):
        integrate_gradient(g, g, step=(0, 1))
    with pytest.raises(ValueError, match="highpass"):
        IDPC(highpass=float("nan"))
    with pytest.raises(ValueError, match="boundary"):
        IDPC(boundary="wrap")


@pytest.fixture(scope="module")
def weak():
    return synthetic(scan=(12, 14), det=(32, 32), dose=1e5, atom_phase=0.1,
                     smooth_phase=0.1, seed=2, calibrated=True)


def test_phase_is_the_integrated_com_gradient_times_the_step(weak, client):
    com = framescope.run(CenterOfMass(), weak, client="inline")
    step = weak.fs.calibration.scan_step[0] * 1e10  # Å
    expected = integrate_gradient(com["phase_gradient_y"].values.astype(float),
                                  com["phase_gradient_x"].values.astype(float),
                                  step=(step, step), highpass=0.01)
    for c in ("inline", client):
        res = framescope.run(IDPC(highpass=0.01), weak, client=c)
        assert res["phase"].attrs["units"] == "rad"
        np.testing.assert_allclose(res["phase"], expected, atol=1e-5)
        np.testing.assert_array_equal(res["com_x"], com["com_x"])  # COM outputs kept


def test_uncalibrated_phase_is_in_arbitrary_units_of_the_same_shape(weak):
    # 2 pi theta / lambda with theta = field * angle_per_px: rad = a.u. * const
    cal = weak.fs.calibration
    plain = framescope.from_array(np.asarray(weak))
    res = framescope.run(IDPC(), plain, client="inline")
    assert res["phase"].attrs["units"] == "a.u."
    rad = framescope.run(IDPC(), weak, client="inline")["phase"].values
    scale = 2 * np.pi * cal.angle_per_px / cal.wavelength * cal.scan_step[0]
    np.testing.assert_allclose(res["phase"].values * scale, rad, atol=2e-5)


def test_progressive_phase_integrates_what_has_arrived(weak):
    step = weak.fs.calibration.scan_step[0] * 1e10
    seen = 0
    arr = weak.chunk({"scan_y": 3})  # four partitions: four partial results at most
    for ds in framescope.iter_run(IDPC(), arr, client="sync"):
        done = ds["done"].values
        gy = np.where(done, ds["phase_gradient_y"].values, 0.0)
        gx = np.where(done, ds["phase_gradient_x"].values, 0.0)
        expected = integrate_gradient(gy, gx, step=(step, step))
        np.testing.assert_allclose(ds["phase"].values[done], expected[done], atol=1e-5)
        assert np.isnan(ds["phase"].values[~done]).all()
        seen += 1
    assert seen > 1
    assert done.all()
    final = framescope.run(IDPC(), weak, client="inline")
    np.testing.assert_allclose(ds["phase"], final["phase"], atol=1e-6)


def test_roi_positions_count_as_zero_gradient(weak):
    roi = np.zeros((12, 14), bool)
    roi[2:9, 3:12] = True
    res = framescope.run(IDPC(), weak, roi=roi, client="inline")
    full = framescope.run(CenterOfMass(), weak, client="inline")
    step = weak.fs.calibration.scan_step[0] * 1e10
    gy = np.where(roi, full["phase_gradient_y"].values, 0.0)
    gx = np.where(roi, full["phase_gradient_x"].values, 0.0)
    np.testing.assert_allclose(res["phase"].values[roi],
                               integrate_gradient(gy, gx, step=(step, step))[roi], atol=1e-5)
    assert np.isnan(res["phase"].values[~roi]).all()
