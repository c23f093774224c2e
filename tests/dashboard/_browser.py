"""Helpers for driving the served dashboard with Playwright and Debian's chromium."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# finds the view of the figure whose title starts with `prefix` (is `prefix` if `exact`;
# Bokeh draws in shadow DOM)
_FIGURE = """
const figureView = (prefix, exact = false) => {
  const views = [];
  const walk = (v) => {
    if (v == null) return;
    views.push(v);
    for (const c of (v.child_views ?? [])) walk(c);
  };
  const idx = Bokeh.index;
  for (const r of (idx instanceof Map ? idx.values() : Object.values(idx))) walk(r);
  return views.find(v => v.model.type === "Figure" && v.model.title != null
                         && (exact ? v.model.title.text === prefix
                                   : v.model.title.text.startsWith(prefix)));
};
const columns = (source) => {
  const out = {};
  for (const [k, v] of Object.entries(source.data)) {
    out[k] = Array.from(v, e => (e != null && typeof e === "object") ? Array.from(e) : e);
  }
  return out;
};
"""

# the image glyph of the figure whose title is `text` (exact) or starts with it
JS_IMAGE = """([text, exact]) => {
  for (const m of Bokeh.documents[0].all_models) {
    if (m.type !== "Figure" || m.title == null) continue;
    const t = m.title.text;
    if (exact ? t !== text : !t.startsWith(text)) continue;
    for (const r of m.renderers) {
      if (r.glyph != null && r.glyph.type === "Image") {
        const d = r.data_source.data, im = d.image[0];
        return {title: t, shape: Array.from(im.shape), values: Array.from(im),
                x: d.x[0], y: d.y[0], dw: d.dw[0], dh: d.dh[0]};
      }
    }
  }
  return null;
}"""

# columns of the data source edited by a draw tool (e.g. "BoxEditTool") of a figure
JS_TOOL_DATA = "([prefix, tool]) => {" + _FIGURE + """
  const fig = figureView(prefix);
  if (fig == null) return null;
  const t = fig.model.toolbar.tools.find(t => t.type === tool);
  return t == null ? null : columns(t.renderers[0].data_source);
}"""

# whether a tool (e.g. "BoxEditTool") of a figure is active
JS_TOOL_ACTIVE = "([prefix, tool]) => {" + _FIGURE + """
  const fig = figureView(prefix);
  const t = fig == null ? null : fig.model.toolbar.tools.find(t => t.type === tool);
  return t != null && t.active;
}"""

# a figure's axis labels, data ranges and plot frame size (px)
JS_AXES = "([prefix]) => {" + _FIGURE + """
  const v = figureView(prefix);
  if (v == null) return null;
  const m = v.model;
  return {x: m.below[0].axis_label, y: m.left[0].axis_label,
          x_range: [m.x_range.start, m.x_range.end], y_range: [m.y_range.start, m.y_range.end],
          frame: [v.frame.bbox.width, v.frame.bbox.height]};
}"""

# page coordinates of data point (x, y) in a figure
JS_TO_PAGE = "([prefix, x, y]) => {" + _FIGURE + """
  const v = figureView(prefix);
  if (v == null) return null;
  const r = v.canvas_view.el.getBoundingClientRect();
  return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
}"""

# page coordinates of a toolbar button (icon class, e.g. "box-edit") of a figure
JS_TOOL_BUTTON = "([prefix, icon]) => {" + _FIGURE + """
  const fig = figureView(prefix);
  if (fig == null) return null;
  let found = null;
  const search = (root) => {
    const el = root.querySelector(".bk-tool-icon-" + icon);
    if (el != null && found == null) found = el;
    for (const e of root.querySelectorAll("*")) if (e.shadowRoot) search(e.shadowRoot);
  };
  search(fig.el.shadowRoot ?? fig.el);
  if (found == null) return null;
  const r = found.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
}"""


# a figure (title `text`, exact) scrolled into view if needed: its box in the viewport, its
# plot frame's size, its colour mapper and the viewport position of each image pixel's centre
JS_IMAGE_ON_SCREEN = "([text]) => {" + _FIGURE + """
  const v = figureView(text, true);
  if (v == null) return null;
  v.el.scrollIntoView({block: "nearest", inline: "nearest"});
  const r = v.model.renderers.find(r => r.glyph != null && r.glyph.type === "Image");
  const d = r.data_source.data, [ny, nx] = d.image[0].shape;
  const box = v.el.getBoundingClientRect(), canvas = v.canvas_view.el.getBoundingClientRect();
  const {x_scale, y_scale} = v.frame;
  const centres = [];
  for (let i = 0; i < ny; i++) {
    for (let j = 0; j < nx; j++) {
      centres.push([canvas.left + x_scale.compute(d.x[0] + (j + 0.5) * d.dw[0] / nx),
                    canvas.top + y_scale.compute(d.y[0] + (i + 0.5) * d.dh[0] / ny)]);
    }
  }
  const m = r.glyph.color_mapper;
  return {box: [box.left, box.top, box.width, box.height], viewport: [innerWidth, innerHeight],
          frame: [v.frame.bbox.width, v.frame.bbox.height], shape: [ny, nx], centres,
          palette: Array.from(m.palette), low: m.low, high: m.high};
}"""


def launch_server(args: list[str]) -> subprocess.Popen:
    """Start ``framescope serve ARGS`` (see :func:`server_url`)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "framescope.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def server_url(proc: subprocess.Popen, timeout: float = 180) -> str:
    """The URL a launched server prints once it listens."""
    deadline = time.monotonic() + timeout
    lines = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if "framescope dashboard: http://" in line:
            return line.split("framescope dashboard: ", 1)[1].strip()
    proc.kill()
    raise RuntimeError("framescope serve did not print its URL:\n" + "".join(lines[-50:]))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def image(page: Any, title: str, exact: bool = False) -> dict[str, Any] | None:
    """Image glyph data of a figure; ``values`` as a float array of ``shape``."""
    out = page.evaluate(JS_IMAGE, [title, exact])
    if out is not None:
        out["values"] = np.asarray(out["values"], dtype=np.float64).reshape(out["shape"])
    return out


def image_on_screen(page: Any, title: str) -> dict[str, Any] | None:
    """What the figure titled ``title`` shows on screen, from a screenshot of the viewport.

    Returns the figure's ``box`` (left, top, width, height in the viewport), the
    ``viewport`` size and the plot ``frame`` size (px), the colour mapper's ``palette``
    (RGB, n x 3), ``low`` and ``high``, and per image pixel (``shape``) the palette index
    of the colour at its centre on screen (``index``) and that colour's distance from the
    palette colour (``distance``, max abs RGB difference: 0 where the image is painted).
    """
    from PIL import Image  # a dependency of Bokeh

    info = page.evaluate(JS_IMAGE_ON_SCREEN, [title])
    if info is None:
        return None
    rgb = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), dtype=int)
    x, y = np.rint(np.asarray(info["centres"], dtype=float)).astype(int).T
    inside = (x >= 0) & (x < rgb.shape[1]) & (y >= 0) & (y < rgb.shape[0])
    seen = np.full((len(x), 3), -1000)  # centres outside the viewport match no colour
    seen[inside] = rgb[y[inside], x[inside]]
    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in info["palette"]])
    diff = np.abs(seen[:, None, :] - palette[None, :, :]).max(axis=2)
    shape = tuple(info["shape"])
    info.update(palette=palette, index=diff.argmin(axis=1).reshape(shape),
                distance=diff.min(axis=1).reshape(shape))
    return info


def assert_image_on_screen(page: Any, title: str, expected: np.ndarray,
                           percentiles: tuple[float, float] = (0.5, 99.5)) -> dict[str, Any]:
    """The figure titled ``title`` is on screen, with every pixel of ``expected`` in the
    colour that the colour map gives it (limits: ``percentiles`` of ``expected``)."""
    from ._reference import colour_index

    shown = image_on_screen(page, title)
    assert shown is not None, f"no figure titled {title!r}"
    left, top, width, height = shown["box"]
    assert width > 0, f"{title}: {width} px wide"
    assert height > 0, f"{title}: {height} px high"
    assert min(shown["frame"]) > 0, f"{title}: plot frame {shown['frame']} never laid out"
    view_w, view_h = shown["viewport"]
    assert 0 <= left <= view_w - width, f"{title}: x {left}..{left + width} of {view_w}"
    assert 0 <= top <= view_h - height, f"{title}: y {top}..{top + height} of {view_h}"
    np.testing.assert_allclose([shown["low"], shown["high"]],
                               np.percentile(expected, percentiles), rtol=1e-5)
    assert shown["distance"].max() <= 2, f"{title}: pixels not in the colour map's colours"
    want = colour_index(expected, shown["low"], shown["high"], len(shown["palette"]))
    assert tuple(shown["index"].shape) == expected.shape
    assert np.abs(shown["index"] - want).max() <= 1, f"{title}: other colours than its image"
    return shown


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except AssertionError as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}") from last_error


def drag(page: Any, start: tuple[float, float], end: tuple[float, float], steps: int = 12,
         shift: bool = False, pause: float = 0.02) -> None:
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * i / steps,
                        start[1] + (end[1] - start[1]) * i / steps)
        time.sleep(pause)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def retry(action: Callable[[], None], check: Callable[[], Any], what: str, tries: int = 3,
          timeout: float = 8) -> Any:
    """Do ``action`` until ``check`` gives something truthy (a gesture that starts while
    BokehJS is busy re-rendering can be lost on a slow machine)."""
    for attempt in range(tries):
        action()
        try:
            return wait_for(check, timeout, what)
        except AssertionError:
            print(f"retry: {what} (attempt {attempt + 1})")
            if attempt == tries - 1:
                raise
    return None


def artifacts_dir() -> Path:
    out = Path(os.environ.get("FRAMESCOPE_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out
