"""Direct updates of the Bokeh models holoviews made, for the images that change many times a
second.

Sending a new element through a ``Pipe`` makes holoviews rebuild the element and re-run its
plot update (ranges, styles, hooks): about 20 ms per image on this machine, which at 10
updates/s is a fifth of the event loop. An image that keeps its extent only needs new
pixels, colour limits and a title, so :class:`DirectImage` writes those into the models
(collected by a plot hook, one set per document the element is shown in) and the ``Pipe``
is kept for what changes the plot itself (colour map, first render). The detector outlines
are plain Bokeh glyphs added to the figure by the same hook, so a drag redraws them for the
cost of one data-source update.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from bokeh.models import ColumnDataSource

__all__ = ["DirectImage", "equal_aspect", "frame_size", "image_columns"]

#: room a figure needs beside its plot frame: axes, toolbar, colour bar (px)
_FRAME_MARGIN = 80


def frame_size(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """``(frame_width, frame_height)`` of a plot of a ``(ny, nx)`` pixel grid whose figure
    is about ``size`` px: the longer side fills it, the other follows the aspect."""
    ny, nx = shape
    side = max(size - _FRAME_MARGIN, 60)
    if nx >= ny:
        return side, max(round(side * ny / nx), 20)
    return max(round(side * nx / ny), 20), side


def equal_aspect(xlim: tuple[float, float], ylim: tuple[float, float],
                 frame: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """``xlim``, ``ylim`` widened about their centres so that one data unit spans as many
    screen pixels along x as along y in a ``(frame_width, frame_height)`` frame (data
    aspect 1: pixels of unequal physical steps are drawn unequal, not squeezed)."""
    (x0, x1), (y0, y1) = xlim, ylim
    fw, fh = frame
    xspan, yspan = abs(x1 - x0), abs(y1 - y0)
    if not (fw > 0 and fh > 0 and xspan > 0 and yspan > 0):
        return xlim, ylim
    want_x = yspan * fw / fh  # the x span that matches the y span at this frame shape
    if want_x > xspan:
        pad = (want_x - xspan) / 2 * math.copysign(1, x1 - x0)
        return (x0 - pad, x1 + pad), ylim
    pad = (xspan * fh / fw - yspan) / 2 * math.copysign(1, y1 - y0)
    return xlim, (y0 - pad, y1 + pad)


def image_columns(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, list[Any]]:
    """The image glyph's data source columns for pixel centres ``x``, ``y`` (ascending,
    evenly spaced) and values ``z`` (rows along ``y``): what holoviews' ``hv.Image`` plot
    writes for the same element (tested against it)."""
    dx = float(x[1] - x[0]) if len(x) > 1 else 1.0
    dy = float(y[1] - y[0]) if len(y) > 1 else 1.0
    return {"x": [float(x[0]) - dx / 2], "y": [float(y[0]) - dy / 2],
            "dw": [dx * len(x)], "dh": [dy * len(y)],
            "image": [np.ascontiguousarray(z, dtype=np.float32)]}


class DirectImage:
    """Writes new pixels, colour limits and title straight into an image's Bokeh models.

    Pass :meth:`hook` in the ``hv.Image``'s ``hooks``; each plot it is drawn in (one per
    document: a served session, a notebook output) registers itself there.

    Parameters
    ----------
    outlines : bool
        Also add a segment and a text glyph (detector outlines and names) to the figure,
        updated by :meth:`outlines`.
    """

    def __init__(self, outlines: bool = False) -> None:
        self._plots: list[weakref.ref] = []
        self._with_outlines = outlines
        self._outline_sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._outline_data: tuple[dict[str, list[Any]], dict[str, list[Any]]] = (
            {k: [] for k in ("x0", "y0", "x1", "y1", "name", "color", "lw")},
            {k: [] for k in ("x", "y", "name", "color")})

    def hook(self, plot: Any, element: Any) -> None:
        """holoviews plot hook: remember the plot (and add the outline glyphs once)."""
        if not any(ref() is plot for ref in self._plots):
            self._plots = [r for r in self._plots if r() is not None]
            self._plots.append(weakref.ref(plot))
        if self._with_outlines and plot.state not in self._outline_sources:
            self._outline_sources[plot.state] = _add_outlines(plot.state, *self._outline_data)

    def _shown(self) -> list[Any]:
        """The plots that are on a page: they have a document and an image data source."""
        plots = [r() for r in self._plots]
        return [p for p in plots if p is not None and p.document is not None
                and "source" in p.handles]

    def image(self, data: Mapping[str, Any]) -> bool:
        """Show ``data`` (keys ``x``, ``y``, ``z``, ``clim``, ``title``) in every plot;
        False when no plot is shown yet (send it through the element's stream then)."""
        plots = self._shown()
        if not plots:
            return False
        columns = image_columns(data["x"], data["y"], data["z"])
        lo, hi = data["clim"]
        for plot in plots:
            with _hold(plot):
                _fit_ranges(plot, plot.handles["source"].data, columns)
                plot.handles["source"].data = dict(columns)
                mapper = plot.handles.get("color_mapper")
                if mapper is not None:
                    mapper.update(low=lo, high=hi)
                if plot.state.title is not None:
                    plot.state.title.text = data["title"]
        return True

    def fit(self, data: Mapping[str, Any]) -> None:
        """Fit the axes of every shown plot to the extent of ``data`` (``x``, ``y``, ``z``
        as for :meth:`image`): after a change of units, which holoviews does not do for
        a plot it has drawn."""
        columns = image_columns(data["x"], data["y"], data["z"])
        for plot in self._shown():
            with _hold(plot):
                _fit_ranges(plot, {}, columns)

    def outlines(self, segments: Mapping[str, list[Any]], labels: Mapping[str, list[Any]]
                 ) -> None:
        """Redraw the outline segments (``x0 y0 x1 y1 name color lw``) and name labels
        (``x y name color``) in every figure."""
        seg = {k: list(segments[k]) for k in ("x0", "y0", "x1", "y1", "name", "color", "lw")}
        lab = {k: list(labels[k]) for k in ("x", "y", "name", "color")}
        self._outline_data = (seg, lab)
        for plot in self._shown():
            sources = self._outline_sources.get(plot.state)
            if sources is None:
                continue
            with _hold(plot):
                sources[0].data = dict(seg)
                sources[1].data = dict(lab)


def _fit_ranges(plot: Any, old: Mapping[str, Any], new: Mapping[str, list[Any]]) -> None:
    """A new extent (another frame shape or unit): the axes follow it, with equal aspect
    when the figure has a fixed frame; inverted ones stay so."""
    # approximate: holoviews' bounds of the same pixel centres may differ in the last bit
    if all(k in old and len(old[k]) and math.isclose(float(old[k][0]), new[k][0],
                                                     rel_tol=1e-9, abs_tol=1e-12)
           for k in ("x", "y", "dw", "dh")):
        return
    fig = plot.state
    xlim = (new["x"][0], new["x"][0] + new["dw"][0])
    ylim = (new["y"][0], new["y"][0] + new["dh"][0])
    if fig.frame_width and fig.frame_height:
        xlim, ylim = equal_aspect(xlim, ylim, (fig.frame_width, fig.frame_height))
    for rng, (lo, hi) in ((fig.x_range, xlim), (fig.y_range, ylim)):
        if not hasattr(rng, "start"):
            continue
        flipped = rng.start is not None and rng.end is not None and rng.start > rng.end
        rng.update(start=hi if flipped else lo, end=lo if flipped else hi)


def _add_outlines(fig: Any, segments: dict[str, list[Any]], labels: dict[str, list[Any]]
                  ) -> tuple[ColumnDataSource, ColumnDataSource]:
    seg = ColumnDataSource(dict(segments))
    lab = ColumnDataSource(dict(labels))
    fig.segment(x0="x0", y0="y0", x1="x1", y1="y1", line_color="color", line_width="lw",
                source=seg)
    fig.text(x="x", y="y", text="name", text_color="color", text_font_size="11pt",
             text_align="left", text_baseline="bottom", source=lab)
    return seg, lab


def _hold(plot: Any) -> Any:
    """Batch the changes of one plot; in a notebook, send them through its comm at the
    end (a server session sends them itself)."""
    from panel.io.document import hold

    return hold(plot.document, comm=plot.comm)
