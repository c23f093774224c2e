"""Scan view: the virtual images, where a tap picks a frame and a drawn box/polygon is an ROI.

The main image's data coordinates are the displayed units (scan pixels, or nm for a
calibrated array; :mod:`~framescope.dashboard._units`): taps and drawn ROIs are converted
back to pixels, and the ROI is kept in pixels to be redrawn when the units change. The
thumbnails have no axes and stay in pixels.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._bokeh import DirectImage, equal_aspect, frame_size
from framescope.dashboard._detector import hover_off
from framescope.dashboard._detectors import read_boxes, read_polygons
from framescope.dashboard._images import block_coords, color_limits, downsample, roi_mask
from framescope.dashboard._results import VirtualImage
from framescope.dashboard._state import DashboardState

__all__ = ["ScanView", "scan_image_data"]

_EMPTY_BOXES: dict[str, list[Any]] = {"x0": [], "y0": [], "x1": [], "y1": []}


def scan_image_data(state: DashboardState, vi: VirtualImage | None, name: str,
                    clim: tuple[float, float] = (0.5, 99.5)) -> dict[str, Any]:
    """What the browser gets for a virtual image: block-averaged to at most 512 px a side
    (:func:`~framescope.dashboard._images.downsample`), coordinates in scan pixels."""
    ny, nx = state.scan_shape
    if vi is None:
        return {"x": np.arange(nx), "y": np.arange(ny),
                "z": np.zeros((ny, nx), np.float32), "clim": (0.0, 1.0),
                "title": name, "done": 0.0}
    img, f = downsample(vi.image)
    return {"x": block_coords(nx, f), "y": block_coords(ny, f), "z": img,
            "clim": color_limits(img, clim), "title": name, "done": vi.done}


class ScanView(pn.viewable.Viewer):
    """The selected detector's virtual image (tap: pick a frame; BoxEdit/PolyDraw: ROI) and
    a thumbnail of every detector's image."""

    cmap = param.Selector(default="viridis", objects=["viridis", "gray", "inferno", "magma",
                                                      "fire", "kbc", "coolwarm"])
    clim = param.Range(default=(0.5, 99.5), bounds=(0.0, 100.0),
                       doc="Contrast limits as percentiles of the image")
    size = param.Integer(default=440, bounds=(200, None))
    thumb_size = param.Integer(default=190, bounds=(80, None))
    thumbs_per_row = param.Integer(default=6, bounds=(1, None),
                                   doc="Thumbnails per row of the gallery")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._pipe = hv.streams.Pipe(data=self._main_data())
        self._direct = DirectImage()  # new pixels go straight into the Bokeh models
        self._marker = hv.streams.Pipe(data=self._marker_data())
        self._roi_box_pipe = hv.streams.Pipe(data=dict(_EMPTY_BOXES))
        self._roi_poly_pipe = hv.streams.Pipe(data=[])
        image = hv.DynamicMap(self._image, streams=[self._pipe])
        marker = hv.DynamicMap(lambda data: hv.Points(data).opts(
            color="red", marker="x", size=14, line_width=3), streams=[self._marker])
        roi_boxes = hv.DynamicMap(lambda data: hv.Rectangles(data).opts(
            fill_alpha=0.1, fill_color="white", line_color="white", line_dash="dashed",
            line_width=2), streams=[self._roi_box_pipe])
        roi_polys = hv.DynamicMap(lambda data: hv.Polygons(data).opts(
            fill_alpha=0.1, fill_color="white", line_color="white", line_dash="dashed",
            line_width=2), streams=[self._roi_poly_pipe])
        self.tap = hv.streams.Tap(source=image)
        self.roi_box = hv.streams.BoxEdit(source=roi_boxes)
        self.roi_poly = hv.streams.PolyDraw(source=roi_polys, drag=True, show_vertices=True)
        self.tap.add_subscriber(self._on_tap)
        self.roi_box.add_subscriber(lambda data: self._on_roi())
        self.roi_poly.add_subscriber(lambda data: self._on_roi())
        # the drawn ROI in scan pixels: boxes {y0, x0, y1, x1}, polygons [(y, x), …]
        self._roi_px: tuple[list[dict[str, float]], list[list[tuple[float, float]]]] = ([], [])
        self._frame = frame_size(state.scan_shape, self.size - 40)  # room for the colour bar
        self.plot = (image * roi_boxes * roi_polys * marker).opts(
            hv.opts.Overlay(frame_width=self._frame[0], frame_height=self._frame[1],
                            data_aspect=1, invert_yaxis=True, **self._limits(),
                            active_tools=["tap", "wheel_zoom"], toolbar="right",
                            hooks=[hover_off]))
        self._thumbs: dict[str, tuple[hv.streams.Pipe, DirectImage]] = {}
        self._thumb_colors: dict[str, str] = {}
        # a Bokeh-native grid, not pn.FlexBox (ReactiveHTML, no layout of its own): BokehJS
        # 3.9 computes the plot frames inside such a box only within two levels of the root
        # layout. Deeper, as in the live page's Row(source widget, Column(dashboard)), the
        # thumbnails kept a 0x0 frame and were never painted.
        self.gallery = pn.GridBox(ncols=self.thumbs_per_row, min_height=self.thumb_size + 20)
        self._sync_thumbnails()
        state.param.watch(lambda *_: self._sync_thumbnails(), ["shapes"])
        state.param.watch(lambda *_: self.redraw(), ["selected"])
        state.param.watch(lambda *_: self._marker.send(self._marker_data()),
                          ["picked", "frame_mode"])
        state.param.watch(lambda *_: self._on_units(), ["units"])
        self.param.watch(lambda *_: self.redraw(all_thumbs=True), ["cmap", "clim"])

    # ---- updates from the display loop -------------------------------------------------------
    def show(self, name: str, vi: VirtualImage | None) -> None:
        """Display the image of detector ``name`` (None: it was removed)."""
        if name == self.state.selected:
            data = self._main_data()
            if not self._direct.image(data):
                self._pipe.send(data)
        thumb = self._thumbs.get(name)
        if thumb is not None:
            pipe, direct = thumb
            data = scan_image_data(self.state, vi, name, self.clim)
            if not direct.image(data):
                pipe.send(data)

    def redraw(self, all_thumbs: bool = False) -> None:
        self._pipe.send(self._main_data())
        if all_thumbs:
            for name, (pipe, _) in self._thumbs.items():
                pipe.send(scan_image_data(self.state, self.state.image(name), name, self.clim))

    def _limits(self) -> dict[str, tuple[float, float]]:
        xlim, ylim = self.state.display.scan.extent(self.state.scan_shape)
        xlim, ylim = equal_aspect(xlim, ylim, self._frame)
        return {"xlim": xlim, "ylim": ylim}

    def _on_units(self) -> None:
        """Axes, image, marker and ROI in the units just chosen."""
        self.plot.opts(hv.opts.Overlay(**self._limits()))  # plots made from now on
        data = self._main_data()
        self._pipe.send(data)  # holoviews relabels the axes of the plots it drew …
        self._direct.fit(data)  # … but leaves their ranges
        self._marker.send(self._marker_data())
        self._send_roi()

    def _main_data(self) -> dict[str, Any]:
        name = self.state.selected
        data = scan_image_data(self.state, self.state.image(name) if name else None, name,
                               self.clim)
        done = "" if data["done"] >= 1 else f" ({data['done']:.0%})"
        units = self.state.display
        data.update(title=f"scan: {name}{done}", x=units.scan.x(data["x"]),
                    y=units.scan.y(data["y"]), xunit=units.unit("scan_x"),
                    yunit=units.unit("scan_y"))
        return data

    def _image(self, data: dict[str, Any]) -> hv.Image:
        kdims = [hv.Dimension("scan_x", unit=data["xunit"]),
                 hv.Dimension("scan_y", unit=data["yunit"])]
        return hv.Image((data["x"], data["y"], data["z"]), kdims=kdims,
                        vdims=["intensity"]).opts(
            cmap=self.cmap, clim=data["clim"], title=data["title"], colorbar=True,
            tools=["hover", "tap"], clipping_colors={"NaN": "transparent"},
            hooks=[self._direct.hook])

    def _marker_data(self) -> dict[str, list[float]]:
        if self.state.frame_mode != "picked":
            return {"x": [], "y": []}
        y, x = self.state.picked
        m = self.state.display.scan
        return {"x": [m.x(float(x))], "y": [m.y(float(y))]}

    # ---- thumbnails ----------------------------------------------------------------------
    def _sync_thumbnails(self) -> None:
        names = self.state.names
        colors = {d.name: d.color for d in self.state.detectors}
        if self._thumb_colors == colors and list(self._thumbs) == names:
            return
        thumbs, panes = {}, []
        for name in names:
            pipe = hv.streams.Pipe(data=scan_image_data(self.state, self.state.image(name),
                                                        name, self.clim))
            color, direct = colors[name], DirectImage()
            dmap = hv.DynamicMap(lambda data, c=color, d=direct: self._thumb(data, c, d),
                                 streams=[pipe])
            thumbs[name] = (pipe, direct)
            panes.append(pn.pane.HoloViews(dmap, linked_axes=False))
        self._thumbs, self._thumb_colors = thumbs, colors
        self.gallery.objects = panes

    def _thumb(self, data: dict[str, Any], color: str, direct: DirectImage) -> hv.Image:
        def title_color(plot: Any, element: Any) -> None:
            plot.state.title.text_color = color

        return hv.Image((data["x"], data["y"], data["z"]), kdims=["scan_x", "scan_y"],
                        vdims=["intensity"]).opts(
            cmap=self.cmap, clim=data["clim"], title=data["title"], xaxis=None, yaxis=None,
            width=self.thumb_size, height=self.thumb_size, invert_yaxis=True,
            toolbar=None, clipping_colors={"NaN": "transparent"},
            hooks=[title_color, direct.hook])

    # ---- interactions -------------------------------------------------------------------------
    def _on_tap(self, x: float | None, y: float | None) -> None:
        if x is not None and y is not None:
            self.state.pick_shown(y, x)

    def _on_roi(self) -> None:
        m = self.state.display.scan
        box_data = self.roi_box.data and m.columns(self.roi_box.data, ("x0", "x1"),
                                                   ("y0", "y1"), to_px=True)
        poly_data = self.roi_poly.data and m.columns(self.roi_poly.data, ("xs",), ("ys",),
                                                     to_px=True)
        boxes = [g for _, g in read_boxes(box_data)]
        polys = [v for _, v in read_polygons(poly_data)]
        self._roi_px = (boxes, polys)
        self.state.set_roi(roi_mask(self.state.scan_shape, boxes, polys))

    def _send_roi(self) -> None:
        """Redraw the ROI (kept in pixels) in the displayed units."""
        m = self.state.display.scan
        boxes, polys = self._roi_px
        self._roi_box_pipe.send({"x0": [m.x(b["x0"]) for b in boxes],
                                 "y0": [m.y(b["y0"]) for b in boxes],
                                 "x1": [m.x(b["x1"]) for b in boxes],
                                 "y1": [m.y(b["y1"]) for b in boxes]})
        self._roi_poly_pipe.send([{"x": [m.x(x) for _, x in v], "y": [m.y(y) for y, _ in v]}
                                  for v in polys])

    def clear_roi(self) -> None:
        """Remove the drawn ROI shapes and go back to the mean frame."""
        self._roi_px = ([], [])
        self._roi_box_pipe.send(dict(_EMPTY_BOXES))
        self._roi_poly_pipe.send([])
        self.state.set_roi(None)

    def __panel__(self) -> pn.viewable.Viewable:
        cmap = pn.widgets.Select.from_param(self.param.cmap, width=110)
        clim = pn.widgets.RangeSlider.from_param(self.param.clim, step=0.1, width=200,
                                                 label="contrast (percentiles)")
        clear = pn.widgets.Button(label="clear ROI", width=90)
        clear.on_click(lambda _: self.clear_roi())
        hint = pn.pane.Markdown(
            "Tap: show that frame. ROI: box tool + Shift-drag, or polygon tool (press and "
            "hold to start, click to add corners, press and hold to finish).",
            width=self.size, styles={"font-size": "11px"})
        return pn.Column(pn.Row(cmap, clim, clear), pn.pane.HoloViews(self.plot,
                                                                      linked_axes=False), hint)
