"""Header arrays (pixel mask, flat field) from a sender to the series, over real sockets."""

from __future__ import annotations

import numpy as np
import pytest

from framescope.live import ZMQSource

from .conftest import simulator_thread, until

SCAN, DET = (2, 3), (24, 20)


@pytest.mark.parametrize("protocol", ["dectris-stream2", "dectris-stream1", "native"])
def test_sent_header_arrays_arrive_on_the_series(protocol):
    rng = np.random.default_rng(11)
    mask = (rng.random(DET) < 0.05).astype(np.uint32)  # a few dead pixels
    flat = rng.uniform(0.8, 1.2, DET).astype(np.float32)
    sent = {"pixel_mask": mask, "flatfield": flat}
    with simulator_thread(protocol=protocol, scan=SCAN, det=DET, rate=0,
                          compression="bslz4", header_arrays=sent) as endpoint, \
            ZMQSource(endpoint, protocol) as src:
        until(lambda: src.status.state == "finished", what="series received")
        series = src.series
    assert series.arrays.keys() == sent.keys()
    for key, value in sent.items():
        np.testing.assert_array_equal(series.arrays[key], value)
        assert series.arrays[key].dtype == value.dtype
    assert not sent.keys() & series.header.keys()  # not in the JSON header (attrs)
