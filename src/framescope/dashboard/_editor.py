"""Sidebar: the list of detectors and the numeric editor of the selected one."""

from __future__ import annotations

from typing import Any

import panel as pn

from framescope.dashboard._detectors import KINDS
from framescope.dashboard._state import DashboardState

__all__ = ["DetectorEditor"]


class DetectorEditor(pn.viewable.Viewer):
    """Select, add and remove detectors; edit the selected one's name, colour and geometry.

    The geometry fields are bound to the detector's parameters, so they follow drags on the
    detector view and a typed value moves the drawing.
    """

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._name_watch: tuple[Any, Any] | None = None
        self.select = pn.widgets.Select(label="detector", options=state.names,
                                        value=state.selected or None, width=260)
        self.select.param.watch(self._on_select, "value")
        state.param.watch(self._on_detectors, ["detectors", "selected"])
        self.fields = pn.Column(self._fields(state.selected))
        state.param.watch(lambda ev: setattr(self.fields, "objects",
                                             [self._fields(ev.new)]), "selected")

    def _on_select(self, event: Any) -> None:
        if event.new and event.new != self.state.selected:
            self.state.selected = event.new

    def _on_detectors(self, *_: Any) -> None:
        names = self.state.names
        if self.select.options != names:
            self.select.options = names
        if self.select.value != self.state.selected:
            self.select.value = self.state.selected or None

    def _fields(self, name: str) -> pn.viewable.Viewable:
        if not name or name not in self.state.names:
            return pn.pane.Markdown("No detector: add one or draw a box/polygon.")
        det = self.state.detector(name)
        number = {"type": pn.widgets.FloatInput, "step": 0.5, "width": 120}
        widgets: dict[str, Any] = {"color": {"type": pn.widgets.ColorPicker, "width": 60}}
        widgets.update({p: number for p in det.geometry if p != "vertices"})
        # pn.Param shows a Parameterized's ``name`` as a disabled title: edit it separately
        rename = pn.widgets.TextInput(label="name", value=det.name, width=250)
        rename.param.watch(lambda ev: setattr(det, "name", ev.new.strip()), "value")
        if self._name_watch is not None:  # stop updating the previous detector's field
            self._name_watch[0].param.unwatch(self._name_watch[1])
        self._name_watch = (det, det.param.watch(
            lambda ev: setattr(rename, "value", ev.new), "name"))
        return pn.Column(rename, pn.Param(det, parameters=["color", *det.geometry],
                                          widgets=widgets, show_name=False, width=270))

    def _add(self, kind: str) -> None:
        self.state.add(kind)

    def __panel__(self) -> pn.viewable.Viewable:
        adds = []
        for kind in KINDS:
            button = pn.widgets.Button(label=f"+ {kind}", width=60, margin=(5, 2))
            button.on_click(lambda _, k=kind: self._add(k))
            adds.append(button)
        remove = pn.widgets.Button(label="remove", width=80)
        remove.on_click(lambda _: self.state.selected and self.state.remove(self.state.selected))
        centre = pn.widgets.Button(label="centre on bright-field disk", width=180)
        centre.on_click(lambda _: self.state.centre_on_bright_field())
        help_text = pn.pane.Markdown(
            "Drag the centre dot to move the selected disk/ring (point tool). Box tool: "
            "Shift-drag draws, drag moves, Backspace deletes. Polygon tool: press and hold "
            "to start, click to add corners, press and hold to finish; edit tool: "
            "press and hold a polygon, then drag its corners. Hover (toolbar) shows values.",
            width=270, styles={"font-size": "11px"})
        return pn.Column(self.select, pn.Row(*adds), pn.Row(remove, centre), self.fields,
                         help_text, width=290)
