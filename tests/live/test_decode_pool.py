"""Compressed frames decoded off the receiver thread: kernels, the pool, batches, streams.

References are independent: payloads made by the bitshuffle and lz4 libraries (framing by
hand), frames compared with the numpy arrays they came from, live results with the offline
run of the same frames.
"""

from __future__ import annotations

import queue
import struct
import threading
import time

import bitshuffle
import lz4.block
import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import SeriesStart, ZMQSource, _batch, _codecs, _decode
from framescope.live._batch import (
    AHEAD_BUFFERS,
    CHUNK_FRAMES,
    Batch,
    Batcher,
    FrameTracker,
    use_decode_pool,
)
from framescope.live._native import NativeEncoder
from framescope.live._scan import Series
from framescope.live._status import Counters
from framescope.udf import ApplyMasks, CenterOfMass, Meta

from .conftest import simulator_thread, until

rng = np.random.default_rng(19)

pytestmark = pytest.mark.skipif(not _decode.available(), reason="bitshuffle's C library")


def bslz4(a: np.ndarray, block: int, header: bool = True) -> bytes:
    payload = bitshuffle.compress_lz4(a, block).tobytes()
    return (struct.pack(">QI", a.nbytes, block * a.itemsize) if header else b"") + payload


def lz4_h5(a: np.ndarray, block_bytes: int) -> bytes:
    """The HDF5 LZ4 filter's framing, a block stored as it is when it does not shrink."""
    raw = a.tobytes()
    out = [struct.pack(">QI", len(raw), block_bytes)]
    for i in range(0, len(raw), block_bytes):
        chunk = raw[i : i + block_bytes]
        packed = lz4.block.compress(chunk, store_size=False)
        packed = chunk if len(packed) >= len(chunk) else packed
        out += [struct.pack(">I", len(packed)), packed]
    return b"".join(out)


def decode(payloads: list[tuple[str, bytes]], shape, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Decode through the kernel into slots 0..n-1 of a buffer with a guard row after."""
    dtype = np.dtype(dtype)
    staging = b"".join(p for _, p in payloads)
    ends = np.cumsum([len(p) for _, p in payloads])
    out = np.full((len(payloads) + 1, *shape), 7, dtype)
    status = _decode.decode_chunk(
        np.array([_decode.CODE[c] for c, _ in payloads], np.int8),
        np.frombuffer(staging, np.uint8), ends - [len(p) for _, p in payloads], ends,
        out.reshape(len(out), -1).view(np.uint8), np.arange(len(payloads)), dtype.itemsize)
    assert (out[-1] == 7).all()  # nothing written past the slots
    return out[:-1], status


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
@pytest.mark.parametrize("shape", [(37, 29), (64, 48), (3, 3)])  # partial blocks, n % 8
def test_kernel_equals_the_libraries(dtype, shape):
    frames = [rng.poisson(3.0, shape).astype(dtype) for _ in range(6)]
    payloads = [("bslz4", bslz4(frames[0], _codecs._default_block(frames[0].itemsize))),
                ("bslz4", bslz4(frames[1], 64)),
                ("bslz4", bslz4(frames[2], _codecs._default_block(frames[2].itemsize),
                                header=False)),
                ("lz4", lz4.block.compress(frames[3].tobytes(), store_size=False)),
                ("lz4-h5", lz4_h5(frames[4], 256)),
                ("lz4-h5", lz4_h5(frames[5], 4096))]
    out, status = decode(payloads, shape, dtype)
    assert status.tolist() == [0] * 6
    np.testing.assert_array_equal(out, np.stack(frames))


def test_corrupt_payloads_are_reported_not_read_past():
    a = rng.poisson(3.0, (40, 40)).astype("uint16")
    good = bslz4(a, 128)
    bad = [("bslz4", good[:-30]),  # cut inside the last block
           ("bslz4", good[:14]),  # cut inside the first block header
           ("bslz4", good + b"xx"),  # too long
           ("bslz4", struct.pack(">QI", a.nbytes + 2, 256) + good[12:]),  # wrong size
           ("bslz4", struct.pack(">QI", a.nbytes, 6) + good[12:]),  # block not 8 elements
           ("lz4", b"\xff" * 50),  # garbage LZ4
           ("lz4-h5", lz4_h5(a, 512)[:-9]),
           ("lz4-h5", b"\0" * 5),
           ("bslz4", good)]
    out, status = decode(bad, a.shape, a.dtype)
    assert status.tolist()[:-1] == [-2, -1, -4, -5, -6, -3, -2, -7]
    assert status[-1] == 0
    np.testing.assert_array_equal(out[-1], a)
    msg = _decode.error_message("bslz4", -2, a.nbytes, len(good) - 30)
    assert "truncated" in msg
    assert str(a.nbytes) in msg


def test_encoded_decodes_on_demand_and_raises_on_corruption():
    a = rng.poisson(3.0, (16, 24)).astype("uint16")
    enc = _codecs.Encoded(memoryview(bslz4(a, 64)), "bslz4", a.shape, a.dtype)
    np.testing.assert_array_equal(np.asarray(enc), a)
    cut = _codecs.Encoded(memoryview(bslz4(a, 64)[:-10]), "bslz4", a.shape, a.dtype)
    with pytest.raises(_codecs.MessageError, match="bslz4"):
        np.asarray(cut)


class Consumer:
    """An analysis thread: takes the batches handed over, copies them, gives them back."""

    def __init__(self, q: queue.SimpleQueue, delay: float = 0.0) -> None:
        self.q, self.delay = q, delay
        self.indices: list[int] = []
        self.frames: list[np.ndarray] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not (self.stop.is_set() and self.q.empty()):
            try:
                batch = self.q.get(timeout=0.01)
            except queue.Empty:
                continue
            assert isinstance(batch, Batch)
            time.sleep(self.delay)
            self.indices += batch.indices
            self.frames.append(batch.frames[: batch.n].copy())
            batch.release()

    def finish(self) -> tuple[list[int], list[np.ndarray]]:
        self.stop.set()
        self.thread.join()
        return self.indices, self.frames


def encoded(a: np.ndarray, codec: str) -> _codecs.Encoded:
    blob = _codecs.encode(a, "lz4-h5" if codec == "lz4-h5" else codec)
    return _codecs.Encoded(memoryview(bytes(blob)).cast("B"), codec, a.shape, a.dtype)


@pytest.mark.parametrize("per_batch", [7, 2 * CHUNK_FRAMES + 6])
@pytest.mark.parametrize("threads", [0, 1, 3])
def test_batches_through_the_pool_keep_order_positions_and_gaps(threads, per_batch):
    """Many batches decoding at once: handed over in order, each frame in its slot, a
    corrupt frame taken out (malformed, a gap), a frame never sent a gap too. Batches of
    fewer frames than a decode task, and of several tasks (decoding while it fills)."""
    n, shape = 200, (24, 20)
    data = rng.poisson(5.0, (n, *shape)).astype("uint16")
    order = rng.permutation(n)  # out of order arrival
    missing, corrupt = int(order[17]), int(order[101])
    counters = Counters()
    tracker = FrameTracker(n, counters)
    q: queue.SimpleQueue = queue.SimpleQueue()
    series = Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)
    pool = _decode.DecodePool(threads) if threads else None
    use_decode_pool(pool)
    analysis = Consumer(q)
    try:
        b = Batcher(series, q, counters, policy="drop", buffer_bytes=2**24,
                    batch_frames=per_batch,
                    spill_dir=None, spill_limit_bytes=0, tracker=tracker)
        sent = []
        for k, i in enumerate(order):
            if i == missing:
                continue
            codec = ("bslz4", "lz4", "lz4-h5")[k % 3]
            frame = encoded(data[i], codec)
            if i == corrupt:
                frame = _codecs.Encoded(frame.blob[:-9], codec, shape, data.dtype)
            tracker.accept(int(i))
            counters.frames_received += 1
            b.put(int(i), frame)
            sent.append(int(i))
        b.flush()  # a series' end: waits for every batch
    finally:
        use_decode_pool(None)
        if pool is not None:
            pool.close()
        got_idx, got = analysis.finish()
    assert b.pool.allocated <= AHEAD_BUFFERS + 1  # buffers reused, not one per batch
    expected = [i for i in sent if i != corrupt]
    assert got_idx == expected  # arrival order, the corrupt one out
    np.testing.assert_array_equal(np.concatenate(got), data[expected])
    assert counters.malformed == 1
    assert counters.last_error.startswith(
        ("bslz4", "lz4", "lz4-h5"))
    assert counters.frames_received == n - 2
    assert tracker.gaps(ended=True) == 2
    assert not tracker.seen[[missing, corrupt]].any()
    assert b.depth == 0  # every frame handed over was given back


def test_the_spill_policy_decodes_compressed_frames():
    n, shape = 12, (8, 8)
    data = rng.poisson(5.0, (n, *shape)).astype("uint16")
    counters = Counters()
    q: queue.SimpleQueue = queue.SimpleQueue()
    series = Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)
    use_decode_pool(None)
    b = Batcher(series, q, counters, policy="spill", buffer_bytes=4 * data[0].nbytes,
                batch_frames=2, spill_dir=None, spill_limit_bytes=2**20)
    for i in range(n):
        b.put(i, encoded(data[i], "bslz4"))
    assert counters.spilled == n - b.capacity > 0
    out = np.empty((n, *shape), "uint16")
    idx = b.spill.read_into(out)
    np.testing.assert_array_equal(out[: len(idx)], data[idx])
    b.spill.close()


SCAN, DET = (5, 8), (32, 32)


def offline(arr) -> dict[str, np.ndarray]:
    ds = framescope.run([ApplyMasks({"ring": fm.ring(16, 16, 5, 14)}), CenterOfMass(radius=9)],
                        arr, client="inline")
    return {"ring": ds[0]["intensity"].values, "com_y": ds[1]["com_y"].values,
            "com_x": ds[1]["com_x"].values}


@pytest.fixture(scope="module")
def reference():
    arr = synthetic(scan=SCAN, det=DET, seed=0)  # what the simulator sends
    return offline(arr)


@pytest.mark.parametrize(("protocol", "compression", "threads"), [
    ("dectris-stream1", "bslz4", 2),
    ("dectris-stream2", "lz4", 2),
    ("native", "bslz4", 0),  # decoded on the receiver thread, into the batch
])
def test_compressed_stream_equals_offline(reference, protocol, compression, threads,
                                         monkeypatch):
    calls = []
    real = _decode.decode_chunk

    def counted(*args):
        calls.append(len(args[-2]))
        return real(*args)

    monkeypatch.setattr(_decode, "decode_chunk", counted)
    kwargs = {"protocol": protocol, "scan": SCAN, "det": DET, "rate": 0,
              "compression": compression}
    with simulator_thread(**kwargs) as endpoint:
        job = framescope.submit(
            [ApplyMasks({"ring": fm.ring(16, 16, 5, 14)}), CenterOfMass(radius=9)],
            ZMQSource(endpoint, protocol, decode_threads=threads, batch_frames=3))
        live = job.result(60)
        job.cancel()
    st = job.status
    assert (st.frames_processed, st.dropped, st.gaps, st.malformed) == (40, 0, 0, 0)
    assert sum(calls) == 40  # every frame decoded by the kernel, into its batch
    np.testing.assert_array_equal(live[0]["intensity"].values, reference["ring"])
    for key in ("com_y", "com_x"):
        np.testing.assert_array_equal(live[1][key].values, reference[key])


def test_latest_frame_of_a_compressed_stream(push):
    sock, endpoint = push
    a = rng.poisson(4, (3, 16, 16)).astype("uint16")
    enc = NativeEncoder("bslz4")
    with ZMQSource(endpoint, "native", decode_threads=1) as src:
        sock.send_multipart(enc.start(SeriesStart(1, (16, 16), np.dtype("uint16"), 3, (1, 3))))
        for i in range(2):
            sock.send_multipart(enc.frame(1, i, a[i]))
        until(lambda: src.status.frames_received == 2, what="2 frames")
        np.testing.assert_array_equal(src.latest_frame(), a[1])


def test_decode_threads_is_checked():
    with pytest.raises(ValueError, match="decode_threads"):
        ZMQSource("tcp://127.0.0.1:1", "native", decode_threads=-1)


@pytest.mark.parametrize("n", [64, 8 * 1024, 8 * 1024 + 64, 8 * 1024 + 72, 3 * 4096])
@pytest.mark.parametrize("block", [None, 64, 192, 1024])
def test_16bit_pixels_over_the_full_range_equal_bitshuffle(n, block):
    """The SIMD transpose for 16-bit pixels (blocks of whole 64-pixel steps) and bitshuffle's
    function (the rest) on every bit pattern, against bitshuffle's own decompression."""
    a = rng.integers(0, 2**16, n, dtype=np.uint16)
    a[:: 7] = 0xFFFF  # high and low bytes all ones somewhere, zero elsewhere
    a[3:: 11] = 0
    block = block or _codecs._default_block(2)
    payload = bslz4(a, block)
    expected = bitshuffle.decompress_lz4(np.frombuffer(payload[12:], np.uint8), a.shape,
                                         a.dtype, block)
    np.testing.assert_array_equal(expected, a)
    got, status = decode([("bslz4", payload)], a.shape, a.dtype)
    assert status.tolist() == [0]
    np.testing.assert_array_equal(got[0], a)


@pytest.mark.parametrize("threads", [0, 2])
def test_a_compressed_backlog_waits_compressed_in_few_reused_buffers(threads):
    """A slow analysis: frames beyond AHEAD_BUFFERS batches wait compressed (counted in the
    depth, within the memory budget) and are decoded as buffers come back, in order."""
    n, shape, per_batch = 480, (32, 32), 8
    data = rng.poisson(2.0, (n, *shape)).astype("uint16")
    counters = Counters()
    q: queue.SimpleQueue = queue.SimpleQueue()
    series = Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)
    pool = _decode.DecodePool(threads) if threads else None
    use_decode_pool(pool)
    analysis = Consumer(q, delay=0.002)
    depths = []
    try:
        b = Batcher(series, q, counters, policy="drop", buffer_bytes=n * data[0].nbytes,
                    batch_frames=per_batch, spill_dir=None, spill_limit_bytes=0)
        for i in range(n):
            b.put(i, encoded(data[i], "bslz4"))
            depths.append((b.depth, b.staged_frames))
        b.flush()
    finally:
        use_decode_pool(None)
        if pool is not None:
            pool.close()
        got_idx, got = analysis.finish()
    assert got_idx == list(range(n))
    np.testing.assert_array_equal(np.concatenate(got), data)
    assert b.pool.allocated <= AHEAD_BUFFERS + 1
    depth, staged = max(depths)
    assert staged > 0
    assert depth > AHEAD_BUFFERS * per_batch
    assert counters.dropped == 0
    assert b.staged_frames == b.staged_bytes == 0
    assert b.depth == 0


def test_a_compressed_backlog_beyond_the_budget_is_dropped_and_counted():
    n, shape = 64, (32, 32)
    data = rng.poisson(0.05, (n, *shape)).astype("uint16")  # (low dose: small payloads)
    blob = max(len(encoded(a, "bslz4").blob) for a in data)
    counters = Counters()
    q: queue.SimpleQueue = queue.SimpleQueue()
    series = Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)
    use_decode_pool(None)
    # room for a few buffers of 2 frames, and some compressed frames besides
    budget = 4 * data[0].nbytes + 1800
    b = Batcher(series, q, counters, policy="drop", buffer_bytes=budget, batch_frames=2,
                spill_dir=None, spill_limit_bytes=0)
    for i in range(n):  # nothing is analysed meanwhile
        b.put(i, encoded(data[i], "bslz4"))
    buffered = b.pool.buffers * 2
    assert b.pool.allocated == b.pool.buffers
    room = (budget - buffered * data[0].nbytes) // blob
    assert room >= 5
    assert room <= b.staged_frames <= room + 2  # (blobs differ a little in size)
    assert counters.dropped == n - buffered - b.staged_frames > 0
    assert buffered + b.staged_frames <= b.capacity <= buffered + b.staged_frames + 2


def test_a_series_end_drops_what_waits_when_the_analysis_gives_nothing_back(monkeypatch,
                                                                           caplog):
    monkeypatch.setattr(_batch, "STALL_S", 0.2)
    n, shape = 40, (16, 16)
    data = rng.poisson(2.0, (n, *shape)).astype("uint16")
    counters = Counters()
    q: queue.SimpleQueue = queue.SimpleQueue()
    series = Series(1, Meta((1, n), shape, np.dtype("uint16")), "raster", n)
    use_decode_pool(None)
    b = Batcher(series, q, counters, policy="drop", buffer_bytes=2**22, batch_frames=2,
                spill_dir=None, spill_limit_bytes=0)
    for i in range(n):
        b.put(i, encoded(data[i], "lz4"))
    waiting = b.staged_frames
    assert waiting == n - 2 * AHEAD_BUFFERS
    b.flush()  # returns (after STALL_S) although no buffer ever comes back
    assert counters.dropped == waiting
    assert b.depth == 2 * AHEAD_BUFFERS
    assert "gave no buffer back" in caplog.text
    handed = []
    while not q.empty():
        handed += q.get_nowait().indices
    assert handed == list(range(2 * AHEAD_BUFFERS))
