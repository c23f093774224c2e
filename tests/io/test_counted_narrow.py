"""The counted reader keeps event pixels as uint16 on detectors of up to 65536 pixels
(uint32 above), and the engine's results on them equal numpy on the densified counts."""

from __future__ import annotations

import numpy as np
import pytest

import framescope as fs
from framescope.counting import CountedData, save_counted
from framescope.io._counted import CountedReader

SCAN = (3, 4)


def counted(tmp_path, det: tuple[int, int], seed: int):
    rng = np.random.default_rng(seed)
    n, size = SCAN[0] * SCAN[1], det[0] * det[1]
    counts = rng.poisson(30, n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    indices = rng.integers(0, size, offsets[-1]).astype(np.uint32)
    indices[:2] = (0, size - 1)  # the corners: the largest index must survive narrowing
    data = CountedData(scan_shape=SCAN, frame_shape=det, offsets=offsets, indices=indices)
    dense = np.zeros((n, size), np.float64)
    for f in range(n):
        np.add.at(dense[f], indices[offsets[f]:offsets[f + 1]].astype(np.int64), 1)
    path = save_counted(data, tmp_path / f"c{size}.h5")
    return path, dense.reshape(*SCAN, *det)


@pytest.mark.parametrize(("det", "dtype"), [((256, 256), np.uint16), ((257, 256), np.uint32)])
def test_indices_narrow_only_when_every_pixel_fits(tmp_path, det, dtype):
    path, dense = counted(tmp_path, det, seed=det[0])
    reader = CountedReader(path)
    offsets, indices, _ = reader.read_events(0, reader.n_frames)
    assert indices.dtype == dtype
    flat = dense.reshape(reader.n_frames, -1)
    for f in range(reader.n_frames):
        np.testing.assert_array_equal(
            np.bincount(indices[offsets[f]:offsets[f + 1]], minlength=flat.shape[1]),
            flat[f])
    arr = fs.open(path)
    ring = fs.masks.ring(cy=det[0] / 2, cx=det[1] / 2, r_in=20, r_out=90)
    got = arr.fs.virtual_image(ring, cache=False)
    m = fs.masks.MaskStack.from_any(ring).dense(det)[:, 0].astype(np.float64)
    np.testing.assert_array_equal(got.values, (flat @ m).reshape(SCAN).astype(np.float32))
    np.testing.assert_array_equal(arr.fs.sum_frame().values, dense.sum(axis=(0, 1)))
