"""The receiver on real sockets: bad messages counted, order checked, series handled."""

from __future__ import annotations

import numpy as np
import zmq

import framescope
from framescope.live import SeriesStart, ZMQSource
from framescope.live._stream2 import Stream2Encoder
from framescope.udf import SumFrame

from .conftest import until


def frames(n, shape=(8, 6)):
    return np.random.default_rng(5).integers(0, 100, (n, *shape)).astype("uint16")


def start(series=1, n=12, scan=(3, 4), shape=(8, 6)):
    return SeriesStart(series, shape, np.dtype("uint16"), n, scan, "raster")


def test_bad_messages_are_counted_and_the_series_goes_on(push):
    sock, endpoint = push
    enc = Stream2Encoder()
    data = frames(12)
    with ZMQSource(endpoint, "dectris-stream2", max_message_bytes=10_000) as src:
        job = framescope.submit(SumFrame(), src)
        sock.send_multipart(enc.start(start()))
        sock.send_multipart(enc.frame(1, 0, data[0]))
        good = enc.frame(1, 1, data[1])[0]
        sock.send(b"\x00garbage")  # not CBOR
        sock.send(good[: len(good) // 2])  # truncated
        sock.send(b"\xd9\xd9\xf7" + b"\0" * 20_000)  # oversized
        sock.send_multipart([good, good])  # two parts: not stream2
        sock.send_multipart(enc.frame(1, 1, data[0][:4]))  # wrong frame shape
        sock.send_multipart(enc.frame(1, 12, data[0]))  # outside the scan
        for i in range(1, 12):
            sock.send_multipart(enc.frame(1, i, data[i]))
        sock.send_multipart(enc.end(1))
        final = job.result(30)
        st = job.status
    assert st.malformed == 6
    assert "outside" in st.last_error
    assert (st.state, st.frames_received, st.frames_processed, st.gaps) == (
        "finished", 12, 12, 0)
    np.testing.assert_array_equal(final["sum"].values, data.sum(axis=0))
    assert bool(final.attrs["complete"])


def test_gaps_duplicates_and_late_frames(push):
    sock, endpoint = push
    enc = Stream2Encoder()
    data = frames(12)
    with ZMQSource(endpoint, "dectris-stream2") as src:
        job = framescope.submit(SumFrame(), src)
        sock.send_multipart(enc.start(start()))
        for i in (0, 1, 3, 3, 2, 5, 9, 9, 8):
            sock.send_multipart(enc.frame(1, i, data[i]))
        until(lambda: src.status.frames_received == 9, what="9 frames")
        mid = src.status
        sock.send_multipart(enc.end(1))
        final = job.result(30)
        st = job.status
    assert (mid.duplicates, mid.out_of_order, mid.gaps) == (2, 2, 3)  # 4, 6, 7 missing
    assert (st.gaps, st.duplicates, st.frames_processed) == (12 - 7, 2, 7)
    got = {0, 1, 2, 3, 5, 8, 9}
    np.testing.assert_array_equal(final["done"].values.ravel(),
                                  [i in got for i in range(12)])
    np.testing.assert_array_equal(final["sum"].values, data[sorted(got)].sum(axis=0))
    assert not final.attrs["complete"]


def test_a_new_series_resets_and_a_stall_is_reported(push):
    sock, endpoint = push
    enc = Stream2Encoder()
    data = frames(12)
    with ZMQSource(endpoint, "dectris-stream2", stall_timeout=0.2) as src:
        job = framescope.submit(SumFrame(), src)
        sock.send_multipart(enc.start(start(series=1)))
        for i in range(5):
            sock.send_multipart(enc.frame(1, i, data[i]))
        until(lambda: src.status.state == "stalled", what="stalled state")
        assert job.status.frames_received == 5
        until(lambda: job.status.frames_processed == 5, what="5 processed")
        part = job.partial()
        assert int(part["done"].sum()) == 5
        assert part.attrs["state"] == "stalled"
        sock.send_multipart(enc.start(start(series=2)))  # sender restarted: fresh series
        for i in range(12):
            sock.send_multipart(enc.frame(2, i, data[i]))
        sock.send_multipart(enc.frame(1, 7, data[7]))  # a late frame of the old series
        sock.send_multipart(enc.end(2))
        until(lambda: job.status.state == "finished" and job.status.series == 2,
              what="series 2 finished")
        final = job.result(10)
        st = job.status
    assert final.attrs["series"] == 2
    assert (st.frames_received, st.malformed, st.gaps) == (12, 1, 0)
    np.testing.assert_array_equal(final["sum"].values, data.sum(axis=0))


def test_joining_a_running_series_needs_the_scan(push):
    sock, endpoint = push
    enc = Stream2Encoder()
    data = frames(12)
    with ZMQSource(endpoint, "dectris-stream2") as blind:
        sock.send_multipart(enc.frame(4, 0, data[0]))
        until(lambda: blind.status.malformed == 1, what="malformed count")
        assert "scan=" in blind.status.last_error
        assert blind.latest_frame() is None
    # a fresh PUSH: the old one may still deal messages to the closed receiver's pipe
    sock = zmq.Context.instance().socket(zmq.PUSH)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    src = ZMQSource(f"tcp://127.0.0.1:{port}", "dectris-stream2", scan=(3, 4))
    job = framescope.submit(SumFrame(), src)
    for i in range(6, 12):  # header and first frames missed
        sock.send_multipart(enc.frame(4, i, data[i]))
    sock.send_multipart(enc.end(4))
    final = job.result(30)
    np.testing.assert_array_equal(src.latest_frame(), data[11])
    job.cancel()
    sock.close(linger=0)
    assert final["done"].values.ravel().tolist() == [False] * 6 + [True] * 6
    np.testing.assert_array_equal(final["sum"].values, data[6:].sum(axis=0))
