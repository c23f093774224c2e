"""The simulated ptychography experiment: frames against plain numpy on its truth, Poisson
statistics, dark frames, and the experiment published to a real ZMQSource (dark series, then
the scan) reconstructed live."""

from __future__ import annotations

import numpy as np
import pytest
from _ptycho_helpers import illuminated, phase_r

from framescope.ptycho import ptycho_experiment, publish_experiment, reconstruct, scan_positions

SMALL = {"scan": (8, 8), "det": (32, 32), "step": 3}


def numpy_frames(probe: np.ndarray, obj: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """|F(P * O[window])|^2, zero frequency at (h//2, w//2), one window at a time."""
    h, w = probe.shape
    out = []
    for cy, cx in corners:
        psi = probe * obj[cy:cy + h, cx:cx + w]
        out.append(np.fft.fftshift(np.abs(np.fft.fft2(psi) / np.sqrt(h * w)) ** 2))
    return np.array(out)


@pytest.mark.parametrize("kind", ["electron", "xray"])
def test_noise_free_frames_are_the_far_field_of_the_truth(kind):
    exp = ptycho_experiment(kind, dose=None, **SMALL)
    t = exp.truth
    frames = exp.frames.values.reshape(-1, 32, 32)
    assert frames.dtype == np.float32
    want = numpy_frames(t.probe, t.object, t.corners)
    np.testing.assert_allclose(frames, want, rtol=1e-5, atol=1e-6 * want.max())
    # the truth has amplitude and phase structure, and a unit probe
    assert np.ptp(np.abs(t.object)) > 0.2
    assert np.ptp(np.angle(t.object)) > 0.5
    assert np.isclose(np.sum(np.abs(t.probe) ** 2), 1.0)
    # the positions reconstruct() derives from the calibration are the truth's
    cal = exp.calibration
    corners, _ = scan_positions((8, 8), cal.scan_step, exp.geometry.pixel)
    np.testing.assert_array_equal(corners, t.corners)
    assert cal.radiation == kind
    if kind == "xray":  # the detector's distance and pixel are known
        assert cal.camera_length is not None
        assert cal.pixel_size == 75e-6
        assert np.isclose(cal.detector_angle, exp.geometry.angle_per_px)


def test_poisson_counts_around_the_expectation():
    dose, background = 2e4, 0.5
    exp = ptycho_experiment(dose=dose, background=background, **SMALL)
    exact = ptycho_experiment(dose=None, **SMALL)  # the same object and probe, sum |P|^2 = 1
    expected = exact.frames.values.astype(np.float64) * dose + background
    counts = exp.frames.values.astype(np.float64)
    assert exp.frames.dtype == np.uint16
    assert np.all(counts == np.rint(counts))
    lit = expected > 20  # z-scores are about normal there
    z = (counts[lit] - expected[lit]) / np.sqrt(expected[lit])
    assert abs(z.mean()) < 0.05
    assert 0.95 < z.std() < 1.05
    # the absorbing object takes a share of the dose: sum over the frame < dose
    sums = counts.sum(axis=(2, 3)) - background * 32 * 32
    assert np.all(sums < dose)
    assert np.all(sums > 0.4 * dose)
    # background-only pixels (far from the bright field) hold Poisson(0.5) counts
    dark_px = expected < background * 1.01
    assert abs(counts[dark_px].mean() - background) < 0.02


def test_dark_frames_carry_the_offset_and_read_noise_the_frames_carry():
    exp = ptycho_experiment(dose=1e4, dark_frames=200, offset=100, read_noise=3, **SMALL)
    dark = exp.dark.astype(np.float64)
    assert exp.dark.shape == (200, 32, 32)
    assert exp.dark.dtype == np.uint16
    std = dark.std(axis=0)
    assert 2.7 < np.median(std) < 3.3
    offset_map = dark.mean(axis=0)
    assert abs(offset_map.mean() - 100) < 1
    assert 3 < offset_map.std() < 7  # a 5 % fixed pattern
    exact = ptycho_experiment(dose=None, **SMALL).frames.values * 1e4
    signal = exp.frames.values.astype(np.float64) - offset_map
    # dark-subtracted frames average to the expectation (Poisson and read noise both mean
    # 0): z-scores of the 64-frame means, with the variance of counts, read noise, the
    # rounding to integers and the 200-frame dark mean
    var = (exact.mean(axis=(0, 1)) + 9 + 1 / 12) / 64 + (9 + 1 / 12) / 200
    z = (signal.mean(axis=(0, 1)) - exact.mean(axis=(0, 1))) / np.sqrt(var)
    assert abs(z.mean()) < 0.15
    assert 0.9 < z.std() < 1.1
    assert np.abs(z).max() < 5


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="kind: expected"):
        ptycho_experiment("neutron")
    with pytest.raises(ValueError, match=r"det: .*square"):
        ptycho_experiment(det=(32, 48))
    with pytest.raises(ValueError, match="read_noise"):
        ptycho_experiment(dark_frames=5, read_noise=0)
    with pytest.raises(ValueError, match="dose"):
        ptycho_experiment(dose=-1)
    with pytest.raises(TypeError, match="PtychoExperiment"):
        publish_experiment("not an experiment")


def test_published_dark_then_scan_reconstruct_live():
    pytest.importorskip("zmq")
    from framescope.live import ZMQSource

    exp = ptycho_experiment(scan=(12, 12), det=(32, 32), step=3, dose=1e6, dark_frames=30,
                            offset=200, read_noise=2)
    pub = publish_experiment(exp, rate=2000)
    with pub as endpoint:
        src = ZMQSource(endpoint, "dectris-stream2")
        ds = reconstruct(src, iterations=12, defocus=exp.defocus, timeout=60)
    assert pub.frames_sent == 144
    assert pub.last_frame_time >= pub.first_frame_time
    # the dark series became the source's dark and was subtracted from the scan
    assert src.dark is not None
    assert src.dark.report()["frames"] == 30
    np.testing.assert_allclose(src.dark.mean, exp.dark.mean(axis=0), atol=1e-3)
    assert ds.attrs["complete"] == 1
    assert ds["measured"].all()
    # the calibration travelled in the header: the object pixel is the truth's
    assert np.isclose(ds.attrs["pixel_size_m"][0], exp.geometry.pixel[0])
    r = phase_r(ds["object_phase"].values, np.angle(exp.truth.object), illuminated(ds))
    assert r >= 0.9, r
