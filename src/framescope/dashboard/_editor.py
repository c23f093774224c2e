"""Sidebar: the list of detectors and the numeric editor of the selected one."""

from __future__ import annotations

from typing import Any

import panel as pn

from framescope.dashboard._detectors import KINDS, Detector
from framescope.dashboard._state import DashboardState

__all__ = ["DetectorEditor"]


class DetectorEditor(pn.viewable.Viewer):
    """Select, add and remove detectors; edit the selected one's name, colour and geometry.

    The geometry fields are bound to the detector's parameters, so they follow drags on the
    detector view and a typed value moves the drawing. They show the displayed units
    (``state.units``: pixels, or mrad from the beam centre for a calibrated array); a typed
    value is converted to the pixels the detector keeps.
    """

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._watches: list[tuple[Any, Any]] = []  # (detector, watcher) of the fields shown
        self._syncing = False  # a field being set from its detector, not typed
        self._generation = 0  # fields of older generations are no longer shown
        self.select = pn.widgets.Select(label="detector", options=state.names,
                                        value=state.selected or None, width=260)
        self.select.param.watch(self._on_select, "value")
        state.param.watch(self._on_detectors, ["detectors", "selected"])
        self.fields = pn.Column(self._fields(state.selected))
        state.param.watch(lambda *_: setattr(self.fields, "objects",
                                             [self._fields(self.state.selected)]),
                          ["selected", "units"])

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
        for obj, watcher in self._watches:  # stop updating the previous detector's fields
            obj.param.unwatch(watcher)
        self._watches = []
        self._generation += 1
        if not name or name not in self.state.names:
            return pn.pane.Markdown("No detector: add one or draw a box/polygon.")
        det = self.state.detector(name)
        rename = pn.widgets.TextInput(label="name", value=det.name, width=250)
        rename.param.watch(lambda ev: setattr(det, "name", ev.new.strip()), "value")
        self._watches.append((det, det.param.watch(
            lambda ev: setattr(rename, "value", ev.new), "name")))
        color = pn.widgets.ColorPicker.from_param(det.param.color, width=60)
        return pn.Column(rename, color, *self.geometry_fields(det.name), width=270)

    def geometry_fields(self, name: str) -> list[pn.widgets.Widget]:
        """Number fields (a list field for polygon vertices) of detector ``name``'s
        geometry, labelled and valued in the displayed units, e.g. ``r_out (mrad)``."""
        det, m = self.state.detector(name), self.state.display.det
        shown = self.state.shown_geometry(name)
        step = round(0.5 * m.step[1], m.decimals) if m.physical else 0.5
        out: list[pn.widgets.Widget] = []
        for p in det.geometry:
            if p == "vertices":
                w = pn.widgets.LiteralInput(label=f"vertices (y, x) ({m.unit})",
                                            value=shown[p], type=list, width=250)
            else:
                w = pn.widgets.FloatInput(label=f"{p} ({m.unit})", value=shown[p], step=step,
                                          width=120)
            # the detector, not its name, which may be edited while the fields are shown
            w.param.watch(lambda ev, p=p, g=self._generation: self._typed(det, p, ev.new, g),
                          "value")
            self._watches.append((det, det.param.watch(
                lambda ev, w=w: self._follow(det, ev.name, w), p)))
            out.append(w)
        return out

    def _typed(self, det: Detector, param: str, value: Any, generation: int) -> None:
        if (self._syncing or value is None or generation != self._generation
                or det not in self.state.detectors):
            return  # set from the detector, emptied, or a field of other units
        try:
            self.state.set_shown_geometry(det.name, **{param: value})
        except (TypeError, ValueError) as exc:  # e.g. vertices that are not (y, x) pairs
            self.state.status = f"{det.name}.{param}: {exc}"

    def _follow(self, det: Detector, param: str, widget: pn.widgets.Widget) -> None:
        """The detector moved (a drag, code, or a typed value): show its new value."""
        if det not in self.state.detectors:
            return
        self._syncing = True
        try:
            widget.value = self.state.display.det.geometry(param, getattr(det, param))
        finally:
            self._syncing = False

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
