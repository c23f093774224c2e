"""SIMPLON stream v1 messages built by hand (json + lz4/bitshuffle) decode to the frames."""

from __future__ import annotations

import json
import struct

import bitshuffle
import lz4.block
import numpy as np
import pytest

from framescope.live import Frame, MessageError, SeriesEnd, SeriesStart
from framescope.live._messages import HeaderPart
from framescope.live._stream1 import Stream1Decoder, Stream1Encoder


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def image(series, index, a, encoding, blob, size=None) -> list[bytes]:
    h, w = a.shape
    return [j({"htype": "dimage-1.0", "series": series, "frame": index, "hash": ""}),
            j({"htype": "dimage_d-1.0", "shape": [w, h], "type": a.dtype.name,
               "encoding": encoding, "size": len(blob) if size is None else size}),
            blob, j({"htype": "dconfig-1.0", "start_time": 1, "stop_time": 2, "real_time": 1})]


def bs(a, header=True) -> bytes:
    payload = bitshuffle.compress_lz4(a, 0).tobytes()
    block = max(8, 8192 // a.itemsize // 8 * 8)
    return (struct.pack(">QI", a.nbytes, block * a.itemsize) if header else b"") + payload


@pytest.mark.parametrize(("dtype", "encoding", "encode"), [
    ("uint16", "<", lambda a: a.tobytes()),
    ("uint32", "lz4<", lambda a: lz4.block.compress(a.tobytes(), store_size=False)),
    ("uint8", "bs8-lz4<", bs),
    ("uint16", "bs16-lz4<", bs),
    ("uint32", "bs32-lz4<", bs),
    ("uint16", "bs16-lz4<", lambda a: bs(a, header=False)),
])
def test_images_decode(dtype, encoding, encode):
    a = np.random.default_rng(1).poisson(3, (24, 40)).astype(dtype)  # height 24, width 40
    ev = Stream1Decoder().decode(image(3, 17, a, encoding, encode(a)))
    assert isinstance(ev, Frame)
    assert (ev.series, ev.index) == (3, 17)
    np.testing.assert_array_equal(ev.data, a)


def test_headers_and_end():
    config = {"x_pixels_in_detector": 40, "y_pixels_in_detector": 24, "nimages": 5,
              "ntrigger": 2, "trigger_mode": "exts", "bit_depth_image": 16}
    dec = Stream1Decoder()
    basic = dec.decode([j({"htype": "dheader-1.0", "series": 4, "header_detail": "basic"}),
                        j(config)])
    assert isinstance(basic, SeriesStart)
    assert (basic.series, basic.frame_shape, basic.dtype, basic.n_frames) == (
        4, (24, 40), np.dtype("uint16"), 10)
    assert basic.scan_shape is None
    rng = np.random.default_rng(2)
    flat = rng.uniform(0.9, 1.1, (24, 40)).astype("float32")  # (height, width)
    mask = rng.integers(0, 3, (24, 40)).astype("uint32")
    table = np.arange(6, dtype="float32").reshape(2, 3)
    pairs = [j({"htype": "dflatfield-1.0", "shape": [40, 24], "type": "float32"}),
             flat.tobytes(),
             j({"htype": "dpixelmask-1.0", "shape": [40, 24], "type": "uint32"}),
             mask.tobytes(),
             j({"htype": "dcountrate_table-1.0", "shape": [3, 2], "type": "float32"}),
             table.tobytes()]
    appendix = j({"framescope": {"scan_shape": [2, 5], "scan_order": "snake"}})
    full = dec.decode([j({"htype": "dheader-1.0", "series": 4, "header_detail": "all"}),
                       j({**config, "trigger_mode": "inte"}), *pairs, appendix])
    assert (full.n_frames, full.scan_shape, full.scan_order) == (2, (2, 5), "snake")
    assert full.arrays.keys() == {"flatfield", "pixel_mask", "countrate_table"}
    for key, value in (("flatfield", flat), ("pixel_mask", mask), ("countrate_table", table)):
        np.testing.assert_array_equal(full.arrays[key], value)
        assert full.arrays[key].dtype == value.dtype
    assert basic.arrays == {}
    none = dec.decode([j({"htype": "dheader-1.0", "series": 9, "header_detail": "none"})])
    assert none.frame_shape is None
    assert dec.decode([j({"htype": "dseries_end-1.0", "series": 4})]) == SeriesEnd(4)
    # the config and a header array as messages of their own, without a dheader before
    alone = dec.decode([j(config)])
    assert isinstance(alone, HeaderPart)
    assert (alone.start.frame_shape, alone.start.dtype, alone.start.n_frames) == (
        (24, 40), np.dtype("uint16"), 10)
    assert alone.start.header == config
    pair = dec.decode(pairs[2:4])
    assert isinstance(pair, HeaderPart)
    np.testing.assert_array_equal(pair.start.arrays["pixel_mask"], mask)


def test_encoder_round_trip():
    a = np.arange(12, dtype="uint16").reshape(3, 4)
    enc, dec = Stream1Encoder("bslz4"), Stream1Decoder()
    start = dec.decode(enc.start(SeriesStart(2, (3, 4), a.dtype, 6, (2, 3), "raster")))
    assert (start.frame_shape, start.scan_shape, start.n_frames) == ((3, 4), (2, 3), 6)
    np.testing.assert_array_equal(dec.decode(enc.frame(2, 5, a)).data, a)


@pytest.mark.parametrize(("parts", "match"), [
    ([], "empty"),
    ([b"{not json"], "not JSON"),
    ([j([1, 2])], "JSON object"),
    ([j({"htype": "dwhat-1.0"})], "unknown htype"),
    ([j({"htype": "dimage-1.0", "series": 1, "frame": 0})], ">= 4 parts"),
    ([j({"htype": "dheader-1.0", "series": 1, "header_detail": "some"})], "header_detail"),
    ([j({"beamline": "x"})], "without htype"),
    ([j({"htype": "dseries_end-1.0", "series": -1})], "non-negative"),
])
def test_malformed_messages(parts, match):
    with pytest.raises(MessageError, match=match):
        Stream1Decoder().decode(parts)


def test_malformed_images():
    a = np.zeros((4, 4), "uint16")
    dec = Stream1Decoder(max_frame_bytes=1024)
    with pytest.raises(MessageError, match="unsupported encoding"):
        dec.decode(image(1, 0, a, ">", a.tobytes()))
    with pytest.raises(MessageError, match="dimage_d says"):
        dec.decode(image(1, 0, a, "<", a.tobytes(), size=7))
    with pytest.raises(MessageError, match="raw frame"):
        dec.decode(image(1, 0, a, "<", a.tobytes()[:-2]))
    with pytest.raises(MessageError, match="does not fit"):
        dec.decode(image(1, 0, a, "bs32-lz4<", bs(a)))
    big = np.zeros((64, 64), "uint16")
    with pytest.raises(MessageError, match="outside"):
        dec.decode(image(1, 0, big, "<", big.tobytes()))


def test_md5_is_checked_when_asked():
    import hashlib

    from framescope.live import MessageError
    from framescope.live._stream1 import Stream1Decoder, Stream1Encoder

    frame = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    def wire(parts):  # what a PULL socket receives: bytes
        return [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]

    parts = wire(Stream1Encoder(md5=True).frame(3, 5, frame))
    head = json.loads(parts[0])
    assert head["hash"] == hashlib.md5(frame.tobytes()).hexdigest()  # independent reference
    got = Stream1Decoder(verify_hash=True).decode(parts)
    np.testing.assert_array_equal(got.data, frame)
    bad = bytearray(parts[2])
    bad[7] ^= 1  # one flipped bit in the blob
    with pytest.raises(MessageError, match="MD5"):
        Stream1Decoder(verify_hash=True).decode([parts[0], parts[1], bytes(bad), parts[3]])
    # not asked, or no hash sent (the detector's default): not checked
    Stream1Decoder().decode([parts[0], parts[1], bytes(bad), parts[3]])
    plain = wire(Stream1Encoder(md5=False).frame(3, 5, frame))
    assert json.loads(plain[0])["hash"] == ""
    Stream1Decoder(verify_hash=True).decode(plain)
    # the encoder's default is the documented MD5
    assert json.loads(wire(Stream1Encoder().frame(3, 5, frame))[0])["hash"] == head["hash"]


def test_verify_hash_is_for_stream1_only():
    from framescope.live import make_decoder

    with pytest.raises(ValueError, match="dectris-stream1 only"):
        make_decoder("dectris-stream2", verify_hash=True)


def test_header_arrays_that_do_not_fit_are_left_out(caplog):
    config = {"x_pixels_in_detector": 4, "y_pixels_in_detector": 3, "nimages": 1}
    pairs = [j({"htype": "dflatfield-1.0", "shape": [4, 3], "type": "float32"}), b"\0" * 8,
             j({"htype": "dpixelmask-1.0", "shape": [4, 3], "type": "uint32"}),
             np.ones((3, 4), "uint32").tobytes(),
             j({"htype": "dcountrate_table-1.0", "shape": [0, 0], "type": "float32"}), b""]
    s = Stream1Decoder().decode([j({"htype": "dheader-1.0", "series": 1,
                                    "header_detail": "all"}), j(config), *pairs])
    assert s.frame_shape == (3, 4)
    assert list(s.arrays) == ["pixel_mask"]  # the flat field is short, the table empty
    assert "dflatfield-1.0: blob of 8 B" in caplog.text


def test_encoder_sends_header_arrays_with_header_detail_all():
    flat = np.linspace(0.5, 1.5, 12, dtype="float32").reshape(3, 4)
    mask = np.zeros((3, 4), "uint32")
    mask[1, 2] = 1
    enc, dec = Stream1Encoder(), Stream1Decoder()
    info = SeriesStart(2, (3, 4), np.dtype("uint16"), 6, (2, 3), "raster", {},
                       {"flatfield": flat, "pixel_mask": mask})
    parts = enc.start(info)
    assert json.loads(parts[0])["header_detail"] == "all"
    start = dec.decode(parts)
    assert (start.frame_shape, start.scan_shape) == ((3, 4), (2, 3))
    assert start.arrays.keys() == {"flatfield", "pixel_mask"}  # the table went empty
    np.testing.assert_array_equal(start.arrays["flatfield"], flat)
    np.testing.assert_array_equal(start.arrays["pixel_mask"], mask)
