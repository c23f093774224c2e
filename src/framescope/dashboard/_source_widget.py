"""The ZeroMQ source as a panel component: fields, connect/disconnect, live status, preview.

The display loop is a periodic callback on the document's event loop (started when the
widget is displayed) that only reads ``source.status`` and ``source.latest_frame()``: both
are lock-free snapshots, so it never waits on, or slows, the receiver thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from framescope.dashboard._app import load_extensions
from framescope.dashboard._bokeh import DirectImage
from framescope.dashboard._images import block_coords, color_limits
from framescope.dashboard._source_dark import dark_text
from framescope.dashboard._source_display import (
    ORDERS,
    format_scan,
    parse_scan,
    poll,
    preview_image,
    start_source,
    status_html,
    status_table,
)
from framescope.live import PROTOCOLS

if TYPE_CHECKING:
    from framescope.live import Status, ZMQSource

__all__ = ["SourceWidget"]

log = logging.getLogger(__name__)


class SourceWidget(pn.viewable.Viewer):
    """Connect to a detector's ZeroMQ stream and watch it: counters, rates, latest frame.

    Parameters
    ----------
    source : framescope.live.ZMQSource, optional
        A source to show. It fills the fields and counts as connected; the widget neither
        starts nor stops it unless the user clicks Disconnect (or Connect, which replaces it
        with a new source made from the fields).
    **params
        Values of the ``param`` parameters:

        - ``endpoint`` (str): ZeroMQ endpoint, default ``"tcp://127.0.0.1:9999"``;
        - ``protocol`` (str): one of :data:`~framescope.live.PROTOCOLS`;
        - ``scan`` (str): scan shape ``"HEIGHTxWIDTH"``; empty takes the header's;
        - ``order`` (str): ``"raster"``, ``"snake"``, or empty for the header's;
        - ``policy`` (str): ``"drop"`` or ``"spill"`` (see :class:`~framescope.live.ZMQSource`);
        - ``refresh_ms`` (int): milliseconds between status and preview updates (250).

    Attributes
    ----------
    connected : bool
        A source is connected: a read-only parameter, ``w.param.watch(cb, "connected")``.
    error : str
        Why the last connection failed or a field is invalid (empty if none).
    connect_button : panel.widgets.Button
    disconnect_button : panel.widgets.Button
    dark_button : panel.widgets.Button
        "Take dark": the next series is a dark series (see :meth:`take_dark`).
    dark_pane : panel.pane.Markdown
        The dark in use: ``"dark: N frames, bad pixels: M"``, or that one is being taken.
    status_pane : panel.pane.HTML
        The status table (see :meth:`status_table`).
    preview : numpy.ndarray or None
        The image the preview shows: ``log10(1 + I)`` of the latest frame, block-averaged to
        at most 128 pixels a side.

    Examples
    --------
    >>> from framescope.dashboard import SourceWidget  # doctest: +SKIP
    >>> w = SourceWidget(endpoint="tcp://127.0.0.1:9999", scan="128x128")  # doctest: +SKIP
    >>> w.on_connect(lambda src: fs.submit(udfs, src))  # doctest: +SKIP
    >>> w.param.watch(lambda ev: print("connected:", ev.new), "connected")  # doctest: +SKIP
    >>> w  # display, then click Connect (or call w.connect())  # doctest: +SKIP
    """

    endpoint = param.String(default="tcp://127.0.0.1:9999",
                            doc="ZeroMQ endpoint of the detector's PUSH socket")
    protocol = param.Selector(default="dectris-stream2", objects=list(PROTOCOLS),
                              doc="Wire protocol of the stream")
    scan = param.String(default="",
                        doc="Scan shape HEIGHTxWIDTH, e.g. 128x128; empty: from the header")
    order = param.Selector(default="", objects=ORDERS,
                           doc="Scan order; empty: from the header (else raster)")
    policy = param.Selector(default="drop", objects=["drop", "spill"],
                            doc="Frames arriving while the buffer is full: dropped (counted) "
                                "or spilled to disk")
    display_loop = param.Boolean(default=True, doc=(
        "Refresh from a periodic callback of its own; False when a container calls "
        "refresh() itself (the live dashboard)"))
    refresh_ms = param.Integer(default=250, bounds=(50, None),
                               doc="Milliseconds between status and preview updates")
    connected = param.Boolean(default=False, constant=True,
                              doc="A source is connected (watch it to follow connections)")
    error = param.String(default="", constant=True,
                         doc="Why the last connection failed, or why a field is invalid")

    def __init__(self, source: ZMQSource | None = None, **params: Any) -> None:
        load_extensions()  # the dashboard's, once per process: JS for notebooks
        if source is not None:
            params = {"endpoint": source.endpoint, "protocol": source.protocol,
                      "scan": format_scan(source.scan), "order": source.order or "",
                      "policy": source.policy, **params}
        super().__init__(**params)
        self._source = source
        self._owned = False  # True for sources this widget made (it stops them on close)
        self._callbacks: list[Callable[[ZMQSource], Any]] = []
        self._last_status: Status | None = None  # of the source last disconnected
        self._preview_key: tuple[Any, ...] | None = None
        self._shown_shape: tuple[int, ...] | None = None
        self._periodic: Any = None
        self._layout: pn.viewable.Viewable | None = None
        self.preview: np.ndarray | None = None

        self.connect_button = pn.widgets.Button(label="Connect", color="primary", width=100)
        self.disconnect_button = pn.widgets.Button(label="Disconnect", width=100)
        self.dark_button = pn.widgets.Button(label="Take dark", width=100)
        self.connect_button.on_click(lambda _: self.connect())
        self.disconnect_button.on_click(lambda _: self.disconnect())
        self.dark_button.on_click(lambda _: self.take_dark())
        self.dark_pane = pn.pane.Markdown("", width=520, margin=(0, 10))
        self.status_pane = pn.pane.HTML(status_html(self.status_table()), width=260)
        self._error_pane = pn.pane.Alert("", alert_type="danger", visible=False, width=520)
        self._direct = DirectImage()
        self._pipe = hv.streams.Pipe(data=_empty_preview())
        self._inputs = [
            pn.widgets.TextInput.from_param(self.param.endpoint, width=250),
            pn.widgets.Select.from_param(self.param.protocol, width=160),
            pn.widgets.TextInput.from_param(self.param.scan, placeholder="from header",
                                            width=120),
            pn.widgets.Select.from_param(self.param.order, width=120),
            pn.widgets.Select.from_param(self.param.policy, width=90),
        ]
        self.param.watch(self._check_scan, "scan")
        self.param.watch(self._show_error, "error")
        self.param.watch(self._enable, "connected")
        self.param.watch(self._set_period, "refresh_ms")
        if source is not None:
            with param.edit_constant(self):
                self.connected = True
        self._enable()

    # ---- connection --------------------------------------------------------------------------
    @property
    def source(self) -> ZMQSource | None:
        """The connected source, or None."""
        return self._source

    def connect(self) -> bool:
        """Make and start a :class:`~framescope.live.ZMQSource` from the fields (replacing a
        connected one); returns whether it worked.

        Errors (bad endpoint, scan, protocol) are shown in the widget and in :attr:`error`,
        never raised. The :meth:`on_connect` callbacks run between making the source and
        opening its socket, so what they attach sees every frame.
        """
        if self._source is not None:
            self.disconnect()
        # the on_connect callbacks run before the socket opens: an analysis attached there
        # sees the series from its first frame
        result = start_source(self.endpoint, self.protocol, self.scan, self.order,
                              self.policy, before_start=self._notify)
        if isinstance(result, str):
            self._set(error=result)
            return False
        self._source, self._owned = result, True
        self._preview_key = None
        self._set(error="", connected=True)
        self.refresh()
        return True

    def disconnect(self) -> None:
        """Stop the source and forget it (watchers of ``connected`` hear of it first, so that
        analyses of the source can stop before it does)."""
        src = self._source
        if src is None:
            return
        self._set(connected=False)
        src.stop()
        self._last_status = src.status
        self._source, self._owned = None, False
        self.refresh()

    def take_dark(self, n_series: int = 1) -> None:
        """Take the next ``n_series`` series as dark series (the "Take dark" button; see
        :meth:`framescope.live.ZMQSource.take_dark`): a stream job on the source reduces
        them to dark statistics and corrects the following series with them."""
        if self._source is None:
            self._set(error="Take dark: connect to a source first")
            return
        self._source.take_dark(n_series)
        self.refresh()

    def on_connect(self, callback: Callable[[ZMQSource], Any]) -> None:
        """Call ``callback(source)`` after every successful connection (now, if one is)."""
        self._callbacks.append(callback)
        if self._source is not None:
            self._call(callback, self._source)

    def _notify(self, source: ZMQSource) -> None:
        for callback in list(self._callbacks):
            self._call(callback, source)

    def _call(self, callback: Callable[[ZMQSource], Any], source: ZMQSource) -> None:
        try:
            callback(source)
        except Exception as exc:  # a button click must not die in a user's callback
            log.exception("source widget: on_connect callback %r failed", callback)
            self._set(error=f"on_connect callback failed: {exc}")

    # ---- display -----------------------------------------------------------------------------
    def status_table(self, status: Status | None = None) -> dict[str, str]:
        """The status panel's rows for ``status`` (default: the source's status now)."""
        if status is None:
            src = self._source
            status = src.status if src is not None else self._last_status
        return status_table(status)

    def refresh(self) -> None:
        """Update the status panel and the preview (the periodic callback; reads only
        ``source.status`` and ``source.latest_frame()``)."""
        status, frame, self._preview_key = poll(self._source, self._last_status,
                                                self._preview_key)
        text = status_html(status_table(status))
        if text != self.status_pane.object:
            self.status_pane.object = text
        dark = dark_text(self._source)
        if dark != self.dark_pane.object:
            self.dark_pane.object = dark
        if frame is not None:
            self._show_frame(frame, status.series)

    def _show_frame(self, frame: np.ndarray, series: int | None) -> None:
        img, f = preview_image(frame)
        self.preview = img
        h, w = frame.shape
        data = {"x": block_coords(w, f), "y": block_coords(h, f), "z": img,
                "clim": color_limits(img),
                "title": f"latest frame · series {series}" if series is not None
                else "latest frame"}
        # new pixels (and axes, for a new frame shape) straight into the Bokeh models
        if self._direct.image(data):
            return
        self._shown_shape = img.shape
        self._pipe.send(data)

    def _image(self, data: dict[str, Any]) -> hv.Image:
        return hv.Image((data["x"], data["y"], data["z"]), kdims=["det_x", "det_y"],
                        vdims=["log10(1 + I)"]).opts(
            cmap="gray", clim=data["clim"], title=data["title"], framewise=True,
            width=260, height=260, invert_yaxis=True, toolbar=None, xaxis=None, yaxis=None,
            colorbar=False, hooks=[self._direct.hook])

    def _start_updates(self) -> None:
        if self._periodic is None and self.display_loop:
            self._periodic = pn.state.add_periodic_callback(self.refresh,
                                                            period=self.refresh_ms)
            doc = pn.state.curdoc
            if doc is not None and doc.session_context is not None:
                pn.state.on_session_destroyed(lambda _ctx: self.close())

    def _set_period(self, event: param.parameterized.Event) -> None:
        if self._periodic is not None:
            self._periodic.period = event.new

    def close(self) -> None:
        """Stop the display loop, and a source this widget made."""
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        if self._owned:
            self.disconnect()

    def __panel__(self) -> pn.viewable.Viewable:
        self._start_updates()
        if self._layout is None:
            endpoint, protocol, scan, order, policy = self._inputs
            preview = pn.pane.HoloViews(hv.DynamicMap(self._image, streams=[self._pipe]))
            self._layout = pn.Column(
                pn.Row(endpoint, protocol),
                pn.Row(scan, order, policy),
                pn.Row(self.connect_button, self.disconnect_button, self.dark_button),
                self.dark_pane,
                self._error_pane,
                pn.Row(self.status_pane, preview),
            )
        return self._layout

    # ---- field checks and widget states ------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with param.edit_constant(self):
            self.param.update(**values)

    def _check_scan(self, *_: Any) -> None:
        try:
            parse_scan(self.scan)
        except ValueError as exc:
            self._set(error=str(exc))
        else:
            if self.error.startswith("scan:"):
                self._set(error="")

    def _show_error(self, *_: Any) -> None:
        self._error_pane.object = self.error
        self._error_pane.visible = bool(self.error)

    def _enable(self, *_: Any) -> None:
        for w in self._inputs:
            w.disabled = self.connected
        self.connect_button.disabled = self.connected
        self.disconnect_button.disabled = not self.connected
        self.dark_button.disabled = not self.connected


def _empty_preview() -> dict[str, Any]:
    return {"x": np.arange(1.0), "y": np.arange(1.0), "z": np.zeros((1, 1), np.float32),
            "clim": (0.0, 1.0), "title": "no frame yet"}
