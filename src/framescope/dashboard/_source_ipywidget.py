"""The ZeroMQ source as an ipywidgets widget (for Jupyter without panel).

Same fields, status table and preview as :class:`~framescope.dashboard.SourceWidget`.
A daemon thread refreshes the status and the preview every ``refresh_s`` while a source is
connected (ipywidgets send value changes from any thread); it only reads ``source.status``
and ``source.latest_frame()``, so it never slows the receiver.
"""

from __future__ import annotations

import html
import io
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import traitlets

from framescope.dashboard._images import color_limits
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

__all__ = ["SourceIPyWidget", "preview_png"]

log = logging.getLogger(__name__)


def preview_png(img: np.ndarray) -> bytes | None:
    """``img`` as an 8-bit grey PNG, black to white over its finite range (NaN black), or
    None without Pillow (a dependency of bokeh, so normally installed)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    lo, hi = color_limits(img)
    scaled = (np.nan_to_num(img, nan=lo) - lo) * (255.0 / (hi - lo))
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    return buf.getvalue()


class SourceIPyWidget(widgets.VBox):
    """Connect to a detector's ZeroMQ stream and watch it, as an ipywidgets ``VBox``.

    Parameters
    ----------
    source : framescope.live.ZMQSource, optional
        A source to show: it fills the fields, counts as connected, and is stopped only
        when the user clicks Disconnect.
    endpoint : str
        ZeroMQ endpoint of the detector's PUSH socket.
    protocol : str
        One of :data:`~framescope.live.PROTOCOLS`.
    scan : str
        Scan shape ``"HEIGHTxWIDTH"``; empty takes the header's.
    order : str
        ``"raster"``, ``"snake"``, or empty for the header's.
    policy : str
        ``"drop"`` or ``"spill"`` (see :class:`~framescope.live.ZMQSource`).
    refresh_s : float
        Seconds between status and preview updates.
    **kwargs
        Passed to ``ipywidgets.VBox``.

    Attributes
    ----------
    connected : bool
        A source is connected (a read-only trait: ``w.observe(cb, "connected")``).
    error : str
        Why the last connection failed, or why a field is invalid.
    endpoint : ipywidgets.Text
    protocol : ipywidgets.Dropdown
    scan : ipywidgets.Text
    order : ipywidgets.Dropdown
    policy : ipywidgets.Dropdown
    connect_button : ipywidgets.Button
    disconnect_button : ipywidgets.Button
    dark_button : ipywidgets.Button
        "Take dark": the next series is a dark series (see :meth:`take_dark`).
    dark_html : ipywidgets.HTML
        The dark in use: ``"dark: N frames, bad pixels: M"``, or that one is being taken.
    status_pane : ipywidgets.HTML
        The status table (see :meth:`status_table`).
    preview_pane : ipywidgets.Image
        The preview as a PNG.
    preview : numpy.ndarray or None
        The image the preview shows (``log10(1 + I)``, block-averaged to <= 128 px a side).
    """

    connected = traitlets.Bool(False, read_only=True)
    error = traitlets.Unicode("", read_only=True)

    def __init__(self, source: ZMQSource | None = None, *,
                 endpoint: str = "tcp://127.0.0.1:9999", protocol: str = "dectris-stream2",
                 scan: str = "", order: str = "", policy: str = "drop",
                 refresh_s: float = 0.25, **kwargs: Any) -> None:
        if source is not None:
            endpoint, protocol = source.endpoint, source.protocol
            scan, order, policy = format_scan(source.scan), source.order or "", source.policy
        self.endpoint = widgets.Text(value=endpoint, description="endpoint")
        self.protocol = widgets.Dropdown(options=list(PROTOCOLS), value=protocol,
                                         description="protocol")
        self.scan = widgets.Text(value=scan, description="scan",
                                 placeholder="from header, e.g. 128x128")
        self.order = widgets.Dropdown(options=list(ORDERS.items()), value=order,
                                      description="order")
        self.policy = widgets.Dropdown(options=["drop", "spill"], value=policy,
                                       description="policy")
        self.connect_button = widgets.Button(description="Connect", button_style="primary")
        self.disconnect_button = widgets.Button(description="Disconnect")
        self.dark_button = widgets.Button(description="Take dark",
                                          tooltip="the next series is a dark series")
        self.dark_html = widgets.HTML("")
        self.error_html = widgets.HTML("")
        self.status_pane = widgets.HTML("")
        self.preview_pane = widgets.Image(format="png", layout=widgets.Layout(width="256px"))
        self.refresh_s = float(refresh_s)
        self.preview: np.ndarray | None = None
        self._source = source
        self._owned = False
        self._callbacks: list[Callable[[ZMQSource], Any]] = []
        self._last_status: Status | None = None
        self._preview_key: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        has_png = preview_png(np.zeros((1, 1), np.float32)) is not None
        preview: widgets.Widget = self.preview_pane if has_png else widgets.HTML(
            "<i>no preview: it needs Pillow (pip install pillow)</i>")
        super().__init__([
            widgets.HBox([self.endpoint, self.protocol]),
            widgets.HBox([self.scan, self.order, self.policy]),
            widgets.HBox([self.connect_button, self.disconnect_button, self.dark_button]),
            self.dark_html,
            self.error_html,
            widgets.HBox([self.status_pane, preview]),
        ], **kwargs)
        self.connect_button.on_click(lambda _: self.connect())
        self.disconnect_button.on_click(lambda _: self.disconnect())
        self.dark_button.on_click(lambda _: self.take_dark())
        self.scan.observe(self._check_scan, "value")
        self.observe(self._show_error, "error")
        if source is not None:
            self.set_trait("connected", True)
            self._start_thread()
        self._enable()
        self.refresh()

    # ---- connection --------------------------------------------------------------------------
    @property
    def source(self) -> ZMQSource | None:
        """The connected source, or None."""
        return self._source

    def connect(self) -> bool:
        """Make and start a source from the fields (replacing a connected one); returns
        whether it worked. Errors are shown in the widget and :attr:`error`, never raised."""
        if self._source is not None:
            self.disconnect()
        def notify(source: Any) -> None:  # before the socket opens: no frame is missed
            for callback in list(self._callbacks):
                self._call(callback, source)

        result = start_source(self.endpoint.value, self.protocol.value, self.scan.value,
                              self.order.value, self.policy.value, before_start=notify)
        if isinstance(result, str):
            self.set_trait("error", result)
            return False
        self._source, self._owned = result, True
        self._preview_key = None
        self.set_trait("error", "")
        self.set_trait("connected", True)
        self._enable()
        self.refresh()
        self._start_thread()
        return True

    def disconnect(self) -> None:
        """Stop the refresh thread and the source, and forget the source (observers of
        ``connected`` hear of it before the source stops)."""
        src = self._source
        if src is None:
            return
        self._stop_thread()
        self.set_trait("connected", False)
        src.stop()
        self._last_status = src.status
        self._source, self._owned = None, False
        self._enable()
        self.refresh()

    def on_connect(self, callback: Callable[[ZMQSource], Any]) -> None:
        """Call ``callback(source)`` after every successful connection (now, if one is)."""
        self._callbacks.append(callback)
        if self._source is not None:
            self._call(callback, self._source)

    def _call(self, callback: Callable[[ZMQSource], Any], source: ZMQSource) -> None:
        try:
            callback(source)
        except Exception as exc:  # a button click must not die in a user's callback
            log.exception("source widget: on_connect callback %r failed", callback)
            self.set_trait("error", f"on_connect callback failed: {exc}")

    def close(self) -> None:
        """Stop the refresh thread and a source this widget made, and close the widgets."""
        self._stop_thread()
        if self._owned:
            self.disconnect()
        for w in (self.endpoint, self.protocol, self.scan, self.order, self.policy,
                  self.connect_button, self.disconnect_button, self.dark_button,
                  self.dark_html, self.error_html,
                  self.status_pane, self.preview_pane):
            w.close()
        super().close()

    # ---- display -----------------------------------------------------------------------------
    def status_table(self, status: Status | None = None) -> dict[str, str]:
        """The status panel's rows for ``status`` (default: the source's status now)."""
        if status is None:
            src = self._source
            status = src.status if src is not None else self._last_status
        return status_table(status)

    def refresh(self) -> None:
        """Update the status table and the preview (what the thread does every
        ``refresh_s``)."""
        status, frame, self._preview_key = poll(self._source, self._last_status,
                                                self._preview_key)
        text = status_html(status_table(status))
        if text != self.status_pane.value:
            self.status_pane.value = text
        dark = html.escape(dark_text(self._source))
        if dark != self.dark_html.value:
            self.dark_html.value = dark
        if frame is None:
            return
        self.preview = preview_image(frame)[0]
        png = preview_png(self.preview)
        if png is not None:
            self.preview_pane.value = png

    def take_dark(self, n_series: int = 1) -> None:
        """Take the next ``n_series`` series as dark series (the "Take dark" button; see
        :meth:`framescope.live.ZMQSource.take_dark`)."""
        if self._source is None:
            self.set_trait("error", "Take dark: connect to a source first")
            return
        self._source.take_dark(n_series)
        self.refresh()

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(self._stop,), daemon=True,
                                        name="framescope-source-widget")
        self._thread.start()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _loop(self, stop: threading.Event) -> None:
        failed = False
        while not stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # keep refreshing; say it once
                if not failed:
                    log.exception("source widget: refresh failed")
                failed = True

    # ---- field checks and widget states ------------------------------------------------------
    def _check_scan(self, change: dict[str, Any]) -> None:
        try:
            parse_scan(change["new"])
        except ValueError as exc:
            self.set_trait("error", str(exc))
        else:
            if self.error.startswith("scan:"):
                self.set_trait("error", "")

    def _show_error(self, change: dict[str, Any]) -> None:
        self.error_html.value = ("" if not change["new"] else
                                 '<b style="color:#b00">' + html.escape(change["new"]) + "</b>")

    def _enable(self) -> None:
        for w in (self.endpoint, self.protocol, self.scan, self.order, self.policy):
            w.disabled = self.connected
        self.connect_button.disabled = self.connected
        self.disconnect_button.disabled = not self.connected
        self.dark_button.disabled = not self.connected

