"""Detector view: a frame with the virtual detectors drawn, moved and edited on it.

Circles (disks, rings) are a PointDraw handle at the centre plus outlines (``hv.Segments``)
redrawn from the radii, which are numbers in the editor: Bokeh has no circle edit tool, and a
centre handle with typed radii is both precise and cheap to sync. Only the selected detector
has a handle, as concentric detectors would otherwise move together. Bokeh's PointDraw only
reports a drag when the mouse is released, so a ``Draw`` stream (the plot's pan events)
moves the detector under the pointer while the drag is on: outline and virtual image follow
live, and the PointDraw report at the end is authoritative (a pan that was not a PointDraw
drag, e.g. with the box tool active, is undone then). Boxes use BoxEdit (Shift+drag draws,
drag moves, Backspace deletes), polygons PolyDraw/PolyEdit; both report on release.

The plot's data coordinates are the displayed units (:mod:`~framescope.dashboard._units`:
pixels, or mrad from the beam centre for a calibrated array): tables sent to it are
converted from the detectors' pixels, and what the tools report is converted back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._bokeh import DirectImage, equal_aspect, frame_size
from framescope.dashboard._detectors import (
    BoxDetector,
    DiskDetector,
    PolygonDetector,
    RingDetector,
    boxes_table,
    centres_table,
    next_color,
    outline_segments,
    polygons_table,
    read_boxes,
    read_centres,
    read_polygons,
    unique_name,
)
from framescope.dashboard._images import block_coords, color_limits, display_frame, downsample
from framescope.dashboard._results import Frame
from framescope.dashboard._state import FRAME_MODES, DashboardState

__all__ = ["CMAPS", "DetectorView"]

log = logging.getLogger(__name__)

CMAPS = ["gray", "viridis", "inferno", "magma", "fire", "kbc", "coolwarm"]
_HIT_PX = 10  # a drag starting this close (screen px) to a centre moves it
_RECONCILE_MS = 400  # wait for PointDraw's report after a drag ends


class DetectorView(pn.viewable.Viewer):
    """The frame (mean, max, picked or ROI sum) with the detectors over it."""

    scale = param.Selector(default="log", objects=["linear", "log"],
                           doc="Intensity scale: linear, or log10(1 + I)")
    cmap = param.Selector(default="gray", objects=CMAPS, doc="Colour map")
    clim = param.Range(default=(0.0, 99.9), bounds=(0.0, 100.0),
                       doc="Contrast limits as percentiles of the frame")
    size = param.Integer(default=440, bounds=(200, None), doc="Plot size (px)")

    def __init__(self, state: DashboardState,
                 schedule: Callable[[Callable[[], None], int], None] | None = None,
                 **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.frame: Frame | None = None
        self._schedule = schedule or _schedule_once
        self._drag: dict[str, Any] | None = None
        self._in_stroke = False
        self._stroke = 0
        self._point_reports = 0

        self._frame_pipe = hv.streams.Pipe(data=self._display_data())
        # the frame's pixels and the outlines go straight into the Bokeh models
        self._direct = DirectImage(outlines=True)
        self._pushed = self._tables()  # what the plot shows, to send only changes
        self._direct.outlines(*self._pushed["outlines"])
        self._pipes = {k: hv.streams.Pipe(data=v) for k, v in self._pushed.items()
                       if k != "outlines"}
        image = hv.DynamicMap(self._image, streams=[self._frame_pipe])
        centres = hv.DynamicMap(self._centres, streams=[self._pipes["centres"]])
        boxes = hv.DynamicMap(self._boxes, streams=[self._pipes["boxes"]])
        polys = hv.DynamicMap(self._polygons, streams=[self._pipes["polygons"]])
        self.point_draw = hv.streams.PointDraw(source=centres, add=False, drag=True)
        self.box_edit = hv.streams.BoxEdit(source=boxes)
        self.poly_draw = hv.streams.PolyDraw(source=polys, drag=True, show_vertices=True)
        self.poly_edit = hv.streams.PolyEdit(source=polys, shared=False)
        self.pan = hv.streams.Draw(source=image)
        self.ranges = hv.streams.RangeXY(source=image)
        self.point_draw.add_subscriber(self._on_centres)
        self.box_edit.add_subscriber(self._on_boxes)
        self.poly_draw.add_subscriber(self._on_polygons)
        self.poly_edit.add_subscriber(self._on_polygons)
        self.pan.add_subscriber(self._on_pan)
        self._frame = frame_size(state.det_shape, self.size)
        self.plot = (image * boxes * polys * centres).opts(
            hv.opts.Overlay(frame_width=self._frame[0], frame_height=self._frame[1],
                            data_aspect=1, invert_yaxis=True, **self._limits(),
                            active_tools=["point_draw", "wheel_zoom"], toolbar="right",
            hooks=[hover_off]))
        state.param.watch(lambda *_: self.push_shapes(), ["shapes", "selected"])
        state.param.watch(lambda *_: self._on_units(), ["units"])
        self.param.watch(lambda *_: self.redraw(), ["scale", "cmap", "clim"])

    def _limits(self) -> dict[str, tuple[float, float]]:
        xlim, ylim = self.state.display.det.extent(self.state.det_shape)
        xlim, ylim = equal_aspect(xlim, ylim, self._frame)
        return {"xlim": xlim, "ylim": ylim}

    def _on_units(self) -> None:
        """Axes, frame and shapes in the units just chosen."""
        self.plot.opts(hv.opts.Overlay(**self._limits()))  # plots made from now on
        data = self._display_data()
        self._frame_pipe.send(data)  # holoviews relabels the axes of the plots it drew …
        self._direct.fit(data)  # … but leaves their ranges
        self.push_shapes(force=True)

    # ---- the frame -------------------------------------------------------------------------
    def show(self, frame: Frame) -> None:
        """Display ``frame`` (called by the dashboard's display loop)."""
        self.frame = frame
        data = self._display_data()
        if not self._direct.image(data):
            self._frame_pipe.send(data)

    def redraw(self) -> None:
        """Re-render the frame (a new colour map or scale)."""
        self._frame_pipe.send(self._display_data())

    def _display_data(self) -> dict[str, Any]:
        h, w = self.state.det_shape
        units = self.state.display
        dims = {"xunit": units.unit("det_x"), "yunit": units.unit("det_y")}
        m = units.det
        if self.frame is None:
            return {"x": m.x(np.arange(w)), "y": m.y(np.arange(h)),
                    "z": np.zeros((h, w), np.float32), "clim": (0.0, 1.0),
                    "title": "detector: computing…", **dims}
        img, f = downsample(display_frame(self.frame.image, self.scale))
        done = "" if self.frame.done >= 1 else f" ({self.frame.done:.0%})"
        label = self.frame.label
        if self.frame.at is not None:  # a picked frame: its position in the units shown
            label = f"frame at scan ({units.position(*self.frame.at)})"
        return {"x": m.x(block_coords(w, f)), "y": m.y(block_coords(h, f)), "z": img,
                "clim": color_limits(img, self.clim), "title": f"detector: {label}{done}",
                **dims}

    def _image(self, data: dict[str, Any]) -> hv.Image:
        kdims = [hv.Dimension("det_x", unit=data["xunit"]),
                 hv.Dimension("det_y", unit=data["yunit"])]
        return hv.Image((data["x"], data["y"], data["z"]), kdims=kdims,
                        vdims=["intensity"]).opts(
            cmap=self.cmap, clim=data["clim"], title=data["title"], colorbar=False,
            tools=["hover"], clipping_colors={"NaN": "transparent"},
            hooks=[self._direct.hook])

    # ---- detector overlays -------------------------------------------------------------------
    def _tables(self) -> dict[str, Any]:
        """What the plot shows of the detectors, in the displayed units."""
        dets, sel, m = self.state.detectors, self.state.selected, self.state.display.det
        segments = m.columns(outline_segments(dets), ("x0", "x1"), ("y0", "y1"))
        return {"outlines": (_widths(segments, sel), m.columns(_labels(dets))),
                "centres": m.columns(centres_table(dets, only=sel)),
                "boxes": _widths(m.columns(boxes_table(dets), ("x0", "x1"), ("y0", "y1")),
                                 sel),
                "polygons": [{**m.columns(p), "lw": _width(p["name"], sel)}
                             for p in polygons_table(dets)]}

    def push_shapes(self, force: bool = False) -> None:
        """Send the detector tables that changed to the plot (all of them with ``force``)."""
        for key, table in self._tables().items():
            if key == "centres" and self._drag is not None and not force:
                continue  # PointDraw owns the handle while it is dragged
            if force or not _same(self._pushed.get(key), table):
                self._pushed[key] = table
                if key == "outlines":
                    self._direct.outlines(*table)  # a data-source update: cheap while dragging
                else:
                    self._pipes[key].send(table)

    # plain column names as styles: hv.dim expressions cost ~60 ms per update here
    def _centres(self, data: dict[str, list[Any]]) -> hv.Points:
        return hv.Points(data, vdims=["name", "color"]).opts(
            color="color", size=11, line_color="white", line_width=1.5,
            tools=["hover"], hover_tooltips=["name"])

    def _boxes(self, data: dict[str, list[Any]]) -> hv.Rectangles:
        # hover puts the name column into the data source, where BoxEdit reports it back
        return hv.Rectangles(data, vdims=["name", "color", "lw"]).opts(
            fill_color="color", fill_alpha=0.15, line_color="color", line_width="lw",
            tools=["hover"], hover_tooltips=["name"])

    def _polygons(self, data: list[dict[str, Any]]) -> hv.Polygons:
        return hv.Polygons(data, vdims=["name", "color", "lw"]).opts(
            fill_color="color", fill_alpha=0.15, line_color="color", line_width="lw",
            tools=["hover"], hover_tooltips=["name"])

    # ---- what the draw tools report ------------------------------------------------------------
    def _on_centres(self, data: dict[str, list[Any]] | None) -> None:
        log.debug("PointDraw report %s", data)
        self._point_reports += 1
        px = None if data is None else self.state.display.det.columns(data, to_px=True)
        for name, (cy, cx) in read_centres(px).items():
            det = self._find(name, DiskDetector | RingDetector)
            if det is not None and (det.cy, det.cx) != (cy, cx):
                det.param.update(cy=cy, cx=cx)

    def _on_boxes(self, data: dict[str, list[Any]] | None) -> None:
        log.debug("BoxEdit report %s", data)
        if data is not None:
            data = self.state.display.det.columns(data, ("x0", "x1"), ("y0", "y1"), to_px=True)
        self._sync_drawn(BoxDetector, [(n, g) for n, g in read_boxes(data)], "box")

    def _on_polygons(self, data: dict[str, list[Any]] | None) -> None:
        log.debug("PolyDraw/PolyEdit report %s", data)
        if data is not None:
            data = self.state.display.det.columns(data, ("xs",), ("ys",), to_px=True)
        rows = [(n, {"vertices": v}) for n, v in read_polygons(data)]
        self._sync_drawn(PolygonDetector, rows, "polygon")

    def _sync_drawn(self, cls: type, rows: list[tuple[str | None, dict[str, Any]]],
                    kind: str) -> None:
        """Rows of a BoxEdit/PolyDraw table: update known detectors, add new rows, remove
        the detectors of this kind whose rows were deleted."""
        known = {d.name: d for d in self.state.detectors if isinstance(d, cls)}
        seen: set[str] = set()
        for name, geometry in rows:
            if name in known and name not in seen:
                seen.add(name)
                det = known[name]
                if any(getattr(det, k) != v for k, v in geometry.items()):
                    det.param.update(**geometry)
            else:
                new = cls(name=unique_name(kind, self.state.names),
                          color=next_color(d.color for d in self.state.detectors), **geometry)
                self.state.add(new)
                seen.add(new.name)
        for name in set(known) - seen:
            self.state.remove(name)
        # new rows get their name and colour; nothing is sent while nothing changed, which
        # would wipe a polygon still being drawn
        self.push_shapes()

    def _find(self, name: str, kind: Any) -> Any:
        for d in self.state.detectors:
            if d.name == name and isinstance(d, kind):
                return d
        return None

    # ---- live drag of a centre ----------------------------------------------------------------
    def _on_pan(self, x: float | None, y: float | None, stroke_count: int) -> None:
        log.debug("pan x=%s y=%s stroke=%s (current %s, in stroke %s, drag %s)", x, y,
                  stroke_count, self._stroke, self._in_stroke, self._drag is not None)
        if x is None or y is None:
            return
        m = self.state.display.det
        x, y = m.x_px(x), m.y_px(y)  # the plot's units → the detectors' pixels
        if stroke_count != self._stroke:  # the pan-end event of the current stroke
            self._stroke, self._in_stroke = stroke_count, False
            if self._drag is not None:
                self._move(x, y)
                self._end_drag()
            return
        if not self._in_stroke:  # first event of a stroke: is it on a centre?
            self._in_stroke = True
            self._drag = self._hit(x, y)
            return
        if self._drag is not None:
            self._move(x, y)

    def _hit(self, x: float, y: float) -> dict[str, Any] | None:
        m = self.state.display.det
        xr_ = self.ranges.x_range or m.extent(self.state.det_shape)[0]
        tol = m.length_px(_HIT_PX * abs(xr_[1] - xr_[0]) / self._frame[0])
        best = self._find(self.state.selected, DiskDetector | RingDetector)
        if best is None or math.hypot(best.cx - x, best.cy - y) > tol:
            return None
        return {"det": best, "x": x, "y": y, "cy": best.cy, "cx": best.cx,
                "reports": self._point_reports}

    def _move(self, x: float, y: float) -> None:
        d = self._drag
        assert d is not None
        d["det"].param.update(cy=round(d["cy"] + y - d["y"], 2), cx=round(d["cx"] + x - d["x"], 2))

    def _end_drag(self) -> None:
        drag = self._drag

        def reconcile() -> None:
            log.debug("reconcile: %d PointDraw reports during the drag",
                      self._point_reports - (drag or {}).get("reports", 0))
            if drag is not None and self._point_reports == drag["reports"]:
                # no PointDraw report: another tool had the drag; undo the live move
                drag["det"].param.update(cy=drag["cy"], cx=drag["cx"])
            if self._drag is drag:
                self._drag = None
            self.push_shapes(force=True)

        self._schedule(reconcile, _RECONCILE_MS)

    # ---- layout ----------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        mode = pn.widgets.RadioButtonGroup.from_param(self.state.param.frame_mode,
                                                      options=list(FRAME_MODES), label="frame")
        scale = pn.widgets.RadioButtonGroup.from_param(self.param.scale, label="scale")
        cmap = pn.widgets.Select.from_param(self.param.cmap, width=110)
        clim = pn.widgets.RangeSlider.from_param(self.param.clim, step=0.1, width=200,
                                                 label="contrast (percentiles)")
        return pn.Column(pn.Row(mode, scale), pn.Row(cmap, clim),
                         pn.pane.HoloViews(self.plot, linked_axes=False))


def _labels(dets: list[Any]) -> dict[str, list[Any]]:
    xs, ys, names, colors = [], [], [], []
    for d in dets:
        if isinstance(d, DiskDetector | RingDetector):
            r = max(d.radii()) / math.sqrt(2)
            x, y = d.cx + r, d.cy - r
        elif isinstance(d, BoxDetector):
            x, y = d.x0, d.y0
        else:
            y, x = min(d.vertices)
        xs.append(x)
        ys.append(y)
        names.append(d.name)
        colors.append(d.color)
    return {"x": xs, "y": ys, "name": names, "color": colors}


def hover_off(plot: Any, element: Any) -> None:
    """Start with hover off: its tooltip sits under the pointer and swallows the clicks of
    the draw tools (the toolbar turns it on)."""
    plot.state.toolbar.active_inspect = None


def _width(name: str, selected: str) -> float:
    return 4.0 if name == selected else 2.0  # the selected detector's outline is thicker


def _widths(table: dict[str, list[Any]], selected: str) -> dict[str, list[Any]]:
    return {**table, "lw": [_width(n, selected) for n in table["name"]]}


def _same(a: Any, b: Any) -> bool:
    """Deep equality of nested tables holding lists, dicts and numpy arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _schedule_once(callback: Callable[[], None], ms: int) -> None:
    pn.state.add_periodic_callback(callback, period=ms, count=1)
