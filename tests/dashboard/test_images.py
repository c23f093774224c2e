from __future__ import annotations

import math

import numpy as np
import pytest

import framescope.masks as fm
from framescope.dashboard._images import (
    MAX_BYTES,
    block_coords,
    bright_field_disk,
    color_limits,
    display_frame,
    downsample,
    roi_mask,
)


@pytest.mark.parametrize("shape", [(64, 64), (512, 512), (600, 300), (1030, 1030), (4096, 4096)])
def test_downsample_bounds_the_payload(shape):
    img = np.ones(shape, np.float32)
    out, f = downsample(img)
    assert out.dtype == np.float32
    assert max(out.shape) <= 512
    assert out.nbytes <= MAX_BYTES < 10**6
    assert out.shape == (math.ceil(shape[0] / f), math.ceil(shape[1] / f))
    if max(shape) <= 256:
        assert f == 1


def test_downsample_is_a_block_mean_ignoring_nan():
    img = np.arange(1030 * 6, dtype=np.float32).reshape(1030, 6)
    img[:3, :] = np.nan  # not computed yet
    out, f = downsample(img, max_side=512)
    assert f == 3
    ref = np.full((344, 2), np.nan)
    for i in range(344):
        for j in range(2):
            block = img[i * 3:(i + 1) * 3, j * 3:(j + 1) * 3]
            if np.isfinite(block).any():
                ref[i, j] = np.nanmean(block)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(block_coords(1030, 3)[:2], [1, 4])  # block centres, in px


def test_display_scale_and_colour_limits():
    frame = np.array([[0, 9], [99, -1]], np.float32)
    np.testing.assert_allclose(display_frame(frame, "linear"), frame)
    np.testing.assert_allclose(display_frame(frame, "log"), [[0, 1], [2, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        display_frame(frame, "sqrt")
    assert color_limits(np.array([1.0, 2, 3, np.nan]), (0, 100)) == (1.0, 3.0)
    assert color_limits(np.full(3, np.nan)) == (0.0, 1.0)
    lo, hi = color_limits(np.full(4, 5.0))
    assert lo == 5
    assert hi > lo


def test_bright_field_disk_of_a_drawn_disk():
    yy, xx = np.mgrid[:128, :128]
    rng = np.random.default_rng(0)
    frame = np.where(np.hypot(yy - 40.3, xx - 52.7) <= 12, 100.0, 1.0)
    frame += rng.normal(0, 3, frame.shape)
    frame[5, 5] = 5000  # a hot pixel must not move the centre
    cy, cx, r = bright_field_disk(frame)
    assert abs(cy - 40.3) < 0.2
    assert abs(cx - 52.7) < 0.2
    assert abs(r - 12) < 0.5
    with pytest.raises(ValueError, match="no positive"):
        bright_field_disk(np.zeros((8, 8)))


def test_bright_field_disk_of_the_synthetic_mean_frame():
    from framescope.datasets import synthetic

    arr = synthetic(scan=(32, 32), det=(64, 64))  # aperture radius 64 / 8 at (32, 32)
    cy, cx, r = bright_field_disk(arr.values.mean(axis=(0, 1)))
    # the object's mean phase gradient shifts the mean pattern a little
    assert abs(cy - 32) < 1
    assert abs(cx - 32) < 1
    assert abs(r - 8) < 1


def test_roi_mask_is_the_union_of_the_drawn_shapes():
    boxes = [{"y0": 1.5, "x0": 2.5, "y1": 4.5, "x1": 6.5}]
    polys = [[(8, 0), (8, 9), (11, 0)]]
    roi = roi_mask((12, 10), boxes, polys)
    ref = (fm.box(1.5, 2.5, 4.5, 6.5).rasterize((12, 10)) > 0) | (
        fm.polygon(polys[0]).rasterize((12, 10)) > 0)
    np.testing.assert_array_equal(roi, ref)
    assert roi_mask((12, 10)) is None
    assert roi_mask((12, 10), [{"y0": 50, "x0": 50, "y1": 60, "x1": 60}]) is None
