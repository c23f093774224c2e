"""COM / DPC view: centre-of-mass maps with an editable reference centre and rotation.

The maps' axes are in the displayed scan units (px, or nm for a calibrated array); the
reference centre and radius fields are detector pixels, as the COM parameters are.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._bokeh import DirectImage, equal_aspect, frame_size
from framescope.dashboard._images import block_coords, color_limits, downsample
from framescope.dashboard._results import ComResult
from framescope.dashboard._state import DashboardState

__all__ = ["COMPONENTS", "ComView"]

#: outputs of ``arr.fs.com`` shown here; signed ones get a diverging colour map around 0
COMPONENTS = ("magnitude", "com_x", "com_y", "field_x", "field_y", "divergence", "curl")
_SIGNED = {"com_x", "com_y", "field_x", "field_y", "divergence", "curl"}


class ComView(pn.viewable.Viewer):
    """One COM/DPC component over the scan; computed once this view is first shown."""

    component = param.Selector(default="magnitude", objects=list(COMPONENTS),
                               doc="COM output to show")
    size = param.Integer(default=440, bounds=(200, None))

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.result: ComResult | None = None
        self._pipe = hv.streams.Pipe(data=self._data())
        self._direct = DirectImage()
        image = hv.DynamicMap(self._image, streams=[self._pipe])
        self.tap = hv.streams.Tap(source=image)
        self.tap.add_subscriber(lambda x, y: None if x is None else state.pick_shown(y, x))
        self._frame = frame_size(state.scan_shape, self.size - 40)  # room for the colour bar
        self.plot = image.opts(frame_width=self._frame[0], frame_height=self._frame[1],
                               data_aspect=1, invert_yaxis=True, **self._limits())
        self.param.watch(lambda *_: self._pipe.send(self._data()), ["component"])
        state.param.watch(lambda *_: self._on_units(), ["units"])

    def _limits(self) -> dict[str, tuple[float, float]]:
        xlim, ylim = self.state.display.scan.extent(self.state.scan_shape)
        xlim, ylim = equal_aspect(xlim, ylim, self._frame)
        return {"xlim": xlim, "ylim": ylim}

    def _on_units(self) -> None:
        self.plot.opts(**self._limits())  # plots made from now on
        data = self._data()
        self._pipe.send(data)  # holoviews relabels the axes of the plots it drew …
        self._direct.fit(data)  # … but leaves their ranges

    def show(self, result: ComResult) -> None:
        self.result = result
        data = self._data()
        if not self._direct.image(data):  # the colour map changes only with the component
            self._pipe.send(data)

    def _data(self) -> dict[str, Any]:
        ny, nx = self.state.scan_shape
        name = self.component
        if self.result is None:
            z, f, done = np.zeros((ny, nx), np.float32), 1, 0.0
        else:
            z, f = downsample(np.asarray(self.result.data[name]))
            done = self.result.done
        lo, hi = color_limits(z, (1.0, 99.0))
        if name in _SIGNED:
            lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        suffix = "" if done >= 1 else f" ({done:.0%})"
        units = self.state.display
        return {"x": units.scan.x(block_coords(nx, f)), "y": units.scan.y(block_coords(ny, f)),
                "z": z, "clim": (lo, hi), "cmap": "coolwarm" if name in _SIGNED else "viridis",
                "title": f"COM: {name}{suffix}", "xunit": units.unit("scan_x"),
                "yunit": units.unit("scan_y")}

    def _image(self, data: dict[str, Any]) -> hv.Image:
        kdims = [hv.Dimension("scan_x", unit=data["xunit"]),
                 hv.Dimension("scan_y", unit=data["yunit"])]
        return hv.Image((data["x"], data["y"], data["z"]), kdims=kdims,
                        vdims=["value"]).opts(
            cmap=data["cmap"], clim=data["clim"], title=data["title"], colorbar=True,
            tools=["hover", "tap"], clipping_colors={"NaN": "transparent"},
            hooks=[self._direct.hook])

    def __panel__(self) -> pn.viewable.Viewable:
        p = self.state.param
        fields = [pn.widgets.FloatInput.from_param(p.com_cy, label="centre y (px)", width=100),
                  pn.widgets.FloatInput.from_param(p.com_cx, label="centre x (px)", width=100),
                  pn.widgets.FloatInput.from_param(p.com_radius, label="radius (px)", width=100)]
        rotation = pn.widgets.FloatInput.from_param(p.com_rotation, label="rotation (deg)",
                                                    width=100, step=1.0)
        flip = pn.widgets.Checkbox.from_param(p.com_flip_y, label="flip y")
        centre = pn.widgets.Button(label="centre on bright-field disk", width=210)
        centre.on_click(lambda _: self.state.centre_com_on_bright_field())
        component = pn.widgets.Select.from_param(self.param.component, width=140)
        return pn.Column(pn.Row(*fields), pn.Row(rotation, flip, centre), component,
                         pn.pane.HoloViews(self.plot, linked_axes=False))
