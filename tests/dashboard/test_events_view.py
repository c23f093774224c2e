"""The dashboard of an event job: a fake job for each piece, a real job against its own
published state and status, and the served view in Debian's chromium."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import GlyphRenderer, Plot
from pydantic import BaseModel

import framescope.events as fe
import framescope.masks as fm
from framescope.dashboard import events_view
from framescope.dashboard._events import (
    EventsView,
    changed_values,
    status_markdown,
    stream_rows,
    value_kind,
)

DET = (16, 16)
MASKS = {"ring": fm.ring(8, 8, 2, 6), "disk": fm.disk(8, 8, 3)}


def _status(**kw):
    status = {"state": "running", "events": 20, "map_closed": True, "formed": 9,
              "incomplete": 2, "incomplete_by": {"timeout": 1, "skipped": 1}, "reduced": 7,
              "last_errors": [], "parameters_version": 0, "events_per_s": 12.5,
              "elapsed_s": 1.0,
              "workers": {"kind": "thread", "n": 2, "inflight": [1, 0], "lost": {},
                          "reassigned": 0},
              "streams": {"detector": {"received": 9, "gaps": 1, "repeated": 2,
                                       "malformed": 0, "buffered": 3, "dropped": 0,
                                       "late": 1, "bytes": 999},
                          "i0": {"received": 11, "gaps": 0, "repeated": 0, "malformed": 4,
                                 "buffered": 0, "dropped": 5, "late": 0}}}
    status.update(kw)
    return status


class FakeJob:
    """What the view uses of an EventJob; ``stop`` blocks until ``release`` is set."""

    def __init__(self, published, parameters=None, status=None):
        self.pub = published
        self.parameters = parameters or fe.Parameters({"scale": 1, "roi": [0, 4]})
        self.status = status or _status()
        self.finished = False
        self.stop_called = threading.Event()
        self.release = threading.Event()
        self.http_url = None

    def published(self):
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.pub.items()}

    def done(self):
        return self.finished

    def stop(self):
        self.stop_called.set()
        self.release.wait(10)
        self.finished = True


def _render(view):
    """The Bokeh models of the view, as a browser would get them."""
    return view.__panel__().get_root(Document())


def _glyphs(root, kind):
    return [r for r in root.select({"type": GlyphRenderer}) if type(r.glyph).__name__ == kind]


def test_value_kinds():
    assert value_kind(np.zeros((3, 4))) == "image"
    assert value_kind(np.zeros((2, 3, 4))) == "stack"
    assert value_kind(np.zeros(5)) == "curve"
    assert value_kind(np.zeros((5, 2))) == "curves"
    assert value_kind(np.zeros((3, 4), bool)) == "image"
    for v in (3, 2.5, "text", ["a", "b"], np.array(["a"]), np.zeros((0, 3)), None):
        assert value_kind(v) == "text"


def test_status_text_and_stream_table_show_every_counter():
    text = status_markdown(_status(), "http://127.0.0.1:1234")
    for part in ("**running**", "events reduced **7** / formed 9 / total 20",
                 "incomplete 2 (skipped: 1, timeout: 1)", "12.5 events/s", "2 thread",
                 "in flight [1, 0]", "lost 0", "http://127.0.0.1:1234"):
        assert part in text, part
    lost = status_markdown(_status(workers={"kind": "dask", "n": 2, "inflight": [0],
                                            "lost": {1: "killed"}, "reassigned": 3}))
    assert "lost 1 (1: killed), reassigned 3" in lost
    rows = stream_rows(_status())
    assert rows["detector"] == {"received": 9, "gaps": 1, "repeated": 2, "malformed": 0,
                                "buffered": 3, "dropped": 0, "late": 1}
    assert rows["i0"]["malformed"] == 4
    assert rows["i0"]["dropped"] == 5


def test_status_card_and_errors_follow_the_job():
    job = FakeJob({"n": 1})
    view = EventsView(job)
    assert "events reduced **7**" in view.status_pane.object
    table = view.streams_pane.object
    assert list(table.index) == ["detector", "i0"]
    assert table.loc["i0", "dropped"] == 5
    assert table.loc["detector", "late"] == 1
    assert not view.errors_pane.visible
    job.status = _status(reduced=20, state="finished", last_errors=["event 3: ValueError"])
    view.refresh()
    assert "events reduced **20**" in view.status_pane.object
    assert view.errors_pane.visible
    assert "event 3: ValueError" in view.errors_pane.object


def test_a_stack_is_shown_one_named_layer_at_a_time_and_updated_in_place():
    stack = np.arange(2 * 3 * 4, dtype="f8").reshape(2, 3, 4)
    stack[0, 1, 2] = np.nan
    job = FakeJob({"count": np.int64(3), "image": stack, "masks": ["ring", "disk"]})
    view = EventsView(job)
    assert view.key == "image"  # the image-like value first
    assert view.layer.options == {"ring": 0, "disk": 1}
    assert view.layer.value == 0  # set, not left blank
    root = _render(view)
    (glyph,) = _glyphs(root, "Image")
    np.testing.assert_array_equal(glyph.data_source.data["image"][0], stack[0])
    assert glyph.glyph.color_mapper.nan_color == "rgba(0, 0, 0, 0)"  # NaN: transparent
    (plot,) = root.select({"type": Plot})
    plot.x_range.start, plot.x_range.end = 1.0, 2.0  # the user zooms
    job.pub["image"] = stack * 10
    pipe = view.pipe
    view.refresh()
    assert view.pipe is pipe  # the same plot, new data
    np.testing.assert_array_equal(glyph.data_source.data["image"][0], stack[0] * 10)
    assert (plot.x_range.start, plot.x_range.end) == (1.0, 2.0)
    finite = stack[0][np.isfinite(stack[0])] * 10
    lo, hi = glyph.glyph.color_mapper.low, glyph.glyph.color_mapper.high
    np.testing.assert_allclose([lo, hi], np.percentile(finite, [0.5, 99.5]), rtol=1e-6)
    view.layer.value = 1
    np.testing.assert_array_equal(glyph.data_source.data["image"][0], stack[1] * 10)
    assert view.pipe.data["title"] == "image[disk]"
    view.key = "count"  # a number (numpy's too) as text
    assert view.plot_area.objects[0].object == "**count**\n\n```\n3\n```"


def test_curves_text_and_a_new_shape_get_their_own_view():
    shift = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    job = FakeJob({"shift": shift, "drift": np.array([1.0, 3.0]), "previous": [None, 0, 1]})
    view = EventsView(job)
    assert view.key == "shift"
    root = _render(view)
    lines = _glyphs(root, "Line")
    assert len(lines) == 2
    got = sorted(list(r.data_source.data["value"]) for r in lines)
    assert got == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    view.key = "drift"
    assert view.pipe.data["y"].tolist() == [1.0, 3.0]
    view.key = "previous"
    assert view.pipe is None
    assert "[\n null,\n 0,\n 1\n]" in view.plot_area.objects[0].object
    job.pub["previous"] = [None, 0, 1, 2]
    view.refresh()
    assert "2\n]" in view.plot_area.objects[0].object
    view.key = "shift"
    pipe = view.pipe
    job.pub["shift"] = np.vstack([shift, [[6.0, 7.0]]])  # a row more: the curves grow
    view.refresh()
    assert view.pipe is pipe
    assert view.pipe.data["y"][:, 1].tolist() == [1.0, 3.0, 5.0, 7.0]
    job.pub["stack"] = np.ones((3, 2, 2))  # from curves to a stack: a new plot
    view.refresh()
    stale: list = []
    pipe.add_subscriber(lambda **kw: stale.append(kw))
    view.key = "stack"
    assert view.pipe is not pipe
    assert stale == []  # the curves' plot got no image
    assert view.layer.options == {"0": 0, "1": 1, "2": 2}
    np.testing.assert_array_equal(view.pipe.data["z"], np.ones((2, 2)))
    job.pub["stack"] = np.zeros((3, 4, 2))  # another image shape: a new plot
    pipe = view.pipe
    view.refresh()
    assert view.pipe is not pipe
    assert view.pipe.data["z"].shape == (4, 2)


def test_parameters_editor_makes_a_dashboard_version():
    job = FakeJob({"n": 1})
    view = EventsView(job)
    assert "version 0" in view.version_pane.object
    assert changed_values(view.editor.value, {}) == {"scale": 1, "roi": [0, 4]}
    view.editor.value = '{"scale": 2, "roi": [0, 4]}'
    assert view.apply() == 1
    last = job.parameters.history()[-1]
    assert last["source"] == "dashboard"
    assert last["values"] == {"scale": 2, "roi": [0, 4]}
    assert "version 1" in view.version_pane.object
    assert '"scale": 2' in view.editor.value
    assert view.param_message.alert_type == "success"


@pytest.mark.parametrize(("text", "message"), [
    ('{"scale": 2', "invalid JSON at line 1 column 12"),
    ("[1, 2]", "expected a JSON object"),
    ('{"scale": 2}', "['roi'] removed"),
    ('{"scale": "big", "roi": [0, 4]}', "field 'scale'"),
])
def test_a_refused_edit_is_shown_and_makes_no_version(text, message):
    class Model(BaseModel):
        scale: float
        roi: list[int]

    job = FakeJob({"n": 1}, parameters=fe.Parameters({"scale": 1, "roi": [0, 4]}, Model))
    view = EventsView(job)
    assert view.apply(text) is None
    assert view.param_message.visible
    assert view.param_message.alert_type == "danger"
    assert message in view.param_message.object
    assert job.parameters.version == 0


def test_an_edit_sends_only_what_it_changed_when_a_version_arrived_meanwhile():
    job = FakeJob({"n": 1})
    view = EventsView(job)
    view.editor.value = '{"scale": 5, "roi": [0, 4]}'  # the user edits version 0 …
    job.parameters.update({"roi": [1, 3]})  # … while Python makes version 1
    view.refresh()
    assert "version 1 arrived" in view.param_message.object
    assert view.editor.value == '{"scale": 5, "roi": [0, 4]}'  # the edit stays
    assert view.apply() == 2
    assert job.parameters.get() == {"scale": 5, "roi": [1, 3]}  # roi not reverted


def test_stop_runs_in_a_thread_and_the_last_refresh_stops_the_loop():
    job = FakeJob({"n": 1})
    view = EventsView(job)
    stopper = view.stop_job()
    assert job.stop_called.wait(10)
    assert stopper.is_alive()  # job.stop still blocks: the caller did not wait for it
    assert view.stop_button.disabled
    job.release.set()
    stopper.join(10)
    job.status = _status(state="stopped")
    view.refresh()
    assert view.stop_button.label == "job stopped"


def _streams(sim):
    return {n: (sim.endpoints[n], sim.protocols[n]) for n in ("detector", "i0")}


def _params(scan):
    return {"masks": {k: m.to_dict() for k, m in MASKS.items()}, "scan": list(scan),
            "scale": 1}


def test_a_real_job_is_shown_as_it_published_and_counted():
    from framescope.events._simulate import simulate_streams
    from framescope.events.examples import ImageReducer, VirtualImageOverI0

    scan = (3, 4)
    n = scan[0] * scan[1]
    tm = fe.TriggerMap.per_point(n, {"detector": 1, "i0": 1})
    with simulate_streams(n_points=n, det=DET) as sim:
        job = fe.submit(_streams(sim), tm, VirtualImageOverI0, ImageReducer, workers=2,
                        parameters=_params(scan))
        try:
            view = events_view(job, period_ms=200)
            job.result(30)
            view.refresh()
            root = _render(view)
            published, status = job.published(), job.status
            (glyph,) = _glyphs(root, "Image")
            np.testing.assert_allclose(glyph.data_source.data["image"][0],
                                       published["image"][0], rtol=1e-6)
            view.layer.value = 1
            np.testing.assert_allclose(glyph.data_source.data["image"][0],
                                       published["image"][1], rtol=1e-6)
            # the view's numbers are the job's, and the right ones for this scan
            assert status["reduced"] == status["formed"] == n
            assert f"events reduced **{n}** / formed {n} / total {n}" in (
                view.status_pane.object)
            table = view.streams_pane.object
            assert table.loc["detector", "received"] == n == table.loc["i0", "received"]
            assert view.stop_button.disabled  # the job ended: the loop's last refresh
            assert view.apply('{"scale": 2}') is None  # masks and scan removed: refused
            assert view.apply(view.editor.value.replace('"scale": 1', '"scale": 2')) == 1
            last = job.parameters.history()[-1]
            assert last["source"] == "dashboard"
            assert last["values"]["scale"] == 2
        finally:
            job.close()


# ---- in the browser ----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_served_view_counts_up_and_draws_the_image():
    import os

    from ._browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, assert_image_on_screen, wait_for

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs {CHROMIUM}")
    import panel as pn

    from framescope.events._simulate import simulate_streams
    from framescope.events.examples import ImageReducer, VirtualImageOverI0

    scan = (6, 8)
    n = scan[0] * scan[1]
    tm = fe.TriggerMap.per_point(n, {"detector": 1, "i0": 1})
    jobs: list = []
    # ~10 events/s: the scan runs a few seconds, starting when the page asks for its view
    with simulate_streams(n_points=n, det=DET, rates={"detector": 10}) as sim:
        def app():
            if not jobs:
                jobs.append(fe.submit(_streams(sim), tm, VirtualImageOverI0, ImageReducer,
                                      parameters=_params(scan)))
            return events_view(jobs[0], period_ms=200)

        port = _free_port()
        server = pn.serve({"events": app}, port=port, address="127.0.0.1", threaded=True,
                          show=False, websocket_origin=[f"127.0.0.1:{port}"])
        errors: list[str] = []
        seen: list[int] = []
        try:
            with playwright_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.on("console",
                        lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}/events")
                status = page.get_by_text("events reduced")  # pierces the shadow DOM

                def reduced() -> bool:
                    text = status.text_content(timeout=5000)
                    seen.append(int(text.split("events reduced", 1)[1].split("/")[0]))
                    return seen[-1] == n

                try:
                    wait_for(reduced, 60, "all events reduced in the page")
                    job = jobs[0]
                    job.result(10)
                    want = job.published()["image"][0]
                    wait_for(lambda: assert_image_on_screen(page, "image[ring]", want),
                             20, "the image painted in its colours")
                    assert "finished" in status.text_content()
                    # the parameters editor, typed into: a version made by the dashboard
                    edited = json.dumps({**_params(scan), "scale": 3})
                    page.locator("textarea").fill(edited)
                    page.get_by_role("button", name="Apply").click()
                    page.get_by_text("version 1 applied").wait_for(timeout=10_000)
                    last = job.parameters.history()[-1]
                    assert last["source"] == "dashboard"
                    assert last["values"]["scale"] == 3
                finally:
                    page.screenshot(path=str(artifacts_dir() / "events-view.png"),
                                    full_page=True)
                    browser.close()
        finally:
            server.stop()
            for job in jobs:
                job.close()
    assert seen == sorted(seen), seen  # the count only goes up …
    assert seen[0] < n, seen  # … and was seen going up
    assert len(set(seen)) > 1, seen
    assert not errors, errors
