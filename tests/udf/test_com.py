from __future__ import annotations

import numpy as np
import pytest

import framescope
from framescope.datasets import synthetic
from framescope.udf import CenterOfMass


def _numpy_com(ref, cy, cx, radius=None):
    h, w = ref.shape[2:]
    yy, xx = np.mgrid[:h, :w].astype("f8")
    inside = np.ones((h, w), bool)
    if radius is not None:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    data = ref.astype("f8") * inside
    total = data.sum((2, 3))
    return (data * (yy - cy)).sum((2, 3)) / total, (data * (xx - cx)).sum((2, 3)) / total


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
@pytest.mark.parametrize("radius", [None, 3.0, 6.5])
def test_com_matches_numpy(dtype, radius, client):
    rng = np.random.default_rng(4)
    ref = rng.integers(1, 200, (7, 9, 15, 16)).astype(dtype)
    arr = framescope.from_array(ref, chunks=(3, 9, 15, 16))
    exp_y, exp_x = _numpy_com(ref, 7, 8, radius)
    for c in ("inline", client):
        res = arr.fs.com(radius=radius, client=c)
        np.testing.assert_allclose(res["com_y"], exp_y, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res["com_x"], exp_x, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res["magnitude"], np.hypot(exp_y, exp_x), rtol=1e-4,
                                   atol=1e-5)


def test_rotation_flip_divergence_curl():
    rng = np.random.default_rng(2)
    ref = rng.integers(1, 50, (6, 8, 11, 11)).astype("uint16")
    arr = framescope.from_array(ref)
    base = arr.fs.com(client="inline")
    rot = arr.fs.com(rotation=90, client="inline")
    # 90 degrees counter-clockwise: (x, y) -> (-y, x)
    np.testing.assert_allclose(rot["field_x"], -base["com_y"], atol=1e-5)
    np.testing.assert_allclose(rot["field_y"], base["com_x"], atol=1e-5)
    flip = arr.fs.com(flip_y=True, client="inline")
    np.testing.assert_allclose(flip["field_y"], -base["com_y"], atol=1e-6)
    fy, fx = base["field_y"].values.astype("f8"), base["field_x"].values.astype("f8")
    np.testing.assert_allclose(base["divergence"], np.gradient(fy, axis=0) +
                               np.gradient(fx, axis=1), atol=1e-5)
    np.testing.assert_allclose(base["curl"], np.gradient(fx, axis=0) -
                               np.gradient(fy, axis=1), atol=1e-5)


def test_com_follows_the_true_phase_gradient():
    arr = synthetic(scan=(16, 16), det=(32, 32), dose=1e6, seed=3)
    res = arr.fs.com(client="inline")
    for axis in ("y", "x"):
        truth = arr[f"true_phase_gradient_{axis}"].values.ravel()
        got = res[f"com_{axis}"].values.ravel()
        assert np.corrcoef(truth, got)[0, 1] > 0.9
    # a phase gradient field has no curl: much smaller than the divergence
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(res["curl"][inner]).mean() < 0.2 * np.abs(res["divergence"][inner]).mean()


def test_radius_outside_detector_is_an_error():
    arr = framescope.from_array(np.ones((2, 2, 8, 8), "uint8"))
    with pytest.raises(ValueError, match="radius"):
        CenterOfMass(radius=-1)
    with pytest.raises(ValueError, match="no detector pixel within radius"):
        arr.fs.com(cy=100, cx=100, radius=2, client="inline")


# ---- physical units ------------------------------------------------------------------------
def test_phase_gradient_in_rad_per_angstrom_is_the_true_one():
    # the synthetic COM shift is W / (2 pi) * <grad phi> px (datasets/_synthetic.py); with
    # angle_per_px = lambda / (W p) the deflection is lambda / (2 pi p) * <grad phi>, so
    # 2 pi theta / lambda = <grad phi> / p: the true gradient per object pixel over p in Å
    from framescope.calibration import electron_wavelength

    w, p_angstrom, energy = 32, 0.2, 200e3
    lam = electron_wavelength(energy)
    arr = synthetic(scan=(16, 16), det=(w, w), dose=1e6, seed=3).fs.calibrate(
        energy=energy, angle_per_px=lam / (w * p_angstrom * 1e-10),
        scan_step=p_angstrom * 1e-10)
    res = arr.fs.com(client="inline")
    for axis in ("y", "x"):
        truth = arr[f"true_phase_gradient_{axis}"].values / p_angstrom  # rad/Å
        got = res[f"phase_gradient_{axis}"].values
        assert res[f"phase_gradient_{axis}"].attrs["units"] == "rad/Å"
        # Poisson noise and the discrete probe: about 0.3 % RMS here
        rms = np.sqrt(np.mean((got - truth) ** 2) / np.mean(truth**2))
        assert rms < 0.01
        slope = np.polyfit(truth.ravel(), got.ravel(), 1)[0]
        assert abs(slope - 1) < 0.005
        deflection = res[f"deflection_{axis}"]
        assert deflection.attrs["units"] == "mrad"
        np.testing.assert_allclose(deflection, res[f"field_{axis}"] * lam / (w * p_angstrom
                                                                            * 1e-10) * 1e3,
                                   rtol=1e-5)


def test_deflection_without_energy_and_nothing_without_calibration(caplog):
    rng = np.random.default_rng(6)
    ref = rng.integers(1, 50, (3, 4, 10, 10)).astype("uint16")
    plain = framescope.from_array(ref).fs.com(client="inline")
    assert not any(k.startswith(("deflection", "phase")) for k in plain.data_vars)
    assert plain["com_x"].attrs["units"] == "px"
    with caplog.at_level("DEBUG", logger="framescope.udf._com"):
        res = framescope.from_array(ref).fs.calibrate(angle_per_px="0.5 mrad").fs.com(
            client="inline")
    assert "phase_gradient_x" not in res
    assert "energy" in caplog.text
    np.testing.assert_allclose(res["deflection_x"], plain["field_x"] * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(res["com_x"], plain["com_x"])  # pixels unchanged


def test_centre_rotation_and_flip_default_to_the_calibration():
    rng = np.random.default_rng(7)
    ref = rng.integers(1, 50, (4, 5, 12, 12)).astype("uint16")
    arr = framescope.from_array(ref)
    cal = arr.fs.calibrate(center=(5.5, 6.25), rotation=np.pi / 2, flip=True)
    got = cal.fs.com(client="inline")
    exp = arr.fs.com(cy=5.5, cx=6.25, rotation=90, flip_y=True, client="inline")
    for k in ("com_y", "com_x", "field_y", "field_x"):
        np.testing.assert_allclose(got[k], exp[k], atol=1e-6)
    exp_y, exp_x = _numpy_com(ref, 5.5, 6.25)
    np.testing.assert_allclose(got["com_y"], exp_y, rtol=1e-4, atol=1e-5)
    # rotation 90 after flipping y: field = (com_x, com_y)
    np.testing.assert_allclose(got["field_y"], exp_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["field_x"], exp_y, rtol=1e-4, atol=1e-5)
    assert (got.attrs["com_cy"], got.attrs["com_rotation"], got.attrs["com_flip_y"]) == (
        5.5, 90.0, True)
    # explicit values win, zero and False included
    mine = cal.fs.com(cy=6, cx=6, rotation=0, flip_y=False, client="inline")
    plain = arr.fs.com(client="inline")
    for k in ("com_y", "com_x", "field_y", "field_x"):
        np.testing.assert_array_equal(mine[k], plain[k])
