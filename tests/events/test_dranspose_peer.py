"""The dranspose peer's own pieces (benchmarks/_peer_dranspose.py), without dranspose: the
streams it publishes are DECTRIS stream v1 as framescope's decoder reads it (same frames,
same header arrays) plus contrast-style I0 points, and its reference image is the ring sum
/ I0 that a per-pixel loop gives."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from framescope.live import make_decoder
from framescope.live._messages import Frame, SeriesEnd, SeriesStart

zmq = pytest.importorskip("zmq")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import _peer_dranspose as peer  # noqa: E402 (after the path it needs)


def test_published_streams_decode_as_stream1_and_contrast_points():
    n, det = 11, 16
    pool = peer._frames(det)
    ctx = zmq.Context()
    try:
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        xpub, sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
        for s in (push, pull, xpub, sub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 5000)
        port = push.bind_to_random_port("tcp://127.0.0.1")
        pull.connect(f"tcp://127.0.0.1:{port}")
        port = xpub.bind_to_random_port("tcp://127.0.0.1")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        assert xpub.poll(5000), "no subscription reached the XPUB"
        xpub.recv()
        peer._publish(push, xpub, pool, n)

        dec = make_decoder("dectris-stream1")
        events = [dec.decode(pull.recv_multipart()) for _ in range(n + 2)]
        points = [pickle.loads(sub.recv()) for _ in range(n + 2)]
    finally:
        ctx.destroy(linger=0)

    start, frames, end = events[0], events[1:-1], events[-1]
    assert isinstance(start, SeriesStart)
    assert start.n_frames == n
    np.testing.assert_array_equal(start.arrays["flatfield"], np.ones((det, det)))
    np.testing.assert_array_equal(start.arrays["pixel_mask"], np.zeros((det, det)))
    assert all(isinstance(f, Frame) for f in frames)
    assert [f.index for f in frames] == list(range(n))
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.data, pool[k % peer.N_POOL])
    assert isinstance(end, SeriesEnd)

    assert points[0]["status"] == "started"
    assert points[-1]["status"] == "finished"
    running = points[1:-1]
    assert [p["status"] for p in running] == ["running"] * n
    assert [p["point"] for p in running] == list(range(n))
    assert [p["i0"] for p in running] == [peer._i0(k) for k in range(n)]


def test_reference_is_the_ring_sum_over_i0():
    n, det = 7, 20
    pool = peer._frames(det)
    cols = 3
    ref = peer._reference(pool, n, rows=3, cols=cols)
    c = det // 2
    for k in range(n):
        frame = pool[k % peer.N_POOL]
        total = sum(int(frame[y, x]) for y in range(det) for x in range(det)
                    if 0.15 * det <= math.dist((y, x), (c, c)) < 0.35 * det)
        assert ref[k // cols, k % cols] == pytest.approx(total / peer._i0(k), rel=1e-12)
    assert np.isnan(ref[2, 1:]).all()  # 7 points in 3 x 3: the last two are never filled


def test_measure_says_when_the_environment_is_missing(tmp_path):
    res = peer.measure(10, 16, 1, python=tmp_path / "no-python")
    assert "setup_dranspose.sh" in res["error"]
