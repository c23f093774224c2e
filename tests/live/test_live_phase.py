"""tcBF (parallax) on a live stream: a replayed scan gives the offline fit and image."""

from __future__ import annotations

import numpy as np

import framescope
from framescope.datasets import synthetic
from framescope.live import ZMQSource
from framescope.udf import Parallax

from .conftest import simulator_thread

SCAN, DET = (16, 16), (32, 32)


def test_live_parallax_equals_the_offline_fit_and_image():
    arr = synthetic(scan=SCAN, det=DET, semiconv=6, defocus=4.0, step=2, dose=1e5,
                    atom_phase=0.05, smooth_phase=0.0, calibrated=True, seed=5)
    offline = framescope.run(Parallax(), arr)
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2")
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=2000,
                          source=arr) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(Parallax(), src)
        live = job.result(60)
        job.cancel()
    assert live.attrs["complete"]
    assert np.isfinite(float(offline["defocus"]))
    np.testing.assert_allclose(float(live["defocus"]), float(offline["defocus"]), rtol=1e-4)
    np.testing.assert_allclose(live["tcbf"].values, offline["tcbf"].values, rtol=1e-4)
