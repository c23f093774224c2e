"""The dashboard's views without a browser: Bokeh models, draw-tool events, throttling."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import framescope.masks as fm
from framescope.dashboard._results import VirtualImage
from framescope.dashboard._scan import scan_image_data
from framescope.engine._cache import results

from ._reference import einsum


@pytest.fixture
def dash(small):
    from framescope.dashboard import dashboard

    results.clear()
    d = dashboard(small[0], client="inline")
    yield d
    d.close()


def in_loop(fn) -> None:
    """Run ``fn`` in a running asyncio loop, as panel's server does, and let the draw-tool
    callbacks it schedules run."""

    async def main() -> None:
        fn()
        await asyncio.sleep(0.1)

    asyncio.run(main())


def _images(root) -> dict[str, np.ndarray]:
    """Image glyph data by figure title, as the browser receives it."""
    from bokeh.models import GlyphRenderer, Image
    from bokeh.plotting import figure

    out = {}
    for fig in root.select({"type": figure}):
        for r in fig.select({"type": GlyphRenderer}):
            if isinstance(r.glyph, Image):
                out[fig.title.text] = np.asarray(r.data_source.data["image"][0])
    return out


def test_models_carry_the_results(dash, small):
    _, frames = small
    root = dash.__panel__().get_root()
    assert dash.state.jobs.wait(timeout=120)
    dash.flush()
    images = _images(root)
    bf, adf = (dash.state.detector(n).spec() for n in ("bf", "adf"))
    np.testing.assert_allclose(images["bf"], einsum(frames, bf), rtol=1e-5)
    np.testing.assert_allclose(images["adf"], einsum(frames, adf), rtol=1e-5)
    np.testing.assert_allclose(images["scan: bf"], einsum(frames, bf), rtol=1e-5)
    np.testing.assert_allclose(images["detector: mean frame"],
                               np.log10(1 + frames.mean(axis=(0, 1))), rtol=1e-5)
    assert dash._callback is not None
    assert dash._callback.period == 100


def test_tap_and_roi_show_their_frames(dash, small):
    _, frames = small
    root = dash.__panel__().get_root()
    dash.detector_view.scale = "linear"
    dash.scan_view._on_tap(3.2, 7.6)  # x, y in scan pixels
    assert dash.state.picked == (8, 3)
    assert dash.state.jobs.wait(timeout=120)
    dash.flush()
    images = _images(root)
    np.testing.assert_array_equal(images["detector: frame at scan (y=8, x=3)"], frames[8, 3])

    dash.scan_view.roi_box.update(data={"x0": [0.5], "y0": [1.5], "x1": [4.5], "y1": [3.5]})
    dash.scan_view._on_roi()
    roi = fm.box(1.5, 0.5, 3.5, 4.5).rasterize((12, 10)) > 0
    np.testing.assert_array_equal(dash.state.roi, roi)
    assert dash.state.jobs.wait(timeout=120)
    dash.flush()
    np.testing.assert_array_equal(_images(root)["detector: ROI sum of 8 frames"],
                                  frames[roi].sum(axis=0))
    in_loop(dash.scan_view.clear_roi)  # redraws a draw tool's source: Bokeh needs a loop
    assert dash.state.frame_mode == "mean"
    assert dash.state.roi is None


def test_flush_sends_each_image_once_per_tick(dash):
    root = dash.__panel__().get_root()
    assert dash.state.jobs.wait(timeout=120)
    dash.flush()
    sends = []
    direct = dash.scan_view._thumbs["bf"][1]
    show = direct.image
    direct.image = lambda data: sends.append(data) or show(data)
    vi = dash.state.image("bf")
    for i in range(25):  # results arriving faster than the display rate
        dash.state.results.put("vi:bf", VirtualImage("bf", vi.image + i, 1.0, vi.spec_key))
    assert dash.flush() == 1
    assert len(sends) == 1
    np.testing.assert_allclose(sends[0]["z"], vi.image + 24)
    np.testing.assert_allclose(_images(root)["bf"], vi.image + 24)  # in the Bokeh models
    assert dash.flush() == 0
    assert len(sends) == 1
    with pytest.raises(ValueError, match="update_period"):
        dash.param.update(update_period=20)  # more than 10 updates/s is refused


def test_live_drag_moves_the_centre_and_is_undone_without_pointdraw(dash):
    view = dash.detector_view
    pending = []
    view._schedule = lambda callback, ms: pending.append(callback)
    det = dash.state.detector("bf")
    assert (det.cy, det.cx) == (16, 16)
    centre_sends = []
    view._pipes["centres"].send = lambda data: centre_sends.append(data)
    view._on_pan(16.2, 15.9, 0)  # press near the selected detector's centre
    view._on_pan(19.2, 13.9, 0)  # drag: moves live, by the pointer's displacement
    assert (det.cy, det.cx) == (14, 19)
    assert centre_sends == []  # PointDraw owns the handle during the drag
    view._on_pan(20.2, 12.9, 1)  # release (holoviews counts the stroke on pan end)
    assert (det.cy, det.cx) == (13, 20)
    pending.pop()()  # no PointDraw report: it was not a PointDraw drag, undo
    assert (det.cy, det.cx) == (16, 16)
    assert centre_sends[-1]["x"] == [16]

    view._on_pan(16, 16, 1)
    view._on_pan(18, 17, 1)
    view._on_pan(18, 17, 2)
    view._on_centres({"x": [18.0], "y": [17.0], "name": ["bf"], "color": ["#e41a1c"]})
    pending.pop()()
    assert (det.cy, det.cx) == (17, 18)  # PointDraw confirmed the drag

    view._on_pan(2, 2, 2)  # far from the centre: a pan, nothing moves
    view._on_pan(5, 5, 2)
    assert (det.cy, det.cx) == (17, 18)


def test_drawn_boxes_and_polygons_become_detectors(dash, small):
    _, frames = small
    view = dash.detector_view
    sent = []
    view._pipes["boxes"].send = lambda data: sent.append(data)
    view._on_boxes({"x0": [2.0], "y0": [12.0], "x1": [10.0], "y1": [3.0], "name": [0],
                    "color": [0]})
    box = dash.state.detector("box1")
    assert box.spec() == fm.box(3, 2, 12, 10)
    assert sent[-1]["name"] == ["box1"]
    assert sent[-1]["color"] == [box.color]
    view._on_boxes({"x0": [4.0], "y0": [12.0], "x1": [12.0], "y1": [3.0], "name": ["box1"]})
    assert box.spec() == fm.box(3, 4, 12, 12)
    assert dash.state.jobs.wait(timeout=120)
    np.testing.assert_allclose(dash.state.image("box1").image, einsum(frames, box.spec()),
                               rtol=1e-5)
    view._on_boxes({"x0": [], "y0": [], "x1": [], "y1": [], "name": []})  # Backspace
    assert "box1" not in dash.state.names

    view._on_polygons({"xs": [[1, 20, 10]], "ys": [[2, 2, 25]], "name": [None]})
    poly = dash.state.detector("polygon1")
    assert poly.spec() == fm.polygon([(2, 1), (2, 20), (25, 10)])
    view._on_polygons({"xs": [[1, 20, 12]], "ys": [[2, 2, 25]], "name": ["polygon1"]})
    assert poly.spec() == fm.polygon([(2, 1), (2, 20), (25, 12)])


def _outline_source(root):
    """The detector figure's outline segments as the browser receives them."""
    from bokeh.models import GlyphRenderer, Segment

    for r in root.select({"type": GlyphRenderer}):
        if isinstance(r.glyph, Segment):
            return r.data_source.data
    raise AssertionError("no outline glyph")


def test_typed_numbers_move_the_drawing(dash):
    root = dash.__panel__().get_root()
    dash.state.detector("adf").r_out = 15
    seg = _outline_source(root)
    adf = np.asarray(seg["name"]) == "adf"
    r = np.hypot(np.asarray(seg["x0"])[adf] - 16, np.asarray(seg["y0"])[adf] - 16)
    np.testing.assert_allclose(np.unique(r.round(6)), [8, 15])  # inner and outer circle
    assert set(np.asarray(seg["lw"])[adf]) == {2.0}  # bf is selected: drawn thicker
    assert set(np.asarray(seg["lw"])[~adf]) == {4.0}


def test_big_scans_are_downsampled(small):
    from framescope.dashboard._state import DashboardState

    st = DashboardState.__new__(DashboardState)  # only scan_shape is read
    st.scan_shape = (1030, 1030)
    img = np.random.default_rng(0).random((1030, 1030)).astype(np.float32)
    data = scan_image_data(st, VirtualImage("a", img, 1.0, "k"), "a")
    assert data["z"].shape == (344, 344)
    assert data["z"].nbytes < 10**6
    assert data["x"][0] == 1
    assert data["x"][-1] == 1030


def test_progress_indicator(dash):
    dash.__panel__()
    assert dash.state.jobs.wait(timeout=120)
    dash.flush()
    assert dash.progress.value == 100
    assert dash.activity.object == "up to date"
    dash.state.results.set_progress("vi:bf", 0.25)  # as a running job reports
    dash.flush()
    assert dash.progress.value == 25
    assert "bf 25%" in dash.activity.object
