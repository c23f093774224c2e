"""The native protocol: JSON header + frame bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from framescope.live import Frame, MessageError, SeriesEnd, SeriesStart
from framescope.live._native import NativeDecoder, NativeEncoder


def test_documented_messages_decode():
    a = np.arange(12, dtype="<u2").reshape(3, 4)
    dec = NativeDecoder()
    start = dec.decode([json.dumps({
        "htype": "framescope-start-1", "series": 5, "frame_shape": [3, 4], "dtype": "<u2",
        "n_frames": 6, "scan_shape": [2, 3], "scan_order": "snake",
        "metadata": {"voltage_kV": 300}}).encode()])
    assert start == SeriesStart(5, (3, 4), np.dtype("uint16"), 6, (2, 3), "snake",
                                {"voltage_kV": 300})
    ev = dec.decode([json.dumps({"htype": "framescope-frame-1", "series": 5, "frame": 4,
                                 "shape": [3, 4], "dtype": "<u2"}).encode(), a.tobytes()])
    assert isinstance(ev, Frame)
    assert ev.index == 4
    np.testing.assert_array_equal(ev.data, a)
    assert dec.decode([b'{"htype": "framescope-end-1", "series": 5}']) == SeriesEnd(5)


@pytest.mark.parametrize("compression", ["none", "lz4", "bslz4"])
def test_encoder_round_trip(compression):
    a = np.random.default_rng(0).poisson(2, (16, 9)).astype("uint32")
    enc, dec = NativeEncoder(compression), NativeDecoder()
    assert dec.decode(enc.start(SeriesStart(1, (16, 9), a.dtype, 4, (2, 2)))).n_frames == 4
    np.testing.assert_array_equal(dec.decode(enc.frame(1, 2, a)).data, a)


@pytest.mark.parametrize(("parts", "match"), [
    ([b"\xff"], "not JSON"),
    ([b'{"htype": "framescope-frame-1", "series": 1, "frame": 0, "shape": [2, 2], '
      b'"dtype": "<u2"}'], "2 parts"),
    ([b'{"htype": "framescope-frame-1", "series": 1, "frame": 0, "shape": [2, 2], '
      b'"dtype": ">u2"}', b"\0" * 8], "dtype"),
    ([b'{"htype": "framescope-frame-1", "series": 1, "frame": 0, "shape": [2, 2], '
      b'"dtype": "<u2", "compression": "gzip"}', b"\0" * 8], "compression"),
    ([b'{"htype": "framescope-start-1", "series": 1, "frame_shape": [2], "dtype": "<u2"}'],
     "frame shape"),
    ([b'{"htype": "other"}'], "unknown htype"),
])
def test_malformed_messages(parts, match):
    with pytest.raises(MessageError, match=match):
        NativeDecoder().decode(parts)


def test_header_arrays_travel_in_further_parts():
    mask = np.arange(12, dtype="uint32").reshape(3, 4)
    table = np.linspace(0, 1, 5)
    info = SeriesStart(1, (3, 4), np.dtype("uint16"), 4, (2, 2), "raster", {},
                       {"pixel_mask": mask, "table": table})
    parts = NativeEncoder().start(info)
    head = json.loads(parts[0])
    assert head["arrays"] == [{"name": "pixel_mask", "dtype": "<u4", "shape": [3, 4]},
                              {"name": "table", "dtype": "<f8", "shape": [5]}]
    start = NativeDecoder().decode(parts)
    assert start.arrays.keys() == {"pixel_mask", "table"}
    np.testing.assert_array_equal(start.arrays["pixel_mask"], mask)
    np.testing.assert_array_equal(start.arrays["table"], table)
    with pytest.raises(MessageError, match="one"):
        NativeDecoder().decode(parts[:2])
    with pytest.raises(MessageError, match="needs 48 B"):
        NativeDecoder().decode([parts[0], parts[1][:-4], parts[2]])
