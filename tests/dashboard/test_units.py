"""Physical units in the dashboard: pixels inside, mrad and nm on screen.

References are independent of the dashboard's conversion: the calibrated array's own
coordinates (``Calibration.coords``), the masks' own physical-unit specs
(``fm.ring(..., units="mrad").resolved(calibration, det_shape)``) and hand-computed values.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import framescope.masks as fm
from framescope.dashboard._results import Frame
from framescope.dashboard._units import AxisMap, display_units
from framescope.errors import MaskError

# a beam centre off the middle and unequal scan steps, so y/x or origin mix-ups show
CAL = {"energy": "300 kV", "angle_per_px": "0.5 mrad", "center": (15.0, 17.0),
       "scan_step": ("0.3 nm", "0.2 nm")}
DET = (32, 32)


@pytest.fixture(scope="module")
def calibrated(small):
    return small[0].fs.calibrate(**CAL)


@pytest.fixture
def cstate(calibrated):
    from framescope.dashboard._state import DashboardState

    st = DashboardState(calibrated, client="inline")
    yield st
    st.close()


def _same_mask(spec, expected, shape=DET) -> None:
    np.testing.assert_array_equal(spec.rasterize(shape), expected.rasterize(shape))
    for key, value in expected.params.items():
        np.testing.assert_allclose(spec.params[key], value, atol=1e-9, err_msg=key)


# ---- the conversion ------------------------------------------------------------------------

def test_maps_give_the_calibrated_coordinates(calibrated):
    units = display_units(calibrated.fs.calibration, DET)
    np.testing.assert_allclose(units.det.x(np.arange(32)), calibrated.det_x.values)
    np.testing.assert_allclose(units.det.y(np.arange(32)), calibrated.det_y.values)
    np.testing.assert_allclose(units.scan.x(np.arange(10)), calibrated.scan_x.values)
    np.testing.assert_allclose(units.scan.y(np.arange(12)), calibrated.scan_y.values)
    np.testing.assert_allclose(units.det.x_px(calibrated.det_x.values), np.arange(32))
    np.testing.assert_allclose(units.scan.y_px(calibrated.scan_y.values), np.arange(12))
    assert (units.det.unit, units.scan.unit) == ("mrad", "nm")
    assert units.label("det_x") == "det_x (mrad)"
    assert units.label("scan_y") == "scan_y (nm)"
    px = display_units(calibrated.fs.calibration, DET, "px")
    assert px.label("det_x") == "det_x (px)"  # a calibrated array names px too
    assert px.det.x(5.0) == 5.0
    assert display_units(None, DET).label("det_x") == "det_x"  # uncalibrated: as always
    with pytest.raises(ValueError, match="units: expected one of"):
        display_units(None, DET, "mm")


def test_a_plane_without_calibration_stays_in_pixels(small):
    scan_only = small[0].fs.calibrate(scan_step="0.2 nm")
    units = display_units(scan_only.fs.calibration, DET)
    assert (units.det.unit, units.scan.unit) == ("px", "nm")
    assert units.det.x(7.0) == 7.0
    assert units.label("det_x") == "det_x (px)"


@pytest.mark.parametrize(("param", "px", "shown"), [
    ("cy", 16.0, 0.5), ("cx", 16.0, -0.5), ("y0", 11.0, -2.0), ("x1", 27.0, 5.0),
    ("r", 4.0, 2.0), ("r_out", 14.4, 7.2),
    ("vertices", [(15.0, 17.0), (19.0, 13.0)], [(0.0, 0.0), (2.0, -2.0)]),
])
def test_geometry_round_trip(param, px, shown):
    m = AxisMap("mrad", (0.5, 0.5), (15.0, 17.0))
    np.testing.assert_allclose(m.geometry(param, px), shown)
    np.testing.assert_allclose(m.geometry_px(param, shown), px)
    with pytest.raises(ValueError, match="detector parameter"):
        m.geometry("radius", 1.0)


def test_draw_tool_columns_convert_both_ways():
    m = AxisMap("nm", (0.3, 0.2))
    data = {"xs": [[0.0, 1.0, 2.0]], "ys": [[0.3, 0.6, 0.9]], "name": ["p"]}
    px = m.columns(data, ("xs",), ("ys",), to_px=True)
    np.testing.assert_allclose(px["xs"][0], [0, 5, 10])
    np.testing.assert_allclose(px["ys"][0], [1, 2, 3])
    assert px["name"] == ["p"]
    boxes = m.columns({"x0": [5.0, None], "y0": [2.0, 1.0]}, ("x0",), ("y0",))
    assert boxes["x0"][0] == pytest.approx(1.0)
    assert boxes["x0"][1] is None  # a half-drawn row stays empty
    from framescope.dashboard._units import DisplayUnits

    assert DisplayUnits(scan=m, labelled=True).position(5, 2) == "y=1.5 nm, x=0.4 nm"
    assert DisplayUnits().position(5, 2) == "y=5, x=2"
    assert AxisMap().decimals == 2
    assert AxisMap("mrad", (0.05, 0.05)).decimals == 4  # 0.01 px = 0.0005 mrad


def test_equal_aspect_pads_the_short_side():
    from framescope.dashboard._bokeh import equal_aspect, frame_size

    # 2:1 frame, square data: x widened about its centre, y kept
    assert equal_aspect((0, 10), (0, 10), (200, 100)) == ((-5, 15), (0, 10))
    # inverted y (invert_yaxis) stays inverted when padded
    xlim, ylim = equal_aspect((0.0, 2.0), (3.6, 0.0), (100, 100))
    assert xlim == (-0.8, 2.8)
    assert ylim == (3.6, 0.0)
    assert frame_size((12, 10), 400) == (267, 320)
    assert frame_size((32, 32), 440) == (360, 360)


# ---- the state ----------------------------------------------------------------------------

def test_uncalibrated_state_is_in_pixels(state):
    assert state.calibration is None
    assert not state.calibrated
    assert state.units == "px"
    assert state.shown_geometry("bf") == {"cy": 16, "cx": 16, "r": 4.0}


def test_typed_mrad_equals_the_pixel_detector_it_implies(cstate, calibrated):
    cal = calibrated.fs.calibration
    assert cstate.calibrated
    assert cstate.units == "physical"  # a calibrated array opens in its units
    cstate.set_shown_geometry("adf", cy=1.0, cx=-2.0, r_in=3.0, r_out=6.5)
    _same_mask(cstate.detector("adf").spec(),
               fm.ring(1.0, -2.0, 3.0, 6.5, units="mrad").resolved(cal, DET))
    assert cstate.detector("adf").cy == pytest.approx(17.0)  # 15 px + 1 mrad / 0.5
    box = cstate.add("box")
    cstate.set_shown_geometry(box.name, y0=-4.0, x0=-1.5, y1=2.0, x1=3.25)
    _same_mask(box.spec(), fm.box(-4.0, -1.5, 2.0, 3.25, units="mrad").resolved(cal, DET))
    poly = cstate.add("polygon")
    verts = [(-3.0, -3.0), (-3.0, 4.0), (5.0, 0.5)]
    cstate.set_shown_geometry(poly.name, vertices=verts)
    _same_mask(poly.spec(), fm.polygon(verts, units="mrad").resolved(cal, DET))
    with pytest.raises(ValueError, match="expected parameters of"):
        cstate.set_shown_geometry("adf", r=1.0)


def test_units_toggle_round_trip(cstate):
    physical = cstate.shown_geometry("adf")
    # default ring at (16, 16) px, radii 8 and 14.4 px; centre (15, 17), 0.5 mrad/px
    assert physical == pytest.approx({"cy": 0.5, "cx": -0.5, "r_in": 4.0, "r_out": 7.2})
    cstate.units = "px"
    assert cstate.shown_geometry("adf") == pytest.approx(
        {"cy": 16.0, "cx": 16.0, "r_in": 8.0, "r_out": 14.4})
    cstate.set_shown_geometry("adf", r_out=12.0)  # typed in px now
    cstate.units = "physical"
    assert cstate.shown_geometry("adf") == pytest.approx({**physical, "r_out": 6.0})
    cstate.pick_shown(1.5, 0.4)  # a tap in nm
    assert cstate.picked == (5, 2)


def test_detectors_given_in_mrad_become_pixels(calibrated, small):
    from framescope.dashboard._state import DashboardState

    st = DashboardState(calibrated, client="inline",
                        detectors={"bf": fm.disk(r=2, units="mrad"),
                                   "box": fm.box(0, 0, 4, 4)})
    try:
        bf = st.detector("bf")
        assert (bf.cy, bf.cx, bf.r) == pytest.approx((15.0, 17.0, 4.0))
        assert st.detector("box").spec() == fm.box(0, 0, 4, 4)
    finally:
        st.close()
    with pytest.raises(MaskError, match="'bf'"):
        DashboardState(small[0], client="inline", detectors={"bf": fm.disk(r=2, units="mrad")})


# ---- the views ----------------------------------------------------------------------------

@pytest.fixture
def _extensions():
    from framescope.dashboard._app import load_extensions

    load_extensions()


@pytest.mark.usefixtures("_extensions")
def test_detector_view_draws_and_reads_mrad(cstate, calibrated):
    from framescope.dashboard._detector import DetectorView

    cal = calibrated.fs.calibration
    view = DetectorView(cstate)
    tables = view._tables()
    assert tables["centres"]["x"] == [pytest.approx(-0.5)]  # bf at (16, 16) px
    assert tables["centres"]["y"] == [pytest.approx(0.5)]
    seg = tables["outlines"][0]
    bf = np.asarray(seg["name"]) == "bf"
    r = np.hypot(np.asarray(seg["x0"])[bf] + 0.5, np.asarray(seg["y0"])[bf] - 0.5)
    np.testing.assert_allclose(r, 2.0)  # 4 px radius = 2 mrad

    view._on_centres({"x": [1.0], "y": [-1.0], "name": ["bf"]})  # PointDraw, mrad
    assert (cstate.detector("bf").cy, cstate.detector("bf").cx) == (13.0, 19.0)
    view._on_boxes({"x0": [-2.0], "y0": [2.5], "x1": [3.0], "y1": [-1.0], "name": [None]})
    _same_mask(cstate.detector("box1").spec(),
               fm.box(-1.0, -2.0, 2.5, 3.0, units="mrad").resolved(cal, DET))
    view._on_polygons({"xs": [[-3.0, 4.0, 0.5]], "ys": [[-3.0, -3.0, 5.0]], "name": [None]})
    _same_mask(cstate.detector("polygon1").spec(),
               fm.polygon([(-3, -3), (-3, 4), (5, 0.5)], units="mrad").resolved(cal, DET))

    cstate.selected = "bf"
    pending = []
    view._schedule = lambda callback, ms: pending.append(callback)
    view._on_pan(1.1, -0.9, 0)  # press on bf's centre (1, -1) mrad
    view._on_pan(3.1, -1.9, 0)  # drag by (+2, -1) mrad = (+4, -2) px
    assert (cstate.detector("bf").cy, cstate.detector("bf").cx) == (11.0, 23.0)

    frame = np.ones(DET)
    view.frame = Frame("picked", frame, "frame at scan (y=5, x=2)", 1.0, (5, 2))
    data = view._display_data()
    assert data["title"] == "detector: frame at scan (y=1.5 nm, x=0.4 nm)"
    np.testing.assert_allclose(data["x"], calibrated.det_x.values)
    assert data["xunit"] == "mrad"
    cstate.units = "px"
    assert view._display_data()["title"] == "detector: frame at scan (y=5, x=2)"
    assert view._pushed["centres"]["x"] == [23.0]  # the shapes follow the toggle


@pytest.mark.usefixtures("_extensions")
def test_scan_view_taps_and_roi_in_nm(cstate):
    from framescope.dashboard._scan import ScanView

    view = ScanView(cstate)
    view._on_tap(0.4, 1.5)  # x, y in nm
    assert cstate.picked == (5, 2)
    assert view._marker_data() == {"x": [pytest.approx(0.4)], "y": [pytest.approx(1.5)]}
    view.roi_box.update(data={"x0": [0.1], "y0": [0.45], "x1": [0.9], "y1": [1.05]})
    view._on_roi()
    expected = fm.box(1.5, 0.5, 3.5, 4.5).rasterize((12, 10)) > 0
    np.testing.assert_array_equal(cstate.roi, expected)
    cstate.units = "px"  # the drawn ROI is redrawn in pixels
    sent = view._roi_box_pipe.data
    np.testing.assert_allclose([sent[k][0] for k in ("x0", "y0", "x1", "y1")],
                               [0.5, 1.5, 4.5, 3.5])
    np.testing.assert_allclose(view._main_data()["x"], np.arange(10))
    view.roi_box.update(data=dict(sent))  # what BoxEdit reports back: the same ROI
    view._on_roi()
    np.testing.assert_array_equal(cstate.roi, expected)


def test_editor_fields_type_in_the_displayed_units(cstate):
    from framescope.dashboard._editor import DetectorEditor

    editor = DetectorEditor(cstate)
    cstate.selected = "adf"
    fields = {w.label: w for w in editor.geometry_fields("adf")}
    assert list(fields) == ["cy (mrad)", "cx (mrad)", "r_in (mrad)", "r_out (mrad)"]
    assert fields["r_out (mrad)"].value == pytest.approx(7.2)
    fields["r_out (mrad)"].value = 6.5
    assert cstate.detector("adf").r_out == pytest.approx(13.0)
    cstate.detector("adf").cx = 21.0  # a drag: the field follows, in mrad
    assert fields["cx (mrad)"].value == pytest.approx(2.0)
    cstate.units = "px"  # the editor shows new fields, in pixels
    shown = editor.fields.objects[0].objects
    labels = [w.label for w in shown if w.label.startswith(("cy", "cx", "r_"))]
    assert labels == ["cy (px)", "cx (px)", "r_in (px)", "r_out (px)"]
    assert next(w for w in shown if w.label == "cx (px)").value == 21.0
    fields["r_out (mrad)"].value = 1.0  # a field no longer shown moves nothing
    assert cstate.detector("adf").r_out == pytest.approx(13.0)


def _figures(root) -> dict[str, object]:
    from bokeh.plotting import figure

    return {f.title.text.split(":")[0]: f for f in root.select({"type": figure})
            if f.title is not None and f.title.text.startswith(("scan", "detector", "COM"))}


def _hover(fig) -> list[str]:
    """The image's hover readout labels (what the pointer's position is shown as)."""
    from bokeh.models import HoverTool

    return [label for h in fig.select({"type": HoverTool}) for label, _ in h.tooltips
            if label.startswith(("det_", "scan_"))]


def _axes(fig) -> tuple[str, str, tuple[float, float], tuple[float, float], float]:
    xs, ys = (fig.x_range.start, fig.x_range.end), (fig.y_range.start, fig.y_range.end)
    per_px = (abs(xs[1] - xs[0]) / fig.frame_width, abs(ys[1] - ys[0]) / fig.frame_height)
    return (fig.xaxis[0].axis_label, fig.yaxis[0].axis_label, xs, ys,
            per_px[0] / per_px[1])


def test_bokeh_axes_follow_the_toggle(calibrated):
    from framescope.dashboard import dashboard

    dash = dashboard(calibrated, client="inline")
    try:
        root = dash.__panel__().get_root()
        figs = _figures(root)
        xl, yl, xs, ys, aspect = _axes(figs["detector"])
        assert (xl, yl) == ("det_x (mrad)", "det_y (mrad)")
        assert _hover(figs["detector"]) == ["det_x (mrad)", "det_y (mrad)"]
        assert xs == pytest.approx((-8.75, 7.25))  # (-0.5 - 17) * 0.5 … (31.5 - 17) * 0.5
        assert ys == pytest.approx((8.25, -7.75))  # inverted: top row first
        assert aspect == pytest.approx(1, rel=0.02)
        xl, yl, xs, ys, aspect = _axes(figs["scan"])
        assert (xl, yl) == ("scan_x (nm)", "scan_y (nm)")
        assert aspect == pytest.approx(1, rel=0.02)  # 0.3 x 0.2 nm pixels, drawn so

        async def flip() -> None:  # redraws draw-tool sources: Bokeh needs a loop
            dash.state.units = "px"
            await asyncio.sleep(0.1)

        asyncio.run(flip())
        xl, yl, xs, ys, aspect = _axes(figs["detector"])
        assert (xl, yl) == ("det_x (px)", "det_y (px)")
        assert _hover(figs["detector"]) == ["det_x (px)", "det_y (px)"]
        assert xs == pytest.approx((-0.5, 31.5))
        assert aspect == pytest.approx(1, rel=0.02)
        xl, yl, xs, ys, aspect = _axes(figs["scan"])
        assert (xl, yl) == ("scan_x (px)", "scan_y (px)")
        assert ys[0] > ys[1]  # still inverted
        assert aspect == pytest.approx(1, rel=0.02)
        assert _axes(figs["COM"])[0] == "scan_x (px)"
    finally:
        dash.close()


def test_uncalibrated_dashboard_looks_as_before(small):
    from framescope.dashboard import dashboard

    dash = dashboard(small[0], client="inline")
    try:
        root = dash.__panel__().get_root()
        xl, yl, xs, _, _ = _axes(_figures(root)["detector"])
        assert (xl, yl, xs) == ("det_x", "det_y", (-0.5, 31.5))
        assert not dash.units_toggle().visible
    finally:
        dash.close()


# ---- export ---------------------------------------------------------------------------------

def test_export_reproduces_the_calibration(cstate, small, tmp_path):
    import xarray as xr

    from framescope.dashboard._export import notebook_code, write_results
    from framescope.engine._cache import results

    from .test_export import _inline

    cstate.start()
    cstate.set_shown_geometry("bf", r=3.0)  # typed in mrad: 6 px
    assert cstate.jobs.wait(timeout=120)
    code = notebook_code(cstate)
    assert "arr = arr.fs.calibrate(" in code
    results.clear()
    scope = {"arr": small[0]}  # the same frames, uncalibrated: the code calibrates them
    exec("\n".join(ln if "fs.calibrate(" in ln else _inline(ln)  # calibrate runs nothing
                   for ln in code.splitlines()), scope)
    arr = scope["arr"]
    want = cstate.calibration.model_dump(exclude={"sources"})
    assert arr.fs.calibration.model_dump(exclude={"sources"}) == want
    images = scope["images"]
    assert images.scan_x.attrs["units"] == "nm"
    np.testing.assert_allclose(images.scan_y, np.arange(12) * 0.3)
    np.testing.assert_allclose(images.sel(mask="bf"), cstate.image("bf").image, rtol=1e-6)

    path = write_results(cstate, tmp_path / "out.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds.load()
    assert ds["scan_x"].attrs["units"] == "nm"
    np.testing.assert_allclose(ds["scan_x"], np.arange(10) * 0.2)
    assert ds["frame"]["det_x"].attrs["units"] == "mrad"
    np.testing.assert_allclose(ds["frame"]["det_y"], (np.arange(32) - 15.0) * 0.5)
    assert type(cstate.calibration).from_json(ds.attrs["calibration"]) == cstate.calibration


def test_dpc_starts_from_the_calibrations_scan_rotation():
    import math

    from framescope.dashboard._state import DashboardState
    from framescope.datasets import synthetic

    arr = synthetic(scan=(4, 4), det=(16, 16)).fs.calibrate(rotation="30 deg", flip=True,
                                                            angle_per_px="1 mrad")
    state = DashboardState(arr, client="inline")
    try:
        assert state.com_rotation == pytest.approx(30.0)
        assert state.com_flip_y is True
        assert state.com_params()["rotation"] == pytest.approx(math.degrees(math.pi / 6))
    finally:
        state.close()
