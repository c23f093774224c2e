"""Electron counting against stempy (https://github.com/OpenChemistry/stempy) on the same
frames: events, thresholds and the sparse HDF5 files both ways. Skipped without stempy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from framescope.counting import (
    CountedData,
    count_electrons,
    estimate_thresholds,
    load_counted,
    save_counted,
)
from framescope.datasets import lowdose

stempy_image = pytest.importorskip("stempy.image")
stempy_io = pytest.importorskip("stempy.io")
h5py = pytest.importorskip("h5py")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def stempy_events(frames: np.ndarray, dark: np.ndarray, bg: float, xr: float) -> list:
    """stempy's events of every frame, sorted flat pixel indices."""
    out = []
    for frame in frames.reshape(-1, *frames.shape[-2:]):
        sparse = stempy_image.electron_count_frame(
            np.ascontiguousarray(frame), darkreference=dark.astype(np.float32),
            background_threshold=bg, xray_threshold=xr)
        out.append(np.sort(np.asarray(sparse.data[0, 0], dtype=np.int64)))
    return out


def tie_broken(frame: np.ndarray, dark: np.ndarray, pixel: int) -> bool:
    """Whether an event pixel has a neighbour of exactly its value (a tie)."""
    v = frame.astype(np.float32) - dark.astype(np.float32)
    y, x = divmod(int(pixel), frame.shape[1])
    window = v[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
    return int((window == v[y, x]).sum()) > 1


@pytest.fixture(scope="module")
def xray_frames():
    ds = lowdose(scan=(4, 6), det=(48, 64), dose=0.05, xray_rate=1.0, seed=20)
    # stempy subtracts a dark reference truncated to whole ADU (so 130 - 96.4 and
    # 134 - 100.5 tie at 34): give both the whole numbers
    dark = np.floor(ds.dark_frames(32).mean(axis=0))
    counted = count_electrons(ds.frames, dark=dark)
    t = counted.thresholds
    return ds, dark, counted, stempy_events(ds.frames, dark, t.background, t.xray)


def test_events_match_stempy(xray_frames):
    """Same frames, dark reference and thresholds: the same events, except ties (stempy
    drops both pixels, framescope keeps the first) and within 3 px of X-rays (stempy compares
    with out-of-range pixels zeroed, so an X-ray's bright neighbours become events; framescope
    keeps them out)."""
    ds, dark, counted, theirs = xray_frames
    frames = ds.frames.reshape(-1, *ds.frame_shape)
    w = ds.frame_shape[1]
    same = ties = beside_xray = 0
    for i, their in enumerate(theirs):
        ours = counted.events(i).astype(np.int64)
        same += len(np.intersect1d(ours, their))
        for p in np.setdiff1d(ours, their):
            assert tie_broken(frames[i], dark, p)
            ties += 1
        xrays = np.floor(ds.xray_positions[ds.xray_offsets[i]:ds.xray_offsets[i + 1]] + 0.5)
        for p in np.setdiff1d(their, ours):
            assert np.min(np.hypot(xrays[:, 0] - p // w, xrays[:, 1] - p % w)) < 3
            beside_xray += 1
    assert same > 2000
    assert 0 < ties < same / 20
    assert beside_xray > 10


def test_fractional_dark_truncated_by_stempy():
    """The observation behind the whole-ADU dark above, on a hand-made frame: 134 - 100.53
    ties 130 - 96.41 only in stempy (34 - 34); framescope counts the 33.59 above 33.47."""
    frame = np.zeros((1, 6, 8), dtype=np.uint16)
    frame[0, 2, 3], frame[0, 3, 3] = 130, 134
    dark = np.zeros((6, 8), dtype=np.float32)
    dark[2, 3], dark[3, 3] = 96.40625, 100.53125
    assert len(stempy_events(frame, dark, 10.0, 1000.0)[0]) == 0
    counted = count_electrons(frame, dark=dark, background_threshold=10.0,
                              xray_threshold=1000.0)
    assert counted.events(0).tolist() == [2 * 8 + 3]


def test_ties_stempy_drops_both():
    """The documented difference on a tie: stempy counts neither pixel, framescope the
    first in raster order."""
    frame = np.zeros((1, 6, 8), dtype=np.uint16)
    frame[0, 2, 3] = frame[0, 2, 4] = 50
    assert len(stempy_events(frame, np.zeros((6, 8)), 10.0, 1000.0)[0]) == 0
    counted = count_electrons(frame, background_threshold=10.0, xray_threshold=1000.0)
    assert counted.events(0).tolist() == [2 * 8 + 3]


@pytest.mark.parametrize("dose", [0.005, 0.1])
def test_thresholds_beside_stempy(tmp_path, dose):
    """stempy's calculate_thresholds on the same raw frames (its dark-reference path fails
    on this build): the same X-ray threshold (mean + 10 std; stempy samples frames with
    replacement); our noise sigma within 3% (0.005 e-/px) / 10% (0.1 e-/px) of the
    simulated one, stempy's whole-histogram fit far wider at 0.1 e-/px."""
    ds = lowdose(scan=(4, 8), det=(64, 64), dose=dose, seed=22, dark_spread=0.0)
    frames = ds.frames.reshape(-1, *ds.frame_shape)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames).attrs["scan_dimensions"] = (8, 4)
    with h5py.File(path, "r") as f:
        blocks = [b._block for b in stempy_io.reader(f)]
        from stempy import _image

        theirs = _image.calculate_thresholds(blocks, 1000, 4.0, 10.0)
    ours = estimate_thresholds(frames, n_samples=len(frames))
    sigma = math.sqrt(ds.read_noise**2 + 1 / 12)
    assert ours.xray == pytest.approx(theirs.xray_threshold, rel=0.01)
    assert ours.noise_sigma == pytest.approx(sigma, rel=0.03 if dose < 0.01 else 0.1)
    if dose < 0.01:
        assert theirs.optimized_std_dev == pytest.approx(sigma, rel=0.05)
        assert ours.background == pytest.approx(theirs.background_threshold, abs=1.0)
    else:
        assert theirs.optimized_std_dev > 1.5 * sigma
        assert abs(ours.noise_sigma - sigma) < abs(theirs.optimized_std_dev - sigma) / 5


def _counted_with_repeats() -> CountedData:
    frames = np.zeros((3, 2, 4, 6), dtype=np.uint16)  # non-square scan and frames
    frames[0, 1, 1, 2] = frames[2, 0, 3, 5] = frames[2, 0, 0, 0] = frames[1, 1, 2, 4] = 80
    return count_electrons(frames, background_threshold=10.0, xray_threshold=1000.0)


def test_stempy_reads_our_file(tmp_path):
    counted = _counted_with_repeats()
    path = save_counted(counted, tmp_path / "ours.h5")
    sparse = stempy_io.load_electron_counts(str(path))
    assert tuple(sparse.scan_shape) == counted.scan_shape
    assert tuple(sparse.frame_shape) == counted.frame_shape
    assert sparse.data.shape == (counted.n_frames, 1)
    for i in range(counted.n_frames):
        np.testing.assert_array_equal(sparse.data[i, 0], counted.events(i))
    np.testing.assert_array_equal(sparse[2, 0], counted.frame((2, 0)))


def test_we_read_stempys_file(tmp_path):
    """stempy's writer, one and two frames per scan position (read as one frame with the
    events of both)."""
    counted = _counted_with_repeats()
    data = np.empty((counted.n_frames, 1), dtype=object)
    for i in range(counted.n_frames):
        data[i, 0] = counted.events(i).copy()
    sparse = stempy_io.SparseArray(data, counted.scan_shape, counted.frame_shape)
    path = tmp_path / "theirs.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stempy_io.save_electron_counts(str(path), sparse)
    back = load_counted(path)
    assert (back.scan_shape, back.frame_shape) == (counted.scan_shape, counted.frame_shape)
    np.testing.assert_array_equal(back.offsets, counted.offsets)
    np.testing.assert_array_equal(back.indices, counted.indices)

    two = np.empty((counted.n_frames, 2), dtype=object)
    for i in range(counted.n_frames):
        two[i, 0] = counted.events(i).copy()
        two[i, 1] = np.array([i], dtype=np.uint32)
    path2 = tmp_path / "two.h5"
    stempy_io.save_electron_counts(
        str(path2), stempy_io.SparseArray(two, counted.scan_shape, counted.frame_shape))
    merged = load_counted(path2)
    for i in range(counted.n_frames):
        np.testing.assert_array_equal(merged.events(i), [*counted.events(i), i])
