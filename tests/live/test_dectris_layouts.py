"""DECTRIS message layouts the documentation allows, what the encoders send, and what the
receiver does with messages it cannot use: counted by reason, a headerless series given up
after ``header_timeout`` (the receiver's intake driven without sockets)."""

from __future__ import annotations

import hashlib
import json
import queue
import time

import cbor2
import numpy as np
import pytest
import zmq

from framescope.live import SeriesStart, Status
from framescope.live._batch import Batch, End, Start
from framescope.live._intake import Intake
from framescope.live._stream1 import Stream1Decoder, Stream1Encoder
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder

from .conftest import until

H, W, N = 6, 10, 6
DATA = np.random.default_rng(19).integers(0, 4000, (N, H, W)).astype("uint16")


def intake(decoder=None, *, scan=None, header_timeout=10.0) -> tuple[Intake, queue.SimpleQueue]:
    it = Intake("test", decoder or Stream1Decoder(verify_hash=True), scan=scan, order=None,
                policy="drop", buffer_bytes=64 * H * W * 2, batch_frames=4, spill_dir=None,
                spill_limit=0, stall_timeout=5.0, max_message_bytes=2**20,
                header_timeout=header_timeout)
    q: queue.SimpleQueue = queue.SimpleQueue()
    it.attach_request = q
    it.take_attach()
    return it, q


def feed(it: Intake, *messages) -> None:
    for m in messages:
        it.handle([zmq.Frame(bytes(memoryview(p).cast("B"))) for p in m])


def received(q: queue.SimpleQueue) -> tuple[dict[int, np.ndarray], list[Start], list[End]]:
    """Frames by frame number, the series starts and ends handed to the analysis."""
    frames, starts, ends = {}, [], []
    while not q.empty():
        item = q.get_nowait()
        if isinstance(item, Batch):
            for i, f in zip(item.indices[: item.n], item.frames[: item.n], strict=True):
                frames[int(i)] = f.copy()
            item.release()
        elif isinstance(item, Start):
            starts.append(item)
        elif isinstance(item, End):
            ends.append(item)
    return frames, starts, ends


def series(enc, sid=3, scan=(2, 3), header=None, arrays=None) -> list[list]:
    start = SeriesStart(sid, (H, W), DATA.dtype, N, scan, "raster", header or {},
                        arrays or {})
    return [enc.start(start), *(enc.frame(sid, i, DATA[i]) for i in range(N)), enc.end(sid)]


def assert_whole(q: queue.SimpleQueue, scan: tuple[int, int]) -> None:
    frames, starts, ends = received(q)
    assert len(starts) == 1
    assert starts[0].series.meta.scan_shape == scan
    assert len(ends) == 1
    assert ends[0].ended
    assert sorted(frames) == list(range(N))
    np.testing.assert_array_equal(np.stack([frames[i] for i in range(N)]), DATA)


@pytest.mark.parametrize("detail", ["none", "basic", "all"])
@pytest.mark.parametrize("appendix", [True, False])
def test_header_detail_parts_and_frames(detail, appendix):
    mask = np.zeros((H, W), "uint32")
    mask[2, 3] = 1
    enc = Stream1Encoder("bslz4", header_detail=detail, appendix=appendix)
    msgs = series(enc, arrays={"pixel_mask": mask})
    # the documented parts: dheader, config (basic, all), 3 (header, blob) pairs (all)
    documented = {"none": 1, "basic": 2, "all": 8}[detail]
    assert len(msgs[0]) == documented + appendix
    assert [json.loads(p)["htype"] for p in msgs[0][2:documented:2]] == (
        ["dflatfield-1.0", "dpixelmask-1.0", "dcountrate_table-1.0"] if detail == "all" else [])
    # without the appendix "none" leaves the scan and the number of frames unknown: given
    # here; "basic" and "all" announce the frames: one scan row
    scan = (2, 3) if detail == "none" and not appendix else None
    it, q = intake(scan=scan)
    feed(it, *msgs)
    assert_whole(q, (2, 3) if appendix or scan else (1, N))
    st = it.status()
    assert (st.state, st.malformed) == ("finished", 0)
    if detail == "all":
        np.testing.assert_array_equal(it.series.arrays["pixel_mask"], mask)


def test_basic_header_from_the_appendix_less_stream_is_one_row():
    it, q = intake()
    feed(it, *series(Stream1Encoder("lz4", appendix=False)))
    assert_whole(q, (1, N))  # N frames announced, no scan shape: one row


@pytest.mark.parametrize("detail", ["basic", "all"])
def test_header_parts_as_messages_of_their_own(detail):
    """The config (and the arrays) as the next messages, as replay tools send them."""
    flat = np.linspace(0.5, 1.5, H * W, dtype="float32").reshape(H, W)
    msgs = series(Stream1Encoder("bslz4", header_detail=detail, appendix=False),
                  arrays={"flatfield": flat})
    head, *rest = msgs[0]
    split = [[head], *([p] for p in rest), *msgs[1:]]
    dec = Stream1Decoder()
    first = dec.decode(split[0])
    assert isinstance(first, SeriesStart)
    assert first.frame_shape is None
    it, q = intake()
    feed(it, *split)
    assert_whole(q, (1, N))
    assert it.status().malformed == 0
    if detail == "all":
        np.testing.assert_array_equal(it.series.arrays["flatfield"], flat)


@pytest.mark.parametrize("detail", ["basic", "all"])
@pytest.mark.parametrize("scan", [None, (2, 3)])
def test_a_config_without_its_dheader_completes_the_next_series(detail, scan):
    """What a second receiver gets when the dheader and its config come as two messages
    (PUSH deals them to different receivers): the config (and arrays) alone, kept for the
    series its frames open: not malformed, its fields and arrays in the series header."""
    flat = np.linspace(0.5, 1.5, H * W, dtype="float32").reshape(H, W)
    msgs = series(Stream1Encoder("bslz4", header_detail=detail, appendix=False,
                                 trigger_mode="exte"),
                  header={"incident_energy": 8000.0}, arrays={"flatfield": flat})
    _dheader, config, *arrays = msgs[0]
    pairs = [arrays[i : i + 2] for i in range(0, len(arrays), 2)]
    it, q = intake(scan=scan)
    feed(it, [config], *pairs, *msgs[1:])
    assert it.status().malformed == 0
    assert_whole(q, scan or (1, N))  # without scan=: the config's frame count, one row
    assert it.series.from_header
    assert it.series.header["incident_energy"] == 8000.0
    assert it.series.n_frames == N
    if detail == "all":
        np.testing.assert_array_equal(it.series.arrays["flatfield"], flat)


def test_a_kept_config_is_not_used_by_a_series_with_a_whole_header():
    enc = Stream1Encoder("lz4", header_detail="basic", appendix=False)
    stray = json.dumps({"x_pixels_in_detector": 999, "detector_description": "old"})
    it, q = intake()
    feed(it, [stray.encode()], *series(enc))
    assert "detector_description" not in it.series.header
    assert_whole(q, (1, N))
    assert it.status().malformed == 0


def test_image_appendix_is_allowed():
    enc = Stream1Encoder("none", image_appendix={"beamline": "x"})
    msgs = series(enc)
    assert len(msgs[1]) == 5
    assert json.loads(msgs[1][4]) == {"beamline": "x"}
    it, q = intake()
    feed(it, *msgs)
    assert_whole(q, (2, 3))


def test_md5_of_every_blob_by_default():
    for compression in ("none", "lz4", "bslz4"):
        parts = Stream1Encoder(compression).frame(1, 4, DATA[4])
        blob = bytes(memoryview(parts[2]).cast("B"))
        assert json.loads(parts[0])["hash"] == hashlib.md5(blob).hexdigest()
    assert json.loads(Stream1Encoder(md5=False).frame(1, 4, DATA[4])[0])["hash"] == ""


def test_hash_mismatch_is_counted():
    msgs = series(Stream1Encoder("bslz4"))
    bad = [bytes(memoryview(p).cast("B")) for p in msgs[3]]
    bad[2] = bad[2][:-1] + bytes([bad[2][-1] ^ 1])
    it, q = intake()
    feed(it, msgs[0], *msgs[1:3], bad, *msgs[4:])
    st = it.status()
    assert (st.malformed, st.malformed_by) == (1, {"hash mismatch": 1})
    assert "MD5" in st.last_error
    assert sorted(received(q)[0]) == [0, 1, 3, 4, 5]


def test_extras_travel_where_the_protocol_allows():
    """framescope's header fields: the v1 appendix, stream2 user_data; decoded back."""
    cal = {"pixel_size": 5.5e-5}
    header = {"source": "sample.h5", "framescope_calibration": cal, "count_time": 0.001,
              "framescope": {"dark": True}}
    v1 = series(Stream1Encoder(), header=header)[0]
    config, appendix = json.loads(v1[1]), json.loads(v1[2])
    assert "source" not in config
    assert "framescope_calibration" not in config
    assert config["count_time"] == 0.001  # a SIMPLON config parameter stays one
    assert appendix == {"framescope": {"dark": True, "scan_shape": [2, 3],
                                       "scan_order": "raster",
                                       "header": {"source": "sample.h5",
                                                  "framescope_calibration": cal}}}
    start = cbor2.loads(series(Stream2Encoder(), header=header)[0][0])
    start = getattr(start, "value", start)  # (the self-describe tag, if cbor2 keeps it)
    assert "source" not in start
    assert "framescope_calibration" not in start
    assert start["user_data"]["framescope"]["header"]["source"] == "sample.h5"
    assert start["arm_date"].tzinfo is not None  # a DateTime (tag 0), not a bare string
    for dec, msg in ((Stream1Decoder(), v1),
                     (Stream2Decoder(), series(Stream2Encoder(), header=header)[0])):
        got = dec.decode(msg)
        assert got.header["source"] == "sample.h5"
        assert got.header["framescope_calibration"] == cal
        assert got.header["framescope"]["dark"] is True
        assert got.scan_shape == (2, 3)


def test_skipped_messages_are_counted_by_reason_for_the_next_series():
    enc = Stream1Encoder("lz4")
    msgs = series(enc)
    it, q = intake()
    feed(it,
         [json.dumps({"beamline": "x"}).encode()],  # an appendix, no dheader
         [json.dumps({"htype": "dwhat-1.0"}).encode()],
         enc.end(7),  # no such series
         enc.frame(7, 0, DATA[0]),  # no header, no scan=
         *msgs)
    st = it.status()
    assert st.state == "finished"
    assert st.series == 3
    assert st.malformed_by == {"header part without its dheader": 1, "unknown htype": 1,
                               "end of a series not received": 1, "no usable header": 1}
    assert st.malformed == 4
    assert json.loads(st.as_dict()["malformed_by"]) == st.malformed_by  # attrs take strings
    assert_whole(q, (2, 3))


def test_a_series_without_a_usable_header_fails_after_the_timeout():
    enc = Stream1Encoder("none")
    it, q = intake(header_timeout=0.5)
    feed(it, *(enc.frame(5, i, DATA[i]) for i in range(3)))  # header lost, no scan=
    it.housekeeping(time.monotonic())
    assert it.status().state == "idle"  # still waiting
    it.housekeeping(time.monotonic() + 1.0)
    st = it.status()
    assert (st.state, st.series, st.malformed) == ("failed", 5, 3)
    assert "series 5: no usable header after 0.5 s" in st.last_error
    feed(it, enc.frame(5, 3, DATA[3]))  # later frames: skipped, counted
    assert it.status().malformed_by == {"no usable header": 4}
    # the next series with a header is received as usual
    feed(it, *series(enc, sid=6))
    assert it.status().state == "finished"
    assert it.status().malformed == 0
    assert_whole(q, (2, 3))


def test_header_detail_none_without_appendix_fails_at_its_end():
    """Frame shape from the images, but no number of images nor scan shape."""
    it, _ = intake()
    feed(it, *series(Stream1Encoder("none", header_detail="none", appendix=False)))
    st = it.status()
    assert (st.state, st.series) == ("failed", 3)
    assert "ended without a usable header" in st.last_error
    assert st.malformed_by == {"no usable header": N, "end of a series not received": 1}


def test_status_default_has_no_reasons():
    assert Status().malformed_by == {}
    assert Status().as_dict()["malformed_by"] == "{}"


def test_zmqsource_gives_up_a_headerless_series(push):
    from framescope.live import ZMQSource

    sock, endpoint = push
    enc = Stream1Encoder("none")
    with ZMQSource(endpoint, "dectris-stream1", header_timeout=0.3) as src:
        for i in range(2):
            sock.send_multipart(enc.frame(9, i, DATA[i]))
        until(lambda: src.status.state == "failed", what="state failed")
        st = src.status
        assert st.series == 9
        assert "no usable header after 0.3 s" in st.last_error
        assert st.malformed_by == {"no usable header": 2}


@pytest.mark.parametrize(("mode", "nimages", "ntrigger"), [("ints", N, 1), ("exte", 1, N)])
def test_trigger_mode_announces_the_frames(mode, nimages, ntrigger):
    head = series(Stream1Encoder(trigger_mode=mode))[0]
    config = json.loads(head[1])
    assert (config["trigger_mode"], config["nimages"], config["ntrigger"]) == (
        mode, nimages, ntrigger)
    assert Stream1Decoder().decode(head).n_frames == N


def test_an_events_stream_counts_a_config_without_its_dheader():
    """An events stream has one receiver: a lone config means its dheader was missed, and
    is counted as malformed (the series itself still comes through whole)."""
    from framescope.live._streams import StreamReceiver

    class Sink:
        def __init__(self):
            self.frames, self.ends = [], []

        def on_start(self, name, msg):
            pass

        def on_frame(self, name, index, payload, nbytes):
            self.frames.append(index)

        def on_end(self, name, msg):
            self.ends.append(msg)

    enc = Stream1Encoder("lz4", header_detail="basic")
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    sink = Sink()
    rec = StreamReceiver("det", f"tcp://127.0.0.1:{port}", "dectris-stream1", sink).start()
    try:
        push.send_multipart([json.dumps({"x_pixels_in_detector": W, "nimages": N}).encode()])
        for m in series(enc):
            push.send_multipart(m)
        until(lambda: sink.ends, 10)
        c = rec.counters
        assert dict(c.malformed_by) == {"header part without its dheader": 1}
        assert sorted(sink.frames) == list(range(N))
    finally:
        rec.stop()
        push.close(linger=0)
