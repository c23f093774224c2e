"""DECTRIS SIMPLON stream v1 ("legacy"): multipart JSON + binary messages.

A series is a header message: ``dheader-1.0``; for ``header_detail`` basic and all the
detector config JSON; for all three (header, blob) pairs of the flat field, pixel mask and
count-rate table; then an optional appendix (framescope senders put their extras there, see
:mod:`framescope.live._extras`). Then per frame ``dimage-1.0`` (with the blob's MD5 as
``hash``), ``dimage_d-1.0``, the blob, ``dconfig-1.0`` and an optional image appendix; then
``dseries_end-1.0``. ``dimage_d`` shapes, like those of the header arrays, are
``[width, height]``. The header arrays become :attr:`SeriesStart.arrays` ``flatfield``,
``pixel_mask`` and ``countrate_table``, not header fields.

The decoder also takes a header whose parts come as messages of their own (replay tools,
LiberTEM-live's simulator: the dheader, then the config as the next message): the dheader
alone gives a header without frame shape, the message that completes it the whole one.
A config (or header array) message that comes without its dheader, as it does at one of
several receivers sharing the stream, is a :class:`HeaderPart` for the receiver to keep.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from framescope.live import _codecs
from framescope.live._dark import PART
from framescope.live._extras import STREAM1_CONFIG, pack, unpack
from framescope.live._messages import (
    Event,
    Frame,
    HeaderPart,
    MessageError,
    ScanOrder,
    SeriesEnd,
    SeriesStart,
    check_frame_shape,
    count_field,
    json_loads,
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
        value = json_loads(part)
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise MessageError(f"stream1 {what}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise MessageError(f"stream1 {what}: expected a JSON object, found {type(value).__name__}")
    return value


def _bytes(part: Any) -> Any:
    """The bytes of a message part (zmq.Frame, bytes or array) for hashing, uncopied."""
    buffer = getattr(part, "buffer", None)
    return memoryview(buffer if buffer is not None else part).cast("B")


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


def _object(part: Any) -> dict[str, Any] | None:
    """A part as a JSON object, or None (a blob, other JSON, not UTF-8)."""
    try:
        value = json_loads(part)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _appendix(header: dict[str, Any], parts: Sequence[Any],
              ) -> tuple[tuple[int, int] | None, ScanOrder | None]:
    """Scan shape and order from a header appendix (framescope's object), which is lifted
    into ``header``; another appendix (any user string or JSON) is left alone."""
    scan = order = None
    for part in parts:
        appendix = _object(part)
        if appendix is not None and PART in appendix:
            scan, order = scan_info(appendix)
            unpack(header, appendix)
    return scan, order


_PARTS = {"none": 1, "basic": 2, "all": 8}  # documented parts of a header, appendix aside
# fields by which a JSON object without htype is known as a detector config (SIMPLON's
# config parameter names)
_CONFIG_KEYS = ("x_pixels_in_detector", "y_pixels_in_detector", "nimages", "ntrigger",
                "bit_depth_image", "detector_description")


def _is_config(obj: dict[str, Any]) -> bool:
    return any(k in obj for k in _CONFIG_KEYS)


class Stream1Decoder:
    """Decode SIMPLON stream v1 messages (lists of message parts) into events.

    ``decode`` returns None for a message that continues a header sent part by part
    (see the module docstring) without completing it yet.

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
        self._partial: list[Any] | None = None  # parts of a header sent part by part
        self._need = 0
        self.last_desc: Any = None  # the last dimage's dimage_d part

    @property
    def receives_compiled(self) -> bool:
        """Whether the compiled receive loop (``_fastrecv``) may take image messages: not
        when each blob's MD5 is to be checked."""
        return not self.verify_hash

    def decode(self, parts: Sequence[Any]) -> Event | None:
        """One multipart message → :class:`SeriesStart`, :class:`Frame`, :class:`SeriesEnd`,
        :class:`HeaderPart` (a config or header array without its dheader) or None (a
        header part, the header not complete yet)."""
        if not parts:
            raise MessageError("stream1: empty message", "empty message")
        head = _object(parts[0])
        htype = None if head is None else head.get("htype")
        if isinstance(htype, str):
            if htype.startswith("dimage-"):
                if self._partial is not None:
                    self._incomplete(htype)
                return self._image(head, parts)
            if htype.startswith("dheader-"):
                if self._partial is not None:
                    self._incomplete(htype)
                return self._header(head, parts)
            if htype.startswith("dseries_end-"):
                if self._partial is not None:
                    self._incomplete(htype)
                return SeriesEnd(count_field(head, "series", f"stream1 {htype}"))
        if self._partial is not None and (htype is None or htype in ARRAYS):
            return self._continue(parts)
        if head is None:
            raise MessageError("stream1: the first part is not JSON, or not a JSON object",
                               "stream1 not JSON")
        if htype is None and _is_config(head):
            # the config sent as a message of its own, its dheader dealt to another
            # receiver (or missed): kept by the receiver for the next series it opens
            return HeaderPart(self._config_start(-1, {}, head, {}))
        if htype in ARRAYS and len(parts) >= 2:
            return HeaderPart(SeriesStart(-1, arrays=_header_arrays(
                parts[:2], -1, self.max_frame_bytes)))
        if htype is None:
            raise MessageError("stream1: a JSON part without htype that is no detector "
                               "config (an appendix?) and no dheader-1.0 before it",
                               "header part without its dheader")
        raise MessageError(f"stream1: unknown htype {htype!r}; expected dheader-1.0, "
                           f"dimage-1.0 or dseries_end-1.0", "unknown htype")

    def _incomplete(self, htype: str) -> None:
        got, self._partial = len(self._partial), None
        log.warning("stream1: a %s message came before the header was complete (%d of %d "
                    "parts); its series goes on without the rest (where several receivers "
                    "share the stream, another one got it)", htype, got, self._need)

    def _header(self, head: dict[str, Any], parts: Sequence[Any]) -> SeriesStart:
        series = count_field(head, "series", "stream1 dheader")
        detail = head.get("header_detail", "basic")
        need = _PARTS.get(detail)
        if need is None:
            raise MessageError(f"stream1 dheader: header_detail {detail!r}; expected one of "
                               f"{list(_PARTS)}")
        if len(parts) >= need:
            return self._start(head, parts, need)
        # the rest comes as the next message(s): a header without frame shape until then
        self._partial, self._need = [bytes(p) for p in parts], need
        return SeriesStart(series, header={"header_detail": detail})

    def _continue(self, parts: Sequence[Any]) -> SeriesStart | None:
        self._partial.extend(bytes(p) for p in parts)
        if len(self._partial) < self._need:
            return None
        parts, self._partial = self._partial, None
        return self._start(json_loads(parts[0]), parts, self._need)

    def _start(self, head: dict[str, Any], parts: Sequence[Any], need: int) -> SeriesStart:
        series = count_field(head, "series", "stream1 dheader")
        detail = head.get("header_detail", "basic")
        header: dict[str, Any] = {"header_detail": detail}
        scan, order = _appendix(header, parts[need:])
        if detail == "none":
            return SeriesStart(series, scan_shape=scan, scan_order=order, header=header)
        config = _json(parts[1], "detector config")
        arrays: dict[str, np.ndarray] = {}
        if detail == "all":
            arrays = _header_arrays(parts[2:8], series, self.max_frame_bytes)
        return self._config_start(series, header, config, arrays, scan, order)

    def _config_start(self, series: int, header: dict[str, Any], config: dict[str, Any],
                      arrays: dict[str, np.ndarray], scan: tuple[int, int] | None = None,
                      order: ScanOrder | None = None) -> SeriesStart:
        """The series start a detector config describes (with ``header``'s fields)."""
        shape = dtype = None
        if "x_pixels_in_detector" in config and "y_pixels_in_detector" in config:
            depth = config.get("bit_depth_image", 16)
            dtype = "uint8" if depth <= 8 else "uint16" if depth <= 16 else "uint32"
            shape, dtype = check_frame_shape(
                (config["y_pixels_in_detector"], config["x_pixels_in_detector"]), dtype,
                self.max_frame_bytes, "stream1 dheader")
        # the config's own fields win over those an appendix brought
        header = {**header, **jsonable(config)}
        return SeriesStart(series, shape, dtype, _frames_per_series(config), scan, order,
                           header, arrays)

    def _image(self, head: dict[str, Any], parts: Sequence[Any]) -> Frame:
        if len(parts) < 4:
            raise MessageError(f"stream1 dimage: expected >= 4 parts, found {len(parts)}")
        series = count_field(head, "series", "stream1 dimage")
        index = count_field(head, "frame", "stream1 dimage")
        desc = _json(parts[1], "dimage_d")
        self.last_desc = parts[1]  # (the compiled receive loop takes frames that match it)
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
                                   f"from the header's hash {expected}", "hash mismatch")
        data = _codecs.decode_frame(blob, codec, frame_shape, dtype)
        return Frame(series, index, data, sum(map(len, parts)),
                     None if codec == "raw" else (codec, blob))


class Stream1Encoder:
    """Build SIMPLON stream v1 messages as a DECTRIS detector sends them (the simulator).

    Parameters
    ----------
    compression : {"none", "lz4", "bslz4"}
    md5 : bool
        ``hash`` of ``dimage-1.0`` is the blob's MD5 (as a detector sends it; ~0.2 ms per
        128 KiB blob, ~15 µs per compressed 256 x 256 frame). False sends an empty hash,
        which saves that time but which some receivers (LiberTEM-live) reject.
    header_detail : {None, "none", "basic", "all"}
        The header's parts, as the DCU's ``header_detail`` setting: ``none`` the dheader
        only, ``basic`` with the detector config, ``all`` with the flat field, pixel mask and
        count-rate table too (empty ones for those the series has not). Default: ``all``
        when the series has header arrays, else ``basic``. Header arrays are sent with
        ``all`` only.
    appendix : bool
        Send framescope's extras (scan shape and order, dark flag, header fields that are
        no detector config parameter, e.g. a calibration) as the header appendix, which
        the documentation allows (``header_appendix``). LiberTEM-live 0.3 rejects any
        appendix: False sends none (as a DCU with no ``header_appendix`` set); a receiver
        then needs the scan shape.
    image_appendix : JSON-able, optional
        Sent as every image message's fifth part (the DCU's ``image_appendix``).
    trigger_mode : {"ints", "exts", "inte", "exte"}
        The config's ``trigger_mode``: ``ints``/``exts`` announce the series as
        ``nimages`` = frames, ``ntrigger`` = 1; ``inte``/``exte`` (one image per trigger,
        as a scan generator triggers a 4D-STEM detector) as ``ntrigger`` = frames,
        ``nimages`` = 1.
    """

    name = "dectris-stream1"

    def __init__(self, compression: str = "none", md5: bool = True,
                 header_detail: str | None = None, appendix: bool = True,
                 image_appendix: Any = None, trigger_mode: str = "ints") -> None:
        if compression not in ("none", "lz4", "bslz4"):
            raise ValueError(f"compression: expected none, lz4 or bslz4, found {compression!r}")
        if header_detail not in (None, *_PARTS):
            raise ValueError(f"header_detail: expected None or one of {list(_PARTS)}, found "
                             f"{header_detail!r}")
        if trigger_mode not in ("ints", "exts", "inte", "exte"):
            raise ValueError(f"trigger_mode: expected ints, exts, inte or exte, found "
                             f"{trigger_mode!r}")
        self.compression = compression
        self.md5 = md5
        self.trigger_mode = trigger_mode
        self.header_detail = header_detail
        self.appendix = appendix
        self._image_appendix = (None if image_appendix is None
                                else json.dumps(image_appendix).encode())

    def start(self, info: SeriesStart) -> list[Any]:
        """The header message's parts."""
        h, w = info.frame_shape
        fields, extras = pack(info, STREAM1_CONFIG)
        per_trigger = self.trigger_mode in ("inte", "exte")
        config = {  # header fields (e.g. from a recording) never override the series' own
            **fields, "x_pixels_in_detector": w, "y_pixels_in_detector": h,
            "nimages": 1 if per_trigger else info.n_frames,
            "ntrigger": info.n_frames if per_trigger else 1,
            "trigger_mode": self.trigger_mode,
            "bit_depth_image": 8 * np.dtype(info.dtype).itemsize,
        }
        detail = self.header_detail or ("all" if info.arrays else "basic")
        head = {"htype": "dheader-1.0", "series": info.series, "header_detail": detail}
        parts: list[Any] = [json.dumps(head).encode()]
        if detail != "none":
            parts.append(json.dumps(config).encode())
        if detail == "all":
            parts += _array_pairs(info)
        elif info.arrays:
            log.info("series %d: header_detail %s sends no header arrays (%s)", info.series,
                     detail, sorted(info.arrays))
        if self.appendix:
            parts.append(json.dumps(extras).encode())
        return parts

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
        parts = [
            json.dumps({"htype": "dimage-1.0", "series": series, "frame": index,
                        "hash": hashlib.md5(_bytes(blob), usedforsecurity=False).hexdigest()
                        if self.md5 else ""}).encode(),
            json.dumps({"htype": "dimage_d-1.0", "shape": [w, h], "type": dtype.name,
                        "encoding": encoding, "size": size}).encode(),
            blob,
            json.dumps({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0,
                        "real_time": 0}).encode(),
        ]
        if self._image_appendix is not None:
            parts.append(self._image_appendix)
        return parts

    def end(self, series: int) -> list[bytes]:
        return [json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()]


def _array_pairs(info: SeriesStart) -> list[Any]:
    """The (header, blob) pairs of ``header_detail: all``; a detector sends all three, so
    one the series has not goes empty."""
    unsent = set(info.arrays) - {name for name, _ in ARRAYS.values()}
    if unsent:
        log.info("series %d: header arrays %s have no place in stream v1; not sent",
                 info.series, sorted(unsent))
    pairs: list[Any] = []
    for htype, (name, default) in ARRAYS.items():
        a = np.atleast_2d(info.arrays.get(name, np.zeros((0, 0), default)))
        if a.ndim != 2:
            raise ValueError(f"stream v1 header arrays are 2-D, {name} is {a.ndim}-D")
        if a.dtype == bool:
            a = a.astype(np.uint8)
        le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
        pairs += [json.dumps({"htype": htype, "shape": [a.shape[1], a.shape[0]],
                              "type": a.dtype.name}).encode(),
                  np.ascontiguousarray(a, le).tobytes()]
    return pairs
