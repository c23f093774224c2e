"""Quantum Detectors Merlin ``.mib`` files, with the optional ``.hdr`` acquisition header.

A ``.mib`` file is a sequence of frames, each an ASCII header (``MQ1,<seq>,<data offset>,…``)
padded to ``data offset`` bytes and followed by the big-endian pixels. In counting mode
(``U08``/``U16``/``U32``/``U64``) the pixels are the assembled ``height x width`` image, quads
included, so every frame has the same size and frame ``i`` starts at ``i * frame_bytes``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framescope.errors import FileSizeError, FormatError, HeaderError
from framescope.io._base import FrameReader

__all__ = ["MIB_DTYPES", "MibReader", "acquisition_files", "parse_hdr"]

log = logging.getLogger(__name__)

#: frame header dtype code → numpy dtype (native order; the file is big-endian)
MIB_DTYPES = {"U08": "u1", "U16": "u2", "U32": "u4", "U64": "u8"}
_UNSUPPORTED = {"R64": "raw mode (R64: undecoded chip data)",
                "U01": "1-bit counting mode (U01: packed bits)"}
_FIELDS = (
    "magic", "sequence", "data offset", "n chips", "width", "height", "dtype", "layout",
    "chip select", "timestamp", "shutter", "counter", "colour mode", "gain",
)
_PAD = (b"\x00", b" ")
_PROBE = 2048  # enough for any header seen (384 bytes per chip, 768 for a quad)
_MAX_MAPS = 64  # one-file-per-frame acquisitions: bound the open memory maps (and fds)
_MAPS_LOCK = threading.Lock()

# .hdr keys (the text before any "(…)", lower case) kept as metadata
_HDR_TEXT = (
    "time and date stamp", "chip id", "chip type", "assembly size", "chip mode", "gain",
    "active counters", "acquisition type", "trigger start", "trigger stop", "sensor bias",
    "sensor polarity", "medipix clock", "readout system", "software version",
)
_HDR_INT = ("counter depth", "frames in acquisition", "frames per trigger")
_HDR_NAMES = {"time and date stamp": "acquisition_time", "gain": "gain_mode"}


@dataclass(frozen=True, slots=True)
class _FrameHeader:
    seq: int
    offset: int
    n_chips: int
    width: int
    height: int
    code: str
    layout: str
    fields: tuple[str, ...]

    def describe(self) -> str:
        return f"data offset {self.offset}, {self.width}x{self.height} {self.code}"


def _int_field(fields: list[str], i: int, path: str, where: str) -> int:
    try:
        return int(fields[i])
    except ValueError:
        raise HeaderError(
            path, f"{where}: field {i} ({_FIELDS[i]}) should be an integer, found {fields[i]!r}"
        ) from None


def _parse_header(raw: bytes, path: str, where: str) -> _FrameHeader:
    """Parse one frame header from ``raw`` (its first bytes must be the header)."""
    if not raw.startswith(b"MQ1,"):
        raise HeaderError(
            path, f"{where}: expected a Merlin frame header starting with 'MQ1,', "
            f"found {raw[:16]!r} (not a .mib file, or misaligned/corrupt)",
        )
    head = raw[:64].decode("ascii", "replace").split(",")
    if len(head) < 4:
        raise HeaderError(path, f"{where}: frame header too short: {raw[:64]!r}")
    offset = _int_field(head, 2, path, where)
    if len(raw) < offset:
        raise HeaderError(
            path, f"{where}: header says the data offset is {offset} bytes, "
            f"but only {len(raw)} bytes are there",
        )
    body = raw[:offset]
    # without padding before the offset and text right after it, the offset cuts the header
    if offset < 4 or (body[-1:] not in _PAD and len(raw) > offset and 0x21 <= raw[offset] < 0x7F):
        raise HeaderError(
            path, f"{where}: data offset {offset} is smaller than the header text, "
            f"which runs on past byte {offset}",
        )
    text = body.split(b"\x00", 1)[0].decode("ascii", "replace")
    fields = [f.strip(" \x00") for f in text.rstrip(" ").split(",")]
    if len(fields) < len(_FIELDS):
        raise HeaderError(
            path, f"{where}: frame header has {len(fields)} comma-separated fields, expected "
            f"at least {len(_FIELDS)} ({', '.join(_FIELDS)})",
        )
    seq, _, n_chips, width, height = (_int_field(fields, i, path, where) for i in range(1, 6))
    code = fields[6]
    if code not in MIB_DTYPES:
        what = _UNSUPPORTED.get(code, f"field 6 (dtype) {code!r}")
        raise HeaderError(path, f"{where}: {what} is not supported; expected one of "
                          f"{', '.join(MIB_DTYPES)} (counting mode)")
    layout = fields[7]
    if not re.fullmatch(r"\d+x\d+G?", layout) or min(n_chips, width, height) < 1:
        raise HeaderError(
            path, f"{where}: expected a chip layout like '1x1' or '2x2' and positive chip "
            f"count and size, found layout {layout!r}, {n_chips} chips, {width}x{height}",
        )
    return _FrameHeader(seq, offset, n_chips, width, height, code, layout, tuple(fields))


def _read_at(path: str, pos: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(pos)
        return f.read(size)


def _read_header(path: str, pos: int, where: str, size: int = _PROBE) -> _FrameHeader:
    raw = _read_at(path, pos, size)
    head = raw[:64].split(b",")
    if len(head) > 3 and head[2].isdigit() and int(head[2]) >= len(raw) == size:
        raw = _read_at(path, pos, int(head[2]) + 1)  # an unusually long header
    return _parse_header(raw, path, where)


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _header_metadata(h: _FrameHeader) -> dict[str, Any]:
    f = h.fields
    meta: dict[str, Any] = {
        "n_chips": h.n_chips, "layout": h.layout, "chip_select": f[8], "mib_dtype": h.code,
        "header_bytes": h.offset, "first_frame_time": f[9], "first_sequence": h.seq,
    }
    for key, i in (("shutter_time_s", 10), ("counter", 11), ("colour_mode", 12), ("gain", 13)):
        value = _number(f[i])
        if value is not None:
            meta[key] = value
    thresholds = [float(v) for v in f[14:22] if _number(v) is not None]
    if thresholds:
        meta["thresholds"] = thresholds
    if len(f) > 22 and f[22] and _number(f[22]) is None and f[22] != "MQ1A":
        meta["chip_type"] = f[22]
    if "MQ1A" in f:  # extended header: ns timestamp, shutter in ns, counter depth
        ext = f[f.index("MQ1A") + 1 :]
        if len(ext) > 2 and ext[2].isdigit():
            meta["counter_depth"] = int(ext[2])
    return meta


def parse_hdr(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Merlin ``.hdr`` acquisition header into JSON-able metadata.

    Parameters
    ----------
    path : str or path-like
        The ``.hdr`` text file (``Key (units):<tab>value`` lines).

    Returns
    -------
    dict
        Known keys under short names (``frames_per_trigger``, ``counter_depth``, …).
    """
    with open(path, "rb") as f:
        text = f.read(1 << 16).decode("ascii", "replace")
    meta: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = " ".join(key.split("(")[0].lower().split()), value.strip()
        if not sep or not value:
            continue  # also the "HDR," and "End" lines
        name = _HDR_NAMES.get(key, key.replace(" ", "_"))
        if key == "thresholds":
            meta[name] = [float(v) for v in value.split(",") if _number(v) is not None]
        elif key in _HDR_TEXT:
            meta[name] = value
        elif key in _HDR_INT:
            if (number := _number(value)) is None:
                log.warning("%s: %s should be a number, found %r; ignored", path, key, value)
            else:
                meta[name] = int(number)
    return meta


def acquisition_files(hdr: str | os.PathLike[str]) -> list[Path]:
    """The ``.mib`` files of the acquisition a ``.hdr`` describes, in frame order.

    ``<stem>.mib`` when it exists, else ``<stem>_1.mib, <stem>_2.mib, …`` sorted by number.

    Raises
    ------
    framescope.errors.FormatError
        No data file, or a gap in the numbering.
    """
    hdr = Path(hdr)
    pattern = re.compile(re.escape(hdr.stem) + r"(?:_(\d+))?\.mib", re.IGNORECASE)
    matches = [m for name in os.listdir(hdr.parent) if (m := pattern.fullmatch(name))]
    numbered = sorted((int(m.group(1)), hdr.parent / m.string) for m in matches if m.group(1))
    single = next((hdr.parent / m.string for m in matches if m.group(1) is None), None)
    if single is not None:
        if numbered:
            log.warning("%s: both %s and %d numbered files exist; reading %s only",
                        hdr, single.name, len(numbered), single.name)
        return [single]
    if not numbered:
        raise FormatError(hdr, f"no data file {hdr.stem}.mib or {hdr.stem}_<n>.mib next to it")
    numbers = [n for n, _ in numbered]
    first = numbers[0]
    if numbers != list(range(first, first + len(numbers))):
        gap = next(first + i for i, n in enumerate(numbers) if n != first + i)
        raise FormatError(
            hdr, f"acquisition files numbered {first}..{numbers[-1]}: {len(numbers)} found, "
            f"expected {numbers[-1] - first + 1}; {hdr.stem}_{gap}.mib is missing",
        )
    return [p for _, p in numbered]


class MibReader(FrameReader):
    """Frames of a Merlin acquisition: one ``.mib`` file, or a ``.hdr`` and its ``.mib`` files.

    Opening reads the first and the last frame header and stats the files: O(1) in the data
    size. Frames are read through read-only memory maps; big-endian pixels are byte-swapped
    while copying into the caller's buffer.

    Parameters
    ----------
    path : str
        A ``.mib`` file (its ``.hdr``, if next to it, adds metadata and the scan shape), or a
        ``.hdr`` file whose ``<stem>.mib`` or ``<stem>_<n>.mib`` files hold the frames.
    flip_y : bool
        Return every frame flipped vertically (last row first). Default False keeps the
        file's row order (as LiberTEM does); True gives the frames as rosettasciio, HyperSpy
        and pyxem show them. Costs nothing extra: the copy out of the file reads rows
        backwards. A calibration's ``center``, ``rotation`` and ``flip`` refer to the frames
        as returned.

    Notes
    -----
    Merlin headers hold no beam or geometry calibration. The Medipix3 pixel pitch, 55 µm,
    is a property of the detector, not of the file: it is used as ``pixel_size`` only when
    some calibration is read or given (``calibration_defaults``), so ``calibration=
    {"camera_length": "0.2 m"}`` suffices for detector angles.

    Raises
    ------
    framescope.errors.HeaderError
        A malformed first or last frame header, or an unsupported mode (R64, U01).
    framescope.errors.FileSizeError
        A file size that is not a whole number of frames (e.g. a truncated file).
    framescope.errors.FormatError
        A ``.hdr`` without its ``.mib`` files, or with a gap in their numbering.

    Examples
    --------
    >>> arr = framescope.open("scan.hdr")  # doctest: +SKIP
    """

    format = "mib"
    suffixes = (".mib", ".hdr")
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_maps",)
    #: every Merlin is a Medipix3 (55 µm pixels); not stored in the files
    calibration_defaults: ClassVar[dict[str, tuple[Any, str]]] = {
        "pixel_size": (55e-6, "Medipix3 pixel pitch (a detector property, not in the file)"),
    }

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        """``.mib`` files, and ``.hdr`` files that read like a Merlin header (not ENVI's)."""
        suffix = Path(path).suffix.lower()
        if suffix != ".hdr":
            return suffix == ".mib"
        try:
            head = _read_at(os.fspath(path), 0, 4096)
        except OSError:
            return True  # let opening report what is wrong with the file
        return head.startswith(b"HDR") or b"Frames in Acquisition" in head

    def __init__(self, path: str, *, flip_y: bool = False) -> None:
        self.path = os.fspath(path)
        self.flip_y = bool(flip_y)
        given = Path(self.path)
        if given.suffix.lower() == ".hdr":
            hdr: Path | None = given
            files = acquisition_files(given)
        else:
            files = [given]
            hdr = next((p for p in (given.with_suffix(".hdr"), given.with_suffix(".HDR"))
                        if p.is_file()), None)
        self._files = [os.fspath(f) for f in files]
        self._hdr = os.fspath(hdr) if hdr is not None else None

        first_file = self._files[0]
        first = _read_header(first_file, 0, "frame 0 at byte 0")
        h, w = first.height, first.width
        self.frame_shape = (h, w)
        self.dtype = np.dtype(MIB_DTYPES[first.code])
        self._header_len = first.offset
        self._frame_bytes = first.offset + h * w * self.dtype.itemsize

        self._counts = [self._frames_in(f, first) for f in self._files]
        self._starts = [0, *itertools.accumulate(self._counts[:-1])]
        self.n_frames = self._starts[-1] + self._counts[-1]
        last = self._check_last(first)

        self.metadata = _header_metadata(first)
        if len(self._files) == 1 and last.seq != first.seq + self.n_frames - 1:
            log.warning("%s: frame sequence numbers run %d..%d over %d frames; frames may be "
                        "missing or out of order", self.path, first.seq, last.seq, self.n_frames)
        if len(self._files) > 1:
            self.metadata["n_files"] = len(self._files)
        if self._hdr is not None:
            self.metadata["hdr_file"] = self._hdr
            self.metadata.update(parse_hdr(self._hdr))
            if self.metadata.get("frames_in_acquisition", self.n_frames) != self.n_frames:
                log.warning("%s: the .hdr says %s frames, the files hold %d", self.path,
                            self.metadata["frames_in_acquisition"], self.n_frames)
        self.scan_shape = self._scan_from_hdr()
        if self.flip_y:
            self.metadata["flip_y"] = True

    def _frames_in(self, file: str, first: _FrameHeader) -> int:
        size = os.stat(file).st_size
        n, extra = divmod(size, self._frame_bytes)
        if extra or n == 0:
            h, w = self.frame_shape
            raise FileSizeError(
                file, (n + 1) * self._frame_bytes, size,
                f"whole frames of {self._frame_bytes} bytes, each a {first.offset}-byte header "
                f"+ {h}x{w} {first.code} pixels; found {n} frames and {extra} bytes more",
            )
        return n

    def _check_last(self, first: _FrameHeader) -> _FrameHeader:
        """The last frame header must look like the first: catches misaligned files."""
        file, index = self._files[-1], self._counts[-1] - 1
        if index == 0 and len(self._files) == 1:
            return first
        pos = index * self._frame_bytes
        where = f"last frame ({index}) at byte {pos}"
        last = _read_header(file, pos, where, self._header_len + 1)
        if (last.offset, last.width, last.height, last.code) != (
            first.offset, first.width, first.height, first.code
        ):
            raise HeaderError(
                file, f"{where}: expected {first.describe()} like frame 0 of {self._files[0]}, "
                f"found {last.describe()}",
            )
        return last

    def _scan_from_hdr(self) -> tuple[int, int] | None:
        fpt = self.metadata.get("frames_per_trigger")
        if not isinstance(fpt, int) or fpt <= 1:
            return None
        rows, extra = divmod(self.n_frames, fpt)
        # one trigger for the whole acquisition says nothing about the scan's rows
        if extra or rows < 2:
            log.info("%s: %d frames per trigger do not give a scan shape for %d frames",
                     self.path, fpt, self.n_frames)
            return None
        return (rows, fpt)

    def token(self) -> tuple[Any, ...]:
        """Class, path, size and mtime of every data file (and the ``.hdr``), header facts."""
        files = (*self._files, *([self._hdr] if self._hdr else []))
        stats = [(os.path.abspath(f), (st := os.stat(f)).st_size, st.st_mtime_ns) for f in files]
        return (
            type(self).__qualname__, os.path.abspath(self.path), tuple(stats), self.n_frames,
            self.frame_shape, self.dtype.str, self._header_len, self.flip_y,
        )

    def _map(self, i: int) -> np.memmap:
        with _MAPS_LOCK:
            maps: OrderedDict[int, np.memmap] = self.__dict__.setdefault("_maps", OrderedDict())
            mm = maps.get(i)
            if mm is None:
                mm = maps[i] = np.memmap(self._files[i], mode="r")  # read-only, never written
                if len(maps) > _MAX_MAPS:
                    maps.popitem(last=False)  # views still in use keep their map alive
            else:
                maps.move_to_end(i)
        return mm

    def _view(self, i: int) -> np.ndarray:
        """All frames of file ``i`` as a big-endian ``(n, h, w)`` view that skips the headers."""
        h, w = self.frame_shape
        size = self.dtype.itemsize
        return np.ndarray(
            shape=(self._counts[i], h, w), dtype=self.dtype.newbyteorder(">"),
            buffer=self._map(i), offset=self._header_len,
            strides=(self._frame_bytes, w * size, size),
        )

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        i = bisect.bisect_right(self._starts, start) - 1
        while i < len(self._files) and self._starts[i] < stop:
            lo = self._starts[i]
            a, b = max(start, lo), min(stop, lo + self._counts[i])
            frames = self._view(i)[a - lo : b - lo]
            if self.flip_y:  # a negative-stride view: the copy below does the flip
                frames = frames[:, ::-1]
            out[a - start : b - start] = frames  # byte-swaps
            i += 1
