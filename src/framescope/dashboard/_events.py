"""The dashboard of a running event job (:mod:`framescope.events`): status, published state,
parameters.

A periodic callback on the session's event loop (``period_ms``, a few Hz) reads the job's
status and a snapshot of what its reducer publishes; the reducer thread never touches a
Bokeh model. A published array goes through a ``Pipe`` into the plot made for its key, so
the plot is updated in place and keeps the user's zoom; the plot is rebuilt only when the
selected key, its kind or its shape change. After the job ended the callback runs once more
and stops.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._app import load_extensions
from framescope.dashboard._images import block_coords, color_limits, downsample

__all__ = ["EventsView", "changed_values", "status_markdown", "stream_rows", "value_kind"]

log = logging.getLogger(__name__)

Kind = Literal["image", "stack", "curve", "curves", "text"]
#: per-stream counters shown in the table, in this order
STREAM_COLUMNS = ("received", "gaps", "repeated", "malformed", "buffered", "dropped", "late")
#: published text longer than this is cut (a list of a million event numbers is no display)
_MAX_TEXT = 4000


def value_kind(value: Any) -> Kind:
    """How a published value is shown: ``image`` (2-D array), ``stack`` (3-D: one image at a
    time), ``curve`` (1-D), ``curves`` (``(n, 2)``: two curves) or ``text`` (anything else,
    e.g. numbers, strings, lists)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc" or not value.size:
        return "text"
    if value.ndim == 1:
        return "curve"
    if value.ndim == 2:
        return "curves" if value.shape[1] == 2 else "image"
    return "stack" if value.ndim == 3 else "text"


def stream_rows(status: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per stream, the counters of :data:`STREAM_COLUMNS` (0 where the status lacks one)."""
    return {name: {c: int(counters.get(c) or 0) for c in STREAM_COLUMNS}
            for name, counters in (status.get("streams") or {}).items()}


def status_markdown(status: Mapping[str, Any], url: str | None = None) -> str:
    """The job's status (:attr:`framescope.events.EventJob.status`) as Markdown lines."""
    map_open = "" if status.get("map_closed", True) else " (map open)"
    by = status.get("incomplete_by") or {}
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(by.items()))
    w = status.get("workers") or {}
    lost = w.get("lost") or {}
    lines = [
        f"**{status.get('state', '?')}** · events reduced **{status.get('reduced', 0)}** / "
        f"formed {status.get('formed', 0)} / total {status.get('events', 0)}{map_open}",
        f"incomplete {status.get('incomplete', 0)}" + (f" ({reasons})" if reasons else "")
        + f" · {float(status.get('events_per_s') or 0.0):.1f} events/s"
        + f" · elapsed {float(status.get('elapsed_s') or 0.0):.1f} s"
        + f" · parameters v{status.get('parameters_version', 0)}",
        f"workers: {w.get('n', '?')} {w.get('kind', '?')}, in flight "
        f"{list(w.get('inflight') or [])}, lost {len(lost)}"
        + (" (" + "; ".join(f"{k}: {v}" for k, v in lost.items()) + ")" if lost else "")
        + f", reassigned {w.get('reassigned', 0)}",
    ]
    if url:
        lines.append(f"HTTP: [{url}]({url})")
    return "\n\n".join(lines)


def changed_values(text: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """The changes the edited JSON ``text`` makes to the parameter values ``base``.

    Only keys whose value differs from ``base`` are returned, so an edit merged into a newer
    version changes only what the user changed.

    Raises
    ------
    ValueError
        Invalid JSON (line and column), or a key of ``base`` removed (parameters can be
        changed, not removed).
    TypeError
        The JSON is not an object.
    """
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"parameters: invalid JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from exc
    if not isinstance(values, dict):
        raise TypeError("parameters: expected a JSON object {\"name\": value, ...}, found "
                         f"{type(values).__name__}")
    removed = sorted(set(base) - set(values))
    if removed:
        raise ValueError(f"parameters: {removed} removed; parameters can be changed, not "
                         "removed (put them back)")
    return {k: v for k, v in values.items() if k not in base or base[k] != v}


class EventsView(pn.viewable.Viewer):
    """A running event job: status, the reducer's published state, parameters, stop.

    Parameters
    ----------
    job : framescope.events.EventJob
        Or any object with ``published()``, ``status``, ``parameters``, ``done()``,
        ``stop()`` (and optionally ``http_url``).
    **params
        ``period_ms``, ``key``, ``follow``.
    """

    period_ms = param.Integer(default=500, bounds=(100, None),
                              doc="Milliseconds between refreshes")
    key = param.Selector(default=None, objects=[], doc="The published value shown")
    follow = param.Boolean(default=True, doc=(
        "Curves: fit the axes to the data at every refresh (off: keep the zoom)"))

    def __init__(self, job: Any, **params: Any) -> None:
        load_extensions()
        super().__init__(**params)
        self.job = job
        self.published: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self._callback: Any = None
        self._shape: tuple[Kind, tuple[int, ...]] | None = None
        self.pipe: hv.streams.Pipe | None = None
        self.stopper: threading.Thread | None = None
        self.status_pane = pn.pane.Markdown("", width=640)
        self.streams_pane = pn.pane.DataFrame(None, index=True, width=640)
        self.errors_pane = pn.pane.Alert("", alert_type="danger", visible=False, width=640)
        self.layer = pn.widgets.Select(label="layer", options={}, visible=False, width=160)
        self.layer.param.watch(lambda _: self._send(), "value")
        self.plot_area = pn.Column(pn.pane.Markdown("nothing published yet"), min_height=200)
        self.stop_button = pn.widgets.Button(label="Stop the job", color="danger", width=140)
        self.stop_button.on_click(lambda _: self.stop_job())
        # the parameters editor: edits are diffed against the version they started from
        self.version_pane = pn.pane.Markdown("", width=520)
        self.editor = pn.widgets.TextAreaInput(label="parameters (JSON)", height=220,
                                               width=520)
        self.apply_button = pn.widgets.Button(label="Apply", color="primary", width=90)
        self.apply_button.on_click(lambda _: self.apply())
        self.param_message = pn.pane.Alert("", visible=False, width=520)
        self._base_version = -1
        self._base: dict[str, Any] = {}
        self._shown_text = ""
        self.param.watch(lambda _: self._show_key(), "key")
        self.param.watch(lambda _: self._send(), "follow")
        self.refresh()

    # ---- the refresh loop -----------------------------------------------------------------
    def refresh(self) -> None:
        """Read the job's status and published state and show them; the last refresh after
        the job ended stops the loop."""
        finished = self.job.done()  # read first: what follows is then final
        self.status = dict(self.job.status)
        self.published = dict(self.job.published())
        self.status_pane.object = status_markdown(self.status,
                                                  getattr(self.job, "http_url", None))
        self._show_streams()
        errors = list(self.status.get("last_errors") or [])
        self.errors_pane.object = "\n".join(f"- {e}" for e in errors)
        self.errors_pane.visible = bool(errors)
        keys = list(self.published)
        if keys != self.param.key.objects:
            self.param.key.objects = keys
            if self.key not in keys:
                self.key = _default_key(self.published)  # shows it
        if self.key is not None and self._layout_of(self.key) != self._shape:
            self._show_key()
        else:
            self._send()
        self._show_parameters()
        if finished:
            self.stop_button.disabled = True
            self.stop_button.label = f"job {self.status.get('state', 'ended')}"
            self._stop_loop()

    def _show_streams(self) -> None:
        import pandas as pd

        self.streams_pane.object = pd.DataFrame.from_dict(
            stream_rows(self.status), orient="index", columns=list(STREAM_COLUMNS))

    def _start(self) -> None:
        if self._callback is None and not self.job.done():
            self._callback = pn.state.add_periodic_callback(self.refresh,
                                                            period=self.period_ms)

    def _stop_loop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def close(self) -> None:
        """Stop the refresh loop (the job goes on)."""
        self._stop_loop()

    # ---- the published state --------------------------------------------------------------
    def _layout_of(self, key: str) -> tuple[Kind, tuple[int, ...]]:
        """What needs a new plot when it changes: the kind, an image's shape (its extent),
        the number of curves (a curve that grows is the same plot)."""
        value = self.published.get(key)
        kind = value_kind(value)
        if kind == "text":
            return kind, ()
        return kind, (value.shape if kind in ("image", "stack") else value.shape[1:])

    def _show_key(self) -> None:
        """A new plot for the selected key (kind or shape changed): a new Pipe and element."""
        key = self.key
        if key is None:
            self.plot_area.objects = [pn.pane.Markdown("nothing published yet")]
            self._shape, self.pipe = None, None
            return
        self._shape = None  # no _send into the previous plot while this one is made
        kind, shape = layout = self._layout_of(key)
        self.layer.visible = kind == "stack"
        if kind == "stack":
            self.layer.options = options = _layer_labels(self.published, key, shape[0])
            if self.layer.value not in options.values():  # panel leaves it None
                self.layer.value = 0
        self._shape = layout
        if kind == "text":
            self.pipe = None
            self.plot_area.objects = [pn.pane.Markdown(self._text(), width=640)]
            return
        self.pipe = hv.streams.Pipe(data=self._data())
        if kind in ("image", "stack"):
            dmap = hv.DynamicMap(_image, streams=[self.pipe]).opts(
                responsive=False, frame_width=420, frame_height=_height(shape), colorbar=True,
                invert_yaxis=True, tools=["hover"])
        else:
            dmap = hv.DynamicMap(_curves, streams=[self.pipe]).opts(
                hv.opts.Curve(width=640, height=320, tools=["hover"]))
        self.plot_area.objects = [pn.pane.HoloViews(dmap, linked_axes=False)]

    def _data(self) -> dict[str, Any]:
        """What the Pipe of the current key gets: the array to show and its labels."""
        key = self.key
        value = np.asarray(self.published[key])
        kind = value_kind(value)
        title = key
        if kind == "stack":
            i = int(self.layer.value or 0)
            labels = {v: k for k, v in self.layer.options.items()}
            value, title = value[i], f"{key}[{labels.get(i, i)}]"
        if value.dtype.kind == "c":
            value, title = np.abs(value), f"|{title}|"
        if kind in ("image", "stack"):
            z, f = downsample(value.astype("f8"))
            ny, nx = value.shape
            return {"x": block_coords(nx, f), "y": block_coords(ny, f), "z": z,
                    "clim": color_limits(z, (0.5, 99.5)), "title": title}
        return {"y": value.astype("f8"), "title": title, "follow": self.follow}

    def _text(self) -> str:
        value = self.published.get(self.key)
        try:  # numpy values as lists and numbers, anything else as its repr
            text = json.dumps(value, indent=1, default=lambda o: getattr(o, "tolist", o.__repr__)())
        except ValueError:  # a circular structure
            text = repr(value)
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + f"\n… ({len(text)} characters)"
        return f"**{self.key}**\n\n```\n{text}\n```"

    def _send(self) -> None:
        """The selected key's current value into its plot (in place) or text."""
        if self.key is None or self.key not in self.published or self._shape is None:
            return
        if self.pipe is not None:
            self.pipe.send(self._data())
        elif self.plot_area.objects:
            self.plot_area.objects[0].object = self._text()

    # ---- parameters and stop --------------------------------------------------------------
    def _show_parameters(self) -> None:
        params = self.job.parameters
        version, values = params.snapshot()
        if version == self._base_version:
            return
        last = params.history()[-1]
        self.version_pane.object = (f"**parameters version {version}** (from "
                                    f"{last.get('source', '?')}, {last.get('time', '')})")
        text = json.dumps(values, indent=2)
        if self.editor.value in ("", self._shown_text):  # not being edited: follow
            self.editor.value = self._shown_text = text
            self._base, self._base_version = values, version
        else:
            self._say(f"version {version} arrived while you edit; Apply sends only the "
                      "values you changed", "warning")
            self._base_version = version  # said once; the edit stays based on its version

    def apply(self, text: str | None = None) -> int | None:
        """Apply the editor's JSON (or ``text``): the changed values become a new version
        (source ``"dashboard"``). Returns it, or None when the edit was refused (the
        message says why) or changed nothing."""
        text = self.editor.value if text is None else text
        try:
            changes = changed_values(text, self._base)
            if not changes:
                self._say("nothing changed", "info")
                return None
            version = self.job.parameters.update(changes, source="dashboard")
        except Exception as exc:  # shown in the page: a typo must not raise in the server
            log.info("events view: parameters refused: %s", exc)
            self._say(str(exc), "danger")
            return None
        self._base_version = -1
        self.editor.value = ""  # follow the new version
        self._show_parameters()
        self._say(f"version {version} applied: {sorted(changes)}", "success")
        return version

    def _say(self, text: str, kind: str) -> None:
        self.param_message.object = text
        self.param_message.alert_type = kind
        self.param_message.visible = True

    def stop_job(self) -> threading.Thread:
        """Stop the job in a thread (``job.stop()`` waits for its threads; the server must
        not); the loop's last refresh shows the end."""
        self.stop_button.disabled = True
        self.stop_button.label = "stopping…"
        self.stopper = threading.Thread(target=self.job.stop, daemon=True,
                                        name="framescope-events-stop")
        self.stopper.start()
        return self.stopper

    def __panel__(self) -> pn.viewable.Viewable:
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            pn.state.onload(self._start)  # after the page loaded (see LiveDashboard)
            pn.state.on_session_destroyed(lambda _ctx: self.close())
        else:
            self._start()
        card = pn.Card(self.status_pane, self.streams_pane, self.errors_pane,
                       self.stop_button, title="event job", collapsible=False, width=680)
        key = pn.widgets.Select.from_param(self.param.key, label="published", width=200)
        fit = pn.widgets.Checkbox.from_param(self.param.follow, label="fit curves")
        shown = pn.Column(pn.Row(key, self.layer, fit), self.plot_area)
        editor = pn.Column(self.version_pane, self.editor,
                           pn.Row(self.apply_button, self.param_message))
        return pn.Row(pn.Column(card, editor), shown)


def _default_key(published: Mapping[str, Any]) -> str | None:
    """The first image or stack, else the first curve, else the first key (in the order
    the reducer published them: its main result first, as a rule)."""
    rank = {"image": 0, "stack": 0, "curves": 1, "curve": 1, "text": 2}
    ranked = sorted(published, key=lambda k: rank[value_kind(published[k])])  # stable
    return ranked[0] if ranked else None


def _layer_labels(published: Mapping[str, Any], key: str, n: int) -> dict[str, int]:
    """Labels of the first axis of a 3-D value: the names in a published list of ``n``
    distinct strings (a reducer's mask names), else the indices."""
    for k, v in published.items():
        if (k != key and isinstance(v, list) and len(v) == n == len(set(v))
                and all(isinstance(s, str) for s in v)):
            return {s: i for i, s in enumerate(v)}
    return {str(i): i for i in range(n)}


def _height(shape: tuple[int, ...]) -> int:
    ny, nx = shape[-2:]
    return max(60, min(600, round(420 * ny / max(nx, 1))))


def _image(data: dict[str, Any]) -> hv.Image:
    return hv.Image((data["x"], data["y"], data["z"]), kdims=["x", "y"],
                    vdims=["value"]).opts(clim=data["clim"], title=data["title"],
                                          cmap="viridis",
                                          clipping_colors={"NaN": "transparent"})


def _curves(data: dict[str, Any]) -> hv.Overlay:
    y = data["y"]
    cols = y[:, None] if y.ndim == 1 else y
    x = np.arange(len(cols))
    labels = [""] if y.ndim == 1 else [f"[:, {i}]" for i in range(cols.shape[1])]
    curves = [hv.Curve((x, cols[:, i]), "index", "value", label=label).opts(
        framewise=data["follow"]) for i, label in enumerate(labels)]
    return hv.Overlay(curves).opts(title=data["title"])
