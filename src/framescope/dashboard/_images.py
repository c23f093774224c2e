"""Image helpers of the dashboard (numpy only): payload size, display scale, bright-field disk."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

import framescope.masks as fm
from framescope.errors import MaskError

__all__ = [
    "MAX_BYTES",
    "MAX_SIDE",
    "block_coords",
    "bright_field_disk",
    "color_limits",
    "display_frame",
    "downsample",
    "roi_mask",
]

#: largest side sent to the browser; bigger images are block-averaged
MAX_SIDE = 512
#: largest float32 image payload per update (bytes)
MAX_BYTES = 2**19


def downsample_factor(shape: tuple[int, int], max_side: int = MAX_SIDE,
                      max_bytes: int = MAX_BYTES) -> int:
    """Smallest integer binning factor giving sides <= ``max_side`` and float32 payload <=
    ``max_bytes``."""
    h, w = shape
    f = max(1, math.ceil(max(h, w) / max_side))
    while math.ceil(h / f) * math.ceil(w / f) * 4 > max_bytes:
        f += 1
    return f


def downsample(img: np.ndarray, max_side: int = MAX_SIDE,
               max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, int]:
    """Block means of ``img`` as float32, small enough to send; returns ``(image, factor)``.

    NaN pixels (positions not computed yet) are left out of their block's mean; a block
    with no finite pixel is NaN. Edge blocks of sizes not divisible by the factor average
    the pixels they have. Factor 1 returns a float32 copy.
    """
    a = np.asarray(img, dtype=np.float32)
    f = downsample_factor(a.shape, max_side, max_bytes)
    if f == 1:
        return a.copy(), 1
    h, w = a.shape
    hh, ww = -(-h // f) * f, -(-w // f) * f
    padded = np.full((hh, ww), np.nan, dtype=np.float32)
    padded[:h, :w] = a
    blocks = padded.reshape(hh // f, f, ww // f, f)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
    count = finite.sum(axis=(1, 3))
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out, f


def block_coords(n: int, factor: int) -> np.ndarray:
    """Centres (in original pixel units) of the ``factor``-pixel blocks over ``n`` pixels."""
    return np.arange(-(-n // factor)) * factor + (factor - 1) / 2


def display_frame(frame: np.ndarray, scale: str) -> np.ndarray:
    """The frame as shown: ``linear`` as is, ``log`` as ``log10(1 + max(I, 0))`` (float32)."""
    a = np.asarray(frame, dtype=np.float32)
    if scale == "linear":
        return a
    if scale == "log":
        return np.log10(1 + np.maximum(a, 0, where=np.isfinite(a), out=a.copy()))
    raise ValueError(f"scale: expected 'linear' or 'log', found {scale!r}")


def color_limits(img: np.ndarray, percentiles: tuple[float, float] = (0.0, 100.0)
                 ) -> tuple[float, float]:
    """Colour range from percentiles of the finite pixels; ``(0, 1)`` if none, never empty."""
    a = np.asarray(img)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(a, percentiles))
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-6 or 1.0)
    return lo, hi


def bright_field_disk(frame: np.ndarray, fraction: float = 0.5) -> tuple[float, float, float]:
    """Centre ``(cy, cx)`` and radius of the bright-field disk in a (mean) frame.

    Pixels at or above ``fraction`` of the 99.9th percentile are the disk; the largest
    connected patch of them wins (a bright hot pixel elsewhere does not move it). The centre
    is that patch's centroid, the radius that of a disk of the same area.

    Raises
    ------
    ValueError
        If the frame has no positive pixel.
    """
    a = np.asarray(frame, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    top = float(np.percentile(a, 99.9))
    if not top > 0:
        raise ValueError("bright_field_disk: the frame has no positive pixel")
    labels, n = ndimage.label(a >= fraction * top)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    disk = labels == int(np.argmax(sizes)) + 1
    cy, cx = ndimage.center_of_mass(disk)
    return float(cy), float(cx), math.sqrt(float(disk.sum()) / math.pi)


def roi_mask(scan_shape: tuple[int, int], boxes: Iterable[Mapping[str, float]] = (),
             polygons: Iterable[Sequence[tuple[float, float]]] = ()) -> np.ndarray | None:
    """Union of boxes (``y0, x0, y1, x1``) and polygons (``(y, x)`` vertices) on the scan
    grid, with the masks' pixel-centre rule; None when nothing is drawn or covered."""
    out = np.zeros(scan_shape, dtype=bool)
    shapes = [fm.box(b["y0"], b["x0"], b["y1"], b["x1"]) for b in boxes]
    shapes += [fm.polygon(v) for v in polygons]
    for spec in shapes:
        try:
            out |= spec.rasterize(scan_shape) > 0
        except MaskError:  # covers no scan position
            continue
    return out if out.any() else None
