"""The ZeroMQ source widgets (panel and ipywidgets) on a real stream from another process."""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import xarray as xr

from framescope.dashboard import source_widget
from framescope.dashboard._source_display import parse_scan, status_html, status_table

from ._browser import wait_for as until

pytest.importorskip("zmq")
pytest.importorskip("ipywidgets")

from framescope.live import Status, ZMQSource, simulate_stream

SERIES = 7  # the simulator's series id


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    # 384 x 192 frames: previews are 3 x 3 block means (128 x 64)
    return np.random.default_rng(11).integers(0, 3000, (3, 4, 384, 192), dtype=np.uint16)


def _publish(q, kwargs) -> None:
    result = simulate_stream("tcp://127.0.0.1:0", on_bound=q.put, **kwargs)
    q.put(result["frames_sent"])


@contextlib.contextmanager
def stream(frames: np.ndarray, protocol: str) -> Iterator[tuple[str, list[int]]]:
    """One series of ``frames`` from a simulator process; yields (endpoint, [frames sent]),
    the count filled in once the simulator is done."""
    ctx = mp.get_context("forkserver")  # framescope preloaded: one slow import
    ctx.set_forkserver_preload(["framescope.live"])
    q = ctx.Queue()
    kwargs = {"source": xr.DataArray(frames, dims=("scan_y", "scan_x", "det_y", "det_x")),
              "protocol": protocol, "rate": 0, "first_series": SERIES}
    p = ctx.Process(target=_publish, args=(q, kwargs), daemon=True)
    p.start()
    sent: list[int] = []
    try:
        yield q.get(timeout=60), sent
    finally:
        with contextlib.suppress(Exception):
            sent.append(q.get(timeout=30))
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join()


def receivers() -> int:
    return sum(t.name == "framescope-receiver" for t in threading.enumerate())


def log_preview(frame: np.ndarray) -> np.ndarray:
    """log10(1 + I) in 3 x 3 block means, in plain numpy."""
    h, w = frame.shape
    return np.log10(1 + frame.astype(np.float64)).reshape(h // 3, 3, w // 3, 3).mean((1, 3))


def check_table(table: dict[str, str], sent: int) -> None:
    assert table["state"] == "finished"
    assert table["series"] == str(SERIES)
    assert table["frames received"] == table["frames expected"] == f"{sent:,}"
    assert (table["dropped"], table["malformed"], table["gaps"]) == ("0", "0", "0")


# ---- pure parts ----------------------------------------------------------------------------

def test_status_table_and_scan_text():
    st = Status(state="receiving", series=3, frames_expected=16384, frames_received=1234,
                rate_hz=4999.94, mb_per_s=655.36, dropped=2, queue_depth=17,
                queue_capacity=4096, last_error="frame 99999 outside the scan")
    table = status_table(st)
    assert table["frames received"] == "1,234"
    assert table["frames expected"] == "16,384"
    assert (table["rate (Hz)"], table["MB/s"]) == ("4,999.9", "655.36")
    assert (table["dropped"], table["gaps"], table["queue"]) == ("2", "0", "17 / 4,096")
    assert table["series"] == "3"
    html = status_html(table)
    assert '<td style="color:#b00;font-weight:bold">2</td>' in html  # dropped frames in red
    assert "<td>0</td>" in html
    assert status_table(None)["state"] == "disconnected"
    assert parse_scan("128x64") == (128, 64)
    assert parse_scan(" 3 × 4 ") == (3, 4)
    assert parse_scan("") is None
    for bad in ("12", "0x4", "axb", "3x4x5"):
        with pytest.raises(ValueError, match=r"scan: expected HEIGHTxWIDTH .* found"):
            parse_scan(bad)


def test_the_widgets_load_on_first_use_and_left_live():
    code = ("import sys, framescope.dashboard as d, framescope.live as live; "
            "assert callable(d.source_widget); "
            "assert not {'panel', 'ipywidgets'} & set(sys.modules), sys.modules.keys(); "
            "assert {'SourceWidget', 'SourceIPyWidget', 'source_widget'} <= set(dir(d)); "
            "assert not hasattr(live, 'SourceWidget')")
    subprocess.run([sys.executable, "-c", code], check=True)
    import framescope.live

    with pytest.raises(AttributeError, match=r"moved to framescope\.dashboard\.source_widget"):
        framescope.live.source_widget  # noqa: B018


# ---- panel ---------------------------------------------------------------------------------

def _bokeh_image(root) -> np.ndarray:
    from bokeh.models import GlyphRenderer, Image

    (r,) = [r for r in root.select({"type": GlyphRenderer}) if isinstance(r.glyph, Image)]
    return np.asarray(r.data_source.data["image"][0])


def test_panel_widget_shows_the_stream(frames):
    from framescope.dashboard import SourceWidget

    before = receivers()
    with stream(frames, "dectris-stream2") as (endpoint, sent):
        w = source_widget(endpoint=endpoint, scan="3x4")
        assert isinstance(w, SourceWidget)
        root = w.__panel__().get_root()  # as displayed: starts the periodic refresh
        assert w._periodic is not None
        assert w._periodic.period == 250
        connected, events = [], []
        w.on_connect(connected.append)
        w.param.watch(lambda ev: events.append(ev.new), "connected")
        w.connect_button.clicks += 1  # a click
        assert w.connected, w.error
        assert connected == [w.source]
        assert w.connect_button.disabled
        src = w.source
        assert receivers() == before + 1
        until(lambda: src.status.state == "finished", what="the series' end")
    w.refresh()  # what the periodic callback does
    check_table(w.status_table(), sent[0])
    assert f"<td>{sent[0]:,}</td>" in w.status_pane.object
    expected = log_preview(frames[-1, -1])  # raster order: the last frame sent
    np.testing.assert_allclose(w.preview, expected, rtol=1e-5)
    np.testing.assert_array_equal(_bokeh_image(root), w.preview)

    w.disconnect_button.clicks += 1
    assert events == [True, False]
    assert w.source is None
    assert not w.connect_button.disabled
    assert receivers() == before  # the receiver thread has ended
    assert w.status_table()["state"] == "stopped"
    assert w.status_table()["frames received"] == f"{sent[0]:,}"  # the last counts stay
    w.close()
    assert w._periodic is None


def test_panel_widget_errors_and_given_sources():
    from framescope.dashboard import SourceWidget

    w = SourceWidget(endpoint="tcp://nohost:xx")
    assert w.connect() is False
    assert "cannot connect to 'tcp://nohost:xx'" in w.error
    assert (w.connected, w.source) == (False, None)
    assert w._error_pane.visible
    assert w._error_pane.object == w.error
    w.scan = "12 by 12"
    assert w.error.startswith("scan: expected HEIGHTxWIDTH")
    w.endpoint = "tcp://127.0.0.1:5"
    assert w.connect() is False  # the scan is checked before connecting
    assert w.error.startswith("scan:")
    w.scan = "12x12"
    assert w.error == ""
    assert not w._error_pane.visible

    # a given source fills the fields, counts as connected, and is not started
    src = ZMQSource("tcp://127.0.0.1:5", "native", scan=(2, 5), order="snake",
                    policy="spill")
    before = receivers()
    given = SourceWidget(src)
    assert (given.endpoint, given.protocol, given.scan, given.order, given.policy) == (
        "tcp://127.0.0.1:5", "native", "2x5", "snake", "spill")
    assert given.connected
    assert given.source is src
    seen = []
    given.on_connect(seen.append)
    assert seen == [src]
    assert receivers() == before
    given.close()  # not the widget's source: close leaves it
    assert given.source is src
    src.start()
    assert receivers() == before + 1
    given.disconnect()  # the user's click stops it
    assert receivers() == before
    assert (given.connected, given.source) == (False, None)


# ---- ipywidgets ----------------------------------------------------------------------------

def test_ipywidget_shows_the_stream(frames):
    from PIL import Image

    from framescope.dashboard import SourceIPyWidget

    before = receivers()
    with stream(frames, "native") as (endpoint, sent):
        w = source_widget(kind="ipywidgets", endpoint=endpoint, protocol="native",
                          refresh_s=0.05)
        assert isinstance(w, SourceIPyWidget)
        events, connected = [], []
        w.observe(lambda ch: events.append(ch["new"]), "connected")
        w.on_connect(connected.append)
        w.connect_button.click()
        assert w.connected, w.error
        assert connected == [w.source]
        assert w.endpoint.disabled
        src = w.source
        until(lambda: src.status.state == "finished", what="the series' end")
        # the refresh thread, not this test, brings the final counts to the widget
        until(lambda: "finished" in w.status_pane.value, what="the refreshed status")
    assert f"<td>{sent[0]:,}</td>" in w.status_pane.value
    check_table(w.status_table(), sent[0])
    expected = log_preview(frames[-1, -1])
    until(lambda: w.preview is not None and np.allclose(w.preview, expected, rtol=1e-5),
          what="the last frame's preview")
    until(lambda: w.preview_pane.value != b"", what="the preview PNG")
    png = np.asarray(Image.open(io.BytesIO(w.preview_pane.value)))
    lo, hi = expected.min(), expected.max()
    grey = np.rint((expected - lo) / (hi - lo) * 255)
    assert png.shape == expected.shape
    assert np.abs(png.astype(float) - grey).max() <= 1  # float32 vs float64 rounding

    w.disconnect_button.click()
    assert events == [True, False]
    assert w.source is None
    assert receivers() == before
    assert not any(t.name == "framescope-source-widget" for t in threading.enumerate())
    assert "stopped" in w.status_pane.value

    w.endpoint.value = "tcp://nohost:xx"
    assert w.connect() is False
    assert "cannot connect to 'tcp://nohost:xx'" in w.error
    assert "nohost" in w.error_html.value
    assert (w.connected, w.source) == (False, None)
    w.close()
    assert receivers() == before


def test_unknown_widget_kind():
    with pytest.raises(ValueError, match="kind: expected 'panel' or 'ipywidgets', found 'qt'"):
        source_widget(kind="qt")
