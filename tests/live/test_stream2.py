"""stream2 messages built with cbor2 tags by hand decode to the frames, any channel."""

from __future__ import annotations

import struct

import bitshuffle
import cbor2
import lz4.block
import numpy as np
import pytest
from cbor2 import CBORTag

from framescope.live import Frame, MessageError, SeriesEnd, SeriesStart
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder

TAGS = {"uint8": 64, "uint16": 69, "uint32": 70, "float32": 85}


def msg(obj) -> bytes:
    return cbor2.dumps(CBORTag(55799, obj))


def array(a: np.ndarray, compression: str = "none"):
    if compression == "none":
        payload = a.tobytes()
    elif compression == "bslz4":
        block = max(8, 8192 // a.itemsize // 8 * 8)
        data = struct.pack(">QI", a.nbytes, block * a.itemsize) + \
            bitshuffle.compress_lz4(a, block).tobytes()
        payload = CBORTag(56500, ["bslz4", a.itemsize, data])
    else:
        packed = lz4.block.compress(a.tobytes(), store_size=False)
        payload = CBORTag(56500, ["lz4", 0, struct.pack(">QII", a.nbytes, a.nbytes,
                                                          len(packed)) + packed])
    return CBORTag(40, [list(a.shape), CBORTag(TAGS[a.dtype.name], payload)])


def image(series, index, data) -> bytes:
    return msg({"type": "image", "series_id": series, "series_unique_id": "x",
                "image_id": index, "start_time": [0, 1], "stop_time": [1, 1000],
                "real_time": [1, 1000], "data": data})


@pytest.mark.parametrize("compression", ["none", "bslz4", "lz4"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
def test_images_decode(compression, dtype):
    if compression == "bslz4" and dtype == "float32":
        dtype = "uint16"
    a = np.random.default_rng(2).poisson(4, (20, 33)).astype(dtype)
    ev = Stream2Decoder().decode([image(7, 3, {"threshold_1": array(a, compression)})])
    assert isinstance(ev, Frame)
    assert (ev.series, ev.index) == (7, 3)
    np.testing.assert_array_equal(ev.data, a)


def test_channels_follow_the_start_message():
    a, b = np.zeros((4, 6), "uint16"), np.ones((4, 6), "uint16")
    start = msg({"type": "start", "series_id": 1, "channels": ["threshold_1", "threshold_2"],
                 "image_size_x": 6, "image_size_y": 4, "image_dtype": "uint16",
                 "number_of_images": 6, "pixel_mask": {"threshold_1": array(a)},
                 "user_data": {"framescope": {"scan_shape": [2, 3], "scan_order": "snake"}}})
    frames = image(1, 0, {"threshold_1": array(a), "threshold_2": array(b)})
    dec = Stream2Decoder()
    s = dec.decode([start])
    assert isinstance(s, SeriesStart)
    assert (s.frame_shape, s.dtype, s.n_frames, s.scan_shape, s.scan_order) == (
        (4, 6), np.dtype("uint16"), 6, (2, 3), "snake")
    assert "pixel_mask" not in s.header
    np.testing.assert_array_equal(dec.decode([frames]).data, a)
    dec2 = Stream2Decoder(channel="threshold_2")
    dec2.decode([start])
    np.testing.assert_array_equal(dec2.decode([frames]).data, b)
    assert dec.decode([msg({"type": "end", "series_id": 1})]) == SeriesEnd(1)
    with pytest.raises(MessageError, match="not among"):
        Stream2Decoder(channel="threshold_9").decode([start])


def test_encoder_round_trip():
    a = np.arange(20, dtype="uint32").reshape(4, 5)
    for compression in ("none", "lz4", "bslz4"):
        enc, dec = Stream2Encoder(compression, channels=["t1", "t2"]), Stream2Decoder()
        raw = enc.start(SeriesStart(3, (4, 5), a.dtype, 4, (2, 2), "raster"))[0]
        assert raw[:3] == b"\xd9\xd9\xf7"  # self-describe tag
        assert dec.decode([raw]).scan_shape == (2, 2)
        np.testing.assert_array_equal(dec.decode(enc.frame(3, 1, a)).data, a)


@pytest.mark.parametrize(("parts", "match"), [
    ([b"\xd9\xd9\xf7\xa1"], "not CBOR"),  # truncated map
    ([msg([1, 2])], "CBOR map"),
    ([msg({"type": "nope"})], "unknown message type"),
    ([b"a", b"b"], "single-part"),
    ([msg({"type": "image", "series_id": 1, "image_id": 0, "data": {}})], "channels"),
    ([image(1, 0, {"t": CBORTag(40, [[2, 2], CBORTag(65, b"\0" * 8)])})], "typed array 65"),
    ([image(1, 0, {"t": CBORTag(40, [[2, 2], CBORTag(69, b"\0" * 7)])})], "raw frame"),
    ([image(1, 0, {"t": CBORTag(40, [[2, 2], CBORTag(69, CBORTag(56500, ["zstd", 2, b""]))])})],
     "unsupported compression"),
    ([image(1, 0, {"t": b"\0" * 8})], "tag-40"),
    ([image(1, -1, {"t": array(np.zeros((2, 2), "uint8"))})], "non-negative"),
])
def test_malformed_messages(parts, match):
    with pytest.raises(MessageError, match=match):
        Stream2Decoder().decode(parts)


def test_truncated_compressed_image():
    a = np.random.default_rng(3).poisson(4, (64, 64)).astype("uint16")
    good = image(1, 0, {"t": array(a, "bslz4")})
    tag = array(a, "bslz4")
    algorithm, elem, data = tag.value[1].value.value
    cut = image(1, 0, {"t": CBORTag(40, [[64, 64], CBORTag(69, CBORTag(
        56500, [algorithm, elem, data[:-9]]))])})
    np.testing.assert_array_equal(Stream2Decoder().decode([good]).data, a)
    with pytest.raises(MessageError, match="truncated"):
        Stream2Decoder().decode([cut])
    with pytest.raises(MessageError, match="not CBOR"):
        Stream2Decoder().decode([good[: len(good) // 2]])


@pytest.mark.parametrize("compression", ["none", "bslz4", "lz4"])
def test_large_images_decode_without_copying_the_payload(compression):
    # messages >= 4 KiB take the lean path (payload cut out before cbor2, viewed in place)
    a = np.random.default_rng(4).poisson(40, (128, 96)).astype("uint32")
    raw = bytearray(image(2, 5, {"t1": array(a, compression), "t2": array(a + 1, compression)}))
    buf = memoryview(raw)
    ev = Stream2Decoder().decode([buf])
    assert (ev.series, ev.index, ev.nbytes) == (2, 5, len(raw))
    np.testing.assert_array_equal(ev.data, a)
    if compression == "none":  # a view of the message: what a received buffer holds
        assert np.shares_memory(ev.data, np.frombuffer(raw, np.uint8))
    second = Stream2Decoder(channel="t2").decode([buf])  # not the first payload: decoded whole
    np.testing.assert_array_equal(second.data, a + 1)


def test_large_messages_with_payload_lookalikes_decode_as_they_are():
    a = np.random.default_rng(5).poisson(40, (64, 64)).astype("uint16")
    # byte strings before the image that look like a typed array's head: one announcing
    # the frame's length (the cut would swallow the real payload), one its own length
    fake_long = b"\xd8\x45\x5a" + struct.pack(">I", a.nbytes) + b"\0" * 10
    fake_short = b"\xd8\x45\x58\x04abcd" * 600
    for fake in (fake_long, fake_short):
        m = msg({"type": "image", "series_id": 1, "image_id": 2, "user_data": fake,
                 "data": {"t": array(a)}})
        ev = Stream2Decoder().decode([m])
        assert (ev.series, ev.index) == (1, 2)
        np.testing.assert_array_equal(ev.data, a)
        assert ev.data.nbytes == a.nbytes
    # a large start message (pixel mask as a typed array): still a start, mask left out
    start = msg({"type": "start", "series_id": 4, "image_size_x": 64, "image_size_y": 64,
                 "pixel_mask": {"t": array(a)}, "number_of_images": 9})
    s = Stream2Decoder().decode([start])
    assert isinstance(s, SeriesStart)
    assert (s.series, s.frame_shape, s.n_frames) == (4, (64, 64), 9)
    # truncated: the announced payload runs past the message
    good = image(1, 0, {"t": array(a)})
    with pytest.raises(MessageError, match="not CBOR"):
        Stream2Decoder().decode([good[:-100]])
    # wrong size for its dims: the same error as for a small message
    bad = image(1, 0, {"t": CBORTag(40, [[64, 63], CBORTag(69, a.tobytes())])})
    with pytest.raises(MessageError, match="raw frame"):
        Stream2Decoder().decode([bad])


def test_start_arrays_of_the_analysed_channel_are_kept_out_of_the_header(caplog):
    rng = np.random.default_rng(8)
    masks = {c: rng.integers(0, 2, (4, 6)).astype("uint32") for c in ("t1", "t2")}
    flats = {c: rng.uniform(0.5, 1.5, (4, 6)).astype("float32") for c in ("t1", "t2")}
    lut = np.arange(100, dtype="uint32")
    start = msg({"type": "start", "series_id": 1, "channels": ["t1", "t2"],
                 "image_size_x": 6, "image_size_y": 4, "image_dtype": "uint16",
                 "number_of_images": 6,
                 "pixel_mask": {c: array(m, "bslz4") for c, m in masks.items()},
                 "flatfield": {c: array(f) for c, f in flats.items()},
                 "countrate_correction_lookup_table": CBORTag(70, lut.tobytes()),
                 "pixel_mask_enabled": True})
    for channel in ("t1", "t2"):
        s = Stream2Decoder(channel=None if channel == "t1" else channel).decode([start])
        assert set(s.arrays) == {"pixel_mask", "flatfield",
                                 "countrate_correction_lookup_table"}
        np.testing.assert_array_equal(s.arrays["pixel_mask"], masks[channel])
        np.testing.assert_array_equal(s.arrays["flatfield"], flats[channel])
        np.testing.assert_array_equal(s.arrays["countrate_correction_lookup_table"], lut)
        assert s.arrays["pixel_mask"].dtype == np.uint32
        assert s.arrays["flatfield"].dtype == np.float32
        assert s.arrays["pixel_mask"].flags.writeable  # a copy, not the message
        assert s.header["pixel_mask_enabled"] is True
        assert not {"pixel_mask", "flatfield", "countrate_correction_lookup_table"} & set(
            s.header)
    # a broken array is left out (with a warning); the header is still good
    bad = msg({"type": "start", "series_id": 2, "channels": ["t1"], "image_size_x": 6,
               "image_size_y": 4, "pixel_mask": {"t1": CBORTag(40, [[4, 6], CBORTag(
                   70, b"\0" * 7)])}, "flatfield": {"t9": array(flats["t1"])}})
    s = Stream2Decoder().decode([bad])
    assert (s.series, s.frame_shape, s.arrays) == (2, (4, 6), {})
    assert "pixel_mask of t1" in caplog.text
    assert "no array for channel 't1'" in caplog.text


def test_start_arrays_round_trip_through_the_encoder():
    mask = np.eye(64, 80, dtype="uint32")  # > 4 KiB: not the image fast path
    flat = np.full((64, 80), 1.25, "float32")
    lut = np.arange(10, dtype="uint32")
    arrays = {"pixel_mask": mask, "flatfield": flat, "countrate_correction_lookup_table": lut}
    enc, dec = Stream2Encoder(channels=["a", "b"]), Stream2Decoder(channel="b")
    s = dec.decode(enc.start(SeriesStart(1, (64, 80), np.dtype("uint16"), 4, (2, 2),
                                         "raster", {}, arrays)))
    assert s.arrays.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(s.arrays[key], value)
        assert s.arrays[key].dtype == value.dtype
    with pytest.raises(ValueError, match="header arrays"):
        enc.start(SeriesStart(1, (2, 2), np.dtype("uint16"), 4, (2, 2), "raster", {},
                              {"pixel_mask": np.zeros((2, 2), "complex64")}))
