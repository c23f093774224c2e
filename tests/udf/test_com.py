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
