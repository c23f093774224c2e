"""Applying :class:`Corrections` to a tile: a plan built once per task, then in-place
float32 operations on one reused buffer (numpy or cupy, whichever the tile is on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.corrections._fft import fft_downsample
from framescope.corrections._model import Corrections

__all__ = ["CorrectionPlan", "plan"]


def _neighbours(bad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the bad pixels, and for each its good 8-neighbours' flat indices
    (padded with itself) and weights (1/count, 0 for padding)."""
    h, w = bad.shape
    ys, xs = np.nonzero(bad)
    idx = np.zeros((ys.size, 8), np.int64)
    wts = np.zeros((ys.size, 8), np.float32)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        good = [(y + dy) * w + x + dx for dy, dx in offsets
                if 0 <= y + dy < h and 0 <= x + dx < w and not bad[y + dy, x + dx]]
        idx[i] = y * w + x
        if good:
            idx[i, :len(good)] = good
            wts[i, :len(good)] = 1.0 / len(good)
    return ys * w + xs, idx, wts


@dataclass
class CorrectionPlan:
    """Corrections bound to raw frames of one shape, with the arrays cropped and on the
    device: :meth:`apply` a tile of raw frames into corrected float32 frames."""

    corrections: Corrections
    raw_shape: tuple[int, int]
    shape: tuple[int, int]  # after crop, before binning
    out_shape: tuple[int, int]
    dark: Any
    gain: Any
    bad: Any  # flat indices of bad pixels, or None
    nbr: tuple[Any, Any] | None  # neighbour indices and weights for bad_fill="neighbours"
    fused: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the CPU kernel's arrays

    def apply(self, tile: Any, out: Any = None) -> Any:
        """Corrected frames of ``tile`` ``(n, raw h, raw w)`` as float32
        ``(n, *out_shape)``.

        ``out`` ``(n, *shape)`` float32, reused between tiles, receives the crop before binning;
        the returned array is ``out`` (no binning or FFT downsampling) or a new one.
        """
        c = self.corrections
        n = tile.shape[0]
        if c.crop is not None:
            y0, y1, x0, x1 = c.crop
            tile = tile[:, y0:y1, x0:x1]
        if out is None:
            mod = _module(tile)
            out = mod.empty((n, *self.shape), mod.float32)
        if self.fused is not None and isinstance(tile, np.ndarray):
            # one numba pass; the neighbour fill and binning follow as below
            from framescope.corrections._kernel import correct_tile

            dark, gain, bad = self.fused
            # the fill reads its neighbours before the threshold: threshold after it then
            late = self.nbr is not None and c.threshold is not None
            correct_tile(tile, dark, gain, c.offset, -np.inf if c.threshold is None or late
                         else c.threshold, bad, out)
            if self.nbr is not None:
                flat = out.reshape(n, -1)
                idx, wts = self.nbr
                flat[:, self.bad] = (flat[:, idx] * wts).sum(axis=2)
            if late:
                out[out < c.threshold] = 0
            return self._regridded(out, n)
        out[...] = tile  # the one cast of the tile
        if self.dark is not None:
            out -= self.dark
        if c.offset:
            out -= c.offset
        if self.gain is not None:
            out *= self.gain
        if self.bad is not None:
            flat = out.reshape(n, -1)
            if self.nbr is not None:
                idx, wts = self.nbr
                flat[:, self.bad] = (flat[:, idx] * wts).sum(axis=2)
            else:
                flat[:, self.bad] = 0
        if c.threshold is not None:
            out[out < c.threshold] = 0
        return self._regridded(out, n)

    def _regridded(self, out: Any, n: int) -> Any:
        """Binned, then FFT-downsampled (to ``out_shape``), as the corrections ask."""
        k = self.corrections.bin
        if k > 1:
            h, w = self.shape
            out = out.reshape(n, h // k, k, w // k, k).sum(axis=(2, 4))
        if self.corrections.fft_downsample is not None:
            out = fft_downsample(out, self.out_shape)
        return out


def _module(a: Any) -> Any:
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def plan(corrections: Corrections, raw_shape: tuple[int, int],
         backend: str = "numpy") -> CorrectionPlan:
    """Bind ``corrections`` to raw frames of ``raw_shape`` (checked) on ``backend``."""
    c = corrections
    out_shape = c.output_shape(raw_shape)
    shape = raw_shape
    sl: tuple[slice, slice] = (slice(None), slice(None))
    if c.crop is not None:
        y0, y1, x0, x1 = c.crop
        shape, sl = (y1 - y0, x1 - x0), (slice(y0, y1), slice(x0, x1))
    if backend == "cupy":
        import cupy

        dev = cupy.asarray
    else:
        dev = np.ascontiguousarray
    dark = None if c.dark is None else dev(c.dark[sl])
    gain = None if c.gain is None else dev(c.gain[sl])
    bad = nbr = None
    if c.bad is not None and c.bad[sl].any():
        flat, idx, wts = _neighbours(c.bad[sl])
        bad = dev(flat)
        if c.bad_fill == "neighbours":
            nbr = (dev(idx), dev(wts))
    fused = None
    if backend == "numpy":  # dense operands for the one-pass kernel
        fused = (np.zeros(shape, np.float32) if dark is None else dark,
                 np.ones(shape, np.float32) if gain is None else gain,
                 np.zeros(0, np.int64) if bad is None else np.asarray(bad, np.int64))
    return CorrectionPlan(c, tuple(raw_shape), shape, out_shape, dark, gain, bad, nbr, fused)
