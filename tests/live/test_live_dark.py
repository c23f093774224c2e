"""Dark series on a stream: marked by the header or taken by the user, reduced to dark
statistics that correct the following series."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.live import ZMQSource
from framescope.live._dark import dark_header, header_dark
from framescope.udf import ApplyMasks, SumFrame

from .conftest import simulator_thread, until

SCAN, DET = (5, 6), (16, 16)
RING = fm.ring(8, 8, 2, 7)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    level = rng.uniform(90, 110, DET)  # a known dark level per pixel
    dark = np.rint(level + rng.normal(0, 3, (24, *DET))).astype(np.uint16)
    signal = rng.poisson(20, (*SCAN, *DET))
    frames = np.rint(level + signal + rng.normal(0, 3, (*SCAN, *DET))).astype(np.uint16)
    mean = dark.astype(np.float64).mean(axis=0)
    want = ((frames - mean.astype(np.float32)) * RING.rasterize(DET)).sum(axis=(2, 3))
    return dark, frames, mean, want


def _run(dark, frames, protocol, *, mark, take=0, pixel_mask=None):
    src = ZMQSource("tcp://127.0.0.1:0", protocol)
    if take:
        src.take_dark(take)
    arrays = {} if pixel_mask is None else {"pixel_mask": pixel_mask}
    with simulator_thread(protocol=protocol, source=framescope.from_array(frames), rate=0,
                          dark=dark, mark_dark=mark, header_arrays=arrays) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit({"vd": ApplyMasks({"r": RING}), "sum": SumFrame()}, src)
        try:
            live = job.result(60)
        finally:
            job.cancel()
    return src, live


@pytest.mark.parametrize("protocol", ["dectris-stream2", "dectris-stream1", "native"])
def test_a_dark_series_marked_in_its_header_corrects_the_next_series(case, protocol):
    dark, frames, mean, want = case
    src, live = _run(dark, frames, protocol, mark=True)
    stats = src.dark
    assert stats is not None
    assert stats.n == len(dark)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, dark.astype(np.float64).std(axis=0), rtol=1e-9)
    assert stats.report()["bad"] == 0
    # the data series (the job's first result: the dark series is not one of them)
    assert live["vd"].attrs["series"] == 2
    np.testing.assert_allclose(live["vd"]["intensity"].sel(mask="r").values, want,
                               rtol=1e-5)
    assert '"dark": true' in live["vd"].attrs["corrections"]


def test_take_dark_makes_the_next_series_a_dark_series(case):
    dark, frames, _mean, want = case
    src, live = _run(dark, frames, "dectris-stream2", mark=False, take=1)
    assert src.dark is not None
    assert src.dark.n == len(dark)
    assert src.dark_requested == 0
    np.testing.assert_allclose(live["vd"]["intensity"].sel(mask="r").values, want,
                               rtol=1e-5)


def test_without_a_dark_series_nothing_is_subtracted(case):
    dark, frames, _mean, _want = case
    src, live = _run(dark, frames, "native", mark=False)  # unmarked: a data series
    assert src.dark is None
    # the job's first result is the unmarked dark series, analysed as data, raw
    raw = (dark.astype(np.float64) * RING.rasterize(DET)).sum(axis=(1, 2))
    np.testing.assert_allclose(live["vd"]["intensity"].values.ravel(), raw)
    assert "corrections" not in live["vd"].attrs


def test_the_dark_and_the_header_pixel_mask_combine(case):
    dark, frames, mean, _want = case
    mask = np.zeros(DET, np.uint32)
    mask[8, 3:6] = 1
    _src, live = _run(dark, frames, "dectris-stream2", mark=True, pixel_mask=mask)
    x = frames - mean.astype(np.float32)
    x[..., mask != 0] = 0
    np.testing.assert_allclose(live["sum"]["sum"].values, x.sum(axis=(0, 1)), rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(live["vd"]["intensity"].sel(mask="r").values,
                               (x * RING.rasterize(DET)).sum(axis=(2, 3)), rtol=1e-5)


def test_a_dark_series_keeps_its_frames_out_of_the_results(case):
    dark, frames, _, _ = case
    src = ZMQSource("tcp://127.0.0.1:0", "native")
    seen = []
    with simulator_thread(protocol="native", source=framescope.from_array(frames), rate=0,
                          dark=dark, series=2) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(SumFrame(), src,
                                on_series_end=lambda r: seen.append(r.attrs["series"]))
        try:
            until(lambda: len(seen) == 2, what="two data series")
        finally:
            job.cancel()
    assert seen == [2, 3]  # series 1 was the dark one


def test_take_dark_checks_its_argument():
    src = ZMQSource("tcp://127.0.0.1:0", "native")
    with pytest.raises(ValueError, match="n_series"):
        src.take_dark(-1)
    src.take_dark(2)
    assert src.dark_requested == 2
    src.take_dark(0)
    assert src.dark_requested == 0


def test_header_dark_reads_every_place_of_the_flag():
    assert header_dark(dark_header({"a": 1}))
    assert header_dark({"user_data": {"framescope": {"dark": True}}})
    assert not header_dark({"user_data": {"framescope": {"dark": "yes"}}})
    assert not header_dark({"framescope": 3})
    assert not header_dark({})
