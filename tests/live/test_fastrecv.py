"""The compiled receive loop for uncompressed stream v1 frames: the same frames, counters
and reasons as the Python path, on real sockets, whatever the messages in between."""

from __future__ import annotations

import dataclasses
import queue

import numpy as np
import pytest
import zmq

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.live import SeriesStart, ZMQSource, _batch, _codecs, _fastrecv, _receiver
from framescope.live._batch import Batch, End, Start
from framescope.live._intake import Intake
from framescope.live._stream1 import Stream1Decoder, Stream1Encoder
from framescope.udf import ApplyMasks

from .conftest import simulator_thread

pytestmark = pytest.mark.skipif(not _fastrecv.available(), reason="no libzmq to link")

H, W, N = 6, 10, 12
PEAK_STAGED: dict[bool, int] = {}  # most compressed frames waiting without a buffer
DATA = np.random.default_rng(23).integers(0, 4000, (N, H, W)).astype("uint16")


def messages(compression: str = "none") -> list[list[bytes]]:
    """A series of 12 frames with what a stream may bring between them."""
    enc = Stream1Encoder(compression, md5=False)
    other = Stream1Encoder("bslz4" if compression == "none" else "none", md5=False)
    frame = lambda i: [bytes(memoryview(p).cast("B")) for p in enc.frame(3, i, DATA[i])]  # noqa: E731
    short = frame(6)
    short[2] = short[2][:-2]
    last = frame(11)
    if compression != "none":  # a corrupt payload of the right size
        last[2] = np.random.default_rng(1).integers(0, 256, len(last[2]), np.uint8).tobytes()
    return [
        enc.start(SeriesStart(3, (H, W), DATA.dtype, N, (3, 4), "raster")),
        frame(0), frame(1), frame(2),
        frame(2),  # a duplicate
        frame(3), frame(4),
        enc.frame(3, 40, DATA[0]),  # outside the scan
        frame(5)[:3],  # no dconfig part
        short,  # an image part that is no frame
        other.frame(3, 7, DATA[7]),  # the other kind: handed back to the Python path
        [*frame(8), b"an appendix"],
        frame(9), frame(10), last,
        enc.end(3),
    ]


def run(fast: bool, sent: list[list[bytes]], frames_buffered: int = 64,
        every: int = 0) -> tuple[dict, list, list, object, int]:
    """The receiver thread's loop over a real socket, with or without the compiled path;
    the analysis takes the batches at the end (and ``every`` so many frames received)."""
    it = Intake("test", Stream1Decoder(), scan=None, order=None, policy="drop",
                buffer_bytes=frames_buffered * H * W * 2, batch_frames=4, spill_dir=None,
                spill_limit=0,
                stall_timeout=5.0, max_message_bytes=2**20)
    q: queue.SimpleQueue = queue.SimpleQueue()
    it.attach_request = q
    it.take_attach()
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.setsockopt(zmq.RCVTIMEO, 300)
    push.connect(f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}")
    for m in sent:
        push.send_multipart(m)
    frames, starts, ends = {}, [], []

    def analyse() -> None:
        while not q.empty():
            item = q.get_nowait()
            if isinstance(item, Batch):
                for i, f in zip(item.indices[: item.n], item.frames[: item.n], strict=True):
                    frames[len(starts), int(i)] = f.copy()  # (by the series' start)
                item.release()
            elif isinstance(item, Start):
                starts.append(item)
            elif isinstance(item, End):
                ends.append(item)

    loop = _fastrecv.FastImages(it, pull) if fast else None
    taken = done = 0
    _codecs.defer_frames(True)  # as on a receiver thread: payloads decoded by the batches
    try:
        while True:
            try:
                if loop is None or not loop.receive():
                    it.handle(pull.recv_multipart(copy=False))
            except zmq.Again:
                break
            taken = loop.frames if loop is not None else 0
            if it.batcher is not None:
                PEAK_STAGED[fast] = max(PEAK_STAGED.get(fast, 0), it.batcher.staged_frames)
            if every and it.counters.frames_received >= done + every:
                done += every
                analyse()
    finally:
        _codecs.defer_frames(False)
        pull.close(0)
        push.close(0)
    analyse()
    return frames, starts, ends, it.status(), taken


@pytest.mark.parametrize("compression", ["none", "lz4", "bslz4"])
def test_the_compiled_loop_takes_what_the_python_path_takes(compression):
    sent = messages(compression)
    frames, starts, ends, st, taken = run(True, sent)
    ref_frames, _, _, ref, ref_taken = run(False, sent)
    assert ref_taken == 0
    assert taken >= 7  # the frames after the first (a series' dimage_d is learnt there)
    good = [0, 1, 2, 3, 4, 7, 8, 9, 10] + ([11] if compression == "none" else [])
    assert sorted(frames) == sorted(ref_frames) == [(1, i) for i in good]
    for i in good:  # against the frames sent (7 came as the other kind)
        np.testing.assert_array_equal(frames[1, i], DATA[i])
    assert len(starts) == 1
    assert len(ends) == 1
    assert ends[0].ended
    # every counter, reason and state alike (an uncompressed blob's error is worded apart)
    if compression == "none":
        assert st.last_error.startswith("stream1 dimage: blob of 118 B")
        st, ref = (dataclasses.replace(x, last_error="") for x in (st, ref))
    else:  # the corrupt payload, found by the decoders
        assert st.last_error.startswith(f"{compression}: ")
    assert st == ref
    # the duplicate counted as received, a corrupt payload not
    assert st.frames_received == (11 if compression == "none" else 10)
    assert st.duplicates == 1
    assert st.malformed_by == {"outside the scan": 1, "streamN dimage": 2,
                               **({} if compression == "none" else {compression: 1})}
    assert st.gaps == (2 if compression == "none" else 3)  # 5, 6 (and the corrupt 11)
    assert st.state == "finished"


@pytest.mark.parametrize("compression", ["lz4", "bslz4"])
def test_a_backlog_waits_compressed_and_overflows_alike(monkeypatch, compression):
    """No analysis until the end: 8 buffers decoded ahead, then frames wait compressed in
    the memory left, then they are dropped; a series end gives up what waits (STALL_S)."""
    monkeypatch.setattr(_batch, "STALL_S", 0.2)
    PEAK_STAGED.clear()
    enc = Stream1Encoder(compression, md5=False)
    many = np.random.default_rng(3).integers(0, 40, (300, H, W)).astype("uint16")
    sent = [enc.start(SeriesStart(5, (H, W), many.dtype, 300, (15, 20), "raster")),
            *(enc.frame(5, i, many[i]) for i in range(300)), enc.end(5)]
    # the analysis takes what is there every 48 frames (a multiple of the batch: both
    # paths have then received the same frames)
    frames, _, _, st, taken = run(True, sent, frames_buffered=100, every=48)
    ref_frames, _, _, ref, _ = run(False, sent, frames_buffered=100, every=48)
    assert taken > 0
    assert st == ref
    assert st.dropped > 0  # the budget held
    assert sorted(frames) == sorted(ref_frames)
    assert len(frames) == st.frames_received - st.dropped
    assert PEAK_STAGED[True] > 0  # frames waited compressed, beyond the 8 buffers ahead
    assert PEAK_STAGED[False] > 0
    for (_, i), f in frames.items():
        np.testing.assert_array_equal(f, many[i])


def test_a_series_id_that_comes_again_with_other_frames():
    """A detector restarted: series 3 again, 5 x 8 frames; its own dimage_d is learnt."""
    enc = Stream1Encoder("none", md5=False)
    other = DATA[:, :5, :8] + 1
    sent = [enc.start(SeriesStart(3, (H, W), DATA.dtype, N, (3, 4), "raster")),
            *(enc.frame(3, i, DATA[i]) for i in range(N)), enc.end(3),
            enc.start(SeriesStart(3, (5, 8), DATA.dtype, N, (3, 4), "raster")),
            *(enc.frame(3, i, other[i]) for i in range(N)), enc.end(3)]
    frames, starts, ends, st, taken = run(True, sent)
    assert taken >= 2 * (N - 1)
    assert len(starts) == len(ends) == 2
    assert st.malformed == 0
    assert st.frames_received == N
    assert sorted(frames) == [(k, i) for k in (1, 2) for i in range(N)]
    np.testing.assert_array_equal(np.stack([frames[1, i] for i in range(N)]), DATA)
    np.testing.assert_array_equal(np.stack([frames[2, i] for i in range(N)]), other)


@pytest.mark.parametrize("fast", [True, False])
def test_a_live_job_on_uncompressed_stream1_equals_numpy(monkeypatch, fast):
    """The simulator's uncompressed stream v1 through a job: ring and COM as numpy has them."""
    monkeypatch.setattr(_receiver, "FAST_RECEIVE", fast)
    data = synthetic(scan=(5, 6), det=(24, 24), seed=2)
    frames = np.asarray(data).reshape(-1, 24, 24).astype(np.float64)
    ring = fm.ring(12, 12, 3, 10).rasterize((24, 24))
    with simulator_thread(protocol="dectris-stream1", compression="none", scan=(5, 6),
                          det=(24, 24), source=data, rate=0) as endpoint:
        job = framescope.submit({"vd": ApplyMasks({"r": fm.ring(12, 12, 3, 10)})},
                                ZMQSource(endpoint, "dectris-stream1", batch_frames=7))
        live = job.result(60)
        job.cancel()
    st = job.status
    assert st.state == "finished"
    assert (st.frames_processed, st.dropped, st.gaps, st.malformed) == (30, 0, 0, 0)
    expected = (frames * ring).sum(axis=(1, 2)).reshape(5, 6)
    np.testing.assert_allclose(live["vd"]["intensity"].values[..., 0], expected, rtol=1e-6)
