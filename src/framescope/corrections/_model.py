"""Detector corrections as one declarative value, applied tile by tile before any analysis.

A :class:`Corrections` holds the per-pixel arrays (dark, gain, bad-pixel mask) and the
parameters (offset, threshold, crop, binning, FFT downsampling). The engine applies it inside
the tile loop, to each tile of raw frames just read, into one reused float32 tile buffer: no
extra pass over the data and no float copy of the dataset. UDFs see the corrected frames (and a
:class:`~framescope.udf.Meta` with their shape and dtype).

Order, per frame ``x`` (raw counts as float32):

1. crop to ``crop = (y0, y1, x0, x1)`` (first, so nothing outside is computed);
2. ``x -= dark`` then ``x -= offset``;
3. ``x *= gain`` (a flat field: the factor that makes a uniform illumination uniform);
4. bad pixels (``bad`` True) become 0 (``bad_fill="zero"``), or the mean of their good
   8-neighbours (``"neighbours"``; 0 when none is good);
5. values below ``threshold`` become 0;
6. ``bin``: k × k pixels summed (the cropped frame must divide by k);
7. ``fft_downsample``: the (binned) frame's spectrum cropped to its low frequencies and
   transformed back on the coarser grid, its sum kept (see :mod:`._fft`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from framescope.corrections._fft import fft_grid
from framescope.errors import FramescopeError

__all__ = ["Corrections", "CorrectionsError"]


class CorrectionsError(FramescopeError, ValueError):
    """A correction array or parameter that does not fit the frames (names which, expected
    versus found)."""


def _frame_array(name: str, value: Any, dtype: Any) -> np.ndarray | None:
    if value is None:
        return None
    a = np.asarray(value)
    if hasattr(value, "values") and not isinstance(value, np.ndarray):  # xarray, dask
        a = np.asarray(value.values)
    if a.ndim != 2:
        raise CorrectionsError(f"{name}: expected a 2D (det_y, det_x) array, found shape "
                               f"{a.shape}")
    if dtype is bool:
        if a.dtype != bool:
            raise CorrectionsError(f"{name}: expected a bool mask (True = bad), found dtype "
                                   f"{a.dtype}")
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "iuf":
        raise CorrectionsError(f"{name}: expected real numbers, found dtype {a.dtype}")
    out = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise CorrectionsError(f"{name}: expected finite values, found {bad} NaN/inf pixels")
    return out


@dataclass(frozen=True, eq=False)
class Corrections:
    """Detector corrections applied to every frame before the analyses see it.

    Parameters
    ----------
    dark : array-like (det_y, det_x), optional
        Mean dark frame, subtracted.
    gain : array-like (det_y, det_x), optional
        Per-pixel gain (flat field), multiplied after the dark. Zeros, negative values or NaN
        are refused: mark such pixels in ``bad`` instead.
    bad : bool array-like (det_y, det_x), optional
        Bad pixels (True): dead, hot, noisy. At least one pixel must be good.
    bad_fill : {"zero", "neighbours"}
        What a bad pixel becomes: 0 (excluded from sums), or the mean of its good
        8-neighbours (an image without holes; 0 when no neighbour is good).
    offset : float
        A constant subtracted after the dark (e.g. a detector's pedestal).
    threshold : float, optional
        Values below it become 0 (e.g. half a count, to remove read noise).
    crop : (y0, y1, x0, x1), optional
        Keep rows ``y0:y1`` and columns ``x0:x1`` of the (raw) frame.
    bin : int
        Sum ``bin`` × ``bin`` pixels (after the crop; its shape must divide by ``bin``).
    fft_downsample : int or (int, int), optional
        Downsample in Fourier space, last (after the binning): an int ``f`` is a factor (the
        frame's shape must divide by it, like ``bin``), a pair is the output shape
        ``(h_out, w_out)`` (at most the frame's). The central, low-frequency part of the
        spectrum is kept and transformed back; the frame's sum is preserved (pixel values
        grow like binned ones). See :func:`framescope.corrections.fft_downsample`.

    Examples
    --------
    >>> c = Corrections(dark=np.full((4, 4), 2.0), bad=np.eye(4, dtype=bool), bin=2)
    >>> c.output_shape((4, 4))
    (2, 2)
    >>> Corrections(fft_downsample=(3, 5)).output_shape((8, 10))
    (3, 5)
    """

    dark: Any = None
    gain: Any = None
    bad: Any = None
    bad_fill: Literal["zero", "neighbours"] = "zero"
    offset: float = 0.0
    threshold: float | None = None
    crop: tuple[int, int, int, int] | None = None
    bin: int = 1
    fft_downsample: int | tuple[int, int] | None = None
    key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "dark", _frame_array("dark", self.dark, np.float32))
        put(self, "gain", _frame_array("gain", self.gain, np.float32))
        put(self, "bad", _frame_array("bad", self.bad, bool))
        if self.gain is not None and not (self.gain > 0).all():
            n = int((~(self.gain > 0)).sum())
            raise CorrectionsError(f"gain: expected positive values, found {n} pixels <= 0; "
                                   "mark them in bad= instead")
        if self.bad is not None and self.bad.all():
            raise CorrectionsError(f"bad: every one of the {self.bad.size} pixels is marked "
                                   "bad; expected some good ones")
        if self.bad_fill not in ("zero", "neighbours"):
            raise CorrectionsError(f"bad_fill: expected 'zero' or 'neighbours', found "
                                   f"{self.bad_fill!r}")
        shapes = {n: getattr(self, n).shape for n in ("dark", "gain", "bad")
                  if getattr(self, n) is not None}
        if len(set(shapes.values())) > 1:
            raise CorrectionsError(f"dark, gain and bad must have one shape, found {shapes}")
        put(self, "offset", float(self.offset))
        if self.threshold is not None:
            put(self, "threshold", float(self.threshold))
        if self.crop is not None:
            try:
                y0, y1, x0, x1 = (int(v) for v in self.crop)
            except (TypeError, ValueError):
                raise CorrectionsError(f"crop: expected (y0, y1, x0, x1), found "
                                       f"{self.crop!r}") from None
            if not (0 <= y0 < y1 and 0 <= x0 < x1):
                raise CorrectionsError(f"crop: expected 0 <= y0 < y1 and 0 <= x0 < x1, found "
                                       f"{self.crop!r}")
            put(self, "crop", (y0, y1, x0, x1))
        if int(self.bin) != self.bin or self.bin < 1:
            raise CorrectionsError(f"bin: expected a positive int, found {self.bin!r}")
        put(self, "bin", int(self.bin))
        put(self, "fft_downsample", _fft_param(self.fft_downsample))
        h = hashlib.blake2b(json.dumps(self.params(), sort_keys=True).encode(),
                            digest_size=16)
        for name in ("dark", "gain", "bad"):
            a = getattr(self, name)
            h.update(name.encode() + (b"-" if a is None else a.tobytes()))
        put(self, "key", h.hexdigest())

    # ---- identity ---------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The scalar parameters and which arrays are set (JSON-able; for attrs)."""
        return {"dark": self.dark is not None, "gain": self.gain is not None,
                "bad": 0 if self.bad is None else int(self.bad.sum()),
                "bad_fill": self.bad_fill, "offset": self.offset,
                "threshold": self.threshold, "crop": self.crop, "bin": self.bin,
                "fft_downsample": self.fft_downsample}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Corrections) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    # ---- shapes -----------------------------------------------------------------------
    @property
    def regrids(self) -> bool:
        """True when the corrected frames lie on another pixel grid than the raw ones
        (a crop, binning or FFT downsampling)."""
        return self.crop is not None or self.bin > 1 or self.fft_downsample is not None

    def check(self, frame_shape: tuple[int, int]) -> None:
        """Raise :class:`CorrectionsError` unless these corrections fit raw frames of
        ``frame_shape``."""
        for name in ("dark", "gain", "bad"):
            a = getattr(self, name)
            if a is not None and a.shape != tuple(frame_shape):
                raise CorrectionsError(f"{name}: expected the frame shape {tuple(frame_shape)},"
                                       f" found {a.shape}")
        h, w = frame_shape
        if self.crop is not None:
            y0, y1, x0, x1 = self.crop
            if y1 > h or x1 > w:
                raise CorrectionsError(f"crop: {self.crop} reaches beyond the {h}x{w} frame")
            h, w = y1 - y0, x1 - x0
        if h % self.bin or w % self.bin:
            raise CorrectionsError(f"bin: the {'cropped ' if self.crop else ''}{h}x{w} frame "
                                   f"does not divide into {self.bin}x{self.bin} blocks")
        if self.fft_downsample is not None:
            fft_shape(self.fft_downsample, (h // self.bin, w // self.bin),
                      "binned " if self.bin > 1 else "cropped " if self.crop else "")

    def output_shape(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """The corrected frames' shape for raw frames of ``frame_shape``."""
        self.check(frame_shape)
        h, w = frame_shape
        if self.crop is not None:
            y0, y1, x0, x1 = self.crop
            h, w = y1 - y0, x1 - x0
        h, w = h // self.bin, w // self.bin
        if self.fft_downsample is None:
            return h, w
        return fft_shape(self.fft_downsample, (h, w))

    def det_coords(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector coordinates of the corrected frames from the raw ones: cropped, the
        mean over each bin (pixel indices stay pixel-centre positions in raw pixels), then
        where FFT downsampling samples the frame (output pixel ``m`` at binned pixel
        ``m * h / h_out``, interpolated linearly between the binned coordinates)."""
        if self.crop is not None:
            y0, y1, x0, x1 = self.crop
            y, x = y[y0:y1], x[x0:x1]
        k = self.bin
        y = np.asarray(y, float).reshape(-1, k).mean(1)
        x = np.asarray(x, float).reshape(-1, k).mean(1)
        if self.fft_downsample is None:
            return y, x
        ho, wo = fft_shape(self.fft_downsample, (y.size, x.size))
        return (np.interp(fft_grid(y.size, ho), np.arange(y.size), y),
                np.interp(fft_grid(x.size, wo), np.arange(x.size), x))


def _fft_param(value: Any) -> int | tuple[int, int] | None:
    """``fft_downsample`` checked: None (1 is none), a factor >= 1 or a shape of two ints."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise CorrectionsError(f"fft_downsample: expected a factor >= 1 or an output "
                                   f"shape (h, w), found {value!r}")
        return None if value == 1 else int(value)
    try:
        h, w = value
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CorrectionsError(f"fft_downsample: expected a factor >= 1 or an output shape "
                               f"(h, w) of positive ints, found {value!r}")
    return int(h), int(w)


def fft_shape(param: int | tuple[int, int], frame: tuple[int, int],
              what: str = "") -> tuple[int, int]:
    """The output shape of ``fft_downsample=param`` on frames of ``frame`` (checked).

    ``what`` qualifies the frame in messages (``"binned "``, ``"cropped "``).
    """
    h, w = frame
    if isinstance(param, int):
        if h % param or w % param:
            raise CorrectionsError(f"fft_downsample: the {what}{h}x{w} frame does not divide "
                                   f"by the factor {param}; give an output shape (h, w) "
                                   f"instead")
        return h // param, w // param
    ho, wo = param
    if ho > h or wo > w:
        raise CorrectionsError(f"fft_downsample: expected an output shape of at most the "
                               f"{what}{h}x{w} frame, found {ho}x{wo}")
    return ho, wo
