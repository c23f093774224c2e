"""Segment sums of single-valued masks against a float64 einsum over the dense masks."""

from __future__ import annotations

import numpy as np
import pytest

import framescope.masks as fm
from framescope.udf import ApplyMasks, Meta, Tile
from framescope.udf._kernels import fused_view
from framescope.udf._segments import apply_masks_segments, mask_segments

SHAPE = (17, 19)
DTYPES = ["uint8", "uint16", "uint32", "float32"]
rng = np.random.default_rng(11)

# overlapping, touching the border, single pixels, disjoint rings; mask values other than 1
SPECS = [
    fm.ring(8, 9, 3, 9),
    fm.disk(16, 18, 3),
    fm.point(0, 0),
    fm.point(5, 7),
    fm.box(3, 0, 9, 2),
    fm.box(0, 0, 17, 19),
    fm.polygon([(1, 1), (14, 3), (12, 17), (5, 12)]),
    fm.array(np.where(np.arange(19) % 3 == 0, 2.5, 0.0)[None, :].repeat(17, 0)),
    *[fm.ring(8, 9, r, r + 2) for r in range(0, 8, 2)],
]


def _dense(specs) -> np.ndarray:
    return fm.MaskStack(specs).dense(SHAPE).T.reshape(-1, *SHAPE)


def _tile(dtype: str, n: int = 9) -> np.ndarray:
    if dtype == "float32":
        return rng.normal(100, 50, (n, *SHAPE)).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, (n, *SHAPE), dtype=dtype, endpoint=True)


def test_segments_partition_the_union_by_membership():
    dense = _dense(SPECS)
    seg = mask_segments(dense)
    covered = np.zeros(SHAPE, int)
    for r, a, b, lab in zip(seg.rows, seg.x0, seg.x1, seg.label, strict=True):
        assert a < b
        covered[r, a:b] += 1
        members = seg.label_mask[seg.label_ptr[lab]:seg.label_ptr[lab + 1]]
        want = np.flatnonzero((dense[:, r, a:b] != 0).all(axis=1))
        assert sorted(members) == sorted(want)
        # nothing outside the label covers any pixel of the segment
        others = np.setdiff1d(np.arange(len(dense)), members)
        assert not (dense[others, r, a:b] != 0).any()
    np.testing.assert_array_equal(covered, (dense != 0).any(axis=0).astype(int))


def test_weighted_masks_have_no_segments():
    soft = fm.array(np.linspace(0, 1, SHAPE[0] * SHAPE[1]).reshape(SHAPE))
    assert mask_segments(_dense([fm.disk(8, 9, 4), soft])) is None
    with pytest.raises(ValueError, match="expected a"):
        mask_segments(np.ones(SHAPE))


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_masks_segments_matches_einsum(dtype):
    dense = _dense(SPECS)
    tile = _tile(dtype)
    out = np.full((len(tile), len(dense)), np.nan, np.float32)
    apply_masks_segments(fused_view(tile), *mask_segments(dense).args(), out)
    ref = np.einsum("fyx,kyx->fk", tile.astype("f8"), dense.astype("f8"))
    # exact sums rounded once to float32
    np.testing.assert_allclose(out, ref.astype(np.float32), rtol=2e-7)


def test_apply_masks_udf_takes_segments_for_binary_stacks():
    tile = _tile("uint16")
    udf = ApplyMasks(fm.MaskStack(SPECS))
    plan = udf.prepare(Meta((1, len(tile)), SHAPE, tile.dtype))
    assert plan.segments is not None
    assert plan.runs is None  # 12 masks: segments instead of the k <= 8 run kernel
    out = np.empty((len(tile), len(SPECS)), np.float32)
    udf.process_tile(Tile(tile, np.arange(len(tile))), {"intensity": out}, plan)
    ref = np.einsum("fyx,kyx->fk", tile.astype("f8"), _dense(SPECS).astype("f8"))
    np.testing.assert_allclose(out, ref, rtol=2e-7)
