"""Numba kernels that find electron events in blocks of frames.

An event is a pixel whose dark-subtracted value ``v = float32(frame) - dark`` (float32
arithmetic; times ``gain`` when one is given, 0 at bad pixels) satisfies
``background < v < xray`` and is a local maximum of its 8-neighbourhood inside the frame.
Ties are broken in raster order: ``v`` must be strictly greater than the neighbours before
it (up-left, up, up-right, left) and at least equal to those after it (right, down-left,
down, down-right), so of two equal neighbouring pixels exactly the first counts. Neighbours
are compared with their own dark-subtracted values whatever the thresholds, so the charge
around an X-ray (brighter than the X-ray threshold) holds no event.

stempy 3.6 differs in three ways (checked on hand-made and simulated frames, see
tests/counting/test_counting_stempy.py): it drops both pixels of a tie; it compares against
neighbours with out-of-range values zeroed, so a pixel beside an X-ray can be an event; and
it subtracts the dark reference truncated to whole ADU. With a whole-number dark reference
the events are otherwise identical.

Frames are counted in parallel (numba ``prange``), one pass each, into a scratch row per
frame, then gathered (see :func:`count_block`). The optional centroid of an event is the
intensity-weighted mean position over its 3x3 neighbourhood (inside the frame), negative
values weighted 0, pixel centres on integers.

Measured on one core of a shared machine, 256 x 256 uint16 frames at 0.05 e-/px: about
1.5 ns per pixel (0.6 ns counting only), against 8 ns for the same tests with early exits.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import prange

__all__ = ["count_block", "in_groups"]

_JIT = {"cache": True, "nogil": True}
# scratch for the events of a group of frames (see count_block)
_GROUP_BYTES = 16 * 2**20


@numba.njit(inline="always", **_JIT)
def _fill_row(frame, dark, gain, y, out):  # pragma: no cover - compiled
    """Dark-subtracted (and gain-corrected) row ``y`` into ``out[1:-1]`` (the ends stay
    -inf). ``gain`` None is pruned at compile time: no multiply without one."""
    if gain is None:
        for x in range(frame.shape[1]):
            out[x + 1] = np.float32(frame[y, x]) - dark[y, x]
    else:
        for x in range(frame.shape[1]):
            out[x + 1] = (np.float32(frame[y, x]) - dark[y, x]) * gain[y, x]


@numba.njit(inline="always", **_JIT)
def _events_in_row(prev, cur, nxt, bg, xr, flags):  # pragma: no cover - compiled
    """Flag the events of row ``cur`` (padded rows, see :func:`_scan_frame`); their number.

    Every test is evaluated and combined with ``&`` (no early exit): the loop has no
    branch, so the compiler vectorises it; with early exits each pixel cost a branch
    misprediction or two (8 ns/px instead of under 1).
    """
    n = 0
    for x in range(1, cur.shape[0] - 1):
        v = cur[x]
        ok = ((v > bg) & (v < xr)
              & (v > prev[x - 1]) & (v > prev[x]) & (v > prev[x + 1]) & (v > cur[x - 1])
              & (v >= cur[x + 1]) & (v >= nxt[x - 1]) & (v >= nxt[x]) & (v >= nxt[x + 1]))
        flags[x] = ok
        n += ok
    return n


@numba.njit(**_JIT)
def _scan_frame(frame, dark, gain, bg, xr, indices, centroids,
                with_centroids):  # pragma: no cover - compiled
    """Events of one frame into ``indices`` (and ``centroids``); their number.

    Dark-subtracted rows go once into a rolling buffer of three rows padded with -inf at
    both ends; the rows above the first and below the last are all -inf. Then every pixel
    has 8 neighbours and outside the frame never wins.
    """
    h, w = frame.shape
    buf = np.full((4, w + 2), -np.inf, dtype=np.float32)
    flags = np.zeros(w + 2, dtype=np.bool_)
    outside = buf[3]
    prev, cur, nxt = outside, buf[0], buf[1]
    spare = buf[2]
    _fill_row(frame, dark, gain, 0, cur)
    if h > 1:
        _fill_row(frame, dark, gain, 1, nxt)
    else:
        nxt = outside
    count = 0
    for y in range(h):
        if y > 0:
            # the old top row's buffer is reused for the new bottom row
            recycled = prev if y > 1 else spare
            prev, cur = cur, nxt
            if y + 1 < h:
                nxt = recycled
                _fill_row(frame, dark, gain, y + 1, nxt)
            else:
                nxt = outside
        if _events_in_row(prev, cur, nxt, bg, xr, flags) == 0:
            continue
        for x in range(w):
            if not flags[x + 1]:
                continue
            indices[count] = y * w + x
            if with_centroids:
                s = 0.0
                sy = 0.0
                sx = 0.0
                for nx in range(x, x + 3):  # padded columns x - 1 .. x + 1
                    for dy, row in ((-1, prev), (0, cur), (1, nxt)):
                        q = max(np.float64(row[nx]), 0.0)  # -inf outside -> 0
                        s += q
                        sy += q * (y + dy)
                        sx += q * (nx - 1)
                # s > 0 unless the background threshold is negative
                centroids[count, 0] = sy / s if s > 0 else y
                centroids[count, 1] = sx / s if s > 0 else x
            count += 1
    return count


@numba.njit(parallel=True, **_JIT)
def _scan_group(frames, dark, gain, bg, xr, scratch, scratch_c, counts,
                with_centroids):  # pragma: no cover - compiled
    for i in prange(frames.shape[0]):
        counts[i] = _scan_frame(frames[i], dark, gain, bg, xr, scratch[i], scratch_c[i],
                                with_centroids)


@numba.njit(parallel=True, **_JIT)
def _gather(scratch, scratch_c, offsets, indices, centroids,
            with_centroids):  # pragma: no cover - compiled
    for i in prange(offsets.shape[0] - 1):
        k, m = offsets[i], offsets[i + 1] - offsets[i]
        indices[k:k + m] = scratch[i, :m]
        if with_centroids:
            centroids[k:k + m] = scratch_c[i, :m]


def count_block(
    frames: np.ndarray,
    dark: np.ndarray,
    background: float,
    xray: float,
    centroids: bool = False,
    gain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Events of a block of frames.

    Parameters
    ----------
    frames : ndarray, shape (n, h, w)
        The frames, any real dtype (C-contiguous is fastest).
    dark : ndarray of float32, shape (h, w)
        Dark reference (zeros for none).
    background, xray : float
        Thresholds, applied in float32.
    centroids : bool
        Also return the sub-pixel centroid of every event.
    gain : ndarray of float32, shape (h, w), optional
        Multiplies the dark-subtracted values (a flat field; 0 at bad pixels, which then
        never hold an event).

    Returns
    -------
    counts : ndarray of int64, shape (n,)
        Events per frame.
    indices : ndarray of uint32, shape (counts.sum(),)
        Flat (row-major) pixel index of each event, frame after frame, each frame's in
        raster order.
    centroids : ndarray of float32, shape (counts.sum(), 2) or None
        ``(y, x)`` of each event in detector px.

    Notes
    -----
    One pass over the frames: each frame's events go to its own row of a scratch array,
    then to their place in the output. Two events are never neighbours (each would have to
    beat the other), so a frame holds at most ``ceil(h/2) * ceil(w/2)``, the scratch row's
    length. Frames are taken in groups so the scratch stays at most ``_GROUP_BYTES``; a
    first pass that only counts, then a second that writes, took 2.5x as long.
    """
    n, h, w = frames.shape
    if h * w > 2**32:
        raise ValueError(f"frames of {h}x{w} px do not fit uint32 pixel indices")
    bg, xr = np.float32(background), np.float32(xray)
    cap = ((h + 1) // 2) * ((w + 1) // 2)
    return in_groups(n, cap, centroids, lambda g0, g1, scratch, scratch_c, counts: _scan_group(
        frames[g0:g1], dark, gain, bg, xr, scratch, scratch_c, counts, bool(centroids)))


def in_groups(
    n: int, cap: int, centroids: bool, scan: Callable[..., None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Events of ``n`` frames counted group by group into scratch rows, then gathered.

    ``scan(g0, g1, scratch, scratch_c, counts)`` writes the events of frames ``g0:g1`` into
    ``scratch[i, :counts[i]]`` (and their centroids into ``scratch_c``), at most ``cap`` per
    frame; groups hold as many frames as keep the scratch within ``_GROUP_BYTES``. Returns
    what :func:`count_block` returns.
    """
    per_frame = cap * (4 + (8 if centroids else 0))
    group = max(1, min(n, _GROUP_BYTES // per_frame))
    scratch = np.empty((group, cap), dtype=np.uint32)
    scratch_c = np.empty((group, cap if centroids else 0, 2), dtype=np.float32)
    counts = np.empty(n, dtype=np.int64)
    parts, cparts = [], []
    for g0 in range(0, n, group):
        g1 = min(n, g0 + group)
        scan(g0, g1, scratch, scratch_c, counts[g0:g1])
        offsets = np.zeros(g1 - g0 + 1, dtype=np.int64)
        np.cumsum(counts[g0:g1], out=offsets[1:])
        idx = np.empty(int(offsets[-1]), dtype=np.uint32)
        cent = np.empty((len(idx) if centroids else 0, 2), dtype=np.float32)
        _gather(scratch, scratch_c, offsets, idx, cent, bool(centroids))
        parts.append(idx)
        cparts.append(cent)
    indices = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if not centroids:
        return counts, indices, None
    return counts, indices, cparts[0] if len(cparts) == 1 else np.concatenate(cparts)
