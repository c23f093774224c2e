"""The dashboard behind jupyter-server-proxy: JupyterLab started for real, the dashboard
opened through ``/framescope/`` in Debian's chromium.

What the browser shows is compared with numpy on the same frames: the mean frame drawn by
the detector figure arrived through the proxied page and websocket.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import framescope as fs
from _jupyter import get, jupyter_lab
from dashboard._browser import CHROMIUM, CHROMIUM_ARGS, image, wait_for
from framescope import _proxy

pytest.importorskip("jupyter_server_proxy")
pytest.importorskip("jupyterlab")
pytest.importorskip("panel")
playwright_api = pytest.importorskip("playwright.sync_api")

SCAN, DET = (16, 16), (64, 64)


def test_config_serves_the_demo_under_the_proxied_path(monkeypatch):
    monkeypatch.delenv(_proxy.DATA_ENV, raising=False)
    monkeypatch.delenv(_proxy.ARGS_ENV, raising=False)
    cfg = _proxy.setup_framescope()
    cmd = cfg["command"]
    assert cmd[:4] == [sys.executable, "-m", "framescope.cli", "serve"]
    assert "--demo" in cmd
    assert cmd[cmd.index("--port") + 1] == "{port}"
    assert cmd[cmd.index("--prefix") + 1] == "{base_url}framescope"
    assert cmd[cmd.index("--address") + 1] == "127.0.0.1"
    assert cfg["absolute_url"] is True
    assert Path(cfg["launcher_entry"]["icon_path"]).read_text().lstrip().startswith("<svg")


def test_config_takes_a_dataset_and_options_from_the_environment(monkeypatch):
    monkeypatch.setenv(_proxy.DATA_ENV, "/data/scan 1.h5")
    monkeypatch.setenv(_proxy.ARGS_ENV, "--scheduler tcp://10.0.0.5:8786 --persist")
    cmd = _proxy.setup_framescope()["command"]
    assert "--demo" not in cmd
    assert cmd[4] == "/data/scan 1.h5"
    assert cmd[-3:] == ["--scheduler", "tcp://10.0.0.5:8786", "--persist"]


def test_the_entry_point_is_installed():
    from jupyter_server_proxy.config import get_entrypoint_server_processes

    procs = {p.name: p for p in get_entrypoint_server_processes()}
    assert procs["framescope"].launcher_entry.title == "framescope"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A small dataset on disk for the proxied dashboard, and its frames."""
    arr = fs.datasets.synthetic(scan=SCAN, det=DET, seed=5)
    path = fs.io.save(arr, tmp_path_factory.mktemp("data") / "scan.raw", "raw",
                      progress=False)
    return Path(path), arr.values


@pytest.fixture(scope="module")
def lab(frames, tmp_path_factory):
    """JupyterLab with the proxy configured for the dataset; yields (base URL, token)."""
    with jupyter_lab(tmp_path_factory.mktemp("lab"),
                     **{_proxy.DATA_ENV: str(frames[0]),
                        _proxy.ARGS_ENV: "--scheduler inline"}) as lab:
        yield lab


def test_the_launcher_lists_framescope_with_its_icon(lab):
    base, token = lab
    status, body = get(f"{base}/server-proxy/servers-info?token={token}")
    assert status == 200
    servers = {s["name"]: s for s in json.loads(body)["server_processes"]}
    entry = servers["framescope"]["launcher_entry"]
    assert entry["enabled"]
    assert entry["title"] == "framescope"
    assert entry["path_info"] == "framescope/"
    status, icon = get(f"{base}{entry['icon_url']}?token={token}")
    assert status == 200
    assert icon == (Path(fs.__file__).parent / "_static" / "framescope.svg").read_bytes()


def test_the_dashboard_needs_the_servers_login(lab):
    base, _ = lab
    status, _ = get(f"{base}/framescope/")
    assert status in (302, 403)  # to the login page, never the dashboard
    status, _ = get(f"{base}/framescope/?token=wrong")
    assert status in (302, 403)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM}")
@pytest.mark.timeout(180)
def test_the_dashboard_loads_through_the_proxy(lab, frames):
    base, token = lab
    expected = np.log10(1 + frames[1].astype(np.float64).mean(axis=(0, 1)))  # log scale
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(f"{m.text} {m.location['url']}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 else None)
            page.goto(f"{base}/framescope/?token={token}")
            # the document comes over the websocket: through the proxy as well
            page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0",
                                   timeout=120_000)
            assert page.url.startswith(f"{base}/framescope/")
            shown = wait_for(lambda: image(page, "detector: mean frame", exact=True), 60,
                             "the detector figure with the mean frame")
        finally:
            browser.close()
    assert tuple(shown["shape"]) == DET
    np.testing.assert_allclose(shown["values"], expected, rtol=1e-4, atol=1e-5)
    assert errors == []
