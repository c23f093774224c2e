"""Frame tracking (gaps, duplicates, order), batches, and the drop/spill policies."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from framescope.live._batch import Batch, Batcher, FrameTracker, Spill
from framescope.live._scan import Series, positions_of
from framescope.live._status import Counters
from framescope.udf import Meta


def test_tracker_counts_gaps_duplicates_and_late_frames():
    c = Counters()
    t = FrameTracker(10, c)
    for i in (0, 1, 4, 2, 4, 9):
        t.accept(i)
    assert "outside" in t.accept(10)
    assert (c.duplicates, c.out_of_order) == (1, 1)
    assert t.gaps() == 10 - 5  # 3, 5, 6, 7, 8 below the highest (9)
    assert t.gaps(ended=True) == 5
    t.accept(3)
    assert t.gaps() == 4


def test_snake_positions():
    idx = np.arange(12)
    np.testing.assert_array_equal(positions_of(idx, (3, 4), "raster"), idx)
    np.testing.assert_array_equal(positions_of(idx, (3, 4), "snake"),
                                  [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11])


def series(n=20, shape=(4, 4)) -> Series:
    return Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)


def batcher(policy, **kw) -> tuple[Batcher, queue.SimpleQueue, Counters]:
    q, c = queue.SimpleQueue(), Counters()
    frame_bytes = 4 * 4 * 2
    b = Batcher(series(), q, c, policy=policy, buffer_bytes=2 * 3 * frame_bytes,
                batch_frames=3, spill_dir=None, spill_limit_bytes=kw.get("limit", 2**20))
    return b, q, c


def frames(n):
    return np.arange(n * 16, dtype="uint16").reshape(n, 4, 4)


@pytest.mark.parametrize("policy", ["drop", "spill"])
def test_full_buffer_drops_or_spills_and_never_blocks(policy):
    b, q, c = batcher(policy)
    data = frames(10)
    for i, f in enumerate(data):
        b.put(i, f)
    assert b.capacity == 6
    batches = [q.get_nowait(), q.get_nowait()]
    assert q.empty()
    assert all(isinstance(x, Batch) for x in batches)
    assert [x.indices for x in batches] == [[0, 1, 2], [3, 4, 5]]
    # copied (the message buffer goes back at once) into one of two pooled buffers
    np.testing.assert_array_equal(batches[1].frames, data[3:6])
    assert not np.shares_memory(batches[0].frames, data)
    assert b.pool.allocated == b.pool.buffers == 2
    assert b.depth == 6
    if policy == "drop":
        assert (c.dropped, c.spilled) == (4, 0)
        return
    assert (c.dropped, c.spilled, b.spill.pending) == (0, 4, 4)
    out = np.empty((3, 4, 4), "uint16")
    idx = b.spill.read_into(out)
    np.testing.assert_array_equal(idx, [6, 7, 8])
    np.testing.assert_array_equal(out, data[6:9])
    batches[0].release()  # the analysis is done with a batch: room for 3 more frames
    assert b.depth == 3
    b.put(10, data[0])
    b.flush()
    again = q.get_nowait()
    assert again.indices == [10]
    assert again.frames is batches[0].frames  # reused, not new
    assert b.pool.allocated == 2
    np.testing.assert_array_equal(again.frames[0], data[0])
    assert list(b.spill.read_into(out)) == [9]
    b.spill.close()


def test_buffers_are_kept_for_the_next_series_of_the_same_frames():
    b, q, _ = batcher("drop")
    for i, f in enumerate(frames(3)):
        b.put(i, f)
    first = q.get_nowait()
    first.release()
    first.release()  # once only
    assert b.depth == 0
    same = Batcher(series(), q, Counters(), policy="drop", buffer_bytes=6 * 32,
                   batch_frames=3, spill_dir=None, spill_limit_bytes=0, pool=b.pool)
    same.put(0, frames(1)[0])
    same.flush()
    assert q.get_nowait().frames is first.frames
    assert same.pool.allocated == 1
    other = Batcher(series(shape=(4, 8)), q, Counters(), policy="drop", buffer_bytes=6 * 64,
                    batch_frames=3, spill_dir=None, spill_limit_bytes=0, pool=b.pool)
    assert other.pool is not b.pool
    other.put(0, np.ones((4, 8), "uint16"))
    other.flush()
    got = q.get_nowait()
    assert got.frames.shape == (3, 4, 8)
    np.testing.assert_array_equal(got.frames[0], 1)


def test_spill_limit_falls_back_to_counted_drops():
    b, _, c = batcher("spill", limit=2 * 32)
    for i, f in enumerate(frames(10)):
        b.put(i, f)
    assert (c.spilled, c.dropped) == (2, 2)


def test_spill_reads_in_order_while_written():
    s = Spill((4, 4), np.dtype("uint16"), None, 2**20)
    data = frames(5)
    out = np.empty((8, 4, 4), "uint16")
    assert len(s.read_into(out)) == 0
    for i in range(3):
        s.write(10 + i, data[i])
    np.testing.assert_array_equal(s.read_into(out[:2]), [10, 11])
    s.write(13, data[3])
    np.testing.assert_array_equal(s.read_into(out), [12, 13])
    np.testing.assert_array_equal(out[:2], data[2:4])
    s.close()
