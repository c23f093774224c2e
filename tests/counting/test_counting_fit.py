"""Electron counting by fitting charge clouds (``count_electrons(method="fit")``) against the
simulation's true electrons, hand-made pile-ups, X-rays, bad input and lazy input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _truth import recall_precision

from framescope.counting import CountingError, count_electrons
from framescope.datasets import lowdose

FIT = {"method": "fit", "electron": 160.0, "blur": 0.7}  # the simulation's defaults


@pytest.fixture(scope="module")
def dose01():
    ds = lowdose(scan=(6, 6), det=(64, 64), dose=0.1, seed=5)
    return ds, ds.dark_frames(64).mean(axis=0)


def test_dose_0p1_recall_and_precision(dose01):
    """At 0.1 e-/px over half the electrons have a neighbour within 1.5 px; local maxima
    find about half of them, the fit nearly all."""
    ds, dark = dose01
    counted = count_electrons(ds.frames, dark=dark, **FIT)
    recall, precision = recall_precision(ds, counted)
    assert recall >= 0.98, recall
    assert precision >= 0.98, precision
    maxima = recall_precision(ds, count_electrons(ds.frames, dark=dark))[0]
    assert maxima < 0.7
    assert counted.thresholds.xray > 0  # estimated and stored as for the maxima
    ev = counted.indices
    assert ev.dtype == np.uint32
    assert counted.offsets[-1] == len(ev)
    for i in range(counted.n_frames):  # raster order in each frame, repeats allowed
        assert np.all(np.diff(counted.events(i).astype(np.int64)) >= 0)


def test_dose_0p002_recall_and_precision():
    ds = lowdose(scan=(16, 16), det=(64, 64), dose=0.002, seed=6)
    dark = ds.dark_frames(64).mean(axis=0)
    # at this dose an estimated X-ray threshold falls into the electron signal
    counted = count_electrons(ds.frames, dark=dark, xray_threshold=1000.0, **FIT)
    recall, precision = recall_precision(ds, counted)
    assert recall >= 0.98, recall
    assert precision >= 0.98, precision


def _frame_with(positions: list[tuple[float, float]], charge: float = 160.0,
                blur: float = 0.7, shape: tuple[int, int] = (24, 24)) -> np.ndarray:
    """A noiseless uint16 frame (dark level 100 ADU) of Gaussian clouds integrated over the
    pixels: the dtype of the other tests, so the kernels compile once."""
    y = np.arange(shape[0] + 1) - 0.5
    x = np.arange(shape[1] + 1) - 0.5
    out = np.zeros(shape)
    cdf = np.vectorize(lambda v: 0.5 * math.erf(v / (blur * math.sqrt(2))))
    for py, px in positions:
        out += charge * np.outer(np.diff(cdf(y - py)), np.diff(cdf(x - px)))
    return np.rint(out + 100).astype(np.uint16)[None]


DARK = np.full((24, 24), 100.0)


def test_two_electrons_in_one_pixel_repeat_its_index():
    frame = _frame_with([(10.1, 12.0), (9.9, 11.8), (4.0, 4.0)])
    counted = count_electrons(frame, dark=DARK, xray_threshold=1000.0, **FIT)
    assert counted.events(0).tolist() == [4 * 24 + 4, 10 * 24 + 12, 10 * 24 + 12]
    maxima = count_electrons(frame, dark=DARK, background_threshold=10.0,
                             xray_threshold=1000.0)
    assert maxima.events(0).tolist() == [4 * 24 + 4, 10 * 24 + 12]


def test_neighbouring_electrons_and_centroids():
    frame = _frame_with([(8.0, 8.3), (9.2, 9.0), (15.0, 3.0)])
    counted = count_electrons(frame, dark=DARK, xray_threshold=1000.0, centroids=True,
                              **FIT)
    assert counted.events(0).tolist() == [8 * 24 + 8, 9 * 24 + 9, 15 * 24 + 3]
    np.testing.assert_allclose(counted.centroids, [(8.0, 8.3), (9.2, 9.0), (15.0, 3.0)],
                               atol=0.05)


def test_xrays_make_no_events():
    ds = lowdose(scan=(4, 4), det=(48, 48), dose=0.01, xray_rate=1.0, seed=4)
    assert len(ds.xray_positions) >= 10
    # an X-ray's 4800 ADU spread over four pixels may keep each below 1000 ADU
    counted = count_electrons(ds.frames, dark=ds.dark_frames(32).mean(axis=0),
                              xray_threshold=400.0, **FIT)
    w = ds.frame_shape[1]
    for i in range(counted.n_frames):
        xp = ds.xray_positions[ds.xray_offsets[i]:ds.xray_offsets[i + 1]]
        ev = counted.events(i).astype(np.int64)
        found = np.stack([ev // w, ev % w], axis=1)
        for p in xp:  # the X-ray pixel and its 2-px margin hold nothing
            assert not np.any(np.abs(found - np.floor(p + 0.5)).max(axis=1) <= 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "fit", "blur": 0.7}, "needs electron="),
    ({"method": "fit", "electron": 160.0}, "needs blur="),
    ({"method": "fit", "electron": -1.0, "blur": 0.7}, "electron must be a positive"),
    ({"method": "fit", "electron": 160.0, "blur": float("nan")}, "blur must be a positive"),
    ({"method": "fit", "electron": "160", "blur": 0.7}, "needs electron="),
    ({"electron": 160.0}, "method='fit' only"),
    ({"method": "gauss"}, "method must be 'maxima' or 'fit'"),
])
def test_bad_method_arguments(kwargs, message):
    frames = np.zeros((2, 8, 8), dtype=np.uint16)
    with pytest.raises(CountingError, match=message):
        count_electrons(frames, **kwargs)


def test_lazy_input_equals_numpy(dose01):
    ds, dark = dose01
    ref = count_electrons(ds.frames, dark=dark, centroids=True, **FIT)
    lazy = count_electrons(ds.to_dataarray(chunks=2), dark=dark, centroids=True, **FIT)
    np.testing.assert_array_equal(lazy.offsets, ref.offsets)
    np.testing.assert_array_equal(lazy.indices, ref.indices)
    np.testing.assert_array_equal(lazy.centroids, ref.centroids)
    assert lazy.thresholds == ref.thresholds
