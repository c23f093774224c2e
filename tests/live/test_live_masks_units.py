"""Masks in mrad on a stream: resolved with the calibration its header brings, the same
images as offline with the pixel masks they imply."""

from __future__ import annotations

import numpy as np

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import ZMQSource
from framescope.udf import ApplyMasks

from .conftest import simulator_thread

SCAN, DET = (5, 6), (24, 24)


def test_a_calibrated_stream_resolves_mrad_masks():
    arr = synthetic(scan=SCAN, det=DET, seed=4).fs.calibrate(
        angle_per_px="0.5 mrad", center=(11.5, 12.3))
    masks = {"adf": fm.ring(r_in=2.2, r_out=5.1, units="mrad"),
             "bf": fm.disk(r=1.6, units="mrad")}
    implied = {"adf": fm.ring(11.5, 12.3, 4.4, 10.2), "bf": fm.disk(11.5, 12.3, 3.2)}
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2")
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          source=arr) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(ApplyMasks(masks), src)
        live = job.result(60)
        job.cancel()
    frames = arr.values.astype("f8")
    for name, spec in implied.items():
        expected = (frames * spec.rasterize(DET)).sum(axis=(2, 3))
        np.testing.assert_allclose(live["intensity"].sel(mask=name), expected, rtol=1e-6,
                                   err_msg=name)
