"""What a stream decoder produces: series start, frame and series end events.

Every protocol decoder turns one ZeroMQ message into one of these, or raises
:class:`MessageError`; the receiver never sees protocol details beyond them.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from framescope.errors import FramescopeError

try:  # ~10x faster than json on the small objects of every frame message
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = ["Frame", "HeaderPart", "MessageError", "ScanOrder", "SeriesEnd", "SeriesStart"]

ScanOrder = Literal["raster", "snake"]


class MessageError(FramescopeError, ValueError):
    """A stream message is malformed, truncated, oversized or of an unknown kind.

    ``reason`` is a short, stable key the receiver counts skipped messages by
    (:attr:`Status.malformed_by <framescope.live.Status>`); by default the text before the
    message's first colon (e.g. ``"stream1 dimage_d"``), digits replaced by ``N``.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else reason_key(message)


def reason_key(message: str) -> str:
    """A stable counting key for a message: its text before the first colon, no digits."""
    head = message.split(":", 1)[0]
    return re.sub(r"\d+", "N", head)[:48].strip() or "malformed"


@dataclass(frozen=True, slots=True)
class SeriesStart:
    """A series header, as decoded (fields the protocol does not carry are None).

    Also the description a sender encodes (:mod:`framescope.live._simulate`).

    Parameters
    ----------
    series : int
        Series id from the protocol.
    frame_shape : (int, int) or None
        Detector ``(height, width)``.
    dtype : numpy dtype or None
    n_frames : int or None
        Frames the detector will send.
    scan_shape : (int, int) or None
        ``(scan_y, scan_x)`` if the sender says (framescope simulators do, in user data).
    scan_order : {"raster", "snake"} or None
    header : dict
        JSON-able header fields for attrs and recordings (large arrays left out).
    arrays : dict of str to numpy.ndarray
        Large header arrays, decoded, in native byte order and owned (not views of a
        message): ``pixel_mask`` and ``flatfield`` (stream v1 ``header_detail: "all"``;
        stream2: those of the analysed channel), ``countrate_table`` (stream v1),
        ``countrate_correction_lookup_table`` (stream2), any name (native). Kept out of
        ``header`` (and so out of JSON attrs) for the corrections stage; recordings store
        them as datasets. Not compared by ``==``.
    """

    series: int
    frame_shape: tuple[int, int] | None = None
    dtype: np.dtype | None = None
    n_frames: int | None = None
    scan_shape: tuple[int, int] | None = None
    scan_order: ScanOrder | None = None
    header: dict[str, Any] = field(default_factory=dict)
    # compare=False: == on dicts of arrays would raise (ambiguous truth value)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False)


@dataclass(slots=True)
class Frame:
    """One detector frame: ``data`` may view the message buffer, so copy what you keep.

    ``wire`` is the compressed payload as it came, ``(codec, bytes)``, when the decoder
    had one (``bslz4``, ``lz4-h5``): a recorder with the same compression writes it as
    the HDF5 chunk instead of compressing again. It views the message too.
    """

    series: int
    index: int
    data: np.ndarray
    nbytes: int = 0
    wire: tuple[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SeriesEnd:
    """End of a series."""

    series: int


@dataclass(frozen=True, slots=True)
class HeaderPart:
    """Part of a series header that came as a message of its own and names no series.

    E.g. a stream v1 detector config sent as the message after its ``dheader-1.0``, when
    that message went to another receiver: PUSH deals each message to one PULL socket, so
    with several receivers the two parts of such a header part ways. ``start`` holds what
    the part says (its ``series`` is meaningless, -1); a receiver keeps it for the next
    series it opens without a complete header.
    """

    start: SeriesStart


Event = SeriesStart | Frame | SeriesEnd | HeaderPart


def json_loads(part: Any) -> Any:
    """A message part (bytes, memoryview, zmq.Frame) parsed as JSON.

    orjson when installed; what it refuses (NaN/Infinity literals, which Python's json
    accepts) is parsed again by json, so the two agree on what is valid. Integers past 64
    bits come back as floats (orjson), not as Python ints.

    Raises
    ------
    ValueError
        Not JSON (``json.JSONDecodeError``), or not UTF-8 (``UnicodeDecodeError``).
    """
    data = part if type(part) is bytes else getattr(part, "buffer", part)
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(bytes(data))


_CHECKED: dict[tuple[Any, ...], tuple[tuple[int, int], np.dtype]] = {}


def check_frame_shape(shape: Any, dtype: Any, max_bytes: int, what: str,
                      ) -> tuple[tuple[int, int], np.dtype]:
    """Validate a (height, width) and pixel dtype announced by a message.

    Every frame message announces the same few shapes: answers are remembered (validating
    costs several µs per frame otherwise).
    """
    try:
        key = (*shape, str(dtype), max_bytes)
        checked = _CHECKED.get(key)
    except TypeError:  # not a sequence of hashables: the check says what is wrong
        return _check_frame_shape(shape, dtype, max_bytes, what)
    if checked is None:
        checked = _check_frame_shape(shape, dtype, max_bytes, what)
        if len(_CHECKED) < 256:
            _CHECKED[key] = checked
    return checked


def _check_frame_shape(shape: Any, dtype: Any, max_bytes: int, what: str,
                       ) -> tuple[tuple[int, int], np.dtype]:
    try:
        h, w = (int(v) for v in shape)
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"{what}: bad frame shape {shape!r} or dtype {dtype!r}") from exc
    if dt.kind not in "uif" or dt.byteorder == ">":
        raise MessageError(f"{what}: unsupported pixel dtype {dt}")
    if h < 1 or w < 1 or h * w * dt.itemsize > max_bytes:
        raise MessageError(f"{what}: frame {h}x{w} {dt.name} outside 1 B..{max_bytes} B")
    return (h, w), dt.newbyteorder("=")


def count_field(msg: Any, key: str, where: str) -> int:
    """``msg[key]`` as a non-negative int (series and frame numbers), else MessageError.

    ``where`` names the protocol and message in the error, e.g. ``"stream2 image"``.
    """
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageError(f"{where}: {key!r} should be a non-negative int, found {value!r}")
    return value


def scan_info(user: Any) -> tuple[tuple[int, int] | None, ScanOrder | None]:
    """Scan shape and order from a ``{"scan_shape": [ny, nx], "scan_order": ...}`` mapping."""
    if not isinstance(user, Mapping):  # cbor2 6 decodes maps as frozendict
        return None, None
    info = user.get("framescope", user)
    if not isinstance(info, Mapping):
        return None, None
    shape = info.get("scan_shape")
    order = info.get("scan_order")
    try:
        ny, nx = (int(v) for v in shape)
        scan = (ny, nx) if ny > 0 and nx > 0 else None
    except (TypeError, ValueError):
        scan = None
    return scan, order if order in ("raster", "snake") else None


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of header values: scalars, strings, short lists, nested dicts."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, datetime.datetime | datetime.date):  # stream2 DateTime (tag 0)
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray) or depth > 4:
        return None
    if isinstance(value, Mapping):
        out = {str(k): jsonable(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, list | tuple) and len(value) <= 64:
        items = [jsonable(v, depth + 1) for v in value]
        return None if any(v is None for v in items) else items
    return None
