"""The fused numba kernels against plain numpy (einsum / sum) references.

Every kernel compiles once per dtype (and read-only flag), which dominates the run time:
tiles are small and always read-only, the variant the UDFs use, except for one check that
writable tiles work too.
"""

from __future__ import annotations

import numpy as np
import pytest

import framescope.masks as fm
from framescope.udf import ApplyMasks, Meta, Tile
from framescope.udf._fused import apply_masks_runs, com_sums, sum_frames
from framescope.udf._kernels import fused_view, mask_runs

SHAPE = (17, 19)  # odd, so no row or run length is a multiple of a vector width
DTYPES = ["uint8", "uint16", "uint32", "float32"]

rng = np.random.default_rng(7)
CHECKER = (np.indices(SHAPE).sum(axis=0) % 2) * rng.uniform(-1, 2, SHAPE)
MASKS = {
    1: [fm.disk(8, 9, 5.5)],
    # all touch the border; the checkerboard makes single-pixel runs
    3: [fm.disk(0, 0, 4), fm.array(CHECKER), fm.point(16, 18)],
    10: [
        fm.ring(8, 9, 3, 9),
        fm.disk(16, 18, 3),
        fm.point(0, 0),
        fm.point(16, 18),
        fm.point(5, 7),
        fm.box(3, 0, 9, 2),
        fm.box(0, 0, 17, 19),
        fm.polygon([(1, 1), (14, 3), (12, 17), (5, 12)]),
        fm.array(CHECKER),
        fm.array(np.where(np.arange(19) % 3 == 0, 2.5, 0.0)[None, :].repeat(17, 0)),
    ],
}


def _tile(dtype: str, n: int = 7, shape: tuple[int, int] = SHAPE, writable: bool = False):
    if dtype == "float32":
        data = rng.normal(100, 50, (n, *shape)).astype(dtype)
    else:
        data = rng.integers(0, np.iinfo(dtype).max, (n, *shape), dtype=dtype, endpoint=True)
    data.flags.writeable = writable
    return data


def _dense(specs, shape=SHAPE) -> np.ndarray:
    return fm.MaskStack(specs).dense(shape).T.reshape(-1, *shape)


def _close(got, ref, rtol):
    """Within ``rtol`` of the reference's magnitude (signed weights may cancel)."""
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


# ---- mask_runs -----------------------------------------------------------------------------
def test_mask_runs_cover_the_union_in_row_major_order():
    dense = _dense(MASKS[10])
    rows, x0, x1, weights = mask_runs(dense)
    assert rows.dtype == x0.dtype == x1.dtype == np.int64
    assert (x1 > x0).all()
    assert np.all(np.diff(rows * SHAPE[1] + x0) > 0)  # row-major, non-overlapping
    covered = np.zeros(SHAPE, bool)
    for r, a, b in zip(rows, x0, x1, strict=True):
        assert not covered[r, a:b].any()
        covered[r, a:b] = True
        assert a == 0 or not covered[r, a - 1]  # runs are maximal
    union = (dense != 0).any(axis=0)
    np.testing.assert_array_equal(covered, union)
    assert weights.shape == (union.sum(), 10)
    assert weights.dtype == np.float32
    assert weights.flags.f_contiguous  # each mask's column contiguous for the kernel
    np.testing.assert_array_equal(weights, dense[:, union].T)
    singles = mask_runs(_dense(MASKS[3]))
    assert (singles[2] - singles[1] == 1).sum() > 100
    assert (singles[0][-1], singles[2][-1]) == (16, 19)  # ends on the frame's last pixel


def test_mask_runs_wants_a_stack():
    with pytest.raises(ValueError, match=r"\(k, h, w\)"):
        mask_runs(np.ones(SHAPE))


# ---- apply_masks_runs ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_apply_masks_runs_matches_einsum(dtype, k):
    tile = _tile(dtype)
    dense = _dense(MASKS[k])
    out = np.full((len(tile), k), np.nan, np.float32)
    apply_masks_runs(tile, *mask_runs(dense), out)
    ref = np.einsum("fyx,kyx->fk", tile.astype("f8"), dense.astype("f8"))
    _close(out, ref, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_masks_runs_non_uniform_single_mask(dtype):
    # one mask with varying weights: the float path, not the exact integer one
    tile = _tile(dtype)
    dense = _dense([fm.array(CHECKER + np.where(CHECKER == 0, 0.5, 0))])
    out = np.empty((len(tile), 1), np.float32)
    apply_masks_runs(tile, *mask_runs(dense), out)
    _close(out, np.einsum("fyx,kyx->fk", tile.astype("f8"), dense.astype("f8")), 1e-5)


def test_apply_masks_runs_single_mask_counts_exactly():
    tile = np.full((3, *SHAPE), np.iinfo(np.uint32).max, np.uint32)
    tile.flags.writeable = False
    dense = _dense([fm.box(0, 0, 17, 19)]) * np.float32(0.5)
    out = np.empty((3, 1), np.float32)
    apply_masks_runs(tile, *mask_runs(dense), out)
    assert out[0, 0] == np.float32(0.5 * (2**32 - 1) * 17 * 19)


def test_apply_masks_runs_accepts_c_ordered_weights_and_writable_tiles():
    tile = _tile("uint16", writable=True)
    before = tile.copy()
    dense = _dense(MASKS[3])
    rows, x0, x1, weights = mask_runs(dense)
    out_f = np.empty((len(tile), 3), np.float32)
    out_c = np.empty_like(out_f)
    apply_masks_runs(tile, rows, x0, x1, weights, out_f)
    apply_masks_runs(tile, rows, x0, x1, np.ascontiguousarray(weights), out_c)
    np.testing.assert_array_equal(out_f, out_c)
    np.testing.assert_array_equal(tile, before)


# ---- sum_frames ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [SHAPE, (70, 67)])  # one row block / several, uneven
def test_sum_frames_adds_to_out(dtype, shape):
    tile = _tile(dtype, n=7, shape=shape)  # 7: four frames at a time plus a remainder
    start = rng.normal(size=shape)
    out = start.copy()
    sum_frames(tile, out)
    ref = start + tile.astype("f8").sum(axis=0)
    if dtype == "float32":
        _close(out, ref, 1e-12)
    else:  # counts are summed exactly, then added once
        np.testing.assert_array_equal(out, start + tile.sum(axis=0, dtype=np.uint64))


# ---- com_sums ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_com_sums_match_numpy(dtype):
    tile = _tile(dtype)
    mask = (_dense([fm.ring(8, 9, 2, 10), fm.point(16, 18), fm.point(0, 0)]) != 0).any(0)
    ys = np.arange(SHAPE[0]) - 7.25
    xs = np.arange(SHAPE[1]) - 9.5
    out = np.full((len(tile), 3), np.nan)
    com_sums(tile, ys, xs, *mask_runs(mask[None])[:3], out)
    img = tile.astype("f8") * mask
    ref = np.stack([img.sum((1, 2)), (img * ys[:, None]).sum((1, 2)),
                    (img * xs).sum((1, 2))], axis=1)
    _close(out, ref, 1e-12)


# ---- wiring --------------------------------------------------------------------------------
def test_fused_view_only_for_kernel_layouts():
    tile = np.zeros((2, *SHAPE), np.uint16)
    view = fused_view(tile)
    assert view is not None
    assert not view.flags.writeable
    assert np.shares_memory(view, tile)
    assert tile.flags.writeable  # the caller's array is untouched
    assert fused_view(tile.astype(">u2")) is None
    assert fused_view(tile.astype("int16")) is None
    assert fused_view(tile[:, ::2]) is None


@pytest.mark.parametrize("k", [3, 10])
def test_apply_masks_udf_paths_agree(k):
    tile = _tile("uint16", writable=True)
    masks = fm.MaskStack(MASKS[k])
    udf = ApplyMasks(masks)
    plan = udf.prepare(Meta((1, len(tile)), SHAPE, tile.dtype))
    # both stacks hold a weighted mask (CHECKER): no segment plan
    assert plan.segments is None
    assert (plan.runs is not None) == (k <= 8)
    out = np.empty((len(tile), k), np.float32)
    udf.process_tile(Tile(tile, np.arange(len(tile))), {"intensity": out}, plan)
    _close(out, np.einsum("fyx,kyx->fk", tile.astype("f8"), _dense(MASKS[k]).astype("f8")),
           1e-5)
