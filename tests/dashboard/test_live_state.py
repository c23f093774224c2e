"""The live dashboard's state: results grow with arriving frames and equal numpy's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import framescope.masks as fm
from framescope.udf import Meta

from ._reference import einsum


def _series(sid: int, frames: np.ndarray):
    ny, nx, h, w = frames.shape
    return SimpleNamespace(series=sid, meta=Meta((ny, nx), (h, w), frames.dtype))


@pytest.fixture
def live(small):
    from framescope.dashboard._live_state import LiveState
    from framescope.dashboard._store import FrameStore

    frames = small[0].values  # uint16, as a detector sends them
    store = FrameStore()
    series = _series(7, frames)
    flat = frames.reshape(-1, *frames.shape[2:])
    order = np.random.default_rng(5).permutation(len(flat))  # any arrival order
    first = order[:50]
    store.add(series, flat[first], first)
    st = LiveState(store, detectors={"bf": fm.disk(16, 16, 5), "adf": fm.ring(16, 16, 8, 14)})
    yield st, store, series, flat, order, frames.astype(np.float64)
    st.close()


def _image(st, name):
    assert st.jobs.wait(timeout=120)
    return st.image(name).image


def test_images_cover_exactly_the_arrived_positions(live):
    st, store, series, flat, order, frames = live
    st.start()
    arrived = np.zeros(st.scan_shape, bool)
    arrived.reshape(-1)[order[:50]] = True
    for name in ("bf", "adf"):
        img = _image(st, name)
        ref = einsum(frames, st.detector(name).spec())
        np.testing.assert_allclose(img[arrived], ref[arrived], rtol=1e-6)
        assert np.isnan(img[~arrived]).all()  # not received: marked, not zero
    # more frames arrive, in two batches; each refresh extends the images
    store.add(series, flat[order[50:90]], order[50:90])
    assert st.refresh()
    store.add(series, flat[order[90:]], order[90:])
    st.jobs.wait(timeout=120)
    assert st.refresh()
    for name in ("bf", "adf"):
        ref = einsum(frames, st.detector(name).spec())
        np.testing.assert_allclose(_image(st, name), ref, rtol=1e-6)
        assert st.image(name).done == 1.0
    np.testing.assert_allclose(st.summary("mean"), frames.mean(axis=(0, 1)), rtol=1e-9)
    np.testing.assert_array_equal(st.summary("max"), frames.max(axis=(0, 1)))


def test_an_edit_recomputes_over_all_arrived_frames(live):
    st, *_, order, frames = live
    st.start()
    _image(st, "bf")
    st.detector("bf").r = 9.0
    arrived = np.zeros(st.scan_shape, bool)
    arrived.reshape(-1)[order[:50]] = True
    img = _image(st, "bf")
    ref = einsum(frames, fm.disk(16, 16, 9.0))
    np.testing.assert_allclose(img[arrived], ref[arrived], rtol=1e-6)
    assert st.image("bf").spec_key == fm.disk(16, 16, 9.0).key


def test_picked_frame_comes_from_the_store(live):
    st, *_, order, frames = live
    st.start()
    y, x = divmod(int(order[3]), st.scan_shape[1])
    st.pick(y, x)
    np.testing.assert_array_equal(st.results.get("frame").image, frames[y, x])
    y, x = divmod(int(order[-1]), st.scan_shape[1])  # not received yet
    st.pick(y, x)
    frame = st.results.get("frame")
    assert "not received" in frame.label
    assert not frame.image.any()


def test_a_series_too_big_is_refused_with_a_message(small):
    from framescope.dashboard._store import FrameStore

    frames = small[0].values
    store = FrameStore(max_bytes=1000)
    store.add(_series(1, frames), frames.reshape(-1, 32, 32)[:2], np.arange(2))
    assert store.data is None
    assert "exceed" in store.error
    assert "series 1" in store.error


def test_a_calibrated_series_is_shown_in_units(small):
    from framescope.calibration import Calibration
    from framescope.dashboard._live_state import LiveState
    from framescope.dashboard._store import FrameStore

    frames = small[0].values
    ny, nx, h, w = frames.shape
    cal = Calibration(angle_per_px=0.5e-3, center=(16, 15), scan_step=0.2e-9)
    series = SimpleNamespace(series=3, meta=Meta((ny, nx), (h, w), frames.dtype,
                                                 calibration=cal))
    store = FrameStore()
    flat = frames.reshape(-1, h, w)
    store.add(series, flat[:4], np.arange(4))
    arr = store.array()
    np.testing.assert_allclose(arr["det_x"].values, (np.arange(w) - 15) * 0.5)
    st = LiveState(store, detectors={"adf": fm.ring(r_in=2, r_out=4, units="mrad")})
    try:
        assert st.calibrated
        assert st.units == "physical"
        # the mrad ring became the pixel ring it implies around the calibrated centre
        assert st.masks()["adf"].params == fm.ring(16, 15, 4, 8).params
    finally:
        st.close()
