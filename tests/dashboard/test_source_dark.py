"""The source widgets' "Take dark" button and dark line, on a real stream."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import numpy as np
import pytest

import framescope
from framescope.dashboard._source_dark import dark_text

pytest.importorskip("zmq")


def until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextlib.contextmanager
def dark_stream(frames: np.ndarray) -> Iterator[str]:
    """``frames`` as one (unmarked) series from a simulator thread; yields the endpoint."""
    from framescope.live import simulate_stream

    q: queue.Queue = queue.Queue()
    t = threading.Thread(target=simulate_stream, args=("tcp://127.0.0.1:0",),
                         kwargs={"on_bound": q.put, "protocol": "native", "rate": 0,
                                 "source": framescope.from_array(frames)}, daemon=True)
    t.start()
    try:
        yield q.get(timeout=60)
    finally:
        t.join(timeout=30)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    f = np.random.default_rng(2).normal(100, 3, (3, 4, 16, 16))
    f[..., 5, 7] = 100  # a dead pixel
    return np.rint(f).astype(np.uint16)


def _take_dark_with(widget_of, click, text_of, frames) -> None:
    from framescope.live import ZMQSource
    from framescope.udf import SumFrame

    src = ZMQSource("tcp://127.0.0.1:0", "native")
    with dark_stream(frames) as endpoint:
        src.endpoint = endpoint
        w = widget_of(src)
        try:
            w.refresh()
            assert text_of(w).startswith("dark: none")
            click(w)
            assert src.dark_requested == 1
            assert "the next series is taken as dark" in text_of(w)
            job = framescope.submit(SumFrame(), src)
            try:
                until(lambda: src.dark is not None)
            finally:
                job.cancel()
            w.refresh()
            assert text_of(w) == "dark: 12 frames, bad pixels: 1"
            assert src.dark.bad[5, 7]
        finally:
            w.close()


def test_panel_take_dark_button(frames):
    pytest.importorskip("panel")
    from framescope.dashboard import SourceWidget

    def click(w):
        assert not w.dark_button.disabled
        w.dark_button.clicks += 1

    _take_dark_with(lambda src: SourceWidget(src, display_loop=False), click,
                    lambda w: w.dark_pane.object, frames)


def test_ipywidget_take_dark_button(frames):
    pytest.importorskip("ipywidgets")
    from framescope.dashboard import SourceIPyWidget

    def click(w):
        assert not w.dark_button.disabled
        w.dark_button.click()

    _take_dark_with(lambda src: SourceIPyWidget(src, refresh_s=60), click,
                    lambda w: w.dark_html.value, frames)


def test_take_dark_without_a_source_says_so():
    pytest.importorskip("panel")
    from framescope.dashboard import SourceWidget

    w = SourceWidget(display_loop=False)
    assert w.dark_button.disabled
    w.take_dark()
    assert "connect" in w.error
    assert dark_text(None) == ""


def test_dark_text_while_a_dark_series_is_taken():
    stats = SimpleNamespace(n=40, bad=np.eye(3, dtype=bool))
    src = SimpleNamespace(take_dark=None, series=SimpleNamespace(series=4, dark=True),
                          series_open=True, frame_progress=lambda: (17, 16),
                          dark_requested=0, dark=stats)
    assert dark_text(src) == "dark: taking series 4 (17 frames so far)"
    src.series_open = False
    src.dark_requested = 2
    assert dark_text(src) == ("dark: 40 frames, bad pixels: 3; the next 2 series are taken "
                              "as dark")
