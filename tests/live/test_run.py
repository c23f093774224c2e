"""Live results equal the offline run; drop/spill policies; a sender killed mid-scan."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import SeriesStart, ZMQSource
from framescope.live._native import NativeEncoder
from framescope.udf import ApplyMasks, CenterOfMass

from .conftest import simulator_process, simulator_thread, until

SCAN, DET = (6, 7), (32, 32)


def udfs():
    return {"vd": ApplyMasks({"bf": fm.disk(16, 16, 6), "adf": fm.ring(16, 16, 8, 15)}),
            "com": CenterOfMass(radius=10)}


def offline(arr) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for name, udf in udfs().items():
        ds = framescope.run(udf, arr, client="inline")
        out.update({(name, k): ds[k].values for k in ds.data_vars if k != "done"})
    return out


@pytest.fixture(scope="module")
def reference():
    arr = synthetic(scan=SCAN, det=DET, seed=0)
    return np.asarray(arr), offline(arr)


@pytest.mark.parametrize(("protocol", "compression", "order", "process"), [
    ("dectris-stream2", "bslz4", "snake", True),  # the sender in another process
    ("dectris-stream1", "lz4", "raster", False),
    ("native", "none", "raster", False),
])
def test_live_equals_offline(reference, protocol, compression, order, process):
    _, expected = reference
    kwargs = {"protocol": protocol, "scan": SCAN, "det": DET, "rate": 0,
              "compression": compression, "order": order}
    with contextlib.ExitStack() as stack:
        if process:
            endpoint, _ = stack.enter_context(simulator_process(**kwargs))
        else:
            endpoint = stack.enter_context(simulator_thread(**kwargs))
        job = framescope.submit(udfs(), ZMQSource(endpoint, protocol))  # starts the source
        live = job.result(60)
        job.cancel()
    st = job.status
    assert st.state == "finished"
    assert (st.frames_processed, st.dropped, st.gaps, st.malformed) == (42, 0, 0, 0)
    assert sorted(live) == ["com", "vd"]  # a dict of UDFs gives a dict of Datasets
    for ds in live.values():
        assert ds.attrs["complete"]
        assert ds.attrs["state"] == "finished"
    for (name, key), value in expected.items():
        np.testing.assert_array_equal(live[name][key].values, value, err_msg=f"{name} {key}")


def test_run_and_iter_run_take_a_stream(reference):
    """framescope.run / iter_run on a live source: the same call and result type as a file."""
    _, expected = reference
    kwargs = {"protocol": "native", "scan": SCAN, "det": DET, "rate": 200}
    with simulator_thread(**kwargs) as endpoint:
        seen = [float(ds["done"].mean()) for ds in framescope.iter_run(
            udfs()["vd"], ZMQSource(endpoint, "native"), interval=0.02)]
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) > 1  # partial results came while the series was arriving
    with simulator_thread(**{**kwargs, "rate": 0}) as endpoint:
        ds = framescope.run(udfs()["vd"], ZMQSource(endpoint, "native"), timeout=60)
    np.testing.assert_array_equal(ds["intensity"].values, expected[("vd", "intensity")])


class Gate(ApplyMasks):
    """ApplyMasks that holds the analysis until the test opens the gate."""

    gate = threading.Event()

    def process_tile(self, tile, results, state):
        self.gate.wait(30)
        super().process_tile(tile, results, state)


def send_series(endpoint_sock, frames, scan, series=1):
    sock = endpoint_sock
    enc = NativeEncoder()
    n = len(frames)
    sock.send_multipart(enc.start(SeriesStart(series, frames.shape[1:], frames.dtype, n, scan)))
    for i in range(n):
        sock.send_multipart(enc.frame(series, i, frames[i]))
    sock.send_multipart(enc.end(series))


@pytest.mark.parametrize("policy", ["drop", "spill"])
def test_policies_when_analysis_falls_behind(push, reference, tmp_path, policy):
    sock, endpoint = push
    data, _ = reference
    frames = data.reshape(-1, *DET)
    mask = {"bf": fm.disk(16, 16, 6)}
    Gate.gate.clear()
    frame_mib = frames[0].nbytes / 2**20
    src = ZMQSource(endpoint, "native", policy=policy, batch_frames=4,
                    buffer_mib=8 * frame_mib, spill_dir=str(tmp_path))
    job = framescope.submit(Gate(mask), src)
    try:
        send_series(sock, frames, SCAN)
        until(lambda: src.status.state == "finished", what="series received")
        behind = job.status
        Gate.gate.set()
        live = job.result(60)
    finally:
        Gate.gate.set()
        job.cancel()
    st = job.status
    assert behind.queue_depth <= behind.queue_capacity == 8
    assert behind.frames_processed == 0
    ref = framescope.run(ApplyMasks(mask), framescope.from_array(data), client="inline")
    done = live["done"].values
    if policy == "drop":
        assert st.dropped == 42 - st.frames_processed > 0
        assert st.spilled == 0
        assert int(done.sum()) == st.frames_processed
        np.testing.assert_array_equal(live["intensity"].values[done],
                                      ref["intensity"].values[done])
        assert not live.attrs["complete"]
    else:
        assert st.dropped == 0
        assert st.spilled == behind.spilled == 42 - 8 - (behind.queue_depth - 8)
        assert (st.frames_processed, st.spill_pending) == (42, 0)
        np.testing.assert_array_equal(live["intensity"].values, ref["intensity"].values)
        assert live.attrs["complete"]
    assert list(tmp_path.iterdir()) == []  # spill files are unlinked


def test_sender_killed_mid_scan_leaves_partial_results(reference):
    _, expected = reference
    # 20 frames/s: the sender is still mid-scan when it is killed
    with simulator_process(protocol="dectris-stream2", scan=SCAN, det=DET, rate=20,
                           ) as (endpoint, proc):
        src = ZMQSource(endpoint, "dectris-stream2", stall_timeout=0.3)
        job = framescope.submit(udfs(), src)
        try:
            until(lambda: job.status.frames_processed >= 3, what="first frames")
            proc.kill()
            until(lambda: job.status.state == "stalled", what="stalled state")
            snap = job.partial()
        finally:
            job.cancel()
    assert snap["vd"].attrs["state"] == "stalled"
    assert not snap["vd"].attrs["complete"]
    done = snap["vd"]["done"].values
    assert 3 <= done.sum() < 42
    for (name, key), value in expected.items():
        if key in ("divergence", "curl"):  # differences with missing neighbours
            continue
        np.testing.assert_array_equal(snap[name][key].values[done], value[done], err_msg=key)
    assert job.status.state == "stopped"
    assert job.done()
    assert job.results is not None  # the unfinished series was closed on cancel


def test_a_corrupt_compressed_frame_is_counted_and_the_rest_analysed(push):
    """A bslz4 frame whose blocks are cut short is malformed, not analysed (its position
    stays not done); the other frames equal numpy, and the preview shows the latest."""
    sock, endpoint = push
    data = np.random.default_rng(3).poisson(4, (2, 3, 16, 16)).astype("uint16")
    flat = data.reshape(6, 16, 16)
    enc = NativeEncoder("bslz4")
    with ZMQSource(endpoint, "native") as src:
        job = framescope.submit(ApplyMasks({"all": np.ones((16, 16), bool)}), src)
        sock.send_multipart(enc.start(SeriesStart(1, (16, 16), np.dtype("uint16"), 6, (2, 3))))
        for i in range(6):
            head, payload = enc.frame(1, i, flat[i])
            if i == 4:  # framing header intact, blocks cut short
                payload = payload[:-40]
            sock.send_multipart([head, payload])
            if i == 2:
                until(lambda: src.status.frames_received == 3, what="3 frames")
                np.testing.assert_array_equal(src.latest_frame(), flat[2])
        sock.send_multipart(enc.end(1))
        final = job.result(30)
        st = job.status
    assert (st.malformed, st.frames_received, st.frames_processed) == (1, 5, 5)
    assert "bslz4" in st.last_error
    done = final["done"].values.ravel()
    np.testing.assert_array_equal(done, np.arange(6) != 4)
    got = final["intensity"].values[..., 0].ravel()
    np.testing.assert_array_equal(got[done], flat.sum(axis=(1, 2))[done])
    assert final.attrs["malformed"] == 1


def test_a_stream_job_takes_other_udfs_from_the_next_series(push, reference):
    from framescope.udf import MaxFrame, SumFrame

    sock, endpoint = push
    data, _ = reference
    frames = data.reshape(-1, *DET)
    job = framescope.submit({"f": SumFrame()}, ZMQSource(endpoint, "native"))
    try:
        send_series(sock, frames, SCAN, series=1)
        first = job.result(30)
        job.update({"f": MaxFrame()})
        assert type(job.udfs["f"]).__name__ == "SumFrame"  # until the next series starts
        send_series(sock, frames[::-1].copy(), SCAN, series=2)
        until(lambda: job.status.series == 2 and job.status.state == "finished",
              what="series 2")
        second = job.result(30)
    finally:
        job.cancel()
    np.testing.assert_array_equal(first["f"]["sum"].values, frames.sum(0, dtype="f8"))
    np.testing.assert_array_equal(second["f"]["max"].values, frames.max(0))
    assert second["f"].attrs["series"] == 2


def test_udfs_that_cannot_prepare_end_the_series_with_the_error(push):
    """A mask of another detector shape: the series still ends, the error in the status."""
    sock, endpoint = push
    frames = np.zeros((4, 16, 16), "uint16")
    job = framescope.submit(ApplyMasks({"a": np.ones((8, 8), bool)}),
                            ZMQSource(endpoint, "native"))
    try:
        send_series(sock, frames, (2, 2))
        final = job.result(30)
    finally:
        job.cancel()
    assert not final["done"].values.any()
    assert "does not match detector" in job.status.last_error
