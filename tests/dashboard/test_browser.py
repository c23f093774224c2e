"""End to end: ``framescope serve --demo`` driven by Playwright in Debian's chromium.

Every value is read from the page's Bokeh document and compared with a numpy reference
computed here from the same synthetic frames. The tests share one server and one page and
run in file order (each builds on the page the previous one left). The demo is calibrated
and opens in physical units; the second test switches to pixels, the units of the rest.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import framescope.masks as fm

from ._browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JS_AXES,
    JS_TO_PAGE,
    JS_TOOL_ACTIVE,
    JS_TOOL_BUTTON,
    JS_TOOL_DATA,
    artifacts_dir,
    assert_image_on_screen,
    drag,
    image,
    launch_server,
    retry,
    server_url,
    stop_server,
    wait_for,
)

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM}"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from framescope.dashboard._serve import demo_data

    return demo_data().values  # (64, 64, 128, 128) uint16, what the server shows


def reference(frames: np.ndarray, spec) -> np.ndarray:
    """Virtual image of a binary mask: exact integer sums over the mask's pixels."""
    mask = spec.rasterize(frames.shape[2:]) > 0
    return frames[:, :, mask].sum(axis=-1, dtype=np.int64).astype(np.float64)


@pytest.fixture(scope="module")
def server(request):
    proc = launch_server(["--demo", "--port", "0"])
    try:
        request.getfixturevalue("frames")  # the reference, computed while the server starts
        yield server_url(proc)
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def page(server):
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1500, "height": 1100})
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.console_errors = errors
        pg.goto(server)
        pg.wait_for_function("window.Bokeh && Bokeh.documents.length > 0", timeout=90_000)
        yield pg
        pg.screenshot(path=str(artifacts_dir() / "dashboard.png"), full_page=True)
        browser.close()


def matches(page, title: str, expected: np.ndarray, exact: bool = False,
            rtol: float = 1e-5) -> bool:
    """Whether the figure's image equals ``expected`` (raises with the difference if it
    has the shape but other values, so a timeout shows why)."""
    got = image(page, title, exact)
    if got is None or tuple(got["shape"]) != expected.shape:
        return False
    np.testing.assert_allclose(got["values"], expected, rtol=rtol)
    return True


def settle(page, seconds: float = 1.0) -> None:
    """Let the page finish processing before the next gesture (Bokeh drops gestures that
    start while it is still busy re-rendering)."""
    page.wait_for_function(
        "() => [...Bokeh.documents[0].all_models].some(m => m.type === 'panel.models.markup"
        ".HTML' && String(m.text).includes('up to date'))", timeout=60_000)
    time.sleep(seconds)


def field(page, label: str):
    return page.locator(".bk-input-group", has_text=label).locator("input").first


def select_detector(page, name: str) -> None:
    page.locator(".bk-input-group", has_text="detector").locator("select").first \
        .select_option(name)
    wait_for(lambda: image(page, f"scan: {name}") is not None, 30, f"scan view of {name}")


_TOOLS = {"box-edit": "BoxEditTool", "poly-draw": "PolyDrawTool",
          "point-draw": "PointDrawTool"}


def click_tool(page, figure: str, icon: str) -> None:
    """Click a toolbar button until its tool is active (a click on an active tool would
    turn it off, so check first)."""
    active = lambda: page.evaluate(JS_TOOL_ACTIVE, [figure, _TOOLS[icon]])  # noqa: E731
    if not active():
        retry(lambda: page.mouse.click(*page.evaluate(JS_TOOL_BUTTON, [figure, icon])),
              active, f"the {icon} tool", timeout=2)


def to_page(page, figure: str, x: float, y: float) -> tuple[float, float]:
    return tuple(page.evaluate(JS_TO_PAGE, [figure, x, y]))


def _handle_moved(page) -> dict | None:
    data = page.evaluate(JS_TOOL_DATA, ["detector", "PointDrawTool"])
    return data if data and data["x"] != [64] else None


def test_page_loads_with_the_demo_images(page, frames):
    for name, spec in (("bf", fm.disk(64, 64, 16)), ("adf", fm.ring(64, 64, 32, 57.6))):
        expected = reference(frames, spec)
        wait_for(lambda n=name, e=expected: matches(page, n, e, exact=True), 120,
                 f"the {name} image")
        # the gallery's thumbnail is painted, in the colours of those values
        wait_for(lambda n=name, e=expected: assert_image_on_screen(page, n, e), 10,
                 f"the thumbnail of {name} on screen")
    settle(page)
    assert page.console_errors == []


def _axes(page, prefix: str, x: str, y: str) -> dict | None:
    """The figure's axes, once labelled ``x`` and ``y``."""
    axes = page.evaluate(JS_AXES, [prefix])
    return axes if axes and (axes["x"], axes["y"]) == (x, y) else None


def _assert_equal_aspect(axes: dict) -> None:
    """One data unit spans as many screen pixels along x as along y (data aspect 1)."""
    (x0, x1), (y0, y1) = axes["x_range"], axes["y_range"]
    w, h = axes["frame"]
    assert abs(x1 - x0) / w == pytest.approx(abs(y1 - y0) / h, rel=0.03), axes


def test_units_toggle_switches_mrad_and_nm_to_px(page):
    from framescope.dashboard._serve import demo_data

    cal = demo_data().fs.calibration
    mrad, nm = cal.detector_angle * 1e3, cal.scan_step[1] * 1e9
    det = wait_for(lambda: _axes(page, "detector", "det_x (mrad)", "det_y (mrad)"), 30,
                   "the detector axes in mrad")
    # ticks in mrad from the beam centre: the range is the 128 px frame's edges
    assert det["x_range"] == pytest.approx([(-0.5 - 64) * mrad, (127.5 - 64) * mrad])
    _assert_equal_aspect(det)
    scan = wait_for(lambda: _axes(page, "scan:", "scan_x (nm)", "scan_y (nm)"), 30,
                    "the scan axes in nm")
    assert scan["y_range"][0] == pytest.approx(63.5 * nm, rel=0.02)  # inverted: top row
    _assert_equal_aspect(scan)
    # bf's radius, 16 px, in mrad in the editor
    assert float(field(page, "r (mrad)").input_value()) == pytest.approx(16 * mrad, abs=1e-3)

    page.get_by_role("button", name="px", exact=True).first.click()
    det = wait_for(lambda: _axes(page, "detector", "det_x (px)", "det_y (px)"), 30,
                   "the detector axes in px")
    wait_for(lambda: page.evaluate(JS_AXES, ["detector"])["x_range"] == [-0.5, 127.5], 10,
             "the detector range in px")
    _assert_equal_aspect(det)
    scan = wait_for(lambda: _axes(page, "scan:", "scan_x (px)", "scan_y (px)"), 30,
                    "the scan axes in px")
    _assert_equal_aspect(scan)
    wait_for(lambda: float(field(page, "r (px)").input_value()) == 16, 20, "r in px")
    settle(page)
    assert page.console_errors == []


def test_typed_radius_updates_the_image(page, frames):
    select_detector(page, "adf")
    r_out = field(page, "r_out (px)")
    r_out.fill("50")
    r_out.press("Enter")
    expected = reference(frames, fm.ring(64, 64, 32, 50))
    wait_for(lambda: matches(page, "scan: adf", expected), 60, "the edited ring's image")
    settle(page)


def test_dragged_centre_updates_the_image(page, frames):
    select_detector(page, "bf")
    settle(page)
    moved = retry(lambda: drag(page, to_page(page, "detector", 64, 64),
                               to_page(page, "detector", 70, 58), steps=15, pause=0.04),
                  lambda: _handle_moved(page), "the handle to move")
    assert moved is not None
    assert moved["name"] == ["bf"]
    cy, cx = moved["y"][0], moved["x"][0]
    assert abs(cx - 70) < 1.5
    assert abs(cy - 58) < 1.5
    # the numeric fields follow the drawing
    wait_for(lambda: float(field(page, "cx (px)").input_value()) == round(cx, 2), 20, "cx")
    spec = fm.disk(round(cy, 2), round(cx, 2), 16)
    wait_for(lambda: matches(page, "scan: bf", reference(frames, spec)), 60,
             "the moved disk's image")
    settle(page)


def test_drawn_box_becomes_a_detector(page, frames):
    click_tool(page, "detector", "box-edit")
    retry(lambda: drag(page, to_page(page, "detector", 20.3, 30.2),
                       to_page(page, "detector", 45.6, 60.1), steps=10, shift=True),
          lambda: page.evaluate(JS_TOOL_DATA, ["detector", "BoxEditTool"])["left"],
          "a drawn box")
    boxes = wait_for(lambda: (d := page.evaluate(JS_TOOL_DATA, ["detector", "BoxEditTool"]))
                     and d["name"] == ["box1"] and d, 30, "the new box detector")
    left, right = sorted((boxes["left"][0], boxes["right"][0]))
    top, bottom = sorted((boxes["top"][0], boxes["bottom"][0]))
    spec = fm.box(top, left, bottom, right)
    assert abs(left - 20.3) < 1.5
    assert abs(bottom - 60.1) < 1.5
    wait_for(lambda: matches(page, "box1", reference(frames, spec), exact=True), 60,
             "the box's image")
    click_tool(page, "detector", "point-draw")
    settle(page)


def test_drawn_polygon_becomes_a_detector(page, frames):
    click_tool(page, "detector", "poly-draw")
    corners = [to_page(page, "detector", x, y) for x, y in ((90, 20), (115.5, 30), (100, 52))]

    def press(xy):  # Bokeh's PolyDrawTool starts and finishes a polygon on a long press
        page.mouse.move(*xy)
        page.mouse.down()
        time.sleep(0.6)
        page.mouse.up()
        time.sleep(0.3)

    def draw():
        press(corners[0])
        page.mouse.click(*corners[1])
        time.sleep(0.3)
        press(corners[2])

    retry(draw, lambda: page.evaluate(JS_TOOL_DATA, ["detector", "PolyDrawTool"])["xs"],
          "a drawn polygon")
    poly = wait_for(lambda: (d := page.evaluate(JS_TOOL_DATA, ["detector", "PolyDrawTool"]))
                    and d["name"] == ["polygon1"] and d, 30, "the new polygon detector")
    verts = list(zip(poly["ys"][0], poly["xs"][0], strict=True))
    if verts[0] == verts[-1]:
        verts = verts[:-1]
    assert len(verts) == 3
    assert abs(verts[1][1] - 115.5) < 1.5
    wait_for(lambda: matches(page, "polygon1", reference(frames, fm.polygon(verts)),
                             exact=True), 60, "the polygon's image")
    click_tool(page, "detector", "point-draw")
    settle(page)


def test_tap_shows_that_frame(page, frames):
    page.get_by_role("button", name="linear").first.click()
    settle(page, 0.5)
    retry(lambda: page.mouse.click(*to_page(page, "scan:", 10, 20)),
          lambda: image(page, "detector: frame at scan (y=20, x=10)"), "the tap")
    wait_for(lambda: matches(page, "detector: frame at scan (y=20, x=10)",
                             frames[20, 10].astype(np.float64), exact=True, rtol=0), 60,
             "the picked frame")
    settle(page)


def test_roi_shows_its_summed_frame(page, frames):
    click_tool(page, "scan:", "box-edit")
    rect = retry(lambda: drag(page, to_page(page, "scan:", 5.2, 8.1),
                              to_page(page, "scan:", 15.4, 19.7), steps=10, shift=True),
                 lambda: (d := page.evaluate(JS_TOOL_DATA, ["scan:", "BoxEditTool"]))
                 and len(d["left"]) == 1 and d, "the ROI box")
    left, right = sorted((rect["left"][0], rect["right"][0]))
    top, bottom = sorted((rect["top"][0], rect["bottom"][0]))
    roi = fm.box(round(top, 2), round(left, 2), round(bottom, 2),
                 round(right, 2)).rasterize((64, 64)) > 0
    expected = frames[roi].sum(axis=0, dtype=np.int64).astype(np.float64)
    wait_for(lambda: matches(page, f"detector: ROI sum of {int(roi.sum())} frames", expected,
                             exact=True, rtol=1e-6), 60, "the ROI's summed frame")
    settle(page)
    assert page.console_errors == []


def test_export_downloads_the_results(page, frames, tmp_path):
    import xarray as xr

    page.locator(".bk-tab", has_text="Export").first.click()
    # the code is refreshed when the tab opens
    code = page.locator("pre", has_text="'box1': fs.masks.box(")
    wait_for(lambda: code.count(), 30, "the notebook code with the drawn box")
    assert "polygon1 = arr.fs.virtual_image(fs.masks.polygon(" in code.first.inner_text()
    with page.expect_download(timeout=60_000) as download:
        page.locator("button", has_text="Download results").first.click()
    path = tmp_path / "results.nc"
    download.value.save_as(path)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds.load()
    stack = fm.MaskStack.from_json(ds["virtual_image"].attrs["masks"])
    assert list(stack) == ["bf", "adf", "box1", "polygon1"]
    for name in ("adf", "polygon1"):
        np.testing.assert_allclose(ds["virtual_image"].sel(mask=name),
                                   reference(frames, stack[name]), rtol=1e-5)
    assert page.console_errors == []
