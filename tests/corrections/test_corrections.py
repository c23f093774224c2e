"""Detector corrections in the tile loop, each against plain numpy on the same frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import framescope as fs
import framescope.masks as fm
from framescope.corrections import Corrections, CorrectionsError, from_dark
from framescope.udf import ApplyMasks, FrameStats, SumFrame

SCAN, DET = (5, 6), (16, 20)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    frames = rng.poisson(20, (*SCAN, *DET)).astype(np.uint16)
    dark = rng.normal(3.0, 0.5, DET).astype(np.float32)
    gain = rng.uniform(0.8, 1.25, DET).astype(np.float32)
    bad = np.zeros(DET, bool)
    bad[[0, 4, 7, 15], [0, 9, 19, 3]] = True
    bad[8, 8:11] = True  # a bad row piece: neighbours of neighbours
    return frames, dark, gain, bad


def reference(frames, c: Corrections) -> np.ndarray:
    """The documented order, written out with plain numpy loops over pixels."""
    x = frames.astype(np.float32)
    dark = None if c.dark is None else c.dark
    gain = None if c.gain is None else c.gain
    bad = None if c.bad is None else c.bad
    if c.crop is not None:
        y0, y1, x0, x1 = c.crop
        x = x[..., y0:y1, x0:x1]
        dark = None if dark is None else dark[y0:y1, x0:x1]
        gain = None if gain is None else gain[y0:y1, x0:x1]
        bad = None if bad is None else bad[y0:y1, x0:x1]
    if dark is not None:
        x = x - dark
    x = x - np.float32(c.offset)
    if gain is not None:
        x = x * gain
    if bad is not None:
        h, w = bad.shape
        fixed = x.copy()
        for i, j in zip(*np.nonzero(bad), strict=True):
            if c.bad_fill == "zero":
                fixed[..., i, j] = 0
                continue
            good = [(i + a, j + b) for a in (-1, 0, 1) for b in (-1, 0, 1)
                    if (a or b) and 0 <= i + a < h and 0 <= j + b < w and not bad[i + a, j + b]]
            fixed[..., i, j] = (np.mean([x[..., p, q] for p, q in good], axis=0) if good
                                else 0)
        x = fixed
    if c.threshold is not None:
        x = np.where(x < c.threshold, 0, x)
    k = c.bin
    if k > 1:
        *lead, h, w = x.shape
        x = x.reshape(*lead, h // k, k, w // k, k).sum(axis=(-3, -1))
    return x


CASES = {
    "dark": {"dark": True},
    "gain+offset": {"gain": True, "offset": 1.5},
    "bad zero": {"bad": True},
    "bad neighbours": {"bad": True, "bad_fill": "neighbours"},
    "threshold": {"dark": True, "threshold": 18.0},
    "crop+bin": {"crop": (2, 14, 4, 20), "bin": 2},
    "all": {"dark": True, "gain": True, "bad": True, "bad_fill": "neighbours",
            "offset": 0.25, "threshold": 1.0, "crop": (0, 16, 0, 18), "bin": 2},
    # a threshold that bites: filled pixels come from unthresholded neighbours
    "neighbours+threshold": {"dark": True, "bad": True, "bad_fill": "neighbours",
                             "threshold": 18.0},
}


def build(data, spec) -> Corrections:
    _, dark, gain, bad = data
    arrays = {"dark": dark, "gain": gain, "bad": bad}
    return Corrections(**{k: (arrays[k] if v is True else v) for k, v in spec.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_every_correction_equals_numpy(data, name):
    c = build(data, CASES[name])
    frames = data[0]
    want = reference(frames, c)
    arr = fs.from_array(frames, chunks=(2, 6, *DET))  # several partitions and tiles
    got = fs.run(FrameStats(), arr, corrections=c, client="inline")
    np.testing.assert_allclose(got["mean"].values, want.mean(axis=(0, 1)), rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(got["max"].values, want.max(axis=(0, 1)), rtol=1e-6)
    # a virtual image over the corrected frames: each position's sum
    ring = fm.ring(want.shape[2] / 2, want.shape[3] / 2, 1, 6)
    vi = arr.fs.virtual_image(ring, corrections=c, client="inline")
    mask = ring.rasterize(want.shape[2:])
    np.testing.assert_allclose(vi.values, (want * mask).sum(axis=(2, 3)), rtol=1e-5)


def test_attached_corrections_apply_to_later_analyses_and_results_say_so(data):
    c = build(data, CASES["all"])
    arr = fs.from_array(data[0])
    clean = arr.fs.with_corrections(c)
    assert clean.fs.corrections == c
    assert arr.fs.corrections is None  # the original is untouched
    res = fs.run(SumFrame(), clean, client="inline")
    np.testing.assert_allclose(res["sum"].values, reference(data[0], c).sum(axis=(0, 1)),
                               rtol=1e-5)
    assert '"bin": 2' in res.attrs["corrections"]
    # detector coordinates of the binned frames: the mean raw pixel position of each bin
    np.testing.assert_allclose(res["det_x"].values, np.arange(0, 18, 2) + 0.5)
    # the raw and the corrected mean frames are cached apart
    raw_mean = arr.fs.mean_frame(client="inline")
    assert raw_mean.shape == DET
    assert clean.fs.mean_frame(client="inline").shape == (8, 9)


def test_on_a_cluster(data, client):
    c = build(data, CASES["bad neighbours"])
    arr = fs.from_array(data[0], chunks=(1, 6, *DET))
    got = fs.run(SumFrame(), arr, corrections=c, client=client)
    np.testing.assert_allclose(got["sum"].values, reference(data[0], c).sum(axis=(0, 1)),
                               rtol=1e-5)


def test_binning_a_calibrated_array_keeps_the_physics(data):
    frames = data[0]
    arr = fs.from_array(frames).fs.calibrate(angle_per_px="0.5 mrad", center=(8, 10),
                                             energy="200 kV")
    c = Corrections(bin=2)
    res = arr.fs.sum_frame(corrections=c, client="inline")
    np.testing.assert_allclose(res["det_x"].values,
                               arr["det_x"].values.reshape(-1, 2).mean(1))
    # a ring in mrad on the binned frames is the ring the binned calibration implies:
    # centre (8 - 0.5) / 2, 1 mrad per binned pixel
    vi = arr.fs.virtual_image(fm.ring(r_in=1, r_out=4, units="mrad"), corrections=c,
                              client="inline")
    binned = frames.astype(np.float32).reshape(*SCAN, 8, 2, 10, 2).sum(axis=(3, 5))
    mask = fm.ring(3.75, 4.75, 1, 4).rasterize((8, 10))
    np.testing.assert_allclose(vi.values, (binned * mask).sum(axis=(2, 3)), rtol=1e-6)


def test_from_dark_finds_dead_noisy_and_hot_pixels():
    rng = np.random.default_rng(2)
    dark = rng.normal(100, 2, (40, *DET))
    dark[:, 3, 4] = 100  # dead: never changes
    dark[:, 10, 11] += rng.normal(0, 30, 40)  # noisy
    bright = np.full(DET, 1000.0)
    bright[6, 6] = 9000  # hot under illumination
    stats = from_dark(dark.astype(np.float32), bright=bright, client="inline")
    np.testing.assert_allclose(stats.mean, dark.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, dark.astype(np.float32).std(0), rtol=1e-4)
    assert np.argwhere(stats.dead).tolist() == [[3, 4]]
    assert np.argwhere(stats.noisy).tolist() == [[10, 11]]
    assert np.argwhere(stats.hot).tolist() == [[6, 6]]
    assert stats.report() == {"frames": 40, "pixels": DET[0] * DET[1], "dead": 1, "noisy": 1,
                              "hot": 1, "bad": 3}
    c = stats.corrections(bad_fill="neighbours")
    assert int(c.bad.sum()) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dark": np.zeros((3, 3)), "gain": np.ones((4, 4))}, r"one shape"),
    ({"gain": np.zeros((4, 4))}, r"gain: expected positive values, found 16 pixels"),
    ({"gain": np.full((4, 4), np.nan)}, r"gain: expected finite values"),
    ({"bad": np.ones((4, 4), bool)}, r"bad: every one of the 16 pixels"),
    ({"bad": np.ones((4, 4))}, r"bad: expected a bool mask"),
    ({"dark": np.zeros(4)}, r"dark: expected a 2D"),
    ({"bin": 0}, r"bin: expected a positive int"),
    ({"crop": (4, 2, 0, 3)}, r"crop: expected 0 <= y0 < y1"),
])
def test_bad_corrections_name_the_array(kwargs, message):
    with pytest.raises(CorrectionsError, match=message):
        Corrections(**kwargs)


def test_corrections_that_do_not_fit_the_frames(data):
    arr = fs.from_array(data[0])
    with pytest.raises(CorrectionsError, match=r"dark: expected the frame shape \(16, 20\), "
                                               r"found \(16, 16\)"):
        arr.fs.with_corrections(dark=np.zeros((16, 16)))
    with pytest.raises(CorrectionsError, match=r"bin: the 16x20 frame does not divide"):
        fs.run(SumFrame(), arr, corrections=Corrections(bin=3), client="inline")
    with pytest.raises(CorrectionsError, match=r"crop: .* reaches beyond the 16x20 frame"):
        arr.fs.with_corrections(crop=(0, 17, 0, 4))


def test_masks_on_binned_frames_are_in_their_pixels(data):
    arr = fs.from_array(data[0])
    c = Corrections(bin=2)
    res = fs.run(ApplyMasks(fm.disk(4, 5, 2)), arr, corrections=c, client="inline")
    binned = data[0].astype(np.float32).reshape(*SCAN, 8, 2, 10, 2).sum(axis=(3, 5))
    mask = fm.disk(4, 5, 2).rasterize((8, 10))
    np.testing.assert_allclose(res["intensity"].values[..., 0],
                               (binned * mask).sum(axis=(2, 3)), rtol=1e-6)


def test_a_file_read_in_place_is_corrected(data, tmp_path):
    # .npy frames are memory-mapped and handed out as views: corrected into the tile buffer
    np.save(tmp_path / "frames.npy", data[0])
    arr = fs.open(tmp_path / "frames.npy")
    c = build(data, CASES["all"])
    got = fs.run(SumFrame(), arr, corrections=c, client="inline")
    np.testing.assert_allclose(got["sum"].values, reference(data[0], c).sum(axis=(0, 1)),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "frames.npy"), data[0])  # untouched


def test_linear_corrections_fold_into_the_masks(data):
    # a virtual image with linear corrections reads the raw frames with weighted masks
    from framescope.engine._run import _prepare

    c = build(data, {"dark": True, "gain": True, "bad": True, "bad_fill": "neighbours",
                     "offset": 0.5, "crop": (0, 16, 2, 18), "bin": 2})
    arr = fs.from_array(data[0]).fs.with_corrections(c)
    named, _, _, meta = _prepare(ApplyMasks(fm.disk(4, 4, 3)), arr, None)
    assert meta.corrections is None  # the tiles stay raw
    assert meta.frame_shape == DET
    assert next(iter(named.values())).offsets is not None
    res = fs.run(ApplyMasks(fm.disk(4, 4, 3)), arr, client="inline")
    want = reference(data[0], c)
    mask = fm.disk(4, 4, 3).rasterize(want.shape[2:])
    np.testing.assert_allclose(res["intensity"].values[..., 0],
                               (want * mask).sum(axis=(2, 3)), rtol=1e-5)
    # a threshold is not linear: the tiles are corrected first
    thresholded = arr.fs.with_corrections(dataclasses.replace(c, threshold=20.0))
    assert _prepare(ApplyMasks(fm.disk(4, 4, 3)), thresholded, None)[3].corrections
