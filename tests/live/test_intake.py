"""The receiver thread's intake without sockets: batch buffers and who gives them back."""

from __future__ import annotations

import queue

import numpy as np
import zmq

from framescope.live import SeriesStart
from framescope.live._batch import Batch, Start
from framescope.live._intake import Intake
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder


def intake() -> Intake:
    return Intake("test", Stream2Decoder(), scan=None, order=None, policy="drop",
                  buffer_bytes=8 * 40 * 30 * 2, batch_frames=4, spill_dir=None, spill_limit=0,
                  stall_timeout=5.0, max_message_bytes=2**20)


def send_series(it: Intake, series: int, data: np.ndarray) -> None:
    enc = Stream2Encoder()
    msgs = [enc.start(SeriesStart(series, data.shape[1:], data.dtype, len(data),
                                  (1, len(data)), "raster"))]
    msgs += [enc.frame(series, i, f) for i, f in enumerate(data)] + [enc.end(series)]
    for m in msgs:
        it.handle([zmq.Frame(p) for p in m])


def batches(q: queue.SimpleQueue) -> list[Batch]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    assert isinstance(items[0], Start)
    return [x for x in items if isinstance(x, Batch)]


def test_buffers_return_to_the_analysis_that_took_them():
    data = np.random.default_rng(6).integers(0, 999, (8, 40, 30)).astype("uint16")
    it = intake()
    first = queue.SimpleQueue()
    it.attach_request = first
    it.take_attach()
    send_series(it, 1, data)
    got = batches(first)
    np.testing.assert_array_equal(np.concatenate([b.frames[: b.n] for b in got]), data)
    pool = it.batcher.pool
    assert pool.allocated == pool.buffers == 2  # the whole budget: 8 frames
    for b in got:
        b.release()
    send_series(it, 2, data[::-1])  # same analysis, same frames: the buffers again
    again = batches(first)
    assert it.batcher.pool is pool
    assert {id(b.frames) for b in again} <= {id(b.frames) for b in got}
    np.testing.assert_array_equal(np.concatenate([b.frames[: b.n] for b in again]),
                                  data[::-1])
    # a new analysis (the old one stopped, its batches never given back): a new pool,
    # so nothing is dropped for want of buffers the old one still holds
    second = queue.SimpleQueue()
    it.attach_request = second
    send_series(it, 3, data)
    fresh = batches(second)
    assert it.batcher.pool is not pool
    assert (it.counters.dropped, sum(b.n for b in fresh)) == (0, 8)


def test_a_new_analysis_reuses_the_buffers_the_stopped_one_gave_back():
    data = np.random.default_rng(7).integers(0, 999, (8, 40, 30)).astype("uint16")
    it = intake()
    first = queue.SimpleQueue()
    it.attach_request = first
    it.take_attach()
    send_series(it, 1, data)
    got = batches(first)
    got[0].release()  # one batch given back, the other still held by the old analysis
    second = queue.SimpleQueue()
    it.attach_request = second
    send_series(it, 2, data[::-1])
    fresh = batches(second)
    pool = it.batcher.pool
    assert pool.allocated == pool.buffers == 2
    ids = {id(b.frames) for b in fresh}
    assert id(got[0].frames) in ids
    assert id(got[1].frames) not in ids
    np.testing.assert_array_equal(np.concatenate([b.frames[: b.n] for b in fresh]),
                                  data[::-1])
    assert it.counters.dropped == 0
    got[1].release()  # late: back to the old pool, not into the new one's count
    assert (pool.allocated, len(pool.free)) == (2, 0)
