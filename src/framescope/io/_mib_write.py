"""Write Merlin ``.mib`` files (and their ``.hdr``) block by block, as the Merlin software does.

Used by ``framescope simulate --format mib`` and the tests; files can be many GB, so frames
are streamed: each block is byte-swapped into one reused buffer beside its frame headers and
written with a single ``write`` call.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from framescope.io._write import check_new

__all__ = ["header_bytes", "write_mib"]

log = logging.getLogger(__name__)

_CODES = {"uint8": "U08", "uint16": "U16", "uint32": "U32", "uint64": "U64"}
_COUNTER_DEPTH = {"uint8": 6, "uint16": 12, "uint32": 24, "uint64": 24}
_THRESHOLDS = (10.0, 511.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # keV
_DACS = ("175,511,000,000,000,000,000,000,125,255,125,125,100,100,082,100,087,030,128,004,"
         "255,129,128,176,168,511,511")
_FRAME_TIME_S = 0.001
_FRAME_NS = 1_000_000
_BUFFER_BYTES = 32 * 2**20


def header_bytes(n_chips: int) -> int:
    """Length of a frame header (the data offset): 384 bytes for one chip, 768 for a quad."""
    return 256 + 128 * n_chips


def _n_chips(layout: str) -> int:
    m = re.fullmatch(r"(\d+)x(\d+)G?", layout.strip())
    if m is None:
        raise ValueError(f"layout: expected e.g. '1x1', '2x2', '4x1' or '2x2G', found {layout!r}")
    return int(m.group(1)) * int(m.group(2))


def _thresholds() -> str:
    return ",".join(f"{t:.6E}" for t in _THRESHOLDS)


def _frame_headers(first: int, k: int, t0: np.datetime64, utc_offset: np.timedelta64,
                   fields: tuple[str, str, str], length: int) -> np.ndarray:
    """``k`` NUL-padded headers for frames ``first…`` as a ``(k, length)`` uint8 array."""
    fixed, middle, ext = fields
    times = t0 + (np.arange(first, first + k) * _FRAME_NS).astype("m8[ns]")
    local = np.datetime_as_string(times, unit="us").tolist()
    utc = np.datetime_as_string(times - utc_offset, unit="ns").tolist()
    text = "".join(
        # local time in the classic field, UTC with nanoseconds in the MQ1A extension
        f"MQ1,{first + i + 1:06d},{fixed},{t.replace('T', ' ')},{middle}MQ1A,{u}Z,{ext}"
        .ljust(length, "\0")
        for i, (t, u) in enumerate(zip(local, utc, strict=True))
    )
    raw = text.encode("ascii")
    if len(raw) != k * length:  # a header longer than its data offset would corrupt the file
        raise ValueError(f"frame headers do not fit in {length} bytes")
    return np.frombuffer(raw, dtype=np.uint8).reshape(k, length)


def _hdr_text(
    n_frames: int, layout: str, n_chips: int, dtype: str, fpt: int, start: dt.datetime
) -> str:
    lines = [
        ("HDR,", None),
        ("Time and Date Stamp (day, mnth, yr, hr min s)", start.strftime("%d/%m/%Y %H:%M:%S")),
        ("Chip ID", ",".join([f"W000_A{i}" for i in range(n_chips)] + ["-"] * (4 - n_chips))),
        ("Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX)", "Medipix 3RX"),
        ("Assembly Size (NX1, 2X2)", f"{layout:>6}"),
        ("Chip Mode  (SPM, CSM, CM, CSCM)", "SPM"),
        ("Counter Depth (number)", str(_COUNTER_DEPTH[dtype])),
        ("Gain", "SLGM"),
        ("Active Counters", "Alternating"),
        ("Thresholds (keV)", _thresholds()),
        ("DACs", ";".join([_DACS] * n_chips)),
        ("Gap Fill Mode", "None"),
        ("Flat Field File", "None"),
        ("Dead Time File", "Dummy (C:\\<NUL>\\)"),
        ("Acquisition Type (Normal, Th_scan, Config)", "Normal"),
        ("Frames in Acquisition (Number)", str(n_frames)),
        ("Frames per Trigger (Number)", str(fpt)),
        ("Trigger Start (Positive, Negative, Internal)", "Rising Edge"),
        ("Trigger Stop (Positive, Negative, Internal)", "Rising Edge"),
        ("Sensor Bias (V)", "120 V"),
        ("Sensor Polarity (Positive, Negative)", "Positive"),
        ("Temperature (C)", "Board Temp 0.000000 Deg C"),
        ("Humidity (%)", "Board Humidity 0.000000 "),
        ("Medipix Clock (MHz)", "120MHz"),
        ("Readout System", "Merlin Quad" if n_chips == 4 else "Merlin"),
        ("Software Version", "0.77.0.16 (framescope)"),
        ("End", None),
    ]
    return "".join(f"{k}\t\n" if v is None else f"{k}:\t{v}\n" for k, v in lines)


def _write_frames(
    f: BinaryIO, blocks: Iterable[np.ndarray], n_frames: int, shape: tuple[int, int],
    be: np.dtype, length: int, t0: np.datetime64, utc_offset: np.timedelta64,
    fields: tuple[str, str, str],
) -> None:
    height, width = shape
    frame_bytes = length + height * width * be.itemsize
    per = max(1, min(n_frames, _BUFFER_BYTES // frame_bytes))
    buf = np.empty((per, frame_bytes), dtype=np.uint8)
    # the pixel part of each buffer row, seen as big-endian frames: copying into it byte-swaps
    pixels = np.ndarray((per, height, width), dtype=be, buffer=buf, offset=length,
                        strides=(frame_bytes, width * be.itemsize, be.itemsize))
    written = 0
    # one array is one block, not a sequence of single-frame blocks
    for block in [blocks] if isinstance(blocks, np.ndarray) else blocks:
        block = np.asarray(block)
        block = block[None] if block.ndim == 2 else block
        if block.shape[1:] != (height, width):
            raise ValueError(f"{f.name}: expected blocks of frames {height}x{width}, "
                             f"found a block of shape {block.shape}")
        if written + len(block) > n_frames:
            raise ValueError(f"{f.name}: expected {n_frames} frames, the blocks hold more")
        for s in range(0, len(block), per):
            part = block[s : s + per]
            k = len(part)
            buf[:k, :length] = _frame_headers(written, k, t0, utc_offset, fields, length)
            pixels[:k] = part
            f.write(buf[:k])
            written += k
    if written != n_frames:
        raise ValueError(f"{f.name}: expected {n_frames} frames, the blocks held {written}")


def write_mib(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: str = "uint16",
    layout: str = "1x1",
    scan: tuple[int, int] | None = None,
    hdr: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write frames as a Merlin ``.mib`` file in counting mode, streaming block by block.

    Parameters
    ----------
    path : str or path-like
        The ``.mib`` file to write; the ``.hdr`` goes beside it.
    blocks : iterable of numpy.ndarray
        ``(k, height, width)`` arrays (or single 2D frames) in frame order; values are cast
        to ``dtype``. Only one block is held at a time.
    n_frames : int
        Total number of frames the blocks hold (checked).
    frame_shape : (int, int)
        ``(height, width)`` of the assembled frame.
    dtype : {"uint8", "uint16", "uint32", "uint64"}
        Pixel type, written big-endian as ``U08``/``U16``/``U32``/``U64``.
    layout : str
        Chip layout: ``"1x1"`` (384-byte headers), ``"2x2"`` quad (768 bytes), ``"Nx1"``…
    scan : (int, int), optional
        Scan shape; the ``.hdr`` then says ``Frames per Trigger`` = ``scan[1]``.
    hdr : bool
        Also write ``<stem>.hdr``.
    overwrite : bool
        Replace an existing file instead of refusing.

    Returns
    -------
    pathlib.Path
        The ``.mib`` file written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        Unknown dtype or layout, a block of the wrong frame shape, or a frame count that does
        not match ``n_frames`` (the incomplete file is removed).
    """
    path = check_new(path, overwrite)
    name = np.dtype(dtype).name
    if name not in _CODES:
        raise ValueError(f"dtype: expected one of {', '.join(_CODES)}, found {dtype!r}")
    if n_frames < 1:
        raise ValueError(f"n_frames: expected at least 1 frame, found {n_frames}")
    n_chips = _n_chips(layout)
    height, width = (int(v) for v in frame_shape)
    be = np.dtype(name).newbyteorder(">")
    length = header_bytes(n_chips)
    start = dt.datetime.now().astimezone()
    t0 = np.datetime64(start.replace(tzinfo=None), "ns")
    utc_offset = np.timedelta64(int((start.utcoffset() or dt.timedelta()).total_seconds()), "s")
    fields = (
        f"{length:05d},{n_chips:02d},{width:04d},{height:04d},{_CODES[name]},"
        f"{layout.strip():>6},{(1 << n_chips) - 1:02X}",
        f"{_FRAME_TIME_S:.6f},0,0,0,{_thresholds()},"
        + "".join(f"3RX,{_DACS}," for _ in range(n_chips)),
        f"{_FRAME_NS}ns,{_COUNTER_DEPTH[name]},",
    )

    try:
        with open(path, "wb") as f:
            _write_frames(f, blocks, n_frames, (height, width), be, length, t0, utc_offset,
                          fields)
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a file that reads as a shorter acquisition
        raise
    if hdr:
        fpt = scan[1] if scan is not None else 1
        text = _hdr_text(n_frames, layout.strip(), n_chips, name, fpt, start)
        path.with_suffix(".hdr").write_text(text, encoding="ascii", newline="\r\n")
    log.info("wrote %s: %d frames of %dx%d %s, %s layout", path, n_frames, height, width,
             name, layout)
    return path
