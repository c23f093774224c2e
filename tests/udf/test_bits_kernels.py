"""Bit-plane frames: planes from events, and single-valued masks by AND and popcount against
the event kernel and numpy on the same events."""

from __future__ import annotations

import numpy as np
import pytest

import framescope as fs
from framescope.masks import MaskStack
from framescope.udf._bits import apply_masks_bits, events_to_bits, label_planes, words_per_frame
from framescope.udf._segments import mask_segments
from framescope.udf._sparse import apply_masks_events_labels, pixel_slots

DET = (13, 21)  # 273 px: the last word of a plane is partly used


def binary_events(n: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR events with at most one per pixel and frame, each frame in random order."""
    rng = np.random.default_rng(seed)
    size = DET[0] * DET[1]
    parts = [rng.permutation(size)[: rng.binomial(size, rate)] for _ in range(n)]
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    return offsets, np.concatenate(parts).astype(np.uint16)


def test_planes_hold_exactly_the_events():
    offsets, indices = binary_events(9, 0.3, 0)
    planes = np.full((9, words_per_frame(DET[0] * DET[1])), 7, np.uint64)  # overwritten
    assert events_to_bits(offsets, indices, planes)
    bits = np.unpackbits(planes.view(np.uint8), axis=1, bitorder="little")
    for f in range(9):
        want = np.zeros(bits.shape[1], np.uint8)
        want[indices[offsets[f]:offsets[f + 1]]] = 1
        np.testing.assert_array_equal(bits[f], want)


def test_a_pixel_twice_in_a_frame_is_not_a_plane():
    offsets, indices = binary_events(4, 0.2, 1)
    indices = np.insert(indices, offsets[3], indices[offsets[2]])  # frame 2 gets a repeat
    offsets[3:] += 1
    planes = np.empty((4, words_per_frame(DET[0] * DET[1])), np.uint64)
    assert not events_to_bits(offsets, indices, planes)


STACKS = {
    "ring": {"ring": fs.masks.ring(cy=6, cx=10.5, r_in=2, r_out=6)},
    "overlapping": {"ring": fs.masks.ring(cy=6, cx=10.5, r_in=2, r_out=6),
                    "disk": fs.masks.disk(cy=5, cx=9, r=3),
                    "box": fs.masks.box(y0=0, y1=4, x0=14, x1=21)},
    "valued": {"a": 3.5 * fs.masks.disk(cy=6, cx=4, r=3).rasterize(DET),
               "b": -2.0 * fs.masks.box(y0=8, y1=13, x0=0, x1=21).rasterize(DET)},
}


@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize("rate", [0.0, 0.05, 0.6])
def test_masks_on_planes_equal_the_event_kernel_and_numpy(name, rate):
    masks = MaskStack.from_any(STACKS[name])
    dense = masks.dense(DET)  # (pixels, k)
    seg = mask_segments(dense.T.reshape(-1, *DET))
    slot = pixel_slots(seg.rows, seg.x0, seg.x1, seg.label, DET)
    planes = label_planes(slot, len(seg.label_ptr) - 1)
    offsets, indices = binary_events(11, rate, 2)
    bits = np.empty((11, planes.shape[1]), np.uint64)
    assert events_to_bits(offsets, indices, bits)
    got = np.empty((11, dense.shape[1]), np.float32)
    apply_masks_bits(bits, planes, seg.label_ptr, seg.label_mask, seg.label_weight, got)
    by_events = np.empty_like(got)
    apply_masks_events_labels(offsets, indices, np.empty(0, np.float32), slot, seg.label_ptr,
                              seg.label_mask, seg.label_weight, by_events)
    np.testing.assert_array_equal(got, by_events)  # the same sums, combined the same way
    frames = np.zeros((11, DET[0] * DET[1]))
    for f in range(11):
        frames[f, indices[offsets[f]:offsets[f + 1]]] = 1
    np.testing.assert_allclose(got, frames @ dense, rtol=1e-6)


def test_label_planes():
    slot = np.zeros(DET[0] * DET[1], np.uint8)
    slot[70:75] = 1  # word 1
    slot[200] = 2  # word 3
    slot[5] = 2  # word 0
    planes = label_planes(slot, 2)
    assert planes.shape == (2, 5)
    assert np.count_nonzero(planes) == 3
    assert int(planes[0, 1]) == sum(1 << b for b in range(70 - 64, 75 - 64))
    assert int(planes[1, 0]) == 1 << 5
    assert int(planes[1, 3]) == 1 << (200 - 192)
