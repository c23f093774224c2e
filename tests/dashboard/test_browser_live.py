"""End to end, live: a simulator process streams a scan, ``framescope serve --live`` shows it
in Debian's chromium, and the page's virtual images equal numpy's on the frames sent: in the
figures' data, and on screen for the gallery's thumbnails (painted in the colours of those
values)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ._browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    artifacts_dir,
    assert_image_on_screen,
    image,
    launch_server,
    server_url,
    stop_server,
    wait_for,
)
from ._reference import einsum
from .test_live import simulator

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("zmq")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM}"),
    pytest.mark.timeout(240),
]

SCAN, DET = (16, 12), (48, 48)
JS_TITLES = """() => [...Bokeh.documents[0].all_models].filter(m => m.type === "Title")
                .map(m => m.text)"""


def shows(page, title: str, expected: np.ndarray) -> bool:
    """Whether the figure titled ``title`` has the image ``expected`` in its data."""
    got = image(page, title, exact=True)
    return (got is not None and tuple(got["shape"]) == expected.shape
            and np.allclose(got["values"], expected, rtol=1e-5))


def test_served_live_dashboard_shows_the_streamed_scan():
    from framescope.dashboard._detectors import default_detectors
    from framescope.datasets import synthetic

    arr = synthetic(scan=SCAN, det=DET, seed=4)
    frames = arr.values.astype(np.float64)
    errors: list[str] = []
    # a slow detector (500 frames/s): the page fills in while the scan runs
    with simulator(source=arr, protocol="dectris-stream2", rate=500, first_series=9) as ep:
        proc = launch_server(["--live", ep, "--protocol", "dectris-stream2", "--port", "0"])
        try:
            url = server_url(proc)
            with playwright_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1700, "height": 1100})
                page.on("console",
                        lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0",
                                       timeout=90_000)
                expected = {name: einsum(frames, spec)
                            for name, spec in default_detectors(DET).items()}
                try:
                    for name, want in expected.items():
                        wait_for(lambda n=name, w=want: shows(page, n, w), 120,
                                 f"live image {name}")  # the thumbnail's data
                    wait_for(lambda: shows(page, "scan: bf", expected["bf"]), 30,
                             "the selected detector's image")
                    for name, want in expected.items():  # the thumbnails, painted
                        wait_for(lambda n=name, w=want: assert_image_on_screen(page, n, w), 10,
                                 f"the thumbnail of {name} on screen")
                finally:  # what the page shows, also when it does not fill in
                    page.screenshot(path=str(artifacts_dir() / "live-dashboard.png"),
                                    full_page=True)
                titles = page.evaluate(JS_TITLES)
                n = SCAN[0] * SCAN[1]
                assert f"detector: mean of {n} frames" in titles  # every frame arrived
                browser.close()
        finally:
            stop_server(proc)
    assert not errors, errors
