"""The simulated low-dose dataset against what it claims: counts, positions, charge, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framescope.datasets import lowdose


def test_deterministic_and_seeded():
    a = lowdose(scan=(2, 3), det=(32, 32), seed=4)
    b = lowdose(scan=(2, 3), det=(32, 32), seed=4)
    c = lowdose(scan=(2, 3), det=(32, 32), seed=5)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(a.frames, c.frames)
    np.testing.assert_array_equal(a.dark_frames(3), b.dark_frames(3))


def test_electron_numbers_and_positions():
    """Poisson numbers of mean dose * pixels per frame; positions inside the detector, each
    pixel_indices the pixel holding it; uniform pattern: a flat histogram of pixels."""
    ds = lowdose(scan=(20, 20), det=(32, 48), dose=0.05, seed=1)
    counts = np.diff(ds.offsets)
    mean = 0.05 * 32 * 48
    assert counts.mean() == pytest.approx(mean, rel=3 / math.sqrt(mean * 400))
    assert counts.var() == pytest.approx(mean, rel=0.2)
    y, x = ds.positions.T
    assert y.min() >= -0.5
    assert y.max() < 31.5
    assert x.min() >= -0.5
    assert x.max() < 47.5
    iy, ix = np.divmod(ds.pixel_indices, 48)
    assert np.all(np.abs(iy - y) <= 0.5)
    assert np.all(np.abs(ix - x) <= 0.5)
    rows = np.bincount(iy, minlength=32) / len(iy)
    np.testing.assert_allclose(rows, 1 / 32, rtol=0.15)


def test_disk_pattern_fraction():
    ds = lowdose(scan=(8, 8), det=(64, 64), dose=0.05, pattern="disk", disk_radius=10,
                 disk_fraction=0.8, seed=2)
    iy, ix = np.divmod(ds.pixel_indices, 64)
    inside = (iy - 32) ** 2 + (ix - 32) ** 2 <= 100
    area = inside.mean()
    expected = 0.8 + 0.2 * (np.pi * 100 / 64**2)  # disk share + background falling in it
    assert area == pytest.approx(expected, abs=0.02)


def test_charge_and_position_of_one_electron():
    """Without noise or dark, a lone electron's frame sums to its charge and its intensity
    centroid is its true position (the cloud lies well inside the frame)."""
    ds = lowdose(scan=(1, 100), det=(32, 32), dose=1 / 1024, gain_spread=0.0, read_noise=0.0,
                 dark_level=0.0, dark_spread=0.0, dtype="float32", seed=3)
    frames = ds.frames.reshape(-1, 32, 32).astype(np.float64)
    checked = 0
    for i, frame in enumerate(frames):
        pos = ds.positions[ds.offsets[i]:ds.offsets[i + 1]]
        if len(pos) != 1 or np.any(pos < 4) or np.any(pos > 27):
            continue
        assert frame.sum() == pytest.approx(ds.gain, rel=1e-3)
        yy, xx = np.mgrid[:32, :32]
        centroid = (frame * yy).sum() / frame.sum(), (frame * xx).sum() / frame.sum()
        np.testing.assert_allclose(centroid, pos[0], atol=1e-3)
        checked += 1
    assert checked >= 5


def test_dark_frames_statistics():
    ds = lowdose(scan=(1, 1), det=(64, 64), read_noise=3.0, dark_level=50, dark_spread=2,
                 seed=6)
    darks = ds.dark_frames(200).astype(np.float64)
    np.testing.assert_allclose(darks.mean(axis=0), ds.dark_level, atol=4 * 3 / math.sqrt(200))
    assert darks.std(axis=0).mean() == pytest.approx(math.sqrt(9 + 1 / 12), rel=0.02)
    assert ds.dark_level.std() == pytest.approx(2, rel=0.1)


def test_xrays_drawn():
    ds = lowdose(scan=(4, 4), det=(32, 32), dose=0.0, xray_rate=2.0, seed=7)
    assert len(ds.positions) == 0
    assert len(ds.xray_positions) == ds.xray_offsets[-1] > 10
    frame = ds.frames.reshape(-1, 32, 32)[np.argmax(np.diff(ds.xray_offsets))]
    assert frame.max() > 100 + 0.1 * ds.gain * 30


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dose": -1}, "dose must be a finite number >= 0"),
    ({"blur": 0}, "blur must be a positive number"),
    ({"scan": (2, 0)}, "scan must be a positive int"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"pattern": np.ones((3, 3))}, r"pattern must have the detector shape \(32, 32\), found"),
    ({"pattern": "ring"}, "pattern must be 'uniform', 'disk'"),
    ({"pattern": "disk", "disk_radius": 20}, r"disk_radius must lie in \(0, 16.0\)"),
])
def test_bad_arguments(kwargs, match):
    args = {"scan": (1, 1), "det": (32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        lowdose(**args)
