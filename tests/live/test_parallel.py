"""Receiver processes PULL from one PUSH socket: merged results equal offline and numpy,
duplicates across receivers are analysed once, a killed receiver is survived, a dropped
job releases its receivers."""

from __future__ import annotations

import gc
import os
import signal

import numpy as np
import pytest
import zmq

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import Publisher, SeriesStart, ZMQSource
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame

from .conftest import process_context, simulator_thread, until

SCAN, DET = (8, 9), (24, 24)


def _udfs():
    return {"vd": ApplyMasks({"bf": fm.disk(12, 12, 5)}), "com": CenterOfMass(radius=8),
            "sum": SumFrame()}


def _assert_equal(live, expected, done=None, skip=()):
    for name, ds in expected.items():
        for key in ds.data_vars:
            if key in ("done", *skip) or (done is not None and "scan_y" not in ds[key].dims):
                continue
            got, want = live[name][key].values, ds[key].values
            if done is not None:
                got, want = got[done], want[done]
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {key}")


def test_two_receivers_share_one_stream():
    """Equal to offline; the header's arrays (seen by one receiver) reach the job."""
    arr = synthetic(scan=SCAN, det=DET, seed=2)
    expected = {name: framescope.run(u, arr, client="inline") for name, u in _udfs().items()}
    src = ZMQSource("tcp://127.0.0.1:0", "dectris-stream2", scan=SCAN)
    mask = (np.random.default_rng(1).random(DET) < 0.05).astype(np.uint32)
    with simulator_thread(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                          compression="bslz4", peers=2, source=arr,
                          header_arrays={"pixel_mask": mask}) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(_udfs(), src, processes=2, mp_context=process_context())
        live = job.result(120)
        st = job.status
        assert job.latest_frame().shape == DET
        np.testing.assert_array_equal(job.series.arrays["pixel_mask"], mask)
        job.cancel()
    assert st.state == "finished"
    assert job.done()
    assert (st.frames_received, st.frames_processed, st.gaps, st.dropped) == (72, 72, 0, 0)
    assert all(ds.attrs["complete"] for ds in live.values())
    _assert_equal(live, expected)


def test_a_frame_sent_to_both_receivers_is_analysed_once():
    """Every frame is sent twice in a row, so PUSH deals the copies to different receivers:
    sums (sig, single) and nav results equal the offline run of the unique frames."""
    data = np.random.default_rng(7).poisson(3, (*SCAN, *DET)).astype("uint16")
    frames = data.reshape(-1, *DET)
    n = len(frames)
    arr = framescope.from_array(data)
    expected = {name: framescope.run(u, arr, client="inline") for name, u in _udfs().items()}
    pub = Publisher("tcp://127.0.0.1:0", "native", peers=2)
    job = framescope.submit(_udfs(), ZMQSource(pub.endpoint, "native", scan=SCAN),
                            processes=2, mp_context=process_context())
    try:
        assert pub.wait_for_peers() == 2
        pub.send_series(SeriesStart(1, DET, frames.dtype, n, SCAN),
                        ((i, frames[i]) for i in range(n) for _ in range(2)))
        live = job.result(60)
        st = job.status
        per_receiver = [r["frames_received"] for r in job.receivers]
    finally:
        job.cancel()
        pub.close()
    assert st.state == "finished"
    assert (st.frames_received, st.duplicates, st.frames_processed) == (2 * n, n, n)
    assert min(per_receiver) > 0  # both received: copies really went to both
    _assert_equal(live, expected)
    np.testing.assert_array_equal(live["sum"]["sum"].values, frames.sum(0, dtype=np.float64))


def test_a_killed_receiver_is_named_and_the_others_finish_the_series():
    scan = (20, 20)
    arr = synthetic(scan=scan, det=DET, seed=4)
    frames = np.asarray(arr.values).reshape(-1, *DET)
    expected = {name: framescope.run(u, arr, client="inline") for name, u in _udfs().items()}
    # 400 frames at 100 Hz: the series is mid-way when a receiver is killed
    with simulator_thread(protocol="native", scan=scan, det=DET, rate=100, peers=3,
                          source=arr) as endpoint:
        job = framescope.submit(_udfs(), ZMQSource(endpoint, "native", scan=scan),
                                processes=3, mp_context=process_context())
        try:
            until(lambda: job.status.frames_processed >= 60, what="first frames")
            victim = job.receivers[1]
            os.kill(victim["pid"], signal.SIGKILL)
            until(lambda: job.status.receivers_lost == 1, timeout=10, what="lost receiver")
            st = job.status
            assert f"receiver 1 (process, pid {victim['pid']}" in st.last_error
            assert st.state in ("receiving", "draining")  # the others go on
            live = job.result(60)
            final = job.status
            lost = [r for r in job.receivers if r["lost"]]
        finally:
            job.cancel()
    assert [r["worker"] for r in lost] == [1]
    assert final.state in ("finished", "stopped")
    done = live["vd"]["done"].values.ravel()
    assert final.frames_processed == done.sum() > 200
    # whatever was merged is exact: nav values and sums over the merged frames
    _assert_equal(live, expected, done.reshape(scan), skip=("divergence", "curl"))
    np.testing.assert_array_equal(live["sum"]["sum"].values,
                                  frames[done].sum(0, dtype=np.float64))
    assert final.lost <= len(done) - done.sum()


def test_a_dropped_job_releases_its_receivers():
    job = framescope.submit(SumFrame(), ZMQSource("tcp://127.0.0.1:5", "native", scan=(2, 2)),
                            processes=2, mp_context=process_context())
    pids = [r["pid"] for r in job.receivers]
    assert all(os.path.exists(f"/proc/{p}") for p in pids)
    del job
    gc.collect()
    until(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), timeout=30,
          what="receiver processes to end")


def test_several_processes_need_the_scan_no_frame_tap_and_no_recording(tmp_path):
    with pytest.raises(ValueError, match="scan="):
        framescope.submit(SumFrame(), ZMQSource("tcp://127.0.0.1:1", "native"), processes=2)
    with pytest.raises(ValueError, match="on_frames="):
        framescope.submit(SumFrame(), ZMQSource("tcp://127.0.0.1:1", "native", scan=(2, 2)),
                          processes=2, on_frames=print)
    with pytest.raises(ValueError, match="do not record"):
        framescope.submit(SumFrame(), ZMQSource("tcp://127.0.0.1:1", "native", scan=(2, 2),
                                                record=str(tmp_path / "r.h5")), processes=2)


def test_a_merge_host_that_is_not_here_is_a_value_error():
    with pytest.raises(ValueError, match=r"merge_host='10\.255\.255\.1': the merging sockets"):
        framescope.submit(SumFrame(), ZMQSource("tcp://127.0.0.1:1", "native", scan=(2, 2)),
                          processes=2, merge_host="10.255.255.1")


def test_back_to_back_series_on_two_receivers_each_complete():
    """The next series' messages from one receiver wait while the other still sends the
    current one: every series finishes whole (it used to be cut short or re-begun)."""
    arr = synthetic(scan=SCAN, det=DET, seed=3)
    frames = np.asarray(arr.values).reshape(-1, *DET)
    ends = []
    with simulator_thread(protocol="native", scan=SCAN, det=DET, rate=0, peers=2,
                          source=arr, series=3) as endpoint:
        job = framescope.submit(SumFrame(), ZMQSource(endpoint, "native", scan=SCAN),
                                processes=2, mp_context=process_context(),
                                on_series_end=ends.append)
        try:
            until(lambda: len(ends) == 3, timeout=60, what="3 series")
        finally:
            job.cancel()
    assert [ds.attrs["state"] for ds in ends] == ["finished"] * 3
    for ds in ends:
        assert bool(ds["done"].all())
        np.testing.assert_array_equal(ds["sum"].values, frames.sum(0, dtype=np.float64))


def test_a_header_and_its_config_sent_apart_reach_the_job_whole():
    """LiberTEM-live's simulator sends the dheader and the detector config as two messages:
    PUSH deals them to different receivers. The config's receiver keeps it for the series
    (not malformed), and the job's header and calibration are the union of both."""
    from framescope.live._stream1 import Stream1Encoder

    arr = synthetic(scan=SCAN, det=DET, seed=3)
    frames = arr.values.reshape(-1, *DET)
    n = len(frames)
    expected = {name: framescope.run(u, arr, client="inline") for name, u in _udfs().items()}
    enc = Stream1Encoder("bslz4", header_detail="basic", appendix=False, trigger_mode="exte")
    head, config = enc.start(SeriesStart(1, DET, frames.dtype, n, SCAN, "raster", {
        "incident_energy": 300e3, "x_pixel_size": 55e-6}))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    job = framescope.submit(_udfs(), ZMQSource(f"tcp://127.0.0.1:{port}", "dectris-stream1",
                                               scan=SCAN),
                            processes=2, mp_context=process_context())
    try:
        for _ in range(2):
            assert monitor.poll(60_000), "receivers did not connect"
            monitor.recv_multipart()
        sock.send_multipart([head])
        sock.send_multipart([config])
        for i in range(n):
            sock.send_multipart(enc.frame(1, i, frames[i]))
        sock.send_multipart(enc.end(1))
        live = job.result(60)
        st, receivers, header = job.status, job.receivers, dict(job.series.header)
    finally:
        job.cancel()
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        ctx.term()
    why = f"receivers {receivers}"
    assert (st.frames_processed, st.malformed) == (n, 0), why
    assert header["header_detail"] == "basic"
    assert header["x_pixels_in_detector"] == DET[1]
    assert header["incident_energy"] == 300e3
    assert "incident_energy" in live["com"].attrs["calibration"], why
    _assert_equal(live, expected)
