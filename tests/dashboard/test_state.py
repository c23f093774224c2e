from __future__ import annotations

import numpy as np
import pytest

import framescope.masks as fm
from framescope.dashboard._data import in_memory
from framescope.dashboard._detectors import BoxDetector
from framescope.dashboard._state import DashboardState
from framescope.engine._cache import results

from ._reference import einsum


def test_initial_images_match_numpy(state, small):
    _, frames = small
    state.start()
    assert state.jobs.wait(timeout=120)
    assert state.names == ["bf", "adf"]
    for det in state.detectors:
        vi = state.image(det.name)
        assert vi.done == 1.0
        assert vi.spec_key == det.spec().key
        np.testing.assert_allclose(vi.image, einsum(frames, det.spec()), rtol=1e-5)
    np.testing.assert_allclose(state.summary("mean"), frames.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_array_equal(state.summary("max"), frames.max(axis=(0, 1)))
    frame = state.results.get("frame")
    assert frame.mode == "mean"
    np.testing.assert_allclose(frame.image, frames.mean(axis=(0, 1)), rtol=1e-12)


def test_an_edit_recomputes_only_that_detector(state, small, monkeypatch):
    _, frames = small
    state.start()
    assert state.jobs.wait(timeout=120)
    submitted = []
    real = state.jobs.submit
    monkeypatch.setattr(state.jobs, "submit",
                        lambda ch, *a, **k: (submitted.append(ch), real(ch, *a, **k))[1])
    state.detector("adf").param.update(r_in=5, r_out=11.5)
    assert state.jobs.wait(timeout=120)
    assert submitted == ["vi:adf"]
    vi = state.image("adf")
    np.testing.assert_allclose(vi.image, einsum(frames, fm.ring(16, 16, 5, 11.5)), rtol=1e-5)
    # back to a mask computed before: served from the shared cache, no job
    state.detector("adf").param.update(r_in=8, r_out=14.4)
    assert submitted == ["vi:adf"]
    np.testing.assert_allclose(state.image("adf").image,
                               einsum(frames, fm.ring(16, 16, 8, 14.4)), rtol=1e-5)


def test_results_are_shared_with_the_accessor(state, small, monkeypatch):
    arr, _frames = small
    state.start()
    assert state.jobs.wait(timeout=120)
    import framescope.accessor as acc

    monkeypatch.setattr(acc, "run", lambda *a, **k: pytest.fail("recomputed"))
    img = arr.fs.virtual_image(state.detector("bf").spec())
    np.testing.assert_array_equal(img.values, state.image("bf").image)


def test_picked_frame_and_roi_sum(state, small):
    _, frames = small
    state.start()
    state.pick(7.4, 2.6)  # nearest scan position
    assert state.jobs.wait(timeout=120)
    frame = state.results.get("frame")
    assert frame.mode == "picked"
    assert state.picked == (7, 3)
    np.testing.assert_array_equal(frame.image, frames[7, 3])

    roi = np.zeros((12, 10), bool)
    roi[2:5, 1:4] = True
    roi[9, 9] = True
    state.set_roi(roi)
    assert state.jobs.wait(timeout=120)
    frame = state.results.get("frame")
    assert frame.mode == "roi"
    assert frame.label == "ROI sum of 10 frames"
    np.testing.assert_array_equal(frame.image, frames[roi].sum(axis=0))

    state.set_roi(None)
    assert state.frame_mode == "mean"
    assert state.results.get("frame").mode == "mean"


def test_max_frame_mode(state, small):
    _, frames = small
    state.start()
    assert state.jobs.wait(timeout=120)
    state.frame_mode = "max"
    np.testing.assert_array_equal(state.results.get("frame").image, frames.max(axis=(0, 1)))


def test_add_rename_remove(state, small):
    _, frames = small
    state.start()
    box = state.add("box")
    assert box.name == "box1"
    assert state.selected == "box1"
    assert isinstance(box, BoxDetector)
    assert box.color not in ("#e41a1c", "#377eb8")
    assert state.jobs.wait(timeout=120)
    np.testing.assert_allclose(state.image("box1").image, einsum(frames, box.spec()), rtol=1e-5)
    box.name = "adf"  # taken: refused, name kept
    assert box.name == "box1"
    assert "taken" in state.status
    box.name = "corner"
    assert state.selected == "corner"
    assert state.image("box1") is None
    assert state.jobs.wait(timeout=120)
    assert state.image("corner").spec_key == box.spec().key
    state.remove("corner")
    assert state.names == ["bf", "adf"]
    assert state.selected == "bf"
    assert state.image("corner") is None


def test_invalid_edit_reports_and_keeps_running(state, small):
    _, _frames = small
    state.start()
    assert state.jobs.wait(timeout=120)
    before = state.image("adf").image.copy()
    state.detector("adf").r_in = 20  # > r_out
    assert "r_in <= r_out" in state.status
    assert state.jobs.wait(timeout=120)
    np.testing.assert_array_equal(state.image("adf").image, before)


def test_centre_on_bright_field(state):
    state.start()
    assert state.jobs.wait(timeout=120)
    det = state.detector("bf")
    det.param.update(cy=5, cx=7)
    state.centre_on_bright_field()
    cy, cx, r = state.bright_field()
    assert (det.cy, det.cx) == (round(cy, 2), round(cx, 2))
    assert abs(det.cy - 16) < 1.5
    assert abs(det.cx - 16) < 1.5
    state.centre_com_on_bright_field()
    assert state.com_radius == pytest.approx(1.2 * r, abs=0.01)


def test_com_matches_the_accessor(state, small):
    arr, _ = small
    state.param.update(com_cy=15.5, com_cx=16.25, com_radius=6, com_rotation=10)
    assert state.results.get("com") is None  # lazy: nothing until enabled
    state.com_enabled = True
    assert state.jobs.wait(timeout=120)
    com = state.results.get("com")
    ref = arr.fs.com(cy=15.5, cx=16.25, radius=6, rotation=10, client="inline")
    assert com.done == 1.0
    for key in ("com_x", "com_y", "magnitude", "divergence", "curl"):
        np.testing.assert_allclose(com.data[key], ref[key], rtol=1e-6, equal_nan=True)


def test_persisted_arrays_use_the_blocks_in_memory(small):
    from framescope.io._lazy import source_of

    arr, _ = small
    kept = arr.fs.persist("inline")
    assert source_of(in_memory(arr)) is not None  # lazy: read straight from the source
    assert source_of(in_memory(kept)) is None
    assert in_memory(kept).data.name == arr.data.name  # same cache keys


def test_default_detectors_and_custom_ones(small):
    arr, _ = small
    st = DashboardState(arr, client="inline",
                        detectors={"a": fm.ring(10, 10, 2, 5), "b": fm.box(0, 0, 4, 4)})
    try:
        assert st.names == ["a", "b"]
        assert st.selected == "a"
        assert st.masks() == fm.MaskStack({"a": fm.ring(10, 10, 2, 5), "b": fm.box(0, 0, 4, 4)})
    finally:
        st.close()
    with pytest.raises(TypeError, match="point"):
        DashboardState(arr, client="inline", detectors={"p": fm.point(1, 1)})


@pytest.fixture(autouse=True)
def _fresh_cache():
    results.clear()  # each test computes from scratch
    return


def test_with_a_user_client_and_persisted_data(small):
    """A distributed.Client passed in (not the default one), frames held by its workers."""
    import dask
    from distributed import Client, LocalCluster

    arr, frames = small
    scheduler = dask.config.get("scheduler", None)
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=None) as cluster,
          Client(cluster, set_as_default=False) as client):
        kept = arr.fs.persist(client)
        st = DashboardState(kept, client=client)
        try:
            assert st.client is client
            st.start()
            st.detector("adf").r_out = 12
            st.pick(4, 5)
            assert st.jobs.wait(timeout=120)
            for det in st.detectors:
                np.testing.assert_allclose(st.image(det.name).image,
                                           einsum(frames, det.spec()), rtol=1e-5)
            np.testing.assert_array_equal(st.results.get("frame").image, frames[4, 5])
        finally:
            st.close()
    # jobs ran in several threads at once and left dask's global config as it was
    assert dask.config.get("scheduler", None) == scheduler
