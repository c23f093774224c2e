"""Recording in the receiver: every frame that came on the wire, whatever was dropped;
replaying the recording reproduces the stream (frames, gaps, header arrays)."""

from __future__ import annotations

import json
import queue
import threading

import h5py
import numpy as np
import pytest
import zmq

import framescope
from framescope.live import SeriesStart, ZMQSource, read_recording, replay
from framescope.live._intake import Intake
from framescope.live._native import NativeEncoder
from framescope.live._record import Recorder, RecordingThread
from framescope.live._stream1 import Stream1Encoder
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder
from framescope.udf import SumFrame

from .conftest import until

DET = (16, 12)




def frames(n: int, dtype: str = "uint16", seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).poisson(5, (n, *DET)).astype(dtype)


def corrections() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    mask = np.zeros(DET, np.uint32)
    mask[3, 4], mask[10, 0] = 1, 8  # a dead and a hot pixel (DECTRIS bits)
    return {"pixel_mask": mask, "flatfield": rng.uniform(0.9, 1.1, DET).astype(np.float32)}


def recorded(path, series: int | None = None) -> tuple[SeriesStart, list[int], np.ndarray]:
    [(start, got)] = list(read_recording(path, series))
    got = list(got)
    return start, [i for i, _ in got], np.stack([f for _, f in got])


def status_of(path, group: str) -> tuple[dict, bool]:
    with h5py.File(path) as f:
        return json.loads(f[group].attrs["status"]), bool(f[group].attrs["ended"])


class Gate(SumFrame):
    """SumFrame that holds the analysis until the test opens the gate: it falls behind."""

    gate = threading.Event()

    def process_tile(self, tile, results, state):
        self.gate.wait(30)
        super().process_tile(tile, results, state)


@pytest.mark.parametrize(("protocol", "compression"), [
    ("dectris-stream2", "bslz4"), ("dectris-stream1", "lz4"), ("native", "none")])
def test_recording_holds_the_frames_the_drop_policy_dropped(push, tmp_path, protocol,
                                                            compression):
    sock, endpoint = push
    data = frames(30)
    enc = {"dectris-stream2": Stream2Encoder, "dectris-stream1": Stream1Encoder,
           "native": NativeEncoder}[protocol](compression)
    rec = tmp_path / "rec.h5"
    frame_mib = data[0].nbytes / 2**20
    src = ZMQSource(endpoint, protocol, policy="drop", batch_frames=2,
                    buffer_mib=4 * frame_mib, record=rec)
    src.attach(queue.SimpleQueue())  # an analysis that never takes a batch
    with src:
        sock.send_multipart(enc.start(SeriesStart(2, DET, data.dtype, 30, (5, 6), "snake",
                                                  {"count_time": 0.001}, corrections())))
        for i in range(30):
            sock.send_multipart(enc.frame(2, i, data[i]))
            if i == 7:
                sock.send_multipart(enc.frame(2, 3, data[0]))  # a repeated frame number
                sock.send(b"\xff")  # malformed
        sock.send_multipart(enc.end(2))
        until(lambda: src.status.state == "finished", what="series received")
    st = src.status  # once stopped: the recording is written
    assert st.frames_received == 31
    assert st.dropped == 30 - 4 > 0  # 4 frames fit the buffer
    assert (st.recorded, st.duplicates, st.malformed) == (30, 1, 1)
    start, numbers, got = recorded(rec)
    assert numbers == list(range(30))  # what the sender sent, once each
    np.testing.assert_array_equal(got, data)  # bit for bit: the first of frame 3
    assert got.dtype == data.dtype
    assert (start.series, start.scan_shape, start.scan_order, start.n_frames) == (
        2, (5, 6), "snake", 30)
    assert start.header["count_time"] == 0.001
    assert "pixel_mask" not in start.header
    for key, value in corrections().items():
        np.testing.assert_array_equal(start.arrays[key], value)
        assert start.arrays[key].dtype == value.dtype
    status, ended = status_of(rec, "series_2")
    assert ended
    assert {k: status[k] for k in ("state", "frames_received", "recorded", "dropped",
                                   "duplicates", "malformed", "gaps")} == {
        "state": "finished", "frames_received": 31, "recorded": 30, "dropped": 26,
        "duplicates": 1, "malformed": 1, "gaps": 0}
    assert "frames_processed" not in status  # the analysis' counters are not the receiver's


def test_replay_reproduces_what_a_slow_analysis_missed(push, tmp_path):
    sock, endpoint = push
    data = frames(40, "uint32")
    sent = [i for i in range(40) if i not in (5, 6, 39)]  # gaps: never sent
    enc = Stream1Encoder("bslz4")
    rec, again = tmp_path / "rec.h5", tmp_path / "again.h5"
    Gate.gate.clear()
    frame_mib = data[0].nbytes / 2**20
    src = ZMQSource(endpoint, "dectris-stream1", policy="drop", batch_frames=2,
                    buffer_mib=4 * frame_mib, record=rec)
    job = framescope.submit(Gate(), src)
    try:
        sock.send_multipart(enc.start(SeriesStart(3, DET, data.dtype, 40, (5, 8), "raster",
                                                  {}, corrections())))
        for i in sent:
            sock.send_multipart(enc.frame(3, i, data[i]))
        sock.send_multipart(enc.end(3))
        until(lambda: src.status.state == "finished", what="series received")
        Gate.gate.set()
        first = job.result(30)
        st = job.status
    finally:
        Gate.gate.set()
        job.cancel()
    assert st.dropped > 0
    assert first["n"].item() == st.frames_processed < len(sent)
    st = src.status  # once stopped: the recording is written
    assert st.recorded == st.frames_received == len(sent)  # the sender's count

    bound: queue.Queue = queue.Queue()
    t = threading.Thread(target=replay, args=(rec, "tcp://127.0.0.1:0", "dectris-stream2"),
                         kwargs={"on_bound": bound.put}, daemon=True)
    t.start()
    src2 = ZMQSource(bound.get(timeout=30), "dectris-stream2", policy="spill",
                     spill_dir=str(tmp_path), record=again)
    job2 = framescope.submit(SumFrame(), src2, corrections=False)  # the raw sums
    second = job2.result(30)
    job2.cancel()
    t.join(30)
    assert (job2.status.frames_received, job2.status.gaps, job2.status.dropped) == (
        len(sent), 3, 0)
    np.testing.assert_array_equal(second["sum"].values, data[sent].sum(axis=0))
    start, numbers, got = recorded(again)
    assert numbers == sent
    np.testing.assert_array_equal(got, data[sent])
    for key, value in corrections().items():  # stream v1 → recording → stream2 → recording
        np.testing.assert_array_equal(start.arrays[key], value)
    assert src2.series.arrays.keys() == corrections().keys()


@pytest.mark.parametrize(("protocol", "wire", "compression"), [
    ("dectris-stream2", "bslz4", "bslz4"),  # stored as it came
    ("dectris-stream1", "bslz4", "bslz4"),  # stored as it came
    ("dectris-stream2", "lz4", "lz4"),  # stored as it came
    ("dectris-stream1", "lz4", "lz4"),  # a bare LZ4 block, framed for the filter
    ("native", "none", "bslz4"),  # compressed in the receiver
    ("native", "none", "lz4"),
])
def test_compressed_recordings(push, tmp_path, protocol, wire, compression):
    sock, endpoint = push
    data = frames(6, "uint32")
    enc = {"dectris-stream2": Stream2Encoder, "dectris-stream1": Stream1Encoder,
           "native": NativeEncoder}[protocol](wire)
    rec = tmp_path / "rec.h5"
    with ZMQSource(endpoint, protocol, record=rec, record_compression=compression) as src:
        sock.send_multipart(enc.start(SeriesStart(1, DET, data.dtype, 6, (2, 3))))
        for i in range(6):
            sock.send_multipart(enc.frame(1, i, data[i]))
        sock.send_multipart(enc.end(1))
        until(lambda: src.status.state == "finished", what="series received")
    _, _, got = recorded(rec)
    np.testing.assert_array_equal(got, data)
    with h5py.File(rec) as f:
        filters = f["series_1/frames"]._filters
    assert {"bslz4": "32008", "lz4": "32004"}[compression] in filters


def test_duplicates_are_recorded_once_and_restarts_append(tmp_path):
    rec = RecordingThread(Recorder(tmp_path / "rec.h5", protocol="dectris-stream2"), 2**30)
    rec.start()
    it = Intake("test", Stream2Decoder(), scan=None, order=None, policy="drop",
                buffer_bytes=2**20, batch_frames=None, spill_dir=None, spill_limit=0,
                stall_timeout=5.0, max_message_bytes=2**20, recorder=rec)
    enc = Stream2Encoder()
    data = frames(4)

    def send(*msgs):
        for m in msgs:
            it.handle([zmq.Frame(p) for p in m])

    send(enc.start(SeriesStart(1, DET, data.dtype, 4, (2, 2))), enc.frame(1, 0, data[0]),
         enc.frame(1, 0, data[1]), enc.frame(1, 2, data[2]))
    it.close()  # the socket closed mid-series: recorded as unfinished
    rec.close()
    rec.start()  # the file again, appended to
    send(enc.start(SeriesStart(1, DET, data.dtype, 4, (2, 2))),
         *(enc.frame(1, i, data[i]) for i in range(4)), enc.end(1))
    rec.close()
    with h5py.File(rec.path) as f:
        assert sorted(f) == ["series_1", "series_1_2"]
    heads = [(s.series, [i for i, _ in fr]) for s, fr in read_recording(rec.path)]
    assert heads == [(1, [0, 2]), (1, [0, 1, 2, 3])]
    status, ended = status_of(rec.path, "series_1")
    assert (ended, status["state"], status["duplicates"], status["recorded"]) == (
        False, "stopped", 1, 2)
    with h5py.File(rec.path) as f:
        np.testing.assert_array_equal(f["series_1/frames"][0], data[0])  # the first one


def test_a_failing_recording_is_reported_and_receiving_goes_on(push, tmp_path, monkeypatch):
    sock, endpoint = push
    data = frames(6)
    enc = NativeEncoder()
    original = Recorder.write_frame

    def full_disk(self, series, index, frame, wire=None):
        if index >= 2:
            raise OSError(28, "No space left on device")
        return original(self, series, index, frame, wire)

    monkeypatch.setattr(Recorder, "write_frame", full_disk)
    with ZMQSource(endpoint, "native", record=tmp_path / "rec.h5") as src:
        sock.send_multipart(enc.start(SeriesStart(1, DET, data.dtype, 6, (2, 3))))
        for i in range(6):
            sock.send_multipart(enc.frame(1, i, data[i]))
        sock.send_multipart(enc.end(1))
        until(lambda: src.status.state == "finished", what="series received")
        until(lambda: src.status.recorded + src.status.record_dropped == 6, what="written")
        st = src.status
    assert (st.frames_received, st.recorded, st.record_dropped) == (6, 2, 4)
    assert "No space left" in st.last_error
    _, numbers, got = recorded(tmp_path / "rec.h5")
    assert numbers == [0, 1]
    np.testing.assert_array_equal(got, data[:2])
    status, _ = status_of(tmp_path / "rec.h5", "series_1")
    assert (status["recorded"], status["record_dropped"]) == (2, 4)
    assert "No space left" in status["last_error"]


def test_a_slow_disk_costs_recorded_frames_not_received_ones(push, tmp_path, monkeypatch,
                                                             caplog):
    """The receiver never waits for the recording: beyond its buffer, frames go unrecorded
    (counted), and everything received is still handed on."""
    sock, endpoint = push
    data = frames(30)
    enc = NativeEncoder()
    disk = threading.Event()
    original = Recorder.write_frame

    def slow(self, series, index, frame, wire=None):
        disk.wait(30)
        return original(self, series, index, frame, wire)

    monkeypatch.setattr(Recorder, "write_frame", slow)
    handoff: queue.SimpleQueue = queue.SimpleQueue()
    src = ZMQSource(endpoint, "native", record=tmp_path / "rec.h5",
                    record_buffer_mib=3.5 * data[0].nbytes / 2**20, buffer_mib=64)
    src.attach(handoff)
    try:
        with src:
            sock.send_multipart(enc.start(SeriesStart(1, DET, data.dtype, 30, (5, 6))))
            for i in range(30):
                sock.send_multipart(enc.frame(1, i, data[i]))
            sock.send_multipart(enc.end(1))
            until(lambda: src.status.state == "finished", what="series received")
            behind = src.status
            disk.set()
    finally:
        disk.set()
    st = src.status
    assert (behind.frames_received, behind.dropped) == (30, 0)  # all handed on
    assert (st.recorded, st.record_dropped) == (3, 27)  # 3 frames fit the buffer
    assert "recording's buffer is full" in caplog.text
    _, numbers, got = recorded(tmp_path / "rec.h5")
    assert numbers == [0, 1, 2]
    np.testing.assert_array_equal(got, data[:3])


def test_recording_refuses_to_overwrite_and_to_read_other_files(tmp_path, push):
    path = tmp_path / "x.h5"
    h5py.File(path, "w").close()
    with pytest.raises(FileExistsError):
        ZMQSource(push[1], "native", record=path)
    with pytest.raises(ValueError, match="not a framescope live recording"):
        list(read_recording(path))
    with pytest.raises(ValueError, match="compression"):
        Recorder(tmp_path / "y.h5", compression="gzip")


def test_until_helper_guards_against_hangs():
    with pytest.raises(AssertionError, match="timed out"):
        until(lambda: False, timeout=0.05)
