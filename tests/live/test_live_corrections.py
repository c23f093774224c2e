"""Corrections on a stream: the same stage as on files, in one receiver and in several."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.corrections import Corrections
from framescope.live import ZMQSource
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame

from .conftest import process_context, simulator_thread

SCAN, DET = (6, 7), (24, 24)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(4)
    frames = rng.poisson(30, (*SCAN, *DET)).astype(np.uint16)
    bad = np.zeros(DET, bool)
    bad[[3, 12, 20], [5, 12, 1]] = True
    c = Corrections(dark=rng.normal(2, 0.3, DET), gain=rng.uniform(0.9, 1.1, DET), bad=bad,
                    bad_fill="neighbours", threshold=0.5, bin=2)
    arr = framescope.from_array(frames)
    udfs = {"vd": ApplyMasks({"r": fm.ring(6, 6, 1, 5)}), "com": CenterOfMass(),
            "sum": SumFrame()}
    offline = framescope.run(udfs, arr, corrections=c, client="inline")
    return arr, c, udfs, offline


@pytest.mark.parametrize("processes", [1, 2])
def test_a_corrected_stream_equals_the_corrected_file(case, processes):
    arr, c, udfs, offline = case
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          peers=processes, source=arr) as endpoint:
        src.endpoint = endpoint
        extra = {"processes": 2, "mp_context": process_context()} if processes > 1 else {}
        job = framescope.submit(udfs, src, corrections=c, **extra)
        live = job.result(120)
        job.cancel()
    for name, ds in offline.items():
        for key in ds.data_vars:
            np.testing.assert_allclose(live[name][key].values, ds[key].values, rtol=1e-6,
                                       err_msg=f"{name} {key}")
    assert live["sum"]["sum"].shape == (12, 12)
    np.testing.assert_allclose(live["sum"]["det_x"].values, offline["sum"]["det_x"].values)
    assert live["sum"].attrs["corrections"] == offline["sum"].attrs["corrections"]


def test_a_stream_applies_its_header_pixel_mask_unless_refused():
    frames = np.random.default_rng(3).poisson(50, (*SCAN, *DET)).astype(np.uint16)
    mask = np.zeros(DET, np.uint32)
    mask[0, :] = 1  # a gap row
    mask[5, 6] = 2  # dead
    arr = framescope.from_array(frames)
    want = frames.sum(axis=(0, 1), dtype=np.float64)
    for given in (None, False):
        src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
        with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                              source=arr, header_arrays={"pixel_mask": mask}) as endpoint:
            src.endpoint = endpoint
            job = framescope.submit(SumFrame(), src, corrections=given)
            live = job.result(60)
            job.cancel()
        if given is None:
            masked = want.copy()
            masked[mask != 0] = 0
            np.testing.assert_allclose(live["sum"].values, masked)
            assert '"bad": 25' in live.attrs["corrections"]
        else:
            np.testing.assert_allclose(live["sum"].values, want)
            assert "corrections" not in live.attrs
