"""The dashboard of a ptychographic reconstruction: a fake handle for each piece, a real
reconstruction against its own result, and the served view in Debian's chromium."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr
from bokeh.document import Document
from bokeh.models import GlyphRenderer, LogAxis, Plot

from framescope.dashboard import ptycho_view
from framescope.dashboard._ptycho import PtychoView, is_reconstruction, panels, status_text

OBJ, PROBE = (12, 16), (8, 8)


def _ds(seed=0, iterations=3, obj=OBJ, probe=PROBE, modes=None, complex_probe=False,
        step_nm=0.5, units="nm", measured=None, **attrs):
    """A hand-made reconstruction Dataset like ``reconstruct``'s (random values)."""
    rng = np.random.default_rng(seed)
    scale = {"nm": 1.0, "m": 1e-9}[units]
    pshape = probe if modes is None else (modes, *probe)
    pdims = ("probe_y", "probe_x") if modes is None else ("mode", "probe_y", "probe_x")
    p = (rng.random(pshape) + 1j * rng.random(pshape)).astype(np.complex64)
    probe_vars = ({"probe": (pdims, p)} if complex_probe else
                  {"probe_amplitude": (pdims, np.abs(p)), "probe_phase": (pdims, np.angle(p))})
    scan = (3, 4)
    m = np.ones(scan, bool) if measured is None else measured
    ds = xr.Dataset(
        {"object_phase": (("y", "x"), rng.normal(size=obj).astype(np.float32)),
         "object_amplitude": (("y", "x"), rng.random(obj).astype(np.float32) + 0.5),
         **probe_vars,
         "measured": (("scan_y", "scan_x"), m),
         "error": ("iteration", 0.5 ** np.arange(1, iterations + 1))},
        coords={"y": ("y", (np.arange(obj[0]) - 2) * step_nm * scale, {"units": units}),
                "x": ("x", (np.arange(obj[1]) - 3) * step_nm * scale, {"units": units}),
                "probe_y": ("probe_y", np.arange(probe[0]) * 0.1 * scale, {"units": units}),
                "probe_x": ("probe_x", np.arange(probe[1]) * 0.1 * scale, {"units": units}),
                "iteration": np.arange(iterations)})
    ds.attrs.update({"iterations": iterations, "algorithm": "rpie", **attrs})
    return ds


class FakeRec:
    """What the view uses of a Reconstruction; ``stop`` blocks until ``release`` is set."""

    def __init__(self, ds=None):
        self.ds = ds
        self.finished = False
        self.error: Exception | None = None
        self.stop_called = threading.Event()
        self.release = threading.Event()

    def partial(self):
        return self.ds

    def done(self):
        return self.finished

    def stop(self, timeout=None):
        self.stop_called.set()
        self.release.wait(10)
        self.finished = True
        return self.result()

    def result(self, timeout=None):
        if self.error is not None:
            raise self.error
        return self.ds


def _figures(view):
    """Per figure title, its Plot and its (only) image or line renderer, as a browser gets
    them."""
    root = view.__panel__().get_root(Document())
    out = {}
    for plot in root.select({"type": Plot}):
        (r,) = [r for r in plot.renderers if isinstance(r, GlyphRenderer)]
        out[plot.title.text] = (plot, r)
    return out


def _glyph_image(renderer):
    return np.asarray(renderer.data_source.data["image"][0])


def test_images_equal_the_data_on_physical_axes_and_update_in_place():
    rec = FakeRec()
    view = PtychoView(rec)
    assert "no update yet" in view.status_pane.object
    assert view.pipes == {}
    rec.ds = ds = _ds(0)
    view.refresh()
    figs = _figures(view)
    want = {"object phase (rad)": ds.object_phase, "object amplitude": ds.object_amplitude,
            "probe amplitude": ds.probe_amplitude, "probe phase (rad)": ds.probe_phase}
    for title, da in want.items():
        plot, r = figs[title]
        np.testing.assert_array_equal(_glyph_image(r), da.values)
    # the object is 8 nm wide: nm, pixel centres at the coords (0.5 nm pixels from -1.5 nm)
    plot, r = figs["object phase (rad)"]
    assert plot.below[0].axis_label == "x (nm)"
    data = r.data_source.data
    assert data["x"][0] == pytest.approx(-1.5 - 0.25)
    assert data["dw"][0] == pytest.approx(16 * 0.5)
    assert data["y"][0] == pytest.approx(-1.0 - 0.25)
    # the probe is 0.8 nm wide: Å
    plot, r = figs["probe amplitude"]
    assert plot.below[0].axis_label == "x (Å)"
    assert r.data_source.data["dw"][0] == pytest.approx(8 * 1.0)
    plot.x_range.start, plot.x_range.end = 1.0, 2.0  # the user zooms
    pipes = dict(view.pipes)
    rec.ds = ds2 = _ds(1)
    view.refresh()
    assert view.pipes == pipes  # the same plots, new data
    np.testing.assert_array_equal(_glyph_image(r), ds2.probe_amplitude.values)
    np.testing.assert_array_equal(view.pipes["object phase (rad)"].data["z"],
                                  ds2.object_phase.values)
    assert (plot.x_range.start, plot.x_range.end) == (1.0, 2.0)
    lo, hi = r.glyph.color_mapper.low, r.glyph.color_mapper.high
    assert (lo, hi) == pytest.approx((float(ds2.probe_amplitude.min()),
                                 float(ds2.probe_amplitude.max())))
    rec.ds = _ds(2, obj=(20, 16))  # another object shape: new plots
    view.refresh()
    assert view.pipes["object phase (rad)"] is not pipes["object phase (rad)"]
    assert view.pipes["object phase (rad)"].data["z"].shape == (20, 16)


def test_coordinates_in_metres_are_shown_in_angstrom():
    ds = _ds(0, step_nm=0.02, units="m")  # 0.3 nm wide
    p = panels(ds)["object phase (rad)"]
    assert p.unit == "Å"
    np.testing.assert_allclose(p.x, ds.x.values * 1e10)
    np.testing.assert_allclose(p.y, ds.y.values * 1e10)
    bad = ds.assign_coords(x=ds.x.assign_attrs(units="s"))
    with pytest.raises(ValueError, match=r"coordinate 'x': expected units of length .* "
                                         r"found 's'"):
        panels(bad)
    with pytest.raises(KeyError, match="expected a complex 'probe'"):
        panels(ds.drop_vars("probe_phase"))


def test_the_error_curve_is_the_data_on_a_log_axis():
    rec = FakeRec(_ds(0, iterations=4))
    view = PtychoView(rec)
    plot, r = _figures(view)["error"]
    assert isinstance(plot.left[0], LogAxis)
    np.testing.assert_array_equal(r.data_source.data["error"], 0.5 ** np.arange(1, 5))
    np.testing.assert_array_equal(r.data_source.data["iteration"], np.arange(4))
    rec.ds = _ds(1, iterations=7)
    view.refresh()  # the curve grows in place
    np.testing.assert_array_equal(r.data_source.data["error"], 0.5 ** np.arange(1, 8))


@pytest.mark.parametrize("complex_probe", [True, False])
def test_a_mode_dim_shows_one_probe_per_mode(complex_probe):
    rec = FakeRec(_ds(0, modes=3, complex_probe=complex_probe))
    view = PtychoView(rec)
    figs = _figures(view)
    ds = rec.ds
    if complex_probe:
        amp, phase = np.abs(ds.probe.values), np.angle(ds.probe.values)
    else:
        amp, phase = ds.probe_amplitude.values, ds.probe_phase.values
    for k in range(3):
        np.testing.assert_allclose(_glyph_image(figs[f"probe amplitude, mode {k}"][1]),
                                   amp[k], rtol=1e-6)
        np.testing.assert_allclose(_glyph_image(figs[f"probe phase, mode {k} (rad)"][1]),
                                   phase[k], rtol=1e-6)
    assert "probe amplitude" not in figs
    rec.ds = _ds(1, modes=2, complex_probe=complex_probe)  # fewer modes: new plots
    view.refresh()
    assert sorted(t for t in view.pipes if t.startswith("probe amplitude")) == [
        "probe amplitude, mode 0", "probe amplitude, mode 1"]


def test_status_line_counts_iterations_and_received_frames():
    assert status_text(None, "waiting for frames").startswith("**waiting for frames**")
    measured = np.zeros((3, 4), bool)
    measured[:2] = True  # 8 of 12 frames
    text = status_text(_ds(0, iterations=5, measured=measured), "running")
    for part in ("**running**", "iteration **5**", "frames received **8** / 12",
                 "(67% measured)", "error 0.03125", "rpie"):
        assert part in text, part
    rec = FakeRec(_ds(0, stopped=1))
    rec.finished = True
    view = PtychoView(rec)
    assert view.status_pane.object.startswith("**stopped**")
    assert view.stop_button.disabled
    rec.error = RuntimeError("stream ended before any frame")
    view.refresh()
    assert "**failed: RuntimeError: stream ended before any frame**" in (
        view.status_pane.object)


def test_stop_runs_in_a_thread_and_does_not_block():
    rec = FakeRec(_ds(0))
    view = PtychoView(rec)
    assert not view.stop_button.disabled
    assert view.reset_button.disabled  # no source to start again
    stopper = view.stop()
    assert rec.stop_called.wait(10)
    assert stopper.is_alive()  # rec.stop still blocks: the caller did not wait for it
    view.refresh()
    assert view.status_pane.object.startswith("**stopping…**")
    assert view.stop_button.disabled
    rec.release.set()
    stopper.join(10)
    view.refresh()
    assert view.status_pane.object.startswith("**finished**")


def test_reset_stops_and_starts_anew_with_the_same_source_and_options():
    old, new = FakeRec(_ds(0)), FakeRec(_ds(5, obj=(10, 10)))
    calls = []

    def start(source, **options):
        calls.append((source, options))
        return new

    source = object()
    view = PtychoView(old, source=source, options={"defocus": 1e-8, "iterations": 4},
                      start=start)
    assert not view.reset_button.disabled
    resetter = view.reset()
    assert old.stop_called.wait(10)
    view.refresh()  # while the old one stops: no stop, no second reset
    assert view.status_pane.object.startswith("**resetting…**")
    assert view.stop_button.disabled
    assert view.reset_button.disabled
    old.release.set()
    resetter.join(10)
    assert calls == [(source, {"defocus": 1e-8, "iterations": 4})]
    assert view.reconstruction is new
    view.refresh()
    assert view.status_pane.object.startswith("**running**")
    np.testing.assert_array_equal(view.pipes["object phase (rad)"].data["z"],
                                  new.ds.object_phase.values)
    assert not view.stop_button.disabled
    with pytest.raises(RuntimeError, match="no source"):
        PtychoView(FakeRec()).reset()


def test_a_reset_that_cannot_start_says_why_and_keeps_the_old_result():
    def start(source, **options):
        raise ValueError("defocus: bad")

    old = FakeRec(_ds(0))
    old.release.set()
    view = PtychoView(old, source=object(), start=start)
    view.reset().join(10)
    view.refresh()
    assert view.reconstruction is old
    assert view.status_pane.object.startswith("**reset failed: ValueError: defocus: bad**")
    np.testing.assert_array_equal(view.pipes["object phase (rad)"].data["z"],
                                  old.ds.object_phase.values)
    assert not view.reset_button.disabled  # try again


def test_a_large_object_is_sent_as_block_means_on_block_centres():
    ds = _ds(0, obj=(1030, 40))  # over the 512 px limit: 3 px blocks
    view = PtychoView(FakeRec(ds))
    data = view.pipes["object phase (rad)"].data
    a = ds.object_phase.values.astype(np.float64)
    pad = np.full((1032, 42), np.nan)
    pad[:1030, :40] = a
    want = np.nanmean(pad.reshape(344, 3, 14, 3), axis=(1, 3))
    np.testing.assert_allclose(data["z"], want, rtol=1e-5)
    y, x = ds.y.values, ds.x.values  # nm; block centres = the mean of full blocks' coords
    np.testing.assert_allclose(data["y"][:-1], y[:1029].reshape(343, 3).mean(axis=1))
    np.testing.assert_allclose(data["x"][:-1], x[:39].reshape(13, 3).mean(axis=1))


def _synthetic():
    from framescope.datasets import synthetic

    arr = synthetic(scan=(12, 12), det=(32, 32), semiconv=5, defocus=4.0, step=3,
                    dose=1e6, calibrated=True)
    cal = arr.fs.calibration
    return arr, 4.0 * cal.wavelength / (np.pi * cal.semiconv**2)


def _assert_shows(view, ds):
    for title, var in (("object phase (rad)", "object_phase"),
                       ("object amplitude", "object_amplitude"),
                       ("probe amplitude", "probe_amplitude"),
                       ("probe phase (rad)", "probe_phase")):
        np.testing.assert_array_equal(view.pipes[title].data["z"], ds[var].values)
    np.testing.assert_array_equal(view.error_pipe.data["y"], ds["error"].values)


@pytest.mark.timeout(60)
def test_a_real_reconstruction_is_shown_as_its_result():
    arr, defocus = _synthetic()
    view = ptycho_view(arr, period_ms=200, iterations=6, defocus=defocus, client="inline",
                       update_every=2)
    assert is_reconstruction(view.reconstruction)
    ds = view.reconstruction.result(60)
    view.refresh()
    _assert_shows(view, ds)
    assert ds["error"].values[-1] < ds["error"].values[0]
    assert view.status_pane.object.startswith("**finished** · iteration **6** · frames "
                                              "received **144** / 144 (100% measured)")
    first = view.reconstruction
    view.reset().join(60)  # a file: from scratch, the same options
    assert view.reconstruction is not first
    again = view.reconstruction.result(60)
    view.refresh()
    _assert_shows(view, again)
    np.testing.assert_allclose(again["error"], ds["error"], rtol=1e-6)  # seeded: the same


# ---- in the browser ----------------------------------------------------------------------

def _painted(page, title, expected, percentiles):
    """Every pixel of ``expected`` on screen in the colour the colour map gives it, by
    colour: the grey map repeats and nearly repeats colours, so palette indices seen on
    screen may differ by more than one where the colours do not. Edge pixels are left out
    (ticks cover some of them)."""
    from ._browser import image_on_screen
    from ._reference import colour_index

    shown = image_on_screen(page, title)
    assert shown is not None, f"no figure titled {title!r}"
    assert min(shown["frame"]) > 0, f"{title}: never laid out"
    np.testing.assert_allclose([shown["low"], shown["high"]],
                               np.percentile(expected, percentiles), rtol=1e-5)
    assert shown["distance"].max() <= 2, f"{title}: pixels not in the colour map's colours"
    palette = shown["palette"]
    want = colour_index(expected, shown["low"], shown["high"], len(palette))
    diff = np.abs(palette[shown["index"]] - palette[want]).max(axis=-1)
    # the axes' ticks reach 2 px into the frame, over the centres of some edge pixels
    inner = diff[1:-1, 1:-1]
    assert inner.max() <= 3, f"{title}: other colours than its image ({inner.max()})"
    return shown


@pytest.mark.timeout(120)
def test_served_view_counts_iterations_up_and_draws_the_images():
    import os
    import socket

    from ._browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, assert_image_on_screen, wait_for

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs {CHROMIUM}")
    import panel as pn

    arr, defocus = _synthetic()
    views: list[PtychoView] = []

    def app():  # many sweeps: it runs until the page stops it
        views.append(ptycho_view(arr, period_ms=400, iterations=100_000, defocus=defocus,
                                 client="inline", update_every=1))
        return views[-1]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = pn.serve({"ptycho": app}, port=port, address="127.0.0.1", threaded=True,
                      show=False, websocket_origin=[f"127.0.0.1:{port}"])
    errors: list[str] = []
    seen: list[int] = []
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/ptycho")
            status = page.get_by_text("iteration").first  # pierces the shadow DOM

            def iterations() -> bool:
                try:
                    text = status.text_content(timeout=2000)
                except playwright_api.Error:  # no update yet: the frames are collected
                    return False
                seen.append(int(text.split("iteration", 1)[1].split("·")[0]))
                return seen[-1] >= 4 and len(set(seen)) > 1

            try:
                wait_for(iterations, 60, "the iteration count going up in the page")
                page.get_by_role("button", name="Stop").click()
                page.get_by_text("stopped").first.wait_for(timeout=30_000)
                ds = views[0].reconstruction.result(10)
                assert ds.attrs["stopped"] == 1
                amp = ds["probe_amplitude"].values.astype(np.float32)
                wait_for(lambda: assert_image_on_screen(page, "probe amplitude", amp,
                                                        (0, 100)),
                         20, "the probe painted in its colours")
                phase = ds["object_phase"].values.astype(np.float32)
                wait_for(lambda: _painted(page, "object phase (rad)", phase, (0.5, 99.5)),
                         20, "the object's phase painted in its colours")
            finally:
                page.screenshot(path=str(artifacts_dir() / "ptycho-view.png"), full_page=True)
                browser.close()
    finally:
        server.stop()
        for v in views:
            v.reconstruction.stop(30)
    assert seen == sorted(seen), seen  # the count only goes up …
    assert len(set(seen)) > 1, seen  # … and was seen going up
    assert not errors, errors
