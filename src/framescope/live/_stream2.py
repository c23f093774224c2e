"""DECTRIS stream2: one CBOR map per ZeroMQ message (``start``, ``image``, ``end``).

Images hold ``data = {channel: tag 40 [[height, width], typed array]}``; the typed array
(tag 64/69/70/85: uint8, uint16 LE, uint32 LE, float32 LE) wraps a byte string or the
DECTRIS compression tag 56500 ``[algorithm, element size, bytes]`` (``bslz4``, ``lz4``,
both in HDF5-filter framing). cbor2 leaves these tags as :class:`cbor2.CBORTag`, which is
read here, so no ``tag_hook`` (whose signature changed in cbor2 6) is needed.

The start message's ``pixel_mask`` and ``flatfield`` map channels to such tag-40 arrays
(of any little-endian typed-array type), ``countrate_correction_lookup_table`` is a bare
(1-D) typed array. They become :attr:`SeriesStart.arrays` (of the analysed channel), not
header fields.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import cbor2
import numpy as np

from framescope.live import _codecs
from framescope.live._extras import STREAM2_START, pack, unpack
from framescope.live._messages import (
    Event,
    Frame,
    MessageError,
    SeriesEnd,
    SeriesStart,
    check_frame_shape,
    count_field,
    jsonable,
    scan_info,
)

__all__ = ["Stream2Decoder", "Stream2Encoder"]

log = logging.getLogger(__name__)

SELF_DESCRIBE = 55799
MD_ARRAY = 40
COMPRESSED = 56500
TYPED = {64: "uint8", 69: "<u2", 70: "<u4", 85: "<f4"}
_TAG_OF = {"uint8": 64, "uint16": 69, "uint32": 70, "float32": 85}
# header arrays: the RFC 8746 typed arrays of bytes and little-endian numbers
HEADER_TYPED = {64: "u1", 68: "u1", 72: "i1", 69: "<u2", 70: "<u4", 71: "<u8", 77: "<i2",
                78: "<i4", 79: "<i8", 84: "<f2", 85: "<f4", 86: "<f8"}
_HEADER_TAG_OF = {np.dtype(v).str: k for k, v in HEADER_TYPED.items() if k not in (68,)}
# start message arrays: per channel (tag-40 arrays) or one typed array
PER_CHANNEL = ("pixel_mask", "flatfield")
LOOKUP = "countrate_correction_lookup_table"
_CODEC = {"bslz4": "bslz4", "lz4": "lz4-h5"}
# Where an image's payload starts: a typed-array tag, optionally the compression tag 56500
# with its algorithm and element size, then a byte string's head (its length follows)
_PAYLOAD = re.compile(rb"\xd8[\x40\x45\x46\x55](?:\xd9\xdc\xb4\x83(?:\x63lz4|\x65bslz4)"
                      rb"[\x00-\x17])?([\x58-\x5b])")
_LENGTH_BYTES = {0x58: 1, 0x59: 2, 0x5A: 4, 0x5B: 8}
_LEAN_MIN = 4096  # smaller messages are decoded as they are


def _int(msg: Any, key: str, what: str) -> int:
    return count_field(msg, key, f"stream2 {what}")


class Stream2Decoder:
    """Decode stream2 messages into events.

    Parameters
    ----------
    channel : str, optional
        Channel to analyse (e.g. ``"threshold_1"``); default the first one of the series'
        ``channels`` (else of each image).
    max_frame_bytes : int
        Larger announced frames are rejected as malformed.
    """

    name = "dectris-stream2"

    def __init__(self, *, channel: str | None = None, max_frame_bytes: int = 256 * 2**20,
                 ) -> None:
        self.channel = channel
        self.max_frame_bytes = max_frame_bytes
        self._channels: dict[int, str] = {}  # series → channel picked from its start
        # stands in for a payload left in the message buffer (see _loads_lean); random, so
        # no sender can put it in a message
        self._nonce = os.urandom(16)
        self._marker = cbor2.dumps(self._nonce)
        self._payload: memoryview | None = None

    def _loads_lean(self, buf: memoryview) -> Any:
        """The message with its (first) image payload replaced by the nonce, or None.

        cbor2 copies every byte string: for a frame that is a copy of the whole payload
        into fresh memory, per message. Instead the payload's byte string is cut out, the
        rest decoded, and the payload viewed in the buffer (``self._payload``). Sound only
        if the nonce comes back as the image's payload (the nonce is nowhere else, so the
        parse met the cut exactly where the payload was): ``_array`` checks that; any
        other outcome (another event, an error) is decided by decoding the message whole.
        """
        m = _PAYLOAD.search(buf)
        if m is None:
            return None
        head = m.end()
        begin = head + _LENGTH_BYTES[buf[m.start(1)]]
        end = begin + int.from_bytes(buf[head:begin], "big")
        if end > len(buf):
            return None
        try:
            msg = cbor2.loads(b"".join((buf[: m.start(1)], self._marker, buf[end:])))
        except Exception:  # the whole message says what is wrong
            return None
        inner = msg.value if isinstance(msg, cbor2.CBORTag) else msg
        if not hasattr(inner, "get") or inner.get("type") != "image":
            return None  # a start message's arrays are decoded whole (and copied anyway)
        self._payload = buf[begin:end]
        return msg

    def decode(self, parts: Sequence[Any]) -> Event:
        """One single-part message → :class:`SeriesStart`, :class:`Frame` or :class:`SeriesEnd`."""
        if len(parts) != 1:
            raise MessageError(f"stream2: expected a single-part message, found {len(parts)} "
                               f"parts")
        buf = memoryview(parts[0]).cast("B")
        msg = self._loads_lean(buf) if len(buf) >= _LEAN_MIN else None
        if msg is not None:
            try:
                event = self._event(msg, len(buf))
            except MessageError:
                event = None
            if event is not None and self._payload is None:  # the payload was the cut
                return event
            # any other outcome: the message as it is decides
            self._payload = None
        try:
            msg = cbor2.loads(buf)
        except Exception as exc:  # cbor2 raises several types on bad input
            raise MessageError(f"stream2: not CBOR ({type(exc).__name__}: {exc})") from exc
        return self._event(msg, len(buf))

    def _event(self, msg: Any, nbytes: int) -> Event:
        if isinstance(msg, cbor2.CBORTag) and msg.tag == SELF_DESCRIBE:
            msg = msg.value
        if not hasattr(msg, "get"):
            raise MessageError(f"stream2: expected a CBOR map, found {type(msg).__name__}")
        kind = msg.get("type")
        if kind == "image":
            return self._image(msg, nbytes)
        if kind == "start":
            return self._start(msg)
        if kind == "end":
            series = _int(msg, "series_id", "end")
            self._channels.pop(series, None)
            return SeriesEnd(series)
        raise MessageError(f"stream2: unknown message type {kind!r}")

    def _start(self, msg: Any) -> SeriesStart:
        series = _int(msg, "series_id", "start")
        channels = msg.get("channels") or []
        if self.channel is not None:
            if channels and self.channel not in channels:
                raise MessageError(f"stream2 start: channel {self.channel!r} not among "
                                   f"{list(channels)}")
            self._channels[series] = self.channel
        elif channels:
            self._channels[series] = channels[0]
        shape = dtype = None
        if "image_size_x" in msg and "image_size_y" in msg:
            # without image_dtype (not every firmware sends it) the first image tells
            dt = msg.get("image_dtype")
            shape, dtype = check_frame_shape((msg["image_size_y"], msg["image_size_x"]),
                                             dt or "uint16", self.max_frame_bytes,
                                             "stream2 start")
            if dt is None:
                dtype = None
        n = msg.get("number_of_images")
        scan, order = scan_info(msg.get("user_data"))
        header = jsonable({k: v for k, v in msg.items() if k not in (*PER_CHANNEL, LOOKUP)})
        # framescope's extras as every protocol has them (module _extras)
        unpack(header, msg.get("user_data"))
        return SeriesStart(series, shape, dtype, n if isinstance(n, int) else None, scan,
                           order, header, self._header_arrays(msg, series))

    def _header_arrays(self, msg: Any, series: int) -> dict[str, np.ndarray]:
        """The start message's arrays (those of the analysed channel), decoded and copied.

        An array that cannot be decoded is left out with a warning: the frames are still
        good, and the corrections stage says what it lacks.
        """
        arrays: dict[str, np.ndarray] = {}
        for key in (*PER_CHANNEL, LOOKUP):
            item = msg.get(key)
            if item is None:
                continue
            try:
                array = self._header_array(key, item, series)
            except MessageError as exc:
                log.warning("series %d: %s; left out", series, exc)
                continue
            if array.size:  # an empty array stands for none (framescope senders)
                arrays[key] = array
        return arrays

    def _header_array(self, key: str, item: Any, series: int) -> np.ndarray:
        what = f"stream2 start {key}"
        if key in PER_CHANNEL:
            if not hasattr(item, "get") or not item:
                raise MessageError(f"{what}: expected a map of channel → array")
            channel = self._channels.get(series) or next(iter(item))
            if channel not in item:
                raise MessageError(f"{what}: no array for channel {channel!r}, found "
                                   f"{list(item)}")
            what, item = f"{what} of {channel}", item[channel]
        return header_array(item, self.max_frame_bytes, what)

    def _image(self, msg: Any, nbytes: int) -> Frame:
        series = _int(msg, "series_id", "image")
        index = _int(msg, "image_id", "image")
        data = msg.get("data")
        if not hasattr(data, "get") or not data:
            raise MessageError("stream2 image: 'data' should map channels to arrays")
        channel = self._channels.get(series, self.channel)
        if channel is None:
            channel = next(iter(data))
        if channel not in data:
            raise MessageError(f"stream2 image: channel {channel!r} missing, found "
                               f"{list(data)}")
        array, codec, payload = self._array(data[channel])
        return Frame(series, index, array, nbytes,
                     None if codec == "raw" else (codec, payload))

    def _array(self, item: Any) -> tuple[np.ndarray, str, Any]:
        """An image's array, its codec and its payload as received."""
        if not (isinstance(item, cbor2.CBORTag) and item.tag == MD_ARRAY):
            raise MessageError("stream2 image: channel data should be a tag-40 array")
        try:
            dims, typed = item.value
        except (TypeError, ValueError):
            raise MessageError("stream2 image: tag 40 should hold [dims, typed array]")\
                from None
        if not isinstance(typed, cbor2.CBORTag) or typed.tag not in TYPED:
            got = typed.tag if isinstance(typed, cbor2.CBORTag) else type(typed).__name__
            raise MessageError(f"stream2 image: unsupported typed array {got}; expected tags "
                               f"{sorted(TYPED)}")
        if not isinstance(dims, list | tuple) or len(dims) != 2:
            raise MessageError(f"stream2 image: expected 2 dims [height, width], found {dims!r}")
        shape, dtype = check_frame_shape(dims, TYPED[typed.tag], self.max_frame_bytes,
                                         "stream2 image")
        payload = typed.value
        codec = "raw"
        if isinstance(payload, cbor2.CBORTag) and payload.tag == COMPRESSED:
            try:
                algorithm, elem, payload = payload.value
            except (TypeError, ValueError):
                raise MessageError("stream2 image: tag 56500 should hold [algorithm, "
                                   "element size, bytes]") from None
            codec = _CODEC.get(algorithm)
            if codec is None:
                raise MessageError(f"stream2 image: unsupported compression {algorithm!r}; "
                                   f"expected one of {list(_CODEC)}")
            if codec == "bslz4" and elem != dtype.itemsize:
                raise MessageError(f"stream2 image: bslz4 element size {elem} does not fit "
                                   f"{dtype.name} pixels")
        if self._payload is not None:
            if not isinstance(payload, bytes) or payload != self._nonce:
                raise MessageError("stream2 image: payload not where it was cut out")
            payload, self._payload = self._payload, None
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise MessageError(f"stream2 image: array payload is {type(payload).__name__}, "
                               f"not bytes")
        return _codecs.decode_frame(payload, codec, shape, dtype), codec, payload


def header_array(item: Any, max_bytes: int, what: str) -> np.ndarray:
    """A start message's array, a copy in native byte order.

    ``item`` is a tag-40 ``[dims, typed array]`` or a bare typed array (1-D); the typed
    array holds bytes or the compression tag 56500.

    Raises
    ------
    MessageError
        Not such an array, an unsupported type or compression, a size that does not fit
        its dims, larger than ``max_bytes``, or corrupt compressed data.
    """
    dims = None
    if isinstance(item, cbor2.CBORTag) and item.tag == MD_ARRAY:
        try:
            dims, item = item.value
        except (TypeError, ValueError):
            raise MessageError(f"{what}: tag 40 should hold [dims, typed array]") from None
        if not isinstance(dims, list | tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise MessageError(f"{what}: dims should be non-negative ints, found {dims!r}")
    if not isinstance(item, cbor2.CBORTag) or item.tag not in HEADER_TYPED:
        got = item.tag if isinstance(item, cbor2.CBORTag) else type(item).__name__
        raise MessageError(f"{what}: expected a little-endian typed array (tags "
                           f"{sorted(HEADER_TYPED)}), found {got}")
    dtype = np.dtype(HEADER_TYPED[item.tag])
    payload, codec = item.value, "raw"
    if isinstance(payload, cbor2.CBORTag) and payload.tag == COMPRESSED:
        try:
            algorithm, _, payload = payload.value
        except (TypeError, ValueError):
            raise MessageError(f"{what}: tag 56500 should hold [algorithm, element size, "
                               f"bytes]") from None
        codec = _CODEC.get(algorithm)
        if codec is None:
            raise MessageError(f"{what}: unsupported compression {algorithm!r}; expected "
                               f"one of {list(_CODEC)}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MessageError(f"{what}: payload is {type(payload).__name__}, not bytes")
    if dims is None:  # 1-D: the length from the payload (or its compression header)
        if codec == "raw":
            nbytes = len(payload)
        elif len(payload) >= 12:
            nbytes = int.from_bytes(payload[:8], "big")
        else:
            raise MessageError(f"{what}: compressed payload of {len(payload)} B, shorter "
                               f"than its 12-byte header")
        if nbytes % dtype.itemsize:
            raise MessageError(f"{what}: {nbytes} B is not a whole number of {dtype.name}")
        dims = (nbytes // dtype.itemsize,)
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > max_bytes:
        raise MessageError(f"{what}: {nbytes} B, beyond the limit of {max_bytes} B")
    if nbytes == 0:
        return np.zeros(dims, dtype.newbyteorder("="))
    try:
        array = _codecs.decode(payload, codec, tuple(dims), dtype)
    except MessageError as exc:  # (says "frame")
        raise MessageError(f"{what}: {exc}") from exc
    return array.astype(dtype.newbyteorder("="))  # a copy, not a view of the message


def encode_header_array(array: np.ndarray, *, dims: bool = True) -> cbor2.CBORTag:
    """``array`` as a tag-40 array (``dims``) or a bare typed array, little-endian, raw."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    le = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    tag = _HEADER_TAG_OF.get(le.str)
    if tag is None:
        raise ValueError(f"stream2 header arrays are {sorted(set(HEADER_TYPED.values()))}, "
                         f"not {array.dtype}")
    typed = cbor2.CBORTag(tag, np.ascontiguousarray(array, le).tobytes())
    return cbor2.CBORTag(MD_ARRAY, [list(array.shape), typed]) if dims else typed


def _now() -> cbor2.CBORTag:
    """Now as a stream2 DateTime: tag 0 with an RFC 3339 text string."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return cbor2.CBORTag(0, now.replace("+00:00", "Z"))


def _rational(seconds: float) -> list[int]:
    f = Fraction(seconds).limit_denominator(10**9)
    return [f.numerator, f.denominator]


class Stream2Encoder:
    """Build stream2 messages as a DECTRIS detector would (for the simulator).

    Parameters
    ----------
    compression : {"none", "lz4", "bslz4"}
    channels : sequence of str
        Channel names; every image carries the frame in each (several thresholds).
    """

    name = "dectris-stream2"

    def __init__(self, compression: str = "none", channels: Sequence[str] = ("threshold_1",),
                 ) -> None:
        if compression not in ("none", "lz4", "bslz4"):
            raise ValueError(f"compression: expected none, lz4 or bslz4, found {compression!r}")
        self.compression = compression
        self.channels = list(channels)
        self._date = _now()  # DateTime of the series (arm_date, series_date)

    @staticmethod
    def _dump(msg: dict[str, Any]) -> bytes:
        return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE, msg))

    def start(self, info: SeriesStart) -> list[bytes]:
        h, w = info.frame_shape
        fields, user = pack(info, STREAM2_START)
        self._date = _now()
        ours = {"series_id": info.series, "series_unique_id": f"framescope-{info.series}",
                "arm_date": self._date, "channels": self.channels, "image_size_x": w,
                "image_size_y": h, "image_dtype": np.dtype(info.dtype).name,
                "number_of_images": info.n_frames, "user_data": user}
        for key, array in info.arrays.items():
            if key in PER_CHANNEL:  # the same map for every channel sent
                ours[key] = dict.fromkeys(self.channels, encode_header_array(array))
            elif key == LOOKUP:
                ours[key] = encode_header_array(np.ravel(array), dims=False)
            else:
                log.info("series %d: header array %r has no place in stream2; not sent",
                         info.series, key)
        extra = {k: v for k, v in fields.items()
                 if k not in ours and k not in ("type", *PER_CHANNEL, LOOKUP)}
        # "type" must be the first key; header fields (e.g. from a recording) never
        # override what this series is; fields stream2 has not went to user_data (pack)
        return [self._dump({"type": "start", **extra, **ours})]

    def frame(self, series: int, index: int, frame: np.ndarray) -> list[bytes]:
        tag = _TAG_OF.get(frame.dtype.name)
        if tag is None:
            raise ValueError(f"stream2 carries {sorted(_TAG_OF)} pixels, not {frame.dtype}")
        if self.compression == "none":
            payload: Any = np.ascontiguousarray(frame, frame.dtype.newbyteorder("<")).tobytes()
        else:
            codec = "bslz4" if self.compression == "bslz4" else "lz4-h5"
            elem = frame.dtype.itemsize if codec == "bslz4" else 0
            payload = cbor2.CBORTag(COMPRESSED, [self.compression, elem,
                                                 _codecs.encode(frame, codec)])
        array = cbor2.CBORTag(MD_ARRAY, [list(frame.shape), cbor2.CBORTag(tag, payload)])
        zero = _rational(0.0)
        msg = {"type": "image", "series_id": series, "series_unique_id": f"framescope-{series}",
               "image_id": index, "series_date": self._date, "start_time": zero,
               "stop_time": zero,
               "real_time": zero, "user_data": None,
               "data": {name: array for name in self.channels}}
        return [self._dump(msg)]

    def end(self, series: int) -> list[bytes]:
        return [self._dump({"type": "end", "series_id": series,
                            "series_unique_id": f"framescope-{series}"})]
