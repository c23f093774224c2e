"""framescope's native stream: a JSON header part, then the frame bytes (see docs/live.md).

Messages are multipart; the first part is a UTF-8 JSON object whose ``htype`` is
``framescope-start-1``, ``framescope-frame-1`` or ``framescope-end-1``. A frame message has
a second part with the pixels, C order, little-endian, optionally LZ4- or bitshuffle+LZ4-
compressed (HDF5-filter framing, as in DECTRIS streams). A start message may list header
arrays (``"arrays": [{"name", "dtype", "shape"}]``, e.g. a pixel mask), each in a further
part, raw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from framescope.live import _codecs
from framescope.live._messages import (
    Event,
    Frame,
    MessageError,
    SeriesEnd,
    SeriesStart,
    check_frame_shape,
    count_field,
    json_loads,
    jsonable,
)

__all__ = ["NativeDecoder", "NativeEncoder"]

START, FRAME, END = "framescope-start-1", "framescope-frame-1", "framescope-end-1"
_CODEC = {"none": "raw", "lz4": "lz4-h5", "bslz4": "bslz4"}


def _int(msg: Any, key: str, what: str) -> int:
    return count_field(msg, key, f"native {what}")


class NativeDecoder:
    """Decode native framescope stream messages into events.

    Parameters
    ----------
    max_frame_bytes : int
        Larger announced frames are rejected as malformed.
    """

    name = "native"

    def __init__(self, *, max_frame_bytes: int = 256 * 2**20) -> None:
        self.max_frame_bytes = max_frame_bytes

    def decode(self, parts: Sequence[Any]) -> Event:
        """One multipart message → :class:`SeriesStart`, :class:`Frame` or :class:`SeriesEnd`."""
        if not parts:
            raise MessageError("native: empty message")
        try:
            head = json_loads(parts[0])
        except ValueError as exc:
            raise MessageError(f"native: first part is not JSON ({exc})") from exc
        if not isinstance(head, dict):
            raise MessageError("native: first part should be a JSON object")
        htype = head.get("htype")
        if htype == FRAME:
            if len(parts) != 2:
                raise MessageError(f"native frame: expected 2 parts, found {len(parts)}")
            shape, dtype = check_frame_shape(head.get("shape", ()), head.get("dtype"),
                                             self.max_frame_bytes, "native frame")
            codec = _CODEC.get(head.get("compression", "none"))
            if codec is None:
                raise MessageError(f"native frame: unknown compression "
                                   f"{head.get('compression')!r}; expected {list(_CODEC)}")
            data = _codecs.decode_frame(parts[1], codec, shape, dtype)
            return Frame(_int(head, "series", "frame"), _int(head, "frame", "frame"), data,
                         len(parts[0]) + len(parts[1]),
                         None if codec == "raw" else (codec, parts[1]))
        if htype == START:
            series = _int(head, "series", "start")
            shape, dtype = check_frame_shape(head.get("frame_shape", ()), head.get("dtype"),
                                             self.max_frame_bytes, "native start")
            n = head.get("n_frames")
            scan = head.get("scan_shape")
            try:
                scan = (int(scan[0]), int(scan[1])) if scan else None
            except (TypeError, ValueError, IndexError):
                raise MessageError(f"native start: bad scan_shape {scan!r}") from None
            order = head.get("scan_order")
            return SeriesStart(series, shape, dtype, n if isinstance(n, int) else None, scan,
                               order if order in ("raster", "snake") else None,
                               jsonable(head.get("metadata") or {}),
                               self._arrays(head.get("arrays") or [], parts[1:]))
        if htype == END:
            return SeriesEnd(_int(head, "series", "end"))
        raise MessageError(f"native: unknown htype {htype!r}")

    def _arrays(self, specs: Any, parts: Sequence[Any]) -> dict[str, np.ndarray]:
        """The start message's header arrays (copies: the message is reused)."""
        if not isinstance(specs, list) or len(specs) != len(parts):
            raise MessageError(f"native start: 'arrays' should list one {{name, dtype, "
                               f"shape}} per further part ({len(parts)}), found {specs!r}")
        arrays = {}
        for spec, part in zip(specs, parts, strict=True):
            try:
                name, dtype = str(spec["name"]), np.dtype(spec["dtype"])
                shape = tuple(int(v) for v in spec["shape"])
            except (TypeError, ValueError, KeyError):
                raise MessageError(f"native start: bad array spec {spec!r}") from None
            if dtype.kind not in "buif" or dtype.byteorder == ">" or min(shape, default=0) < 0:
                raise MessageError(f"native start: array {name!r}: unsupported {dtype} "
                                   f"{shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > self.max_frame_bytes or len(part) != nbytes:
                raise MessageError(f"native start: array {name!r}: {len(part)} B, {dtype} "
                                   f"{shape} needs {nbytes} B (at most {self.max_frame_bytes})")
            arrays[name] = np.frombuffer(part, dtype).reshape(shape).astype(
                dtype.newbyteorder("="))
        return arrays


class NativeEncoder:
    """Build native stream messages.

    Parameters
    ----------
    compression : {"none", "lz4", "bslz4"}
    """

    name = "native"

    def __init__(self, compression: str = "none") -> None:
        if compression not in _CODEC:
            raise ValueError(f"compression: expected one of {list(_CODEC)}, found "
                             f"{compression!r}")
        self.compression = compression

    def start(self, info: SeriesStart) -> list[Any]:
        arrays = []
        for a in info.arrays.values():
            a = np.asarray(a)
            arrays.append(np.ascontiguousarray(
                a, a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype))
        head = {"htype": START, "series": info.series, "frame_shape": list(info.frame_shape),
                "dtype": np.dtype(info.dtype).newbyteorder("<").str,
                "n_frames": info.n_frames,
                "scan_shape": list(info.scan_shape) if info.scan_shape else None,
                "scan_order": info.scan_order or "raster", "metadata": info.header}
        if arrays:
            head["arrays"] = [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)}
                              for k, a in zip(info.arrays, arrays, strict=True)]
        return [json.dumps(head).encode(), *(a.tobytes() for a in arrays)]

    def frame(self, series: int, index: int, frame: np.ndarray) -> list[Any]:
        head = {"htype": FRAME, "series": series, "frame": index, "shape": list(frame.shape),
                "dtype": frame.dtype.newbyteorder("<").str, "compression": self.compression}
        return [json.dumps(head).encode(), _codecs.encode(frame, _CODEC[self.compression])]

    def end(self, series: int) -> list[bytes]:
        return [json.dumps({"htype": END, "series": series}).encode()]
