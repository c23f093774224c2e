"""Record while analysing, then replay the recording: same frames, gaps and results."""

from __future__ import annotations

import queue
import threading

import h5py
import numpy as np
import pytest

import framescope.masks as fm
from framescope.live import SeriesStart, ZMQSource, read_recording, replay
from framescope.live._stream1 import Stream1Encoder
from framescope.udf import ApplyMasks

from .conftest import until


def test_record_then_replay_round_trip(push, tmp_path):
    sock, endpoint = push
    rng = np.random.default_rng(4)
    frames = rng.poisson(5, (20, 16, 12)).astype("uint32")
    sent = [i for i in range(20) if i not in (5, 6, 19)]
    enc = Stream1Encoder("bslz4")
    rec = tmp_path / "rec.h5"
    udf = ApplyMasks({"c": fm.disk(8, 6, 4)})
    run = ZMQSource(endpoint, "dectris-stream1", policy="spill").run(udf, record=str(rec))
    sock.send_multipart(enc.start(SeriesStart(3, (16, 12), frames.dtype, 20, (4, 5), "snake",
                                              {"count_time": 0.001})))
    for i in sent:
        sock.send_multipart(enc.frame(3, i, frames[i]))
    sock.send_multipart(enc.end(3))
    first = run.wait(30)
    run.stop()

    [(start, got)] = list(read_recording(rec))
    assert (start.series, start.scan_shape, start.scan_order, start.n_frames) == (
        3, (4, 5), "snake", 20)
    assert start.header["count_time"] == 0.001
    got = list(got)
    assert [i for i, _ in got] == sent
    np.testing.assert_array_equal(np.stack([f for _, f in got]), frames[sent])
    with h5py.File(rec) as f:
        assert f["series_3"].attrs["status"]

    bound: queue.Queue = queue.Queue()
    t = threading.Thread(target=replay, args=(rec, "tcp://127.0.0.1:0", "dectris-stream2"),
                         kwargs={"on_bound": bound.put}, daemon=True)
    t.start()
    run2 = ZMQSource(bound.get(timeout=30), "dectris-stream2", policy="spill").run(udf)
    second = run2.wait(30)
    run2.stop()
    t.join(30)
    assert run2.status.gaps == 3
    np.testing.assert_array_equal(second["done"].values, first["done"].values)
    np.testing.assert_array_equal(second["intensity"].values, first["intensity"].values)
    assert second.attrs["series"] == 3


def test_recording_refuses_to_overwrite_and_to_read_other_files(tmp_path, push):
    path = tmp_path / "x.h5"
    h5py.File(path, "w").close()
    with pytest.raises(FileExistsError):
        ZMQSource(push[1], "native").run(ApplyMasks({"c": fm.disk(1, 1, 1)}), record=str(path))
    with pytest.raises(ValueError, match="not a framescope live recording"):
        list(read_recording(path))


def test_until_helper_guards_against_hangs():
    with pytest.raises(AssertionError, match="timed out"):
        until(lambda: False, timeout=0.05)
