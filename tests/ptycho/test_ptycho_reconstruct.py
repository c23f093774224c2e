"""Offline reconstruction of the synthetic phase object through the engine."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _ptycho_helpers import illuminated, phase_r, problem

import framescope
from framescope.calibration import CalibrationError
from framescope.datasets import synthetic
from framescope.ptycho import CollectFrames, reconstruct, start

ITERATIONS = 10  # the stated budget: r >= 0.95 within 10 sweeps (0.999 measured)


@pytest.mark.parametrize("algorithm", ["rpie", "epie"])
def test_small_problem_reconstructs_the_true_phase(algorithm):
    arr, reader, defocus = problem()
    ds = reconstruct(arr, iterations=ITERATIONS, defocus=defocus, algorithm=algorithm,
                     client="inline")
    assert ds["object_phase"].shape == reader.object_shape  # the synthetic's own grid
    region = illuminated(ds)
    assert region.sum() > 1000
    r = phase_r(ds["object_phase"].values, reader.phase, region)
    assert r >= 0.95, r
    err = ds["error"].values
    assert err.shape == (ITERATIONS,)
    assert err[-1] < err[0] / 3
    assert ds.attrs["complete"] == 1
    assert ds.attrs["algorithm"] == algorithm
    assert ds.attrs["alpha"] == (1.0 if algorithm == "epie" else 0.1)
    # object amplitude of a phase object: ~1 where illuminated
    amp = ds["object_amplitude"].values[region]
    assert abs(np.median(amp) - 1) < 0.05


def test_rotated_flipped_scan_reconstructs_with_subpixel_positions():
    arr, reader, defocus = problem(rotation=0.35, flip=True, scan=(14, 14))
    ds = reconstruct(arr, iterations=ITERATIONS, defocus=defocus, client="inline")
    assert ds["object_phase"].shape == reader.object_shape
    r = phase_r(ds["object_phase"].values, reader.phase, illuminated(ds))
    assert r >= 0.95, r
    # the scan axes are rotated against the object's: positions say where each probe was
    yy, xx = reader.probe_centres()
    h, w = arr.sizes["det_y"], arr.sizes["det_x"]
    pixel = ds.attrs["pixel_size_m"][0] * 1e9
    np.testing.assert_allclose(ds["position_y"].values / pixel, yy - yy[0, 0], atol=1e-6)
    np.testing.assert_allclose(ds["position_x"].values / pixel, xx - xx[0, 0], atol=1e-6)
    assert h == w


def test_object_interp_onto_the_scan_gives_the_true_phase_there():
    arr, _reader, defocus = problem()
    ds = reconstruct(arr, iterations=ITERATIONS, defocus=defocus, client="inline")
    # unrotated: the object's nm coordinates are the scan's
    np.testing.assert_allclose(ds["position_x"].values[0], arr["scan_x"].values, atol=1e-9)
    on_scan = ds["object_phase"].interp(y=arr["scan_y"], x=arr["scan_x"]).values
    truth = arr["true_phase"].values
    inner = (slice(2, -2), slice(2, -2))
    r = phase_r(on_scan[inner], truth[inner], np.ones_like(truth[inner], bool))
    assert r >= 0.9, r
    assert ds["y"].attrs["units"] == "nm"
    assert ds["probe_y"].attrs["units"] == "nm"


def test_collect_frames_crops_and_bins_like_numpy():
    arr = synthetic(scan=(3, 4), det=(20, 20), semiconv=3, calibrated=True, seed=2)
    ds = framescope.run(CollectFrames(crop=12, bin=2), arr, client="inline")
    frames = np.asarray(arr.values, np.float64)
    ref = frames[:, :, 4:16, 4:16].reshape(3, 4, 6, 2, 6, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(ds["frames"].values, ref)
    # the zero frequency (det 10 = crop px 6) belongs on binned pixel 6 // 2 = 3, which
    # covers crop px 6 and 7: its centre is half an original (a quarter binned) px off
    window = CollectFrames(crop=12, bin=2).window(
        framescope.udf.Meta((3, 4), (20, 20), np.dtype("uint16"),
                            calibration=arr.fs.calibration))
    assert window.start == (4, 4)
    assert window.offset == (-0.25, -0.25)
    np.testing.assert_array_equal(ds["det_shape"].values, [20, 20])


@pytest.mark.parametrize(("crop", "bin"), [(32, 1), (None, 2)])
def test_cropped_or_binned_frames_reconstruct(crop, bin):
    """Cropping coarsens the object pixel (48/32); binning keeps it but shrinks the
    real-space window to 24 px, so the (nearly focused) probe must fit in it."""
    arr, _, defocus = problem(det=(48, 48), semiconv=8, defocus=1.0)
    ds = reconstruct(arr, iterations=ITERATIONS, defocus=defocus, crop=crop, bin=bin,
                     client="inline")
    n = 32 if crop else 24
    assert ds.attrs["frame_shape"] == [n, n]
    assert ds.attrs["pixel_size_m"][0] == pytest.approx(0.2e-10 * (48 / 32 if crop else 1))
    on_scan = ds["object_phase"].interp(y=arr["scan_y"], x=arr["scan_x"]).values
    inner = (slice(2, -2), slice(2, -2))
    r = phase_r(on_scan[inner], arr["true_phase"].values[inner], np.ones((12, 12), bool))
    assert r >= 0.95, r


def test_missing_calibration_is_named():
    arr = synthetic(scan=(4, 4), det=(16, 16), semiconv=3)
    with pytest.raises(CalibrationError, match="energy, angle_per_px, scan_step"):
        reconstruct(arr, iterations=1, client="inline")
    ds = reconstruct(arr, iterations=1, client="inline", energy="300 kV",
                     angle_per_px=1e-3, scan_step="0.5 Å", semiconv="3 mrad")
    assert ds.sizes["iteration"] == 1


def test_bad_parameters():
    arr, _, _ = problem(scan=(4, 4))
    with pytest.raises(ValueError, match="epie"):
        reconstruct(arr, algorithm="epie", alpha=0.2)
    with pytest.raises(ValueError, match="algorithm"):
        reconstruct(arr, algorithm="hio")
    with pytest.raises(ValueError, match="schedule"):
        reconstruct(arr, iterations=1, schedule=np.zeros((3, 3)), client="inline")


def test_started_in_a_thread_equals_the_blocking_call_and_stops():
    arr, _, defocus = problem(scan=(8, 8))
    rec = start(arr, iterations=4, defocus=defocus, client="inline")
    ds = rec.result(60)
    ref = reconstruct(arr, iterations=4, defocus=defocus, client="inline")
    np.testing.assert_array_equal(ds["object_phase"], ref["object_phase"])
    assert rec.done()
    # a long run stopped once it has shown an update
    rec = start(arr, iterations=100_000, defocus=defocus, client="inline", update_every=1)
    deadline = time.monotonic() + 60
    while rec.partial() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = rec.stop(60)
    assert stopped.attrs["stopped"] == 1
    assert 1 <= stopped.attrs["iterations"] < 100_000
    with pytest.raises(TypeError, match="stop"):
        start(arr, stop=None)
