"""Tiles of events: lazy densifying, and every event kernel against the same UDF on the
densified frames (repeated pixels and weighted events included)."""

from __future__ import annotations

import numpy as np
import pytest

import framescope as fs
from framescope.engine._tasks import prepared
from framescope.masks import MaskStack
from framescope.udf import ApplyMasks, CenterOfMass, Events, Meta, SumFrame, Tile

DET = (9, 11)


def random_events(n: int, rate: float, seed: int, values: bool = False) -> Events:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate * DET[0] * DET[1], n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    # pixels repeat within a frame: several frames per scan position in a file
    indices = rng.integers(0, DET[0] * DET[1], offsets[-1]).astype(np.uint32)
    weights = rng.integers(1, 4, offsets[-1]).astype(np.uint16) if values else None
    return Events(offsets, indices, DET, weights)


def dense_of(ev: Events) -> np.ndarray:
    out = np.zeros((len(ev), DET[0] * DET[1]), np.int64)
    for f in range(len(ev)):
        sl = slice(ev.offsets[f], ev.offsets[f + 1])
        w = 1 if ev.values is None else ev.values[sl]
        np.add.at(out[f], ev.indices[sl].astype(np.int64), w)
    return out.reshape(len(ev), *DET)


@pytest.mark.parametrize("values", [False, True])
def test_densify_counts_repeats_and_values(values):
    ev = random_events(7, 0.4, 0, values)
    out = np.full((7, *DET), 99, np.uint16)  # stale contents are overwritten
    np.testing.assert_array_equal(ev.densify(out), dense_of(ev))
    with pytest.raises(ValueError, match=r"expected a C-contiguous out of shape \(7, 9, 11\)"):
        ev.densify(np.empty((6, *DET), np.uint16))


def test_tile_densifies_once_and_only_when_asked():
    ev = random_events(5, 0.3, 1)
    calls = []

    def densify():
        calls.append(1)
        return ev.densify(np.empty((5, *DET), np.uint16))

    tile = Tile(None, np.arange(5), ev, densify)
    assert len(tile) == 5
    assert not calls
    np.testing.assert_array_equal(tile.data, dense_of(ev))
    assert tile.flat.shape == (5, DET[0] * DET[1])
    assert len(calls) == 1
    # without a densify function a tile of events makes its own frames
    np.testing.assert_array_equal(Tile(None, np.arange(5), ev, dtype=np.uint8).data,
                                  dense_of(ev))
    with pytest.raises(ValueError, match="expected data or events"):
        Tile(None, np.arange(5))


def run_tile(udf, ev: Events, dense: bool):
    meta = Meta((1, len(ev)), DET, np.dtype(np.uint16))
    assert udf.takes_events(meta)
    state = prepared(udf, meta)
    res = {k: b.allocate(meta, len(ev)) for k, b in udf.buffers(meta).items()}
    frames = np.ascontiguousarray(dense_of(ev).astype(np.uint16))
    tile = Tile(frames, np.arange(len(ev))) if dense else Tile(None, np.arange(len(ev)), ev)
    udf.process_tile(tile, res, state)
    if not dense:
        assert tile._data is None  # never densified
    return res


MASKS = {
    "ring": fs.masks.ring(cy=4, cx=5.5, r_in=1, r_out=4),
    "rings": {"a": fs.masks.ring(cy=4, cx=5, r_in=0, r_out=3),
              "b": fs.masks.ring(cy=4, cx=5, r_in=2, r_out=5),
              "c": fs.masks.box(y0=0, y1=3, x0=0, x1=11)},
    "weighted": np.random.default_rng(5).random(DET).astype(np.float32),
    "weighted3": list(np.random.default_rng(6).random((3, *DET)).astype(np.float32)),
}


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("values", [False, True])
def test_masks_on_events_equal_masks_on_frames(name, values):
    ev = random_events(13, 0.3, 2, values)
    udf = ApplyMasks(MASKS[name])
    got = run_tile(udf, ev, dense=False)["intensity"]
    on_frames = run_tile(udf, ev, dense=True)["intensity"]
    m = MaskStack.from_any(MASKS[name]).dense(DET).astype(np.float64)
    exact = dense_of(ev).reshape(len(ev), -1) @ m
    if name.startswith("weighted"):
        np.testing.assert_allclose(got, exact, rtol=1e-6)
        np.testing.assert_allclose(got, on_frames, rtol=1e-6)
    else:  # single-valued masks: the same label sums, bit for bit
        np.testing.assert_array_equal(got, on_frames)
        np.testing.assert_array_equal(got, exact.astype(np.float32))


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize(("cy", "cx", "radius"), [(4, 5, None), (3.5, 6.25, 3.2)])
def test_com_on_events_equals_com_on_frames(values, cy, cx, radius):
    ev = random_events(11, 0.2, 3, values)
    udf = CenterOfMass(cy=cy, cx=cx, radius=radius)
    got = run_tile(udf, ev, dense=False)["sums"]
    np.testing.assert_array_equal(got, run_tile(udf, ev, dense=True)["sums"])
    yy, xx = np.mgrid[: DET[0], : DET[1]]
    inside = (np.ones(DET, bool) if radius is None
              else (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)
    i = dense_of(ev) * inside
    np.testing.assert_allclose(got[:, 0], i.sum(axis=(1, 2)))
    np.testing.assert_allclose(got[:, 1], (i * (yy - cy)).sum(axis=(1, 2)))
    np.testing.assert_allclose(got[:, 2], (i * (xx - cx)).sum(axis=(1, 2)))


@pytest.mark.parametrize("values", [False, True])
def test_sum_on_events_is_a_bincount(values):
    ev = random_events(17, 0.5, 4, values)
    got = run_tile(SumFrame(), ev, dense=False)
    assert int(got["n"]) == 17
    np.testing.assert_array_equal(got["sum"], dense_of(ev).sum(axis=0))
    np.testing.assert_array_equal(got["sum"], run_tile(SumFrame(), ev, dense=True)["sum"])


def test_empty_frames_and_tiles():
    ev = Events(np.zeros(4, np.int64), np.empty(0, np.uint32), DET)
    got = run_tile(ApplyMasks(MASKS["ring"]), ev, dense=False)["intensity"]
    np.testing.assert_array_equal(got, 0)
    sums = run_tile(CenterOfMass(), ev, dense=False)["sums"]
    np.testing.assert_array_equal(sums, 0)


def narrowed(ev: Events, dtype: type) -> Events:
    return Events(ev.offsets, ev.indices.astype(dtype), ev.frame_shape, ev.values)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("name", ["ring", "rings", "weighted3"])
def test_masks_on_narrow_indices_equal_numpy(name, dtype):
    # uint16 indices (the counted reader's on detectors of <= 65536 pixels), 40 events a
    # frame: the one-label kernel's eight-event steps and their remainder
    ev = narrowed(random_events(9, 0.4, 7), dtype)
    assert ev.indices.dtype == dtype
    got = run_tile(ApplyMasks(MASKS[name]), ev, dense=False)["intensity"]
    m = MaskStack.from_any(MASKS[name]).dense(DET).astype(np.float64)
    exact = dense_of(ev).reshape(len(ev), -1) @ m
    if name.startswith("weighted"):
        np.testing.assert_allclose(got, exact, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, exact.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_com_and_sum_on_narrow_indices(dtype):
    ev = random_events(8, 0.6, 8)
    wide = run_tile(CenterOfMass(cy=3.5, cx=6.25, radius=3.2), ev, dense=True)["sums"]
    narrow = narrowed(ev, dtype)
    got = run_tile(CenterOfMass(cy=3.5, cx=6.25, radius=3.2), narrow, dense=False)["sums"]
    np.testing.assert_array_equal(got, wide)
    total = run_tile(SumFrame(), narrow, dense=False)["sum"]
    np.testing.assert_array_equal(total, dense_of(ev).sum(axis=0))


@pytest.mark.parametrize(("labels", "dtype"), [(1, np.uint8), (255, np.uint8),
                                                (256, np.uint16), (70000, np.int32)])
def test_pixel_slots_take_the_narrowest_dtype(labels, dtype):
    from framescope.udf._sparse import pixel_slots

    shape = (300, 300)
    n = labels
    rows = np.arange(n) // 300
    x0 = np.arange(n) % 300
    slots = pixel_slots(rows, x0, x0 + 1, np.arange(n), shape)
    assert slots.dtype == dtype
    want = np.zeros(shape[0] * shape[1], np.int64)
    want[rows * 300 + x0] = np.arange(n) + 1
    np.testing.assert_array_equal(slots, want)
