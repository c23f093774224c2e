"""The Phase tab: SSB / iDPC / tcBF images equal the library's, offline and live."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import panel as pn
import pytest

import framescope
from framescope.udf import SSB, Meta

from ._browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JS_AXES,
    artifacts_dir,
    image,
    launch_server,
    server_url,
    stop_server,
    wait_for,
)

SCAN, DET = (12, 12), (32, 32)


@pytest.fixture(scope="module")
def calibrated():
    from framescope.datasets import synthetic

    return synthetic(scan=SCAN, det=DET, semiconv=6, calibrated=True)


@pytest.fixture
def phase_state(calibrated):
    from framescope.dashboard._state import DashboardState

    st = DashboardState(calibrated, client="inline")
    yield st
    st.close()


def _result(st):
    assert st.jobs.wait(timeout=120)
    return st.results.get("phase")


def _runs(monkeypatch, cls):
    """Names of the UDFs ``cls`` runs through the engine from now on."""
    runs: list[str] = []
    original = cls._iter_run
    monkeypatch.setattr(cls, "_iter_run", lambda self, udf, roi=None: (
        runs.append(type(udf).__name__), original(self, udf, roi))[1])
    return runs


def test_nothing_is_computed_before_the_tab_is_shown(phase_state, monkeypatch):
    runs = _runs(monkeypatch, type(phase_state))
    phase_state.phase_defocus = 3.0
    assert phase_state.jobs.wait(timeout=60)
    assert runs == []
    assert phase_state.results.get("phase") is None


def test_ssb_equals_the_accessor(phase_state, calibrated):
    phase_state.phase_enabled = True  # the tab was shown
    res = _result(phase_state)
    ref = calibrated.fs.ssb(client="inline", progress=False)
    assert (res.method, res.done, res.message) == ("SSB", 1.0, "")
    np.testing.assert_array_equal(res.data["phase"].values, ref["phase"].values)
    assert res.data["phase"].attrs["units"] == "rad"


def test_ssb_amplitude_asks_for_the_complex_object(phase_state, calibrated):
    phase_state.param.update(phase_component="amplitude", phase_enabled=True)
    res = _result(phase_state)
    ref = calibrated.fs.ssb(object="complex", client="inline", progress=False)
    for name in ("phase", "amplitude"):
        np.testing.assert_array_equal(res.data[name].values, ref[name].values)
    phase_state.phase_method = "iDPC"  # amplitude is SSB's: back to the phase
    assert phase_state.phase_component == "phase"
    assert _result(phase_state).method == "iDPC"


def test_idpc_equals_the_accessor(phase_state, calibrated):
    phase_state.param.update(phase_method="iDPC", phase_enabled=True)
    res = _result(phase_state)
    ref = calibrated.fs.idpc(client="inline", progress=False)
    assert res.method == "iDPC"
    np.testing.assert_array_equal(res.data["phase"].values, ref["phase"].values)
    # iDPC integrates the COM tab's settings: an edit there recomputes it
    phase_state.param.update(com_radius=9.0, phase_highpass=0.05)
    res = _result(phase_state)
    ref = calibrated.fs.idpc(radius=9.0, highpass=0.05, client="inline", progress=False)
    np.testing.assert_array_equal(res.data["phase"].values, ref["phase"].values)


def test_tcbf_equals_parallax(phase_state, calibrated):
    from framescope.phase import parallax

    phase_state.param.update(phase_method="tcBF", phase_enabled=True)
    res = _result(phase_state)
    ref = parallax(calibrated, client="inline", progress=False)
    assert res.method == "tcBF"
    for name in ("phase", "tcbf"):
        np.testing.assert_array_equal(res.data[name].values, ref[name].values)


def test_defocus_recomputes_and_com_edits_do_not(phase_state, calibrated, monkeypatch):
    phase_state.phase_enabled = True
    first = _result(phase_state).data["phase"].values
    runs = _runs(monkeypatch, type(phase_state))
    phase_state.phase_defocus = 4.0  # nm
    res = _result(phase_state)
    ref = calibrated.fs.ssb(defocus=4e-9, client="inline", progress=False)
    np.testing.assert_array_equal(res.data["phase"].values, ref["phase"].values)
    assert not np.allclose(res.data["phase"].values, first)
    assert runs == ["SSB"]
    phase_state.com_radius = 7.0  # SSB does not use it: no new job
    assert phase_state.jobs.wait(timeout=60)
    assert runs == ["SSB"]


def test_an_uncalibrated_array_shows_what_to_calibrate(monkeypatch):
    from framescope.dashboard._app import Dashboard
    from framescope.dashboard._state import DashboardState
    from framescope.datasets import synthetic

    arr = synthetic(scan=SCAN, det=DET, semiconv=6)
    dash = Dashboard(arr, client="inline")
    try:
        dash.__panel__().get_root()
        runs = _runs(monkeypatch, DashboardState)
        st = dash.state
        st.phase_enabled = True
        res = _result(st)
        assert res.data is None
        assert runs == []
        for field in ("energy", "angle_per_px", "semiconv", "scan_step", "arr.fs.calibrate("):
            assert field in res.message
        dash.flush()
        view = dash.phase_view
        assert view.message.visible
        assert view.message.object == res.message
        assert "not computed" in view._data()["title"]
        st.phase_method = "tcBF"  # needs the BF disk's radius: semiconv and angle per px
        res = _result(st)
        assert "semiconv" in res.message
        assert "calibrate(" in res.message
        st.phase_method = "iDPC"  # runs without a calibration, in arbitrary units
        res = _result(st)
        dash.flush()
        assert res.message == ""
        assert not view.message.visible
        ref = arr.fs.idpc(client="inline", progress=False)
        np.testing.assert_array_equal(res.data["phase"].values, ref["phase"].values)
        assert view._data()["title"] == "iDPC: phase (a.u.)"
    finally:
        dash.close()


def test_the_tab_shows_the_image_in_its_units(calibrated):
    from framescope.dashboard._app import Dashboard

    dash = Dashboard(calibrated, client="inline")
    try:
        layout = dash.__panel__()
        layout.get_root()
        tabs = next(o for o in layout.select(pn.Tabs))
        assert tabs._names[2] == "Phase"
        tabs.active = 2  # first shown: computed
        res = _result(dash.state)
        dash.flush()
        data = dash.phase_view._data()
        assert data["title"] == "SSB: phase (rad)"
        np.testing.assert_array_equal(data["z"], res.data["phase"].values)
        np.testing.assert_allclose(data["x"], calibrated["scan_x"].values)  # nm
        dash.state.phase_component = "amplitude"
        res = _result(dash.state)
        dash.flush()
        data = dash.phase_view._data()
        assert data["title"] == "SSB: amplitude"
        np.testing.assert_array_equal(data["z"], res.data["amplitude"].values)
    finally:
        dash.close()


# ---- live ---------------------------------------------------------------------------------
def _series(sid: int, arr):
    shape = arr.shape
    return SimpleNamespace(series=sid, meta=Meta(shape[:2], shape[2:], arr.dtype,
                                                 calibration=arr.fs.calibration))


def test_live_phase_extends_over_arriving_frames(calibrated):
    """Enabled mid-series: computed over the kept frames, position set by position set."""
    from framescope.dashboard._live_state import LiveState
    from framescope.dashboard._store import FrameStore

    flat = calibrated.values.reshape(-1, *DET)
    order = np.random.default_rng(2).permutation(len(flat))
    store, series = FrameStore(), _series(4, calibrated)
    store.add(series, flat[order[:60]], order[:60])
    st = LiveState(store)
    try:
        st.start()
        st.phase_enabled = True
        res = _result(st)
        arrived = np.zeros(SCAN, bool)
        arrived.flat[order[:60]] = True
        ref = framescope.run(SSB(), calibrated, roi=arrived, client="inline")
        assert np.isfinite(res.data["phase"].values).sum() == 60
        np.testing.assert_allclose(res.data["phase"].values, ref["phase"].values, atol=1e-6)
        store.add(series, flat[order[60:]], order[60:])
        assert st.refresh()
        res = _result(st)
        ref = calibrated.fs.ssb(client="inline", progress=False)
        assert res.done == 1.0
        np.testing.assert_allclose(res.data["phase"].values, ref["phase"].values, atol=1e-6)
    finally:
        st.close()


def _stream_job(arr, **sim):
    """A stream job with the phase tab's UDF (as the live dashboard builds it from the
    previous series' state), and the store it fills."""
    from framescope.dashboard._live_state import stream_udfs
    from framescope.dashboard._state import DashboardState
    from framescope.dashboard._store import FrameStore

    template = DashboardState(arr, client="inline", phase_enabled=True)
    udfs = stream_udfs(template)
    template.close()
    assert sorted(udfs) == ["max", "phase", "sum", "vd"]
    store = FrameStore()
    return udfs, store


@pytest.mark.timeout(240)
def test_live_stream_fills_the_phase_and_ends_equal_to_offline(calibrated, monkeypatch):
    """The SSB runs in the stream job; the tab shows its image; the end equals offline."""
    pytest.importorskip("zmq")
    from framescope.dashboard._live_state import LiveState
    from framescope.live import ZMQSource

    from .test_live import _until, simulator

    udfs, store = _stream_job(calibrated)
    runs = _runs(monkeypatch, LiveState)
    seen: list[float] = []
    with simulator(source=calibrated, protocol="dectris-stream2", rate=0,
                   first_series=5) as ep:
        job = framescope.submit(udfs, ZMQSource(ep, protocol="dectris-stream2"),
                                on_frames=store.add)
        try:
            # the view opens once the job has published (before that it would compute
            # the phase over the kept frames itself, which is the other test's path)
            _until(lambda: isinstance(job.partial(), dict) and "phase" in job.partial(),
                   "the job's first results")
            st = LiveState(store, job=job, phase_enabled=True)

            def complete() -> bool:
                st.refresh()
                res = st.results.get("phase")
                if res is not None and res.data is not None:
                    seen.append(res.done)
                    # a partial image covers exactly the positions the job merged
                    done = np.asarray(res.data["done"], dtype=bool)
                    assert (np.isfinite(res.data["phase"].values) == done).all()
                return res is not None and res.done == 1.0

            _until(complete, "the complete phase image")
            res = st.results.get("phase")
            st.close()
        finally:
            job.cancel()
    assert runs == []  # the job's image: nothing ran again over the kept frames
    ref = calibrated.fs.ssb(client="inline", progress=False)
    np.testing.assert_allclose(res.data["phase"].values, ref["phase"].values, atol=1e-5)
    np.testing.assert_array_equal(res.data["bright_field"].values,
                                  ref["bright_field"].values)
    assert seen[-1] == 1.0


@pytest.mark.timeout(240)
def test_live_stream_phase_of_a_partial_scan(calibrated):
    """A scan stopped after 70 frames: the job's phase covers those, as offline SSB over
    the same positions."""
    pytest.importorskip("zmq")
    from framescope.dashboard._live_state import LiveState
    from framescope.live import ZMQSource

    from .test_live import _until, simulator

    udfs, store = _stream_job(calibrated)
    with simulator(source=calibrated, protocol="dectris-stream2", rate=0, first_series=6,
                   stop_after=70) as ep:
        job = framescope.submit(udfs, ZMQSource(ep, protocol="dectris-stream2"),
                                on_frames=store.add)
        try:
            _until(lambda: store.received() is not None and store.received().sum() == 70,
                   "70 frames")
            st = LiveState(store, job=job, phase_enabled=True)

            def merged() -> bool:
                st.refresh()
                res = st.results.get("phase")
                return (res is not None and res.data is not None
                        and int(np.asarray(res.data["done"]).sum()) == 70)

            _until(merged, "the job's phase over 70 frames")
            res = st.results.get("phase")
            received = store.received()
            st.close()
        finally:
            job.cancel()
    ref = framescope.run(SSB(), calibrated, roi=received, client="inline")
    assert res.done == 1.0  # of the frames received, as the live images count it
    assert received.sum() == 70
    assert (np.isfinite(res.data["phase"].values) == received).all()
    np.testing.assert_allclose(res.data["phase"].values, ref["phase"].values, atol=1e-5)


# ---- in a browser ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM}")
@pytest.mark.timeout(300)
def test_served_phase_tab_shows_the_ssb_image():
    """``framescope serve --demo`` in chromium: the Phase tab's figure is drawn on its
    canvas with the SSB phase of the demo data."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    from framescope.dashboard._serve import demo_data

    errors: list[str] = []
    proc = launch_server(["--demo", "--port", "0"])
    try:
        # the reference while the server starts
        expected = demo_data().fs.ssb(client="inline", progress=False)["phase"].values
        url = server_url(proc)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                page.goto(url)
                page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0",
                                       timeout=90_000)
                page.locator(".bk-tab", has_text="Phase").first.click()
                title = "SSB: phase (rad)"  # no progress suffix: complete
                shown = wait_for(lambda: image(page, title, exact=True), 120,
                                 "the complete SSB phase image")
                np.testing.assert_allclose(shown["values"], expected, rtol=1e-5, atol=1e-6)
                axes = wait_for(lambda: page.evaluate(JS_AXES, [title]), 30, "its axes")
                assert (axes["x"], axes["y"]) == ("scan_x (nm)", "scan_y (nm)")
                assert min(axes["frame"]) > 100, axes  # laid out on the page's canvas
            finally:
                page.screenshot(path=str(artifacts_dir() / "phase-tab.png"), full_page=True)
                browser.close()
    finally:
        stop_server(proc)
    assert errors == []


def test_the_next_series_keeps_the_phase_tab(calibrated):
    """A new series' dashboard opens on the Phase tab with its settings, and the stream job
    runs that phase from then on."""
    from framescope.dashboard._live import LiveDashboard
    from framescope.dashboard._live_state import stream_udfs

    flat = calibrated.values.reshape(-1, *DET)
    dash = LiveDashboard()
    try:
        dash.store.add(_series(1, calibrated), flat, np.arange(len(flat)))
        dash.refresh()
        first = dash.dashboard
        first.__panel__()
        first.state.param.update(phase_method="SSB", phase_component="amplitude",
                                 phase_defocus=3.0)
        first.__panel__().select(pn.Tabs)[0].active = 2  # the user opens the Phase tab
        assert first.state.phase_enabled
        assert "phase" in stream_udfs(first.state)  # what the job runs next series
        dash.store.add(_series(2, calibrated), flat, np.arange(len(flat)))
        dash.refresh()
        st = dash.dashboard.state
        assert dash.dashboard is not first
        assert dash.dashboard.tab == 2
        assert (st.phase_enabled, st.phase_component, st.phase_defocus) == (True, "amplitude",
                                                                            3.0)
        assert stream_udfs(st)["phase"].key == stream_udfs(first.state)["phase"].key
        res = _result(st)  # no job here: computed over the kept frames
        ref = calibrated.fs.ssb(defocus=3e-9, object="complex", client="inline",
                                progress=False)
        np.testing.assert_allclose(res.data["amplitude"].values, ref["amplitude"].values,
                                   atol=1e-6)
    finally:
        dash.close()
