"""DECTRIS SIMPLON stream v1 ("legacy"): multipart JSON + binary messages.

A series is ``dheader-1.0`` (+ detector config JSON for ``header_detail`` basic/all, + three
flat-field/pixel-mask/count-rate (header, blob) pairs for all, + optional appendix), then per
frame ``dimage-1.0``, ``dimage_d-1.0``, the blob and ``dconfig-1.0``, then
``dseries_end-1.0``. ``dimage_d`` shapes, like those of the header arrays, are
``[width, height]``. The header arrays become :attr:`SeriesStart.arrays` ``flatfield``,
``pixel_mask`` and ``countrate_table``, not header fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from framescope.live import _codecs
from framescope.live._dark import PART, framescope_part
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

__all__ = ["Stream1Decoder", "Stream1Encoder"]

log = logging.getLogger(__name__)

_DECODE = {"<": ("raw", 0), "lz4<": ("lz4", 0), "bs8-lz4<": ("bslz4", 1),
           "bs16-lz4<": ("bslz4", 2), "bs32-lz4<": ("bslz4", 4)}
# header_detail "all": the (header, blob) pairs, in the order a detector sends them
ARRAYS = {"dflatfield-1.0": ("flatfield", "float32"), "dpixelmask-1.0": ("pixel_mask", "uint32"),
          "dcountrate_table-1.0": ("countrate_table", "float32")}


def _json(part: Any, what: str) -> dict[str, Any]:
    try:
        value = json.loads(bytes(part))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"stream1 {what}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise MessageError(f"stream1 {what}: expected a JSON object, found {type(value).__name__}")
    return value


def _bytes(part: Any) -> Any:
    """The bytes of a message part (zmq.Frame, bytes or array) for hashing, uncopied."""
    buffer = getattr(part, "buffer", None)
    return memoryview(buffer if buffer is not None else part).cast("B")


def _int(msg: Any, key: str, what: str) -> int:
    return count_field(msg, key, f"stream1 {what}")


def _frames_per_series(config: dict[str, Any]) -> int | None:
    nimages, ntrigger = config.get("nimages"), config.get("ntrigger", 1)
    if not isinstance(nimages, int) or not isinstance(ntrigger, int):
        return None
    # external/internal enable: one frame per trigger
    return ntrigger if config.get("trigger_mode") in ("inte", "exte") else nimages * ntrigger


def _header_array(head: Any, blob: Any, max_bytes: int) -> tuple[str, np.ndarray]:
    """(name, array copy) of one ``header_detail: all`` pair; MessageError if unusable."""
    info = _json(head, "header array")
    htype = info.get("htype")
    if htype not in ARRAYS:
        raise MessageError(f"stream1 dheader: unknown header array {htype!r}; expected one "
                           f"of {list(ARRAYS)}")
    name, default = ARRAYS[htype]
    shape = info.get("shape")
    try:
        w, h = (int(v) for v in shape)
        dtype = np.dtype(info.get("type", default))
    except (TypeError, ValueError):
        raise MessageError(f"stream1 {htype}: bad shape {shape!r} or type "
                           f"{info.get('type')!r}") from None
    if dtype.kind not in "uif" or dtype.byteorder == ">" or w < 0 or h < 0:
        raise MessageError(f"stream1 {htype}: unsupported {dtype} or shape {shape!r}")
    dtype = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    nbytes = w * h * dtype.itemsize
    if nbytes > max_bytes:
        raise MessageError(f"stream1 {htype}: {nbytes} B, beyond the limit of {max_bytes} B")
    data = _bytes(blob)
    if len(data) != nbytes:
        raise MessageError(f"stream1 {htype}: blob of {len(data)} B, its shape {shape!r} and "
                           f"type {dtype.name} need {nbytes} B")
    # [width, height] like the images; a copy, owned, not a view of the message
    return name, np.frombuffer(data, dtype).reshape(h, w).astype(dtype.newbyteorder("="))


def _header_arrays(parts: Sequence[Any], series: int, max_bytes: int,
                   ) -> dict[str, np.ndarray]:
    """The flat field, pixel mask and count-rate table of a ``header_detail: all`` header.

    An array that cannot be used is left out with a warning (the frames are still good);
    an empty one stands for none (framescope senders).
    """
    arrays = {}
    for head, blob in zip(parts[0::2], parts[1::2], strict=True):
        try:
            name, array = _header_array(head, blob, max_bytes)
        except MessageError as exc:
            log.warning("series %d: %s; left out", series, exc)
            continue
        if array.size:
            arrays[name] = array
    return arrays


class Stream1Decoder:
    """Decode SIMPLON stream v1 messages (lists of message parts) into events.

    Parameters
    ----------
    max_frame_bytes : int
        Larger announced frames are rejected as malformed.
    verify_hash : bool
        Check each blob against the MD5 its ``dimage-1.0`` part carries (a blob that does not
        match is malformed; an empty hash is not checked). Off by default: MD5 runs at
        about 0.5 GB/s per core, a few thousand 256x256 frames per second.
    """

    name = "dectris-stream1"

    def __init__(self, *, max_frame_bytes: int = 256 * 2**20,
                 verify_hash: bool = False) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.verify_hash = verify_hash

    def decode(self, parts: Sequence[Any]) -> Event:
        """One multipart message → :class:`SeriesStart`, :class:`Frame` or :class:`SeriesEnd`."""
        if not parts:
            raise MessageError("stream1: empty message")
        head = _json(parts[0], "first part")
        htype = head.get("htype", "")
        if htype.startswith("dimage-"):
            return self._image(head, parts)
        if htype.startswith("dheader-"):
            return self._header(head, parts)
        if htype.startswith("dseries_end-"):
            return SeriesEnd(_int(head, "series", htype))
        raise MessageError(f"stream1: unknown htype {htype!r}")

    def _header(self, head: dict[str, Any], parts: Sequence[Any]) -> SeriesStart:
        series = _int(head, "series", "dheader")
        detail = head.get("header_detail", "basic")
        arrays: dict[str, np.ndarray] = {}
        if detail == "none":
            return SeriesStart(series, header={"header_detail": "none"})
        if len(parts) < 2:
            raise MessageError(f"stream1 dheader ({detail}): detector config part missing")
        config = _json(parts[1], "detector config")
        rest = list(parts[2:])
        if detail == "all":
            if len(rest) < 6:
                raise MessageError(f"stream1 dheader (all): expected 3 (header, blob) pairs "
                                   f"after the config, found {len(rest)} parts")
            arrays = _header_arrays(rest[:6], series, self.max_frame_bytes)
            rest = rest[6:]
        scan, order = None, None
        ours = None
        for part in rest:  # optional appendix: framescope senders put the scan there
            try:
                appendix = json.loads(bytes(part))
            except (ValueError, UnicodeDecodeError):
                continue
            scan, order = scan_info(appendix)
            ours = framescope_part(appendix) or ours
        shape = dtype = None
        if "x_pixels_in_detector" in config and "y_pixels_in_detector" in config:
            depth = config.get("bit_depth_image", 16)
            dtype = "uint8" if depth <= 8 else "uint16" if depth <= 16 else "uint32"
            shape, dtype = check_frame_shape(
                (config["y_pixels_in_detector"], config["x_pixels_in_detector"]), dtype,
                self.max_frame_bytes, "stream1 dheader")
        header = {"header_detail": detail, **jsonable(config)}
        if ours is not None:  # framescope's part (the dark flag) as every protocol has it
            header[PART] = jsonable(ours)
        return SeriesStart(series, shape, dtype, _frames_per_series(config), scan, order,
                           header, arrays)

    def _image(self, head: dict[str, Any], parts: Sequence[Any]) -> Frame:
        if len(parts) < 4:
            raise MessageError(f"stream1 dimage: expected >= 4 parts, found {len(parts)}")
        series = _int(head, "series", "dimage")
        index = _int(head, "frame", "dimage")
        desc = _json(parts[1], "dimage_d")
        blob = parts[2]
        try:
            codec, elem = _DECODE[desc.get("encoding")]
        except KeyError:
            raise MessageError(f"stream1 dimage_d: unsupported encoding "
                               f"{desc.get('encoding')!r}; expected one of {list(_DECODE)}")\
                from None
        shape = desc.get("shape")
        if not isinstance(shape, list) or len(shape) != 2:
            raise MessageError(f"stream1 dimage_d: shape should be [width, height], "
                               f"found {shape!r}")
        frame_shape, dtype = check_frame_shape(shape[::-1], desc.get("type"),
                                               self.max_frame_bytes, "stream1 dimage_d")
        if elem and elem != dtype.itemsize:
            raise MessageError(f"stream1 dimage_d: encoding {desc['encoding']} does not fit "
                               f"{dtype.name} pixels")
        size = desc.get("size", len(blob))
        if size != len(blob):
            raise MessageError(f"stream1 dimage: blob of {len(blob)} B, dimage_d says {size} B")
        expected = head.get("hash") if self.verify_hash else None
        if expected:
            found = hashlib.md5(_bytes(blob), usedforsecurity=False).hexdigest()
            if found != str(expected).lower():
                raise MessageError(f"stream1 dimage {series}/{index}: blob MD5 {found} differs "
                                   f"from the header's hash {expected}")
        data = _codecs.decode_frame(blob, codec, frame_shape, dtype)
        return Frame(series, index, data, sum(len(p) for p in parts),
                     None if codec == "raw" else (codec, blob))


class Stream1Encoder:
    """Build SIMPLON stream v1 messages as a DECTRIS detector would (for the simulator).

    Parameters
    ----------
    compression : {"none", "lz4", "bslz4"}
    """

    name = "dectris-stream1"

    def __init__(self, compression: str = "none", md5: bool = False) -> None:
        if compression not in ("none", "lz4", "bslz4"):
            raise ValueError(f"compression: expected none, lz4 or bslz4, found {compression!r}")
        self.compression = compression
        self.md5 = md5  # MD5 of each blob in dimage-1.0 (costs ~0.2 ms per 128 KiB)

    def start(self, info: SeriesStart) -> list[Any]:
        """The header; ``header_detail: "all"`` with the header arrays when it has any."""
        h, w = info.frame_shape
        extra = {k: v for k, v in info.header.items() if k not in ("header_detail", PART)}
        config = {  # header fields (e.g. from a recording) never override the series' own
            **extra, "x_pixels_in_detector": w, "y_pixels_in_detector": h,
            "nimages": info.n_frames, "ntrigger": 1, "trigger_mode": "ints",
            "bit_depth_image": 8 * np.dtype(info.dtype).itemsize,
        }
        appendix = {PART: {**(framescope_part(info.header) or {}),
                           "scan_shape": list(info.scan_shape or ()),
                           "scan_order": info.scan_order or "raster"}}
        detail = "all" if info.arrays else "basic"
        head = {"htype": "dheader-1.0", "series": info.series, "header_detail": detail}
        pairs: list[Any] = []
        if info.arrays:
            unsent = set(info.arrays) - {name for name, _ in ARRAYS.values()}
            if unsent:
                log.info("series %d: header arrays %s have no place in stream v1; not sent",
                         info.series, sorted(unsent))
            for htype, (name, default) in ARRAYS.items():
                # a detector sends all three: one not given goes empty
                a = np.atleast_2d(info.arrays.get(name, np.zeros((0, 0), default)))
                if a.ndim != 2:
                    raise ValueError(f"stream v1 header arrays are 2-D, {name} is {a.ndim}-D")
                if a.dtype == bool:
                    a = a.astype(np.uint8)
                le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
                pairs += [json.dumps({"htype": htype, "shape": [a.shape[1], a.shape[0]],
                                      "type": a.dtype.name}).encode(),
                          np.ascontiguousarray(a, le).tobytes()]
        return [json.dumps(head).encode(), json.dumps(config).encode(), *pairs,
                json.dumps(appendix).encode()]

    def frame(self, series: int, index: int, frame: np.ndarray) -> list[Any]:
        dtype = frame.dtype
        if self.compression == "none":
            encoding, blob = "<", _codecs.encode(frame, "raw")
        elif self.compression == "lz4":
            encoding, blob = "lz4<", _codecs.encode(frame, "lz4")
        else:
            encoding, blob = f"bs{8 * dtype.itemsize}-lz4<", _codecs.encode(frame, "bslz4")
        size = blob.nbytes if isinstance(blob, np.ndarray) else len(blob)
        h, w = frame.shape
        return [
            json.dumps({"htype": "dimage-1.0", "series": series, "frame": index,
                        "hash": hashlib.md5(_bytes(blob), usedforsecurity=False).hexdigest()
                        if self.md5 else ""}).encode(),
            json.dumps({"htype": "dimage_d-1.0", "shape": [w, h], "type": dtype.name,
                        "encoding": encoding, "size": size}).encode(),
            blob,
            json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                        "real_time": 0}).encode(),
        ]

    def end(self, series: int) -> list[bytes]:
        return [json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()]
