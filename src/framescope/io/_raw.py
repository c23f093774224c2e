"""Raw binary frames: explicit ``shape``/``dtype``/``offset`` or a JSON sidecar.

The sidecar (``scan.raw.json`` or ``scan.json`` next to ``scan.raw``) is described in
``docs/formats.md``; it is validated with pydantic so a typo gives a message naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from framescope.errors import FileSizeError, HeaderError
from framescope.io._base import FrameReader

__all__ = ["RawReader", "RawSidecar", "sidecar_path"]


class RawSidecar(BaseModel):
    """The JSON sidecar that describes a raw file (see docs/formats.md)."""

    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, ...] = Field(
        description="(scan_y, scan_x, det_y, det_x) or (frames, det_y, det_x)"
    )
    dtype: str = Field(description="numpy dtype name, e.g. uint16, float32")
    byteorder: Literal["little", "big"] = "little"
    offset: int = Field(0, ge=0, description="bytes before the first frame")
    frame_header: int = Field(0, ge=0, description="bytes before each frame")
    frame_footer: int = Field(0, ge=0, description="bytes after each frame")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) not in (3, 4) or min(v) < 1:
            raise ValueError(f"expected 3 or 4 positive sizes, found {list(v)}")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        try:
            dt = np.dtype(v)
        except TypeError as e:
            raise ValueError(f"not a numpy dtype: {v!r}") from e
        if dt.kind not in "uif":
            raise ValueError(f"expected an integer or float dtype, found {v!r}")
        return v


def _explain(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']} (found {e.get('input')!r})"
        for e in err.errors()
    )


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
        self.path = path
        if shape is None:
            spec = self._load_sidecar(path)
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
                raise HeaderError(path, f"invalid raw options: {_explain(e)}") from None
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
    def _load_sidecar(path: str) -> RawSidecar:
        side = sidecar_path(path)
        if side is None:
            raise HeaderError(
                path, f"raw file without shape/dtype: pass shape= and dtype=, or write "
                f"{Path(path).name}.json (see docs/formats.md)",
            )
        try:
            return RawSidecar.model_validate(json.loads(side.read_text()))
        except json.JSONDecodeError as e:
            raise HeaderError(side, f"raw sidecar is not valid JSON: {e}") from None
        except ValidationError as e:
            raise HeaderError(side, f"invalid raw sidecar: {_explain(e)}") from None

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
