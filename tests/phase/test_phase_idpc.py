"""framescope.phase.idpc on the synthetic phase object against its known phase.

The reference is computed here from the simulation's whole object (periodic on its grid):

* the probe-smoothed phase ``|P|² ⋆ phi``: COM measures the probe-intensity-averaged
  gradient, the gradient of exactly this, so iDPC should return it (slope 1, in rad);
* the phase band-limited to ``|k| < 2 alpha``: the iDPC (and SSB) transfer ends at twice the
  aperture; within it iDPC weighs low frequencies (its transfer is the aperture's
  autocorrelation, falling from 1 at k = 0 to 0 at 2 alpha), so it correlates well but its
  slope is below 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from framescope.datasets import SyntheticReader, synthetic
from framescope.phase import idpc

DET = 64
SEMICONV = DET / 6  # BF disk radius 1/6 of the detector
BASE = {"scan": (32, 32), "det": (DET, DET), "dose": 1e6, "semiconv": SEMICONV,
        "atom_phase": 0.1, "seed": 0}


def _references(**params):
    """(probe-smoothed phase, phase band-limited to 2 alpha) under each probe centre."""
    reader = SyntheticReader(**params)
    phase = reader.phase
    ny, nx = phase.shape
    kernel = np.zeros((ny, nx))
    kernel[:DET, :DET] = np.abs(reader.probe) ** 2
    kernel = np.roll(kernel, (-(DET // 2), -(DET // 2)), axis=(0, 1))  # centre at 0
    spectrum = np.fft.fft2(phase)
    smoothed = np.fft.ifft2(spectrum * np.conj(np.fft.fft2(kernel))).real
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    alpha = SEMICONV / DET  # aperture radius in cycles per object pixel
    band = np.fft.ifft2(spectrum * (k < 2 * alpha)).real
    cy, cx = reader.probe_centres()
    iy, ix = np.rint(cy).astype(int), np.rint(cx).astype(int)
    return smoothed[iy, ix], band[iy, ix]


def _r(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


@pytest.mark.parametrize("smooth_phase", [0.1, 0.0])  # with long waves; atoms only
def test_idpc_phase_is_the_probe_smoothed_object_phase(smooth_phase):
    params = {**BASE, "smooth_phase": smooth_phase}
    arr = synthetic(**params, calibrated=True)
    ds = idpc(arr, client="inline")
    got = ds["phase"].values
    assert ds["phase"].attrs["units"] == "rad"
    assert ds["phase"].dims == ("scan_y", "scan_x")
    np.testing.assert_allclose(ds["scan_x"], np.arange(32) * 0.02)  # nm, from calibration
    smoothed, band = _references(**params)
    assert _r(got, smoothed) > 0.99
    slope = np.polyfit(smoothed.ravel() - smoothed.mean(), got.ravel(), 1)[0]
    assert abs(slope - 1) < 0.05  # rad, not arbitrary units
    assert _r(got, band) > 0.9
    assert abs(float(np.mean(got))) < 1e-3  # the mean phase is not measured: zero


def test_scan_rotation_and_flip_come_from_the_calibration():
    params = {**BASE, "smooth_phase": 0.1, "rotation": 0.5, "flip": True}
    arr = synthetic(**params, calibrated=True)
    smoothed, band = _references(**params)
    ds = idpc(arr, client="inline")
    assert ds.attrs["idpc_rotation"] == pytest.approx(math.degrees(0.5))
    assert ds.attrs["idpc_flip_y"] is True
    assert _r(ds["phase"], smoothed) > 0.99
    assert _r(ds["phase"], band) > 0.9
    # explicit values win: the right ones on an uncalibrated rotation give the same phase
    plain = arr.fs.calibrate(rotation=0.0, flip=False)
    same = idpc(plain, rotation=math.degrees(0.5), flip_y=True, client="inline")
    np.testing.assert_allclose(same["phase"], ds["phase"], atol=1e-6)
    # ... and the wrong ones lose the object (a test that the rotation is used at all)
    wrong = idpc(arr, flip_y=False, client="inline")
    assert _r(wrong["phase"], smoothed) < 0.7


def test_highpass_and_corrections_pass_through():
    from framescope.corrections import Corrections

    arr = synthetic(**{**BASE, "scan": (16, 16), "smooth_phase": 0.1}, calibrated=True)
    full = idpc(arr, client="inline")
    damped = idpc(arr, highpass=0.1, client="inline")
    assert damped.attrs["idpc_highpass"] == 0.1
    assert float(damped["phase"].std()) < 0.8 * float(full["phase"].std())  # low k damped
    # 2x2 binning: half the pixels, twice the angle per pixel, the same phase in rad (but
    # for a bias of about 0.005 raw px in the COM: binning drops where in its bin the
    # intensity lies, and the BF disk edge makes that systematic)
    binned = idpc(arr, corrections=Corrections(bin=2), client="inline")
    assert binned.attrs["idpc_cy"] == 15.75  # the centre the binned frames have
    assert "corrections" in binned.attrs
    assert _r(binned["phase"], full["phase"]) > 0.99
    slope = np.polyfit(full["phase"].values.ravel(), binned["phase"].values.ravel(), 1)[0]
    assert abs(slope - 1) < 0.03


def test_live_stream_phase_equals_the_file_phase():
    """The same frames from a DECTRIS stream2 sender (the calibration in its header) give
    the same iDPC phase as the file."""
    import queue
    import threading

    pytest.importorskip("zmq")
    import framescope
    from framescope.live import ZMQSource, simulate_stream
    from framescope.udf import IDPC

    arr = synthetic(**{**BASE, "scan": (6, 7), "det": (24, 24), "semiconv": 4.0,
                       "smooth_phase": 0.1}, calibrated=True)
    offline = framescope.run(IDPC(), arr, client="inline")
    bound: queue.Queue = queue.Queue()
    sender = threading.Thread(target=simulate_stream, args=("tcp://127.0.0.1:0",), kwargs={
        "on_bound": bound.put, "protocol": "dectris-stream2", "scan": (6, 7),
        "det": (24, 24), "rate": 0, "source": arr}, daemon=True)
    sender.start()
    try:
        job = framescope.submit(IDPC(), ZMQSource(bound.get(timeout=60), "dectris-stream2"))
        live = job.result(60)
        job.cancel()
    finally:
        sender.join(timeout=30)
    assert live["phase"].attrs["units"] == "rad"
    np.testing.assert_array_equal(live["phase"].values, offline["phase"].values)
