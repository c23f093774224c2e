"""Kernels on events (counted electrons) instead of frames: no frame is ever densified.

A tile of counted data is CSR over its frames (:class:`~framescope.udf._base.Events`):
frame ``f``'s events are ``indices[offsets[f]:offsets[f + 1]]``, flat pixel indices, with
an optional weight each (``values``; an empty array here means one count per event). At
0.1 e-/px an event costs 4 bytes against the 2 bytes of every pixel of a uint16 frame, so
a reduction over events reads ~1/5 of the bytes, and the per-pixel tables it gathers from
(mask weights, labels) are read only where electrons landed.

Every kernel gives what the dense kernel of :mod:`framescope.udf._fused` (or
:mod:`framescope.udf._segments`) gives on the densified frames: sums of counts are exact
in float64 (integers below 2**53), so single-valued masks, sum frames and COM with centres
on half pixels agree bit for bit; weighted masks are summed in float64 and rounded to
float32 once (the dense kernels sum float32 products, so those agree to float32 rounding).

Frames are independent: kernels run a ``prange`` over the tile's frames, each writing its
own output row; only :func:`sum_events` (one shared frame) is serial, and at ~1 ns per event
it is not what bounds a job.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from framescope.udf._fused import _HELPER, _JIT

__all__ = [
    "apply_masks_events",
    "apply_masks_events_labels",
    "com_events",
    "densify_events",
    "pixel_slots",
    "sum_events",
]


@numba.njit(**_JIT)
def densify_events(
    offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, out: np.ndarray
) -> None:
    """Dense frames of events: ``out[f]`` = the counts of frame ``f`` (overwritten).

    Parameters
    ----------
    offsets : ndarray of int64, shape (n + 1,)
    indices : ndarray of uint16, uint32 or int32, shape (events,)
    values : ndarray, shape (events,) or (0,)
        Weight of every event; empty: one count each.
    out : ndarray, shape (n, pixels), C-contiguous
        The frames, flat.
    """
    one = values.shape[0] == 0
    for f in prange(out.shape[0]):
        row = out[f]
        row[:] = 0
        for e in range(offsets[f], offsets[f + 1]):
            if one:
                row[indices[e]] += 1
            else:
                row[indices[e]] += values[e]


@numba.njit(**_HELPER)
def _slot_total(indices: np.ndarray, table: np.ndarray, a: int, b: int) -> int:
    """``sum(table[indices[a:b]])``, eight events per step into two sums.

    Unrolled by hand: LLVM vectorises the plain loop's index loads and then extracts every
    lane for its scalar table load, which ran 1.6x slower than eight independent scalar
    gathers a step (0.84 vs 0.50 ns per event on one core, uint16 indices, uint8 table).
    """
    c0 = 0
    c1 = 0
    e = a
    while e + 8 <= b:
        c0 += (np.int64(table[indices[e]]) + np.int64(table[indices[e + 1]])
               + np.int64(table[indices[e + 2]]) + np.int64(table[indices[e + 3]]))
        c1 += (np.int64(table[indices[e + 4]]) + np.int64(table[indices[e + 5]])
               + np.int64(table[indices[e + 6]]) + np.int64(table[indices[e + 7]]))
        e += 8
    while e < b:
        c0 += np.int64(table[indices[e]])
        e += 1
    return c0 + c1


@numba.njit(inline="always", **_HELPER)
def add_label(res: np.ndarray, lab: int, total: float, label_ptr: np.ndarray,
              label_mask: np.ndarray, label_weight: np.ndarray) -> None:
    """``res[mask] += total * weight`` for each mask of label ``lab``: how the label
    kernels (events, bit planes) turn per-label sums into images, in one order, so that
    they agree bit for bit."""
    for j in range(label_ptr[lab], label_ptr[lab + 1]):
        res[label_mask[j]] += total * label_weight[j]


@numba.njit(**_JIT)
def apply_masks_events_labels(
    offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, pixel_slot: np.ndarray,
    label_ptr: np.ndarray, label_mask: np.ndarray, label_weight: np.ndarray, out: np.ndarray,
) -> None:
    """Single-valued masks over events: the segment kernel's label sums, event by event.

    Parameters
    ----------
    offsets, indices, values : ndarray
        The events (see :func:`densify_events`).
    pixel_slot : ndarray of uint8, uint16 or int32, shape (pixels,)
        ``1 + label`` of every pixel (the label: which set of masks covers it), 0 outside
        all masks (:func:`pixel_slots`).
    label_ptr, label_mask, label_weight : ndarray
        Masks and values of each label, as in :class:`~framescope.udf._segments.Segments`.
    out : ndarray of float32, shape (n, k)
        Overwritten with the images.

    Notes
    -----
    Events are counted per slot without a branch (slot 0 collects those outside every
    mask): whether an electron fell in a ring is a coin toss the branch predictor loses,
    which cost 2.3x. One label (a disk, a ring) sums the slots themselves, eight events a
    step (:func:`_slot_total`). The per-label sums are exact and combined with the mask
    values in the same order as :func:`~framescope.udf._segments.apply_masks_segments`, so
    the result is identical to it on the densified frames.
    """
    k = out.shape[1]
    n_labels = label_ptr.shape[0] - 1
    one = values.shape[0] == 0
    # a disk, a ring (one label, each of its masks once): no per-frame scratch at all
    single = one and n_labels == 1
    seen = np.zeros(k, dtype=np.bool_)
    for j in range(label_ptr[0], label_ptr[1] if single else 0):
        single = single and not seen[label_mask[j]]
        seen[label_mask[j]] = True
    if single:
        for f in prange(out.shape[0]):
            c = np.float64(_slot_total(indices, pixel_slot, offsets[f], offsets[f + 1]))
            for q in range(k):
                out[f, q] = 0.0
            for j in range(label_ptr[0], label_ptr[1]):
                out[f, label_mask[j]] = np.float32(0.0 + c * label_weight[j])
        return
    for f in prange(out.shape[0]):
        sums = np.zeros(n_labels + 1, dtype=np.float64)
        if one:
            counts = np.zeros(n_labels + 1, dtype=np.int64)
            for e in range(offsets[f], offsets[f + 1]):
                counts[pixel_slot[indices[e]]] += 1
            for lab in range(n_labels + 1):
                sums[lab] = counts[lab]
        else:
            for e in range(offsets[f], offsets[f + 1]):
                sums[pixel_slot[indices[e]]] += np.float64(values[e])
        res = np.zeros(k, dtype=np.float64)
        for lab in range(n_labels):
            add_label(res, lab, sums[lab + 1], label_ptr, label_mask, label_weight)
        for q in range(k):
            out[f, q] = np.float32(res[q])


@numba.njit(**_JIT)
def apply_masks_events(
    offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, weights: np.ndarray,
    out: np.ndarray,
) -> None:
    """Weighted masks over events: ``out[f, q] = sum over events e of weights[idx_e, q]``.

    Parameters
    ----------
    offsets, indices, values : ndarray
        The events (see :func:`densify_events`).
    weights : ndarray of float32, shape (pixels, k), C-contiguous
        The masks, one row per detector pixel.
    out : ndarray of float32, shape (n, k)
        Overwritten with the images, summed in float64 and rounded once.
    """
    k = out.shape[1]
    one = values.shape[0] == 0
    for f in prange(out.shape[0]):
        acc = np.zeros(k, dtype=np.float64)
        for e in range(offsets[f], offsets[f + 1]):
            w = weights[indices[e]]
            v = 1.0 if one else np.float64(values[e])
            for q in range(k):
                acc[q] += np.float64(w[q]) * v
        for q in range(k):
            out[f, q] = np.float32(acc[q])


@numba.njit(**_JIT)
def com_events(
    offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, inside: np.ndarray,
    cy: float, cx: float, width: int, out: np.ndarray,
) -> None:
    """Per-frame moments of the events inside a mask: what ``com_sums`` gives on frames.

    Parameters
    ----------
    offsets, indices, values : ndarray
        The events (see :func:`densify_events`).
    inside : ndarray of uint8, shape (pixels,)
        1 for the pixels that count, else 0.
    cy, cx : float
        The reference centre.
    width : int
        Frame width (``det_x``).
    out : ndarray of float64, shape (n, 3)
        Overwritten with ``sum(I)``, ``sum(I * (y - cy))``, ``sum(I * (x - cx))`` of each
        frame.

    Notes
    -----
    Counts sum ``y`` and ``x`` as exact integers without a branch (``inside`` multiplies)
    and take the centre off once per frame: ``sum(y - cy) = sum(y) - n cy``. The row of a
    pixel is ``floor((p + 0.5) / w)`` in float64 (exact: ``p + 0.5`` is at least ``0.5``
    from a multiple of ``w``), a multiply where an integer division costs ~25 cycles.
    """
    inv = 1.0 / width
    one = values.shape[0] == 0
    for f in prange(out.shape[0]):
        if one:
            n = 0
            sy = 0
            sx = 0
            for e in range(offsets[f], offsets[f + 1]):
                p = np.int64(indices[e])
                y = np.int64((p + 0.5) * inv)
                m = np.int64(inside[p])
                n += m
                sy += m * y
                sx += m * (p - y * width)
            total = np.float64(n)
            moment_y = np.float64(sy) - total * cy
            moment_x = np.float64(sx) - total * cx
        else:
            total = 0.0
            moment_y = 0.0
            moment_x = 0.0
            for e in range(offsets[f], offsets[f + 1]):
                p = np.int64(indices[e])
                y = np.int64((p + 0.5) * inv)
                v = np.float64(values[e]) * inside[p]
                total += v
                moment_y += v * (y - cy)
                moment_x += v * (p - y * width - cx)
        out[f, 0] = total
        out[f, 1] = moment_y
        out[f, 2] = moment_x


@numba.njit(cache=True, nogil=True)
def sum_events(
    offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, out: np.ndarray
) -> None:
    """Add the events of all frames to ``out`` (float64, shape (pixels,)): a bincount."""
    one = values.shape[0] == 0
    for e in range(offsets[0], offsets[offsets.shape[0] - 1]):
        out[indices[e]] += 1.0 if one else np.float64(values[e])


def pixel_slots(rows: np.ndarray, x0: np.ndarray, x1: np.ndarray, label: np.ndarray,
                frame_shape: tuple[int, int]) -> np.ndarray:
    """``1 + label`` of every pixel (0 outside) from the segments of single-valued masks.

    Parameters
    ----------
    rows, x0, x1, label : ndarray of int64
        The segments (:class:`~framescope.udf._segments.Segments`).
    frame_shape : (int, int)

    Returns
    -------
    ndarray of uint8 (up to 255 labels), uint16 (up to 65535) or int32, shape (pixels,)
        The narrowest that holds the labels: the event kernels gather from it once per
        event, and a 256x256 table of uint8 is 64 KiB (L1/L2) where int32 was 256 KiB.
    """
    top = int(label.max()) + 1 if label.size else 0
    dtype = np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.int32
    out = np.zeros(frame_shape, dtype=dtype)
    for r, a, b, lab in zip(rows.tolist(), x0.tolist(), x1.tolist(), label.tolist(),
                            strict=True):
        out[r, a:b] = lab + 1
    return out.ravel()

