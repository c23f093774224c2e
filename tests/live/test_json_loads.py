"""The message JSON parser (orjson with json's leniency) against Python's json."""

from __future__ import annotations

import json
import math

import pytest
import zmq

from framescope.live._messages import json_loads

CASES = [
    b'{"htype": "dimage-1.0", "series": 3, "frame": 17, "hash": ""}',
    b'{"htype":"dimage_d-1.0","shape":[256,256],"type":"uint16","encoding":"bs16-lz4<"}',
    b'{"x": 1e300, "y": -0.0, "s": "\\u00e9\\n", "l": [true, false, null], "d": {}}',
    b'[1, 2, 3]',
]


@pytest.mark.parametrize("raw", CASES)
@pytest.mark.parametrize("wrap", [bytes, memoryview, zmq.Frame])
def test_json_loads_equals_json(raw, wrap):
    assert json_loads(wrap(raw)) == json.loads(raw)


def test_integers_past_64_bits_come_back_as_numbers_of_that_value():
    got = json_loads(b'{"big": 123456789012345678901234567890}')["big"]
    assert got == pytest.approx(123456789012345678901234567890, rel=1e-15)


def test_nan_and_infinity_are_read_as_json_reads_them():
    got = json_loads(b'{"a": NaN, "b": Infinity, "c": -Infinity}')
    assert math.isnan(got["a"])
    assert got["b"] == math.inf
    assert got["c"] == -math.inf


@pytest.mark.parametrize("bad", [b"{not json", b"\xff\xfe{}", b""])
def test_bad_input_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"."):
        json.loads(bad)
    with pytest.raises(ValueError, match=r"."):
        json_loads(bad)
