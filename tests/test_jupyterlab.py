"""The dashboard in a JupyterLab cell: JupyterLab started for real, a notebook run in
Debian's chromium, the dashboard's Bokeh figures checked in the cell's output.

The page's values are compared with numpy on the same frames, so the output did not just
appear: it carries the dashboard's results, rendered with inline JS (nothing is fetched from
the network).
"""

from __future__ import annotations

import contextlib
import os

import nbformat
import numpy as np
import pytest

from _jupyter import jupyter_lab
from dashboard._browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, wait_for

pytest.importorskip("jupyterlab")
pytest.importorskip("panel")
playwright_api = pytest.importorskip("playwright.sync_api")

# an image glyph's values in any Bokeh document of the page (one per output in JupyterLab)
JS_IMAGE_ANY = """(title) => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.type !== "Figure" || m.title == null || m.title.text !== title) continue;
      for (const r of m.renderers) {
        if (r.glyph != null && r.glyph.type === "Image") {
          const im = r.data_source.data.image[0];
          return {shape: Array.from(im.shape), values: Array.from(im)};
        }
      }
    }
  }
  return null;
}"""

CELL = """import framescope as fs
arr = fs.datasets.synthetic(scan=(8, 10), det=(32, 32), seed=2)
fs.dashboard(arr, client="inline")"""


@pytest.fixture(scope="module")
def lab_with_notebook(tmp_path_factory):
    """JupyterLab on a free port with a token, its root holding ``dash.ipynb``."""
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "dash.ipynb")
    with jupyter_lab(root) as lab:
        yield lab


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM}")
@pytest.mark.timeout(240)
def test_the_dashboard_renders_in_a_jupyterlab_cell(lab_with_notebook):
    from framescope.dashboard._detectors import default_detectors
    from framescope.datasets import synthetic

    base, token = lab_with_notebook
    frames = synthetic(scan=(8, 10), det=(32, 32), seed=2).values.astype(np.float64)
    bf = default_detectors((32, 32))["bf"]
    expected = np.einsum("ijkl,kl->ij", frames, bf.rasterize((32, 32)).astype(np.float64))
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and "/api/" not in r.url
                    and "favicon" not in r.url else None)
            page.goto(f"{base}/lab/tree/dash.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # the kernel is up when its status says idle; then run the cell
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=120_000)
            # select the cell and run it (the toolbar's run button; Shift+Enter again if a
            # dialog took the focus), until its prompt says it ran or is running
            prompt = page.locator(".jp-Cell .jp-InputPrompt").first
            for _ in range(3):
                page.locator(".jp-Cell .cm-content").first.click()
                page.keyboard.press("Shift+Enter")
                with contextlib.suppress(playwright_api.TimeoutError):
                    page.wait_for_function(
                        "(el) => /\\[(\\*|\\d+)\\]/.test(el.textContent)",
                        arg=prompt.element_handle(), timeout=10_000)
                    break
            page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0",
                                   timeout=120_000)

            def shown() -> bool:
                got = page.evaluate(JS_IMAGE_ANY, "bf")  # the thumbnail in the cell output
                if got is None or tuple(got["shape"]) != expected.shape:
                    return False
                values = np.asarray(got["values"], dtype=np.float64).reshape(got["shape"])
                return np.allclose(values, expected, rtol=1e-5)

            wait_for(shown, 120, "the dashboard's bf image in the cell output")
            visible = page.locator(".jp-OutputArea-output canvas").count()
        finally:  # what the page shows, also when it fails
            with contextlib.suppress(Exception):
                page.screenshot(path=str(artifacts_dir() / "jupyterlab.png"))
            browser.close()
    assert visible > 0  # drawn in the output area, not only present in the models
    assert errors == []
