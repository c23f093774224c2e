"""SSB on a live stream: the image fills in while frames arrive, and the final image equals
the offline run on the same frames (one engine, the same UDF)."""

from __future__ import annotations

import numpy as np

import framescope
from framescope.datasets import synthetic
from framescope.live import ZMQSource
from framescope.udf import SSB

from .conftest import simulator_thread

SCAN, DET = (12, 10), (32, 32)


def test_live_ssb_equals_the_offline_image():
    arr = synthetic(scan=SCAN, det=DET, semiconv=6, dose=1e5, atom_phase=0.05,
                    smooth_phase=0.0, calibrated=True, seed=5)
    offline = framescope.run(SSB(), arr)
    assert np.isfinite(offline["phase"].values).all()
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2")
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=2000,
                          source=arr) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(SSB(), src)
        live = job.result(60)
        job.cancel()
    assert live.attrs["complete"]
    # the calibration came with the stream's header: the geometry is the offline one
    assert job.series.meta.calibration.semiconv == arr.fs.calibration.semiconv
    np.testing.assert_allclose(live["phase"].values, offline["phase"].values, atol=1e-5)
    np.testing.assert_array_equal(live["bright_field"].values, offline["bright_field"].values)
