"""Fused numba kernels for the memory-bound tile reductions: masks, frame sums, COM sums.

Every kernel reads a C-contiguous tile ``(n, h, w)`` of uint8/uint16/uint32/float32 frames
(read-only memory maps included; inputs are never written) and writes into outputs the
caller owns, so the engine's per-tile buffers are filled without temporaries.

Masks are given as horizontal *runs* (:func:`~framescope.udf._kernels.mask_runs`): run
``r`` covers ``frame[row_index[r], x0[r]:x1[r]]`` and the weights of its pixels follow
those of run ``r - 1`` in ``weights`` ``(pixels, k)``. Only pixels where some mask is
nonzero are read (a disk of radius 32 on a 256 x 256 frame: ~5 % of the bytes), and the
conversion of the counts is fused into the sum instead of copying the tile to float32.

Numerics: ``fastmath`` is off, so LLVM may not reorder float additions and does not
vectorise a float sum written as a loop. Float products are therefore summed pairwise, as
elementwise loops over halves of a buffer, which vectorise and fix the rounding in the
code rather than the CPU. Integer sums reassociate freely, so counts are summed as integers
wherever that is exact. Products with float32 masks accumulate in float32 (like the
float32 GEMM they replace); sums of counts in integers or float64.

All kernels are compiled with ``cache=True``: a new process loads the machine code from
``__pycache__`` (one entry per input dtype and read-only flag) instead of compiling, on
the kernel's first call. This module is imported on first use (see
:mod:`framescope.udf._kernels`), not by ``import framescope``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

_JIT = {"cache": True, "parallel": True, "fastmath": False, "nogil": True}
_HELPER = {"fastmath": False, "nogil": True}  # compiled into (and cached with) the kernels

__all__ = ["apply_masks_runs", "com_sums", "sum_frames"]

# bytes of each frame a sum_frames block reads per frame: long enough to stream
_BLOCK_BYTES = 8192
# frames per integer accumulation in sum_frames: 65536 * 65535 < 2**32 for (u)int8/16
_INT_FRAMES = 65536


# ---- dtype-dependent helpers, resolved at compile time --------------------------------------
def _count_zero(tile: np.ndarray) -> np.generic:
    """Zero of the exact accumulator for sums of ``tile`` values (stub, see overload)."""


@overload(_count_zero, jit_options=_HELPER)
def _count_zero_impl(tile):  # bare signature: numba compares it with the stub
    dtype = tile.dtype
    if isinstance(dtype, types.Integer) and dtype.signed:
        return lambda tile: np.int64(0)
    if isinstance(dtype, types.Integer) and dtype.bitwidth <= 16:
        return lambda tile: np.uint32(0)  # row, column or 65536-frame sums of 16-bit fit
    if isinstance(dtype, types.Integer):
        return lambda tile: np.uint64(0)
    return lambda tile: np.float64(0)


def _is_integer(tile: np.ndarray) -> bool:
    """Whether ``tile`` holds integers (stub, see overload)."""


@overload(_is_integer, jit_options=_HELPER)
def _is_integer_impl(tile):
    flag = isinstance(tile.dtype, types.Integer)
    return lambda tile: flag


# ---- virtual detectors -----------------------------------------------------------------------
@numba.njit(**_HELPER)
def _run_starts(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Index into ``weights`` of each run's first pixel (exclusive cumulative length)."""
    start = np.empty(x0.shape[0], dtype=np.int64)
    p = 0
    for r in range(x0.shape[0]):
        start[r] = p
        p += x1[r] - x0[r]
    return start


@numba.njit(**_HELPER)
def _uniform(w: np.ndarray) -> bool:
    """Whether every entry of ``w`` equals ``w[0]`` (binary disks, rings, polygons …)."""
    if w.shape[0] == 0:
        return False
    c = w[0]
    for p in range(w.shape[0]):  # noqa: SIM110 (a loop with an early exit in numba)
        if w[p] != c:
            return False
    return True


@numba.njit(**_HELPER)
def _count_runs(
    frame: np.ndarray, row_index: np.ndarray, x0: np.ndarray, x1: np.ndarray
) -> float:
    """Exact sum of the run pixels of one integer frame (as float64, exact below 2**53)."""
    total = 0.0
    for r in range(row_index.shape[0]):
        seg = frame[row_index[r], x0[r]:x1[r]]
        s = _count_zero(frame)
        for i in range(seg.shape[0]):  # integer reduction: vectorised
            s += seg[i]
        total += np.float64(s)
    return total


@numba.njit(fastmath=True, nogil=True)
def _weighted_runs(
    frame: np.ndarray, row_index: np.ndarray, x0: np.ndarray, x1: np.ndarray, start: np.ndarray,
    w: np.ndarray,
) -> float:
    """``sum(frame[runs] * w)`` in float64. Reassociating a float64 sum of float32 products
    (fastmath: vectorised) keeps it far more accurate than the float32 result it becomes."""
    total = 0.0
    for r in range(row_index.shape[0]):
        seg = frame[row_index[r], x0[r]:x1[r]]
        ws = w[start[r]:start[r] + seg.shape[0]]
        for i in range(seg.shape[0]):
            total += np.float64(seg[i]) * np.float64(ws[i])
    return total


@numba.njit(**_HELPER)
def _gather(
    frame: np.ndarray, row_index: np.ndarray, x0: np.ndarray, x1: np.ndarray, start: np.ndarray,
    buf: np.ndarray,
) -> None:
    """Copy the run pixels of one frame, as float32, into contiguous ``buf``."""
    for r in range(row_index.shape[0]):
        seg = frame[row_index[r], x0[r]:x1[r]]
        dst = buf[start[r]:start[r] + seg.shape[0]]
        for i in range(seg.shape[0]):
            dst[i] = np.float32(seg[i])


@numba.njit(**_HELPER)
def _tree_dot(a: np.ndarray, w: np.ndarray, tmp: np.ndarray) -> float:
    """``sum(a * w)`` in float32, summed pairwise; ``tmp`` holds ``len(a) // 2 + 1``.

    Every level is one long elementwise loop over contiguous halves: vectorised without
    reordering by the compiler, and with the O(log n) rounding of a pairwise sum.
    """
    n = a.shape[0]
    if n < 2:
        return a[0] * w[0] if n else np.float32(0)
    h = n // 2
    m = n - h
    lo, hi, wlo, whi = a[:h], a[m:n], w[:h], w[m:n]
    for i in range(h):
        tmp[i] = lo[i] * wlo[i] + hi[i] * whi[i]
    if m > h:  # odd n: the middle element waits one level
        tmp[h] = a[h] * w[h]
    n = m
    while n > 1:
        h = n // 2
        lo, hi = tmp[:h], tmp[n - h:n]
        for i in range(h):
            lo[i] += hi[i]
        n -= h
    return tmp[0]


@numba.njit(**_JIT)
def apply_masks_runs(
    tile: np.ndarray, row_index: np.ndarray, x0: np.ndarray, x1: np.ndarray, weights: np.ndarray,
    out: np.ndarray,
) -> None:
    """Virtual detectors over runs: ``out[f, j] = sum(tile[f][runs] * weights[:, j])``.

    Parameters
    ----------
    tile : ndarray, shape (n, h, w), C-contiguous
        uint8, uint16, uint32 or float32 frames (may be read-only).
    row_index, x0, x1 : ndarray of int64, shape (runs,)
        The runs, as returned by :func:`~framescope.udf._kernels.mask_runs`.
    weights : ndarray of float32, shape (pixels, k)
        Mask values of the run pixels in run order; Fortran order (as ``mask_runs``
        returns) is used in place, C order is transposed once per call.
    out : ndarray of float32, shape (n, k)
        Overwritten with the products.

    Notes
    -----
    k = 1 with a single weight value (a binary disk, ring, box or polygon) on integer
    frames: the run pixels are summed exactly as integers and scaled once, reading
    the frame in place. One weighted mask (a detector with corrections folded in): the run
    pixels times the weights summed in float64, in place, vectorised. Otherwise each frame's
    run pixels are gathered once into a float32 buffer and every mask is a pairwise float32
    dot product with it.
    """
    n = tile.shape[0]
    k = weights.shape[1]
    wt = np.ascontiguousarray(weights.T)  # (k, pixels): free for Fortran-ordered weights
    if k == 1 and _is_integer(tile) and _uniform(wt[0]):
        scale = np.float64(wt[0, 0])
        for f in prange(n):
            out[f, 0] = np.float32(_count_runs(tile[f], row_index, x0, x1) * scale)
        return
    start = _run_starts(x0, x1)
    pixels = wt.shape[1]
    if k == 1:  # one weighted detector (corrections folded in): no gather, float64 sums
        for f in prange(n):
            out[f, 0] = np.float32(_weighted_runs(tile[f], row_index, x0, x1, start, wt[0]))
        return
    for f in prange(n):
        buf = np.empty(pixels, dtype=np.float32)
        tmp = np.empty(pixels // 2 + 1, dtype=np.float32)
        _gather(tile[f], row_index, x0, x1, start, buf)
        for q in range(k):
            out[f, q] = _tree_dot(buf, wt[q], tmp)


# ---- frame sums ------------------------------------------------------------------------------
@numba.njit(**_JIT)
def sum_frames(tile: np.ndarray, out: np.ndarray) -> None:
    """Add the frames of ``tile`` to ``out``: ``out += tile.sum(axis=0)``.

    Parameters
    ----------
    tile : ndarray, shape (n, h, w), C-contiguous
        uint8, uint16, uint32 or float32 frames (may be read-only).
    out : ndarray of float64, shape (h, w)
        Accumulator, added to in place.

    Notes
    -----
    Threads split the frame into blocks of rows (~8 KiB of each frame), so no two write the
    same output. A block sums four frames at a time (four read streams in flight per core:
    1.5x the bandwidth of one) into a block-sized accumulator that stays in L1: exact
    integers for integer frames (uint32 for 8/16 bit, uint64 for 32 bit), float64 for
    float32, added to ``out`` once per block.
    """
    n, h, w = tile.shape
    rows = max(1, min(h, _BLOCK_BYTES // max(1, w * tile.itemsize)))
    for b in prange((h + rows - 1) // rows):
        y0 = b * rows
        y1 = min(h, y0 + rows)
        m = (y1 - y0) * w
        z = _count_zero(tile)
        dst = out[y0:y1]
        for g in range(0, n, _INT_FRAMES):
            acc = np.full(m, z)
            f = g
            end = min(n, g + _INT_FRAMES)
            while f + 4 <= end:
                a = tile[f, y0:y1].reshape(m)
                c = tile[f + 1, y0:y1].reshape(m)
                d = tile[f + 2, y0:y1].reshape(m)
                e = tile[f + 3, y0:y1].reshape(m)
                for i in range(m):
                    acc[i] += ((z + a[i]) + (z + c[i])) + ((z + d[i]) + (z + e[i]))
                f += 4
            while f < end:
                a = tile[f, y0:y1].reshape(m)
                for i in range(m):
                    acc[i] += z + a[i]
                f += 1
            for y in range(y1 - y0):
                for x in range(w):
                    dst[y, x] += np.float64(acc[y * w + x])


# ---- centre of mass --------------------------------------------------------------------------
@numba.njit(**_JIT)
def com_sums(
    tile: np.ndarray, ys: np.ndarray, xs: np.ndarray, row_index: np.ndarray, x0: np.ndarray,
    x1: np.ndarray, out: np.ndarray,
) -> None:
    """Per-frame intensity moments over a mask given as runs (weight 1).

    Parameters
    ----------
    tile : ndarray, shape (n, h, w), C-contiguous
        uint8, uint16, uint32 or float32 frames (may be read-only).
    ys : ndarray of float64, shape (h,)
        Coordinate of each frame row, relative to the reference centre (e.g.
        ``np.arange(h) - cy``).
    xs : ndarray of float64, shape (w,)
        Coordinate of each frame column, relative to the reference centre.
    row_index, x0, x1 : ndarray of int64, shape (runs,)
        The mask, as runs (see :func:`~framescope.udf._kernels.mask_runs`; weights are not
        used).
    out : ndarray of float64, shape (n, 3)
        Overwritten with ``sum(I)``, ``sum(I * y)``, ``sum(I * x)`` of each frame.

    Notes
    -----
    ``y`` is constant along a run and ``x`` along a column, so the hot loop only adds
    counts: one sum per run (times its ``ys``) and one per column (times ``xs`` once per
    frame). Both are exact integer sums for integer frames, float64 for float32.
    """
    w = tile.shape[2]
    lo = w
    hi = 0
    for r in range(x0.shape[0]):  # only the mask's columns need weighing
        lo = min(lo, x0[r])
        hi = max(hi, x1[r])
    for f in prange(tile.shape[0]):
        frame = tile[f]
        z = _count_zero(tile)
        cols = np.full(w, z)
        moment_y = 0.0
        for r in range(row_index.shape[0]):
            a = x0[r]
            seg = frame[row_index[r], a:x1[r]]
            col = cols[a:x1[r]]
            s = z
            for i in range(seg.shape[0]):
                s += seg[i]
                col[i] += seg[i]
            moment_y += np.float64(s) * ys[row_index[r]]
        total = 0.0
        moment_x = 0.0
        for x in range(lo, hi):
            c = np.float64(cols[x])
            total += c
            moment_x += c * xs[x]
        out[f, 0] = total
        out[f, 1] = moment_y
        out[f, 2] = moment_x
