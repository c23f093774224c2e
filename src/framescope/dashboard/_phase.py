"""Phase view: SSB ptychography, iDPC or tcBF over the scan, filling in while the job runs.

The methods and their settings come from :data:`~framescope.dashboard._phase_methods.
PHASE_METHODS`; the state (:meth:`DashboardState._refresh_phase`) runs the selected one
once the tab is first shown and again when a setting it uses changes. When the data's
calibration cannot serve the method, the view says what is missing instead of an image.
"""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._bokeh import DirectImage, equal_aspect, frame_size
from framescope.dashboard._images import block_coords, color_limits, downsample
from framescope.dashboard._phase_methods import PHASE_METHODS
from framescope.dashboard._results import PhaseResult
from framescope.dashboard._state import DashboardState

__all__ = ["PhaseView"]

#: colour map per output (phase images are conventionally grey)
_CMAPS = {"phase": "gray"}


class PhaseView(pn.viewable.Viewer):
    """One output of the selected phase method over the scan, in the displayed units."""

    size = param.Integer(default=440, bounds=(200, None))

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.result: PhaseResult | None = None
        self._pipe = hv.streams.Pipe(data=self._data())
        self._direct = DirectImage()
        image = hv.DynamicMap(self._image, streams=[self._pipe])
        self.tap = hv.streams.Tap(source=image)
        self.tap.add_subscriber(lambda x, y: None if x is None else state.pick_shown(y, x))
        self._frame = frame_size(state.scan_shape, self.size - 40)  # room for the colour bar
        self.plot = image.opts(frame_width=self._frame[0], frame_height=self._frame[1],
                               data_aspect=1, invert_yaxis=True, **self._limits())
        self.message = pn.pane.Alert("", alert_type="warning", visible=False, width=520)
        state.param.watch(lambda *_: self._pipe.send(self._data()), ["phase_component"])
        state.param.watch(lambda *_: self._on_units(), ["units"])

    @property
    def method(self) -> str:
        """The method whose image is shown (the selected one until a result arrives)."""
        return self.result.method if self.result is not None else self.state.phase_method

    def _limits(self) -> dict[str, tuple[float, float]]:
        xlim, ylim = self.state.display.scan.extent(self.state.scan_shape)
        xlim, ylim = equal_aspect(xlim, ylim, self._frame)
        return {"xlim": xlim, "ylim": ylim}

    def _on_units(self) -> None:
        self.plot.opts(**self._limits())  # plots made from now on
        data = self._data()
        self._pipe.send(data)  # holoviews relabels the axes of the plots it drew …
        self._direct.fit(data)  # … but leaves their ranges

    def show(self, result: PhaseResult) -> None:
        """Show a result of the phase job (or its message)."""
        self.result = result
        self.message.object = result.message
        self.message.visible = bool(result.message)
        data = self._data()
        if not self._direct.image(data):  # the colour map changes only with the component
            self._pipe.send(data)

    def _data(self) -> dict[str, Any]:
        ny, nx = self.state.scan_shape
        res, name, unit, note = self.result, self.state.phase_component, "", ""
        if res is None or res.data is None:
            z, f, done = np.zeros((ny, nx), np.float32), 1, 0.0
            if res is not None:
                note = " (not computed: see the message)"
        else:
            if name not in res.data:  # a result of the previous settings
                name = "phase"
            var = res.data[name]
            z, f = downsample(np.asarray(var))
            unit = str(var.attrs.get("units", ""))
            done = res.done
            note = _fit_note(res)
        lo, hi = color_limits(z, (1.0, 99.0))
        suffix = "" if done >= 1 else f" ({done:.0%})"
        units = self.state.display
        label = f"{self.method}: {name}" + (f" ({unit})" if unit else "")
        return {"x": units.scan.x(block_coords(nx, f)), "y": units.scan.y(block_coords(ny, f)),
                "z": z, "clim": (lo, hi), "cmap": _CMAPS.get(name, "viridis"),
                "title": f"{label}{note}{suffix}", "xunit": units.unit("scan_x"),
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
        method = pn.widgets.Select.from_param(p.phase_method, label="method", width=110)
        component = pn.widgets.Select.from_param(p.phase_component, label="show", width=120)
        defocus = pn.widgets.FloatInput.from_param(p.phase_defocus, label="defocus (nm)",
                                                   width=110, step=1.0)
        highpass = pn.widgets.FloatInput.from_param(p.phase_highpass,
                                                    label="high-pass (1/step)", width=130,
                                                    step=0.01)

        def fields(name: str) -> None:
            component.options = list(PHASE_METHODS[name].components)
            used = PHASE_METHODS[name].settings
            defocus.visible = "defocus_nm" in used
            highpass.visible = "highpass" in used

        fields(self.state.phase_method)
        self.state.param.watch(lambda ev: fields(ev.new), ["phase_method"])
        note = pn.pane.Str("iDPC integrates the COM / DPC tab's centre, radius and rotation",
                           visible=self.state.phase_method == "iDPC")
        self.state.param.watch(lambda ev: setattr(note, "visible", ev.new == "iDPC"),
                               ["phase_method"])
        return pn.Column(pn.Row(method, component, defocus, highpass), note, self.message,
                         pn.pane.HoloViews(self.plot, linked_axes=False))


def _fit_note(res: PhaseResult) -> str:
    """What a method fitted, for the title (tcBF's defocus)."""
    data = res.data
    if data is None or "defocus" not in data or data["defocus"].ndim:
        return ""
    value = float(data["defocus"])
    return "" if not math.isfinite(value) else f", fitted defocus {value:.3g} nm"
