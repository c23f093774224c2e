"""Raw binary frames: explicit ``shape``/``dtype``/``offset`` or a JSON sidecar.

The sidecar (``scan.raw.json`` or ``scan.json`` next to ``scan.raw``) is described in
``docs/formats.md``; it is validated with pydantic (in ``_raw_sidecar``, imported when a raw
file is opened, not when the reader registry loads this module) so a typo gives a message
naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from framescope.errors import FileSizeError, HeaderError
from framescope.io._base import FrameReader

if TYPE_CHECKING:
    from framescope.io._raw_sidecar import RawSidecar

__all__ = ["RawReader", "RawSidecar", "sidecar_path"]


def __getattr__(name: str) -> Any:
    if name == "RawSidecar":  # pydantic only when asked for
        from framescope.io._raw_sidecar import RawSidecar

        return RawSidecar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sidecar_path(path: str | os.PathLike[str]) -> Path | None:
    """The sidecar of a raw file: ``<name>.json`` beside it, else ``<stem>.json``."""
    p = Path(path)
    for cand in (p.with_name(p.name + ".json"), p.with_suffix(".json")):
        if cand != p and cand.is_file():
            return cand
    return None


class RawReader(FrameReader):
    """Frames stored back to back in a binary file, optionally with per-frame headers.

    Parameters
    ----------
    path : str
        The binary file.
    shape : tuple of int, optional
        ``(scan_y, scan_x, det_y, det_x)`` or ``(frames, det_y, det_x)``. Default: the sidecar.
    dtype : str, optional
        Pixel dtype; required with ``shape``.
    offset, frame_header, frame_footer : int
        Bytes before the first frame, before each frame and after each frame.
    byteorder : {"little", "big"}, optional
        Byte order of the pixels; default the order ``dtype`` names (``">u2"``: big), else
        little.

    Raises
    ------
    framescope.calibration.CalibrationError
        The sidecar's ``calibration`` has an unknown field or a value that does not parse
        (names the sidecar and the field).
    """

    format = "raw"
    suffixes = (".raw", ".bin", ".dat")
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_mm",)

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        return Path(path).suffix.lower() in cls.suffixes or sidecar_path(path) is not None

    def __init__(
        self,
        path: str,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: str | np.dtype | None = None,
        offset: int = 0,
        frame_header: int = 0,
        frame_footer: int = 0,
        byteorder: Literal["little", "big"] | None = None,
    ) -> None:
        from pydantic import ValidationError

        from framescope.io._raw_sidecar import RawSidecar, explain, sidecar_calibration

        self.path = path
        if shape is None:
            side = self._sidecar(path)
            spec = self._load_sidecar(side)
            if spec.calibration:
                self.calibration_fields = sidecar_calibration(spec.calibration, side)
        else:
            if dtype is None:
                raise TypeError(f"{path}: raw files opened with shape= need dtype= too")
            # a dtype such as ">u2" names the byte order; it must not be dropped silently
            named = {">": "big", "<": "little"}.get(np.dtype(dtype).byteorder)
            if named is not None and byteorder is not None and named != byteorder:
                raise ValueError(f"{path}: dtype {dtype!r} is {named}-endian but "
                                 f"byteorder={byteorder!r}")
            byteorder = byteorder or named or "little"
            try:
                spec = RawSidecar(
                    shape=tuple(shape), dtype=np.dtype(dtype).name, offset=offset,
                    frame_header=frame_header, frame_footer=frame_footer, byteorder=byteorder,
                )
            except ValidationError as e:
                raise HeaderError(path, f"invalid raw options: {explain(e)}") from None
        self.spec = spec
        native = np.dtype(spec.dtype)
        self.dtype = native.newbyteorder("=")
        self._file_dtype = native.newbyteorder("<" if spec.byteorder == "little" else ">")
        self.frame_shape = (spec.shape[-2], spec.shape[-1])
        self.n_frames = int(np.prod(spec.shape[:-2]))
        self.scan_shape = (spec.shape[0], spec.shape[1]) if len(spec.shape) == 4 else None
        self.metadata = dict(spec.metadata)
        self._frame_bytes = self.frame_shape[0] * self.frame_shape[1] * self.dtype.itemsize
        self._stride = spec.frame_header + self._frame_bytes + spec.frame_footer
        expected = spec.offset + self.n_frames * self._stride
        found = os.stat(path).st_size
        if found != expected:
            raise FileSizeError(
                path, expected, found,
                f"{self.n_frames} frames of {self.frame_shape[0]}x{self.frame_shape[1]} "
                f"{spec.dtype} after {spec.offset} offset bytes",
            )

    @staticmethod
    def _sidecar(path: str) -> Path:
        side = sidecar_path(path)
        if side is None:
            raise HeaderError(
                path, f"raw file without shape/dtype: pass shape= and dtype=, or write "
                f"{Path(path).name}.json (see docs/formats.md)",
            )
        return side

    @staticmethod
    def _load_sidecar(side: Path) -> RawSidecar:
        from pydantic import ValidationError

        from framescope.io._raw_sidecar import RawSidecar, explain

        try:
            return RawSidecar.model_validate(json.loads(side.read_text()))
        except json.JSONDecodeError as e:
            raise HeaderError(side, f"raw sidecar is not valid JSON: {e}") from None
        except ValidationError as e:
            raise HeaderError(side, f"invalid raw sidecar: {explain(e)}") from None

    def _memmap(self) -> np.ndarray:
        mm = self.__dict__.get("_mm")
        if mm is None:
            raw = np.memmap(self.path, mode="r", dtype=np.uint8)
            mm = np.ndarray(
                buffer=raw, dtype=self._file_dtype, shape=(self.n_frames, *self.frame_shape),
                offset=self.spec.offset + self.spec.frame_header,
                strides=(self._stride, self.frame_shape[1] * self.dtype.itemsize,
                         self.dtype.itemsize),
            )
            self._mm = mm
        return mm

    def view(self, start: int, stop: int) -> np.ndarray:
        """Zero-copy read-only view of frames ``start:stop`` (file byte order)."""
        return self._memmap()[start:stop]

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        contiguous = self._stride == self._frame_bytes and self._file_dtype.isnative
        if contiguous and out.flags.c_contiguous:
            # one pread into the caller's buffer: a single copy out of the page cache
            want = (stop - start) * self._frame_bytes
            fd = os.open(self.path, os.O_RDONLY)
            try:
                got = os.preadv(fd, [memoryview(out).cast("B")],
                                self.spec.offset + start * self._stride)
            finally:
                os.close(fd)
            if got != want:
                raise FileSizeError(self.path, self.spec.offset + stop * self._stride,
                                    os.stat(self.path).st_size, "file shrank while reading")
        else:
            np.copyto(out, self.view(start, stop), casting="unsafe")
