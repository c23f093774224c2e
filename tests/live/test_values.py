"""values-json / values-cbor: round trips over a real socket, and malformed input."""

from __future__ import annotations

import json

import cbor2
import numpy as np
import pytest
import zmq

from framescope.live._messages import MessageError, SeriesEnd, SeriesStart
from framescope.live._values import (
    VALUE_PROTOCOLS,
    Values,
    ValuesDecoder,
    make_values_decoder,
    make_values_encoder,
)

FIELDS = {
    "i0": {"dtype": "float64", "shape": [], "unit": "counts"},
    "gate": {"dtype": "uint32", "shape": [], "unit": ""},
    "pos": {"dtype": "float32", "shape": [3], "unit": "um"},
    "spectrum": {"dtype": "uint16", "shape": [40], "unit": "counts"},
}


def _frames(rng: np.random.Generator, n: int) -> list[dict]:
    return [{"i0": float(rng.normal(1e5, 300.0)), "gate": int(rng.integers(0, 2**32)),
             "pos": rng.normal(size=3).astype(np.float32),
             "spectrum": rng.integers(0, 2**16, 40, dtype=np.uint16)} for _ in range(n)]


@pytest.mark.parametrize("protocol", VALUE_PROTOCOLS)
def test_round_trip_over_socket_is_bit_exact(protocol):
    rng = np.random.default_rng(1)
    sent = _frames(rng, 5)
    enc = make_values_encoder(protocol, inline_max=8)  # pos inline, spectrum a raw part
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        push.bind("tcp://127.0.0.1:0")
        pull.connect(push.getsockopt_string(zmq.LAST_ENDPOINT))
        push.send_multipart(enc.start("counters", 7, FIELDS, n_frames=5))
        for k, values in enumerate(sent):
            push.send_multipart(enc.frame(7, k, values))
        push.send_multipart(enc.end(7, 5))
        dec = make_values_decoder(protocol)
        msgs = [pull.recv_multipart(copy=False) for _ in range(7)]
    finally:
        push.close(linger=0)
        pull.close(linger=0)
    events = [dec.decode(m) for m in msgs]
    start = events[0]
    assert isinstance(start, SeriesStart)
    assert (start.series, start.n_frames, start.header["stream"]) == (7, 5, "counters")
    assert start.header["fields"] == FIELDS
    assert len(msgs[1]) == 2  # head + the spectrum's raw part
    for k, (ev, values) in enumerate(zip(events[1:-1], sent, strict=True)):
        assert isinstance(ev, Values)
        assert (ev.series, ev.index) == (7, k)
        assert ev.nbytes == sum(len(p.bytes) for p in msgs[1 + k])
        assert ev.values["i0"] == values["i0"]  # float64 through JSON text: exact
        assert type(ev.values["gate"]) is int
        assert ev.values["gate"] == values["gate"]
        for name in ("pos", "spectrum"):
            assert ev.values[name].dtype == values[name].dtype
            assert ev.values[name].tobytes() == values[name].tobytes()
    assert events[-1] == SeriesEnd(7)


def test_bool_fields_round_trip_inline():
    enc = make_values_encoder("values-json")
    dec = make_values_decoder("values-json")
    dec.decode(enc.start("s", 1, {"ok": {"dtype": "bool", "shape": [3], "unit": ""}}))
    v = dec.decode(enc.frame(1, 0, {"ok": np.array([True, False, True])}))
    np.testing.assert_array_equal(v.values["ok"], [True, False, True])
    assert v.values["ok"].dtype == np.bool_
    with pytest.raises(MessageError, match=r"value 'ok': 2 is outside the range of bool"):
        dec.decode([b'{"htype":"values-1","series":1,"frame":1,"values":{"ok":[1,2,0]}}'])


def test_arrays_are_owned_copies():
    enc = make_values_encoder("values-cbor", inline_max=0)
    parts = enc.frame(1, 0, {"s": np.arange(4, dtype=">i4")})  # big-endian in, LE on wire
    buf = bytearray(parts[1])
    v = ValuesDecoder("cbor").decode([parts[0], buf])
    buf[:] = b"\0" * len(buf)
    np.testing.assert_array_equal(v.values["s"], [0, 1, 2, 3])
    assert v.values["s"].dtype == np.dtype("int32")


def test_inline_lists_without_a_start_are_int64_or_float64():
    dec = ValuesDecoder("json")
    head = {"htype": "values-1", "series": 3, "frame": 2, "values": {"a": [1, 2], "b": [1, 2.5]}}
    v = dec.decode([json.dumps(head).encode()])
    assert v.values["a"].dtype == np.int64
    assert v.values["b"].dtype == np.float64
    np.testing.assert_array_equal(v.values["b"], [1.0, 2.5])


def test_float_fields_accept_nan_but_int_fields_do_not():
    dec = ValuesDecoder("json", stream="i0")
    dec.decode(make_values_encoder("values-json").start("i0", 1, FIELDS))
    v = dec.decode([b'{"htype":"values-1","series":1,"frame":0,"values":{"i0":NaN}}'])
    assert np.isnan(v.values["i0"])
    with pytest.raises(MessageError, match=r"i0 frame value 'gate': expected an int for dtype "
                                           r"uint32, found non-finite nan"):
        dec.decode([b'{"htype":"values-1","series":1,"frame":0,"values":{"gate":NaN}}'])


def _head(**kw):
    return {"htype": "values-1", "series": 1, "frame": 0, "values": {"i0": 1.0}, **kw}


def _start(**kw):
    return {"htype": "values-start-1", "series": 1, "stream": "s", "n_frames": 3,
            "fields": {"i0": {"dtype": "float64", "shape": [], "unit": "counts"}}, **kw}


@pytest.mark.parametrize(("msg", "extra", "match"), [
    ({"htype": "values-2"}, [], r"unknown htype 'values-2'"),
    (_head(frame=None), [], r"'frame' should be a non-negative int, found None"),
    (_head(frame=-1), [], r"'frame' should be a non-negative int, found -1"),
    (_head(series="1"), [], r"'series' should be a non-negative int, found '1'"),
    (_head(values=[1.0]), [], r"'values' should be a map"),
    (_head(values={"i0": "x"}), [], r"value 'i0': expected a number or a list of numbers, "
                                    r"found str"),
    (_head(values={"i0": [1, "x"]}), [], r"expected a list of numbers"),
    (_head(arrays=[{"name": "s", "dtype": "<u2", "shape": [4]}]), [],
     r"expected 2 parts \(1 \+ 1 listed arrays\), found 1"),
    (_head(arrays=[{"name": "s", "dtype": "<u2", "shape": [4]}]), [b"\0" * 6],
     r"array 's': part should hold 8 B for shape \(4,\) uint16, found 6 B"),
    (_head(arrays=[{"name": "s", "dtype": ">u2", "shape": [3]}]), [b"\0" * 6],
     r"array 's': 'dtype' should be a little-endian"),
    (_head(arrays=[{"name": "s", "dtype": "<u2", "shape": [-3]}]), [b""],
     r"'shape' should be a list of non-negative ints, found \[-3\]"),
    (_head(arrays=[{"name": "i0", "dtype": "<f8", "shape": []}]), [b"\0" * 8],
     r"value 'i0' sent twice"),
    (_start(stream=3), [], r"start: 'stream' should be a string, found 3"),
    (_start(n_frames=-2), [], r"'n_frames' should be a non-negative int, found -2"),
    (_start(fields={"i0": {"dtype": "str"}}), [], r"field 'i0': 'dtype' should be"),
    (_start(fields=[]), [], r"'fields' should be a map"),
    ({"htype": "values-end-1", "series": 1}, [], r"end: 'frames' should be a non-negative int"),
])
@pytest.mark.parametrize("flavour", ["json", "cbor"])
def test_malformed_messages_name_the_field(flavour, msg, extra, match):
    dumps = cbor2.dumps if flavour == "cbor" else (lambda m: json.dumps(m).encode())
    with pytest.raises(MessageError, match=match):
        ValuesDecoder(flavour).decode([dumps(msg), *extra])


def test_frames_are_checked_against_the_declared_fields():
    dec = ValuesDecoder("cbor", stream="mot")
    dec.decode([cbor2.dumps(_start(fields=FIELDS))])
    with pytest.raises(MessageError, match=r"value 'z' is not a declared field; expected one "
                                           r"of \['gate', 'i0', 'pos', 'spectrum'\]"):
        dec.decode([cbor2.dumps(_head(values={"z": 1.0}))])
    with pytest.raises(MessageError, match=r"value 'pos': shape should be \(3,\), found \(2,\)"):
        dec.decode([cbor2.dumps(_head(values={"pos": [1.0, 2.0]}))])
    with pytest.raises(MessageError, match=r"value 'gate': expected an int for dtype uint32, "
                                           r"found float 1.5"):
        dec.decode([cbor2.dumps(_head(values={"gate": 1.5}))])
    with pytest.raises(MessageError, match=r"-1 is outside the range of uint32"):
        dec.decode([cbor2.dumps(_head(values={"gate": -1}))])
    v = dec.decode([cbor2.dumps(_head(values={"i0": 2, "pos": [1, 2, 3]}))])
    assert type(v.values["i0"]) is float
    assert v.values["pos"].dtype == np.float32


def test_garbage_oversized_and_unknown_protocol():
    with pytest.raises(MessageError, match=r"values-json message: part 0 is not json"):
        ValuesDecoder("json").decode([b"\xff{"])
    with pytest.raises(MessageError, match=r"part 0 should be a map, found list"):
        ValuesDecoder("cbor").decode([cbor2.dumps([1])])
    with pytest.raises(MessageError, match=r"oversized: 20 B, expected at most 10 B"):
        ValuesDecoder("json", max_bytes=10).decode([b"{}", b"\0" * 18])
    with pytest.raises(MessageError, match=r"empty message"):
        ValuesDecoder("json").decode([])
    with pytest.raises(ValueError, match=r"unknown values protocol 'native'"):
        make_values_decoder("native")
    assert MessageError("values-json frame: x").reason == "values-json frame"
