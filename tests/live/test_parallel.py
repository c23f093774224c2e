"""Two receiver processes PULL from one PUSH socket: merged results equal offline."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import ParallelRun, ZMQSource
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame

from .conftest import process_context, simulator_thread

SCAN, DET = (8, 9), (24, 24)


def test_two_receivers_share_one_stream():
    arr = synthetic(scan=SCAN, det=DET, seed=2)
    udfs = {"vd": ApplyMasks({"bf": fm.disk(12, 12, 5)}), "com": CenterOfMass(radius=8),
            "sum": SumFrame()}
    expected = {name: framescope.run(u, arr, client="inline") for name, u in udfs.items()}
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          compression="bslz4", peers=2, source=arr) as endpoint:
        src.endpoint = endpoint
        run = src.run(udfs, processes=2, mp_context=process_context())
        assert isinstance(run, ParallelRun)
        live = run.wait(120)
        st = run.status
        run.stop()
    assert st.state == "finished"
    assert (st.frames_received, st.frames_processed, st.gaps, st.dropped) == (72, 72, 0, 0)
    assert bool(live.attrs["complete"])
    for name, ds in expected.items():
        for key in ds.data_vars:
            if key != "done":
                np.testing.assert_array_equal(live[f"{name}_{key}"].values, ds[key].values,
                                              err_msg=key)
    assert run.latest_frame().shape == DET


def test_several_processes_need_the_scan_and_no_recording():
    with pytest.raises(ValueError, match="scan="):
        ZMQSource("tcp://127.0.0.1:1", "native").run(SumFrame(), processes=2)
    with pytest.raises(ValueError, match="record="):
        ZMQSource("tcp://127.0.0.1:1", "native", scan=(2, 2)).run(
            SumFrame(), processes=2, record="x.h5")
