"""Counted frames as bit planes: single-valued virtual detectors by AND and popcount.

Counting by local maxima puts at most one event on a pixel of a frame, so such a frame is a
bit plane: one bit per pixel, 8 KiB for 256 x 256 whatever the dose. A single-valued mask
(disk, ring, box, polygon) is a bit plane as well, and the electrons a frame puts in it are
``sum(popcount(frame_word & mask_word))``: a streaming pass with no table lookup per event.
The event kernels of :mod:`framescope.udf._sparse` gather a mask value for every event
(~0.4-0.6 ns each on one core, a load the CPU cannot vectorise: AVX-512 gathers ran slower
here); at 0.05 events/px that is ~1.5 us per 256 x 256 frame, against ~0.4 us for the AND
and popcount of its 1024 words, which reads about as many bytes as the uint16 events.

The counts per label are exact integers and are combined with the masks' values exactly
as :func:`framescope.udf._sparse.apply_masks_events_labels` combines them, so the images
are identical to the event kernel's (and the dense segment kernel's).
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir
import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from framescope.udf._fused import _JIT
from framescope.udf._sparse import add_label

__all__ = ["apply_masks_bits", "events_to_bits", "label_planes", "words_per_frame"]


def words_per_frame(n_pixels: int) -> int:
    """64-bit words of one frame's bit plane."""
    return (int(n_pixels) + 63) // 64


@intrinsic
def _popcount(typingctx: Any, x: Any) -> Any:
    """Set bits of a uint64 (LLVM's ``ctpop``: ``popcnt``, vectorised where the CPU can)."""
    sig = types.uint64(types.uint64)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


@numba.njit(**_JIT)
def events_to_bits(offsets: np.ndarray, indices: np.ndarray, out: np.ndarray) -> bool:
    """Set the bit of every event: ``out[f]`` is frame ``f``'s plane (overwritten).

    Parameters
    ----------
    offsets : ndarray of int64, shape (n + 1,)
    indices : ndarray of uint16, uint32 or int32, shape (events,)
    out : ndarray of uint64, shape (n, words)

    Returns
    -------
    bool
        False if some pixel holds two events of one frame: the frames are not bit planes
        (``out`` is then incomplete and must not be used).
    """
    n = out.shape[0]
    clash = np.zeros(n, dtype=np.bool_)
    for f in prange(n):
        row = out[f]
        row[:] = 0
        for e in range(offsets[f], offsets[f + 1]):
            p = np.uint64(indices[e])
            w = p >> np.uint64(6)
            bit = np.uint64(1) << (p & np.uint64(63))
            clash[f] |= (row[w] & bit) != 0
            row[w] |= bit
    return not clash.any()


def label_planes(pixel_slot: np.ndarray, n_labels: int) -> np.ndarray:
    """The bit plane of every label of a pixel-slot table (see ``pixel_slots``).

    Parameters
    ----------
    pixel_slot : ndarray of int, shape (pixels,)
        ``1 + label`` of every pixel, 0 outside all masks.
    n_labels : int

    Returns
    -------
    ndarray of uint64, shape (n_labels, words)
    """
    words = words_per_frame(pixel_slot.size)
    bits = np.zeros((n_labels, words * 64), dtype=np.uint8)
    inside = np.flatnonzero(pixel_slot)
    bits[pixel_slot[inside].astype(np.int64) - 1, inside] = 1
    return np.ascontiguousarray(
        np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64))


@numba.njit(**_JIT)
def apply_masks_bits(
    bits: np.ndarray, planes: np.ndarray, label_ptr: np.ndarray, label_mask: np.ndarray,
    label_weight: np.ndarray, out: np.ndarray,
) -> None:
    """Single-valued masks over bit-plane frames: the events per label, then the images.

    Parameters
    ----------
    bits : ndarray of uint64, shape (n, words)
        The frames (:func:`events_to_bits`).
    planes : ndarray of uint64, shape (labels, words)
        The labels' planes (:func:`label_planes`).
    label_ptr, label_mask, label_weight : ndarray
        Masks and values of each label, as in :class:`~framescope.udf._segments.Segments`.
    out : ndarray of float32, shape (n, k)
        Overwritten with the images.

    Notes
    -----
    Whole rows are read even where a plane is empty (a ring leaves out the rows above and
    below it): reading only the words a plane uses ran 1.9x slower on 256 x 256 frames,
    as the broken stream defeats the hardware prefetcher.
    """
    n, k = out.shape
    n_labels = planes.shape[0]
    res = np.zeros((n, k), dtype=np.float64)
    for f in prange(n):
        row = bits[f]
        for lab in range(n_labels):
            plane = planes[lab]
            c = np.uint64(0)
            for w in range(row.shape[0]):
                c += _popcount(row[w] & plane[w])
            add_label(res[f], lab, np.float64(c), label_ptr, label_mask, label_weight)
        for q in range(k):
            out[f, q] = np.float32(res[f, q])
