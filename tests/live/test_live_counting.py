"""Live electron counting: a low-dose stream counted as it arrives equals offline counting
of the same frames with the same thresholds, and its file reads back."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.counting import (
    CountEvents,
    CountingError,
    count_electrons,
    load_counted,
)
from framescope.datasets import lowdose
from framescope.live import ZMQSource
from framescope.udf import SumFrame

from .conftest import simulator_thread

SCAN, DET = (6, 5), (32, 32)
DISK = fm.disk(16, 16, 9)


@pytest.fixture(scope="module")
def ds():
    return lowdose(scan=SCAN, det=DET, dose=0.02, seed=5)


def _count_live(ds, udf, protocol="dectris-stream2", **sim):
    src = ZMQSource("tcp://127.0.0.1:0", protocol)
    with simulator_thread(protocol=protocol, source=framescope.from_array(ds.frames), rate=0,
                          **sim) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit({"count": udf, "sum": SumFrame()}, src)
        try:
            live = job.result(60)
        finally:
            job.cancel()
    return src, live


def _same_events(counted, reference):
    np.testing.assert_array_equal(counted.offsets, reference.offsets)
    np.testing.assert_array_equal(counted.indices, reference.indices)


def test_a_counted_stream_equals_offline_counting_with_the_dark_series_thresholds(
        ds, tmp_path):
    udf = CountEvents(xray=1000, masks={"disk": DISK}, out=tmp_path / "c_{series}.h5")
    src, live = _count_live(ds, udf, dark=ds.dark_frames(48))
    stats = src.dark
    assert stats.report()["bad"] == 0
    thr = udf.thresholds
    sigma = float(np.median(stats.std))
    assert thr.background == pytest.approx(4 * sigma)
    assert 3.5 < sigma < 4.5  # the simulation's read noise (4 ADU)
    offline = count_electrons(ds.frames, dark=stats.mean, background_threshold=thr.background,
                              xray_threshold=thr.xray)
    assert offline.n_events > 100
    # the file written while counting: the same events, stempy's layout
    assert udf.path == tmp_path / "c_2.h5"
    _same_events(load_counted(udf.path), offline)
    assert load_counted(udf.path).thresholds == thr
    # the results published during the run: events per frame, sum frame, virtual image
    count = live["count"]
    np.testing.assert_array_equal(count["events"].values, offline.events_per_frame)
    dense = offline.to_dense().astype(np.float64)
    np.testing.assert_array_equal(count["counts"].values, dense.sum(axis=(0, 1)))
    np.testing.assert_allclose(count["intensity"].sel(mask="disk").values,
                               (dense * DISK.rasterize(DET)).sum(axis=(2, 3)))
    # and framescope.open reads the file as counts
    arr = framescope.open(udf.path)
    np.testing.assert_array_equal(np.asarray(arr.sum(("det_y", "det_x"))),
                                  offline.events_per_frame)


def test_given_thresholds_count_the_raw_stream_like_offline(ds, tmp_path):
    dark = ds.dark_frames(32).mean(axis=0)
    offline = count_electrons(ds.frames, dark=dark, background_threshold=18.0,
                              xray_threshold=400.0)
    udf = CountEvents(background=18, xray=400, dark=dark, out=tmp_path / "c.h5")
    _, live = _count_live(ds, udf, protocol="native")
    _same_events(load_counted(tmp_path / "c.h5"), offline)
    np.testing.assert_array_equal(live["count"]["events"].values, offline.events_per_frame)


def test_counting_without_a_background_or_a_dark_fails_clearly(ds):
    with pytest.raises(CountingError, match="background"):
        framescope.run(CountEvents(), framescope.from_array(ds.frames), client="inline")
    src = ZMQSource("tcp://127.0.0.1:0", "native")
    with simulator_thread(protocol="native", source=framescope.from_array(ds.frames),
                          rate=0) as endpoint:
        src.endpoint = endpoint
        job = framescope.submit(CountEvents(), src)
        try:
            live = job.result(30)  # the series ends, nothing counted, the error in status
        finally:
            job.cancel()
    assert "no background threshold" in live.attrs["last_error"]
    assert not live["done"].values.any()


def test_count_events_on_a_file_equals_count_electrons(ds):
    dark = ds.dark_frames(32).mean(axis=0)
    offline = count_electrons(ds.frames, dark=dark, background_threshold=16.0,
                              xray_threshold=300.0)
    res = framescope.run(CountEvents(background=16, xray=300, dark=dark),
                         framescope.from_array(ds.frames), client="inline")
    np.testing.assert_array_equal(res["events"].values, offline.events_per_frame)


def test_count_events_checks_its_inputs():
    with pytest.raises(CountingError, match="inverted"):
        CountEvents(background=50, xray=20)
    with pytest.raises(CountingError, match="dark"):
        CountEvents(background=5, dark=np.zeros(4))


def test_a_stream_counted_by_fitting_equals_offline_fitting(tmp_path):
    """method="fit" live: no background threshold needed, the same electrons (pile-ups
    included, a pixel may repeat) as count_electrons(method="fit") on the same frames."""
    ds = lowdose(scan=SCAN, det=DET, dose=0.1, seed=8)
    dark = ds.dark_frames(32).mean(axis=0)
    fit = {"method": "fit", "electron": 160.0, "blur": 0.7}
    offline = count_electrons(ds.frames, dark=dark, xray_threshold=400.0, **fit)
    assert np.any([np.diff(offline.events(i)).min(initial=1) == 0
                   for i in range(offline.n_frames)])  # some pixel holds two electrons
    udf = CountEvents(xray=400, dark=dark, out=tmp_path / "f.h5", **fit)
    _, live = _count_live(ds, udf, protocol="native")
    _same_events(load_counted(tmp_path / "f.h5"), offline)
    np.testing.assert_array_equal(live["count"]["events"].values, offline.events_per_frame)
    np.testing.assert_array_equal(live["count"]["counts"].values,
                                  offline.to_dense().astype(np.float64).sum(axis=(0, 1)))
    with pytest.raises(CountingError, match="CountEvents: method='fit' needs blur="):
        CountEvents(method="fit", electron=160.0)
