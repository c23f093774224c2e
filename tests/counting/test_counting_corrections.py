"""Electron counting with detector corrections (dark, offset, gain, bad pixels): against the
simulation's true electrons and against counting frames corrected in plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import framescope as fs
from framescope.corrections import Corrections, CorrectionsError
from framescope.counting import CountingError, count_electrons, estimate_thresholds
from framescope.datasets import lowdose

HOT = [(3, 4), (10, 30), (20, 20), (33, 7), (47, 47)]


@pytest.fixture(scope="module")
def detector():
    """Low-dose frames through a detector with a per-pixel response (0.7-1.3) and hot
    pixels that read 60 ADU above the dark in every frame with the beam on (hot under
    illumination: the dark frames do not show them); its corrections."""
    ds = lowdose(scan=(6, 6), det=(48, 48), dose=0.02, seed=21, dtype="float32")
    rng = np.random.default_rng(21)
    response = rng.uniform(0.7, 1.3, ds.frame_shape)
    level = ds.dark_level

    def detect(frames, beam=True):
        out = level + (frames - level) * response
        for y, x in HOT if beam else ():
            out[..., y, x] = level[y, x] + 60 + rng.normal(0, 2, out.shape[:-2])
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)

    raw = detect(ds.frames)
    dark = detect(ds.dark_frames(64, seed=3), beam=False).astype(np.float32).mean(axis=0)
    bad = np.zeros(ds.frame_shape, bool)
    bad[tuple(np.array(HOT).T)] = True
    c = Corrections(dark=dark - 0.5, offset=0.5, gain=1 / response, bad=bad)
    return ds, raw, dark, c


def recall_precision(ds, counted) -> tuple[float, float, float]:
    """One-to-one matching (Hungarian, within 1 px) of events to the true electrons: recall,
    precision and the recall of electrons with no other within 3 px (the ones a
    local-maximum counter can resolve)."""
    w = ds.frame_shape[1]
    hits, isolated = [], []
    for i in range(counted.n_frames):
        truth = ds.positions[ds.offsets[i]:ds.offsets[i + 1]]
        ev = counted.events(i).astype(np.int64)
        found = np.stack([ev // w, ev % w], axis=1).astype(float)
        hit = np.zeros(len(truth), bool)
        if len(truth) and len(found):
            d = np.hypot(*(truth[:, None, :] - found[None, :, :]).transpose(2, 0, 1))
            cost = np.where(d <= 1, d, 1e6)
            rows, cols = linear_sum_assignment(cost)
            hit[rows[cost[rows, cols] <= 1]] = True
        hits.append(hit)
        d = np.hypot(*(truth[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        isolated.append(d.min(axis=1, initial=np.inf) > 3)
    hit, iso = np.concatenate(hits), np.concatenate(isolated)
    return hit.mean(), hit.sum() / counted.n_events, hit[iso].mean()


def events_at(counted, pixels) -> int:
    w = counted.frame_shape[1]
    flat = [y * w + x for y, x in pixels]
    return int(np.isin(counted.indices.astype(np.int64), flat).sum())


def test_counting_with_corrections_finds_the_electrons_and_no_hot_pixel(detector):
    ds, raw, dark, c = detector
    counted = count_electrons(raw, corrections=c, xray_threshold=1000.0)
    recall, precision, resolvable = recall_precision(ds, counted)
    assert resolvable >= 0.98
    assert recall >= 0.8  # at 0.02 e-/px about 15 % have a neighbour: one local maximum
    assert precision >= 0.98
    assert events_at(counted, HOT) == 0
    # without the bad-pixel map every hot pixel is an event in (almost) every frame
    plain = count_electrons(raw, dark=dark, xray_threshold=1000.0)
    assert events_at(plain, HOT) >= 0.9 * len(HOT) * counted.n_frames
    assert recall_precision(ds, plain)[1] < precision


def test_counting_with_corrections_equals_counting_numpy_corrected_frames(detector):
    _, raw, _, c = detector
    counted = count_electrons(raw, corrections=c, centroids=True)
    # the documented stage in plain numpy, then counted with nothing to correct
    x = (raw.astype(np.float32) - c.dark - np.float32(c.offset)) * c.gain
    x[..., c.bad] = 0
    t = counted.thresholds
    want = count_electrons(x, background_threshold=t.background, xray_threshold=t.xray,
                           centroids=True)
    assert counted.n_events > 300
    np.testing.assert_array_equal(counted.offsets, want.offsets)
    np.testing.assert_array_equal(counted.indices, want.indices)
    np.testing.assert_allclose(counted.centroids, want.centroids, atol=1e-4)
    # thresholds estimated on the corrected values of the good pixels only
    good = x[..., ~c.bad]
    est = estimate_thresholds(good.reshape(1, 1, 1, -1), n_samples=1)
    assert t.background == pytest.approx(est.background, rel=0.05)
    assert t.background < 40  # the hot pixels (60 ADU) did not lift the noise fit


def test_attached_corrections_are_used_unless_refused(detector, tmp_path):
    _, raw, dark, c = detector
    want = count_electrons(raw, corrections=c)
    np.save(tmp_path / "raw.npy", raw)
    for arr in (fs.from_array(raw), fs.open(tmp_path / "raw.npy")):  # numpy, file reader
        clean = arr.fs.with_corrections(c)
        got = clean.fs.count_electrons()
        np.testing.assert_array_equal(got.indices, want.indices)
        assert got.thresholds.background == pytest.approx(want.thresholds.background)
        refused = clean.fs.count_electrons(corrections=False, dark=dark)
        assert events_at(refused, HOT) > 0
        # given corrections win over attached ones
        other = clean.fs.count_electrons(corrections=Corrections(dark=dark))
        assert events_at(other, HOT) > 0


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"corrections": Corrections(bin=2)}, CountingError,
     r"corrections with \{'bin': 2\} change the pixel grid"),
    ({"corrections": Corrections(fft_downsample=(24, 24))}, CountingError,
     r"\{'fft_downsample': \(24, 24\)\} change the pixel grid"),
    ({"corrections": Corrections(crop=(0, 24, 0, 24))}, CountingError, r"'crop'"),
    ({"corrections": Corrections(threshold=3.0)}, CountingError,
     r"threshold=3.0 would zero values"),
    ({"corrections": Corrections(dark=np.zeros((48, 48))), "dark": np.zeros((48, 48))},
     CountingError, r"dark reference in both dark= and the corrections"),
    ({"corrections": Corrections(gain=np.ones((8, 8)))}, CorrectionsError,
     r"gain: expected the frame shape \(48, 48\), found \(8, 8\)"),
    ({"corrections": {"dark": 1}}, CountingError, r"expected a framescope.corrections"),
])
def test_corrections_counting_cannot_use_are_refused(detector, kwargs, error, message):
    raw = detector[1]
    with pytest.raises(error, match=message):
        count_electrons(raw, **kwargs)
